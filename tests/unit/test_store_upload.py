"""The S3 request paths against an HTTP server that answers like S3 under load or on a bad network: `503
SlowDown` before it accepts a PUT, a GET's body cut off halfway. moto cannot be made to answer that, so this
server stands in for it. Above it are the real clients: the
provider-built botocore client the backend writes with (xcom_backend/s3.py), and s3fs with aiobotocore and
aiohttp for the connections left to s3fs (the store's own upload body and CRC32C header)."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import google_crc32c
import pytest
import s3fs

from xcom_backend import contract
from xcom_backend.s3 import S3Objects, provider_client
from xcom_backend.store import Store

SLOW_DOWN = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
NO_SUCH_BUCKET = b"<Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message></Error>"


@dataclass
class SlowS3:
    """Answers the first ``refusals`` PUTs with 503 SlowDown, then 200; records what each PUT carried. GETs are
    answered with ``stored``, the first ``broken_reads`` of them cut off halfway through the body."""

    refusals: int
    endpoint: str = ""
    received: list[tuple[int, bytes, str | None]] = field(default_factory=list)  # (Content-Length, body, crc32c)
    stored: bytes = b""
    broken_reads: int = 0
    reads: int = 0
    bucket_gone: bool = False

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
                if head[0].startswith("DELETE "):
                    if self.bucket_gone:
                        writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n" % len(NO_SUCH_BUCKET))
                        writer.write(NO_SUCH_BUCKET)
                    else:
                        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
                    await writer.drain()
                    continue
                if head[0].startswith("GET "):
                    self.reads += 1
                    whole = self.stored
                    broken = self.reads <= self.broken_reads
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(whole))
                    writer.write(whole[: len(whole) // 2] if broken else whole)
                    await writer.drain()
                    if broken:  # the connection drops mid-body
                        writer.close()
                        return
                    continue
                headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:]) if v}
                length = int(headers.get("content-length", 0))
                if headers.get("expect", "").lower() == "100-continue":
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                body = b""
                try:
                    while len(body) < length and (chunk := await asyncio.wait_for(reader.read(length - len(body)), 2)):
                        body += chunk
                except TimeoutError:
                    pass
                self.received.append((length, body, headers.get("x-amz-checksum-crc32c")))
                if len(body) < length:  # as S3: IncompleteBody, and the connection closed
                    writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    await writer.drain()
                    writer.close()
                    return
                if len(self.received) <= self.refusals:
                    head = b"HTTP/1.1 503 Slow Down\r\nContent-Length: %d\r\n\r\n" % len(SLOW_DOWN)
                    writer.write(head + SLOW_DOWN)
                else:
                    writer.write(b'HTTP/1.1 200 OK\r\nETag: "e"\r\nContent-Length: 0\r\n\r\n')
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass


@pytest.fixture
def slow_s3(request: pytest.FixtureRequest) -> Iterator[SlowS3]:
    server = SlowS3(refusals=request.param)
    loop = asyncio.new_event_loop()
    listening = loop.run_until_complete(asyncio.start_server(server.handle, "127.0.0.1", 0))
    server.endpoint = f"http://127.0.0.1:{listening.sockets[0].getsockname()[1]}"
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield server

    async def shut_down() -> None:
        listening.close()
        for task in asyncio.all_tasks() - {asyncio.current_task()}:  # connections s3fs keeps open
            task.cancel()

    asyncio.run_coroutine_threadsafe(shut_down(), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


DATA = bytes(range(256)) * (3 * 2**12)  # 3 MiB: several of _UploadBody's 1 MiB slices
CRC32C = base64.b64encode(google_crc32c.value(DATA).to_bytes(4, "big")).decode()
BASE = "s3://slow@bucket/xcom"


def _not_built() -> s3fs.S3FileSystem:
    raise AssertionError("the S3 client path must not build s3fs")


def provider_store(slow_s3: SlowS3, monkeypatch: pytest.MonkeyPatch, **extra: object) -> Store:
    """The store as current_store() builds it for an S3 connection: the provider-built client."""
    extra = {"endpoint_url": slow_s3.endpoint, "region_name": "us-east-1", **extra}
    monkeypatch.setenv(
        "AIRFLOW_CONN_SLOW", json.dumps({"conn_type": "aws", "login": "k", "password": "s", "extra": extra})
    )
    client = provider_client("slow")
    assert client is not None
    return Store(BASE, contract.parse_objectstorage_path(BASE), None, _not_built, S3Objects(client, "bucket"))


@pytest.mark.parametrize("slow_s3", [0, 2], indirect=True)
def test_every_retried_put_of_the_s3_client_carries_the_whole_body(slow_s3: SlowS3, monkeypatch) -> None:
    provider_store(slow_s3, monkeypatch).write("d/r/t/-1/k.json", DATA)
    assert len(slow_s3.received) == slow_s3.refusals + 1  # botocore's retries
    assert all(put == (len(DATA), DATA, CRC32C) for put in slow_s3.received)


@pytest.mark.parametrize("slow_s3", [5], indirect=True)
def test_a_put_s3_keeps_refusing_fails_with_s3s_error_code_after_the_connections_retries(
    slow_s3: SlowS3, monkeypatch
) -> None:
    retries = {"config_kwargs": {"retries": {"mode": "standard", "max_attempts": 1}}}
    store = provider_store(slow_s3, monkeypatch, **retries)
    with pytest.raises(OSError, match="SlowDown") as raised:
        store.write("d/r/t/-1/k.json", DATA)
    assert not isinstance(raised.value, FileNotFoundError | PermissionError)
    assert len(slow_s3.received) == 2  # one retry: the connection's config_kwargs reach the client


@pytest.mark.parametrize("broken_reads", [0, 2])
@pytest.mark.parametrize("slow_s3", [0], indirect=True)
def test_a_read_cut_off_mid_body_is_tried_again(slow_s3: SlowS3, monkeypatch, broken_reads: int) -> None:
    """As s3fs does: botocore's own retries end once the headers have arrived."""
    slow_s3.stored, slow_s3.broken_reads = DATA, broken_reads
    assert provider_store(slow_s3, monkeypatch).read("d/r/t/-1/k.json") == DATA
    assert slow_s3.reads == broken_reads + 1


@pytest.mark.parametrize("slow_s3", [0], indirect=True)
def test_a_read_that_keeps_breaking_off_fails_after_s3fss_tries(slow_s3: SlowS3, monkeypatch) -> None:
    from botocore.exceptions import ResponseStreamingError

    slow_s3.stored, slow_s3.broken_reads = DATA, 100
    with pytest.raises(ResponseStreamingError):
        provider_store(slow_s3, monkeypatch).read("d/r/t/-1/k.json")
    assert slow_s3.reads == 5


@pytest.mark.parametrize("bucket_gone", [False, True])
@pytest.mark.parametrize("slow_s3", [0], indirect=True)
def test_a_delete_in_a_bucket_that_is_gone_counts_as_already_gone(slow_s3: SlowS3, monkeypatch, bucket_gone) -> None:
    """S3 answers a missing key as deleted, a missing bucket with 404 NoSuchBucket: purged either way."""
    slow_s3.bucket_gone = bucket_gone
    assert provider_store(slow_s3, monkeypatch).delete("d/r/t/-1/k.json") is not bucket_gone


@pytest.mark.parametrize("slow_s3", [0, 6], indirect=True)
def test_every_retried_put_through_s3fs_carries_the_whole_body(slow_s3: SlowS3) -> None:
    fs = s3fs.S3FileSystem(key="k", secret="s", endpoint_url=slow_s3.endpoint, skip_instance_cache=True)
    base = "s3://bucket/xcom"
    store = Store(base, contract.parse_objectstorage_path(base), None, lambda: fs)
    store.write("d/r/t/-1/k.json", DATA)
    assert len(slow_s3.received) == slow_s3.refusals + 1  # botocore's and s3fs's retries together
    assert all(put == (len(DATA), DATA, CRC32C) for put in slow_s3.received)
