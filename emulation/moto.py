"""An S3 + IAM emulator (moto server on 127.0.0.1, IAM enforced) and Pulumi mocks that deploy into it.

moto ignores IAM policy Conditions; ``with_conditions`` puts emulation.s3_conditions in front of it, which
evaluates them for S3 listings (``s3:prefix``) and direct KMS calls. What stays unshown (see README, "What
the tests prove"): moto checks DeleteObjects against the bucket ARN, and does not evaluate Conditions on
bucket-policy Deny statements, so the TLS-only bucket policy (which would block its plain-http endpoint
outright) is recorded, not applied.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pulumi

from emulation.processes import EmulatorProcess, emulator_process, free_port, module_command
from emulation.pulumi_runner import EmulatorMocks, auto_name
from emulation.s3_conditions import ConditionProxy, condition_proxy

REGION = "us-east-1"
ADMIN_USER = "emulator-admin"


@dataclass
class MotoServer:
    """A moto server subprocess; ``admin_key`` has full rights once IAM enforcement is on."""

    emulator: EmulatorProcess
    admin_key: tuple[str, str] | None = None
    conditions: ConditionProxy | None = None  # set on the view with_conditions() returns
    endpoint_override: str | None = None

    @property
    def endpoint(self) -> str:
        return self.endpoint_override or self.emulator.endpoint

    @property
    def client_env(self) -> dict[str, str]:
        return {}

    def set_enforcement(self, on: bool) -> None:
        # text/plain: with urllib's default form content type the server sees an empty body.
        request = urllib.request.Request(  # noqa: S310 (loopback only)
            f"{self.endpoint}/moto-api/reset-auth",
            data=b"0" if on else b"inf",
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            response.read()

    def client(self, service: str, key: tuple[str, str] | None = None) -> Any:
        key_id, secret = key or self.admin_key or ("testing", "testing")
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
        )


@contextlib.contextmanager
def moto_server(log_dir: Path, *, enforce_iam: bool = True, stock: bool = False) -> Iterator[MotoServer]:
    """Start moto on a free loopback port; with IAM enforced, only signed and allowed requests pass. Its ranged
    GETs read only their range (emulation/moto_fast.py) unless ``stock``."""
    port = free_port()
    module = "moto.server" if stock else "emulation.moto_fast"
    command, env = module_command(module, "-H", "127.0.0.1", "-p", str(port))
    env.update(INITIAL_NO_AUTH_ACTION_COUNT="inf", MOTO_ALLOW_NONEXISTENT_REGION="false")
    with emulator_process("moto", command, log_dir, port, "/moto-api/", env) as emulator:
        server = MotoServer(emulator)
        iam = server.client("iam")
        iam.create_user(UserName=ADMIN_USER)
        iam.put_user_policy(
            UserName=ADMIN_USER,
            PolicyName="full-access",
            PolicyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
            ),
        )
        created = iam.create_access_key(UserName=ADMIN_USER)["AccessKey"]
        server.admin_key = (created["AccessKeyId"], created["SecretAccessKey"])
        if enforce_iam:
            server.set_enforcement(True)
        yield server


@contextlib.contextmanager
def with_conditions(server: MotoServer) -> Iterator[MotoServer]:
    """A view of ``server`` whose endpoint evaluates IAM policy Conditions before moto sees the request."""
    direct = dataclasses.replace(server, endpoint_override=server.emulator.endpoint)
    with condition_proxy(server.emulator.endpoint, direct.client("iam"), direct.client("kms")) as (endpoint, state):
        yield dataclasses.replace(server, endpoint_override=endpoint, conditions=state)


class MotoMocks(EmulatorMocks):
    """Pulumi mocks whose resource hooks create each declared setting in moto and return its real ids."""

    def deploy(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        handler = getattr(self, "_create_" + args.typ.split(":")[-1], None)
        return handler(args.name, dict(args.inputs)) if handler else self.compute(args)

    # --- S3 -----------------------------------------------------------------------------------------
    def _create_Bucket(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        s3 = self.server.client("s3")
        bucket = inputs.get("bucket") or auto_name(name)
        s3.create_bucket(Bucket=bucket)
        if tags := inputs.get("tags"):
            s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in tags.items()]})
        self._deployed("s3 bucket", bucket, lambda: self._delete_bucket(bucket, inputs))
        return bucket, {**inputs, "bucket": bucket, "arn": f"arn:aws:s3:::{bucket}", "region": REGION}

    def _delete_bucket(self, bucket: str, inputs: dict[str, Any]) -> None:
        s3 = self.server.client("s3")
        if inputs.get("forceDestroy"):
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                for item in page.get("Contents", []):
                    s3.delete_object(Bucket=bucket, Key=item["Key"])
        s3.delete_bucket(Bucket=bucket)  # fails with BucketNotEmpty otherwise, as on AWS

    def _create_BucketPublicAccessBlock(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        flags = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")
        config = {flag: bool(inputs.get(flag[0].lower() + flag[1:])) for flag in flags}
        s3, bucket = self.server.client("s3"), inputs["bucket"]
        s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=config)
        self._deployed("public access block", bucket, lambda: s3.delete_public_access_block(Bucket=bucket))
        return bucket, inputs

    def _create_BucketOwnershipControls(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        ownership = inputs["rule"]["objectOwnership"]
        s3, bucket = self.server.client("s3"), inputs["bucket"]
        s3.put_bucket_ownership_controls(Bucket=bucket, OwnershipControls={"Rules": [{"ObjectOwnership": ownership}]})
        self._deployed(
            f"ownership controls ({ownership})", bucket, lambda: s3.delete_bucket_ownership_controls(Bucket=bucket)
        )
        return bucket, inputs

    def _create_BucketServerSideEncryptionConfiguration(
        self, name: str, inputs: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        rules = []
        for rule in inputs["rules"]:
            default = rule["applyServerSideEncryptionByDefault"]
            translated: dict[str, Any] = {"SSEAlgorithm": default["sseAlgorithm"]}
            if default.get("kmsMasterKeyId"):
                translated["KMSMasterKeyID"] = default["kmsMasterKeyId"]
            rules.append(
                {
                    "ApplyServerSideEncryptionByDefault": translated,
                    "BucketKeyEnabled": bool(rule.get("bucketKeyEnabled")),
                }
            )
        s3, bucket = self.server.client("s3"), inputs["bucket"]
        s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": rules})
        algorithm = rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"]
        self._deployed(f"default encryption ({algorithm})", bucket, lambda: s3.delete_bucket_encryption(Bucket=bucket))
        return bucket, inputs

    def _create_BucketVersioning(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        status = inputs["versioningConfiguration"]["status"]
        if status != "Disabled":  # "Disabled" means: never enable it, which a new bucket already is
            self.server.client("s3").put_bucket_versioning(
                Bucket=inputs["bucket"], VersioningConfiguration={"Status": status}
            )
        return inputs["bucket"], inputs

    def _create_BucketLifecycleConfiguration(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        rules = []
        for rule in inputs["rules"]:
            translated: dict[str, Any] = {
                "ID": rule["id"],
                "Status": rule["status"],
                "Filter": {"Prefix": rule["filter"]["prefix"]},
            }
            if "expiration" in rule:
                translated["Expiration"] = {"Days": int(rule["expiration"]["days"])}
            if "abortIncompleteMultipartUpload" in rule:
                days = int(rule["abortIncompleteMultipartUpload"]["daysAfterInitiation"])
                translated["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": days}
            rules.append(translated)
        s3, bucket = self.server.client("s3"), inputs["bucket"]
        s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": rules})
        names = ", ".join(rule["ID"] for rule in rules)
        self._deployed(f"lifecycle rules ({names})", bucket, lambda: s3.delete_bucket_lifecycle(Bucket=bucket))
        return bucket, inputs

    def _create_BucketPolicy(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        # moto ignores the aws:SecureTransport condition on a Deny, so applying the TLS-only policy would deny
        # every request to its plain-http endpoint. Recorded (and asserted by the unit tests), not applied.
        self.skipped.append(f"bucket policy {name} (TLS-only deny): moto cannot evaluate aws:SecureTransport")
        return inputs["bucket"], inputs

    # --- IAM ----------------------------------------------------------------------------------------
    def _create_Policy(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        iam = self.server.client("iam")
        policy_name = inputs.get("name") or auto_name(name)
        arn = iam.create_policy(
            PolicyName=policy_name, PolicyDocument=inputs["policy"], Description=inputs.get("description", "")
        )["Policy"]["Arn"]
        self._deployed("iam policy", arn, lambda: iam.delete_policy(PolicyArn=arn))
        return arn, {**inputs, "name": policy_name, "arn": arn}

    def _create_User(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        iam = self.server.client("iam")
        user_name = inputs.get("name") or auto_name(name)
        user = iam.create_user(UserName=user_name)["User"]
        self._deployed("iam user", user_name, lambda: iam.delete_user(UserName=user_name))
        return user_name, {**inputs, "name": user_name, "arn": user["Arn"]}

    def _create_UserPolicyAttachment(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return self._attach("user", inputs["user"], inputs["policyArn"]), inputs

    def _create_RolePolicyAttachment(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return self._attach("role", inputs["role"], inputs["policyArn"]), inputs

    def _attach(self, kind: str, principal: str, policy_arn: str) -> str:
        """Attach a managed policy to a user or role, and register its detachment for teardown."""
        iam = self.server.client("iam")
        name_arg = {"user": "UserName", "role": "RoleName"}[kind]
        getattr(iam, f"attach_{kind}_policy")(**{name_arg: principal}, PolicyArn=policy_arn)
        detach = getattr(iam, f"detach_{kind}_policy")
        self._deployed(
            "policy attachment",
            f"{principal}->{policy_arn}",
            lambda: detach(**{name_arg: principal}, PolicyArn=policy_arn),
        )
        return f"{principal}-{policy_arn.rsplit('/', 1)[-1]}"

    def _create_AccessKey(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        iam = self.server.client("iam")
        user = inputs["user"]
        key = iam.create_access_key(UserName=user)["AccessKey"]
        key_id = key["AccessKeyId"]
        self._deployed("access key", key_id, lambda: iam.delete_access_key(UserName=user, AccessKeyId=key_id))
        created = key["CreateDate"].strftime("%Y-%m-%dT%H:%M:%SZ")
        return key_id, {**inputs, "id": key_id, "secret": key["SecretAccessKey"], "createDate": created}

    def _create_Role(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        iam = self.server.client("iam")
        role_name = inputs.get("name") or auto_name(name)
        role = iam.create_role(RoleName=role_name, AssumeRolePolicyDocument=inputs["assumeRolePolicy"])["Role"]
        self._deployed("iam role", role_name, lambda: iam.delete_role(RoleName=role_name))
        return role_name, {**inputs, "name": role_name, "arn": role["Arn"]}
