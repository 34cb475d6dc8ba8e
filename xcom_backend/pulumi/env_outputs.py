"""The outputs every cloud's component ends with: the storage path and the secret Airflow env, per deployment."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pulumi

from xcom_backend import contract
from xcom_backend.pulumi.settings import Settings

# Outputs that exist once per deployment; with `deployments` they become maps keyed by deployment name.
PER_DEPLOYMENT_MAPS = ("objectstorage_path", "airflow_env")


def airflow_env_outputs(
    settings: Settings,
    bucket_name: pulumi.Output[str],
    connection: pulumi.Output[Any],
    *,
    deployment: str | None = None,
    credential: pulumi.Input[Mapping[str, Any]] | None = None,
) -> dict[str, pulumi.Output[Any]]:
    """``objectstorage_path`` (plain) and ``airflow_env`` (a Pulumi secret: the connection may hold a key)."""
    prefix = settings.deployment_prefix(deployment)
    env = pulumi.Output.all(bucket_name, connection, credential).apply(
        lambda args: contract.XComEnv(
            cloud=settings.cloud,
            conn_id=settings.conn_id,
            bucket=args[0],
            prefix=prefix,
            threshold=settings.threshold,
            compression=settings.compression,
            backend=settings.backend,
            connection=args[1],
            deployment=deployment,
            credential=args[2],
        ).as_env()
    )
    path = bucket_name.apply(lambda name: contract.objectstorage_path(settings.cloud, settings.conn_id, name, prefix))
    return {"objectstorage_path": path, "airflow_env": pulumi.Output.secret(env)}


def stack_outputs(
    settings: Settings, shared: dict[str, Any], units: Mapping[str | None, dict[str, Any]]
) -> dict[str, Any]:
    """The component's outputs: without deployments, the single deployment's outputs beside the shared ones
    (as they always were); with them, ``airflow_env`` (secret) and ``objectstorage_path`` keyed by name and
    every other per-deployment output under ``deployments.<name>``."""
    if not settings.deployments:
        return {**shared, **units[None]}
    outputs = dict(shared)
    for key in PER_DEPLOYMENT_MAPS:
        outputs[key] = {name: unit[key] for name, unit in units.items()}
    outputs["airflow_env"] = pulumi.Output.secret(outputs["airflow_env"])
    outputs["deployments"] = {
        name: {key: value for key, value in unit.items() if key not in PER_DEPLOYMENT_MAPS}
        for name, unit in units.items()
    }
    return outputs


def credential_info(kind: str, generation: int, **fields: Any) -> pulumi.Output[dict[str, Any]]:
    """What the env says about its credential (kind, generation, id, created/expires), never the secret."""
    return pulumi.Output.from_input(fields).apply(
        lambda resolved: {"kind": kind, "generation": generation, **{k: v for k, v in resolved.items() if v}}
    )
