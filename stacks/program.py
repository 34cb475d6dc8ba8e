"""The Pulumi program: read and validate settings, build the selected cloud's component, export outputs."""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi.runtime import config as runtime_config

from xcom_backend.pulumi.component import StackXComStorage, provider_config
from xcom_backend.pulumi.settings import PROJECT, SettingsError, parse

COMPONENT_NAME = "airflow-xcom"


def raw_settings() -> dict[str, Any]:
    """Every config value set in this project's namespace, including ones no Key declares (typos)."""
    prefix = f"{PROJECT}:"
    names = set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env())
    return {name[len(prefix) :]: runtime_config.get_config(name) for name in sorted(names) if name.startswith(prefix)}


def main() -> dict[str, Any]:
    try:
        settings = parse(raw_settings(), stack=pulumi.get_stack(), provider=provider_config())
    except SettingsError as err:
        # RunError ends `pulumi up` with this message alone, no traceback, before any resource.
        raise pulumi.RunError(str(err)) from None
    outputs = StackXComStorage(COMPONENT_NAME, settings).outputs  # settings.cloud is one parse() implements
    for name, value in outputs.items():
        pulumi.export(name, value)
    return outputs
