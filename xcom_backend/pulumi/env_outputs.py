"""The outputs every cloud's component ends with: the storage path and the secret Airflow env."""

from __future__ import annotations

from typing import Any

import pulumi

from xcom_backend import contract
from xcom_backend.pulumi.settings import Settings


def airflow_env_outputs(
    settings: Settings, bucket_name: pulumi.Output[str], connection: pulumi.Output[Any]
) -> dict[str, pulumi.Output[Any]]:
    """``objectstorage_path`` (plain) and ``airflow_env`` (a Pulumi secret: the connection may hold a key)."""
    env = pulumi.Output.all(bucket_name, connection).apply(
        lambda args: contract.XComEnv(
            cloud=settings.cloud,
            conn_id=settings.conn_id,
            bucket=args[0],
            prefix=settings.prefix,
            threshold=settings.threshold,
            compression=settings.compression,
            backend=settings.backend,
            connection=args[1],
        ).as_env()
    )
    path = bucket_name.apply(
        lambda name: contract.objectstorage_path(settings.cloud, settings.conn_id, name, settings.prefix)
    )
    return {"objectstorage_path": path, "airflow_env": pulumi.Output.secret(env)}
