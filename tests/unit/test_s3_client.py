"""The S3 client the backend reads and writes with (xcom_backend/s3.py) is set up from the connection exactly as
the Amazon provider's own filesystem (the reference: ObjectStoragePath's s3fs), and the connections only that
filesystem handles stay with it. No request is sent: the clients are compared as built."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.xcom_calls import clear_all_caches
from xcom_backend.s3 import provider_client
from xcom_backend.store import current_store


@pytest.fixture(autouse=True)
def no_ambient_aws(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """No credential from this machine: only what each test puts in the connection or the env."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields: Any) -> str:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "aws", **fields}))
    return conn_id


def providers_filesystem_client(conn_id: str | None) -> Any:
    from airflow.providers.amazon.aws.fs.s3 import get_fs

    fs = get_fs(conn_id, None)
    fs.connect()
    return fs.s3


def setup_of(client: Any) -> dict[str, Any]:
    config, credentials = client.meta.config, client._request_signer._credentials
    return {
        "endpoint": client.meta.endpoint_url,
        "region": client.meta.region_name,
        "access key": credentials.access_key,
        "session token": credentials.token,
        "verify": client._endpoint.http_session._verify,
        "proxies": config.proxies,
        "retries": config.retries,
        "addressing": (config.s3 or {}).get("addressing_style"),
        "signature": config.signature_version,
    }


def test_the_client_is_set_up_as_the_providers_filesystem(monkeypatch: pytest.MonkeyPatch) -> None:
    extra = {
        "region_name": "eu-west-3",
        "endpoint_url": "http://127.0.0.1:9",
        "aws_session_token": "session-token-tuned",
        "verify": False,  # neither the provider's filesystem nor the backend turns certificate checks off
        "config_kwargs": {
            "proxies": {"https": "http://proxy.internal:3128"},
            "retries": {"mode": "standard", "max_attempts": 7},
            "connect_timeout": 11,
            "s3": {"addressing_style": "path"},
            "signature_version": "s3v4",
        },
    }
    conn_id = connection(monkeypatch, "tuned", login="AKIATUNED", password="secret-tuned", extra=extra)
    client, filesystem_client = provider_client(conn_id), providers_filesystem_client(conn_id)
    assert setup_of(client) == setup_of(filesystem_client)
    assert (client.meta.region_name, client.meta.config.retries["total_max_attempts"]) == ("eu-west-3", 8)
    assert setup_of(client)["session token"] == "session-token-tuned"
    assert setup_of(client)["verify"] not in (False, None)
    # Timeouts the connection sets are both clients' (unset: botocore's 60 s, as S3Hook's; s3fs's own 5/15 s).
    assert client.meta.config.connect_timeout == filesystem_client.meta.config.connect_timeout == 11


def test_without_a_connection_id_the_default_credential_chain_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFROMENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-from-env")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-south-1")
    ours = setup_of(provider_client(None))
    assert ours == setup_of(providers_filesystem_client(None))
    assert (ours["access key"], ours["region"]) == ("AKIAFROMENV", "ap-south-1")


@pytest.mark.parametrize(
    "extra",
    [
        {"service_config": {"s3": {"proxy-uri": "http://proxy.internal:3128"}}},
        {"service_config": {"s3": {"signer": "S3V4RestSigner", "signer_uri": "http://s", "signer_token": "t"}}},
        {},  # and no login: no credentials anywhere, so the filesystem's anonymous requests
    ],
    ids=["proxy-uri", "signer", "anonymous"],
)
def test_connections_only_the_providers_filesystem_handles_stay_with_s3fs(
    monkeypatch: pytest.MonkeyPatch, extra: dict[str, Any]
) -> None:
    keys = {"login": "AKIAKEYS", "password": "secret-keys"} if extra else {}
    conn_id = connection(monkeypatch, "special", extra={"region_name": "us-east-1", **extra}, **keys)
    assert provider_client(conn_id) is None
    monkeypatch.setenv("AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH", f"s3://{conn_id}@bucket/xcom")
    clear_all_caches()
    try:
        store = current_store()
        assert store.s3 is None and store.library == "s3fs"
        assert store.transport is store.fs
    finally:
        clear_all_caches()


def test_a_plain_connection_gets_the_client_and_no_filesystem(monkeypatch: pytest.MonkeyPatch) -> None:
    conn_id = connection(monkeypatch, "plain", login="AKIAPLAIN", password="secret-plain")
    monkeypatch.setenv("AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH", f"s3a://{conn_id}@bucket/xcom")
    clear_all_caches()
    try:
        store = current_store()
        assert store.s3 is not None and store.s3.bucket == "bucket"
        assert store.key_of("d/r/t/-1/k.json") == "xcom/d/r/t/-1/k.json"
        assert "fs" not in vars(store)  # s3fs is built only if something lists the prefix (gc)
    finally:
        clear_all_caches()


CLIENT_ERRORS = [
    ("NoSuchKey", 404), ("NoSuchBucket", 404), ("404", 404), ("AccessDenied", 403), ("403", 403),
    ("ExpiredToken", 400), ("InvalidAccessKeyId", 403), ("SignatureDoesNotMatch", 403),
    ("RequestTimeTooSkewed", 403), ("InvalidObjectState", 403), ("AccountProblem", 403),
    ("AllAccessDisabled", 403), ("InvalidPayer", 403), ("NotSignedUp", 403), ("InvalidSecurity", 403),
    ("RequestTimeout", 400), ("InvalidToken", 400), ("InternalError", 500), ("SlowDown", 503),
    ("ServiceUnavailable", 503), ("OperationAborted", 409), ("InvalidRequest", 400), ("EntityTooLarge", 400),
    ("BadDigest", 400), ("XAmzContentSHA256Mismatch", 400), ("KMS.KMSInvalidStateException", 400),
]  # fmt: skip


@pytest.mark.parametrize(("code", "status"), CLIENT_ERRORS)
def test_s3_errors_are_raised_as_s3fs_raises_them(code: str, status: int) -> None:
    """The backend's messages tell a missing object, a refused credential and other failures apart by the
    exception's type: the client path raises the type s3fs's own translation gives."""
    from botocore.exceptions import ClientError
    from s3fs.errors import translate_boto_error

    from xcom_backend.s3 import _as_os_errors

    error = ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op")
    with pytest.raises(OSError) as raised, _as_os_errors("bucket", "xcom/k.json"):
        raise error
    assert type(raised.value) is type(translate_boto_error(error))
    assert code in str(raised.value) and "s3://bucket/xcom/k.json" in str(raised.value)
