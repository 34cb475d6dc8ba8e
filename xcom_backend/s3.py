"""S3's single-object requests (read, write, delete) through the Amazon provider's own client, without s3fs.

The client is built as the Amazon provider's hooks build theirs, from what the provider's filesystem uses:
the same connection, credentials (keys, role, profile, IRSA), region, endpoint and botocore ``config_kwargs``.
Like that filesystem (so like common-io, and like gc's listing through s3fs) it leaves the connection's
``verify`` extra aside: certificates are always checked, against ``AWS_CA_BUNDLE`` where set. It is
synchronous, so a task's first offload does not import s3fs, aiobotocore and aiohttp (measured: 120 ms, 45 of
them aiohttp loading the CA bundle into two TLS contexts at import) nor start fsspec's event-loop thread; and
at 50 MB it was faster both ways (docs/benchmark.md). Listing a prefix (gc) still goes through s3fs.

Connections only the provider's filesystem handles keep s3fs for everything: a request signer or a
``proxy-uri`` in the connection's ``service_config.s3``, and no credentials at all (the filesystem then sends
unsigned requests).
"""

from __future__ import annotations

import base64
import contextlib
import errno
import time
from collections.abc import Iterator
from typing import Any

# The provider's filesystem module reads these keys of service_config.s3 (airflow.providers.amazon.aws.fs.s3).
FILESYSTEM_ONLY_SERVICE_KEYS = ("signer", "proxy-uri")
BODY_READ_TRIES = 5  # s3fs's S3FileSystem.retries
# Codes S3 answers a credential it refuses with, some with status 400 (s3fs's errors table maps them so too).
_DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "403",
        "AccountProblem",
        "AllAccessDisabled",
        "ExpiredToken",
        "InvalidAccessKeyId",
        "InvalidObjectState",
        "InvalidPayer",
        "InvalidSecurity",
        "NotSignedUp",
        "RequestTimeTooSkewed",
        "SignatureDoesNotMatch",
    }
)


def provider_client(conn_id: str | None) -> Any | None:
    """An S3 client built the way the provider's hooks build theirs, or None where s3fs must be used.

    ``conn_id`` None: the default credential chain, as the provider's filesystem. The provider's own idiom
    (``AwsGenericHook.account_id``): the hook's session, endpoint and botocore config. Not
    ``get_conn()``, which walks the call stack twice (``inspect.stack()``) to name the caller in the user agent:
    measured 30-40 ms of a first offload; the provider's filesystem skips that too.
    """
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    hook = AwsBaseHook(aws_conn_id=conn_id, client_type="s3")
    if any(hook.service_config.get(key) for key in FILESYSTEM_ONLY_SERVICE_KEYS):
        return None
    session = hook.get_session(region_name=hook.region_name)
    if session.get_credentials() is None:  # the filesystem's anonymous mode
        return None
    return session.client(
        service_name="s3",
        endpoint_url=hook.conn_config.get_service_endpoint_url(service_name="s3"),
        config=hook.config,
    )


class S3Objects:
    """One request per read, write and delete of an object under ``bucket``, errors as s3fs raises them."""

    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    def put(self, key: str, data: bytes) -> None:
        """One PutObject, with the bytes' CRC32C (checksum_headers)."""
        with _as_os_errors(self.bucket, key):
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data, **checksum_headers(self.client, data))

    def get(self, key: str) -> bytes:
        """One GetObject; tried again, as s3fs does, when the body breaks off after the headers (botocore's own
        retries end when the headers arrive)."""
        from botocore.exceptions import ConnectionClosedError, ReadTimeoutError, ResponseStreamingError

        for attempt in range(BODY_READ_TRIES - 1):
            try:
                return self._get_once(key)
            except (ResponseStreamingError, ReadTimeoutError, ConnectionClosedError):
                time.sleep(min(1.7**attempt * 0.1, 15))  # s3fs's backoff
        return self._get_once(key)

    def _get_once(self, key: str) -> bytes:
        with _as_os_errors(self.bucket, key):
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def delete(self, key: str) -> bool:
        """False when the bucket is gone; S3 answers a missing key as deleted (as s3fs's rm_file does)."""
        try:
            with _as_os_errors(self.bucket, key):
                self.client.delete_object(Bucket=self.bucket, Key=key)
        except FileNotFoundError:
            return False
        return True


@contextlib.contextmanager
def _as_os_errors(bucket: str, key: str) -> Iterator[None]:
    """botocore's ClientError as the OSError s3fs raises for it: 404 -> FileNotFoundError, 403 ->
    PermissionError, anything else -> OSError; the backend's messages tell these apart."""
    from botocore.exceptions import ClientError

    try:
        yield
    except ClientError as err:
        error = err.response.get("Error", {})
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code, target = str(error.get("Code", "")), f"s3://{bucket}/{key}"
        message = f"{code}: {error.get('Message', '')}"
        if status == 404 or code in ("NoSuchKey", "NoSuchBucket", "NotFound", "404"):
            raise FileNotFoundError(errno.ENOENT, message, target) from err
        if status == 403 or code in _DENIED_CODES:
            raise PermissionError(errno.EACCES, message, target) from err
        if code == "RequestTimeout":
            raise TimeoutError(errno.ETIMEDOUT, message, target) from err
        raise OSError(errno.EIO, message, target) from err


def checksum_headers(client: Any, data: bytes) -> dict[str, str]:
    """The PutObject argument carrying the bytes' CRC32C, which S3 verifies before it stores the object (botocore
    would otherwise compute a CRC32 of its own, 2.5x slower without its optional C extension). None for stores
    configured with request_checksum_calculation=when_required (AWS_REQUEST_CHECKSUM_CALCULATION: S3-compatible
    stores that refuse checksum headers), as botocore would send none."""
    if getattr(client.meta.config, "request_checksum_calculation", None) == "when_required":
        return {}
    import google_crc32c

    return {"ChecksumCRC32C": base64.b64encode(google_crc32c.value(data).to_bytes(4, "big")).decode()}
