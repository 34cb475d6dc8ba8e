"""A mapped task's results, read lazily through the task SDK's own classes, are read as that task's.

The SDK's LazyXComSequence hands deserialize_value a value alone; xcom_backend.mapped_reads wraps its
__getitem__ to declare whose results they are. These tests go through the real SDK classes (a DAG, its
XComArg, the sequence, its iterator and slices), answering only the supervisor's messages, and import the
backend the way a task process does, so they fail if the SDK changes the shape the wrapper relies on.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from types import SimpleNamespace
from typing import Any

import pendulum
import pytest
from airflow.sdk import dag, task
from airflow.sdk.definitions.xcom_arg import PlainXComArg
from airflow.sdk.execution_time import comms, task_runner
from airflow.sdk.execution_time import xcom as sdk_xcom
from airflow.sdk.execution_time.lazy_sequence import LazyXComSequence

from tests.xcom_calls import clear_all_caches, push
from xcom_backend import backend, contract, mapped_reads
from xcom_backend.backend import ObjectStorageXComBackend, XComForeignReferenceError, reading_xcom
from xcom_backend.references import XComIdentity

RUN_ID = "manual__2026-01-01T00:00:00+00:00"
BIG = {"pad": "m" * 3000}


def install_again() -> bool:
    return mapped_reads.install(reading_xcom, backend.reading_in_parallel, backend.settled, lambda: 3)


def build_dag() -> Any:
    @dag(dag_id="mapped_reads", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"))
    def mapped_reads_dag():
        @task
        def mapped(index: int) -> dict:
            return {"index": index}

        @task
        def reduce(values) -> None:
            pass

        @task
        def sibling(index: int) -> dict:
            return {"index": index}

        reduce(mapped.expand(index=[0, 1]))
        sibling.expand(index=[0, 1])

    return mapped_reads_dag()


class Supervisor:
    """Answers the SDK's messages from rows held here, as the API server answers them from the DB."""

    def __init__(self, rows: dict[tuple[str, int], Any]) -> None:
        self.rows, self.sent = rows, []

    def send(self, msg: Any) -> Any:
        self.sent.append(msg)
        values = [value for (task_id, _), value in sorted(self.rows.items()) if task_id == msg.task_id]
        if isinstance(msg, comms.GetXComCount):
            return comms.XComCountResponse(len=len(values))
        if isinstance(msg, comms.GetXComSequenceItem):
            if msg.offset >= len(values):
                return comms.ErrorResponse()
            return comms.XComSequenceIndexResult(root=values[msg.offset])
        if isinstance(msg, comms.GetXComSequenceSlice):
            return comms.XComSequenceSliceResult(root=values[msg.start : msg.stop : msg.step])
        raise AssertionError(f"unexpected message {msg!r}")


@pytest.fixture
def stored(tmp_path, monkeypatch) -> dict[tuple[str, int], Any]:
    """Offloaded results of ``mapped`` (index 0, 1) and ``sibling`` (index 0), written by the backend."""
    monkeypatch.setenv(contract.PATH_ENV, f"file://{tmp_path}/xcom")
    monkeypatch.setenv(contract.THRESHOLD_ENV, "1000")
    clear_all_caches()
    monkeypatch.setattr(sdk_xcom, "XCom", ObjectStorageXComBackend)  # as resolve_xcom_backend() gives it
    rows = {
        (task_id, index): push({"index": index, "task": task_id, **BIG}, identity(task_id, index))
        for task_id, index in (("mapped", 0), ("mapped", 1), ("sibling", 0))
    }
    yield rows
    clear_all_caches()


def identity(task_id: str, index: int) -> XComIdentity:
    return XComIdentity("mapped_reads", RUN_ID, task_id, index, "return_value")


def resolve_mapped(rows: dict[tuple[str, int], Any], monkeypatch) -> tuple[Any, Supervisor]:
    supervisor = Supervisor(rows)
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", supervisor, raising=False)
    reduce_task = build_dag().get_task("reduce")
    (xcom_arg,) = [arg for arg in reduce_task.op_args if isinstance(arg, PlainXComArg)]
    return xcom_arg.resolve({"ti": SimpleNamespace(run_id=RUN_ID)}), supervisor


def test_the_sequences_item_access_is_wrapped() -> None:
    assert getattr(LazyXComSequence.__getitem__, mapped_reads._WRAPPED, False)
    assert install_again()  # idempotent
    assert not getattr(LazyXComSequence.__getitem__.__wrapped__, mapped_reads._WRAPPED, False)


def test_a_task_process_installs_the_wrapper_before_it_renders_anything() -> None:
    # The task runner imports the configured backend while the SDK's xcom_arg module is still being imported.
    probe = (
        "import airflow.sdk.execution_time.task_runner\n"
        "from airflow.sdk.execution_time.lazy_sequence import LazyXComSequence\n"
        f"print(getattr(LazyXComSequence.__getitem__, {mapped_reads._WRAPPED!r}, False))\n"
    )
    env = {**os.environ, contract.XCOM_BACKEND_ENV: "xcom_backend.backend.ObjectStorageXComBackend"}
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip().splitlines()[-1:] == ["True"], result.stdout + result.stderr
    assert "cannot be read" not in result.stdout + result.stderr


def test_items_iteration_and_slices_read_the_mapped_tasks_own_objects(stored, monkeypatch) -> None:
    sequence, supervisor = resolve_mapped(stored, monkeypatch)
    assert isinstance(sequence, LazyXComSequence), type(sequence)  # the SDK's class: isinstance checks hold
    assert [value["index"] for value in sequence] == [0, 1]
    asked = {type(msg).__name__ for msg in supervisor.sent}
    assert asked == {"GetXComSequenceSlice"}, asked  # in order: items come in windows (slice requests)
    assert [value["index"] for value in sequence[0:2]] == [0, 1] and len(sequence) == 2
    supervisor.sent.clear()
    assert sequence[1]["index"] == 1 and sequence[-1]["index"] == 1  # out of order: the SDK's item requests
    assert {type(msg).__name__ for msg in supervisor.sent} == {"GetXComSequenceItem"}


def test_a_value_that_cannot_be_read_raises_only_at_its_own_index(stored, monkeypatch) -> None:
    rows = {
        ("mapped", 0): stored[("mapped", 0)],
        ("mapped", 1): {"index": 1},  # kept in the DB
        ("mapped", 2): {"__classname__": "nonexistent.module.Klass", "__version__": 1, "__data__": {}},
        ("mapped", 3): stored[("mapped", 1)],
    }
    sequence, _ = resolve_mapped(rows, monkeypatch)
    iterator = iter(sequence)
    assert next(iterator)["index"] == 0 and next(iterator) == {"index": 1}
    with pytest.raises(ImportError):
        next(iterator)
    assert sequence[3]["index"] == 1  # read on its own, after the failure


def test_a_value_is_handed_out_once_and_read_again_when_asked_again(stored, monkeypatch) -> None:
    sequence, _ = resolve_mapped(stored, monkeypatch)
    first = sequence[0]
    again = sequence[0]  # not in order any more: read again, as the SDK would, a fresh object
    assert first == again and first is not again
    assert next(iter(sequence)) is not first


def test_a_bad_concurrency_setting_does_not_break_values_kept_in_the_db(monkeypatch) -> None:
    monkeypatch.setenv(contract.CONCURRENCY_ENV, "ten")
    clear_all_caches()
    sequence, _ = resolve_mapped({("mapped", 0): {"index": 0}, ("mapped", 1): {"index": 1}}, monkeypatch)
    try:
        assert [value["index"] for value in sequence] == [0, 1]
    finally:
        clear_all_caches()


def test_items_are_asked_for_a_window_at_a_time_and_read_in_parallel(stored, monkeypatch) -> None:
    more = {("mapped", index): push({"index": index, **BIG}, identity("mapped", index)) for index in range(7)}
    monkeypatch.setenv(contract.CONCURRENCY_ENV, "3")
    clear_all_caches()
    sequence, supervisor = resolve_mapped(more, monkeypatch)
    threads: set[str] = set()
    read = backend._read

    def recorded(reference):
        threads.add(threading.current_thread().name)
        return read(reference)

    monkeypatch.setattr(backend, "_read", recorded)
    assert [value["index"] for value in sequence] == list(range(7))
    slices = [(msg.start, msg.stop) for msg in supervisor.sent if type(msg).__name__ == "GetXComSequenceSlice"]
    assert slices == [(0, 3), (3, 6), (6, 9), (7, 10)], slices  # the last one finds the end
    assert threads and all(name.startswith("xcom-read") for name in threads), threads


def test_a_siblings_reference_planted_in_the_sequence_is_refused(stored, monkeypatch) -> None:
    planted = {**stored, ("mapped", 1): stored[("sibling", 0)]}  # an edited row: the sibling's reference
    sequence, _ = resolve_mapped(planted, monkeypatch)
    assert sequence[0]["task"] == "mapped"
    with pytest.raises(XComForeignReferenceError, match="sibling"):
        sequence[1]


@pytest.mark.parametrize(
    "planted_owner",
    [
        XComIdentity("other_dag", RUN_ID, "mapped", 1, "return_value"),  # scheduled run ids repeat across DAGs
        XComIdentity("mapped_reads", "manual__another_run", "mapped", 1, "return_value"),
        XComIdentity("mapped_reads", RUN_ID, "mapped", 1, "another_key"),
    ],
    ids=["another dag", "another run", "another key"],
)
def test_another_xcoms_reference_planted_in_the_sequence_is_refused(stored, monkeypatch, planted_owner) -> None:
    planted = {**stored, ("mapped", 1): push({"planted": True, **BIG}, planted_owner)}
    sequence, _ = resolve_mapped(planted, monkeypatch)
    assert sequence[0]["task"] == "mapped"
    with pytest.raises(XComForeignReferenceError):
        sequence[1]


def test_an_sdk_without_that_shape_fails_lazy_reads_only(monkeypatch) -> None:
    from airflow.sdk.execution_time import lazy_sequence

    class PlainSequence:  # not an attrs class: no constructor arguments to read
        def __getitem__(self, key):
            return key

    monkeypatch.setattr(lazy_sequence, "LazyXComSequence", PlainSequence)
    assert install_again() is False
    assert PlainSequence()[3] == 3  # left as it was


def test_without_the_wrapper_a_lazily_read_reference_is_refused_not_read(stored, monkeypatch) -> None:
    monkeypatch.setattr(LazyXComSequence, "__getitem__", LazyXComSequence.__getitem__.__wrapped__)
    sequence, _ = resolve_mapped(stored, monkeypatch)
    with pytest.raises(Exception, match="cannot tell which XCom"):
        sequence[0]
