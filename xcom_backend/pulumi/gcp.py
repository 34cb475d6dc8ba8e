"""GCP: a private GCS bucket and access scoped to this bucket and its XCom prefix, never project-wide."""

from __future__ import annotations

import base64
from typing import Any

import pulumi
import pulumi_gcp as gcp

from xcom_backend import contract
from xcom_backend.pulumi.env_outputs import airflow_env_outputs, credential_info, stack_outputs
from xcom_backend.pulumi.settings import (
    DEPLOYMENT_PLACEHOLDER,
    GCP_ACCOUNT_ID_MAX,
    Settings,
    credential_generations,
    deployment_name,
    generation_name,
)

BASE_LABELS = {"managed-by": "pulumi", "purpose": "airflow-xcom"}
# The narrowest predefined role that reads, writes, deletes and lists objects (and multipart uploads):
# no bucket settings, no IAM on objects (objectAdmin has setIamPolicy). A custom role would be narrower
# still (no objects.update) but is a project-level resource, which this stack does not touch.
OBJECT_ROLE = "roles/storage.objectUser"
# common-io calls mkdir(parents=True) before every write; gcsfs then reads the bucket (storage.buckets.get,
# which objectUser lacks) and, when that is denied, lists the whole bucket, which the prefix condition
# denies: every write fails. The narrowest predefined role with storage.buckets.get (bucket metadata, not
# its IAM policy, no object access); storage.buckets.list in it is checked on the project, so a binding on
# this bucket grants nothing more.
BUCKET_METADATA_ROLE = "roles/storage.bucketViewer"
# GCP limits: service account descriptions and IAM condition descriptions are at most 256 bytes.
DESCRIPTION_MAX_BYTES = 256


def fit(text: str, fallback: str, limit: int = DESCRIPTION_MAX_BYTES) -> str:
    """``text`` when GCP accepts its length, else the shorter ``fallback`` (a long prefix must not fail the deploy)."""
    return text if len(text.encode("utf-8")) <= limit else fallback


def prefix_condition(bucket: str, prefix: str) -> dict[str, str]:
    """IAM condition limiting the binding to objects under the prefix.

    Object operations are checked against ``projects/_/buckets/<bucket>/objects/<name>``. Listing is checked
    against the bucket itself, so it is allowed only for requests listing under the prefix, using the
    ``objectListPrefix`` attribute. A condition cannot limit what `storage.buckets.get` style reads of the
    bucket's own metadata return, and listing only works when the client passes the prefix (gcsfs does).
    """
    return {
        "title": "xcom-prefix-only",
        "description": fit(
            f"Objects under {prefix}/ in {bucket}, and listing under that prefix",
            "Objects under the XCom prefix in this bucket, and listing under it (see the expression)",
        ),
        "expression": (
            f'resource.name.startsWith("projects/_/buckets/{bucket}/objects/{prefix}/") || '
            f'api.getAttribute("storage.googleapis.com/objectListPrefix", "").startsWith("{prefix}/")'
        ),
    }


def keyfile_dict(private_key_b64: str) -> str:
    """The service account key JSON that Airflow's google_cloud_platform connection takes as keyfile_dict."""
    return base64.b64decode(private_key_b64).decode("utf-8")


def declare(parent: pulumi.Resource, name: str, settings: Settings) -> dict[str, Any]:
    """Declare the bucket and each deployment's access as children of ``parent``; return the outputs.

    Each deployment (or the single one) gets its own service account and key (or its own workload identity
    member) and its own binding whose condition names its prefix; logical names come from the deployment's
    name, so adding or removing one leaves the others' resources as they are.
    """
    cfg = settings.gcp
    assert cfg is not None
    labels = {**BASE_LABELS, **settings.tags}
    # The stack's default gcp provider, so gcp:credentials, gcp:impersonateServiceAccount and the other
    # provider settings apply (an explicit gcp.Provider would ignore them); the project is set per resource.
    child = pulumi.ResourceOptions(parent=parent)

    # Under <prefix>/, which holds every deployment's <prefix>/<name>/.
    lifecycle_rules: list[dict[str, Any]] = [
        {
            "action": {"type": "AbortIncompleteMultipartUpload"},
            "condition": {"age": 1, "matches_prefixes": [f"{settings.prefix}/"]},
        }
    ]
    if settings.expiry_days > 0:
        lifecycle_rules.append(
            {
                "action": {"type": "Delete"},
                "condition": {"age": settings.expiry_days, "matches_prefixes": [f"{settings.prefix}/"]},
            }
        )
    bucket = gcp.storage.Bucket(
        name,
        name=settings.bucket_name,
        project=cfg.project,
        location=cfg.location,
        uniform_bucket_level_access=True,  # no object ACLs; IAM (and its conditions) is the only access path
        public_access_prevention="enforced",
        versioning={"enabled": False},
        force_destroy=settings.force_destroy,
        labels=labels,
        lifecycle_rules=lifecycle_rules,
        encryption={"default_kms_key_name": cfg.kms_key_name} if cfg.kms_key_name else None,
        # Soft delete would keep every purged or overwritten XCom restorable, and billed, for 7 days.
        soft_delete_policy={"retention_duration_seconds": cfg.soft_delete_days * 86400},
        opts=child,
    )
    shared = {
        "cloud": "gcp",
        "bucket_name": bucket.name,
        "project": cfg.project,
        "location": cfg.location,
        "credentials": settings.credentials,
    }
    units = {
        deployment: _deployment_access(parent, name, settings, bucket, deployment) for deployment in settings.units()
    }
    return stack_outputs(settings, shared, units)


def _deployment_access(
    parent: pulumi.Resource, name: str, settings: Settings, bucket: gcp.storage.Bucket, deployment: str | None
) -> dict[str, Any]:
    """One deployment's identity (service account + key(s), or a workload identity member), its binding
    conditioned on its prefix, and its env."""
    cfg = settings.gcp
    assert cfg is not None
    child = pulumi.ResourceOptions(parent=parent)
    base = name if deployment is None else f"{name}-{deployment}"
    prefix = settings.deployment_prefix(deployment)
    outputs: dict[str, Any] = {} if deployment is None else {"prefix": prefix, "bucket_name": bucket.name}
    credential: pulumi.Output[dict[str, Any]] | None = None
    if settings.credentials == "key":
        account = gcp.serviceaccount.Account(
            f"{base}-sa",
            account_id=deployment_name(
                cfg.service_account_id, deployment, max_length=GCP_ACCOUNT_ID_MAX, lowercase=True
            ),
            display_name="Airflow XCom backend" if deployment is None else f"Airflow XCom backend: {deployment}",
            description=fit(
                f"Reads and writes Airflow XComs under {prefix}/ in one bucket",
                "Reads and writes Airflow XComs under one prefix in one bucket",
            ),
            project=cfg.project,
            opts=child,
        )
        member = account.email.apply(lambda email: f"serviceAccount:{email}")
        # One key per generation; while the previous one is kept, both can mint tokens.
        keys = {
            generation: gcp.serviceaccount.Key(
                generation_name(f"{base}-sa-key", generation), service_account_id=account.name, opts=child
            )
            for generation in credential_generations(settings)
        }
        key = keys[settings.credential_generation]
        connection = pulumi.Output.secret(key.private_key).apply(
            lambda private_key: contract.gcp_connection(
                project=cfg.project, keyfile_dict=keyfile_dict(private_key), endpoint_url=settings.endpoint_url
            )
        )
        outputs["service_account_email"] = account.email
        if settings.describes_credential:
            outputs["key_id"] = key.name.apply(lambda key_name: key_name.rsplit("/", 1)[-1])
            if settings.keep_previous_credential:
                previous = keys[settings.credential_generation - 1]
                outputs["previous_key_id"] = previous.name.apply(lambda key_name: key_name.rsplit("/", 1)[-1])
            credential = credential_info(
                "gcp-service-account-key",
                settings.credential_generation,
                id=outputs["key_id"],
                created=key.valid_after,
                expires=key.valid_before.apply(lambda when: None if (when or "").startswith("9999") else when),
            )
    else:
        assert cfg.workload_identity_member is not None
        member = pulumi.Output.from_input(
            cfg.workload_identity_member.replace(DEPLOYMENT_PLACEHOLDER, deployment or "")
        )
        connection = pulumi.Output.from_input(
            contract.gcp_connection(project=cfg.project, endpoint_url=settings.endpoint_url)
        )
        if settings.describes_credential:
            credential = credential_info("gcp-workload-identity", settings.credential_generation, id=member)

    gcp.storage.BucketIAMMember(
        f"{base}-xcom-access",
        bucket=bucket.name,
        role=OBJECT_ROLE,
        member=member,
        condition=bucket.name.apply(lambda bucket_name: prefix_condition(bucket_name, prefix)),
        opts=child,
    )
    if settings.backend == "common-io":
        gcp.storage.BucketIAMMember(
            f"{base}-bucket-metadata",
            bucket=bucket.name,
            role=BUCKET_METADATA_ROLE,
            member=member,
            opts=child,
        )
    outputs["member"] = member
    outputs.update(airflow_env_outputs(settings, bucket.name, connection, deployment=deployment, credential=credential))
    return outputs
