"""Deploying next to another stack, and a refused destroy, against moto with IAM enforced."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from emulation.moto import MotoServer
from tests.conftest import deploy

pytestmark = pytest.mark.integration


def test_two_stacks_deploy_side_by_side_in_one_account(moto: MotoServer) -> None:
    """IAM user names are unique per account: dev and prod must not both want `airflow-xcom`."""
    dev = deploy(moto, stack="dev")
    try:
        prod = deploy(moto, stack="prod")
        try:
            users = {dev.run.outputs["user_name"], prod.run.outputs["user_name"]}
            assert users == {"airflow-xcom-backend-dev", "airflow-xcom-backend-prod"}
            for stack in (dev, prod):
                stack.client().put_object(Bucket=stack.bucket, Key="xcom/x.json", Body=b"{}")
            with pytest.raises(ClientError):  # each key is limited to its own stack's bucket
                dev.client().put_object(Bucket=prod.bucket, Key="xcom/x.json", Body=b"{}")
        finally:
            prod.mocks.destroy()
    finally:
        dev.mocks.destroy()


def test_a_refused_destroy_leaves_the_bucket_as_hardened_as_before(moto: MotoServer) -> None:
    """forceDestroy=false and XComs in the bucket: the destroy stops at the bucket with its protections on."""
    stack = deploy(moto, stack="refused-destroy", forceDestroy=False, expiryDays=5)
    admin, bucket = moto.client("s3"), stack.bucket
    stack.client().put_object(Bucket=bucket, Key="xcom/d/r/t/x.json", Body=b"{}")
    with pytest.raises(ClientError) as caught:
        stack.mocks.destroy()
    assert caught.value.response["Error"]["Code"] == "BucketNotEmpty"

    assert all(admin.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"].values())
    ownership = admin.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"]["Rules"]
    assert ownership == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    sse = admin.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert sse["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    rules = {r["ID"] for r in admin.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
    assert rules == {"expire-xcom-objects", "abort-incomplete-xcom-uploads"}

    admin.delete_object(Bucket=bucket, Key="xcom/d/r/t/x.json")  # emptied: the next destroy goes through
    stack.mocks.destroy()
    with pytest.raises(ClientError):
        admin.head_bucket(Bucket=bucket)
