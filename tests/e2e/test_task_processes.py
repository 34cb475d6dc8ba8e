"""The bundled backend in real task processes, on S3, GCS and Azure: Airflow's LocalExecutor (with its API
server and metadata DB) runs every task in a fresh process, as a deployment does. `airflow dags test` alone
runs all tasks in one process, which hid a stand-in value handed to a task whose XCom object was gone."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from emulation.airflow_run import AirflowHome, printed, run_dag_in_task_processes
from tests.stores import AdminBucket
from xcom_backend import contract
from xcom_backend.references import stored_url

pytestmark = pytest.mark.e2e


def run(home: AirflowHome, dag_id: str, *args: str) -> str:
    result = run_dag_in_task_processes(home, dag_id, *args)
    return result.stdout + result.stderr


def test_a_task_whose_xcom_object_is_gone_fails_in_its_own_process(executor_home) -> None:
    stack, home = executor_home
    output = run(home, "xcom_missing_object")
    tries = home.task_tries("xcom_missing_object")
    assert tries["push"][0] == "success" and tries["lose_object"][0] == "success", tries
    assert tries["consume"][0] == "failed", (tries, output[-3000:])
    assert "CONSUMED" not in output, "the task ran with a stand-in for its argument"
    log = home.task_log("xcom_missing_object", "consume")
    assert "XComObjectMissingError" in log and f"{stack.env[contract.PATH_ENV]}/xcom_missing_object/" in log


def test_a_retry_purges_an_object_that_is_already_gone(executor_home) -> None:
    _, home = executor_home
    output = run(home, "xcom_purge_missing")
    state, try_number = home.task_tries("xcom_purge_missing")["push_lose_and_fail"]
    assert (state, try_number) == ("success", 2), output[-3000:]
    assert "PURGE_MISSING_OK try 2" in home.task_log("xcom_purge_missing", "push_lose_and_fail")


def test_another_dags_object_is_never_read_or_deleted(executor_home) -> None:
    stack, home = executor_home
    admin = AdminBucket(stack.server, stack.bucket)
    run(home, "xcom_victim")
    (victim_row,) = home.xcom_rows_of("xcom_victim", home.run_ids("xcom_victim")[-1])
    victim = victim_row["value"]
    victim_key = contract.parse_objectstorage_path(stored_url(victim)).prefix
    assert victim_key in admin.keys("tasks/")

    # A task returns a string naming the victim's object: downstream gets the string, not the object.
    run(home, "xcom_attacker", "--conf", json.dumps({"target": stored_url(victim)}))
    consumed = home.task_log("xcom_attacker", "consume")
    assert f"CONSUMED {stored_url(victim)!r}" in consumed and "VICTIM-SECRET" not in consumed

    # Control: re-running a task purges its own object first (here: a big value it pushed before).
    run(home, "xcom_attacker", "--conf", json.dumps({"target": "A" * 2000}))
    run_id = home.run_ids("xcom_attacker")[-1]
    (own,) = [row["value"] for row in home.xcom_rows_of("xcom_attacker", run_id) if row["task_id"] != "consume"]
    own_key = contract.parse_objectstorage_path(stored_url(own)).prefix
    assert own_key in admin.keys("tasks/")
    rerun(home, run_id)
    assert own_key not in admin.keys("tasks/"), "the re-run did not purge the task's own object"

    # A user who may edit only the attacker's XComs plants a reference to the victim's object (as the REST API
    # allows), then the task is re-run, purging first: the victim's object stays.
    forged = {**victim, "dag_id": "xcom_attacker", "task_id": "value_naming_another_object"}
    for planted in (forged, victim):
        home.set_xcom_value("xcom_attacker", run_id, "value_naming_another_object", "return_value", planted)
        rerun(home, run_id)
        assert victim_key in admin.keys("tasks/"), f"the re-run's purge deleted another DAG's object ({planted})"

    # And the attacker's consumer, pulling a planted reference, fails naming it: no victim data, no stand-in.
    for planted in (forged, victim):
        home.set_xcom_value("xcom_attacker", run_id, "value_naming_another_object", "return_value", planted)
        pulled = home.airflow("tasks", "test", "xcom_attacker", "consume", run_id, timeout=600)
        output = pulled.stdout + pulled.stderr
        assert "VICTIM-SECRET" not in output and "CONSUMED" not in output, output[-3000:]
        assert "XComForeignReferenceError" in output and stored_url(victim) in output


def test_a_mapped_tasks_results_read_lazily_are_each_tasks_own(executor_home) -> None:
    _, home = executor_home
    run(home, "xcom_mapped_reads")
    tries = home.task_tries("xcom_mapped_reads")
    assert {task: state for task, (state, _) in tries.items()} == dict.fromkeys(tries, "success"), tries
    reduced = home.task_log("xcom_mapped_reads", "reduce")
    assert "SIBLING-OBJECT-CONTENT" not in reduced, "a plain string came back as another task's object"
    assert "REDUCED ['" in reduced and "/some_other_task/" in reduced
    reduce_big = home.task_log("xcom_mapped_reads", "reduce_big")
    assert "REDUCE_BIG [5, 6]" in reduce_big and "CALLBACK_READ [5, 6]" in reduce_big
    assert "MAPPED_OVER_MAPPED 0" in home.task_log("xcom_mapped_reads", "mapped_over_mapped")


def test_a_value_pushed_on_one_worker_is_pulled_on_another(executor_home) -> None:
    _, home = executor_home
    run(home, "xcom_across_workers")
    assert home.task_states("xcom_across_workers") == {"push": "success", "pull": "success"}
    (row,) = home.xcom_rows_of("xcom_across_workers", home.run_ids("xcom_across_workers")[-1])
    assert stored_url(row["value"]), row  # offloaded: the pull read the object, not the DB
    ran_in = {}
    for task_id in ("push", "pull"):
        lines = printed(home.task_log("xcom_across_workers", task_id))
        ran_in[task_id] = next(line for line in lines if line.startswith("RAN_IN"))
    assert "PULLED_EQUAL True" in printed(home.task_log("xcom_across_workers", "pull"))
    assert ran_in["push"].split()[1] != ran_in["pull"].split()[1], ran_in  # two processes
    if home.topology.redis:  # Celery: worker 1's process and temp dir, then worker 2's
        assert ran_in["push"].endswith(f"tmp={home.path / 'worker-1' / 'tmp'}"), ran_in
        assert ran_in["pull"].endswith(f"tmp={home.path / 'worker-2' / 'tmp'}"), ran_in


def rerun(home: AirflowHome, run_id: str) -> None:
    """A new try of the attacker's first task in an existing run, in a fresh process (it purges first)."""
    rerun_home = replace(home, env={**home.env, "XCOM_ATTACKER_RERUN_VALUE": "short"})
    result = rerun_home.airflow("tasks", "test", "xcom_attacker", "value_naming_another_object", run_id)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_values_come_back_as_the_db_path_returns_them(executor_home) -> None:
    _, home = executor_home
    database = "sqlite" if home.on_sqlite else "postgresql"  # the DB path's known changes depend on it
    output = run(home, "xcom_fidelity", "--conf", json.dumps({"database": database}))  # offloads all itself
    lines = printed(home.task_log("xcom_fidelity", "compare"))
    summary = [line for line in lines if "FIDELITY_SUMMARY" in line]
    assert summary and "failures=0" in summary[-1], ("\n".join(lines)[-5000:], output[-2000:])
    cases = {line.split("FIDELITY_CASE ", 1)[1].split(":", 1)[0]: line for line in lines if "FIDELITY_CASE" in line}
    # Object storage returns what was pushed (the exact serde round trip), on every database.
    expected: dict[str, Any] = {
        "nested tuples": "storage=((1, 2), [3, (4,)])",
        "bool and None keys": "storage={'True': 1, 'None': 2, '1.5': 3}",
        "tuple keys": "storage={'(1, 2)': 'a'}",
        "2**70": "storage=1180591620717411303424",
        "top-level 1.0": "storage=1.0",
        "key order": "storage={'b': 1, 'a': 2, 'aa': 3}",
        "negative zero": "storage=[-0.0]",
        "integral float 1e16": "storage=[1e+16]",
        "integral float 1e20": "storage=[1e+20]",
        "unicode": "storage='ключ ✓ \\x00'",
    }
    # The DB path: PostgreSQL's JSONB sorts keys (shorter first), has no -0.0, prints 1e16 as an integer and
    # refuses NUL in strings; SQLite keeps them (docs/backend.md, "Values").
    labels = ("key order", "negative zero", "integral float 1e16", "integral float 1e20", "unicode")
    if home.on_sqlite:
        expected_db = ["db={'b': 1, 'a': 2, 'aa': 3}", "db=[-0.0]", "db=[1e+16]", "db=[1e+20]", "db='ключ ✓ \\x00'"]
    else:  # 1e20 comes back from JSONB as an int beyond 64 bits, which the API server cannot send to the task
        expected_db = [
            "db={'a': 2, 'b': 1, 'aa': 3}",
            "db=[0.0]",
            "db=[10000000000000000]",
            "serialize ints",
            "db=AirflowRuntimeError(\"API_SERVER_ERROR: {'status_code': 422",
        ]
    for label, text in zip(labels, expected_db, strict=True):
        expected[label] = (expected[label], text)
    for label, texts in expected.items():
        for text in (texts,) if isinstance(texts, str) else texts:
            assert text in cases[label], (text, cases[label])
