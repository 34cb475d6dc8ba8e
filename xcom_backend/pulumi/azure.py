"""Azure: a hardened storage account, a private container and a credential scoped to that container."""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi_azure_native import authorization, managedidentity, resources, storage

from xcom_backend import contract
from xcom_backend.pulumi.env_outputs import airflow_env_outputs, credential_info, stack_outputs
from xcom_backend.pulumi.settings import Settings, azure_container_name

BASE_TAGS = {"managed-by": "pulumi", "purpose": "airflow-xcom"}
# Built-in role "Storage Blob Data Contributor": read, write, delete and list blobs; no account management.
BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
# What the backends call: read (r), write/create (w), delete on purge (d), list (l). No add/tag/move/
# immutability permissions. A service SAS on a container cannot be narrowed to a prefix.
SAS_PERMISSIONS = "rwdl"


def container_id(account_id: str, container: str) -> str:
    return f"{account_id}/blobServices/default/containers/{container}"


def lifecycle_rule(rule_name: str, container: str, prefix: str, expiry_days: int) -> dict[str, Any]:
    return {
        "name": rule_name,
        "enabled": True,
        "type": "Lifecycle",
        "definition": {
            "filters": {"blob_types": ["blockBlob"], "prefix_match": [f"{container}/{prefix}/"]},
            "actions": {"base_blob": {"delete": {"days_after_creation_greater_than": expiry_days}}},
        },
    }


def lifecycle_policy(container: str, prefix: str, expiry_days: int) -> dict[str, Any]:
    return {"rules": [lifecycle_rule("expire-xcom-objects", container, prefix, expiry_days)]}


def signing_key(generation: int) -> str:
    """The account key a generation's SAS is signed with (or, for credentials=account-key, that is emitted):
    alternating, so the previous generation's key can be renewed, revoking it, without touching the current."""
    return "key1" if generation % 2 else "key2"


def declare(parent: pulumi.Resource, name: str, settings: Settings) -> dict[str, Any]:
    """Declare the account and each deployment's container and credential as children of ``parent``.

    A container SAS cannot be narrowed to a prefix (the account has no hierarchical namespace), so with
    deployments each one gets its own container, and its SAS (or identity's role assignment) is scoped to it.
    """
    cfg = settings.azure
    assert cfg is not None
    tags = {**BASE_TAGS, **settings.tags}
    # The stack's default azure-native provider, so azure-native:subscriptionId, tenant, OIDC and the other
    # provider settings apply (an explicit Provider would ignore them); the location is set per resource.
    child = pulumi.ResourceOptions(parent=parent)
    # Azure deletes a container with its blobs (no non-empty guard like S3's or GCS's): with forceDestroy
    # off, what holds XComs is protected, so `pulumi destroy` refuses before deleting anything.
    holds_data = pulumi.ResourceOptions(parent=parent, protect=not settings.force_destroy)

    if cfg.resource_group_name:
        group_name: pulumi.Input[str] = cfg.resource_group_name
    else:
        group_name = resources.ResourceGroup(f"{name}-rg", location=cfg.location, tags=tags, opts=holds_data).name
    account = storage.StorageAccount(
        name.replace("-", ""),
        account_name=cfg.storage_account_name,
        resource_group_name=group_name,
        location=cfg.location,
        kind=storage.Kind.STORAGE_V2,
        sku={"name": cfg.sku_name},
        allow_blob_public_access=False,  # no anonymous access to any container
        enable_https_traffic_only=True,
        minimum_tls_version=storage.MinimumTlsVersion.TLS1_2,
        # A service SAS and the account key are signed with shared keys; identity mode needs none.
        allow_shared_key_access=settings.credentials != "identity",
        default_to_o_auth_authentication=settings.credentials == "identity",
        allow_cross_tenant_replication=False,
        tags=tags,
        opts=holds_data,
    )
    containers = {}
    for deployment in settings.units():
        containers[deployment] = storage.BlobContainer(
            f"{name}-container" if deployment is None else f"{name}-{deployment}-container",
            container_name=settings.bucket_name
            if deployment is None
            else azure_container_name(settings.bucket_name, deployment),
            account_name=account.name,
            resource_group_name=group_name,
            public_access=storage.PublicAccess.NONE,
            opts=holds_data,
        )
    if settings.expiry_days > 0:
        # Azure allows exactly one policy per account, named default: one rule per container in it.
        if settings.deployments:
            policy = pulumi.Output.all(*(containers[d].name for d in settings.deployments)).apply(
                lambda names: {
                    "rules": [
                        lifecycle_rule(f"expire-xcom-{d}", container, settings.prefix, settings.expiry_days)
                        for d, container in zip(settings.deployments, names, strict=True)
                    ]
                }
            )
        else:
            policy = containers[None].name.apply(lambda c: lifecycle_policy(c, settings.prefix, settings.expiry_days))
        storage.ManagementPolicy(
            f"{name}-lifecycle",
            management_policy_name="default",
            account_name=account.name,
            resource_group_name=group_name,
            policy=policy,
            opts=child,
        )

    shared: dict[str, Any] = {
        "cloud": "azure",
        "storage_account_name": account.name,
        "resource_group_name": group_name,
        "location": cfg.location,
        "credentials": settings.credentials,
    }
    if not settings.deployments:
        shared["bucket_name"] = containers[None].name
    units = {
        deployment: _deployment_access(parent, name, settings, account, group_name, container, deployment)
        for deployment, container in containers.items()
    }
    return stack_outputs(settings, shared, units)


def _deployment_access(
    parent: pulumi.Resource,
    name: str,
    settings: Settings,
    account: storage.StorageAccount,
    group_name: pulumi.Input[str],
    container: storage.BlobContainer,
    deployment: str | None,
) -> dict[str, Any]:
    """One deployment's credential scoped to its container (SAS, identity or, single only, account key)."""
    cfg = settings.azure
    assert cfg is not None
    child = pulumi.ResourceOptions(parent=parent)
    base = name if deployment is None else f"{name}-{deployment}"
    outputs: dict[str, Any] = {} if deployment is None else {"bucket_name": container.name, "prefix": settings.prefix}
    invoke = pulumi.InvokeOutputOptions(parent=parent)
    generation = settings.credential_generation
    credential: pulumi.Output[dict[str, Any]] | None = None
    if settings.credentials == "sas":
        sas = storage.list_storage_account_service_sas_output(
            account_name=account.name,
            resource_group_name=group_name,
            canonicalized_resource=pulumi.Output.concat("/blob/", account.name, "/", container.name),
            resource=storage.SignedResource.C,
            permissions=SAS_PERMISSIONS,
            protocols=storage.HttpProtocol.HTTPS,
            shared_access_expiry_time=cfg.sas_expiry,
            # Generation 1 is signed with key1, as it always was; later ones alternate keys.
            key_to_sign=signing_key(generation) if generation > 1 else None,
            opts=invoke,
        )
        token = pulumi.Output.secret(sas.service_sas_token)
        connection = pulumi.Output.all(account.name, token).apply(
            lambda args: contract.azure_connection(
                account_name=args[0], sas_token=args[1], endpoint_url=settings.endpoint_url
            )
        )
        outputs["sas_expiry"] = cfg.sas_expiry
        if settings.describes_credential:
            outputs["sas_signed_with"] = signing_key(generation)
            credential = credential_info(
                "azure-sas", generation, signed_with=signing_key(generation), expires=cfg.sas_expiry
            )
    elif settings.credentials == "account-key":
        keys = storage.list_storage_account_keys_output(
            account_name=account.name, resource_group_name=group_name, opts=invoke
        )
        key = pulumi.Output.secret(keys.keys[(generation - 1) % 2].value)
        connection = pulumi.Output.all(account.name, key).apply(
            lambda args: contract.azure_connection(
                account_name=args[0], account_key=args[1], endpoint_url=settings.endpoint_url
            )
        )
        if settings.describes_credential:
            credential = credential_info("azure-account-key", generation, key=signing_key(generation))
    else:
        client = authorization.get_client_config_output(opts=invoke)
        if cfg.identity_principal_id:
            principal_id: pulumi.Input[str] = cfg.identity_principal_id
            client_id: pulumi.Input[str | None] = None
        else:
            identity = managedidentity.UserAssignedIdentity(
                f"{base}-identity",
                resource_group_name=group_name,
                location=cfg.location,
                tags={**BASE_TAGS, **settings.tags, **({"airflow-deployment": deployment} if deployment else {})},
                opts=child,
            )
            principal_id, client_id = identity.principal_id, identity.client_id
            outputs["identity_client_id"] = identity.client_id
        authorization.RoleAssignment(
            f"{base}-blob-data-contributor",
            principal_id=principal_id,
            # Azure rejects an assignment whose type does not match the principal (UnmatchedPrincipalType).
            principal_type=cfg.identity_principal_type,
            role_definition_id=client.subscription_id.apply(
                lambda sub: (
                    f"/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{BLOB_DATA_CONTRIBUTOR}"
                )
            ),
            scope=pulumi.Output.all(account.id, container.name).apply(lambda a: container_id(a[0], a[1])),
            opts=child,
        )
        connection = pulumi.Output.all(account.name, client_id).apply(
            lambda args: contract.azure_connection(account_name=args[0], managed_identity_client_id=args[1])
        )
        outputs["principal_id"] = principal_id
        if settings.describes_credential:
            credential = credential_info("azure-identity", generation, id=principal_id)
    outputs.update(
        airflow_env_outputs(settings, container.name, connection, deployment=deployment, credential=credential)
    )
    return outputs
