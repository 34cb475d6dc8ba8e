"""The emitted key against moto with IAM enforced: what the backend needs passes, the rest is denied.

The stack is deployed behind emulation.s3_conditions, which evaluates the policy's ``s3:prefix`` condition
on listings (moto ignores Conditions). What this still cannot check (real AWS differs), so no test claims it:
- DeleteObjects (multi-delete) is checked against the bucket ARN and reports per-key AccessDenied;
- Conditions on bucket-policy Deny statements are not evaluated, so the TLS-only deny is not applied;
- 403-instead-of-404 for a missing object without an unconditional ListBucket grant.
"""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError

from emulation.moto import MotoServer
from tests.conftest import DeployedStack, deploy

pytestmark = pytest.mark.integration

OTHER_BUCKET = "some-other-bucket"


@pytest.fixture(scope="module")
def aws_stack(moto_conditions: MotoServer) -> DeployedStack:
    """The stack deployed behind the condition-evaluating endpoint (its connection points there)."""
    stack = deploy(moto_conditions, stack="least-privilege")
    yield stack
    stack.mocks.destroy()


@pytest.fixture(scope="module")
def other_bucket(aws_stack: DeployedStack) -> str:
    admin = aws_stack.server.client("s3")
    admin.create_bucket(Bucket=OTHER_BUCKET)
    admin.put_object(Bucket=OTHER_BUCKET, Key="xcom/secret.json", Body=b"{}")
    admin.put_object(Bucket=aws_stack.bucket, Key="other/admin-only.json", Body=b"{}")
    return OTHER_BUCKET


def allowed_operations(stack: DeployedStack):
    s3, bucket = stack.client("s3"), stack.bucket

    def multipart_then_abort() -> None:
        upload = s3.create_multipart_upload(Bucket=bucket, Key="xcom/mp.json")
        s3.upload_part(Bucket=bucket, Key="xcom/mp.json", UploadId=upload["UploadId"], PartNumber=1, Body=b"x")
        s3.abort_multipart_upload(Bucket=bucket, Key="xcom/mp.json", UploadId=upload["UploadId"])

    return {
        "put object under prefix": lambda: s3.put_object(Bucket=bucket, Key="xcom/d/r/t/a.json", Body=b"{}"),
        "head object under prefix": lambda: s3.head_object(Bucket=bucket, Key="xcom/d/r/t/a.json"),
        "get object under prefix": lambda: s3.get_object(Bucket=bucket, Key="xcom/d/r/t/a.json")["Body"].read(),
        "list the prefix": lambda: s3.list_objects_v2(Bucket=bucket, Prefix="xcom/"),
        "multipart upload + abort under prefix": multipart_then_abort,
        "delete object under prefix": lambda: s3.delete_object(Bucket=bucket, Key="xcom/d/r/t/a.json"),
    }


def denied_operations(stack: DeployedStack, other: str):
    s3, iam, bucket = stack.client("s3"), stack.client("iam"), stack.bucket
    arn, user = f"arn:aws:s3:::{bucket}", stack.run.outputs["user_name"]
    return {
        "put object outside prefix": lambda: s3.put_object(Bucket=bucket, Key="other/x.json", Body=b"{}"),
        "put object at bucket root": lambda: s3.put_object(Bucket=bucket, Key="x.json", Body=b"{}"),
        "put object into a look-alike prefix": lambda: s3.put_object(Bucket=bucket, Key="xcom2/x.json", Body=b"{}"),
        "get object outside prefix": lambda: s3.get_object(Bucket=bucket, Key="other/admin-only.json"),
        "delete object outside prefix": lambda: s3.delete_object(Bucket=bucket, Key="other/admin-only.json"),
        "get object in another bucket": lambda: s3.get_object(Bucket=other, Key="xcom/secret.json"),
        "put object in another bucket": lambda: s3.put_object(Bucket=other, Key="xcom/x.json", Body=b"{}"),
        "list another bucket": lambda: s3.list_objects_v2(Bucket=other, Prefix="xcom/"),
        "list the bare prefix (also lists xcom2/, xcom-x)": lambda: s3.list_objects_v2(Bucket=bucket, Prefix="xcom"),
        "list a look-alike prefix": lambda: s3.list_objects_v2(Bucket=bucket, Prefix="xcom2/"),
        "list another prefix": lambda: s3.list_objects_v2(Bucket=bucket, Prefix="other/"),
        "list the whole bucket": lambda: s3.list_objects_v2(Bucket=bucket),
        "list all buckets": lambda: s3.list_buckets(),
        "create a bucket": lambda: s3.create_bucket(Bucket="attacker-bucket"),
        "delete the bucket": lambda: s3.delete_bucket(Bucket=bucket),
        "replace the bucket policy": lambda: s3.put_bucket_policy(
            Bucket=bucket,
            Policy=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": f"{arn}/*"}
                    ],
                }
            ),
        ),
        "remove the public access block": lambda: s3.delete_public_access_block(Bucket=bucket),
        "remove default encryption": lambda: s3.delete_bucket_encryption(Bucket=bucket),
        "change the lifecycle rules": lambda: s3.delete_bucket_lifecycle(Bucket=bucket),
        "enable versioning": lambda: s3.put_bucket_versioning(
            Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}
        ),
        "read the bucket ACL": lambda: s3.get_bucket_acl(Bucket=bucket),
        "iam: list users": lambda: iam.list_users(),
        "iam: create another access key": lambda: iam.create_access_key(UserName=user),
        "iam: attach admin policy to itself": lambda: iam.attach_user_policy(
            UserName=user, PolicyArn="arn:aws:iam::aws:policy/AdministratorAccess"
        ),
        "iam: create a user": lambda: iam.create_user(UserName="backdoor"),
    }


@pytest.mark.reliability
def test_every_operation_the_backend_needs_is_allowed(aws_stack: DeployedStack, figures) -> None:
    failures = {}
    for name, operation in allowed_operations(aws_stack).items():
        try:
            operation()
        except ClientError as err:
            failures[name] = err.response["Error"]["Code"]
    figures.append(
        {
            "area": "least privilege (aws)",
            "case": "operations the backend needs: allowed",
            "tried": len(allowed_operations(aws_stack)),
            "failed": len(failures),
        }
    )
    assert failures == {}


@pytest.mark.reliability
def test_everything_else_is_denied(aws_stack: DeployedStack, other_bucket: str, figures) -> None:
    operations = denied_operations(aws_stack, other_bucket)
    assert len(operations) >= 15
    allowed = []
    for name, operation in operations.items():
        try:
            operation()
            allowed.append(name)
        except ClientError as err:
            assert err.response["Error"]["Code"] in ("AccessDenied", "AccessDeniedException"), (name, err)
    figures.append(
        {
            "area": "least privilege (aws)",
            "case": "other prefixes/buckets, bucket config, IAM: denied",
            "tried": len(operations),
            "failed": len(allowed),
        }
    )
    assert allowed == [], f"should have been denied: {allowed}"


def test_a_key_moto_does_not_know_is_rejected(aws_stack: DeployedStack) -> None:
    s3 = aws_stack.server.client("s3", ("AKIAUNKNOWN000000000", "nope"))
    with pytest.raises(ClientError) as caught:
        s3.put_object(Bucket=aws_stack.bucket, Key="xcom/x.json", Body=b"{}")
    assert caught.value.response["Error"]["Code"] == "InvalidAccessKeyId"


def test_bucket_settings_are_applied_in_the_emulator(aws_stack: DeployedStack) -> None:
    admin, bucket = aws_stack.server.client("s3"), aws_stack.bucket
    assert all(admin.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"].values())
    rules = admin.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"]["Rules"]
    assert rules == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    sse = admin.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert sse["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    lifecycle = {r["ID"]: r for r in admin.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
    assert lifecycle["expire-xcom-objects"]["Expiration"] == {"Days": 30}
    assert "Status" not in admin.get_bucket_versioning(Bucket=bucket)
    assert any("TLS-only" in note for note in aws_stack.mocks.skipped)
