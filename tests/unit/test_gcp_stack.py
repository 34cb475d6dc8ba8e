"""The GCP program under Pulumi's mock runtime: bucket flags, binding scope and condition, key, env."""

from __future__ import annotations

import json

import pulumi
import pytest
from airflow.models.connection import Connection

from emulation.pulumi_runner import ProgramRun, RecordingMocks, run_program
from xcom_backend import contract

BUCKET = "gcp:storage/bucket:Bucket"
BINDING = "gcp:storage/bucketIAMMember:BucketIAMMember"
BASE = {"cloud": "gcp", "project": "my-project-1"}


def run(**config) -> ProgramRun:
    return run_program({**BASE, **config}, RecordingMocks())


@pytest.fixture(scope="module")
def default_run() -> ProgramRun:
    return run()


def test_bucket_is_private_uniform_and_unversioned(default_run: ProgramRun) -> None:
    bucket = default_run.one(BUCKET).inputs
    assert bucket["uniformBucketLevelAccess"] is True
    assert bucket["publicAccessPrevention"] == "enforced"
    assert bucket["versioning"] == {"enabled": False}
    assert bucket["forceDestroy"] is False
    assert bucket["location"] == "US" and bucket["project"] == "my-project-1"
    assert bucket["labels"] == {"managed-by": "pulumi", "purpose": "airflow-xcom"}
    assert "encryption" not in bucket


def test_lifecycle_deletes_only_under_the_prefix(default_run: ProgramRun) -> None:
    rules = default_run.one(BUCKET).inputs["lifecycleRules"]
    by_action = {rule["action"]["type"]: rule["condition"] for rule in rules}
    assert by_action["Delete"] == {"age": 30, "matchesPrefixes": ["xcom/"]}
    assert by_action["AbortIncompleteMultipartUpload"] == {"age": 1, "matchesPrefixes": ["xcom/"]}
    no_expiry = run(expiryDays=0).one(BUCKET).inputs["lifecycleRules"]
    assert [rule["action"]["type"] for rule in no_expiry] == ["AbortIncompleteMultipartUpload"]


def test_cmek_and_labels_and_force_destroy() -> None:
    key = "projects/p/locations/us/keyRings/r/cryptoKeys/k"
    bucket = run(kmsKeyName=key, tags="team=data", forceDestroy=True, bucketName="my-xcom_bucket").one(BUCKET).inputs
    assert bucket["encryption"] == {"defaultKmsKeyName": key}
    assert bucket["labels"]["team"] == "data" and bucket["forceDestroy"] is True
    assert bucket["name"] == "my-xcom_bucket"


def test_access_is_one_conditional_binding_on_this_bucket_only(default_run: ProgramRun) -> None:
    bucket = default_run.outputs["bucket_name"]
    binding = default_run.one(BINDING).inputs
    assert binding["bucket"] == bucket
    assert binding["role"] == "roles/storage.objectUser"
    assert binding["member"] == "serviceAccount:airflow-xcom@my-project-1.iam.gserviceaccount.com"
    expression = binding["condition"]["expression"]
    assert f'resource.name.startsWith("projects/_/buckets/{bucket}/objects/xcom/")' in expression
    assert 'api.getAttribute("storage.googleapis.com/objectListPrefix", "").startsWith("xcom/")' in expression
    types = {resource.type for resource in default_run.resources}
    assert not [t for t in types if t.startswith(("gcp:projects/", "gcp:organizations/", "gcp:folder/"))]
    assert types <= {
        "airflow-xcom-backend:gcp:XComStorage",
        "pulumi:providers:gcp",
        BUCKET,
        BINDING,
        "gcp:serviceaccount/account:Account",
        "gcp:serviceaccount/key:Key",
    }


def test_key_mode_env_and_secret(default_run: ProgramRun) -> None:
    outputs = default_run.outputs
    assert "airflow_env" in default_run.secret_outputs
    env = outputs["airflow_env"]
    assert env[contract.PATH_ENV] == f"gs://my_gcp_conn@{outputs['bucket_name']}/xcom"
    connection = Connection.from_json(env["AIRFLOW_CONN_MY_GCP_CONN"], conn_id="my_gcp_conn")
    assert connection.conn_type == "google_cloud_platform"
    keyfile = json.loads(connection.extra_dejson["keyfile_dict"])
    assert keyfile["type"] == "service_account"
    assert connection.extra_dejson["project"] == "my-project-1"
    plain = {k: v for k, v in outputs.items() if k not in default_run.secret_outputs}
    assert keyfile["private_key_id"] not in json.dumps(plain)


def test_workload_identity_grants_the_member_and_emits_no_secret() -> None:
    member = "principal://iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/p/subject/airflow"
    program = run(credentials="workload-identity", workloadIdentityMember=member)
    assert program.one(BINDING).inputs["member"] == member
    assert not program.of_type("gcp:serviceaccount/account:Account")
    assert not program.of_type("gcp:serviceaccount/key:Key")
    connection = json.loads(program.outputs["airflow_env"]["AIRFLOW_CONN_MY_GCP_CONN"])
    assert connection == {"conn_type": "google_cloud_platform", "extra": {"project": "my-project-1"}}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"bucketName": "google-bucket"}, "airflow-xcom-backend:bucketName"),
        ({"location": "moon-base"}, "airflow-xcom-backend:location"),
        ({"credentials": "workload-identity", "workloadIdentityMember": "me"}, "workloadIdentityMember"),
        ({"project": ""}, "airflow-xcom-backend:project"),
    ],
)
def test_bad_settings_stop_the_program_before_any_resource(config: dict, message: str) -> None:
    mocks = RecordingMocks()
    with pytest.raises(pulumi.RunError, match=message):
        run_program({**BASE, **config}, mocks)
    assert mocks.resources == []
