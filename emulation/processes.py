"""Emulator subprocesses on 127.0.0.1: free port, start, wait until they answer, always stop."""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def module_command(module: str, *args: str) -> tuple[list[str], dict[str, str]]:
    """A command running ``module`` of this repository in this interpreter, and the env it needs, whatever the
    working directory (run as a script, emulation/ would shadow top-level packages: emulation/moto.py, moto)."""
    path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return [sys.executable, "-m", module, *args], {"PYTHONPATH": path}


def require_known_sources(patcher: str, expected: Mapping[str, str], functions: Mapping[str, Callable]) -> None:
    """Refuse to patch an emulator whose functions a patch (``patcher``) replaces or relies on have changed: the
    sha256 of each one's source must be the one the patch was written against."""
    digest = {
        name: hashlib.sha256(inspect.getsource(function).encode()).hexdigest() for name, function in functions.items()
    }
    if changed := [name for name in expected if digest[name] != expected[name]]:
        raise ValueError(f"{', '.join(changed)} changed: {patcher} needs review")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class EmulatorProcess:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    scheme: str = "http"
    ca_file: Path | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def wait_until_up(self, probe_path: str, timeout: float = 60.0) -> None:
        context = ssl.create_default_context(cafile=str(self.ca_file)) if self.ca_file else None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early; see {self.log_path}")
            try:
                url = f"{self.endpoint}{probe_path}"
                with urllib.request.urlopen(url, timeout=2, context=context) as response:  # noqa: S310
                    if response.status < 500:
                        return
            except urllib.error.HTTPError as err:
                if err.code < 500:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not answer on {self.endpoint} within {timeout:.0f}s; see {self.log_path}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@contextlib.contextmanager
def emulator_process(
    name: str,
    command: Sequence[str],
    log_dir: Path,
    port: int,
    probe_path: str,
    env: dict[str, str] | None = None,
    ca_file: Path | None = None,
    inherit_env: bool = True,
) -> Iterator[EmulatorProcess]:
    """Run ``command`` (which must listen on ``port``) until the block ends, whatever happens in it."""
    log_path = Path(log_dir) / f"{name}-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            list(command),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**(os.environ if inherit_env else {}), **(env or {})},
        )
    emulator = EmulatorProcess(name, port, process, log_path, "https" if ca_file else "http", ca_file)
    try:
        emulator.wait_until_up(probe_path)
        yield emulator
    finally:
        emulator.stop()
