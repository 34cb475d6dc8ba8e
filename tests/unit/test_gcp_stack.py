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
    assert binding["member"] == "serviceAccount:airflow-xcom-backend-dev@my-project-1.iam.gserviceaccount.com"
    assert "condition" in binding
    expression = binding["condition"]["expression"]
    assert f'resource.name.startsWith("projects/_/buckets/{bucket}/objects/xcom/")' in expression
    assert 'api.getAttribute("storage.googleapis.com/objectListPrefix", "").startsWith("xcom/")' in expression
    types = {resource.type for resource in default_run.resources}
    assert not [t for t in types if t.startswith(("gcp:projects/", "gcp:organizations/", "gcp:folder/"))]
    assert types <= {
        "airflow-xcom-backend:gcp:XComStorage",
        BUCKET,
        BINDING,
        "gcp:serviceaccount/account:Account",
        "gcp:serviceaccount/key:Key",
    }


def test_common_io_also_gets_bucket_metadata_read_unconditioned_on_this_bucket_only() -> None:
    """common-io's mkdir(parents=True) reads the bucket (storage.buckets.get), which objectUser lacks."""
    program = run(backend="common-io")
    bindings = {b.inputs["role"]: b.inputs for b in program.of_type(BINDING)}
    assert set(bindings) == {"roles/storage.objectUser", "roles/storage.bucketViewer"}
    metadata = bindings["roles/storage.bucketViewer"]
    assert metadata["bucket"] == program.outputs["bucket_name"]
    assert metadata["member"] == bindings["roles/storage.objectUser"]["member"]
    assert "condition" not in metadata
    assert [b.inputs["role"] for b in run().of_type(BINDING)] == ["roles/storage.objectUser"]


def test_soft_delete_is_off_unless_asked_for(default_run: ProgramRun) -> None:
    assert default_run.one(BUCKET).inputs["softDeletePolicy"] == {"retentionDurationSeconds": 0}
    kept = run(softDeleteDays=7).one(BUCKET).inputs["softDeletePolicy"]
    assert kept == {"retentionDurationSeconds": 7 * 86400}


def test_descriptions_stay_within_gcps_256_byte_limit_with_a_long_prefix() -> None:
    prefix = "/".join(["segment-of-a-long-xcom-prefix"] * 8)
    program = run(prefix=prefix)
    account = program.one("gcp:serviceaccount/account:Account").inputs
    condition = program.one(BINDING).inputs["condition"]
    assert len(account["description"].encode()) <= 256
    assert len(condition["description"].encode()) <= 256
    assert f'startsWith("{prefix}/")' in condition["expression"]
    short = run().one(BINDING).inputs["condition"]["description"]
    assert "xcom/" in short


def test_the_stacks_gcp_provider_config_reaches_every_resource() -> None:
    stack_file = {
        "gcp:project": "from-stack-file",
        "gcp:impersonateServiceAccount": "deployer@p.iam.gserviceaccount.com",
    }
    program = run_program({"cloud": "gcp"}, RecordingMocks(), provider_config=stack_file)
    gcp_resources = [r for r in program.resources if r.type.startswith("gcp:")]
    assert len(gcp_resources) == 4
    for resource in gcp_resources:
        config = program.provider_config(resource)
        assert config["impersonateServiceAccount"] == "deployer@p.iam.gserviceaccount.com", resource.type
    assert not program.of_type("pulumi:providers:gcp")
    assert program.one(BUCKET).inputs["project"] == "from-stack-file"
    assert program.outputs["project"] == "from-stack-file"


def test_two_stacks_get_their_own_service_account_ids() -> None:
    def account_id(stack: str) -> str:
        program = run_program(BASE, RecordingMocks(), stack=stack)
        return program.one("gcp:serviceaccount/account:Account").inputs["accountId"]

    assert (account_id("dev"), account_id("prod")) == ("airflow-xcom-backend-dev", "airflow-xcom-backend-prod")
    long_ids = {account_id("production-europe-west"), account_id("production-europe-east")}
    assert len(long_ids) == 2 and all(6 <= len(i) <= 30 for i in long_ids), long_ids
    assert run(serviceAccountId="my-xcom-sa").one("gcp:serviceaccount/account:Account").inputs["accountId"] == (
        "my-xcom-sa"
    )


def test_key_mode_env_and_secret(default_run: ProgramRun) -> None:
    outputs = default_run.outputs
    assert "airflow_env" in default_run.secret_outputs
    env = outputs["airflow_env"]
    assert env[contract.PATH_ENV] == f"gs://my_gcp_conn@{outputs['bucket_name']}/xcom"
    # gcsfs then uses its plain class: no Storage Control layout call (denied by the binding) per operation.
    assert env["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] == "false"
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
