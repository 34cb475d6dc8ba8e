"""The GCS and Azure emulators as `make bench` runs them: without the per-byte costs the real services do not
have (emulation/gcs_fast.py, emulation/azurite_fast.js). The tests run the stock emulators."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any


def bench_emulator(cloud: str, log_dir: Path, *, enforce_iam: bool) -> AbstractContextManager[Any]:
    """``gcp``: gcp-storage-emulator (``enforce_iam``: behind the IAM proxy); ``azure``: Azurite over HTTPS.
    The cloud's emulation module is imported only for that cloud."""
    if cloud == "gcp":
        from emulation.gcs import gcs_server

        return gcs_server(log_dir, enforce_iam=enforce_iam, fast=True)
    from emulation.azurite import azurite_server

    return azurite_server(log_dir, fast=True)
