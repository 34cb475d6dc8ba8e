"""codec.encode writes JSON with msgspec but must decide the threshold on json.dumps's length, and must give
back exactly what json.dumps + json.loads would: checked on generated serde forms (what serialize_value
encodes), including the cases msgspec handles differently (NaN/inf, big ints, exponents, non-ASCII, DEL, lone
surrogates)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any
from unittest.mock import patch

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xcom_backend import codec, contract, references

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


# Python values as tasks return them: plain JSON ones (serde leaves them as they are) and ones serde rewrites.
VALUES = st.recursive(
    SCALARS | st.sampled_from([{"__classname__": "x"}, {"__id__": 1}, (1, 2), {1, 2}, {True: "k"}]),
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(TEXT | st.integers(max_value=9), inner, max_size=5)
        | st.tuples(inner, inner)
    ),
    max_leaves=25,
)


def serde_outcome(value: Any) -> tuple[str, Any]:
    from airflow.sdk.serde import serialize

    try:
        return "ok", serialize(value)
    except Exception as err:
        return type(err).__name__, None


@settings(max_examples=1500, deadline=None)
@given(VALUES)
def test_serialize_and_encode_gives_what_serde_gives(value: Any) -> None:
    outcome, expected = serde_outcome(value)
    try:
        for small in (codec._SMALL, 0):
            with patch.object(codec, "_SMALL", small):
                serialized, encoded = codec.serialize_and_encode(value)
            text = json.dumps(expected)
            assert (outcome, json.dumps(serialized)) == ("ok", text)
            assert encoded.json_size == len(text)
            assert same(codec.parse_json(encoded.data), json.loads(text))
    except Exception as err:
        if isinstance(err, AssertionError):
            raise
        assert type(err).__name__ == outcome


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


def test_deep_values_and_reserved_keys_fail_as_on_the_db_path() -> None:
    assert codec.serialize_and_encode(nested(100))[0] == nested(100)
    assert codec.serialize_and_encode(nested(300))[0] == nested(300)  # serde's own pass, which manages it
    for depth in (600, 990):  # serde's recursion fails where msgspec and json.dumps would not
        assert serde_outcome(nested(depth))[0] == "RecursionError"
        with pytest.raises(RecursionError):
            codec.serialize_and_encode(nested(depth))
    with pytest.raises(AttributeError, match="reserved key"):
        codec.serialize_and_encode({"rows": [{"__classname__": "os.system"}]})


@settings(max_examples=300, deadline=None)
@given(VALUES)
def test_values_come_back_as_serde_gives_them(value: Any) -> None:
    from airflow.sdk.serde import deserialize

    outcome, expected = serde_outcome(value)
    if outcome != "ok":
        return
    encoded = codec.serialize_and_encode(value)[1]
    assert same_value(codec.from_json_bytes(encoded.data), deserialize(json.loads(json.dumps(expected))))


def same_value(a: Any, b: Any) -> bool:
    """`same`, for deserialized values: tuples and sets as well."""
    if isinstance(a, (tuple, set, frozenset)):
        return type(a) is type(b) and same(sorted(a, key=repr), sorted(b, key=repr))
    if isinstance(a, list) and type(b) is list:
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and type(b) is dict:
        return list(a) == list(b) and all(same_value(a[k], b[k]) for k in a)
    return same(a, b)


@settings(max_examples=1500, deadline=None)
@given(SERDE_FORMS)
def test_json_dumps_writes_at_most_6_bytes_per_msgspec_byte(value: Any) -> None:
    try:
        compact = msgspec.json.encode(value)
    except (TypeError, ValueError, OverflowError):
        return
    assert len(json.dumps(value)) <= codec._MAX_EXPANSION * len(compact)


@settings(max_examples=1500, deadline=None)
@given(VALUES, st.sampled_from([1, 60, 1000]))
def test_values_surely_under_the_threshold_are_their_serde_form(value: Any, threshold: int) -> None:
    outcome, expected = serde_outcome(value)
    try:
        kept, encoded = codec.serialize_and_encode(value, threshold)
    except Exception as err:
        assert type(err).__name__ == outcome
        return
    assert outcome == "ok"
    assert json.dumps(kept) == json.dumps(expected)
    if encoded is None:
        assert len(json.dumps(expected)) < threshold
        assert kept is not value or not isinstance(value, (dict, list))  # a container is copied, as serde does
    else:
        assert encoded.json_size == len(json.dumps(expected))


@pytest.mark.parametrize("threshold", [-1, 0, 10, 10**9])
def test_serde_runs_once_per_push(threshold: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A user's serialize() is called once per value, as on the DB path (and serde's pass is not paid twice),
    whether the value stays in the DB or is written to (here a local) store."""
    from tests.xcom_calls import clear_all_caches, push

    calls = []

    @dataclasses.dataclass
    class Point:
        x: int

        def serialize(self) -> dict:
            calls.append(self.x)
            return {"x": self.x}

        @staticmethod
        def deserialize(data: dict, version: int) -> Point:
            return Point(**data)

    monkeypatch.setenv(contract.PATH_ENV, f"file://{tmp_path}/xcom")
    monkeypatch.setenv(contract.THRESHOLD_ENV, str(threshold))
    clear_all_caches()
    try:
        for size in (1, 10_000):
            calls.clear()
            stored = push([Point(1)] * size)
            assert len(calls) == size
            offloaded = isinstance(stored, dict) and references.is_reference_shaped(stored)
            assert offloaded == (0 <= threshold <= 10) and offloaded == any((tmp_path / "xcom").rglob("*.json"))
    finally:
        clear_all_caches()
