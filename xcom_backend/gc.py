"""Find (and on request delete) objects under the XCom prefix that no XCom row references.

Objects are orphaned when rows go away without the backend's purge: `airflow db clean`, bulk clears,
deleted DAG runs. Run this where Airflow's metadata DB and the storage connection are both configured
(e.g. the scheduler's environment). Objects younger than ``older_than`` are kept: a running task may
have written its object but not yet committed the row that points at it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from xcom_backend import contract

_DURATION_RE = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class GcError(ValueError):
    """A gc option that cannot be used."""


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
    url: str
    size: int
    modified: datetime | None


def referenced_urls(base_url: str) -> set[str]:
    """Every object URL the metadata DB's XCom rows point at (bundled and common-io references)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    urls = set()
    with create_session() as session:
        for value in session.scalars(select(XComModel.value).execution_options(yield_per=1000)):
            url = contract.reference_url(contract.decode_db_value(value), base_url)
            if url:
                urls.add(url)
    return urls


def _modified(info: dict[str, Any]) -> datetime | None:
    for field in ("LastModified", "last_modified", "updated", "mtime", "timeCreated"):
        value = info.get(field)
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


def stored_objects() -> Iterator[StoredObject]:
    from xcom_backend.backend import store

    current = store()
    for path, info in current.fs.find(current.base_path, detail=True).items():
        if info.get("type") == "directory":
            continue
        yield StoredObject(url=current.url_of(path), size=int(info.get("size") or 0), modified=_modified(info))


def find_orphans(older_than: timedelta, now: datetime | None = None) -> list[StoredObject]:
    from xcom_backend.backend import store

    now = now or datetime.now(timezone.utc)
    referenced = referenced_urls(store().base_url)
    return [
        item
        for item in stored_objects()
        # An object of unknown age may belong to a task still running: only --older-than 0 takes it.
        if item.url not in referenced
        and (older_than == timedelta(0) or (item.modified is not None and now - item.modified >= older_than))
    ]


def delete(objects: list[StoredObject]) -> None:
    from xcom_backend.backend import store

    current = store()
    for item in objects:
        current.fs.rm_file(current.path_of(item.url))
