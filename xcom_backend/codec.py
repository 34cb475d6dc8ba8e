"""Values to bytes and back, exactly as the metadata-DB path does, and the codecs common-io accepts.

The DB path stores ``airflow.sdk.serde.serialize(value)`` as JSON and hands ``serde.deserialize`` of it
back, so tuples, sets, numpy scalars, datetimes and dataclasses keep their type. Object storage goes through
the same two functions, so a value comes back the same whether it stayed in the DB or not.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import hmac
import io
import itertools
import json
import lzma
import operator
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
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
    if compression == "zstd":
        try:
            import zstandard
        except ImportError:  # fsspec found another zstd library: its file wrapper below
            pass
        else:  # one frame, in memory, at zstd's default level (fsspec's writer uses level 10: 4x slower here)
            return zstandard.ZstdCompressor(level=3).compress(data)
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


# The digest new references carry (references.CHECKSUM_ALGORITHMS lists what a reference may name). BLAKE3 is
# a cryptographic hash like SHA-256, so a replaced object is still caught, at 5-9x SHA-256's speed here.
CHECKSUM_ALGORITHM = "blake3"
_PARALLEL_FROM = 4 * 2**20  # below this, hashing on one thread is faster than starting a second


def _blake3(data: bytes) -> str:
    import blake3

    # An explicit max_threads gives the hasher its own threads (blake3.AUTO would use a process-wide pool).
    threads = min(2, os.cpu_count() or 1) if len(data) >= _PARALLEL_FROM else 1
    return blake3.blake3(data, max_threads=threads).hexdigest()


_DIGESTS: dict[str, Callable[[bytes], str]] = {
    "sha256": lambda data: hashlib.sha256(data).hexdigest(),
    "blake3": _blake3,
}


def checksum(data: bytes, algorithm: str = CHECKSUM_ALGORITHM) -> str:
    """``<algorithm>:<hex digest>`` of stored bytes, as a reference carries it."""
    return f"{algorithm}:{_DIGESTS[algorithm](data)}"


def checksum_matches(expected: str, data: bytes) -> bool:
    """Whether ``data`` has the digest ``expected`` (an ``<algorithm>:<hex>`` that references.py accepted)."""
    algorithm = expected.partition(":")[0]
    return hmac.compare_digest(checksum(data, algorithm), expected)


def serialize(value: Any) -> Any:
    """Airflow's serde form of a value: what the DB path stores (JSON-compatible)."""
    from airflow.sdk.serde import serialize as serde_serialize

    return serde_serialize(value)


@dataclass(frozen=True)
class Encoded:
    """A serde form as JSON bytes, and the size the threshold compares (see ``encode``)."""

    data: bytes
    json_size: int  # len(json.dumps(serialized)): common-io's measure, whatever ``data`` is


class _NotCompact(Exception):
    """The value holds something msgspec would write differently from json.dumps (or not at all)."""


class _NotPlain(_NotCompact):
    """The value holds something Airflow's serde would rewrite: it is not its own serde form."""


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _flat_serde_form(value: Any) -> Any | None:
    """What serde.serialize returns for a JSON scalar, or a dict (str keys) or list of them; None otherwise."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is dict:
        plain = _SCALARS.issuperset(map(type, value.values())) and set(map(type, value)) <= {str}
        return dict(value) if plain and not any(map(value.__contains__, _SERDE_RESERVED_KEYS)) else None
    if kind is list and _SCALARS.issuperset(map(type, value)):
        return list(value)
    return None


_MAX_EXPANSION = 6


def serialize_and_encode(value: Any, threshold: int | None = None) -> tuple[Any, Encoded | None]:
    """The serde form of ``value`` and its bytes (see ``encode``), each computed once.

    With a ``threshold``, the bytes are None when the json.dumps text is surely shorter than it: json.dumps
    never writes more than 6 bytes for one of msgspec's (DEL: 1 -> 6; other escapes, separators, exponents and
    NaN/Infinity less), so a compact length under threshold / 6 keeps the value in the DB without writing the
    text json.dumps would. A flat dict or list of JSON scalars (the usual small XCom) is its own serde form,
    told in C faster than serde's pass over it (which spells out each scalar's class name). Other plain
    values — dicts with str keys, lists, str, int, float, bool and None, nested at most 100 deep, no key serde
    reserves — are their own serde form too; the pass that measures them for ``encode`` establishes that, so
    serde's own pass (slower than this one) is skipped. Anything else goes through serde first, exactly as
    serialize_value does, and so do values under 4 KiB (``_SMALL``), where serde and json.dumps cost less
    than the pass.
    """
    flat = _flat_serde_form(value)
    if flat is not None:
        try:
            compact = _msgspec_encoder().encode(flat)
        except (TypeError, ValueError, OverflowError):
            return flat, _json_dumps_encoded(flat)
        if threshold is not None and len(compact) * _MAX_EXPANSION < threshold:
            return flat, None
        return flat, encode(flat, compact)
    try:
        compact: bytes | None = _msgspec_encoder().encode(value)
    except (TypeError, ValueError, OverflowError, RecursionError):
        compact = None
    if compact is not None and len(compact) < _SMALL:
        serialized = serialize(value)
        return serialized, _json_dumps_encoded(serialized)
    try:
        delta = _json_size_delta(value, plain=True)
    except _NotPlain:
        serialized = serialize(value)
        return serialized, encode(serialized)
    except (_NotCompact, RecursionError, TypeError, ValueError, OverflowError):
        return value, _json_dumps_encoded(value)  # plain, but msgspec would write it differently
    if compact is None:
        return value, _json_dumps_encoded(value)
    return value, Encoded(compact, len(compact) + delta)


def encode(serialized: Any, compact: bytes | None = None) -> Encoded:
    """JSON bytes of a serde form, straight to bytes, and the exact size common-io's threshold compares.

    msgspec writes compact UTF-8 JSON, 5-7x faster than ``json.dumps(...).encode()`` and as one bytes object
    instead of a str plus its bytes. Its text differs from json.dumps's only in what ``_json_size_delta``
    counts (the spaces after ',' and ':', ``ensure_ascii`` escapes, DEL, float spelling such as ``1e16`` vs
    ``1e+16``), so the threshold decision is the one json.dumps's length gives. Values msgspec would write
    differently or refuse (NaN/inf, which it writes as null; lone surrogates; non-str keys; types other than
    serde's JSON ones) are written by ``json.dumps``, exactly as before, and so are values under 4 KiB
    (``_SMALL``), where json.dumps is faster than that count.
    """
    try:
        data = _msgspec_encoder().encode(serialized) if compact is None else compact  # compact: msgspec's, known
        if len(data) < _SMALL:  # json.dumps is faster than the walk below on small values: its text, as before
            raise _NotCompact("small")
        delta = _json_size_delta(serialized)
    except (_NotCompact, RecursionError, TypeError, ValueError, OverflowError):
        return _json_dumps_encoded(serialized)
    return Encoded(data, len(data) + delta)


_SMALL = 4096


def _json_dumps_encoded(serialized: Any) -> Encoded:
    data = to_json_bytes(serialized)
    return Encoded(data, len(data))


def to_json_bytes(serialized: Any) -> bytes:
    """The text json.dumps writes (common-io's format; the threshold is defined on its length)."""
    return json.dumps(serialized).encode("utf-8")


# What serde.serialize refuses in a structure of JSON values: keys it reserves, and deep nesting (it recurses
# with two frames a level, so how deep depends on the caller's stack: deeper than this, serde decides).
_SERDE_RESERVED_KEYS = ("__classname__", "__id__")
_PLAIN_MAX_DEPTH = 100


def _json_size_delta(value: Any, *, plain: bool = False) -> int:
    """len(json.dumps(value)) minus the length of msgspec's compact encoding of it.

    Raises _NotCompact (or msgspec's/json's own error) where the two would differ in meaning; with ``plain``,
    _NotPlain where serde would rewrite the value. One pass over the containers, level by level, in Python;
    strings and floats are then measured in bulk, in C.
    """
    extra = 0
    strings: list[str] = []  # every key and string value
    floats: list[float] = []
    add_string, add_float = strings.append, floats.append
    level: list[Any] = [[value]]  # a one-element list adds no separator
    depth = -1
    while level:
        if plain and depth >= _PLAIN_MAX_DEPTH:
            raise _NotPlain("nested deeper than serde surely handles")
        below: list[Any] = []
        push = below.append
        for item in level:
            if type(item) is dict:
                if item:
                    extra += 2 * len(item) - 1  # ", " and ": " where msgspec writes "," and ":"
                    if plain and any(map(item.__contains__, _SERDE_RESERVED_KEYS)):
                        raise _NotPlain("a key serde reserves")
                strings.extend(item)
                values: Any = item.values()
            else:
                if item:
                    extra += len(item) - 1
                values = item
            for inner in values:
                kind = type(inner)
                if kind is str:
                    add_string(inner)
                elif kind is dict or kind is list:
                    push(inner)
                elif kind is float:
                    add_float(inner)
                elif not (kind is int or kind is bool or inner is None):
                    raise (_NotPlain if plain else _NotCompact)(kind)  # ints of any size: as json.dumps, or raise
        level, depth = below, depth + 1
    if strings and set(map(type, strings)) != {str}:
        # json.dumps and msgspec spell such keys differently, and serde turns them into str(key)
        raise (_NotPlain if plain else _NotCompact)("a dict key that is not a str")
    if all(map(str.isascii, strings)):
        narrow, wide = strings, []
    else:
        narrow = [text for text in strings if text.isascii()]
        wide = [text for text in strings if not text.isascii()]  # \uXXXX in json.dumps, UTF-8 in msgspec
    if any(map(operator.contains, narrow, itertools.repeat(_DEL))):
        extra += 5 * sum(text.count(_DEL) for text in narrow)  # json.dumps writes DEL as \u007f, msgspec raw
    # Both spell a float the same way (shortest repr, positional) for 0 and 1e-4 <= |x| < 1e16; others differ
    # in exponent form (1e+16 vs 1e16, 1e-05 vs 0.00001), and NaN/inf fall outside too.
    odd = [number for number in floats if not 1e-4 <= abs(number) < 1e16 and number != 0.0]
    for bulk, allow_nan in ((odd, False), (wide, True)):
        if bulk:  # allow_nan=False: NaN and inf raise ValueError, and so take json.dumps (msgspec: null)
            written = len(json.dumps(bulk, allow_nan=allow_nan))
            extra += written - len(_msgspec_encoder().encode(bulk)) - (len(bulk) - 1)
    return extra


_DEL = chr(0x7F)


@cache
def _msgspec_encoder() -> Any:
    import msgspec

    return msgspec.json.Encoder()


@cache
def _msgspec_decoder() -> Any:
    import msgspec

    return msgspec.json.Decoder()


def from_json_bytes(data: bytes) -> Any:
    """The value back from what ``encode`` (or an older version's json.dumps) wrote, through serde as the DB
    path. msgspec parses it; text it refuses (NaN, Infinity, a lone surrogate escape) goes to json, which reads
    everything json.dumps writes. Where both accept a text they give the same Python value."""
    from airflow.sdk.serde import deserialize as serde_deserialize

    parsed = parse_json(data)
    if b"_" not in data:  # memchr: no key can be one of serde's ("__classname__", "__type", ...), so it would
        return parsed  # return an equal copy; both writers put "_" in keys as it is, never as an escape
    return serde_deserialize(parsed)


def parse_json(data: bytes) -> Any:
    """JSON text to Python values as ``json.loads`` gives them, parsed by msgspec where it can (2x faster)."""
    import msgspec

    try:
        return _msgspec_decoder().decode(data)
    except msgspec.MsgspecError:
        return json.loads(data)


def from_common_io_bytes(data: bytes) -> Any:
    """A value common-io wrote: it reads its objects with Airflow's XComDecoder, and so do we."""
    from airflow.utils.json import XComDecoder

    return json.loads(data, cls=XComDecoder)
