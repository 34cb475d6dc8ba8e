"""Find (and on request delete) objects under the XCom prefix that no XCom row references.

Objects are orphaned when rows go away without the backend's purge: `airflow db clean`, bulk clears,
deleted DAG runs. Run this where Airflow's metadata DB and the storage connection are both configured
(e.g. the scheduler's environment). A row references an object only as the backend itself would read it
(xcom_backend.references): by bucket and path, whatever connection id it was written with.

Never deletes live data: objects younger than ``older_than`` are kept (a running task may have written its
object but not yet committed its row); each candidate is checked again right before its delete — against a
fresh read of the DB, and its age again, since a re-created run rewrites the same retry-stable name — and an
object that vanished meanwhile is skipped, not an error.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from xcom_backend import references
from xcom_backend.errors import XComForeignReferenceError, XComReferenceError
from xcom_backend.references import XComIdentity

if TYPE_CHECKING:
    from xcom_backend.store import Store

_DURATION_RE = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class GcError(ValueError):
    """A gc option or setting that cannot be used."""


def parse_duration(text: str) -> timedelta:
    """``0``, ``90s``, ``30m``, ``12h``, ``7d`` or ``2w``."""
    if text.strip() == "0":
        return timedelta(0)
    match = _DURATION_RE.match(text.strip())
    if not match:
        raise GcError(f"--older-than {text!r} is not a duration such as 0, 30m, 12h, 7d or 2w")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


@dataclass(frozen=True)
class StoredObject:
    name: str  # below the base path
    url: str
    size: int
    modified: datetime | None
    version: tuple[Any, ...] = ()  # changes when the object is rewritten (timestamps alone have 1 s resolution)


@dataclass
class GcResult:
    deleted: list[StoredObject] = field(default_factory=list)
    kept: list[tuple[StoredObject, str]] = field(default_factory=list)  # (object, why it was not deleted)


def checked_store() -> Store:
    """The backend's store, refused when its path has no prefix: gc would list (and delete) the whole bucket."""
    from xcom_backend.store import current_store

    store = current_store()
    if not store.location.prefix:
        raise GcError(
            f"the XCom path {store.base_url} has no prefix: gc would treat every object in the bucket as an "
            "XCom. Point [common.io] xcom_objectstorage_path at a prefix used only for XComs (e.g. .../xcom)."
        )
    return store


XComRows = Callable[[Mapping[str, Any] | None], Iterable[tuple[XComIdentity, Any]]]


def airflow_xcom_rows(where: Mapping[str, Any] | None = None) -> Iterable[tuple[XComIdentity, Any]]:
    """(coordinates, value) of the metadata DB's XCom rows, optionally only those matching ``where``."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    columns = (XComModel.dag_id, XComModel.run_id, XComModel.task_id, XComModel.map_index, XComModel.key)
    query = select(*columns, XComModel.value)
    for name, value in (where or {}).items():
        query = query.where(getattr(XComModel, name) == value)
    with create_session() as session:
        for dag_id, run_id, task_id, map_index, key, value in session.execute(query.execution_options(yield_per=1000)):
            yield XComIdentity(dag_id, run_id, task_id, map_index, key), value


def referenced_names(store: Store, rows: XComRows, where: Mapping[str, Any] | None = None) -> set[str]:
    """Names (below the base) of the objects XCom rows point at, read the way the backend reads them."""
    names = set()
    for owner, value in rows(where):
        if not references.is_reference_shaped(value):
            continue
        try:
            reference = references.resolve(value, store.location, owner)
        except XComForeignReferenceError:
            continue  # names another XCom's object: protects nothing (that XCom's own row does, if it has one)
        except XComReferenceError:
            # A reference this version cannot read (a newer backend's during a rolling upgrade, a damaged one):
            # what it names is kept.
            url = references.stored_url(value)
            if url and (name := store.location.relative_name(url)):
                names.add(name)
            continue
        if reference is not None:
            names.add(reference.name)
    return names


def _modified(info: dict[str, Any]) -> datetime | None:
    for name in ("LastModified", "last_modified", "updated", "mtime", "timeCreated"):
        value = info.get(name)
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
        if isinstance(value, (int, float)):
            return datetime.fromtimestamp(value, tz=timezone.utc)
    return None


def _version(info: dict[str, Any]) -> tuple[Any, ...]:
    """What changes when an object is rewritten: its time, and its entity tag (timestamps have 1 s steps)."""
    tag = next((info[name] for name in ("ETag", "etag", "generation", "md5Hash") if info.get(name)), None)
    return (_modified(info), tag)


def _old_enough(modified: datetime | None, older_than: timedelta, now: datetime) -> bool:
    # An object of unknown age may belong to a task still running: only --older-than 0 takes it.
    return older_than == timedelta(0) or (modified is not None and now - modified >= older_than)


@dataclass
class Scan:
    orphans: list[StoredObject]
    not_xcom: list[str]  # objects under the prefix in no shape a backend writes: never deleted


def find_orphans(
    store: Store, older_than: timedelta, rows: XComRows = airflow_xcom_rows, now: datetime | None = None
) -> Scan:
    now = now or datetime.now(timezone.utc)
    listed = store.list_objects()
    referenced = referenced_names(store, rows)
    scan = Scan([], [])
    for name, info in sorted(listed.items()):
        if not references.xcom_shaped(name):
            scan.not_xcom.append(name)
            continue
        modified = _modified(info)
        if name not in referenced and _old_enough(modified, older_than, now):
            scan.orphans.append(
                StoredObject(name, store.url_of(name), int(info.get("size") or 0), modified, _version(info))
            )
    return scan


def _owner_filter(name: str) -> dict[str, Any] | None:
    """The rows that could reference ``name``, when its shape tells (else None: check every row)."""
    for compression in (None, *references.COMPRESSION_SUFFIXES):
        decoded = references.decode_object_name(name, compression)
        if decoded is not None:
            return {"dag_id": decoded.dag_id, "run_id": decoded.run_id, "task_id": decoded.task_id}
    if shaped := references.common_io_owner(name):
        owner = shaped[0]
        return {"dag_id": owner.dag_id, "run_id": owner.run_id, "task_id": owner.task_id}
    return None


def delete_orphans(
    store: Store, orphans: list[StoredObject], older_than: timedelta, rows: XComRows = airflow_xcom_rows
) -> GcResult:
    result = GcResult()
    fresh_referenced: set[str] | None = None
    for item in orphans:
        where = _owner_filter(item.name)
        if where is not None:
            referenced = item.name in referenced_names(store, rows, where)
        else:
            if fresh_referenced is None:
                fresh_referenced = referenced_names(store, rows)
            referenced = item.name in fresh_referenced
        if referenced:
            result.kept.append((item, "referenced by an XCom row again"))
            continue
        try:
            info = store.info(item.name)
        except PermissionError:  # S3 answers 403, not 404, for a missing key when listing is prefix-limited
            result.kept.append((item, "could not be checked again (permission denied)"))
            continue
        if info is None:
            result.kept.append((item, "already gone"))
            continue
        if _version(info) != item.version or not _old_enough(_modified(info), older_than, datetime.now(timezone.utc)):
            result.kept.append((item, "rewritten since it was listed"))
            continue
        if store.delete(item.name):
            result.deleted.append(item)
        else:
            result.kept.append((item, "already gone"))
    return result
