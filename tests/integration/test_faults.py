"""Storage faults during push and pull: every one fails loudly, naming the URL and the cause; no value is
ever replaced by a path. Runs against its own moto server (IAM enforced), which some cases stop."""

from __future__ import annotations

import threading
import time

import pytest

from emulation.moto import moto_server
from tests.conftest import deploy
from tests.xcom_calls import clear_all_caches, pull
from xcom_backend import contract
from xcom_backend.backend import ObjectStorageXComBackend as Backend
from xcom_backend.backend import XComObjectCorruptError, XComObjectError, XComObjectMissingError
from xcom_backend.references import XComIdentity, stored_url

pytestmark = [pytest.mark.integration, pytest.mark.reliability]
BIG = {"rows": ["r" * 500] * 20}
COORDS = {"key": "k", "dag_id": "faults", "run_id": "r1", "task_id": "t", "map_index": -1}
OWNER = XComIdentity(**COORDS)


@pytest.fixture
def own_moto(tmp_path, monkeypatch):
    """A moto server of this test's own, the emitted env applied, as inside a running task."""
    with moto_server(tmp_path) as server:
        stack = deploy(server, prefix="xcom")
        for name, value in stack.env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        clear_all_caches()
        yield server, stack
        clear_all_caches()


def expect_loud(action, error_type, url_prefix: str, cause: str) -> str:
    with pytest.raises(error_type) as caught:
        result = action()
        pytest.fail(f"returned {result!r} instead of failing")
    message = str(caught.value)
    assert url_prefix in message, message
    assert cause in message, message
    return message


def test_fault_matrix(own_moto, figures, monkeypatch) -> None:
    server, stack = own_moto
    base = stack.env[contract.PATH_ENV]
    s3 = server.client("s3")
    outcomes = {}

    def case(name: str, run) -> None:
        try:
            run()
            outcomes[name] = "loud"
        except AssertionError as err:
            outcomes[name] = f"FAILED: {err}"

    def object_deleted() -> None:
        reference = Backend.serialize_value(BIG, **COORDS)
        s3.delete_object(Bucket=stack.bucket, Key=stored_url(reference).split(f"{stack.bucket}/", 1)[1])
        expect_loud(
            lambda: pull(reference, OWNER),
            XComObjectMissingError,
            stored_url(reference),
            "missing",
        )

    def object_truncated() -> None:
        reference = Backend.serialize_value(BIG, **COORDS)
        key = stored_url(reference).split(f"{stack.bucket}/", 1)[1]
        body = s3.get_object(Bucket=stack.bucket, Key=key)["Body"].read()
        s3.put_object(Bucket=stack.bucket, Key=key, Body=body[:100])
        expect_loud(
            lambda: pull(reference, OWNER),
            XComObjectCorruptError,
            stored_url(reference),
            "checksum",
        )

    def object_corrupted() -> None:
        reference = Backend.serialize_value(BIG, **COORDS)
        key = stored_url(reference).split(f"{stack.bucket}/", 1)[1]
        body = bytearray(s3.get_object(Bucket=stack.bucket, Key=key)["Body"].read())
        body[len(body) // 2] ^= 0x01  # one flipped bit, still valid JSON
        s3.put_object(Bucket=stack.bucket, Key=key, Body=bytes(body))
        expect_loud(
            lambda: pull(reference, OWNER),
            XComObjectCorruptError,
            stored_url(reference),
            "checksum",
        )

    def permission_revoked() -> None:
        reference = Backend.serialize_value(BIG, **COORDS)
        iam = server.client("iam")
        policy_arn = stack.run.outputs["policy_arn"]
        iam.detach_user_policy(UserName=stack.run.outputs["user_name"], PolicyArn=policy_arn)
        try:
            expect_loud(
                lambda: Backend.serialize_value(BIG, **{**COORDS, "key": "k2"}),
                XComObjectError,
                f"{base}/faults/r1/t/-1/k2.json",
                "permission denied",
            )
            expect_loud(
                lambda: pull(reference, OWNER),
                XComObjectError,
                stored_url(reference),
                "permission denied",
            )
        finally:
            iam.attach_user_policy(UserName=stack.run.outputs["user_name"], PolicyArn=policy_arn)

    def connection_missing() -> None:
        monkeypatch.delenv("AIRFLOW_CONN_MY_AWS_CONN")
        clear_all_caches()
        try:
            expect_loud(
                lambda: Backend.serialize_value(BIG, **{**COORDS, "key": "k3"}),
                XComObjectError,
                f"{base}/faults/r1/t/-1/k3.json",
                "failed",
            )
        finally:
            monkeypatch.setenv("AIRFLOW_CONN_MY_AWS_CONN", stack.env["AIRFLOW_CONN_MY_AWS_CONN"])
            clear_all_caches()

    def storage_stopped_mid_write() -> None:
        Backend.serialize_value(BIG, **COORDS)  # connection and client warmed up
        big = {"rows": ["w" * 1000] * 30_000}  # ~30 MB: the upload is still running when the server dies
        outcome: dict[str, object] = {}

        def push() -> None:
            try:
                outcome["value"] = Backend.serialize_value(big, **{**COORDS, "key": "mid"})
            except Exception as err:
                outcome["error"] = err

        writer = threading.Thread(target=push)
        writer.start()
        time.sleep(0.05)
        server.emulator.process.kill()
        writer.join(timeout=300)
        assert "value" not in outcome, "a write the server never finished returned a reference"
        message = str(outcome["error"])
        assert isinstance(outcome["error"], XComObjectError) and f"{base}/faults/r1/t/-1/mid.json" in message, message

    for name, run in [
        ("object deleted before pull", object_deleted),
        ("object truncated", object_truncated),
        ("object corrupted (1 bit)", object_corrupted),
        ("permission revoked (push and pull)", permission_revoked),
        ("connection missing", connection_missing),
        ("storage stopped mid-write", storage_stopped_mid_write),  # last: it kills this test's server
    ]:
        case(name, run)
    for name, outcome in outcomes.items():
        figures.append({"area": "faults", "case": name, "tried": 1, "failed": int(outcome != "loud")})
    assert all(outcome == "loud" for outcome in outcomes.values()), outcomes
