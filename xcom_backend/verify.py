"""`xcom-backend verify`: check a deployment's XCom setup the way Airflow will read it, then probe the store.

Each check yields one line with a reason. Name checks run on the raw environment (Airflow silently ignores
a misspelled name, so its ``conf`` cannot tell); value checks go through Airflow's own ``conf`` and
connection parsing; the probe writes, reads back, compares and deletes one small object under the prefix.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from xcom_backend import contract

OLD_CLASS = "XComObjectStoreBackend"


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    latency_ms: float | None = None


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def add(self, name: str, ok: bool, detail: str, latency_ms: float | None = None) -> bool:
        self.checks.append(Check(name, ok, detail, latency_ms))
        return ok

    def as_text(self) -> str:
        lines = []
        for check in self.checks:
            timing = f" ({check.latency_ms:.0f} ms)" if check.latency_ms is not None else ""
            lines.append(f"{'PASS' if check.ok else 'FAIL'}  {check.name}: {check.detail}{timing}")
        failed = sum(not check.ok for check in self.checks)
        lines.append(f"{len(self.checks) - failed} passed, {failed} failed")
        return "\n".join(lines)

    def as_json(self) -> str:
        return json.dumps({"ok": self.ok, "checks": [asdict(check) for check in self.checks]}, indent=2)


def check_names(env: Mapping[str, str], report: Report) -> None:
    """Names Airflow would silently ignore."""
    problems = []
    for name in sorted(env):
        upper = name.upper()
        if upper.startswith("AIRFLOW__COMMON.IO__"):
            problems.append(f"{name} is ignored: the section's dot becomes an underscore ({upper.replace('.', '_')})")
        elif "XCOM_OBJECTSTORE_" in upper and upper.startswith("AIRFLOW__"):
            problems.append(f"{name} is ignored: the key is XCOM_OBJECTSTORAGE_..., not OBJECTSTORE")
        elif upper.startswith("AIRFLOW__COMMON_IO__") and upper not in (
            contract.PATH_ENV,
            contract.THRESHOLD_ENV,
            contract.COMPRESSION_ENV,
        ):
            problems.append(f"{name} is not an XCom object storage setting Airflow reads")
    required = [contract.XCOM_BACKEND_ENV, contract.PATH_ENV]
    missing = [name for name in required if name not in env]
    if missing and not problems:
        problems.append(f"not set: {', '.join(missing)} (Airflow then keeps every XCom in the metadata DB)")
    report.add("variable names", not problems, "; ".join(problems) or "every XCom variable is one Airflow reads")


def check_backend_class(report: Report) -> bool:
    from airflow.configuration import conf

    dotted = conf.get("core", "xcom_backend")
    if OLD_CLASS in dotted:
        return report.add(
            "backend class",
            False,
            f"{dotted} no longer exists; use {contract.BUNDLED_BACKEND} or {contract.COMMON_IO_BACKEND}",
        )
    module, _, name = dotted.rpartition(".")
    try:
        getattr(__import__(module, fromlist=[name]), name)
    except (ImportError, AttributeError) as err:
        return report.add("backend class", False, f"{dotted} does not import: {err}")
    if dotted not in contract.BACKEND_CLASSES.values():
        return report.add("backend class", False, f"{dotted} imports but is not an object-storage XCom backend")
    return report.add("backend class", True, f"{dotted} imports")


def check_conf(env: Mapping[str, str], report: Report) -> tuple[str | None, int]:
    """What Airflow's conf returns, compared with the environment, and the threshold in words."""
    from airflow.configuration import conf

    section = contract.AIRFLOW_CONFIG_SECTION
    path = conf.get(section, contract.PATH_KEY, fallback="") or None
    threshold = conf.getint(section, contract.THRESHOLD_KEY, fallback=-1)
    compression = conf.get(section, contract.COMPRESSION_KEY, fallback="") or None
    mismatched = [
        f"{name}={env[name]!r} but conf gives {got!r}"
        for name, got in ((contract.PATH_ENV, path), (contract.THRESHOLD_ENV, str(threshold)))
        if name in env and env[name] != got
    ]
    ok = not mismatched and path is not None
    detail = "; ".join(mismatched) or (
        f"path={path} threshold={threshold} compression={compression or 'none'}" if path else "no path configured"
    )
    report.add("airflow conf", ok, detail)
    from xcom_backend import codec

    try:
        codec.validate_compression(compression)
        compression_ok = True
        compression_detail = compression or "none"
    except ValueError as err:
        compression_ok, compression_detail = False, str(err)
    report.add("compression", compression_ok, compression_detail)
    report.add("threshold", threshold >= -1, f"{threshold}: {contract.describe_threshold(threshold)}")
    return path, threshold


def _known_scheme(scheme: str) -> bool:
    """A scheme Airflow's ObjectStoragePath can open (the providers' registrations, or local files)."""
    if scheme in contract.STORE_SCHEMES or scheme in ("file", "local"):
        return True
    from airflow.sdk.io.fs import has_fs

    return has_fs(scheme)


def check_path(path: str | None, report: Report) -> tuple[str, str | None] | None:
    """(scheme, conn_id or None) when the path is one the backend (and common-io) can use."""
    if not path:
        report.add("storage path", False, f"{contract.PATH_ENV} is empty")
        return None
    try:
        location = contract.parse_objectstorage_path(path)
    except contract.ContractError as err:
        report.add("storage path", False, str(err))
        return None
    scheme, conn_id, bucket, prefix = location.scheme, location.conn_id, location.bucket, location.prefix
    if scheme in contract.UNREGISTERED_SCHEMES:
        fixed = path.replace(f"{scheme}://", f"{contract.UNREGISTERED_SCHEMES[scheme]}://", 1)
        report.add("storage path", False, f"{scheme}:// is not an object-storage scheme Airflow registers; use {fixed}")
        return None
    if not _known_scheme(scheme):
        expected = ", ".join([*contract.STORE_SCHEMES, "file"])
        report.add("storage path", False, f"unknown scheme {scheme}://; Airflow knows e.g. {expected}")
        return None
    if not prefix:
        report.add("storage path", False, f"{path!r} has no prefix; XComs would land at the bucket root")
        return None
    credentials = f"connection {conn_id}" if conn_id else "no connection id (the scheme's default credentials)"
    where = f"bucket {bucket}, prefix {prefix}" if bucket else f"path /{prefix}"
    report.add("storage path", True, f"{scheme}://, {credentials}, {where}")
    return scheme, conn_id


def check_connection(scheme: str, conn_id: str | None, report: Report) -> bool:
    """The connection resolves and has a type the scheme's filesystem takes (nothing to check without one)."""
    if conn_id is None or scheme not in contract.STORE_SCHEMES:
        return True
    from airflow.sdk import BaseHook

    try:
        connection = BaseHook.get_connection(conn_id)
    except Exception as err:
        env_name = f"AIRFLOW_CONN_{conn_id.upper()}"
        return report.add("connection", False, f"{conn_id} does not resolve ({type(err).__name__}); set {env_name}")
    allowed = contract.STORE_SCHEMES[scheme].connection_types
    if connection.conn_type not in allowed:
        return report.add(
            "connection",
            False,
            f"{conn_id} is a {connection.conn_type} connection; {scheme}:// needs {' or '.join(sorted(allowed))}",
        )
    return report.add("connection", True, f"{conn_id} resolves to a connection of type {connection.conn_type}")


def _timed(step: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = step()
    return result, (time.perf_counter() - started) * 1000


def probe(report: Report) -> None:
    """Write, read back, compare and delete one small object under the prefix."""
    from xcom_backend.store import current_store

    try:
        current, latency = _timed(current_store)
    except Exception as err:
        report.add("probe: filesystem", False, f"{type(err).__name__}: {err}")
        return
    report.add("probe: filesystem", True, f"{type(current.fs).__name__} for {current.base_url}", latency)
    name = f"_verify/{uuid.uuid4()}.json"
    url = current.url_of(name)
    body = json.dumps({"verify": name}).encode()
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("write", lambda: current.write(name, body)),
        ("read back", lambda: current.read(name)),
        ("delete", lambda: current.delete(name)),
    ]
    for label, step in steps:
        try:
            result, latency = _timed(step)
        except Exception as err:
            reason = "permission denied" if isinstance(err, PermissionError) else type(err).__name__
            report.add(f"probe: {label}", False, f"{url}: {reason}: {str(err)[:200]}")
            return
        report.add(f"probe: {label}", True, url, latency)
        if label == "read back":
            equal = result == body
            report.add("probe: compare", equal, "read back what was written" if equal else "content differs")


def verify(env: Mapping[str, str] | None = None, *, run_probe: bool = True) -> Report:
    """Run every check against ``env`` (default: this process's environment), as Airflow reads it."""
    env = dict(os.environ if env is None else env)
    report = Report()
    check_names(env, report)
    check_backend_class(report)
    path, _ = check_conf(env, report)
    target = check_path(path, report)
    if target and check_connection(*target, report) and run_probe:
        probe(report)
    return report
