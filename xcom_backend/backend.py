"""The XCom backend the stacks point Airflow at: a drop-in for common-io's that never hands a task a wrong value.

Same ``[common.io]`` settings as Airflow's ``XComObjectStorageBackend``, and it accepts every path and codec
common-io does. Differences, each tested:

- values go through Airflow's serde exactly as the metadata-DB path does, so they come back with the same
  type and value whether they stayed in the DB or went to object storage;
- retry-stable object names ``<base>/<dag>/<run>/<task>/<map_index>/<key>.json[.gz]`` (see references.py);
- one storage request per write and one per read, with the filesystem resolved once per process;
- the DB row holds a reference with the URL, the owner's coordinates, sizes and a BLAKE3 digest of the stored
  bytes (SHA-256 in older rows); every read verifies them, and a missing, unreadable, truncated or corrupted
  object raises an error naming the URL and the task that wrote it — never a placeholder in place of the value;
- a value is read or purged as a reference only when it names this XCom's own object (references.py): a
  string or dict a user controls cannot make the backend read or delete anything else.

Reading what common-io wrote (a bare URL in its key shape under the base path) keeps working; the reverse
does not (see README, "Switching back").
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from airflow.sdk.bases.xcom import BaseXCom

from xcom_backend import codec, contract, mapped_reads, references
from xcom_backend.errors import (
    XComForeignReferenceError,
    XComObjectCorruptError,
    XComObjectError,
    XComObjectMissingError,
    XComReferenceError,
)
from xcom_backend.references import ObjectReference, XComIdentity
from xcom_backend.store import (
    clear_caches,
    configured_concurrency,
    configured_location,
    configured_threshold,
    current_store,
)

__all__ = [
    "ObjectStorageXComBackend",
    "XComForeignReferenceError",
    "XComObjectCorruptError",
    "XComObjectError",
    "XComObjectMissingError",
    "XComReferenceError",
    "clear_caches",
    "reading_xcom",
]

log = logging.getLogger(__name__)

# The XCom being pulled or deleted right now, set by the class methods the task SDK calls (get_one, get_all,
# delete) and by a mapped task's lazily read results (mapped_reads); there the SDK hands deserialize_value and
# purge only the value, not whose value it is. A metadata-DB row carries its own coordinates instead.
_EXPECTED: contextvars.ContextVar[XComIdentity | None] = contextvars.ContextVar("xcom_expected", default=None)


@contextlib.contextmanager
def reading_xcom(identity: XComIdentity) -> Iterator[None]:
    """Declare whose value is being read or purged (what get_one/get_all/delete do around the SDK's calls)."""
    token = _EXPECTED.set(identity)
    try:
        yield
    finally:
        _EXPECTED.reset(token)


def _owner_of(result: Any) -> XComIdentity | None:
    """Whose value ``result`` is: the coordinates a metadata-DB row carries (written by Airflow, not by users,
    who control only the value), else what the reading call declared (the task SDK passes values alone)."""
    fields = [getattr(result, name, None) for name in ("dag_id", "run_id", "task_id", "map_index", "key")]
    if None not in fields:
        return XComIdentity(*fields)
    return _EXPECTED.get()


class _Pending:
    """A value being read from object storage during reading_in_parallel (or the error its read raised)."""

    __slots__ = ("future",)

    def __init__(self, future: Future[Any]) -> None:
        self.future = future

    def value(self) -> Any:
        return self.future.result()


class _ParallelReads:
    """The read pool of one reading_in_parallel block, started at its first offloaded value."""

    def __init__(self) -> None:
        self.pool: ThreadPoolExecutor | None = None

    def submit(self, read: Callable[[], Any]) -> _Pending:
        if self.pool is None:
            current_store()  # built here, once: not by each reading thread (and its connection looked up here)
            self.pool = ThreadPoolExecutor(configured_concurrency(), thread_name_prefix="xcom-read")
        return _Pending(self.pool.submit(read))


_PARALLEL: contextvars.ContextVar[_ParallelReads | None] = contextvars.ContextVar("xcom_parallel", default=None)


def failed(error: BaseException) -> _Pending:
    future: Future[Any] = Future()
    future.set_exception(error)
    return _Pending(future)


@contextlib.contextmanager
def reading_in_parallel() -> Iterator[None]:
    """Within the block, deserialize_value starts each object's read on a pool of ``[xcom_backend]
    transfer_concurrency`` threads and returns a placeholder at once (its error too, kept for when the value is
    asked for); settled() swaps placeholders for values. Leaving the block waits for every read it started.

    For the SDK's pulls of many values (get_all, a mapped task's results), which deserialize them one by one:
    on a cloud store the objects' round trips then overlap instead of adding up."""
    reads = _ParallelReads()
    token = _PARALLEL.set(reads)
    try:
        yield
    finally:
        _PARALLEL.reset(token)
        if reads.pool is not None:
            reads.pool.shutdown(wait=True)


def settled(value: Any) -> Any:
    """A value, or a list of values, with reading_in_parallel's placeholders replaced by what they read."""
    if isinstance(value, _Pending):
        return value.value()
    if isinstance(value, list):
        return [item.value() if isinstance(item, _Pending) else item for item in value]
    return value


# A mapped task's results, read lazily by the SDK, declare their task, run and key and are read a window of
# [xcom_backend] transfer_concurrency at a time (mapped_reads).
mapped_reads.install(reading_xcom, reading_in_parallel, settled, configured_concurrency)


def _cause(err: BaseException) -> str:
    kind = "permission denied" if isinstance(err, PermissionError) else type(err).__name__
    return f"{kind}: {str(err)[:300]}"


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
        threshold = configured_threshold()
        if threshold < 0:  # object storage off, unless the value is ambiguous (below)
            serialized, encoded = codec.serialize(value), None  # what BaseXCom.serialize_value returns
        else:  # the same serde form; its bytes and json.dumps length, unless surely under the threshold
            serialized, encoded = codec.serialize_and_encode(value, threshold)
        # Values that could read back as a reference (cheap to tell: most are not even candidates).
        ambiguous = references.is_reference_shaped(serialized) and references.must_offload(
            serialized, configured_location()
        )
        if ambiguous and configured_location() is None:
            raise XComObjectError(
                f"this XCom value has the shape of the backend's references (the key {contract.REFERENCE_MARKER!r} "
                f"or the class {contract.REFERENCE_CLASSNAME!r}); it cannot be kept in the metadata DB unambiguously: "
                f"rename the key, or configure [{contract.AIRFLOW_CONFIG_SECTION}] {contract.PATH_KEY} so it can be "
                "offloaded"
            )
        if encoded is None and not ambiguous:  # most XComs: the DB path's work, 0.3 us; no store resolved
            return serialized
        if encoded is None:
            encoded = codec.encode(serialized)
        if encoded.json_size < threshold and not ambiguous:
            return serialized
        owner = XComIdentity(dag_id, run_id, task_id, -1 if map_index is None else map_index, key)
        if not owner.exact:
            raise XComObjectError(f"cannot offload an XCom without its dag, run, task and key ({owner.describe()})")

        store = current_store()
        json_size, stored = encoded.json_size, codec.compress(store.compression, encoded.data)
        del encoded  # compressed: the uncompressed bytes are not kept alive through the upload
        name = references.object_name(owner, store.compression, store.name_budget)
        url = store.url_of(name)
        try:
            store.write(name, stored)  # one PUT; a retry overwrites its own object
        except Exception as err:
            # Raised before the task hands anything to Airflow, so no XCom row will point at this object.
            raise XComObjectError(f"writing XCom object {url} (for {owner.describe()}) failed: {_cause(err)}") from err
        return references.bundled_reference(
            url,
            owner,
            size=json_size,
            stored_size=len(stored),
            checksum=codec.checksum(stored),
            compression=store.compression,
        )

    @staticmethod
    def deserialize_value(result: Any) -> Any:
        parallel = _PARALLEL.get()  # one of many values (reading_in_parallel): read alongside the others
        if parallel is None:
            return _deserialized(result, None)
        try:
            return _deserialized(result, parallel)
        except Exception as err:
            return failed(err)  # raised when this value is asked for, as a read of it alone would

    @classmethod
    def purge(cls, xcom: Any, *args: Any) -> None:
        raw = getattr(xcom, "value", None)
        if not references.is_reference_shaped(raw) or (base := configured_location()) is None:
            return
        owner = _owner_of(xcom)
        if owner is None or not owner.exact:
            log.warning("not purging an XCom whose coordinates are unknown: %.200r", raw)
            return
        try:
            reference = references.resolve(raw, base, owner)
        except XComReferenceError as err:
            # Nothing that is not this XCom's own object is deleted; and junk in a row must never make the
            # task unrunnable (purge runs before every retry): said in the log, not raised.
            log.warning("not purging %s: %s", owner.describe(), err)
            return
        if reference is not None:
            current_store().delete(reference.name)  # already gone counts as purged, on every store

    # The task SDK's entry points, wrapped to tell deserialize_value and purge whose value they handle.
    @classmethod
    def get_one(  # type: ignore[override]
        cls,
        *,
        key: str,
        dag_id: str,
        task_id: str,
        run_id: str,
        map_index: int | None = None,
        include_prior_dates: bool = False,
    ) -> Any:
        with reading_xcom(XComIdentity(dag_id, None if include_prior_dates else run_id, task_id, map_index, key)):
            return super().get_one(
                key=key,
                dag_id=dag_id,
                task_id=task_id,
                run_id=run_id,
                map_index=map_index,
                include_prior_dates=include_prior_dates,
            )

    @classmethod
    async def aget_one(  # type: ignore[override]
        cls,
        *,
        key: str,
        dag_id: str,
        task_id: str,
        run_id: str,
        map_index: int | None = None,
        include_prior_dates: bool = False,
    ) -> Any:
        with reading_xcom(XComIdentity(dag_id, None if include_prior_dates else run_id, task_id, map_index, key)):
            return await super().aget_one(
                key=key,
                dag_id=dag_id,
                task_id=task_id,
                run_id=run_id,
                map_index=map_index,
                include_prior_dates=include_prior_dates,
            )

    @classmethod
    def get_all(  # type: ignore[override]
        cls, *, key: str, dag_id: str, task_id: str, run_id: str, include_prior_dates: bool = False
    ) -> Any:
        """Every map index's value; their objects read ``[xcom_backend] transfer_concurrency`` at once."""
        owner = XComIdentity(dag_id, None if include_prior_dates else run_id, task_id, None, key)
        with reading_xcom(owner), reading_in_parallel():
            values = super().get_all(
                key=key, dag_id=dag_id, task_id=task_id, run_id=run_id, include_prior_dates=include_prior_dates
            )
            return settled(values)

    @classmethod
    async def aget_all(  # type: ignore[override]
        cls, *, key: str, dag_id: str, task_id: str, run_id: str, include_prior_dates: bool = False
    ) -> Any:
        owner = XComIdentity(dag_id, None if include_prior_dates else run_id, task_id, None, key)
        with reading_xcom(owner), reading_in_parallel():
            values = await super().aget_all(
                key=key, dag_id=dag_id, task_id=task_id, run_id=run_id, include_prior_dates=include_prior_dates
            )
            return settled(values)

    @classmethod
    def delete(  # type: ignore[override]
        cls, key: str, task_id: str, dag_id: str, run_id: str, map_index: int | None = None
    ) -> None:
        owner = XComIdentity(dag_id, run_id, task_id, -1 if map_index is None else map_index, key)
        with reading_xcom(owner):
            super().delete(key=key, task_id=task_id, dag_id=dag_id, run_id=run_id, map_index=map_index)


def _deserialized(result: Any, parallel: _ParallelReads | None) -> Any:
    """The value (or, with ``parallel``, a placeholder for its read): from its object, or from the row."""
    raw = getattr(result, "value", None)
    if references.is_reference_shaped(raw) and (reference := _reference_in(raw, _owner_of(result))) is not None:
        return parallel.submit(lambda: _read(reference)) if parallel is not None else _read(reference)
    return BaseXCom.deserialize_value(result)


def _reference_in(raw: Any, owner: XComIdentity | None) -> ObjectReference | None:
    base = configured_location()
    if base is None:
        if isinstance(raw, dict):
            raise XComReferenceError(
                f"XCom row holds a reference to {references.stored_url(raw)} but [common.io] "
                "xcom_objectstorage_path is not set"
            )
        return None
    return references.resolve(raw, base, owner)


def _fetch(reference: ObjectReference) -> bytes | bytearray:
    try:
        return current_store().read(reference.name, reference.stored_size)
    except FileNotFoundError as err:
        raise XComObjectMissingError(
            f"XCom object {reference.url} (written by {reference.writer}) is missing from object storage: "
            "deleted, expired by the lifecycle rule, or never completed. Re-run the writing task to recreate it."
        ) from err
    except Exception as err:
        # S3 answers 403, not 404, for a missing key to a credential that may not list the whole bucket.
        on_s3 = reference.url.startswith(("s3://", "s3a://", "s3n://"))
        gone = (
            " (or it is gone: S3 answers a missing object with 403 here)"
            if on_s3 and isinstance(err, PermissionError)
            else ""
        )
        raise XComObjectError(
            f"reading XCom object {reference.url} (written by {reference.writer}) failed: {_cause(err)}{gone}"
        ) from err


def _read(reference: ObjectReference) -> Any:
    stored = _fetch(reference)
    if reference.kind == "common-io":  # no checksum to verify; compression from the suffix, as common-io
        try:
            return codec.from_common_io_bytes(codec.decompress(reference.compression, stored))
        except ValueError as err:
            raise XComObjectCorruptError(
                f"XCom object {reference.url} (written by {reference.writer}) is not valid JSON ({err})"
            ) from err
    if len(stored) != reference.stored_size or not codec.checksum_matches(str(reference.checksum), stored):
        raise XComObjectCorruptError(
            f"XCom object {reference.url} (written by {reference.writer}) does not match its checksum: expected "
            f"{reference.stored_size} bytes with {str(reference.checksum)[:19]}..., found {len(stored)} bytes. "
            "It was truncated, overwritten or corrupted; re-run the writing task."
        )
    data = codec.decompress(reference.compression, stored)
    return codec.from_json_bytes(data) if reference.version >= 2 else codec.from_common_io_bytes(data)
