"""The emulators' speed patches (emulation/moto_fast.py, emulation/gcs_fast.py, emulation/azurite_fast.js) answer
as the stock emulators do: the same requests sent to a stock and a patched server, side by side, get the same
status, the same headers that describe the object, and the same bytes."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from emulation.azurite import AZURITE_FAST_PRELOAD, azurite_server
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


# Put Block sizes around the 8-byte step of the patched CRC-64 (chunks split inside a step: azurite_crc_splits.js).
BLOCK_SIZES = [1, 7, 8, 9, 15, 16, 17, 1000, 8 * 2**20 + 13]


def azure_answers(server, data: bytes) -> Iterator[tuple[str, object]]:
    import requests
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    server.client().create_container("fast-azurite-check")
    sas = generate_container_sas(
        server.account_name,
        "fast-azurite-check",
        account_key=server.account_key,
        permission=ContainerSasPermissions(read=True, write=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    url = f"{server.endpoint}/fast-azurite-check/blob?{sas}"
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE may name another server's CA
    session.verify = str(server.certificate.ca_file)
    session.headers["x-ms-version"] = "2025-11-05"

    def put(query: str, body: bytes, **headers: str) -> tuple[int, str | None, str | None]:
        answer = session.put(f"{url}&{query}", data=body, headers=headers, timeout=60)
        return answer.status_code, answer.headers.get("x-ms-content-crc64"), answer.headers.get("x-ms-error-code")

    block_ids = []
    offset = 0
    for number, size in enumerate(BLOCK_SIZES):
        block_id = base64.b64encode(f"block-{number:04d}".encode()).decode()
        block_ids.append(block_id)
        body = data[offset : offset + size]
        offset += size
        status, crc64, error = put(f"comp=block&blockid={block_id}", body)
        yield f"Put Block {size}", (status, crc64, error)
        if crc64:  # the service's CRC-64 given back as the client's: accepted; one bit off: refused
            yield (
                f"Put Block {size}, its CRC-64",
                put(f"comp=block&blockid={block_id}", body, **{"x-ms-content-crc64": crc64}),
            )
            wrong = base64.b64encode(bytes([base64.b64decode(crc64)[0] ^ 1]) + base64.b64decode(crc64)[1:]).decode()
            yield (
                f"Put Block {size}, a wrong CRC-64",
                put(f"comp=block&blockid={block_id}", body, **{"x-ms-content-crc64": wrong}),
            )
    listing = "".join(f"<Latest>{block_id}</Latest>" for block_id in block_ids)
    committed = session.put(f"{url}&comp=blocklist", data=f"<BlockList>{listing}</BlockList>", timeout=60)
    yield "Put Block List", committed.status_code
    whole = session.get(url, timeout=60)
    yield "GET", (whole.status_code, hashlib.sha256(whole.content).hexdigest())


def test_azurite_answers_as_the_stock_one(tmp_path: Path, data: bytes) -> None:
    with azurite_server(tmp_path / "stock") as stock:
        expected = dict(azure_answers(stock, data))
    with azurite_server(tmp_path / "fast", fast=True) as fast:
        assert dict(azure_answers(fast, data)) == expected
    assert expected["GET"] == (200, hashlib.sha256(data[: sum(BLOCK_SIZES)]).hexdigest())
    assert all(expected[f"Put Block {size}"][1] for size in BLOCK_SIZES)  # a CRC-64 was computed for each
    assert expected["Put Block 8, a wrong CRC-64"][2] == "Crc64Mismatch"


def test_the_azurite_crc64_is_the_stock_one_however_its_input_is_cut() -> None:
    """Azurite's body streams arrive in 16 KiB chunks, so the Put Blocks above never split an 8-byte group; this
    does, through Azurite's own functions with and without the patch."""
    from emulation.airflow_run import REPO_ROOT

    script = Path(__file__).with_name("azurite_crc_splits.js")
    compared = subprocess.run(
        ["node", str(script), str(REPO_ROOT)], capture_output=True, text=True, timeout=120, check=False
    )
    assert compared.returncode == 0, compared.stdout + compared.stderr
    assert json.loads(compared.stdout.splitlines()[-1]) == {"cases": 2601, "mismatches": []}


def test_the_azurite_patch_refuses_an_azurite_it_was_not_checked_against(tmp_path: Path) -> None:
    from emulation.airflow_run import REPO_ROOT

    utils = Path("azurite", "dist", "src", "common", "utils", "utils.js")
    changed = tmp_path / utils
    changed.parent.mkdir(parents=True)
    shutil.copyfile(REPO_ROOT / "node_modules" / utils, changed)
    with changed.open("a") as source:
        source.write("\n// one line more\n")
    loaded = subprocess.run(
        ["node", f"--require={AZURITE_FAST_PRELOAD}", "-e", f"require({str(changed)!r})"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert loaded.returncode == 70, loaded.stderr
    assert "refusing to patch" in loaded.stderr
