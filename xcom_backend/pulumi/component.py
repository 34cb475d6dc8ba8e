"""``XComStorage``: this package's stack as a component for any Pulumi program.

    from xcom_backend.pulumi import XComStorage

    xcom = XComStorage("xcom", cloud="aws", deployments=["sales", "ml"], compression="gzip")
    pulumi.export("airflow_env", xcom.airflow_env)

Every stack setting is a keyword argument (its snake_case name), validated by the same settings table
(xcom_backend.pulumi.settings) before anything is declared, and the component's outputs are the stack's.
Only the selected cloud's Pulumi SDK is imported.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import pulumi
from pulumi.runtime import config as runtime_config
from typing_extensions import TypedDict, Unpack

from xcom_backend.pulumi.settings import KEYS, PROVIDER_DEFAULT_KEYS, Settings, SettingsError, parse

TYPE = "airflow-xcom-backend:index:XComStorage"


class XComStorageArgs(TypedDict, total=False):
    """The stack settings as keyword arguments (defaults, meaning and validation: docs/component.md)."""

    cloud: Literal["aws", "gcp", "azure"]
    connection_id: str
    bucket_name: str
    prefix: str
    threshold: int
    compression: str
    backend: Literal["bundled", "common-io"]
    expiry_days: int
    force_destroy: bool
    tags: str | Mapping[str, str]
    credentials: str
    endpoint_url: str
    allow_http_endpoint: bool
    deployments: Sequence[str]
    credential_generation: int
    keep_previous_credential: bool
    region: str
    user_name: str
    role_name: str
    role_trust_principal_arn: str
    kms_key_arn: str
    project: str
    location: str
    service_account_id: str
    workload_identity_member: str
    kms_key_name: str
    soft_delete_days: int
    resource_group_name: str
    storage_account_name: str
    sku_name: str
    sas_expiry: str
    identity_principal_id: str
    identity_principal_type: str


def argument_name(key: str) -> str:
    """The keyword argument of a stack setting: ``connectionId`` -> ``connection_id``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


KEY_OF_ARGUMENT: Mapping[str, str] = {argument_name(key.name): key.name for key in KEYS}


class XComStorageError(SettingsError, pulumi.RunError):
    """Bad arguments, all named at once, raised before any resource is declared (no traceback in pulumi up)."""


def settings_from_arguments(name: str, arguments: Mapping[str, Any]) -> Settings:
    """Validate the component's keyword arguments with the stack's settings table."""
    component = f'XComStorage("{name}")'
    known = ", ".join(sorted(KEY_OF_ARGUMENT))
    problems = [
        f"{component} {arg}: unknown argument; known: {known}" for arg in sorted(set(arguments) - set(KEY_OF_ARGUMENT))
    ]
    raw = {
        KEY_OF_ARGUMENT[arg]: value for arg, value in arguments.items() if arg in KEY_OF_ARGUMENT and value is not None
    }
    provider = provider_config()
    try:
        settings = parse(
            raw,
            project=pulumi.get_project(),
            # Principal names: <project>-<stack>-<name>, so two components (or stacks) never share one.
            stack=f"{pulumi.get_stack()}-{name}",
            provider=provider,
            name_of=lambda key: f"{component} {argument_name(key)}",
        )
    except SettingsError as err:
        problems += err.problems
    if problems:  # every bad argument at once, as the stack names every bad setting
        raise XComStorageError(problems) from None
    return settings


def provider_config() -> dict[str, str]:
    """The stack's provider config that empty settings fall back to (the default providers read the same keys)."""
    return {key: value for key in PROVIDER_DEFAULT_KEYS if (value := runtime_config.get_config(key))}


def declare(parent: pulumi.Resource, name: str, settings: Settings, **extra: Any) -> dict[str, Any]:
    """Declare the selected cloud's resources as children of ``parent``, importing that cloud's SDK only."""
    builder = importlib.import_module(f"xcom_backend.pulumi.{settings.cloud}")
    return builder.declare(parent, name, settings, **extra)


class StackXComStorage(pulumi.ComponentResource):
    """This repo's stack program's component. Its type names the cloud (``airflow-xcom-backend:aws:XComStorage``),
    as the stacks have always declared it: another type would change every resource's URN and replace it."""

    outputs: dict[str, Any]

    def __init__(self, name: str, settings: Settings, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(f"airflow-xcom-backend:{settings.cloud}:XComStorage", name, None, opts)
        self.outputs = declare(self, name, settings)
        self.register_outputs(self.outputs)


class XComStorage(pulumi.ComponentResource):
    """A private bucket (Azure: storage account and container), a least-privilege credential per deployment
    and the Airflow env for each, as children of this component.

    Outputs (also as attributes, and all in ``outputs``): ``airflow_env`` (secret; a map by deployment name
    when ``deployments`` is given), ``objectstorage_path``, ``bucket_name``, ``credentials`` and the cloud's
    own (``region``, ``user_name``, ``access_key_id``, ``project``, ``storage_account_name``, ...), exactly
    the outputs of the stack with the same settings. Export them all with ``for k, v in xcom.outputs.items():
    pulumi.export(k, v)`` and ``xcom-backend export`` reads that stack's outputs as it reads this repo's.
    """

    outputs: dict[str, Any]
    settings: Settings
    airflow_env: pulumi.Output[Any]
    objectstorage_path: pulumi.Output[Any] | dict[str, pulumi.Output[str]]
    credentials: str

    def __init__(
        self, name: str, opts: pulumi.ResourceOptions | None = None, **arguments: Unpack[XComStorageArgs]
    ) -> None:
        settings = settings_from_arguments(name, arguments)  # before anything is registered
        super().__init__(TYPE, name, None, opts)
        self.settings = settings
        extra = {"policy_name": f"{name}-policy"} if settings.cloud == "aws" else {}
        self.outputs = declare(self, name, settings, **extra)
        for key, value in self.outputs.items():
            setattr(self, key, value)
        self.register_outputs(self.outputs)
