"""Large values in parts, on S3, GCS and Azure with the emitted credentials: what happens when a part fails,
when the object behind a reference changed size, and the concurrency setting (xcom_backend/transfer.py)."""

from __future__ import annotations

import base64
import random

import pytest

from tests.integration.conftest import Deployment
from tests.xcom_calls import RUN_ID, clear_all_caches, pull, push
from xcom_backend import contract
from xcom_backend.backend import XComObjectCorruptError, XComObjectError
from xcom_backend.errors import StoreConfigError
from xcom_backend.references import stored_url
from xcom_backend.transfer import PART_SIZE

pytestmark = pytest.mark.integration

# Four parts, compressed or not: random bytes (base64) leave a codec little to take out.
LARGE = {"pad": base64.b64encode(random.Random(19).randbytes(3 * PART_SIZE + 12345)).decode()}


def test_a_large_value_round_trips_with_any_concurrency(deployment: Deployment) -> None:
    for concurrency in ("1", "3", "64"):
        deployment.set(contract.CONCURRENCY_ENV, concurrency)
        assert pull(push(LARGE)) == LARGE, concurrency


@pytest.mark.parametrize("value", ["0", "65", "ten", "-1"])
def test_a_bad_concurrency_setting_names_the_setting(deployment: Deployment, value: str) -> None:
    deployment.set(contract.CONCURRENCY_ENV, value)
    with pytest.raises(StoreConfigError, match=r"\[xcom_backend\] transfer_concurrency .* from 1 to 64"):
        push(LARGE)


def test_an_object_shorter_or_longer_than_its_reference_is_refused(deployment: Deployment) -> None:
    reference = push(LARGE)
    key = deployment.key(stored_url(reference))
    whole = deployment.admin.get(key)
    deployment.admin.put(key, whole[: len(whole) - PART_SIZE - 10])  # a part and more missing
    with pytest.raises(XComObjectCorruptError, match="does not match its checksum"):
        pull(reference)
    deployment.admin.put(key, whole + b"trailing bytes")
    with pytest.raises(XComObjectError):  # the digest of the first stored_size bytes alone would match
        pull(reference)
    deployment.admin.put(key, whole)
    assert pull(reference) == LARGE


def test_a_part_that_keeps_failing_fails_the_write_and_leaves_nothing(deployment: Deployment, monkeypatch) -> None:
    """The third part fails every time (each store's own retries included): the push raises before any row is
    written, and no object, part or pending upload is left under the value's name."""
    from xcom_backend.store import current_store

    push({"warm": "w" * 2000})  # the store exists
    store = current_store()
    before = deployment.stored_keys()
    failing = _fail_third_part(deployment.cloud, store, monkeypatch)
    with pytest.raises(XComObjectError, match="writing XCom object"):
        push(LARGE)
    assert failing["calls"] >= 3
    if "part tries" in failing:  # GCS's client: tried as often as gcsfs tries a request
        from xcom_backend.gcs import RETRIES

        assert failing["part tries"] == RETRIES
    assert deployment.stored_keys() == before
    if deployment.cloud == "aws":
        uploads = deployment.admin.server.client("s3").list_multipart_uploads(Bucket=deployment.admin.bucket)
        assert not uploads.get("Uploads"), uploads  # aborted
    clear_all_caches()


def _fail_third_part(cloud: str, store, monkeypatch) -> dict[str, int]:
    """Make the request carrying part 3 fail at the transport, whatever the store's library retries."""
    seen = {"calls": 0}
    if cloud == "aws":

        def refuse(params, **_):
            seen["calls"] += 1
            if params.get("PartNumber") == 3:
                raise ConnectionResetError("part 3 lost")

        store.s3.client.meta.events.register("before-parameter-build.s3.UploadPart", refuse)
        return seen
    if cloud == "gcp" and store.gcs is None:  # through gcsfs (connections without a key)
        original_pipe = type(store.fs)._pipe_file

        async def refuse_part_write(self, path, data, *args, **kwargs):
            seen["calls"] += 1
            if path.endswith(".part-02"):
                raise ConnectionResetError("part 3 lost")
            return await original_pipe(self, path, data, *args, **kwargs)

        monkeypatch.setattr(type(store.fs), "_pipe_file", refuse_part_write)
        return seen
    if cloud == "gcp":  # below urllib3's retries (xcom_backend.gcs), which try it RETRIES times
        from urllib3.connectionpool import HTTPConnectionPool

        original = HTTPConnectionPool._make_request

        def refuse_part(self, conn, method, url, *args, **kwargs):
            seen["calls"] += 1
            if "part-02" in url:
                seen["part tries"] = seen.get("part tries", 0) + 1
                raise ConnectionResetError("part 3 lost")
            return original(self, conn, method, url, *args, **kwargs)

        monkeypatch.setattr(HTTPConnectionPool, "_make_request", refuse_part)
        return seen
    from azure.storage.blob._generated.aio.operations import _block_blob_operations

    operations = _block_blob_operations.BlockBlobOperations  # what the SDK's parallel upload stages blocks with
    original_stage = operations.stage_block

    async def refuse_block(self, *args, **kwargs):
        seen["calls"] += 1
        if seen["calls"] == 3:
            raise ConnectionResetError("part 3 lost")
        return await original_stage(self, *args, **kwargs)

    monkeypatch.setattr(operations, "stage_block", refuse_block)
    return seen


def test_a_pull_of_many_large_values_keeps_to_the_concurrency_setting(deployment: Deployment, monkeypatch) -> None:
    """Four values of four ranges each, read at once (as get_all and a mapped task's results are): never more
    requests in flight than [xcom_backend] transfer_concurrency, whichever value they are for."""
    if deployment.cloud == "azure" or deployment.through_gcsfs:
        pytest.skip("counted at the S3 client and GcsObjects; gcsfs and adlfs send a value's ranges themselves")
    import threading

    from airflow.sdk.execution_time.comms import XComResult

    from xcom_backend.backend import ObjectStorageXComBackend, reading_in_parallel, reading_xcom, settled
    from xcom_backend.references import XComIdentity
    from xcom_backend.store import current_store

    deployment.set(contract.CONCURRENCY_ENV, "4")
    rows = [push(LARGE, XComIdentity("d", RUN_ID, "t", index, "big")) for index in range(4)]
    counts, lock = {"now": 0, "most": 0}, threading.Lock()

    def started(**_):
        with lock:
            counts["now"] += 1
            counts["most"] = max(counts["most"], counts["now"])

    def ended(**_):
        with lock:
            counts["now"] -= 1

    store = current_store()
    if store.s3 is not None:
        events = store.s3.client.meta.events
        events.register("before-call.s3.GetObject", started)
        events.register("after-call.s3.GetObject", ended)
    else:
        request = store.gcs._request

        def counted(method, *args, **kwargs):
            started() if method == "GET" else None
            try:
                return request(method, *args, **kwargs)
            finally:
                ended() if method == "GET" else None

        monkeypatch.setattr(store.gcs, "_request", counted)
    with reading_xcom(XComIdentity("d", RUN_ID, "t", None, "big")), reading_in_parallel():
        pending = [ObjectStorageXComBackend.deserialize_value(XComResult(key="big", value=row)) for row in rows]
        values = settled(pending)
    assert values == [LARGE] * 4
    assert 1 < counts["most"] <= 4, counts
