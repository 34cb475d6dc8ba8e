"""When a value in an XCom row is a pointer into object storage, and the object names it may use."""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xcom_backend import contract, references
from xcom_backend.errors import XComForeignReferenceError, XComReferenceError
from xcom_backend.references import MAX_KEY_BYTES, XComIdentity, object_name, resolve

BASE = contract.parse_objectstorage_path("s3://my_aws_conn@bucket/xcom")
RUN = "manual__2026-01-01T00:00:00+00:00"
OWNER = XComIdentity("dag_a", RUN, "task", -1, "return_value")
OTHER = XComIdentity("dag_b", RUN, "task", -1, "return_value")


def reference_for(owner: XComIdentity, base_url: str = "s3://my_aws_conn@bucket/xcom", **fields) -> dict:
    name = object_name(owner, None, references.name_budget(BASE))
    return {
        **references.bundled_reference(
            f"{base_url}/{name}", owner, size=10, stored_size=10, checksum="sha256:" + "0" * 64, compression=None
        ),
        **fields,
    }


# Airflow's limits: dag and task ids 250 characters of [\w.-] (\w includes non-ASCII letters), run ids 250,
# XCom keys 512 characters; map indexes are non-negative ints or -1.
IDS = st.text(st.characters(categories=["L", "Nd"], include_characters="_.-"), min_size=1, max_size=250)
IDENTITIES = st.builds(
    XComIdentity,
    IDS,
    st.text(min_size=1, max_size=250).filter(lambda run: "/" not in run),
    IDS,
    st.integers(min_value=-1, max_value=2**31 - 1),
    st.text(min_size=1, max_size=512),
)
PREFIXES = st.sampled_from(["xcom", "a" * 100, "/".join(["p" * 50] * 5)])


@settings(max_examples=300, deadline=None)
@given(IDENTITIES, PREFIXES, st.sampled_from([None, *references.COMPRESSION_SUFFIXES]))
def test_the_full_key_never_exceeds_1024_bytes_and_names_stay_unique(identity, prefix, compression) -> None:
    base = contract.parse_objectstorage_path(f"s3://c@b/{prefix}")
    name = object_name(identity, compression, references.name_budget(base))
    assert len(f"{prefix}/{name}".encode()) <= MAX_KEY_BYTES
    assert all(len(segment.encode()) <= references.MAX_SEGMENT_BYTES for segment in name.split("/"))
    assert object_name(replace(identity, key=identity.key + "x"), compression, references.name_budget(base)) != name


def test_gcs_part_names_are_short_whatever_the_values_name() -> None:
    longest = object_name(XComIdentity("d" * 250, "r" * 250, "t" * 250, 2**31 - 1, "k" * 240), "gzip")
    assert len(f"xcom/{longest}".encode()) > 1000  # near GCS's 1024-byte limit already
    part = references.part_name(longest, 31)
    assert len(f"xcom/{part}".encode()) < 100 and part != references.part_name(longest + "x", 31)


def test_maximum_length_non_ascii_ids_get_a_short_hashed_name() -> None:
    identity = XComIdentity("д" * 250, "ж" * 250, "т" * 250, 2**31 - 1, "к" * 512)
    name = object_name(identity, "gzip", references.name_budget(BASE))
    assert name.startswith(f"{references.LONG_NAME_DIR}/") and name.endswith(".json.gz")
    assert len(f"xcom/{name}".encode()) < 200


def test_readable_names_decode_back_to_their_identity() -> None:
    for owner in (OWNER, XComIdentity("d", RUN, "g.t", 7, "a/b%2F..")):
        assert references.decode_object_name(object_name(owner, "zstd"), "zstd") == owner


def test_only_this_xcoms_own_object_is_a_reference() -> None:
    own = reference_for(OWNER)
    assert resolve(own, BASE, OWNER).name == object_name(OWNER, None)
    with pytest.raises(XComForeignReferenceError, match="belongs to dag dag_b"):
        resolve(reference_for(OTHER), BASE, OWNER)  # another DAG's reference copied into this row
    forged = {**reference_for(OTHER), "dag_id": "dag_a"}  # claims this XCom, names dag_b's object
    with pytest.raises(XComForeignReferenceError, match="does not name the object its own XCom"):
        resolve(forged, BASE, OWNER)
    assert resolve("s3://my_aws_conn@bucket/xcom/reports/x.csv", BASE, OWNER) is None  # a string: the value
    assert resolve(references.stored_url(reference_for(OTHER)), BASE, OWNER) is None  # our name format, as a string


def test_common_io_urls_are_references_only_in_its_key_shape_for_this_dag_run_and_task() -> None:
    own = f"s3://my_aws_conn@bucket/xcom/dag_a/{RUN}/task/{uuid.uuid4()}.gz"
    reference = resolve(own, BASE, OWNER)
    assert reference.kind == "common-io" and reference.compression == "gzip"
    assert resolve(own.replace("/dag_a/", "/dag_b/"), BASE, OWNER) is None
    assert resolve(own.replace("/task/", "/other/"), BASE, OWNER) is None
    assert resolve(f"s3://my_aws_conn@bucket/xcom/dag_a/{RUN}/task/not-a-uuid.gz", BASE, OWNER) is None
    assert resolve(f"s3://my_aws_conn@bucket/xcom/dag_a/{RUN}/task/x/{uuid.uuid4()}", BASE, OWNER) is None
    assert resolve(own.replace("bucket", "other-bucket"), BASE, OWNER) is None


def test_a_renamed_connection_or_scheme_alias_still_names_the_same_object() -> None:
    for base_url in ("s3://old_conn@bucket/xcom", "s3a://my_aws_conn@bucket/xcom", "s3://bucket/xcom"):
        assert resolve(reference_for(OWNER, base_url), BASE, OWNER) is not None
    assert resolve(f"s3://old_conn@bucket/xcom/dag_a/{RUN}/task/{uuid.uuid4()}", BASE, OWNER) is not None


def test_partly_known_owners_match_on_what_is_known() -> None:
    any_index = XComIdentity("dag_a", RUN, "task", None, "return_value")  # a mapped task's results
    assert resolve(reference_for(replace(OWNER, map_index=3)), BASE, any_index) is not None
    with pytest.raises(XComForeignReferenceError):
        resolve(reference_for(replace(OWNER, task_id="sibling")), BASE, any_index)
    any_run = XComIdentity("dag_a", None, "task", -1, "return_value")  # include_prior_dates
    assert resolve(reference_for(replace(OWNER, run_id="scheduled__x")), BASE, any_run) is not None


def test_unknown_owner_or_malformed_references_raise() -> None:
    with pytest.raises(XComReferenceError, match="cannot tell which XCom"):
        resolve(reference_for(OWNER), BASE, None)
    with pytest.raises(XComReferenceError, match="cannot tell which XCom"):
        resolve(f"s3://c@bucket/xcom/dag_a/{RUN}/task/{uuid.uuid4()}", BASE, None)
    assert resolve("s3://c@bucket/xcom/reports/x.csv", BASE, None) is None  # not a reference at all
    for change, message in (
        ({"__version__": 4}, "version v=4"),
        ({"__version__": 2}, "version v=2"),  # version 2 had the marker key, not the serde shape
        ({"__version__": None}, "version v=None"),
        ({"__version__": True}, "version v=True"),
        ({"__version__": 3.0}, "version v=3.0"),
        ({"__version__": "3"}, "version v='3'"),
        ({"checksum": "blake3:" + "0" * 64 + "\n"}, "unknown checksum"),
        ({"size": True}, "field 'size'"),
        ({"checksum": "md5:abc"}, "unknown checksum"),
        ({"checksum": "xxh3:" + "0" * 64}, "unknown checksum"),
        ({"checksum": "blake3:" + "0" * 63}, "unknown checksum"),
        ({"checksum": "blake3:" + "G" * 64}, "unknown checksum"),
        ({"dag_id": None}, "field 'dag_id'"),
        ({"__data__": 5}, "no URL"),
        ({"__data__": "no-scheme", "url": "no-scheme"}, "no scheme"),
        ({"url": "s3://my_aws_conn@bucket/xcom/elsewhere.json"}, "names s3://"),  # its two URLs differ
    ):
        with pytest.raises(XComReferenceError, match=message):
            resolve(reference_for(OWNER, **change), BASE, OWNER)


def test_references_carry_blake3_or_older_sha256_checksums() -> None:
    for checksum in ("sha256:" + "a" * 64, "blake3:" + "b" * 64):
        resolved = resolve(reference_for(OWNER, checksum=checksum), BASE, OWNER)
        assert resolved is not None and resolved.checksum == checksum


def test_a_reference_written_under_another_path_says_so() -> None:
    with pytest.raises(XComForeignReferenceError, match=r"was \[common.io\] xcom_objectstorage_path changed"):
        resolve(reference_for(OWNER, "s3://my_aws_conn@bucket/old-prefix"), BASE, OWNER)
    with pytest.raises(XComForeignReferenceError, match="changed"):  # written under a sub-path of the base
        resolve(reference_for(OWNER, "s3://my_aws_conn@bucket/xcom/sub"), BASE, OWNER)
    with pytest.raises(XComForeignReferenceError, match="does not name the object"):
        elsewhere = "s3://my_aws_conn@elsewhere/xcom/x.json"
        resolve({**reference_for(OWNER), "__data__": elsewhere, "url": elsewhere}, BASE, OWNER)


def version_2_reference(owner: XComIdentity, **fields) -> dict:
    """A row as version 2 of the backend wrote it: the marker key, "v" and "url" instead of serde's shape."""
    v3 = reference_for(owner)
    del v3["__classname__"], v3["__version__"], v3["__data__"]
    return {**v3, "v": 2, **fields}


def test_version_2_readers_refuse_a_version_3_row_and_keep_its_object() -> None:
    # What version 2's code did with a row (references.py at ceeffa9): its marker, its "v", its "url".
    row = reference_for(OWNER)
    assert contract.REFERENCE_MARKER in row and row["url"] == row["__data__"]
    assert row.get("v") is None  # version 2 raised "has version v=None" for it: never a value, never an orphan


def test_rows_written_by_version_2_are_still_read() -> None:
    resolved = resolve(version_2_reference(OWNER), BASE, OWNER)
    assert resolved is not None and resolved.version == 2 and resolved.name == object_name(OWNER, None)
    assert references.stored_url(version_2_reference(OWNER)) == references.stored_url(reference_for(OWNER))
    with pytest.raises(XComForeignReferenceError, match="belongs to dag dag_b"):
        resolve(version_2_reference(OTHER), BASE, OWNER)
    for version in (3, 1.0, None):
        with pytest.raises(XComReferenceError, match="version"):
            resolve(version_2_reference(OWNER, v=version), BASE, OWNER)


def test_the_text_airflow_shows_for_a_reference_is_never_read_as_one() -> None:
    # The UI's Edit XCom dialog loads this text and saves it back as the value, even unchanged.
    shown = references.display_text(references.stored_url(reference_for(OWNER)))
    with pytest.raises(XComReferenceError, match="Edit XCom dialog"):
        resolve(shown, BASE, OWNER)
    assert references.must_offload(shown, BASE)  # a task returning that text keeps it as its value
    assert not references.must_offload(shown, None)


def test_the_row_is_shaped_as_a_serde_object_whose_data_is_the_url() -> None:
    # The API server shows rows with Airflow's stringify: a serde object renders as one line naming its data.
    from airflow.serialization.stringify import stringify

    url = references.stored_url(reference_for(OWNER))
    assert url and url.startswith("s3://my_aws_conn@bucket/xcom/dag_a/")
    assert stringify(reference_for(OWNER)) == f"{contract.REFERENCE_CLASSNAME}@version=3({url})"
    assert references.display_text(url) == stringify(reference_for(OWNER))


def test_values_that_would_read_back_as_references_must_be_offloaded() -> None:
    assert references.must_offload({contract.REFERENCE_MARKER: 1}, BASE)
    assert references.must_offload({contract.REFERENCE_MARKER: 1}, None)
    assert references.must_offload({"__classname__": contract.REFERENCE_CLASSNAME}, BASE)
    assert not references.must_offload({"__classname__": "builtins.tuple", "__version__": 1, "__data__": []}, BASE)
    for dag in ("dag_a", "dag_b"):  # whichever task it names: a mapped pull cannot tell tasks apart
        assert references.must_offload(f"s3://c@bucket/xcom/{dag}/{RUN}/task/{uuid.uuid4()}", BASE)
    assert not references.must_offload("s3://c@bucket/xcom/reports/x.csv", BASE)
    assert not references.must_offload({"a": 1}, BASE)


def test_only_names_a_backend_writes_are_xcom_shaped() -> None:
    for name in (
        object_name(OWNER, None),
        object_name(OWNER, "gzip"),
        object_name(XComIdentity("д" * 250, RUN, "t", 1, "k"), "zstd"),  # hashed
        f"dag_a/{RUN}/task/{uuid.uuid4()}",
        f"dag_a/{RUN}/task/{uuid.uuid4()}.gz",
        "dag_a/_long/" + "0" * 64 + ".json",  # version 1's hashed names
        references.part_name(object_name(OWNER, None), 7),  # a GCS part left by an upload that never completed
    ):
        assert references.xcom_shaped(name), name
    assert not references.xcom_shaped(object_name(OWNER, None) + ".part-01")
    assert not references.xcom_shaped("_parts/abc.part-01")
    for name in ("reports/x.csv", "_verify/x.json", "d/r/t/-1/k.csv", "d/r/t/x/k.json", "_long/abc.json", "a/b"):
        assert not references.xcom_shaped(name), name


def test_segments_never_end_in_a_dot() -> None:
    # Azure trims a trailing dot from each path segment: "t." and "t" must not name the same blob.
    dotted, plain = replace(OWNER, task_id="t."), replace(OWNER, task_id="t")
    assert object_name(dotted, None) != object_name(plain, None)
    assert all(not segment.endswith(".") for segment in object_name(dotted, None).split("/"))
    assert references.decode_object_name(object_name(dotted, None), None) == dotted


@pytest.mark.parametrize(
    ("url", "parts", "path"),
    [
        ("s3://conn@bucket/xcom", ("s3", "conn", "bucket", "xcom"), "bucket/xcom"),
        ("s3://bucket/xcom/", ("s3", None, "bucket", "xcom"), "bucket/xcom"),
        ("file:///shared/xcom", ("file", None, "", "shared/xcom"), "/shared/xcom"),
        ("gs://c@b/a/b", ("gs", "c", "b", "a/b"), "b/a/b"),
    ],
)
def test_paths_common_io_accepts_parse(url: str, parts: tuple, path: str) -> None:
    location = contract.parse_objectstorage_path(url)
    assert (location.scheme, location.conn_id, location.bucket, location.prefix) == parts
    assert location.path == path
