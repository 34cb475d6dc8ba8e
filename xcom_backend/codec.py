"""Values to bytes and back, exactly as the metadata-DB path does, and the codecs common-io accepts.

The DB path stores ``airflow.sdk.serde.serialize(value)`` as JSON and hands ``serde.deserialize`` of it
back, so tuples, sets, numpy scalars, datetimes and dataclasses keep their type. Object storage goes through
the same two functions, so a value comes back the same whether it stayed in the DB or not.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
from collections.abc import Callable
from typing import Any

import fsspec.compression
import fsspec.utils

from xcom_backend.errors import XComObjectError

# Standard-library codecs, in memory (faster than fsspec's file wrappers; same formats, so each side reads
# what the other wrote). fsspec opens both .lzma and .xz with LZMAFile, which reads and writes the xz format.
_STDLIB_COMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": lambda data: gzip.compress(data, compresslevel=6, mtime=0),
    "bz2": bz2.compress,
    "lzma": lzma.compress,
    "xz": lzma.compress,
}
_STDLIB_DECOMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.decompress,
    "bz2": bz2.decompress,
    "lzma": lzma.decompress,
    "xz": lzma.decompress,
}


def available_compressions() -> tuple[str, ...]:
    """Every codec common-io accepts here: fsspec's, which include zstd/lz4/snappy when their libraries are."""
    return tuple(sorted(set(fsspec.utils.compressions.values())))


def validate_compression(compression: str | None) -> str | None:
    if compression in (None, ""):
        return None
    if compression not in available_compressions():
        raise ValueError(
            f"compression {compression!r} is not available: use one of {', '.join(available_compressions())} "
            "(zstd, lz4 and snappy need their Python libraries installed on every worker) or leave it empty"
        )
    return compression


class _Sink(io.BytesIO):
    """Where a codec's writer puts its output; some writers (zstandard's) close their target when done."""

    def close(self) -> None:
        pass


def compress(compression: str | None, data: bytes) -> bytes:
    if compression is None:
        return data
    if compression in _STDLIB_COMPRESS:
        return _STDLIB_COMPRESS[compression](data)
    buffer = _Sink()
    stream = fsspec.compression.compr[compression](buffer, mode="wb")
    stream.write(data)
    stream.close()
    return buffer.getvalue()


def decompress(compression: str | None, data: bytes) -> bytes:
    if compression is None:
        return data
    if compression in _STDLIB_DECOMPRESS:
        return _STDLIB_DECOMPRESS[compression](data)
    if compression not in fsspec.compression.compr:
        raise XComObjectError(f"cannot decompress {compression}: its library is not installed on this worker")
    with fsspec.compression.compr[compression](io.BytesIO(data), mode="rb") as stream:
        return stream.read()


def serialize(value: Any) -> Any:
    """Airflow's serde form of a value: what the DB path stores (JSON-compatible)."""
    from airflow.sdk.serde import serialize as serde_serialize

    return serde_serialize(value)


def to_json_bytes(serialized: Any) -> bytes:
    """The JSON bytes of a serde form; their length is what the threshold is compared with (as common-io)."""
    return json.dumps(serialized).encode("utf-8")


def from_json_bytes(data: bytes) -> Any:
    """The value back from what ``to_json_bytes`` wrote, through serde as the DB path."""
    from airflow.sdk.serde import deserialize as serde_deserialize

    return serde_deserialize(json.loads(data))


def from_common_io_bytes(data: bytes) -> Any:
    """A value common-io wrote: it reads its objects with Airflow's XComDecoder, and so do we."""
    from airflow.utils.json import XComDecoder

    return json.loads(data, cls=XComDecoder)
