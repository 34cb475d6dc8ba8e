"""`xcom-backend verify`: check a deployment's XCom setup the way Airflow will read it, then probe the store.

Each check yields one line with a reason. Name checks run on the raw environment (Airflow silently ignores
a misspelled name, so its ``conf`` cannot tell); value checks go through Airflow's own ``conf`` and
connection parsing; the probe writes, reads back, compares and deletes one small object under the prefix.
"""

from __future__ import annotations

import json
import os
import time
import urllib.parse
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from xcom_backend import contract

OLD_CLASS = "XComObjectStoreBackend"
DEFAULT_WARN_DAYS = 14  # warn this long before a credential (an Azure SAS) expires


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    latency_ms: float | None = None
    warning: bool = False  # passes, but needs attention soon (a credential about to expire)


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def add(self, name: str, ok: bool, detail: str, latency_ms: float | None = None, *, warning: bool = False) -> bool:
        self.checks.append(Check(name, ok, detail, latency_ms, warning))
        return ok

    def as_text(self) -> str:
        lines = []
        for check in self.checks:
            timing = f" ({check.latency_ms:.0f} ms)" if check.latency_ms is not None else ""
            status = "FAIL" if not check.ok else "WARN" if check.warning else "PASS"
            lines.append(f"{status}  {check.name}: {check.detail}{timing}")
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


def check_deployment(env: Mapping[str, str], report: Report) -> None:
    """Which deployment of a multi-deployment stack this env is for (said first, so a wrong env shows at once)."""
    if deployment := env.get(contract.DEPLOYMENT_ENV):
        report.add("deployment", True, f"{deployment} (from {contract.DEPLOYMENT_ENV})")


def _parse_time(text: str) -> datetime | None:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _sas_expiry(connection: Mapping[str, Any]) -> datetime | None:
    """The ``se`` (signed expiry) of a SAS in an Azure connection: as a token or inside a connection string."""
    extra = connection.get("extra") or {}
    if isinstance(extra, str):
        extra = json.loads(extra or "{}")
    token = extra.get("sas_token") or ""
    for part in (extra.get("connection_string") or "").split(";"):
        if part.startswith("SharedAccessSignature="):
            token = part.split("=", 1)[1]
    expiry = urllib.parse.parse_qs(token.lstrip("?")).get("se", [""])[0]
    return _parse_time(expiry) if expiry else None


def _connection_kind(connection: Mapping[str, Any]) -> str:
    """What kind of credential a connection holds, named as the stacks describe it."""
    extra = connection.get("extra") or {}
    extra = json.loads(extra) if isinstance(extra, str) else extra
    conn_type = connection.get("conn_type", "")
    if conn_type == "aws":
        return "aws-access-key" if connection.get("login") else "aws-role" if extra.get("role_arn") else "aws-default"
    if conn_type == "google_cloud_platform":
        return "gcp-service-account-key" if extra.get("keyfile_dict") else "gcp-default-credentials"
    if conn_type == "wasb":
        text = json.dumps(extra)
        if "sas_token" in extra or "SharedAccessSignature=" in text:
            return "azure-sas"
        return "azure-account-key" if "account_key" in extra or "AccountKey=" in text else "azure-identity"
    return conn_type or "credential"


def _describe_age(created: datetime, now: datetime) -> str:
    days = (now - created).days
    return f"created {created:%Y-%m-%d %H:%M} UTC ({days} day{'s' if days != 1 else ''} ago)"


def check_credential(
    env: Mapping[str, str], conn_id: str | None, report: Report, *, warn_days: int, now: datetime | None = None
) -> None:
    """The credential's age or expiry: from the stack's description of it (``XCOM_BACKEND_CREDENTIAL``) and, for
    an Azure SAS, from the token's own expiry; warns ``warn_days`` before a SAS expires and fails after."""
    now = now or datetime.now(timezone.utc)
    described: dict[str, Any] = {}
    if text := env.get(contract.CREDENTIAL_ENV):
        try:
            described = json.loads(text)
        except json.JSONDecodeError:
            report.add("credential", False, f"{contract.CREDENTIAL_ENV} is not JSON; export the env again")
            return
    connection: dict[str, Any] = {}
    if conn_id and (raw := env.get(f"AIRFLOW_CONN_{conn_id.upper()}", "")).lstrip().startswith("{"):
        connection = json.loads(raw)
    if not described and not connection:
        return  # a connection from a secrets backend: nothing to say here
    parts = [str(described.get("kind") or _connection_kind(connection))]
    if described.get("id"):
        parts.append(str(described["id"]))
    elif connection.get("login") and connection.get("conn_type") == "aws":
        parts.append(str(connection["login"]))  # an access key id, not a secret
    if described.get("generation"):
        parts.append(f"generation {described['generation']}")
    if described.get("signed_with"):
        parts.append(f"signed with {described['signed_with']}")
    created = _parse_time(str(described.get("created", "")))
    expires = _sas_expiry(connection) if connection.get("conn_type") == "wasb" else None
    expires = expires or _parse_time(str(described.get("expires", "")))
    if created:
        parts.append(_describe_age(created, now))
    if expires is None:
        if not created:
            parts.append("age unknown: the env does not say when it was created")
        report.add("credential", True, ", ".join(parts))
        return
    left = expires - now
    days = left.days
    if left.total_seconds() <= 0:
        report.add("credential", False, ", ".join([*parts, f"EXPIRED at {expires:%Y-%m-%dT%H:%M:%SZ}; rotate it"]))
        return
    parts.append(f"expires {expires:%Y-%m-%dT%H:%M:%SZ} (in {days} day{'s' if days != 1 else ''})")
    if days < warn_days:
        parts.append(f"less than {warn_days} days left: rotate it now (docs/rotation.md)")
    report.add("credential", True, ", ".join(parts), warning=days < warn_days)


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
    if current.s3 is not None:
        sender = "the Amazon provider's S3 client"
    else:
        sender = "GCS's JSON API" if current.gcs is not None else type(current.fs).__name__
    report.add("probe: filesystem", True, f"{sender} for {current.base_url}", latency)
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


def verify(
    env: Mapping[str, str] | None = None, *, run_probe: bool = True, warn_days: int = DEFAULT_WARN_DAYS
) -> Report:
    """Run every check against ``env`` (default: this process's environment), as Airflow reads it."""
    env = dict(os.environ if env is None else env)
    report = Report()
    check_deployment(env, report)
    check_names(env, report)
    check_backend_class(report)
    path, _ = check_conf(env, report)
    target = check_path(path, report)
    if target and check_connection(*target, report):
        check_credential(env, target[1], report, warn_days=warn_days)
        if run_probe:
            probe(report)
    return report
