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
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from xcom_backend.transfer import PART_SIZE, in_parallel, parts_of, read_in_ranges, request_slots

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


def provider_client(conn_id: str | None, concurrency: int = 10) -> Any | None:
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
    config = hook.config
    if concurrency > (getattr(config, "max_pool_connections", None) or 10):  # one connection per part in flight
        from botocore.config import Config

        config = (config or Config()).merge(Config(max_pool_connections=concurrency))
    return session.client(
        service_name="s3",
        endpoint_url=hook.conn_config.get_service_endpoint_url(service_name="s3"),
        config=config,
    )


class S3Objects:
    """Reads, writes and deletes of objects under ``bucket``, errors as s3fs raises them: one request each up to
    PART_SIZE; above it, parts sent and ranges read ``concurrency`` at a time."""

    def __init__(self, client: Any, bucket: str, concurrency: int = 10) -> None:
        self.client = client
        self.bucket = bucket
        self.concurrency = concurrency
        self.slots = request_slots(concurrency)  # requests in flight in this process, whoever sends them

    def put(self, key: str, data: bytes) -> None:
        """One PutObject with the bytes' CRC32C (checksum_headers); above PART_SIZE a multipart upload."""
        if len(data) > PART_SIZE:
            self._put_parts(key, memoryview(data))
            return
        with self.slots, _as_os_errors(self.bucket, key):
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data, **checksum_headers(self.client, data))

    def _put_parts(self, key: str, data: memoryview) -> None:
        """Parts of PART_SIZE, ``concurrency`` at a time, each a slice of ``data`` (no copy) with its CRC32, which
        S3 verifies per part (botocore retries a part as it retries any request). A part that still fails aborts
        the upload: nothing is stored under the key and the write raises."""
        checksum = _part_checksums(self.client)
        with _as_os_errors(self.bucket, key):
            upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=key, **checksum.algorithm)[
                "UploadId"
            ]
        try:

            def send(number: int) -> dict[str, Any]:
                part = data[(number - 1) * PART_SIZE : number * PART_SIZE]
                headers = checksum.of(part)
                with self.slots, _as_os_errors(self.bucket, key):
                    answer = self.client.upload_part(
                        Bucket=self.bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=UploadBody(part),
                        **headers,
                    )
                return {"PartNumber": number, "ETag": answer["ETag"], **headers}

            numbers = range(1, len(parts_of(len(data))) + 1)
            parts = in_parallel(send, numbers, self.concurrency)
            with _as_os_errors(self.bucket, key):
                self.client.complete_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
                )
        except BaseException:
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            raise

    def get(self, key: str, size: int | None = None) -> bytes | bytearray:
        """One GetObject; with the object's ``size`` known and above PART_SIZE, ranges (transfer.range_size) read
        ``concurrency`` at a time into one buffer. A read whose body breaks off after the headers is tried again,
        as s3fs does (botocore's own retries end when the headers arrive). An object shorter than ``size`` comes
        back short, one longer raises: the caller checks size and digest of what it gets."""
        if size is None or size <= PART_SIZE:
            return _retried(lambda: self._get_once(key))
        return read_in_ranges(
            lambda start, end: _retried(lambda: self._get_range(key, start, end, size)), size, self.concurrency
        )

    def _get_once(self, key: str) -> bytes:
        with self.slots, _as_os_errors(self.bucket, key):
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def _get_range(self, key: str, start: int, end: int, size: int) -> bytes:
        from botocore.exceptions import ClientError

        with self.slots:
            try:
                with _as_os_errors(self.bucket, key):
                    answer = self.client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes={start}-{end - 1}")
            except OSError as err:
                if isinstance(err.__cause__, ClientError) and "InvalidRange" in str(err):
                    return b""  # the object ends before this range
                raise
            total = answer.get("ContentRange", "").rpartition("/")[2]
            if total.isdigit() and int(total) > size:  # shorter objects come back short: their digest then fails
                answer["Body"].close()
                raise OSError(
                    errno.EIO,
                    f"the object is {total} bytes, not the {size} its reference names",
                    f"s3://{self.bucket}/{key}",
                )
            return answer["Body"].read()

    def delete(self, key: str) -> bool:
        """False when the bucket is gone; S3 answers a missing key as deleted (as s3fs's rm_file does)."""
        try:
            with _as_os_errors(self.bucket, key):
                self.client.delete_object(Bucket=self.bucket, Key=key)
        except FileNotFoundError:
            return False
        return True


def _retried(read: Callable[[], bytes]) -> bytes:
    from botocore.exceptions import ConnectionClosedError, ReadTimeoutError, ResponseStreamingError

    for attempt in range(BODY_READ_TRIES - 1):
        try:
            return read()
        except (ResponseStreamingError, ReadTimeoutError, ConnectionClosedError):
            time.sleep(min(1.7**attempt * 0.1, 15))  # s3fs's backoff
    return read()


class _PartChecksums:
    """CRC32 of each part (zlib reads a memoryview without copying it), which S3 verifies per part; none where
    the client sends no checksums (checksum_headers)."""

    def __init__(self, enabled: bool) -> None:
        self.algorithm = {"ChecksumAlgorithm": "CRC32"} if enabled else {}

    def of(self, part: memoryview) -> dict[str, str]:
        if not self.algorithm:
            return {}
        return {"ChecksumCRC32": base64.b64encode(zlib.crc32(part).to_bytes(4, "big")).decode()}


def _part_checksums(client: Any) -> _PartChecksums:
    return _PartChecksums(getattr(client.meta.config, "request_checksum_calculation", None) != "when_required")


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


class UploadBody:
    """The bytes of one PUT, neither copied by botocore nor by aiohttp (the 50 MB push peaked at 2x otherwise).

    botocore wraps a bytes body in a BytesIO, whose getbuffer() aiohttp calls, which copies it whole; a
    memoryview would be copied by asyncio's transport (Python 3.11) with whatever one large write leaves unsent.
    This body gives botocore what it reads (len, read, seek, tell: it hashes the payload and rewinds for retries)
    as memoryview slices, and gives aiohttp 1 MiB slices to send one at a time (async iteration).
    """

    _SLICE = 2**20

    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)
        self._position = 0

    def __len__(self) -> int:
        return len(self._view)

    def read(self, size: int | None = -1) -> memoryview:
        end = len(self._view) if size is None or size < 0 else min(len(self._view), self._position + size)
        chunk, self._position = self._view[self._position : end], end
        return chunk

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._position, 2: len(self._view)}[whence]
        self._position = max(0, min(len(self._view), base + offset))
        return self._position

    def tell(self) -> int:
        return self._position

    def __aiter__(self) -> AsyncIterator[memoryview]:
        return self._slices()

    async def _slices(self) -> AsyncIterator[memoryview]:
        # Every send is the whole body, from its start: s3fs retries (SlowDown, timeouts) with the same body
        # and does not rewind it, and Content-Length is always len(self).
        for start in range(0, len(self._view), self._SLICE):
            yield self._view[start : start + self._SLICE]
