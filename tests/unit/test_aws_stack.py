"""The AWS program under Pulumi's mock runtime: each security property asserted on the declared inputs."""

from __future__ import annotations

import json

import pulumi
import pytest

from emulation.pulumi_runner import ProgramRun, RecordingMocks, destroy_plan, run_program
from xcom_backend import contract

BUCKET = "aws:s3/bucket:Bucket"
POLICY = "aws:iam/policy:Policy"
USER_NAME = "airflow-xcom-backend-dev"  # derived from project and stack (run_program's stack is "dev")
HARDENING = {
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
    "aws:s3/bucketOwnershipControls:BucketOwnershipControls",
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
    "aws:s3/bucketVersioning:BucketVersioning",
    "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration",
    "aws:s3/bucketPolicy:BucketPolicy",
}


def run(**config) -> ProgramRun:
    return run_program(config, RecordingMocks())


@pytest.fixture(scope="module")
def default_run() -> ProgramRun:
    return run()


def statements(program: ProgramRun) -> dict[str, dict]:
    document = json.loads(program.one(POLICY).inputs["policy"])
    assert document["Version"] == "2012-10-17"
    return {statement["Sid"]: statement for statement in document["Statement"]}


def test_bucket_is_private_and_ownership_enforced(default_run: ProgramRun) -> None:
    block = default_run.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock").inputs
    assert {
        k: block[k] for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    } == {
        "blockPublicAcls": True,
        "blockPublicPolicy": True,
        "ignorePublicAcls": True,
        "restrictPublicBuckets": True,
    }
    ownership = default_run.one("aws:s3/bucketOwnershipControls:BucketOwnershipControls").inputs
    assert ownership["rule"] == {"objectOwnership": "BucketOwnerEnforced"}
    bucket = default_run.one(BUCKET).inputs
    assert "acl" not in bucket and "policy" not in bucket


def test_default_encryption_is_sse_s3(default_run: ProgramRun) -> None:
    rules = default_run.one(
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
    ).inputs["rules"]
    assert rules == [{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "AES256"}, "bucketKeyEnabled": False}]


def test_kms_key_gives_sse_kms_and_key_use_in_policy() -> None:
    arn = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    program = run(kmsKeyArn=arn)
    rules = program.one(
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
    ).inputs["rules"]
    assert rules[0]["applyServerSideEncryptionByDefault"] == {"sseAlgorithm": "aws:kms", "kmsMasterKeyId": arn}
    assert rules[0]["bucketKeyEnabled"] is True
    kms = statements(program)["UseBucketKmsKey"]
    assert kms["Action"] == ["kms:GenerateDataKey", "kms:Decrypt"] and kms["Resource"] == [arn]


def test_kms_key_is_usable_only_through_s3_for_this_bucket() -> None:
    arn = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    program = run(kmsKeyArn=arn, region="eu-west-1")
    bucket_arn = f"arn:aws:s3:::{program.outputs['bucket_name']}"
    assert statements(program)["UseBucketKmsKey"]["Condition"] == {
        "StringEquals": {"kms:ViaService": "s3.eu-west-1.amazonaws.com"},
        "StringLike": {"kms:EncryptionContext:aws:s3:arn": [bucket_arn, f"{bucket_arn}/xcom/*"]},
    }


def test_bucket_policy_denies_requests_without_tls(default_run: ProgramRun) -> None:
    bucket_arn = f"arn:aws:s3:::{default_run.outputs['bucket_name']}"
    policy = json.loads(default_run.one("aws:s3/bucketPolicy:BucketPolicy").inputs["policy"])
    (statement,) = policy["Statement"]
    assert statement["Effect"] == "Deny" and statement["Principal"] == "*" and statement["Action"] == "s3:*"
    assert statement["Resource"] == [bucket_arn, f"{bucket_arn}/*"]
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_lifecycle_expires_only_the_prefix_and_aborts_stale_uploads(default_run: ProgramRun) -> None:
    rules = {
        r["id"]: r
        for r in default_run.one("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration").inputs["rules"]
    }
    assert rules["expire-xcom-objects"]["expiration"] == {"days": 30}
    assert rules["expire-xcom-objects"]["filter"] == {"prefix": "xcom/"}
    assert rules["abort-incomplete-xcom-uploads"]["abortIncompleteMultipartUpload"] == {"daysAfterInitiation": 1}
    assert all(rule["status"] == "Enabled" for rule in rules.values())


def test_expiry_zero_turns_expiration_off() -> None:
    rules = run(expiryDays=0).one("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration").inputs["rules"]
    assert [rule["id"] for rule in rules] == ["abort-incomplete-xcom-uploads"]


def test_versioning_off_force_destroy_off_and_tags(default_run: ProgramRun) -> None:
    versioning = default_run.one("aws:s3/bucketVersioning:BucketVersioning").inputs
    assert versioning["versioningConfiguration"] == {"status": "Disabled"}
    bucket = default_run.one(BUCKET).inputs
    assert bucket["forceDestroy"] is False
    assert bucket["tags"] == {"managed-by": "pulumi", "purpose": "airflow-xcom"}
    tagged = run(tags="team=data,env=prod", forceDestroy=True, bucketName="my-xcom-bucket").one(BUCKET).inputs
    assert tagged["tags"]["team"] == "data" and tagged["tags"]["env"] == "prod"
    assert tagged["forceDestroy"] is True and tagged["bucket"] == "my-xcom-bucket"


def test_policy_grants_exactly_object_access_under_the_prefix(default_run: ProgramRun) -> None:
    bucket_arn = f"arn:aws:s3:::{default_run.outputs['bucket_name']}"
    granted = statements(default_run)
    assert set(granted) == {"ReadWriteXComObjects", "ListXComPrefixOnly"}
    objects = granted["ReadWriteXComObjects"]
    assert objects["Effect"] == "Allow"
    assert sorted(objects["Action"]) == ["s3:AbortMultipartUpload", "s3:DeleteObject", "s3:GetObject", "s3:PutObject"]
    assert objects["Resource"] == [f"{bucket_arn}/xcom/*"]
    listing = granted["ListXComPrefixOnly"]
    assert listing["Action"] == ["s3:ListBucket"] and listing["Resource"] == [bucket_arn]
    # Only "xcom/" and below: the bare "xcom" would also list "xcom2/..." and "xcom-x".
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["xcom/*"]}}
    for statement in granted.values():
        assert all("*" not in action for action in statement["Action"]), "no wildcard actions"
        assert all(r.startswith(bucket_arn) for r in statement["Resource"]), "no other buckets"
    assert not {"s3:ReplicateObject", "s3:RestoreObject"} & {a for s in granted.values() for a in s["Action"]}


def test_common_io_backend_also_gets_bucket_location_for_its_mkdir_probe() -> None:
    program = run(backend="common-io")
    assert statements(program)["BucketLocationForMkdirProbe"]["Action"] == ["s3:GetBucketLocation"]
    assert program.outputs["airflow_env"][contract.XCOM_BACKEND_ENV] == contract.COMMON_IO_BACKEND


def test_access_key_mode_user_attachment_and_secret(default_run: ProgramRun) -> None:
    user = default_run.one("aws:iam/user:User").inputs
    assert user["name"] == USER_NAME
    attachment = default_run.one("aws:iam/userPolicyAttachment:UserPolicyAttachment").inputs
    assert attachment == {"user": USER_NAME, "policyArn": default_run.outputs["policy_arn"]}
    assert default_run.one("aws:iam/accessKey:AccessKey").inputs["user"] == USER_NAME
    assert not default_run.of_type("aws:iam/role:Role")


def test_outputs_and_env(default_run: ProgramRun) -> None:
    outputs = default_run.outputs
    bucket = outputs["bucket_name"]
    assert outputs["region"] == "us-east-1"
    assert outputs["user_name"] == USER_NAME
    assert outputs["access_key_id"].startswith("AKIA")
    key_secret = default_run.one("aws:iam/accessKey:AccessKey").outputs["secret"]
    env = outputs["airflow_env"]
    assert env == {
        contract.XCOM_BACKEND_ENV: contract.BUNDLED_BACKEND,
        contract.PATH_ENV: f"s3://my_aws_conn@{bucket}/xcom",
        contract.THRESHOLD_ENV: "1000",
        "AIRFLOW_CONN_MY_AWS_CONN": json.dumps(
            {
                "conn_type": "aws",
                "login": outputs["access_key_id"],
                "password": key_secret,
                "extra": {"region_name": "us-east-1"},
            },
            separators=(",", ":"),
        ),
    }


def test_secrets_are_pulumi_secrets_and_nowhere_else_in_plain_text(default_run: ProgramRun) -> None:
    assert "airflow_env" in default_run.secret_outputs
    key_secret = default_run.one("aws:iam/accessKey:AccessKey").outputs["secret"]
    plain = {k: v for k, v in default_run.outputs.items() if k not in default_run.secret_outputs}
    assert key_secret not in json.dumps(plain)


def test_compression_and_threshold_reach_the_env() -> None:
    env = run(compression="xz", threshold=-1, connectionId="xcom_store", prefix="a/b").outputs["airflow_env"]
    assert env[contract.COMPRESSION_ENV] == "xz"
    assert env[contract.THRESHOLD_ENV] == "-1"
    assert env[contract.PATH_ENV].startswith("s3://xcom_store@") and env[contract.PATH_ENV].endswith("/a/b")
    assert "AIRFLOW_CONN_XCOM_STORE" in env


def test_role_mode_trusts_the_principal_and_emits_no_secret() -> None:
    principal = "arn:aws:iam::210987654321:role/astro-workload"
    program = run(credentials="role", roleTrustPrincipalArn=principal, roleName="xcom-role")
    role = program.one("aws:iam/role:Role").inputs
    trust = json.loads(role["assumeRolePolicy"])
    assert trust["Statement"] == [{"Effect": "Allow", "Principal": {"AWS": principal}, "Action": "sts:AssumeRole"}]
    assert program.one("aws:iam/rolePolicyAttachment:RolePolicyAttachment").inputs["role"] == "xcom-role"
    assert not program.of_type("aws:iam/user:User") and not program.of_type("aws:iam/accessKey:AccessKey")
    connection = json.loads(program.outputs["airflow_env"]["AIRFLOW_CONN_MY_AWS_CONN"])
    assert connection == {
        "conn_type": "aws",
        "extra": {"region_name": "us-east-1", "role_arn": program.outputs["role_arn"]},
    }
    assert "access_key_id" not in program.outputs


def test_region_setting_goes_to_every_regional_resource_and_the_connection() -> None:
    program = run(region="eu-central-1")
    for resource in program.resources:
        if resource.type.startswith("aws:s3/"):
            assert resource.inputs["region"] == "eu-central-1", resource.type
    assert (
        json.loads(program.outputs["airflow_env"]["AIRFLOW_CONN_MY_AWS_CONN"])["extra"]["region_name"] == "eu-central-1"
    )


def test_the_stacks_aws_provider_config_reaches_every_resource() -> None:
    """aws:profile, aws:region (and assumeRoles, defaultTags, ESC credentials) set in the stack file apply.

    An explicit aws.Provider is configured from its own arguments only, so it would drop them and deploy
    with whatever the environment holds (pulumi-aws #1307, #3259).
    """
    stack_file = {"aws:region": "eu-west-1", "aws:profile": "prod-admin", "aws:defaultTags": {"tags": {"cc": "42"}}}
    program = run_program({}, RecordingMocks(), provider_config=stack_file)
    aws_resources = [r for r in program.resources if r.type.startswith("aws:")]
    assert len(aws_resources) >= 10
    for resource in aws_resources:
        config = program.provider_config(resource)
        assert config["profile"] == "prod-admin" and config["region"] == "eu-west-1", resource.type
        assert json.loads(config["defaultTags"]) == {"tags": {"cc": "42"}}
    assert not program.of_type("pulumi:providers:aws")
    assert program.one(BUCKET).inputs["region"] == "eu-west-1"
    connection = json.loads(program.outputs["airflow_env"]["AIRFLOW_CONN_MY_AWS_CONN"])
    assert connection["extra"]["region_name"] == "eu-west-1" and program.outputs["region"] == "eu-west-1"


def test_a_refused_destroy_leaves_the_bucket_as_hardened_as_before(default_run: ProgramRun) -> None:
    """forceDestroy=false: the bucket delete fails while it holds XComs, so nothing protecting it may go first."""
    plan = destroy_plan(default_run.resources)
    bucket_step = next(i for i, (resource, _) in enumerate(plan) if resource.type == BUCKET)
    assert plan[bucket_step][1] == "delete"
    deleted_first = [resource.type for resource, action in plan[:bucket_step] if action == "delete"]
    assert not HARDENING & set(deleted_first), deleted_first
    skipped = {resource.type for resource, action in plan if action.startswith("skip: deleted with")}
    assert skipped == HARDENING  # and they go with the bucket when it is deleted


def test_two_stacks_get_their_own_principal_names() -> None:
    dev = run_program({}, RecordingMocks(), stack="dev").one("aws:iam/user:User").inputs["name"]
    prod = run_program({}, RecordingMocks(), stack="prod").one("aws:iam/user:User").inputs["name"]
    assert (dev, prod) == ("airflow-xcom-backend-dev", "airflow-xcom-backend-prod")
    role = run_program(
        {"credentials": "role", "roleTrustPrincipalArn": "arn:aws:iam::210987654321:role/x"},
        RecordingMocks(),
        stack="qa",
    )
    assert role.one("aws:iam/role:Role").inputs["name"] == "airflow-xcom-backend-qa"
    assert run(userName="my-user").one("aws:iam/user:User").inputs["name"] == "my-user"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"bucketName": "Bad_Name"}, "airflow-xcom-backend:bucketName"),
        ({"threshold": "-7"}, "airflow-xcom-backend:threshold"),
        ({"compression": "brotli"}, "airflow-xcom-backend:compression"),
        ({"prefix": "../x"}, "airflow-xcom-backend:prefix"),
        ({"cloud": "ibm"}, "airflow-xcom-backend:cloud"),
    ],
)
def test_bad_settings_stop_the_program_before_any_resource(config: dict, message: str) -> None:
    mocks = RecordingMocks()
    with pytest.raises(pulumi.RunError, match=message):
        run_program(config, mocks)
    assert mocks.resources == []
