"""The backend's three calls as the task SDK makes them, and cache resets for tests that change the config."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict
from types import SimpleNamespace
from typing import Any

from airflow.providers.common.io.xcom import backend as common_io

from xcom_backend.backend import ObjectStorageXComBackend as Backend
from xcom_backend.backend import reading_xcom
from xcom_backend.references import XComIdentity

RUN_ID = "manual__2026-01-01T00:00:00+00:00"
OWNER = XComIdentity("d", RUN_ID, "t", -1, "big")


def clear_all_caches() -> None:
    """Our settings cache, common-io's, and Airflow's per-connection filesystem cache."""
    from airflow.sdk.io import store as airflow_store

    airflow_store._STORE_CACHE.clear()
    from xcom_backend.store import clear_caches

    clear_caches()
    for getter in (common_io._get_base_path, common_io._get_compression, common_io._get_threshold):
        getter.cache_clear()


def trust_in_process(ca_file: str) -> None:
    """Trust Azurite's throwaway CA in this process: aiohttp (adlfs) built its default TLS context at import,
    before the emulator's certificate existed, so SSL_CERT_FILE set now would not reach it."""
    from aiohttp import connector

    connector._SSL_CONTEXT_VERIFIED.load_verify_locations(cafile=ca_file)


def use_emitted_env(env: Mapping[str, str], client_env: Mapping[str, str], setenv: Callable[[str, str], Any]) -> None:
    """The stack's emitted env and the emulator's client env (endpoint, CA), and nothing else that grants
    access, in this process; caches cleared so the backend resolves its store from them."""
    for name, value in {**env, **client_env, "AWS_EC2_METADATA_DISABLED": "true"}.items():
        setenv(name, value)
    if ca_file := client_env.get("SSL_CERT_FILE"):
        trust_in_process(ca_file)
    clear_all_caches()


def push(value: Any, owner: XComIdentity = OWNER) -> Any:
    return Backend.serialize_value(value, **asdict(owner))


def pull(stored: Any, owner: XComIdentity | None = OWNER) -> Any:
    """deserialize_value as the task SDK calls it for a pull of ``owner``'s XCom: on the supervisor's answer,
    which carries the key but no other coordinate."""
    from airflow.sdk.execution_time.comms import XComResult

    answer = XComResult(key=(owner and owner.key) or OWNER.key, value=stored)
    if owner is None:
        return Backend.deserialize_value(answer)
    with reading_xcom(owner):
        return Backend.deserialize_value(answer)


def metadata_row(stored: Any, owner: XComIdentity = OWNER) -> Any:
    """An XCom row of Airflow's metadata DB (its ORM class) holding ``stored`` at ``owner``'s coordinates: what
    Airflow core hands a backend, with no get_one/get_all around the call."""
    from airflow.models.xcom import XComModel

    return XComModel(dag_run_id=1, value=stored, **asdict(owner))


def pull_row(stored: Any, owner: XComIdentity = OWNER) -> Any:
    """deserialize_value as Airflow core calls it: on a metadata-DB row, which carries its own coordinates."""
    return Backend.deserialize_value(metadata_row(stored, owner))


def purge(stored: Any, owner: XComIdentity = OWNER) -> None:
    """purge as the task SDK's XCom.delete calls it before a retried try."""
    with reading_xcom(owner):
        Backend.purge(SimpleNamespace(value=stored))
