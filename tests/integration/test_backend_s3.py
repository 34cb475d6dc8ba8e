"""The bundled backend in-process against moto (IAM enforced), through Airflow's ObjectStoragePath."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from airflow.providers.common.io.xcom import backend as common_io

from tests.conftest import DeployedStack
from xcom_backend import backend, contract
from xcom_backend.backend import (
    ObjectStorageXComBackend,
    XComObjectCorruptError,
    XComObjectMissingError,
)

pytestmark = pytest.mark.integration

BIG = {f"key{i}": "x" * 100 for i in range(100)}
COORDINATES = {
    "key": "big",
    "dag_id": "d",
    "run_id": "manual__2026-01-01T00:00:00+00:00",
    "task_id": "t",
    "map_index": -1,
}


def clear_all_caches() -> None:
    """Our settings cache, common-io's, and Airflow's per-connection filesystem cache."""
    from airflow.sdk.io import store as airflow_store

    airflow_store._STORE_CACHE.clear()
    backend.clear_caches()
    for getter in (common_io._get_base_path, common_io._get_compression, common_io._get_threshold):
        getter.cache_clear()


@pytest.fixture
def deployment(aws_stack: DeployedStack, monkeypatch: pytest.MonkeyPatch) -> DeployedStack:
    """The emitted env, and nothing else, in this process's environment."""
    for name, value in aws_stack.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AIRFLOW_CTX_TASK_ID", "t")  # as inside a running task: errors must be raised
    clear_all_caches()
    yield aws_stack
    clear_all_caches()


def stored(result) -> SimpleNamespace:
    """What the task SDK hands deserialize_value: an object with the DB value in ``.value``."""
    return SimpleNamespace(value=result)


def object_keys(stack: DeployedStack) -> list[str]:
    listing = stack.client("s3").list_objects_v2(Bucket=stack.bucket, Prefix="xcom/")
    return sorted(item["Key"] for item in listing.get("Contents", []))


def s3_key(stack: DeployedStack, url: str) -> str:
    return url.split(f"@{stack.bucket}/", 1)[1]


def test_small_value_stays_in_the_db(deployment: DeployedStack) -> None:
    before = object_keys(deployment)
    result = ObjectStorageXComBackend.serialize_value({"a": 23}, **COORDINATES)
    assert ObjectStorageXComBackend.deserialize_value(stored(result)) == {"a": 23}
    assert object_keys(deployment) == before


def test_threshold_boundary_is_inclusive(deployment: DeployedStack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(contract.THRESHOLD_ENV, "1000")
    backend.clear_caches()
    below = "y" * (1000 - 3)  # JSON adds two quotes: 999 bytes
    at = "y" * (1000 - 2)  # 1000 bytes
    assert ObjectStorageXComBackend.serialize_value(below, **COORDINATES) == below
    reference = ObjectStorageXComBackend.serialize_value(at, **COORDINATES)
    assert reference["size"] == 1000 and reference["url"].startswith(deployment.env[contract.PATH_ENV] + "/")


def test_big_value_goes_to_storage_under_a_retry_stable_key(deployment: DeployedStack) -> None:
    reference = ObjectStorageXComBackend.serialize_value(BIG, **COORDINATES)
    base = deployment.env[contract.PATH_ENV]
    assert reference["url"] == f"{base}/d/manual__2026-01-01T00%3A00%3A00%2B00%3A00/t/-1/big.json"
    assert reference[contract.REFERENCE_MARKER] == f"in object storage: {reference['url']} (11290 bytes)"
    body = deployment.client("s3").get_object(Bucket=deployment.bucket, Key=s3_key(deployment, reference["url"]))
    assert json.loads(body["Body"].read()) == BIG
    assert ObjectStorageXComBackend.deserialize_value(stored(reference)) == BIG


def test_a_retry_overwrites_its_own_object(deployment: DeployedStack) -> None:
    first = ObjectStorageXComBackend.serialize_value(BIG, **COORDINATES)
    before = object_keys(deployment)
    second = ObjectStorageXComBackend.serialize_value({**BIG, "retry": 2}, **COORDINATES)
    assert second["url"] == first["url"]
    assert object_keys(deployment) == before
    assert ObjectStorageXComBackend.deserialize_value(stored(second))["retry"] == 2


def test_mapped_tasks_and_keys_never_collide(deployment: DeployedStack) -> None:
    urls = {
        ObjectStorageXComBackend.serialize_value(BIG, **{**COORDINATES, "map_index": index, "key": key})["url"]
        for index in (-1, 0, 1, 2, 10)
        for key in ("return_value", "a/b", "a%2Fb", "..", "ключ")
    }
    assert len(urls) == 25
    assert all("/../" not in url for url in urls)


@pytest.mark.parametrize("compression", contract.COMPRESSIONS)
def test_every_codec_round_trips(deployment: DeployedStack, monkeypatch: pytest.MonkeyPatch, compression: str) -> None:
    monkeypatch.setenv(contract.COMPRESSION_ENV, compression)
    backend.clear_caches()
    reference = ObjectStorageXComBackend.serialize_value(BIG, **COORDINATES)
    key = s3_key(deployment, reference["url"])
    size = deployment.client("s3").head_object(Bucket=deployment.bucket, Key=key)["ContentLength"]
    assert size == reference["stored_size"] < len(json.dumps(BIG))  # really compressed
    assert ObjectStorageXComBackend.deserialize_value(stored(reference)) == BIG
    # common-io (switching back) infers the codec from the suffix and reads the object itself.
    assert common_io.XComObjectStorageBackend.deserialize_value(stored(reference["url"])) == BIG


def test_missing_object_fails_loudly_naming_url_and_writer(deployment: DeployedStack) -> None:
    reference = ObjectStorageXComBackend.serialize_value(BIG, **COORDINATES)
    deployment.client("s3").delete_object(Bucket=deployment.bucket, Key=s3_key(deployment, reference["url"]))
    with pytest.raises(XComObjectMissingError) as caught:
        ObjectStorageXComBackend.deserialize_value(stored(reference))
    assert reference["url"] in str(caught.value) and "task t" in str(caught.value)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [(lambda body: body[: len(body) // 2], "truncated"), (lambda body: body.replace(b"x", b"y", 1), "corrupted")],
)
def test_truncated_or_corrupted_object_fails_loudly(deployment: DeployedStack, damage, reason: str) -> None:
    reference = ObjectStorageXComBackend.serialize_value(BIG, **COORDINATES)
    s3, key = deployment.server.client("s3"), s3_key(deployment, reference["url"])
    body = s3.get_object(Bucket=deployment.bucket, Key=key)["Body"].read()
    s3.put_object(Bucket=deployment.bucket, Key=key, Body=damage(body))
    with pytest.raises(XComObjectCorruptError, match="does not match its checksum") as caught:
        ObjectStorageXComBackend.deserialize_value(stored(reference))
    assert reference["url"] in str(caught.value), reason


def test_outside_a_task_an_unreadable_object_gives_a_preview(
    deployment: DeployedStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = ObjectStorageXComBackend.serialize_value(BIG, **COORDINATES)
    monkeypatch.delenv("AIRFLOW_CTX_TASK_ID")
    monkeypatch.setenv(
        "AIRFLOW_CONN_MY_AWS_CONN",
        json.dumps(
            {
                "conn_type": "aws",
                "login": "AKIAWRONG",
                "password": "x",
                "extra": {"endpoint_url": deployment.server.endpoint},
            }
        ),
    )
    clear_all_caches()
    preview = ObjectStorageXComBackend.deserialize_value(stored(reference))
    assert preview.startswith(f"in object storage: {reference['url']} (11290 bytes); not readable here")


def test_purge_deletes_the_object(deployment: DeployedStack) -> None:
    reference = ObjectStorageXComBackend.serialize_value(BIG, **COORDINATES)
    key = s3_key(deployment, reference["url"])
    assert key in object_keys(deployment)
    ObjectStorageXComBackend.purge(SimpleNamespace(value=reference))
    assert key not in object_keys(deployment)
    ObjectStorageXComBackend.purge(SimpleNamespace(value=reference))  # already gone: fine
    ObjectStorageXComBackend.purge(SimpleNamespace(value={"a": 1}))  # a DB value: nothing to purge


def test_values_kept_in_the_db_never_resolve_the_store(deployment: DeployedStack, monkeypatch) -> None:
    def no_store():
        raise AssertionError("store() resolved for a value kept in the DB")

    no_store.cache_clear = lambda: None  # the fixture's teardown clears caches
    monkeypatch.setattr(backend, "store", no_store)
    for value in ("plain string", {"a": 1}, [1, 2], 3, "s3://elsewhere/x.json"):
        assert ObjectStorageXComBackend.deserialize_value(stored(value)) == value


def test_a_reference_outside_the_configured_path_fails_loudly(deployment: DeployedStack, monkeypatch) -> None:
    reference = ObjectStorageXComBackend.serialize_value(BIG, **COORDINATES)
    monkeypatch.setenv(contract.PATH_ENV, deployment.env[contract.PATH_ENV] + "-moved")
    clear_all_caches()
    with pytest.raises(backend.XComObjectError, match="was the path changed"):
        ObjectStorageXComBackend.deserialize_value(stored(reference))


def test_purge_takes_the_reference_as_json_text(deployment: DeployedStack) -> None:
    reference = ObjectStorageXComBackend.serialize_value(BIG, **COORDINATES)
    key = s3_key(deployment, reference["url"])
    ObjectStorageXComBackend.purge(SimpleNamespace(value=json.dumps(reference)))
    assert key not in object_keys(deployment)


def test_a_string_outside_the_base_path_is_a_value_not_a_reference(deployment: DeployedStack) -> None:
    for value in ("s3://elsewhere/x.json", f"{deployment.env[contract.PATH_ENV]}/../escape.json"):
        assert ObjectStorageXComBackend.deserialize_value(stored(value)) == value


def test_reads_what_common_io_wrote(deployment: DeployedStack, monkeypatch: pytest.MonkeyPatch) -> None:
    # common-io's own writes need its mkdir probe; give this test's key GetBucketLocation via the admin.
    admin_iam = deployment.server.client("iam")
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["s3:GetBucketLocation"], "Resource": f"arn:aws:s3:::{deployment.bucket}"}
        ],
    }
    admin_iam.put_user_policy(
        UserName=deployment.run.outputs["user_name"], PolicyName="common-io-probe", PolicyDocument=json.dumps(policy)
    )
    value = {"written": "by common-io", "pad": "z" * 2000}
    try:
        for compression in (None, "gzip"):
            if compression:
                monkeypatch.setenv(contract.COMPRESSION_ENV, compression)
            clear_all_caches()
            theirs = common_io.XComObjectStorageBackend.serialize_value(value, **COORDINATES)
            assert isinstance(theirs, str) and theirs.startswith(deployment.env[contract.PATH_ENV])
            assert ObjectStorageXComBackend.deserialize_value(stored(theirs)) == value
    finally:
        admin_iam.delete_user_policy(UserName=deployment.run.outputs["user_name"], PolicyName="common-io-probe")
