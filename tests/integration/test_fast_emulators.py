"""The emulators' speed patches (emulation/moto_fast.py, emulation/gcs_fast.py) answer as the stock emulators do:
the same requests sent to a stock and a patched server, side by side, get the same status, the same headers
that describe the object, and the same bytes."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from emulation.gcs import gcs_server
from emulation.moto import moto_server

SIZE = 20 * 2**20 + 5  # a multipart object: more than two 8 MiB parts
RANGES = [
    "bytes=0-99",
    "bytes=8388600-8388700",
    f"bytes={SIZE - 5}-",
    "bytes=-5",
    f"bytes=-{SIZE + 10}",
    "bytes=0-",
    f"bytes=10-{SIZE + 100}",
    "bytes=5-2",
    "bytes=1-2,4-5",
    "bytes=abc",
    f"bytes={SIZE}-",
    f"bytes={SIZE + 10}-{SIZE + 20}",
]


@pytest.fixture(scope="module")
def data() -> bytes:
    return os.urandom(SIZE)


def s3_answers(server, data: bytes) -> Iterator[tuple[str, object]]:
    from botocore.exceptions import ClientError

    s3 = server.client("s3")
    s3.create_bucket(Bucket="fast-moto-check")
    upload = s3.create_multipart_upload(Bucket="fast-moto-check", Key="k", ChecksumAlgorithm="CRC32")["UploadId"]
    parts = []
    for number, start in enumerate(range(0, SIZE, 8 * 2**20), 1):
        answer = s3.upload_part(
            Bucket="fast-moto-check",
            Key="k",
            UploadId=upload,
            PartNumber=number,
            Body=data[start : start + 8 * 2**20],
            ChecksumAlgorithm="CRC32",
        )
        parts.append({"PartNumber": number, "ETag": answer["ETag"], "ChecksumCRC32": answer["ChecksumCRC32"]})
    s3.complete_multipart_upload(Bucket="fast-moto-check", Key="k", UploadId=upload, MultipartUpload={"Parts": parts})
    for header in [None, *RANGES]:
        try:
            answer = s3.get_object(
                Bucket="fast-moto-check", Key="k", ChecksumMode="ENABLED", **({"Range": header} if header else {})
            )
        except ClientError as err:
            yield header or "whole", ("error", err.response["Error"]["Code"])
            continue
        body = answer["Body"].read()
        described = {
            key: value
            for key, value in answer.items()
            if key in ("ContentRange", "ContentLength", "ETag", "ChecksumCRC32", "ChecksumType", "PartsCount")
        }
        status = answer["ResponseMetadata"]["HTTPStatusCode"]
        yield header or "whole", (status, described, hashlib.sha256(body).hexdigest())


def test_moto_answers_ranged_gets_as_stock_moto(tmp_path: Path, data: bytes) -> None:
    with moto_server(tmp_path / "stock", enforce_iam=False, stock=True) as stock:
        expected = dict(s3_answers(stock, data))
    with moto_server(tmp_path / "fast", enforce_iam=False) as fast:
        assert dict(s3_answers(fast, data)) == expected
    assert expected[f"bytes={SIZE - 5}-"][0] == 206  # the ranges were ranges


def gcs_answers(server, data: bytes) -> Iterator[tuple[str, object]]:
    import requests

    client = server.client()
    bucket = client.create_bucket("fast-gcs-check")
    bucket.blob("media").upload_from_string(data[:1000])  # one request (multipart upload)
    resumable = bucket.blob("resumable", chunk_size=256 * 1024 * 4)  # several chunks
    resumable.upload_from_string(data[: 3 * 2**20 + 17])
    parts = []
    for number, start in enumerate(range(0, SIZE, 8 * 2**20)):
        part = bucket.blob(f"part-{number}")
        part.upload_from_string(data[start : start + 8 * 2**20])
        parts.append(part)
    bucket.blob("composed").compose(parts)
    for name in ("media", "resumable", "composed"):
        blob = bucket.get_blob(name)
        yield name, (blob.size, blob.md5_hash, blob.crc32c, hashlib.sha256(blob.download_as_bytes()).hexdigest())
    url = f"{server.endpoint}/download/storage/v1/b/fast-gcs-check/o/composed?alt=media"
    for header in RANGES:
        answer = requests.get(url, headers={"Range": header}, timeout=60)
        described = {key: answer.headers.get(key) for key in ("Content-Range", "Content-Length")}
        yield f"GET {header}", (answer.status_code, described, hashlib.sha256(answer.content).hexdigest())


def test_gcs_emulator_answers_as_the_stock_one(tmp_path: Path, data: bytes) -> None:
    with gcs_server(tmp_path / "stock", enforce_iam=False) as stock:
        expected = dict(gcs_answers(stock, data))
    with gcs_server(tmp_path / "fast", enforce_iam=False, fast=True) as fast:
        assert dict(gcs_answers(fast, data)) == expected
    assert expected["composed"][0] == SIZE
