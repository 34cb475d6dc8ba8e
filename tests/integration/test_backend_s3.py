"""The bundled backend in-process against moto (IAM enforced), through Airflow's ObjectStoragePath."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from airflow.providers.common.io.xcom import backend as common_io

from tests.conftest import DeployedStack
from xcom_backend import backend, contract
from xcom_backend.backend import ObjectStorageXComBackend, XComObjectMissingError

pytestmark = pytest.mark.integration

BIG = {f"key{i}": "x" * 100 for i in range(100)}
COORDINATES = {"key": "big", "dag_id": "d", "run_id": "manual__1", "task_id": "t", "map_index": -1}


def clear_all_caches() -> None:
    backend.clear_caches()
    for getter in (common_io._get_base_path, common_io._get_compression, common_io._get_threshold):
        getter.cache_clear()


@pytest.fixture
def deployment(aws_stack: DeployedStack, monkeypatch: pytest.MonkeyPatch) -> DeployedStack:
    """The emitted env, and nothing else, in this process's environment."""
    for name, value in aws_stack.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    clear_all_caches()
    yield aws_stack
    clear_all_caches()


def stored(result) -> SimpleNamespace:
    """What the task SDK hands deserialize_value: an object with the DB value in ``.value``."""
    return SimpleNamespace(value=result)


def object_keys(stack: DeployedStack) -> list[str]:
    listing = stack.client("s3").list_objects_v2(Bucket=stack.bucket, Prefix="xcom/")
    return sorted(item["Key"] for item in listing.get("Contents", []))


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
    url = ObjectStorageXComBackend.serialize_value(at, **COORDINATES)
    assert url.startswith(deployment.env[contract.PATH_ENV] + "/")


def test_big_value_goes_to_storage_under_the_prefix_and_round_trips(deployment: DeployedStack) -> None:
    url = ObjectStorageXComBackend.serialize_value(BIG, **COORDINATES)
    base = deployment.env[contract.PATH_ENV]
    assert url.startswith(f"{base}/d/manual__1/t/") and url.endswith(".json")
    key = url.split(f"@{deployment.bucket}/", 1)[1]
    body = deployment.client("s3").get_object(Bucket=deployment.bucket, Key=key)["Body"].read()
    assert json.loads(body) == BIG
    assert ObjectStorageXComBackend.deserialize_value(stored(url)) == BIG


@pytest.mark.parametrize("compression", contract.COMPRESSIONS)
def test_every_codec_round_trips(deployment: DeployedStack, monkeypatch: pytest.MonkeyPatch, compression: str) -> None:
    monkeypatch.setenv(contract.COMPRESSION_ENV, compression)
    backend.clear_caches()
    url = ObjectStorageXComBackend.serialize_value(BIG, **COORDINATES)
    key = url.split(f"@{deployment.bucket}/", 1)[1]
    size = deployment.client("s3").head_object(Bucket=deployment.bucket, Key=key)["ContentLength"]
    assert size < len(json.dumps(BIG))  # really compressed
    assert ObjectStorageXComBackend.deserialize_value(stored(url)) == BIG


def test_missing_object_fails_loudly_with_its_url(deployment: DeployedStack) -> None:
    url = ObjectStorageXComBackend.serialize_value(BIG, **COORDINATES)
    key = url.split(f"@{deployment.bucket}/", 1)[1]
    deployment.client("s3").delete_object(Bucket=deployment.bucket, Key=key)
    with pytest.raises(XComObjectMissingError, match="missing") as caught:
        ObjectStorageXComBackend.deserialize_value(stored(url))
    assert url in str(caught.value)


def test_purge_deletes_the_object(deployment: DeployedStack) -> None:
    url = ObjectStorageXComBackend.serialize_value(BIG, **COORDINATES)
    key = url.split(f"@{deployment.bucket}/", 1)[1]
    assert key in object_keys(deployment)
    ObjectStorageXComBackend.purge(SimpleNamespace(value=url))
    assert key not in object_keys(deployment)
    ObjectStorageXComBackend.purge(SimpleNamespace(value={"a": 1}))  # a DB value: nothing to purge


def test_a_string_outside_the_base_path_is_a_value_not_a_reference(deployment: DeployedStack) -> None:
    for value in ("s3://elsewhere/x.json", f"{deployment.env[contract.PATH_ENV]}/../escape.json"):
        assert ObjectStorageXComBackend.deserialize_value(stored(value)) == value


def test_drop_in_both_ways_with_common_io(deployment: DeployedStack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(contract.COMPRESSION_ENV, "gzip")
    clear_all_caches()
    ours = ObjectStorageXComBackend.serialize_value(BIG, **COORDINATES)
    assert common_io.XComObjectStorageBackend.deserialize_value(stored(ours)) == BIG
    # common-io's own writes need its mkdir probe; give this test's key GetBucketLocation via the admin.
    theirs_value = {"written": "by common-io", "pad": "z" * 2000}
    admin_iam = deployment.server.client("iam")
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["s3:GetBucketLocation"], "Resource": f"arn:aws:s3:::{deployment.bucket}"}
        ],
    }
    admin_iam.put_user_policy(UserName="airflow-xcom", PolicyName="common-io-probe", PolicyDocument=json.dumps(policy))
    try:
        theirs = common_io.XComObjectStorageBackend.serialize_value(theirs_value, **COORDINATES)
    finally:
        admin_iam.delete_user_policy(UserName="airflow-xcom", PolicyName="common-io-probe")
    assert isinstance(theirs, str) and theirs.endswith(".gz")
    assert ObjectStorageXComBackend.deserialize_value(stored(theirs)) == theirs_value
