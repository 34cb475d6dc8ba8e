"""codec.encode writes JSON with msgspec but must decide the threshold on json.dumps's length, and must give
back exactly what json.dumps + json.loads would: checked on generated serde forms (what serialize_value
encodes), including the cases msgspec handles differently (NaN/inf, big ints, exponents, non-ASCII, DEL, lone
surrogates)."""

from __future__ import annotations

import json
import math
from typing import Any
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xcom_backend import codec, references

# Strings over every code point, lone surrogates and DEL included.
TEXT = st.text(st.characters(codec=None, categories=None), max_size=12) | st.sampled_from(["\x7f", "\ud800", "é\x7f"])
FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([1e16, 1e-5, 1e-7, 1e22, -0.0, 5e-324])
SCALARS = st.none() | st.booleans() | st.integers(min_value=-(2**90), max_value=2**90) | FLOATS | TEXT
SERDE_FORMS = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(TEXT, inner, max_size=5),
    max_leaves=25,
)


def same(a: Any, b: Any) -> bool:
    """Equal in type and value all the way down; NaN equals NaN, -0.0 differs from 0.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return a == b


@settings(max_examples=1500, deadline=None)
@given(SERDE_FORMS)
def test_threshold_size_is_json_dumps_length_and_the_value_comes_back_exactly(value: Any) -> None:
    for small in (codec._SMALL, 0):  # as configured (small values: json.dumps), and msgspec for every size
        with patch.object(codec, "_SMALL", small):
            encoded = codec.encode(value)
        assert encoded.json_size == len(json.dumps(value))
        assert same(codec.parse_json(encoded.data), json.loads(json.dumps(value)))


@pytest.mark.parametrize(
    ("value", "fast"),
    [
        ({"k": "x" * 50, "n": [1, 2.5, None, True]}, True),
        ({"ключ": "✓ \x7f", "big": 2**70, "exp": [1e16, 1e-5]}, True),
        ({"k": float("nan")}, False),  # msgspec would write null
        ([float("-inf")], False),
        ("\ud800", False),  # not encodable as UTF-8
        ([2**14300], None),  # past json.dumps's digit limit: raises as on the DB path
    ],
    ids=["ascii", "non-ascii, big int, exponents", "nan", "-inf", "lone surrogate", "4300+ digits"],
)
def test_msgspec_writes_what_it_can_and_json_dumps_the_rest(value: Any, fast: bool | None) -> None:
    if fast is None:
        with pytest.raises(ValueError, match="4300 digits"):
            codec.encode(value)
        return
    with patch.object(codec, "_SMALL", 0):
        encoded = codec.encode(value)
    assert (encoded.data != json.dumps(value).encode()) is fast
    assert encoded.json_size == len(json.dumps(value))
    assert same(codec.parse_json(encoded.data), json.loads(json.dumps(value)))


def test_values_from_4_kib_are_written_by_msgspec() -> None:
    value = {"pad": "x" * 5000, "n": [1.5, 2]}
    assert codec.encode(value).data == json.dumps(value, separators=(",", ":")).encode()
    assert codec.encode({"pad": "x" * 100}).data == json.dumps({"pad": "x" * 100}).encode()


def test_objects_earlier_versions_wrote_parse_as_before() -> None:
    for value in ({"a": [1.5, float("nan"), "\ud800", 2**70]}, ["ключ", float("inf")]):
        old = json.dumps(value).encode()
        assert same(codec.parse_json(old), json.loads(old))


@pytest.mark.parametrize("algorithm", sorted(references.CHECKSUM_ALGORITHMS))
def test_checksums_catch_a_flipped_bit_and_truncation(algorithm: str) -> None:
    data = json.dumps({"rows": ["r" * 500] * 20_000}).encode()  # above the size where BLAKE3 uses two threads
    expected = codec.checksum(data, algorithm)
    prefix, _, digest = expected.partition(":")
    assert prefix == algorithm and len(digest) == references.CHECKSUM_ALGORITHMS[algorithm]
    assert codec.checksum_matches(expected, data)
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 1
    assert not codec.checksum_matches(expected, bytes(flipped))
    assert not codec.checksum_matches(expected, data[:-1])


def test_every_checksum_a_reference_may_name_is_computed_here() -> None:
    assert set(codec._DIGESTS) == set(references.CHECKSUM_ALGORITHMS)
    assert codec.CHECKSUM_ALGORITHM in references.CHECKSUM_ALGORITHMS


def test_zstd_objects_are_read_by_fsspec_as_common_io_reads_them() -> None:
    import io

    import fsspec.compression

    pytest.importorskip("zstandard")
    data = json.dumps({"pad": "z" * 100_000}).encode()
    stored = codec.compress("zstd", data)
    assert len(stored) < len(data) // 50
    with fsspec.compression.compr["zstd"](io.BytesIO(stored), mode="rb") as stream:
        assert stream.read() == data
    assert codec.decompress("zstd", stored) == data
