"""Pulumi side of the package: the XComStorage component, the per-cloud builders and the settings table.

``from xcom_backend.pulumi import XComStorage`` inside any Pulumi program. Importing this package (or its
settings module) loads no cloud SDK; a cloud's SDK is imported only when a component for it is declared.
"""

from __future__ import annotations

from typing import Any

__all__ = ["XComStorage", "XComStorageArgs"]


def __getattr__(name: str) -> Any:
    # Lazy, so `xcom_backend.pulumi.settings` stays importable without the Pulumi SDK.
    if name in __all__:
        from xcom_backend.pulumi import component

        return getattr(component, name)
    raise AttributeError(name)
