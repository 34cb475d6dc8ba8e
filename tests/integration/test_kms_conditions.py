"""SSE-KMS: the emitted key may use the bucket's KMS key only through S3, never by calling KMS itself.

moto ignores Conditions, so the calls go through emulation.s3_conditions, which evaluates the policy's
``kms:ViaService`` and encryption-context conditions. moto itself checks KMS actions against resource ``*``
(not the key ARN) and so refuses these calls whatever the policy says; the test therefore asserts the
policy evaluation's own verdict. What it cannot show: S3 calling KMS on the key's behalf (moto's S3 never
calls KMS), which AWS allows because the request then carries ``kms:ViaService = s3.<region>.amazonaws.com``;
the second test evaluates the deployed policy for exactly that request.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from botocore.exceptions import ClientError

from emulation.moto import MotoServer
from emulation.s3_conditions import Request, allowed
from tests.conftest import DeployedStack, deploy

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def kms_stack(moto_conditions: MotoServer) -> Iterator[tuple[DeployedStack, str]]:
    key_arn = moto_conditions.client("kms").create_key(Description="xcom bucket key")["KeyMetadata"]["Arn"]
    stack = deploy(moto_conditions, stack="kms", kmsKeyArn=key_arn)
    yield stack, key_arn
    stack.mocks.destroy()


def test_the_key_cannot_call_kms_directly(kms_stack: tuple[DeployedStack, str]) -> None:
    stack, key_arn = kms_stack
    kms, context = stack.client("kms"), {"aws:s3:arn": f"arn:aws:s3:::{stack.bucket}"}
    decisions = stack.server.conditions.decisions
    for action, call in (
        ("kms:GenerateDataKey", lambda: kms.generate_data_key(KeyId=key_arn, KeySpec="AES_256")),
        (
            "kms:GenerateDataKey",
            lambda: kms.generate_data_key(KeyId=key_arn, KeySpec="AES_256", EncryptionContext=context),
        ),
        ("kms:Decrypt", lambda: kms.decrypt(CiphertextBlob=b"x" * 64, KeyId=key_arn, EncryptionContext=context)),
    ):
        before = len(decisions)
        with pytest.raises(ClientError):
            call()
        ((key_id, request, verdict),) = decisions[before:]
        assert (key_id, request.action, request.resource) == (stack.key[0], action, key_arn)
        assert verdict is False, f"the deployed policy allows {action} on the key outside S3"


def test_the_policy_allows_the_request_s3_makes_for_this_bucket(kms_stack: tuple[DeployedStack, str]) -> None:
    """Evaluated on the deployed policy document: what S3 sends on the key's behalf, per AWS's docs."""
    stack, key_arn = kms_stack
    iam = stack.server.conditions.iam
    policies = stack.server.conditions.policies_of(stack.key[0])
    assert policies and iam
    via_s3 = {"kms:ViaService": "s3.us-east-1.amazonaws.com", "kms:EncryptionContext:aws:s3:arn": ""}
    for arn, expected in (
        (f"arn:aws:s3:::{stack.bucket}", True),  # S3 Bucket Keys: the bucket ARN
        (f"arn:aws:s3:::{stack.bucket}/xcom/d/r/t/x.json", True),  # without Bucket Keys: the object ARN
        ("arn:aws:s3:::another-bucket", False),
    ):
        context = {**via_s3, "kms:EncryptionContext:aws:s3:arn": arn}
        assert allowed(policies, Request("kms:GenerateDataKey", key_arn, context)) is expected, arn
    other_region = {**via_s3, "kms:ViaService": "s3.eu-west-1.amazonaws.com"}
    other_region["kms:EncryptionContext:aws:s3:arn"] = f"arn:aws:s3:::{stack.bucket}"
    assert not allowed(policies, Request("kms:Decrypt", key_arn, other_region))
