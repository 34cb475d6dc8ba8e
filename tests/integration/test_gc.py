"""`xcom-backend gc` against S3 (moto, IAM and the s3:prefix condition enforced), GCS (IAM proxy) and Azure,
with the credential each stack emits: it never deletes live or foreign data.

The XCom rows come from a list here (gc takes its row source as an argument); the e2e test runs gc against a
real metadata DB. What is proven here is the storage side: listing, re-checking and deleting on each store.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DeployedStack, deploy
from tests.stores import AdminBucket
from tests.xcom_calls import RUN_ID, clear_all_caches, push, use_emitted_env
from xcom_backend import contract, gc
from xcom_backend.references import XComIdentity, object_name, stored_url
from xcom_backend.store import current_store

pytestmark = pytest.mark.integration

EMULATORS = {"aws": "moto_conditions", "gcp": "gcs", "azure": "azurite"}
BIG = {"pad": "g" * 3000}
ZERO = timedelta(0)


class Rows:
    """XCom rows as gc reads them, kept in a list the test edits between gc's steps."""

    def __init__(self) -> None:
        self.rows: list[tuple[XComIdentity, Any]] = []

    def __call__(self, where: Mapping[str, Any] | None = None) -> Iterable[tuple[XComIdentity, Any]]:
        for owner, value in list(self.rows):
            if all(getattr(owner, name) == wanted for name, wanted in (where or {}).items()):
                yield owner, value

    def push(self, owner: XComIdentity, value: Any) -> Any:
        stored = push(value, owner)
        self.rows.append((owner, stored))
        return stored


@pytest.fixture(scope="module", params=list(EMULATORS))
def gc_stack(request: pytest.FixtureRequest) -> Iterator[DeployedStack]:
    stack = deploy(request.getfixturevalue(EMULATORS[request.param]), stack="gc", prefix="gcprefix")
    yield stack
    stack.mocks.destroy()


@pytest.fixture
def emitted_env(gc_stack: DeployedStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[DeployedStack]:
    use_emitted_env(gc_stack.env, gc_stack.server.client_env, monkeypatch.setenv)
    yield gc_stack
    admin = AdminBucket(gc_stack.server, gc_stack.bucket)
    for key in admin.keys("gcprefix/"):
        admin.delete(key)
    clear_all_caches()


def owner(task: str) -> XComIdentity:
    return XComIdentity("gc_dag", RUN_ID, task, -1, "return_value")


def test_an_empty_prefix_is_listed_with_the_emitted_credential(emitted_env: DeployedStack) -> None:
    # s3fs's find() HEADs the bare key and gcsfs's lists "<prefix>" without the slash when "<prefix>/" is
    # empty: both denied to a credential limited to "<prefix>/". gc lists "<prefix>/" only.
    store = gc.checked_store()
    assert store.list_objects() == {}
    assert gc.find_orphans(store, ZERO, Rows()).orphans == []


def test_only_unreferenced_objects_are_orphans_whatever_connection_id_wrote_them(
    emitted_env: DeployedStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows, admin = Rows(), AdminBucket(emitted_env.server, emitted_env.bucket)
    rows.push(owner("live"), BIG)
    admin.put("gcprefix/gc_dag/run/orphan/-1/return_value.json", b"{}")
    # The connection is renamed: rows still name the old id; the objects are the same.
    location = contract.parse_objectstorage_path(emitted_env.env[contract.PATH_ENV])
    old_conn = contract.connection_env(location.conn_id)
    monkeypatch.setenv(contract.connection_env("renamed_conn"), emitted_env.env[old_conn])
    monkeypatch.setenv(contract.PATH_ENV, f"{location.scheme}://renamed_conn@{location.bucket}/{location.prefix}")
    monkeypatch.delenv(old_conn)
    clear_all_caches()
    orphans = gc.find_orphans(gc.checked_store(), ZERO, rows).orphans
    assert [item.name for item in orphans] == ["gc_dag/run/orphan/-1/return_value.json"]


def test_only_objects_a_backend_writes_are_candidates(emitted_env: DeployedStack) -> None:
    rows, admin = Rows(), AdminBucket(emitted_env.server, emitted_env.bucket)
    for key in ("gcprefix/reports/x.csv", "gcprefix/_verify/probe.json", "gcprefix/notes"):
        admin.put(key, b"a,b")
    scan = gc.find_orphans(gc.checked_store(), ZERO, rows)
    assert scan.orphans == [] and scan.not_xcom == ["_verify/probe.json", "notes", "reports/x.csv"]


def test_rows_protect_their_own_objects_and_what_they_cannot_read(emitted_env: DeployedStack) -> None:
    rows = Rows()
    newer = rows.push(owner("newer"), BIG)
    rows.rows[-1] = (owner("newer"), {**newer, "v": 3})  # written by a newer backend (rolling upgrade)
    victim = push(BIG, owner("victim"))  # its row is gone (db clean): an orphan ...
    rows.rows.append((owner("forger"), {**victim}))  # ... which another row's copied reference does not save
    rows.rows.append((owner("string"), stored_url(victim)))  # nor does a string naming it
    scan = gc.find_orphans(gc.checked_store(), ZERO, rows)
    assert [item.name for item in scan.orphans] == [object_name(owner("victim"), None)]


def test_each_candidate_is_checked_again_right_before_its_delete(emitted_env: DeployedStack) -> None:
    rows, admin = Rows(), AdminBucket(emitted_env.server, emitted_env.bucket)
    store = gc.checked_store()
    names = {task: object_name(owner(task), None) for task in "abcd"}
    for task in "abcd":
        push(BIG, owner(task))  # objects whose rows are gone (db clean)
    orphans = gc.find_orphans(store, ZERO, rows).orphans
    assert sorted(item.name for item in orphans) == sorted(names.values())

    rows.push(owner("a"), BIG)  # the run was re-created: its task rewrote the same retry-stable name
    admin.delete("gcprefix/" + names["b"])  # vanished meanwhile (another gc, the lifecycle rule)
    admin.put("gcprefix/" + names["c"], b"{}")  # rewritten after the listing, row not yet committed
    result = gc.delete_orphans(store, orphans, ZERO, rows)

    assert [item.name for item in result.deleted] == [names["d"]]
    kept = {item.name: why for item, why in result.kept}
    assert kept == {
        names["a"]: "referenced by an XCom row again",
        names["b"]: "already gone",
        names["c"]: "rewritten since it was listed",
    }
    assert sorted(admin.keys("gcprefix/")) == sorted("gcprefix/" + names[task] for task in "ac")


def test_a_path_without_a_prefix_is_refused(
    emitted_env: DeployedStack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    location = contract.parse_objectstorage_path(emitted_env.env[contract.PATH_ENV])
    monkeypatch.setenv(contract.PATH_ENV, f"{location.scheme}://{location.conn_id}@{location.bucket}")
    clear_all_caches()
    with pytest.raises(gc.GcError, match="has no prefix"):
        gc.checked_store()
    assert current_store().location.prefix == ""
    result = subprocess.run(
        [sys.executable, "-m", "xcom_backend", "gc"],
        env={**os.environ, "AIRFLOW_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 2 and "has no prefix" in result.stderr, result.stderr[-2000:]
