"""The XCom backend the stacks point Airflow at.

It reads the same ``[common.io]`` settings as Airflow's ``XComObjectStorageBackend`` and stores
references in the same form (the object's full URL), so either class can read what the other wrote.
Unlike common-io it writes without ``exists()``/``mkdir()`` probes (object stores have no directories,
and the probes need bucket-level permissions the least-privilege policy does not grant) and it never
hands back the URL string in place of a value whose object is missing.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from functools import cache
from typing import TYPE_CHECKING, Any

import fsspec.utils
from airflow.providers.common.compat.sdk import conf
from airflow.sdk import ObjectStoragePath
from airflow.sdk.bases.xcom import BaseXCom
from airflow.utils.json import XComDecoder, XComEncoder

from xcom_backend import contract

if TYPE_CHECKING:
    from airflow.sdk.execution_time.comms import XComResult


class XComObjectMissingError(FileNotFoundError):
    """The metadata DB points at an object that is not (or no longer) in storage."""


@cache
def _base_path() -> ObjectStoragePath:
    return ObjectStoragePath(conf.get_mandatory_value(contract.AIRFLOW_CONFIG_SECTION, contract.PATH_KEY))


@cache
def _threshold() -> int:
    return conf.getint(contract.AIRFLOW_CONFIG_SECTION, contract.THRESHOLD_KEY, fallback=-1)


@cache
def _compression() -> str | None:
    value = conf.get(contract.AIRFLOW_CONFIG_SECTION, contract.COMPRESSION_KEY, fallback=None) or None
    if value is not None and value not in fsspec.utils.compressions.values():
        raise ValueError(
            f"[{contract.AIRFLOW_CONFIG_SECTION}] {contract.COMPRESSION_KEY}={value!r} is not a codec fsspec "
            f"knows here; use one of {', '.join(sorted(fsspec.utils.compressions.values()))}"
        )
    return value


def _suffix(compression: str | None) -> str:
    """File suffix from which readers (ours and common-io's) infer the codec."""
    if compression is None:
        return ""
    for suffix, codec in fsspec.utils.compressions.items():
        if codec == compression:
            return f".{suffix}"
    raise ValueError(f"no file suffix known for compression {compression!r}")


def clear_caches() -> None:
    """Forget the settings read from Airflow's conf (for tests that change them in-process)."""
    for getter in (_base_path, _threshold, _compression):
        getter.cache_clear()


def _reference_path(value: Any) -> ObjectStoragePath | None:
    """The object a stored DB value points at, or None when the value itself is the XCom."""
    if not isinstance(value, str):
        return None
    base = str(_base_path()).rstrip("/") + "/"
    if not value.startswith(base) or ".." in value[len(base) :].split("/"):
        return None
    return ObjectStoragePath(value)


class ObjectStorageXComBackend(BaseXCom):
    """XComs at or above the threshold go to object storage; the DB keeps their URL."""

    @staticmethod
    def serialize_value(  # type: ignore[override]
        value: Any,
        *,
        key: str | None = None,
        task_id: str | None = None,
        dag_id: str | None = None,
        run_id: str | None = None,
        map_index: int | None = None,
    ) -> Any:
        threshold = _threshold()
        if threshold < 0:
            return BaseXCom.serialize_value(value)
        data = json.dumps(value, cls=XComEncoder).encode("utf-8")
        if len(data) < threshold:
            return BaseXCom.serialize_value(value)

        compression = _compression()
        path = _base_path().joinpath(
            dag_id or "NO_DAG_ID",
            run_id or "NO_RUN_ID",
            task_id or "NO_TASK_ID",
            f"{uuid.uuid4()}.json{_suffix(compression)}",
        )
        # One write, no exists()/mkdir() probes: a fresh uuid cannot collide in practice.
        with path.open(mode="wb", compression=compression) as stream:
            stream.write(data)
        return BaseXCom.serialize_value(str(path))

    @staticmethod
    def deserialize_value(result: Any) -> Any:
        value = BaseXCom.deserialize_value(result)
        path = _reference_path(value)
        if path is None:
            return value
        try:
            with path.open(mode="rb", compression="infer") as stream:
                return json.load(stream, cls=XComDecoder)
        except FileNotFoundError as err:
            raise XComObjectMissingError(
                f"XCom object {value} is missing from object storage (deleted, expired by the lifecycle "
                "rule, or not readable with this connection); refusing to return its URL as the value"
            ) from err

    @classmethod
    def purge(cls, xcom: XComResult, *args: Any) -> None:
        path = _reference_path(getattr(xcom, "value", None))
        if path is None:
            return
        # rm_file is a single DELETE; ObjectStoragePath.unlink goes through a bulk delete whose
        # per-key failures some filesystems (s3fs) ignore.
        with contextlib.suppress(FileNotFoundError):
            path.fs.rm_file(path.path)
