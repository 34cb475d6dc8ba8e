"""AWS: a private, encrypted, TLS-only S3 bucket and a credential limited to its XCom prefix."""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pulumi_aws as aws

from xcom_backend import contract
from xcom_backend.pulumi.env_outputs import airflow_env_outputs, credential_info, stack_outputs
from xcom_backend.pulumi.settings import (
    AWS_IAM_NAME_MAX,
    DEPLOYMENT_PLACEHOLDER,
    Settings,
    credential_generations,
    deployment_name,
    generation_name,
)

BASE_TAGS = {"managed-by": "pulumi", "purpose": "airflow-xcom"}
POLICY_NAME = "AirflowXComBackendAWSS3"  # the tutorial's name; Pulumi appends a suffix so stacks never collide


def xcom_access_policy(
    bucket_arn: str,
    prefix: str,
    *,
    region: str = "us-east-1",
    kms_key_arn: str | None = None,
    bucket_location: bool = False,
) -> dict[str, Any]:
    """The least-privilege IAM policy document for one bucket and prefix.

    What the backends' filesystem (s3fs through Airflow's ObjectStoragePath) really calls:
    - write: PutObject (a large value is a multipart upload, which PutObject also covers);
      AbortMultipartUpload lets s3fs clean up a failed multipart upload instead of leaving parts behind.
    - read: GetObject (HEAD object is authorised as GetObject).
    - purge on task re-run: DeleteObject.
    - ListBucket, only for listings of ``<prefix>/`` and below: s3fs falls back to listing the prefix when a
      HEAD misses, and without a ListBucket grant S3 answers 403 instead of 404 for a missing object. The bare
      ``<prefix>`` is not allowed: it would also list look-alikes such as ``<prefix>2/`` or ``<prefix>-x``.
    - GetBucketLocation only for common-io's backend: it calls mkdir(parents=True) before each write, and
      s3fs probes the bucket there; without the grant it falls back to CreateBucket and fails.
      The bundled backend never calls mkdir, so by default the grant is left out.
    - SSE-KMS: the data key only through S3 in the bucket's region (``kms:ViaService``) and only for this
      bucket's encryption context (the bucket ARN with S3 Bucket Keys, an object ARN without), so the
      credential cannot call KMS directly.
    """
    objects_arn = f"{bucket_arn}/{prefix}/*"
    statements: list[dict[str, Any]] = [
        {
            "Sid": "ReadWriteXComObjects",
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
            "Resource": [objects_arn],
        },
        {
            "Sid": "ListXComPrefixOnly",
            "Effect": "Allow",
            "Action": ["s3:ListBucket"],
            "Resource": [bucket_arn],
            "Condition": {"StringLike": {"s3:prefix": [f"{prefix}/*"]}},
        },
    ]
    if bucket_location:
        statements.append(
            {
                "Sid": "BucketLocationForMkdirProbe",
                "Effect": "Allow",
                "Action": ["s3:GetBucketLocation"],
                "Resource": [bucket_arn],
            }
        )
    if kms_key_arn:
        statements.append(
            {
                # SSE-KMS: writing needs a data key, reading needs to decrypt it; nothing else on the key.
                "Sid": "UseBucketKmsKey",
                "Effect": "Allow",
                "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
                "Resource": [kms_key_arn],
                "Condition": {
                    "StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"},
                    "StringLike": {"kms:EncryptionContext:aws:s3:arn": [bucket_arn, objects_arn]},
                },
            }
        )
    return {"Version": "2012-10-17", "Statement": statements}


def tls_only_bucket_policy(bucket_arn: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [bucket_arn, f"{bucket_arn}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }


def assume_role_policy(principal_arn: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": principal_arn}, "Action": "sts:AssumeRole"},
        ],
    }


def declare(
    parent: pulumi.Resource, name: str, settings: Settings, *, policy_name: str = POLICY_NAME
) -> dict[str, Any]:
    """Declare the bucket and each deployment's credential as children of ``parent``; return the outputs.

    The bucket and its protections are shared; each deployment (or the single one) gets its own policy limited
    to its prefix and its own user or role, with logical names from its name, never its position in the list,
    so adding or removing a deployment leaves every other deployment's resources as they are.
    """
    cfg = settings.aws
    assert cfg is not None
    tags = {**BASE_TAGS, **settings.tags}
    # The stack's default aws provider, so aws:profile, aws:assumeRoles, aws:defaultTags and ESC-provided
    # credentials apply (an explicit aws.Provider would ignore them); the bucket's region is set per
    # resource.
    child = pulumi.ResourceOptions(parent=parent)
    region = cfg.region

    bucket = aws.s3.Bucket(
        name,
        bucket=settings.bucket_name,
        force_destroy=settings.force_destroy,
        region=region,
        tags=tags,
        opts=child,
    )
    # The bucket's protections go with the bucket: `pulumi destroy` never calls their delete when the bucket
    # is deleted too. Otherwise it deletes them first (they depend on the bucket), and a refused delete of
    # a non-empty bucket (forceDestroy=false) would leave the data public-block-less, unencrypted by
    # default and reachable without TLS.
    hardening = pulumi.ResourceOptions(parent=parent, deleted_with=bucket)
    public_access = aws.s3.BucketPublicAccessBlock(
        f"{name}-public-access-block",
        bucket=bucket.id,
        block_public_acls=True,
        block_public_policy=True,
        ignore_public_acls=True,
        restrict_public_buckets=True,
        region=region,
        opts=hardening,
    )
    aws.s3.BucketOwnershipControls(
        f"{name}-ownership",
        bucket=bucket.id,
        rule={"object_ownership": "BucketOwnerEnforced"},  # ACLs disabled
        region=region,
        opts=hardening,
    )
    default_encryption: dict[str, Any] = {"sse_algorithm": "aws:kms" if cfg.kms_key_arn else "AES256"}
    if cfg.kms_key_arn:
        default_encryption["kms_master_key_id"] = cfg.kms_key_arn
    aws.s3.BucketServerSideEncryptionConfiguration(
        f"{name}-encryption",
        bucket=bucket.id,
        rules=[
            {
                "apply_server_side_encryption_by_default": default_encryption,
                "bucket_key_enabled": bool(cfg.kms_key_arn),
            }
        ],
        region=region,
        opts=hardening,
    )
    # XComs are rewritten per run; old versions would only keep data (and cost) around.
    aws.s3.BucketVersioning(
        f"{name}-versioning",
        bucket=bucket.id,
        versioning_configuration={"status": "Disabled"},
        region=region,
        opts=hardening,
    )
    # Under <prefix>/, which holds every deployment's <prefix>/<name>/.
    lifecycle_rules: list[dict[str, Any]] = [
        {
            "id": "abort-incomplete-xcom-uploads",
            "status": "Enabled",
            "filter": {"prefix": f"{settings.prefix}/"},
            "abort_incomplete_multipart_upload": {"days_after_initiation": 1},
        }
    ]
    if settings.expiry_days > 0:
        lifecycle_rules.append(
            {
                "id": "expire-xcom-objects",
                "status": "Enabled",
                "filter": {"prefix": f"{settings.prefix}/"},
                "expiration": {"days": settings.expiry_days},
            }
        )
    aws.s3.BucketLifecycleConfiguration(
        f"{name}-lifecycle", bucket=bucket.id, rules=lifecycle_rules, region=region, opts=hardening
    )
    aws.s3.BucketPolicy(
        f"{name}-tls-only",
        bucket=bucket.id,
        policy=bucket.arn.apply(lambda arn: json.dumps(tls_only_bucket_policy(arn))),
        region=region,
        # S3 rejects bucket policies while the public access block is being applied.
        opts=pulumi.ResourceOptions.merge(hardening, pulumi.ResourceOptions(depends_on=[public_access])),
    )

    shared = {"cloud": "aws", "bucket_name": bucket.bucket, "region": cfg.region, "credentials": settings.credentials}
    units = {
        deployment: _deployment_access(parent, name, settings, bucket, deployment, policy_name, tags)
        for deployment in settings.units()
    }
    return stack_outputs(settings, shared, units)


def _deployment_access(
    parent: pulumi.Resource,
    name: str,
    settings: Settings,
    bucket: aws.s3.Bucket,
    deployment: str | None,
    policy_name: str,
    tags: dict[str, str],
) -> dict[str, Any]:
    """One deployment's policy (its prefix only), its user and access key(s) or role, and its env."""
    cfg = settings.aws
    assert cfg is not None
    child = pulumi.ResourceOptions(parent=parent)
    base = name if deployment is None else f"{name}-{deployment}"
    prefix = settings.deployment_prefix(deployment)
    if deployment is not None:
        tags = {**tags, "airflow-deployment": deployment}
    policy = aws.iam.Policy(
        policy_name if deployment is None else f"{policy_name}-{deployment}",
        description=f"Airflow XCom backend: objects under {prefix}/ in one bucket",
        policy=bucket.arn.apply(
            lambda arn: json.dumps(
                xcom_access_policy(
                    arn,
                    prefix,
                    region=cfg.region,
                    kms_key_arn=cfg.kms_key_arn,
                    bucket_location=settings.backend == "common-io",
                )
            )
        ),
        tags=tags,
        opts=child,
    )
    outputs: dict[str, Any] = {"policy_arn": policy.arn}
    if deployment is not None:
        outputs.update(prefix=prefix, bucket_name=bucket.bucket)
    credential: pulumi.Output[dict[str, Any]] | None = None
    if settings.credentials == "access-key":
        user_name = deployment_name(cfg.user_name, deployment, max_length=AWS_IAM_NAME_MAX)
        user = aws.iam.User(f"{base}-user", name=user_name, tags=tags, opts=child)
        aws.iam.UserPolicyAttachment(f"{base}-user-policy", user=user.name, policy_arn=policy.arn, opts=child)
        # One key per generation; while the previous one is kept, both work (IAM allows two per user).
        keys = {
            generation: aws.iam.AccessKey(generation_name(f"{base}-access-key", generation), user=user.name, opts=child)
            for generation in credential_generations(settings)
        }
        key = keys[settings.credential_generation]
        secret = pulumi.Output.secret(key.secret)
        connection = pulumi.Output.all(key.id, secret).apply(
            lambda pair: contract.aws_connection(
                region=cfg.region,
                access_key_id=pair[0],
                secret_access_key=pair[1],
                endpoint_url=settings.endpoint_url,
            )
        )
        outputs.update(user_name=user.name, access_key_id=key.id)
        if settings.keep_previous_credential:
            outputs["previous_access_key_id"] = keys[settings.credential_generation - 1].id
        if settings.describes_credential:
            credential = credential_info(
                "aws-access-key", settings.credential_generation, id=key.id, created=key.create_date
            )
    else:
        assert cfg.role_trust_principal_arn is not None
        principal = cfg.role_trust_principal_arn.replace(DEPLOYMENT_PLACEHOLDER, deployment or "")
        role = aws.iam.Role(
            f"{base}-role",
            name=deployment_name(cfg.role_name, deployment, max_length=AWS_IAM_NAME_MAX),
            assume_role_policy=json.dumps(assume_role_policy(principal)),
            tags=tags,
            opts=child,
        )
        aws.iam.RolePolicyAttachment(f"{base}-role-policy", role=role.name, policy_arn=policy.arn, opts=child)
        connection = role.arn.apply(
            lambda arn: contract.aws_connection(region=cfg.region, role_arn=arn, endpoint_url=settings.endpoint_url)
        )
        outputs.update(role_arn=role.arn)
        if settings.describes_credential:
            credential = credential_info("aws-role", settings.credential_generation, id=role.arn)
    outputs.update(
        airflow_env_outputs(settings, bucket.bucket, connection, deployment=deployment, credential=credential)
    )
    return outputs
