"""The GCS credentials and filesystem the backend builds without the Google provider's hook (xcom_backend/gcs.py)
are those the provider's own gs:// filesystem builds (the reference: its get_fs, as ObjectStoragePath calls it),
and every connection that needs more than a key stays with the provider. No request is sent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.xcom_calls import clear_all_caches
from xcom_backend.gcs import GcsObjects, key_file_connection
from xcom_backend.store import current_store

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def key_info() -> dict[str, str]:
    """A service account key file's fields, with a key generated here."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return {
        "type": "service_account",
        "project_id": "key-project",
        "private_key_id": "0123abcd",
        "private_key": pem.decode(),
        "client_email": "xcom@key-project.iam.gserviceaccount.com",
        "client_id": "104729000000000000001",
        "token_uri": "https://oauth2.googleapis.com/token",
    }


@pytest.fixture(autouse=True)
def no_ambient_gcp(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "STORAGE_EMULATOR_HOST", "GOOGLE_CLOUD_UNIVERSE_DOMAIN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


def connection(monkeypatch: pytest.MonkeyPatch, extra: dict[str, Any], conn_id: str = "gcs_conn") -> str:
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "google_cloud_platform", "extra": extra})
    )
    return conn_id


def setup_of(fs: Any) -> dict[str, Any]:
    credentials = fs.credentials.credentials
    return {
        "credentials": type(credentials),
        "email": credentials.service_account_email,
        "scopes": list(credentials.scopes or []),
        "key id": credentials.signer.key_id,
        "token uri": credentials._token_uri,
        "project": fs.project,
        "options": {
            key: fs.storage_options.get(key)
            for key in (
                "project",
                "access",
                "consistency",
                "cache_timeout",
                "requester_pays",
                "session_kwargs",
                "endpoint_url",
                "default_location",
                "version_aware",
            )
        },
    }


def providers_filesystem(conn_id: str) -> Any:
    from airflow.providers.google.cloud.fs.gcs import get_fs

    return get_fs(conn_id, None)


def shapes(info: dict[str, str], key_file: Path) -> dict[str, dict[str, Any]]:
    escaped = {**info, "private_key": info["private_key"].replace("\n", "\\n")}
    return {
        "keyfile_dict": {"keyfile_dict": info},
        "keyfile_dict as JSON text, newlines escaped": {"keyfile_dict": json.dumps(escaped), "project": "other"},
        "key_path": {"key_path": str(key_file)},
        "prefixed fields": {
            "extra__google_cloud_platform__keyfile_dict": json.dumps(info),
            "extra__google_cloud_platform__project": "prefixed-project",
            "extra__google_cloud_platform__scope": "https://www.googleapis.com/auth/devstorage.read_write",
        },
        "scopes, empty fields": {
            "keyfile_dict": info,
            "scope": "https://www.googleapis.com/auth/devstorage.full_control, https://www.googleapis.com/auth/cloud-platform",
            "project": "",
            "impersonation_chain": "",
        },
        "gcs options": {
            "keyfile_dict": info,
            "gcs.endpoint": "http://127.0.0.1:9",
            "gcs.access": "read_write",
            "gcs.consistency": "md5",
            "gcs.cache-timeout": 5,
            "gcs.default-bucket-location": "EU",
        },
    }


def test_a_key_file_connection_is_built_as_the_providers_filesystem_builds_it(
    monkeypatch: pytest.MonkeyPatch, key_info: dict[str, str], tmp_path: Path
) -> None:
    key_file = tmp_path / "key.json"
    key_file.write_text(json.dumps(key_info))
    for label, extra in shapes(key_info, key_file).items():
        conn_id = connection(monkeypatch, extra)
        built = key_file_connection(conn_id)
        assert built is not None, label
        assert setup_of(built.filesystem()) == setup_of(providers_filesystem(conn_id)), label


@pytest.mark.parametrize(
    "extra",
    [
        {},  # the worker's own identity (ADC)
        {"impersonation_chain": "a@p.iam.gserviceaccount.com"},
        {"key_secret_name": "airflow-key"},
        {"credential_config_file": "/etc/gcp/wif.json"},
        {"is_anonymous": True},
        {"quota_project_id": "billing-project"},
        {"idp_issuer_url": "https://idp.example/token"},
        {"keyfile_dict": "{not json"},
        {"key_path": "/keys/legacy.p12"},
        {"keyfile_dict": {"client_email": "no-private-key@p.iam.gserviceaccount.com"}},
        {"extra__google_cloud_platform__impersonation_chain": "a@p.iam.gserviceaccount.com"},
    ],
    ids=lambda extra: ",".join(extra) or "no key",
)
def test_other_connections_stay_with_the_provider(
    monkeypatch: pytest.MonkeyPatch, key_info: dict[str, str], extra: dict[str, Any]
) -> None:
    if list(extra) in (
        ["impersonation_chain"],
        ["quota_project_id"],
        ["extra__google_cloud_platform__impersonation_chain"],
    ):
        extra = {**extra, "keyfile_dict": key_info}  # a key, and something only the provider does with it
    assert key_file_connection(connection(monkeypatch, extra)) is None


def test_both_a_key_path_and_a_key_stay_with_the_provider(monkeypatch: pytest.MonkeyPatch, key_info, tmp_path):
    key_file = tmp_path / "key.json"
    key_file.write_text(json.dumps(key_info))
    assert key_file_connection(connection(monkeypatch, {"keyfile_dict": key_info, "key_path": str(key_file)})) is None


def use_store(monkeypatch: pytest.MonkeyPatch, extra: dict[str, Any]) -> Any:
    conn_id = connection(monkeypatch, extra)
    monkeypatch.setenv("AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH", f"gs://{conn_id}@bucket/xcom")
    clear_all_caches()
    return current_store()


@pytest.mark.parametrize(
    "option",
    [{"gcs.requester-pays": True}, {"gcs.session-kwargs": {"trust_env": True}}, {"gcs.version-aware": "true"}],
    ids=lambda option: next(iter(option)),
)
def test_options_only_gcsfs_implements_keep_requests_on_gcsfs(
    monkeypatch: pytest.MonkeyPatch, key_info: dict[str, str], option: dict[str, Any]
) -> None:
    try:
        store = use_store(monkeypatch, {"keyfile_dict": key_info, **option})
        assert store.gcs is None and store.library == "gcsfs"
        store = use_store(monkeypatch, {"keyfile_dict": key_info})
        assert isinstance(store.transport, GcsObjects)
        assert store.transport.endpoint == "https://storage.googleapis.com"
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", "127.0.0.1:9")  # gcsfs's endpoint: no gcs.endpoint given
        store = use_store(monkeypatch, {"keyfile_dict": key_info})
        assert store.gcs is None and store.library == "gcsfs"
        store = use_store(monkeypatch, {"keyfile_dict": key_info, "gcs.endpoint": "http://127.0.0.1:9/"})
        assert store.transport.endpoint == "http://127.0.0.1:9"
    finally:
        clear_all_caches()


def test_a_key_file_store_imports_neither_the_providers_hook_nor_gcsfs(key_info: dict[str, str], tmp_path: Path):
    """In a fresh process, as a task's first offload: what made it 0.40 s (docs/benchmark.md)."""
    env = {
        "PATH": "/usr/bin:/bin",
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH": "gs://gcs_conn@bucket/xcom",
        "AIRFLOW_CONN_GCS_CONN": json.dumps(
            {"conn_type": "google_cloud_platform", "extra": {"keyfile_dict": key_info}}
        ),
    }
    script = (
        "import sys\n"
        "from xcom_backend.store import current_store\n"
        "store = current_store()\n"
        "print(type(store.transport).__name__, sorted(m for m in sys.modules if m.startswith(('gcsfs', 'aiohttp',"
        " 'airflow.providers.google.common', 'airflow.providers.google.cloud'))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "GcsObjects []", result.stdout
