"""Azure: a hardened storage account, a private container and a credential scoped to that container."""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi_azure_native import authorization, managedidentity, resources, storage

from xcom_backend import contract
from xcom_backend.pulumi.env_outputs import airflow_env_outputs
from xcom_backend.pulumi.settings import Settings

BASE_TAGS = {"managed-by": "pulumi", "purpose": "airflow-xcom"}
# Built-in role "Storage Blob Data Contributor": read, write, delete and list blobs; no account management.
BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
# What the backends call: read (r), write/create (w), delete on purge (d), list (l). No add/tag/move/
# immutability permissions. A service SAS on a container cannot be narrowed to a prefix.
SAS_PERMISSIONS = "rwdl"


def container_id(account_id: str, container: str) -> str:
    return f"{account_id}/blobServices/default/containers/{container}"


def lifecycle_policy(container: str, prefix: str, expiry_days: int) -> dict[str, Any]:
    return {
        "rules": [
            {
                "name": "expire-xcom-objects",
                "enabled": True,
                "type": "Lifecycle",
                "definition": {
                    "filters": {"blob_types": ["blockBlob"], "prefix_match": [f"{container}/{prefix}/"]},
                    "actions": {"base_blob": {"delete": {"days_after_creation_greater_than": expiry_days}}},
                },
            }
        ]
    }


class AzureXComStorage(pulumi.ComponentResource):
    """Resource group, storage account, container, lifecycle policy, credential and the Airflow env."""

    outputs: dict[str, Any]

    def __init__(self, name: str, settings: Settings, opts: pulumi.ResourceOptions | None = None):
        super().__init__("airflow-xcom-backend:azure:XComStorage", name, None, opts)
        cfg = settings.azure
        assert cfg is not None
        tags = {**BASE_TAGS, **settings.tags}
        # The stack's default azure-native provider, so azure-native:subscriptionId, tenant, OIDC and the other
        # provider settings apply (an explicit Provider would ignore them); the location is set per resource.
        child = pulumi.ResourceOptions(parent=self)
        # Azure deletes a container with its blobs (no non-empty guard like S3's or GCS's): with forceDestroy
        # off, what holds XComs is protected, so `pulumi destroy` refuses before deleting anything.
        holds_data = pulumi.ResourceOptions(parent=self, protect=not settings.force_destroy)

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
        container = storage.BlobContainer(
            f"{name}-container",
            container_name=settings.bucket_name,
            account_name=account.name,
            resource_group_name=group_name,
            public_access=storage.PublicAccess.NONE,
            opts=holds_data,
        )
        if settings.expiry_days > 0:
            storage.ManagementPolicy(
                f"{name}-lifecycle",
                management_policy_name="default",  # Azure allows exactly one policy per account, named default
                account_name=account.name,
                resource_group_name=group_name,
                policy=container.name.apply(lambda c: lifecycle_policy(c, settings.prefix, settings.expiry_days)),
                opts=child,
            )

        self.outputs = {
            "cloud": "azure",
            "bucket_name": container.name,
            "storage_account_name": account.name,
            "resource_group_name": group_name,
            "location": cfg.location,
            "credentials": settings.credentials,
        }
        invoke = pulumi.InvokeOutputOptions(parent=self)
        if settings.credentials == "sas":
            sas = storage.list_storage_account_service_sas_output(
                account_name=account.name,
                resource_group_name=group_name,
                canonicalized_resource=pulumi.Output.concat("/blob/", account.name, "/", container.name),
                resource=storage.SignedResource.C,
                permissions=SAS_PERMISSIONS,
                protocols=storage.HttpProtocol.HTTPS,
                shared_access_expiry_time=cfg.sas_expiry,
                opts=invoke,
            )
            token = pulumi.Output.secret(sas.service_sas_token)
            connection = pulumi.Output.all(account.name, token).apply(
                lambda args: contract.azure_connection(
                    account_name=args[0], sas_token=args[1], endpoint_url=settings.endpoint_url
                )
            )
            self.outputs["sas_expiry"] = cfg.sas_expiry
        elif settings.credentials == "account-key":
            keys = storage.list_storage_account_keys_output(
                account_name=account.name, resource_group_name=group_name, opts=invoke
            )
            key = pulumi.Output.secret(keys.keys[0].value)
            connection = pulumi.Output.all(account.name, key).apply(
                lambda args: contract.azure_connection(
                    account_name=args[0], account_key=args[1], endpoint_url=settings.endpoint_url
                )
            )
        else:
            client = authorization.get_client_config_output(opts=invoke)
            if cfg.identity_principal_id:
                principal_id: pulumi.Input[str] = cfg.identity_principal_id
                client_id: pulumi.Input[str | None] = None
            else:
                identity = managedidentity.UserAssignedIdentity(
                    f"{name}-identity", resource_group_name=group_name, location=cfg.location, tags=tags, opts=child
                )
                principal_id, client_id = identity.principal_id, identity.client_id
                self.outputs["identity_client_id"] = identity.client_id
            authorization.RoleAssignment(
                f"{name}-blob-data-contributor",
                principal_id=principal_id,
                # Azure rejects an assignment whose type does not match the principal (UnmatchedPrincipalType).
                principal_type=cfg.identity_principal_type,
                role_definition_id=client.subscription_id.apply(
                    lambda sub: (
                        f"/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/"
                        f"{BLOB_DATA_CONTRIBUTOR}"
                    )
                ),
                scope=pulumi.Output.all(account.id, container.name).apply(lambda a: container_id(a[0], a[1])),
                opts=child,
            )
            connection = pulumi.Output.all(account.name, client_id).apply(
                lambda args: contract.azure_connection(account_name=args[0], managed_identity_client_id=args[1])
            )
            self.outputs["principal_id"] = principal_id

        self.outputs.update(airflow_env_outputs(settings, container.name, connection))
        self.register_outputs(self.outputs)
