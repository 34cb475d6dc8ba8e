"""The bundled backend in-process against S3 (moto, IAM enforced), GCS and Azure (Azurite over HTTPS), each
with the credential its stack emitted: every store operation on every store, since s3fs, gcsfs and adlfs differ.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import fsspec.compression
import pytest
from airflow.providers.common.io.xcom import backend as common_io
from airflow.utils.json import XComDecoder, XComEncoder

from emulation.request_count import Requests, counting
from tests.conftest import deploy
from tests.integration.conftest import Deployment, through_gcsfs_connection
from tests.stores import ADMIN_CONN_ID
from tests.xcom_calls import (
    OWNER,
    RUN_ID,
    clear_all_caches,
    metadata_row,
    pull,
    pull_row,
    purge,
    push,
)
from xcom_backend import codec, contract, gc, references
from xcom_backend.backend import (
    ObjectStorageXComBackend as Backend,
)
from xcom_backend.backend import (
    XComForeignReferenceError,
    XComObjectCorruptError,
    XComObjectError,
    XComObjectMissingError,
    XComReferenceError,
)
from xcom_backend.references import XComIdentity, stored_url
from xcom_backend.transfer import PART_SIZE, parts_of, range_size

pytestmark = pytest.mark.integration

BIG = {f"key{i}": "x" * 100 for i in range(100)}


def test_small_value_stays_in_the_db(deployment: Deployment) -> None:
    before = deployment.stored_keys()
    result = push({"a": 23})
    assert result == {"a": 23} and pull(result) == {"a": 23}
    assert deployment.stored_keys() == before


def test_threshold_boundary_is_inclusive(deployment: Deployment) -> None:
    deployment.set(contract.THRESHOLD_ENV, "1000")
    below, at = "y" * (1000 - 3), "y" * (1000 - 2)  # JSON adds two quotes: 999 and 1000 bytes
    assert push(below) == below
    reference = push(at)
    assert reference["size"] == 1000 and stored_url(reference).startswith(deployment.base + "/")


def test_big_value_goes_to_storage_under_a_retry_stable_name(deployment: Deployment) -> None:
    reference = push(BIG)
    assert stored_url(reference) == f"{deployment.base}/d/manual__2026-01-01T00%3A00%3A00%2B00%3A00/t/-1/big.json"
    assert reference["size"] == 11290 and reference["__classname__"] == contract.REFERENCE_CLASSNAME
    assert json.loads(deployment.admin.get(deployment.key(stored_url(reference)))) == BIG
    assert pull(reference) == BIG


def test_a_retry_overwrites_its_own_object(deployment: Deployment) -> None:
    first = push(BIG)
    before = deployment.stored_keys()
    second = push({**BIG, "retry": 2})
    assert stored_url(second) == stored_url(first) and deployment.stored_keys() == before
    assert pull(second)["retry"] == 2


def test_mapped_tasks_and_keys_never_collide(deployment: Deployment) -> None:
    urls = {
        stored_url(push(BIG, XComIdentity("d", RUN_ID, "t", index, key)))
        for index in (-1, 0, 1, 2, 10)
        for key in ("return_value", "a/b", "a%2Fb", "..", "ключ")
    }
    assert len(urls) == 25 and all("/../" not in url for url in urls)


@pytest.mark.parametrize("compression", codec.available_compressions())
def test_every_codec_common_io_accepts_round_trips_and_reads_common_ios_objects(
    deployment: Deployment, compression: str
) -> None:
    deployment.set(contract.COMPRESSION_ENV, compression)
    reference = push(BIG)
    assert stored_url(reference).endswith(".json" + references.compression_suffix(compression))
    stored = deployment.admin.get(deployment.key(stored_url(reference)))
    assert len(stored) == reference["stored_size"]
    assert pull(reference) == BIG
    # Switching back: common-io infers the codec from the suffix and reads our object itself.
    assert common_io.XComObjectStorageBackend.deserialize_value(SimpleNamespace(value=stored_url(reference))) == BIG
    # And the other way: an object common-io wrote with this codec, read by us.
    theirs = write_with_common_io(deployment, {"by": "common-io", "codec": compression, "pad": "z" * 2000})
    assert pull(theirs, XComIdentity("d", RUN_ID, "t", 0, "return_value")) == {
        "by": "common-io",
        "codec": compression,
        "pad": "z" * 2000,
    }


class _KeptOpen(io.BytesIO):
    """A buffer whose contents outlive the compressor closing it (zstandard's writer closes its target)."""

    def close(self) -> None:
        pass


def write_with_common_io(deployment: Deployment, value: Any, owner: XComIdentity = OWNER) -> str:
    """common-io's own serialize_value, through an admin connection to the same bucket and prefix.

    Except compressed on GCS: gcsfs defers closing the file under common-io's compression wrapper to a
    finalizer that never uploads it, so common-io returns a URL with no object behind it (gcsfs 2026.10.1).
    There the same bytes are written as common-io would have: its encoder, fsspec's compressor, its key shape.
    """
    location = contract.parse_objectstorage_path(deployment.base)
    admin_base = f"{location.scheme}://{ADMIN_CONN_ID}@{location.bucket}/{location.prefix}"
    compression = os.environ.get(contract.COMPRESSION_ENV) or None
    if deployment.cloud == "gcp" and compression:
        url = f"{admin_base}/{owner.dag_id}/{owner.run_id}/{owner.task_id}/{uuid.uuid4()}"
        url += references.compression_suffix(compression)
        buffer = _KeptOpen()
        stream = fsspec.compression.compr[compression](buffer, mode="wb")
        stream.write(json.dumps(value, cls=XComEncoder).encode())
        stream.close()
        deployment.admin.put(deployment.key(url), buffer.getvalue())
        return url
    for name, text in deployment.admin.admin_connection_env().items():
        deployment.monkeypatch.setenv(name, text)
    deployment.set(contract.PATH_ENV, admin_base)
    try:
        url = common_io.XComObjectStorageBackend.serialize_value(value, **asdict(owner))
    finally:
        deployment.set(contract.PATH_ENV, deployment.stack.env[contract.PATH_ENV])
    assert isinstance(url, str) and url.startswith(f"{admin_base}/{owner.dag_id}/"), url
    assert deployment.key(url) in deployment.stored_keys(), f"common-io wrote no object for {url}"
    return url


def test_reads_common_io_references_written_under_another_connection_id(deployment: Deployment) -> None:
    url = write_with_common_io(deployment, {"pad": "c" * 3000})
    assert f"{ADMIN_CONN_ID}@" in url and "my_" not in url  # the row names another connection
    assert pull(url) == {"pad": "c" * 3000}


def test_a_missing_object_raises(deployment: Deployment) -> None:
    # (Whether a process is inside a task no longer matters: the e2e tests run the consumer in its own process.)
    reference = push(BIG)
    deployment.admin.delete(deployment.key(stored_url(reference)))
    with pytest.raises(XComObjectMissingError) as caught:
        pull(reference)
    assert stored_url(reference) in str(caught.value) and "task t" in str(caught.value)


def test_a_missing_common_io_object_raises_instead_of_returning_its_url(deployment: Deployment) -> None:
    url = write_with_common_io(deployment, {"pad": "m" * 3000})
    deployment.admin.delete(deployment.key(url))
    with pytest.raises(XComObjectMissingError, match="common-io"):
        pull(url)


def test_an_unreadable_object_raises(deployment: Deployment) -> None:
    reference = push(BIG)
    conn_env = contract.connection_env(f"my_{deployment.cloud}_conn")
    connection = json.loads(deployment.stack.env[conn_env])
    if deployment.cloud == "aws":
        connection["password"] = "not-the-secret"
    elif deployment.cloud == "gcp":  # another stack's service account: valid, but not bound to this bucket
        other = deploy(deployment.stack.server, stack="unbound")
        try:
            text = other.env[conn_env]
            connection = json.loads(through_gcsfs_connection(text) if deployment.through_gcsfs else text)
        finally:
            other.mocks.destroy()
    else:
        connection["extra"]["connection_string"] = connection["extra"]["connection_string"].replace("sig=", "sig=x")
    deployment.set(conn_env, json.dumps(connection))
    with pytest.raises(XComObjectError, match="reading XCom object") as caught:
        pull(reference)
    assert stored_url(reference) in str(caught.value)


@pytest.mark.parametrize("damage", ["truncated", "corrupted"])
def test_truncated_or_corrupted_object_raises(deployment: Deployment, damage: str) -> None:
    reference = push(BIG)
    key = deployment.key(stored_url(reference))
    body = deployment.admin.get(key)
    deployment.admin.put(key, body[: len(body) // 2] if damage == "truncated" else body.replace(b"x", b"y", 1))
    with pytest.raises(XComObjectCorruptError, match="does not match its checksum") as caught:
        pull(reference)
    assert stored_url(reference) in str(caught.value)


def test_purge_deletes_the_object_and_a_missing_object_counts_as_purged(deployment: Deployment) -> None:
    reference = push(BIG)
    key = deployment.key(stored_url(reference))
    assert key in deployment.stored_keys()
    purge(reference)
    assert key not in deployment.stored_keys()
    purge(reference)  # gcsfs and adlfs raise FileNotFoundError here: must count as purged
    url = write_with_common_io(deployment, {"pad": "p" * 3000})
    deployment.admin.delete(deployment.key(url))
    purge(url)  # a common-io object expired by the lifecycle rule
    purge({"a": 1})  # a DB value: nothing to purge


def test_strings_naming_objects_are_values_unless_they_are_this_xcoms_own(deployment: Deployment) -> None:
    victim = push({"secret": "of dag B", "pad": "b" * 2000}, XComIdentity("dag_b", RUN_ID, "t", -1, "return_value"))
    victim_url = stored_url(victim)
    theirs = write_with_common_io(
        deployment, {"secret": "common-io of dag B", "pad": "b" * 2000}, XComIdentity("dag_b", RUN_ID, "t")
    )
    for value in (
        victim_url,  # another DAG's object, as a plain string
        f"{deployment.base}/reports/x.csv",  # a task returning a path under the prefix
        f"{deployment.base}/d/{RUN_ID}/t/{uuid.uuid4()}.csv",  # common-io's directory, not its key shape
        "s3://elsewhere/x.json",
    ):
        assert push(value) == value  # kept in the DB: below the threshold, and no reference at all
        assert pull(value) == value, value
        purge(value)
    # A row edited to hold another DAG's common-io URL (our backend offloads such strings, see below).
    assert pull(theirs) == theirs
    purge(theirs)
    # Rows edited to hold references to B's object: refused loudly on read, ignored (logged) by purge.
    forged = {**victim, "dag_id": "d", "task_id": "t", "key": "big"}  # claims to be ours, names B's object
    relabelled = {**victim}  # B's genuine reference copied into A's row
    for planted in (forged, relabelled):
        with pytest.raises(XComForeignReferenceError, match=victim_url):
            pull(planted)
        purge(planted)
    assert deployment.key(victim_url) in deployment.stored_keys() and deployment.key(theirs) in deployment.stored_keys()
    assert pull(victim, XComIdentity("dag_b", RUN_ID, "t", -1, "return_value"))["secret"] == "of dag B"


@pytest.mark.parametrize("threshold", ["1000", "-1"])
def test_values_that_would_read_back_as_references_are_offloaded(deployment: Deployment, threshold: str) -> None:
    deployment.set(contract.THRESHOLD_ENV, threshold)  # even with object storage off for everything else
    for value in (
        {contract.REFERENCE_MARKER: "mine", "url": "x"},  # version 2's shape (serde refuses a dict in version 3's)
        f"{deployment.base}/d/{RUN_ID}/t/{uuid.uuid4()}",  # common-io's shape for this task
        f"{deployment.base}/other_dag/{RUN_ID}/sibling/{uuid.uuid4()}.gz",  # ... or for any other
        references.display_text(f"{deployment.base}/d/{RUN_ID}/t/-1/big.json"),  # what the UI shows for a row
    ):
        stored = push(value)
        assert isinstance(stored, dict) and stored["__version__"] == references.REFERENCE_VERSION, stored
        assert pull(stored) == value
        assert pull(stored, XComIdentity("d", RUN_ID, "t", None, "big")) == value  # a mapped task's results


def test_a_marker_dict_without_a_storage_path_is_refused_when_pushed(deployment: Deployment) -> None:
    deployment.set(contract.PATH_ENV, None)
    deployment.set(contract.THRESHOLD_ENV, "-1")
    with pytest.raises(XComObjectError, match="cannot be kept in the metadata DB unambiguously"):
        push({contract.REFERENCE_MARKER: "mine"})
    assert push({"plain": "values"}) == {"plain": "values"}


def test_values_kept_in_the_db_never_resolve_the_store(deployment: Deployment, monkeypatch) -> None:
    from xcom_backend import backend

    def no_store() -> None:
        raise AssertionError("the store was resolved for a value kept in the DB")

    monkeypatch.setattr(backend, "current_store", no_store)
    for value in ("plain string", {"a": 1}, [1, 2], 3, "s3://elsewhere/x.json", f"{deployment.base}/reports/x"):
        assert pull(value) == value


def test_a_reference_read_without_knowing_whose_value_it_is_raises(deployment: Deployment) -> None:
    reference = push(BIG)
    with pytest.raises(XComReferenceError, match="cannot tell which XCom"):
        pull(reference, owner=None)
    assert pull(reference, XComIdentity(dag_id="d", run_id=RUN_ID)) == BIG  # a lazily read mapped result


def test_a_metadata_db_row_is_read_by_its_own_coordinates(deployment: Deployment) -> None:
    # Airflow core and drop-in checks pass the row itself (no get_one/get_all around the call): the row's
    # coordinates are Airflow's, only its value is the user's.
    mapped = XComIdentity("d", RUN_ID, "t", 3, "return_value")
    for owner, value in ((OWNER, BIG), (mapped, {"index": 3, **BIG}), (OWNER, ("tuple", 1)), (OWNER, {"a": 23})):
        assert pull_row(push(value, owner), owner) == value
    url = write_with_common_io(deployment, BIG, XComIdentity("d", RUN_ID, "t"))
    assert pull_row(url, XComIdentity("d", RUN_ID, "t", -1, "return_value")) == BIG  # common-io's row
    purge_row_owner = XComIdentity("d", RUN_ID, "t", -1, "purged")
    reference = push(BIG, purge_row_owner)
    Backend.purge(metadata_row(reference, purge_row_owner))  # purge trusts a row's coordinates the same way
    assert deployment.key(stored_url(reference)) not in deployment.stored_keys()


def test_a_row_saved_from_the_uis_edit_dialog_fails_clearly(deployment: Deployment) -> None:
    reference = push(BIG)
    shown = references.display_text(stored_url(reference))  # what the dialog loads and saves back
    for read in (pull, pull_row):
        with pytest.raises(XComReferenceError, match="Edit XCom dialog"):
            read(shown)
    purge(shown)  # logged; nothing deleted through the text
    assert deployment.key(stored_url(reference)) in deployment.stored_keys()


def test_a_row_holding_another_xcoms_reference_is_refused(deployment: Deployment) -> None:
    victim_owner = XComIdentity("dag_b", RUN_ID, "t", -1, "return_value")
    victim = push({"secret": "of dag B", "pad": "b" * 2000}, victim_owner)
    assert pull_row(victim, victim_owner)["secret"] == "of dag B"
    for planted in (victim, {**victim, "dag_id": "d", "task_id": "t", "key": "big"}):  # copied, or relabelled
        with pytest.raises(XComForeignReferenceError, match=stored_url(victim)):
            pull_row(planted, OWNER)
        Backend.purge(metadata_row(planted, OWNER))  # logged, nothing deleted
    common_io_url = write_with_common_io(deployment, {"pad": "p" * 3000}, XComIdentity("dag_b", RUN_ID, "t"))
    assert pull_row(common_io_url, OWNER) == common_io_url  # another task's common-io URL is a plain value
    assert deployment.key(stored_url(victim)) in deployment.stored_keys()
    assert deployment.key(common_io_url) in deployment.stored_keys()


def test_a_reference_outside_the_configured_path_says_so(deployment: Deployment) -> None:
    reference = push(BIG)
    location = contract.parse_objectstorage_path(deployment.base)
    deployment.set(contract.PATH_ENV, f"{location.scheme}://{location.conn_id}@{location.bucket}/moved")
    with pytest.raises(XComReferenceError, match=r"was \[common.io\] xcom_objectstorage_path changed"):
        pull(reference)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"__version__": 9}, "version v=9"),
        ({"checksum": None}, "field 'checksum'"),
        ({"stored_size": "12"}, "field 'stored_size'"),
        ({"__data__": None}, "no URL"),
        ({"compression": "rar"}, "unknown compression"),
    ],
)
def test_malformed_references_fail_with_a_clear_error(deployment: Deployment, change, message: str) -> None:
    reference = {**push(BIG), **change}
    with pytest.raises(XComReferenceError, match=message):
        pull(reference)
    purge(reference)  # never blocks a retry: logged, nothing deleted


def test_version_1_references_still_read(deployment: Deployment) -> None:
    # Version 1 wrote json.dumps(value, cls=XComEncoder) and read it back with XComDecoder, as common-io does.
    value = {"tuple": (1, 2), True: "key", "set": {3}, "pad": "v" * 2000}
    reference = push(value)
    written_by_v1 = json.dumps(value, cls=XComEncoder).encode()
    deployment.admin.put(deployment.key(stored_url(reference)), written_by_v1)
    read_by_v1 = json.loads(written_by_v1, cls=XComDecoder)
    v1 = {
        contract.REFERENCE_MARKER: f"in object storage: {stored_url(reference)} ({len(written_by_v1)} bytes)",
        "v": 1,
        "url": stored_url(reference),
        "size": len(written_by_v1),
        "stored_size": len(written_by_v1),
        "sha256": hashlib.sha256(written_by_v1).hexdigest(),
        "compression": None,
        "writer": OWNER.describe(),
    }
    assert pull(v1) == read_by_v1 and read_by_v1["true"] == "key"
    assert pull(v1, XComIdentity("d", RUN_ID, "t", None, "big")) == read_by_v1
    with pytest.raises(XComForeignReferenceError):
        pull(v1, XComIdentity("other", RUN_ID, "t", -1, "big"))


def test_version_2_sha256_references_still_read(deployment: Deployment) -> None:
    """Rows written before BLAKE3 and msgspec: json.dumps text of the serde form, SHA-256 in the row."""
    reference = push(BIG)
    old_bytes = json.dumps(codec.serialize(BIG)).encode()
    deployment.admin.put(deployment.key(stored_url(reference)), old_bytes)
    v2 = {**reference, "stored_size": len(old_bytes), "checksum": f"sha256:{hashlib.sha256(old_bytes).hexdigest()}"}
    assert pull(v2) == BIG
    deployment.admin.put(deployment.key(stored_url(reference)), old_bytes.replace(b"x", b"y", 1))
    with pytest.raises(XComObjectCorruptError, match="does not match its checksum"):
        pull(v2)


def default_credentials_env(deployment: Deployment, tmp_path: Path) -> dict[str, str]:
    """The emitted credential as each cloud's SDK finds it without an Airflow connection (as on an instance
    role, IRSA or workload identity), for a path that names no connection."""
    connection = json.loads(deployment.stack.env[contract.connection_env(f"my_{deployment.cloud}_conn")])
    if deployment.cloud == "aws":
        return {
            "AWS_ACCESS_KEY_ID": connection["login"],
            "AWS_SECRET_ACCESS_KEY": connection["password"],
            "AWS_ENDPOINT_URL": deployment.stack.server.endpoint,
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    if deployment.cloud == "gcp":
        keyfile = tmp_path / "key.json"
        keyfile.write_text(connection["extra"]["keyfile_dict"])
        keyfile.chmod(0o600)
        return {
            "GOOGLE_APPLICATION_CREDENTIALS": str(keyfile),
            "STORAGE_EMULATOR_HOST": deployment.stack.server.endpoint,
        }
    return {"AZURE_STORAGE_CONNECTION_STRING": connection["extra"]["connection_string"]}


def test_a_path_without_a_connection_id_uses_the_default_credentials(deployment: Deployment, tmp_path: Path) -> None:
    for name, value in default_credentials_env(deployment, tmp_path).items():
        deployment.monkeypatch.setenv(name, value)
    location = contract.parse_objectstorage_path(deployment.base)
    deployment.set(contract.connection_env(location.conn_id), None)  # no connection at all
    deployment.set(contract.PATH_ENV, f"{location.scheme}://{location.bucket}/{location.prefix}")
    reference = push(BIG)
    assert stored_url(reference).startswith(f"{location.scheme}://{location.bucket}/{location.prefix}/d/")
    assert pull(reference) == BIG
    purge(reference)
    assert deployment.key(stored_url(reference)) not in deployment.stored_keys()


# file:// and local://: the second is a scheme the backend has no entry for, resolved as ObjectStoragePath does.
@pytest.mark.parametrize("scheme", ["file", "local"])
def test_a_local_path_works_and_creates_its_directories(
    scheme: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = tmp_path / "shared" / "xcom"  # does not exist yet
    monkeypatch.setenv(contract.PATH_ENV, f"{scheme}://{base}")
    monkeypatch.setenv(contract.THRESHOLD_ENV, "1000")
    clear_all_caches()
    try:
        reference = push(BIG)
        stored = base / "d" / "manual__2026-01-01T00%3A00%3A00%2B00%3A00" / "t" / "-1" / "big.json"
        assert stored_url(reference) == f"{scheme}://{base}/{stored.relative_to(base)}" and stored.is_file()
        assert pull(reference) == BIG
        store, rows = gc.checked_store(), [(OWNER, reference)]
        assert gc.find_orphans(store, timedelta(0), lambda where=None: rows).orphans == []
        assert [item.name for item in gc.find_orphans(store, timedelta(0), lambda where=None: []).orphans] == [
            str(stored.relative_to(base))
        ]
        purge(reference)
        purge(reference)  # already gone
        assert not stored.exists()
    finally:
        clear_all_caches()


@pytest.fixture
def count_requests(deployment: Deployment) -> Iterator[Callable[[], Requests]]:
    """Start counting the requests the backend's store sends (emulation/request_count.py)."""
    from xcom_backend.store import current_store

    with contextlib.ExitStack() as stack:
        gcs_iam = deployment.stack.server.iam if deployment.cloud == "gcp" else None
        yield lambda: stack.enter_context(counting(current_store().transport, gcs_iam=gcs_iam))


@pytest.mark.parametrize("size", [11_000, PART_SIZE - 100], ids=["11KB", "a part"])
def test_one_request_per_write_and_one_per_read(deployment: Deployment, count_requests, size: int) -> None:
    """Up to a part (8 MiB): s3fs would HEAD before every read; gcsfs's default class would add Storage Control
    layout calls (see test_gcsfs_default_class_is_replaced)."""
    value = {"pad": "q" * size}
    push(BIG)  # the store and its client exist: their setup is not what is counted
    requests = count_requests()
    reference = push(value)
    written = len(requests)
    assert pull(reference) == value
    assert (written, len(requests) - written) == (1, 1), requests


def test_a_large_value_moves_in_parts(deployment: Deployment, count_requests) -> None:
    """Above a part: parts sent and ranges read in parallel, each part one request; the whole checked by its
    digest on read."""
    value = {"pad": "w" * (40 * 2**20)}
    push(BIG)
    requests = count_requests()
    reference = push(value)
    written = len(requests)
    assert pull(reference) == value
    stored = reference["stored_size"]
    parts, ranges = len(parts_of(stored)), len(parts_of(stored, range_size(stored, contract.DEFAULT_CONCURRENCY)))
    expected = {
        "aws": (parts + 2, ranges),  # create, parts, complete; a GET per range
        "gcp": (parts + 2, ranges),  # parts as objects, compose, one batch deleting the parts; a GET per range
        "azure": (parts + 1, parts),  # Put Block per part, Put Block List; the SDK's ranges, a part each
    }
    assert (written, len(requests) - written) == expected[deployment.cloud], requests
    assert not [key for key in deployment.stored_keys() if ".part-" in key]  # GCS's parts are gone (_parts/)


def test_a_value_above_the_single_request_limit_is_uploaded_in_parts(deployment: Deployment, monkeypatch) -> None:
    """Above SINGLE_REQUEST_LIMIT (5000 MiB: S3's and Azure's largest single PUT; lowered here to 5 MiB, S3's
    smallest part) each store's library uploads in parts; on S3 that is s3fs's multipart upload."""
    from xcom_backend import store as store_module

    monkeypatch.setattr(store_module, "SINGLE_REQUEST_LIMIT", 5 * 2**20)
    clear_all_caches()  # adlfs's sizes are set from the limit when the store is built
    try:
        store = store_module.current_store()
        gcs_iam = deployment.stack.server.iam if deployment.cloud == "gcp" else None
        value = {"pad": "p" * (11 * 2**20)}
        with counting(store.fs, gcs_iam=gcs_iam) as requests:
            reference = push(value)
        assert len(requests) >= 3, requests  # parts of at most 5 MiB, however each library frames them
        assert pull(reference) == value
    finally:
        clear_all_caches()


def test_gcsfs_default_class_is_replaced(deployment: Deployment, count_requests, monkeypatch) -> None:
    """Where GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT is not "false" (the stack emits it; a hand-made env may lack it),
    gcsfs's default class asks the Storage Control API for the bucket's layout before each operation — a
    gRPC request the prefix-conditioned binding denies (gcsfs then falls back, and asks again next time).
    The emulator has no such API: the call is recorded here and answered as the denied one is."""
    if not deployment.through_gcsfs:
        pytest.skip("gcsfs only (GCS connections without a key, or with an option only gcsfs implements)")
    import gcsfs
    from gcsfs.extended_gcsfs import BucketType, ExtendedGcsFileSystem

    layout_calls: list[str] = []

    async def denied_layout_call(self: Any, bucket: str) -> BucketType:
        layout_calls.append(f"getStorageLayout {bucket}")
        return BucketType.UNKNOWN

    monkeypatch.setattr(ExtendedGcsFileSystem, "_get_bucket_type", denied_layout_call)
    monkeypatch.setattr(gcsfs, "GCSFileSystem", ExtendedGcsFileSystem)  # what gcsfs exports without the env
    clear_all_caches()
    push(BIG)
    requests = count_requests()
    reference = push(BIG)
    written = len(requests) + len(layout_calls)
    assert pull(reference) == BIG
    assert (written, len(requests) + len(layout_calls) - written) == (1, 1), (requests, layout_calls)


@pytest.mark.parametrize("calculation", ["when_supported", "when_required"])
def test_s3_uploads_carry_a_crc32c_unless_the_store_takes_no_checksums(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch, calculation: str
) -> None:
    """S3 checks the CRC32C before storing; S3-compatible stores that refuse checksum headers are run with
    AWS_REQUEST_CHECKSUM_CALCULATION=when_required, which the backend honours like botocore."""
    if deployment.cloud != "aws":
        pytest.skip("S3 only")
    from xcom_backend.store import current_store

    monkeypatch.setenv("AWS_REQUEST_CHECKSUM_CALCULATION", calculation)
    clear_all_caches()  # a client built with this env
    headers: list[dict[str, str]] = []

    def record(request: Any, **_: Any) -> None:
        headers.append({name.lower(): value for name, value in request.headers.items()})

    assert current_store().s3 is not None, "S3 writes go through the provider's client (xcom_backend/s3.py)"
    events = current_store().transport.meta.events
    events.register("before-send.s3", record)
    try:
        reference = push(BIG)
        assert pull(reference) == BIG
    finally:
        events.unregister("before-send.s3", record)
    checksums = {name for name in headers[0] if name.startswith("x-amz-checksum-")}
    assert checksums == ({"x-amz-checksum-crc32c"} if calculation == "when_supported" else set()), headers[0]
