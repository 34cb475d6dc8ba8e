"""credentials=role in the emulator: the role trusts only the given principal and carries the same policy."""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.exceptions import ClientError

from emulation.moto import ADMIN_USER
from tests.conftest import deploy

pytestmark = pytest.mark.integration

ACCOUNT = "123456789012"  # moto's default account


@pytest.fixture(scope="module")
def role_stack(moto):
    stack = deploy(
        moto,
        credentials="role",
        roleTrustPrincipalArn=f"arn:aws:iam::{ACCOUNT}:user/{ADMIN_USER}",
        roleName="xcom-role-test",
        prefix="airflow/xcom",
    )
    yield stack
    stack.mocks.destroy()


def test_connection_carries_the_role_and_no_secret(role_stack) -> None:
    connection = role_stack.connection
    assert "password" not in connection and "login" not in connection
    assert connection["extra"]["role_arn"] == role_stack.run.outputs["role_arn"]
    assert connection["extra"]["role_arn"].endswith(":role/xcom-role-test")


def test_assumed_role_can_use_only_the_prefix(role_stack) -> None:
    server, bucket = role_stack.server, role_stack.bucket
    credentials = server.client("sts").assume_role(
        RoleArn=role_stack.run.outputs["role_arn"], RoleSessionName="airflow-worker"
    )["Credentials"]
    s3 = boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        region_name="us-east-1",
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    )
    s3.put_object(Bucket=bucket, Key="airflow/xcom/d/r/t/x.json", Body=b"{}")
    assert json.loads(s3.get_object(Bucket=bucket, Key="airflow/xcom/d/r/t/x.json")["Body"].read()) == {}
    for key in ("airflow/other.json", "xcom/x.json"):
        with pytest.raises(ClientError) as caught:
            s3.put_object(Bucket=bucket, Key=key, Body=b"{}")
        assert caught.value.response["Error"]["Code"] == "AccessDenied"


def test_trust_policy_names_only_the_principal(role_stack) -> None:
    role = role_stack.server.client("iam").get_role(RoleName="xcom-role-test")["Role"]
    statements = role["AssumeRolePolicyDocument"]["Statement"]
    assert [s["Principal"] for s in statements] == [{"AWS": f"arn:aws:iam::{ACCOUNT}:user/{ADMIN_USER}"}]
    attached = role_stack.server.client("iam").list_attached_role_policies(RoleName="xcom-role-test")
    assert [p["PolicyArn"] for p in attached["AttachedPolicies"]] == [role_stack.run.outputs["policy_arn"]]
