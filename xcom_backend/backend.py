"""The XCom backend the stacks point Airflow at: a drop-in for common-io's, better where it hurts.

Same ``[common.io]`` settings as Airflow's ``XComObjectStorageBackend``. Differences, each tested:

- retry-stable keys: ``<base>/<dag_id>/<run_id>/<task_id>/<map_index>/<key>.json[.gz]`` (components
  percent-encoded), so a retry overwrites its own object instead of orphaning one;
- one storage request per write (``pipe_file``; no ``exists()``/``mkdir()`` probes) and one per read
  (``cat_file``), with the filesystem resolved once per process;
- the DB row holds a small reference object with the URL, sizes and a SHA-256 of the stored bytes; reads
  verify them, and a missing, truncated or corrupted object raises an error naming the URL and the task
  that wrote it — never the URL in place of the value;
- outside a running task (scheduler, API server, CLI) an unreadable object yields a short preview
  instead of a crash.

Reading what common-io wrote (a bare URL string under the base path) keeps working. The reverse does
not: common-io hands our reference object back as the value (see README, "Switching back").
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import importlib
import json
import lzma
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import fsspec.utils
from airflow.providers.common.compat.sdk import conf
from airflow.sdk import ObjectStoragePath
from airflow.sdk.bases.xcom import BaseXCom
from airflow.utils.json import XComDecoder, XComEncoder

from xcom_backend import contract

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

REFERENCE_VERSION = 1
MAX_KEY_BYTES = 1024  # S3's limit; GCS and Azure allow as much or more
_COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": lambda data: gzip.compress(data, compresslevel=6, mtime=0),
    "bz2": bz2.compress,
    "lzma": lzma.compress,  # fsspec reads .lzma and .xz with LZMAFile, which takes the xz format
    "xz": lzma.compress,
}
_DECOMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.decompress,
    "bz2": bz2.decompress,
    "lzma": lzma.decompress,
    "xz": lzma.decompress,
}


class XComObjectError(RuntimeError):
    """An offloaded XCom that cannot be returned as it was written."""


class XComObjectMissingError(XComObjectError, FileNotFoundError):
    """The metadata DB points at an object that is not (or no longer) in storage."""


class XComObjectCorruptError(XComObjectError, ValueError):
    """The stored bytes differ from what was written (truncated, overwritten or corrupted)."""


@dataclass(frozen=True)
class Store:
    """The configured base path, resolved once per process."""

    base_url: str  # as configured, e.g. s3://my_aws_conn@bucket/xcom
    base_path: str  # the filesystem's own path for it, e.g. bucket/xcom
    fs: AbstractFileSystem
    compression: str | None

    def path_of(self, url: str) -> str:
        """The filesystem path of an object URL under the base."""
        return f"{self.base_path}/{url[len(self.base_url) + 1 :]}"

    def url_of(self, path: str) -> str:
        """The object URL of a filesystem path under the base."""
        return f"{self.base_url}/{path[len(self.base_path) + 1 :]}"


def _filesystem(base_url: str) -> tuple[AbstractFileSystem, str]:
    """(filesystem, path of the base in it).

    A scheme Airflow's providers register goes straight to that provider's get_fs(conn_id): that skips
    ObjectStoragePath's discovery, which imports every installed provider's filesystem module (measured:
    0.84 s of a 1.23 s first offload, half of it Google's hook while writing to S3).
    """
    location = contract.parse_objectstorage_path(base_url)
    if scheme := contract.STORE_SCHEMES.get(location.scheme):
        return importlib.import_module(scheme.fs_module).get_fs(location.conn_id, None), location.path
    path = ObjectStoragePath(base_url)  # any other scheme Airflow knows
    return path.fs, path.path.rstrip("/")


@cache
def _base_url() -> str | None:
    """The configured path, read from conf only (cheap; no connection or filesystem is resolved)."""
    return conf.get(contract.AIRFLOW_CONFIG_SECTION, contract.PATH_KEY, fallback="").rstrip("/") or None


@cache
def store() -> Store:
    base_url = conf.get_mandatory_value(contract.AIRFLOW_CONFIG_SECTION, contract.PATH_KEY).rstrip("/")
    compression = conf.get(contract.AIRFLOW_CONFIG_SECTION, contract.COMPRESSION_KEY, fallback=None) or None
    try:
        contract.validate_compression(compression)
    except contract.ContractError as err:
        raise ValueError(f"[{contract.AIRFLOW_CONFIG_SECTION}] {contract.COMPRESSION_KEY}: {err}") from None
    fs, base_path = _filesystem(base_url)
    return Store(base_url=base_url, base_path=base_path, fs=fs, compression=compression)


class _Digest(threading.Thread):
    """SHA-256 of a buffer, computed in a thread (hashlib releases the GIL) while I/O or parsing runs."""

    def __init__(self, data: bytes | bytearray) -> None:
        super().__init__(daemon=True)
        self.data, self.hexdigest = data, ""

    def run(self) -> None:
        self.hexdigest = hashlib.sha256(self.data).hexdigest()

    def result(self) -> str:
        self.join()
        return self.hexdigest


@cache
def _threshold() -> int:
    return conf.getint(contract.AIRFLOW_CONFIG_SECTION, contract.THRESHOLD_KEY, fallback=-1)


def clear_caches() -> None:
    """Forget settings and filesystem (for tests that change the config in-process)."""
    store.cache_clear()
    _base_url.cache_clear()
    _threshold.cache_clear()


def _component(value: object) -> str:
    """A path segment that survives every object store: percent-encoded, never '', '.' or '..'."""
    text = quote(str(value), safe="-_.~")
    return text if text.strip(".") else text.replace(".", "%2E") or "%00"


def object_key(*, dag_id: str, run_id: str, task_id: str, map_index: int, key: str, suffix: str) -> str:
    """The retry-stable object name (below the base path) for one XCom."""
    parts = [_component(dag_id), _component(run_id), _component(task_id), _component(map_index), _component(key)]
    name = "/".join(parts) + ".json" + suffix
    if len(name.encode()) > MAX_KEY_BYTES - 256:  # leave room for bucket paths and prefixes
        digest = hashlib.sha256("\0".join(map(str, (dag_id, run_id, task_id, map_index, key))).encode()).hexdigest()
        name = "/".join([*parts[:1], "_long", digest]) + ".json" + suffix
    return name


def _suffix(compression: str | None) -> str:
    if compression is None:
        return ""
    for suffix, codec in fsspec.utils.compressions.items():
        if codec == compression:
            return f".{suffix}"
    raise ValueError(f"no file suffix known for compression {compression!r}")


def writer_of(
    dag_id: str | None, run_id: str | None, task_id: str | None, map_index: int | None, key: str | None
) -> str:
    mapped = f"[{map_index}]" if map_index is not None and map_index >= 0 else ""
    return f"dag {dag_id} run {run_id} task {task_id}{mapped} key {key}"


def _in_task() -> bool:
    # The task runner exports the AIRFLOW_CTX_* variables while a task executes.
    return "AIRFLOW_CTX_TASK_ID" in os.environ


class ObjectStorageXComBackend(BaseXCom):
    """XComs at or above the threshold go to object storage; the DB keeps a verified reference."""

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
        if threshold < 0:  # object storage off: not even the store is resolved
            return BaseXCom.serialize_value(value)
        data = json.dumps(value, cls=XComEncoder).encode("utf-8")
        if len(data) < threshold:
            return BaseXCom.serialize_value(value)

        current = store()
        stored = _COMPRESSORS[current.compression](data) if current.compression else data
        digest = _Digest(stored)
        digest.start()
        name = object_key(
            dag_id=dag_id or "NO_DAG_ID",
            run_id=run_id or "NO_RUN_ID",
            task_id=task_id or "NO_TASK_ID",
            map_index=-1 if map_index is None else map_index,
            key=key or "NO_KEY",
            suffix=_suffix(current.compression),
        )
        url = f"{current.base_url}/{name}"
        writer = writer_of(dag_id, run_id, task_id, map_index, key)
        try:
            current.fs.pipe_file(f"{current.base_path}/{name}", stored)  # one PUT, overwrites a retry's object
        except Exception as err:
            # Raised before the task hands anything to Airflow, so no XCom row will point at this object.
            raise XComObjectError(f"writing XCom object {url} (for {writer}) failed: {_cause(err)}") from err
        finally:
            checksum = digest.result()
        reference = {
            contract.REFERENCE_MARKER: f"in object storage: {url} ({len(data)} bytes)",
            "v": REFERENCE_VERSION,
            "url": url,
            "size": len(data),
            "stored_size": len(stored),
            "sha256": checksum,
            "compression": current.compression,
            "writer": writer,
        }
        return BaseXCom.serialize_value(reference)

    @staticmethod
    def deserialize_value(result: Any) -> Any:
        value = BaseXCom.deserialize_value(result)
        # Decided from the configured path alone: an XCom kept in the DB never resolves the store.
        url = contract.reference_url(value, base) if (base := _base_url()) else None
        if url is None:
            if isinstance(value, dict) and value.get(contract.REFERENCE_MARKER) is not None:
                raise XComObjectError(
                    f"XCom object {value.get('url')} (written by {value.get('writer')}) is not under the configured "
                    f"[{contract.AIRFLOW_CONFIG_SECTION}] {contract.PATH_KEY}={base}; was the path changed?"
                )
            return value
        return _read_reference(url, value) if isinstance(value, dict) else _read_common_io_url(url)

    @classmethod
    def purge(cls, xcom: Any, *args: Any) -> None:
        base = _base_url()
        url = contract.reference_url(contract.decode_db_value(getattr(xcom, "value", None)), base) if base else None
        if url is not None:
            current = store()
            # A single DELETE; deleting a missing object succeeds on every store.
            current.fs.rm_file(current.path_of(url))


def _fetch(url: str, writer: str) -> bytes:
    current = store()
    try:
        return current.fs.cat_file(current.path_of(url))
    except FileNotFoundError as err:
        raise XComObjectMissingError(
            f"XCom object {url} (written by {writer}) is missing from object storage: deleted, expired by the "
            "lifecycle rule, or never completed. Re-run the writing task to recreate it."
        ) from err
    except Exception as err:
        raise XComObjectError(f"reading XCom object {url} (written by {writer}) failed: {_cause(err)}") from err


def _cause(err: BaseException) -> str:
    kind = "permission denied" if isinstance(err, PermissionError) else type(err).__name__
    return f"{kind}: {str(err)[:300]}"


def _preview(reference: dict[str, Any], err: BaseException) -> str:
    return f"{reference[contract.REFERENCE_MARKER]}; not readable here: {type(err).__name__}"


def _read_reference(url: str, reference: dict[str, Any]) -> Any:
    writer = reference.get("writer", "an unknown task")
    try:
        stored = _fetch(url, writer)
    except Exception as err:
        if _in_task():
            raise
        return _preview(reference, err)  # scheduler / API server / CLI without credentials: no crash
    corrupt = XComObjectCorruptError(
        f"XCom object {url} (written by {writer}) does not match its checksum: expected "
        f"{reference['stored_size']} bytes with sha256 {reference['sha256'][:12]}..., found {len(stored)} "
        "bytes. It was truncated, overwritten or corrupted; re-run the writing task."
    )
    if len(stored) != reference["stored_size"]:
        raise corrupt
    digest = _Digest(stored)
    digest.start()  # verified while the JSON is parsed; a parse error on corrupt bytes reports the corruption
    compression = reference.get("compression")
    try:
        value = json.loads(_DECOMPRESSORS[compression](stored) if compression else stored, cls=XComDecoder)
    except Exception:
        if digest.result() != reference["sha256"]:
            raise corrupt from None
        raise
    if digest.result() != reference["sha256"]:
        raise corrupt
    return value


def _read_common_io_url(url: str) -> Any:
    """An object written by common-io's backend: compression from the suffix, no checksum to verify."""
    stored = _fetch(url, "common-io's backend")
    compression = fsspec.utils.infer_compression(url)
    data = _DECOMPRESSORS[compression](stored) if compression in _DECOMPRESSORS else stored
    try:
        return json.loads(data, cls=XComDecoder)
    except ValueError as err:
        raise XComObjectCorruptError(f"XCom object {url} is not valid JSON ({err})") from err
