"""The Pulumi program: read and validate settings, build the selected cloud's component, export outputs."""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi.runtime import config as runtime_config

from xcom_backend.pulumi.settings import PROJECT, PROVIDER_DEFAULT_KEYS, Settings, SettingsError, parse

COMPONENT_NAME = "airflow-xcom"


def raw_settings() -> dict[str, Any]:
    """Every config value set in this project's namespace, including ones no Key declares (typos)."""
    prefix = f"{PROJECT}:"
    names = set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env())
    return {name[len(prefix) :]: runtime_config.get_config(name) for name in sorted(names) if name.startswith(prefix)}


def provider_config() -> dict[str, str]:
    """The stack's provider config that empty settings fall back to (the default providers read the same keys)."""
    return {name: value for name in PROVIDER_DEFAULT_KEYS if (value := runtime_config.get_config(name))}


def build(settings: Settings) -> pulumi.ComponentResource:
    # Import the selected cloud's SDK only: the others may not even be installed.
    if settings.cloud == "aws":
        from xcom_backend.pulumi.aws import AwsXComStorage

        return AwsXComStorage(COMPONENT_NAME, settings)
    if settings.cloud == "gcp":
        from xcom_backend.pulumi.gcp import GcpXComStorage

        return GcpXComStorage(COMPONENT_NAME, settings)
    if settings.cloud == "azure":
        from xcom_backend.pulumi.azure import AzureXComStorage

        return AzureXComStorage(COMPONENT_NAME, settings)
    raise SettingsError([f"{PROJECT}:cloud: {settings.cloud!r} is not implemented"])


def main() -> dict[str, Any]:
    try:
        settings = parse(raw_settings(), stack=pulumi.get_stack(), provider=provider_config())
    except SettingsError as err:
        # RunError ends `pulumi up` with this message alone, no traceback, before any resource.
        raise pulumi.RunError(str(err)) from None
    component = build(settings)
    outputs: dict[str, Any] = component.outputs  # type: ignore[attr-defined]
    for name, value in outputs.items():
        pulumi.export(name, value)
    return outputs
