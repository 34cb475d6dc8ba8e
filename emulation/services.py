"""PostgreSQL and Redis from Debian's packages, on 127.0.0.1, for Airflow in production's shape.

Started by the tests and the demo, never assumed to be running; ``make system-packages`` installs the packages
when missing. PostgreSQL refuses to run as root, so as root its cluster is owned by and runs as the
``postgres`` user Debian's package creates, in a directory of its own. Both keep nothing on disk that
matters: fsync off, Redis without persistence.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from glob import glob
from itertools import count
from pathlib import Path
from typing import Any

from emulation.processes import free_port

POSTGRES_SUPERUSER = "airflow"


def _postgres_bin() -> Path:
    found = sorted(glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda path: int(path.split("/")[4]))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: `make system-packages` installs Debian's postgresql")
    return Path(found[-1]).parent


def _as_postgres_user() -> dict[str, Any]:
    """subprocess arguments that run PostgreSQL's programs as ``postgres`` when this process is root."""
    return {"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}


def _wait_for_port(port: int, process: subprocess.Popen[bytes], name: str, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited early:\n{log.read_text(errors='replace')[-3000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.2)
    raise RuntimeError(f"{name} did not listen on 127.0.0.1:{port} within {timeout:.0f}s; see {log}")


def _stop(process: subprocess.Popen[bytes], signal_number: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(signal_number)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@dataclass
class PostgresServer:
    port: int
    _databases: Iterator[int] = field(default_factory=lambda: count(1))

    def url(self, database: str, driver: str = "postgresql+psycopg2") -> str:
        return f"{driver}://{POSTGRES_SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres") -> Any:
        import psycopg2

        return psycopg2.connect(host="127.0.0.1", port=self.port, user=POSTGRES_SUPERUSER, dbname=database)

    def create_database(self, prefix: str = "airflow") -> str:
        """A new, empty database (one per Airflow home): its name."""
        name = f"{prefix}_{next(self._databases)}"
        connection = self.connect()
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()
        return name


@contextlib.contextmanager
def postgres_server(log_dir: Path) -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (trust authentication, loopback only)."""
    bindir, as_postgres = _postgres_bin(), _as_postgres_user()
    data = Path(tempfile.mkdtemp(prefix="xcom-postgres-"))  # not under a root-only pytest directory
    if as_postgres:
        shutil.chown(data, "postgres", "postgres")
    port = free_port()
    log = Path(log_dir) / f"postgres-{port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(
            [str(bindir / "initdb"), "-D", str(data / "cluster"), "-U", POSTGRES_SUPERUSER, "--auth=trust",
             "-E", "UTF8", "--no-sync", "--locale=C.UTF-8"],
            check=True, capture_output=True, timeout=120, **as_postgres,
        )  # fmt: skip
        options = ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        options += ["-c", "max_connections=300", "-c", f"unix_socket_directories={data}"]
        with log.open("wb") as out:
            process = subprocess.Popen(
                [str(bindir / "postgres"), "-D", str(data / "cluster"), "-h", "127.0.0.1", "-p", str(port), *options],
                stdout=out, stderr=subprocess.STDOUT, **as_postgres,
            )  # fmt: skip
        try:
            _wait_for_port(port, process, "postgres", log)
            server = PostgresServer(port)
            deadline = time.monotonic() + 30
            while True:  # accepting TCP connections before it accepts logins
                try:
                    server.connect().close()
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            yield server
        finally:
            _stop(process, signal.SIGINT)  # PostgreSQL's fast shutdown: clients still connected are not waited for
    finally:
        shutil.rmtree(data, ignore_errors=True)


@dataclass
class RedisServer:
    port: int
    _databases: Iterator[int] = field(default_factory=lambda: count(0))

    def url(self) -> str:
        """A database of its own (Redis has 16) for one Airflow home's Celery broker."""
        database = next(self._databases)
        if database > 15:
            raise RuntimeError("this Redis server has no database left (16 Airflow homes)")
        return f"redis://127.0.0.1:{self.port}/{database}"


@contextlib.contextmanager
def redis_server(log_dir: Path) -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: `make system-packages` installs Debian's redis-server")
    port = free_port()
    log = Path(log_dir) / f"redis-{port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    arguments = ["--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    with log.open("wb") as out:
        process = subprocess.Popen([binary, *arguments, "--dir", str(log.parent)], stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for_port(port, process, "redis-server", log)
        yield RedisServer(port)
    finally:
        _stop(process)
