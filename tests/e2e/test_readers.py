"""Every place Airflow 3.3 reads or shows an XCom, with the bundled backend, on S3, GCS and Azure.

- The task SDK, in task processes: ti.xcom_pull, XCom.get_one, a mapped task's results (get_all, one map
  index, a TaskFlow argument read lazily), include_prior_dates and Jinja's xcom_pull (tests/e2e/dags/xcom_readers.py).
- ``airflow tasks test`` of a reader, in a fresh process.
- The API server's XCom endpoints the UI uses (list, and one entry native, deserialized, stringified): Airflow
  reads the row without the backend there, so an offloaded XCom must show where its object is.
- The UI's XCom tab, in Debian's chromium driven by Playwright: what a person sees for the tutorial DAG.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from emulation.airflow_run import AirflowHome, printed, run_dag_in_task_processes, xcom_checks
from xcom_backend import contract
from xcom_backend.references import stored_url

pytestmark = pytest.mark.e2e

READERS = "xcom_readers"
TUTORIAL = "custom_xcom_backend_test"
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# As the probe of this machine kind starts it: without the background-networking flags chromium tries
# Google's hosts, which this closed network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
EXPECTED_READS = {
    "xcom_pull": "True",
    "return_value": "True",
    "XCom.get_one": "True",
    "all_indexes": "[0, 1, 2]",
    "map_index_1": "1",
    "include_prior_dates": "True",
}


def reads(output: str) -> dict[str, str]:
    """``READ <reader> <result>`` lines printed by tasks, by reader."""
    found = {}
    for line in printed(output):
        if line.startswith("READ ") or " READ " in line:
            reader, _, result = line.split("READ ", 1)[1].strip().partition(" ")
            found[reader] = result
    return found


@pytest.fixture(scope="package")
def readers_run(executor_home) -> tuple[Any, AirflowHome, str]:
    """The readers DAG and the tutorial DAG, each run once with every task in its own process."""
    stack, home = executor_home
    for dag_id in (READERS, TUTORIAL):
        result = run_dag_in_task_processes(home, dag_id)
        states = home.task_states(dag_id)
        assert set(states.values()) == {"success"}, (dag_id, states, result.stdout[-3000:])
    return stack, home, home.run_ids(READERS)[-1]


def offloaded(home: AirflowHome, dag_id: str, task_id: str, key: str) -> str:
    """The URL of an XCom's object; fails if the value stayed in the DB (the test would prove nothing)."""
    rows = [
        row
        for row in home.xcom_rows_of(dag_id, home.run_ids(dag_id)[-1])
        if (row["task_id"], row["key"]) == (task_id, key)
    ]
    (row,) = rows
    url = stored_url(row["value"])
    assert url and isinstance(row["value"], dict), row
    return url


def test_every_task_sdk_reader_gets_the_value_in_its_own_process(readers_run) -> None:
    _, home, _ = readers_run
    offloaded(home, READERS, "push", "big_obj")
    mapped_rows = [row for row in home.xcom_rows_of(READERS, home.run_ids(READERS)[-1]) if row["task_id"] == "mapped"]
    assert len(mapped_rows) == 3 and all(stored_url(row["value"]) for row in mapped_rows), mapped_rows
    assert reads(home.task_log(READERS, "read")) == EXPECTED_READS
    assert reads(home.task_log(READERS, "lazy")) == {"lazy": "[0, 1, 2] True"}
    assert reads(home.task_log(READERS, "jinja")) == {"jinja": "100 100"}


def test_the_tutorial_dag_pulls_what_it_pushed_in_task_processes(readers_run) -> None:
    _, home, _ = readers_run
    checks = xcom_checks("\n".join(printed(home.task_log(TUTORIAL, "pull"))))
    assert {key: check["equal"] for key, check in checks.items()} == {"small_obj": "True", "big_obj": "True"}
    offloaded(home, TUTORIAL, "push", "big_obj")
    assert home.xcom_rows(TUTORIAL)["small_obj"] == {"a": 23}


def test_tasks_test_reads_in_a_fresh_process(readers_run) -> None:
    _, home, run_id = readers_run
    for task_id, expected in (("read", EXPECTED_READS), ("lazy", {"lazy": "[0, 1, 2] True"})):
        result = home.airflow("tasks", "test", READERS, task_id, run_id, timeout=600)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-3000:]
        assert reads(output) == expected, output[-3000:]


def api(home: AirflowHome, path: str, **query: Any) -> dict[str, Any]:
    url = f"{home.api_url}/api/v2/{path}"
    if query:
        url += "?" + urllib.parse.urlencode({k: str(v).lower() for k, v in query.items()})
    with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 (loopback)
        assert response.status == 200
        return json.load(response)


def test_the_api_servers_xcom_endpoints_show_where_the_object_is(readers_run) -> None:
    _, home, _ = readers_run
    run_id = home.run_ids(TUTORIAL)[-1]
    url = offloaded(home, TUTORIAL, "push", "big_obj")
    shown = f"{contract.REFERENCE_CLASSNAME}@version=3({url})"
    entries = f"dags/{TUTORIAL}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances/push/xcomEntries"

    listed = api(home, entries)["xcom_entries"]
    assert {entry["key"] for entry in listed} == {"big_obj", "small_obj"}
    every_dag = api(home, "dags/~/dagRuns/~/taskInstances/~/xcomEntries", xcom_key="big_obj")["xcom_entries"]
    assert any(entry["dag_id"] == TUTORIAL and entry["run_id"] == run_id for entry in every_dag), every_dag

    big = {
        variant: api(home, f"{entries}/big_obj", **query)["value"]
        for variant, query in {
            "native": {},
            "deserialize": {"deserialize": True},  # what the UI's XCom tab asks for
            "stringify": {"stringify": True},
            "deserialize+stringify": {"deserialize": True, "stringify": True},
        }.items()
    }
    assert stored_url(big["native"]) == url  # the row as stored, for API clients
    assert big["deserialize"] == shown and big["deserialize+stringify"] == shown
    assert isinstance(big["stringify"], str) and url in big["stringify"]
    small = api(home, f"{entries}/small_obj", deserialize=True)["value"]
    assert small == {"a": 23}


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium (make system-packages)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def test_the_ui_xcom_tab_shows_the_small_value_and_where_the_big_object_is(readers_run, browser, tmp_path) -> None:
    from playwright.sync_api import expect

    stack, home, _ = readers_run
    run_id = home.run_ids(TUTORIAL)[-1]
    url = offloaded(home, TUTORIAL, "push", "big_obj")
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(f"{home.api_url}/dags/{TUTORIAL}/runs/{urllib.parse.quote(run_id, safe='')}/tasks/push/xcom")

    big_row = page.get_by_role("row").filter(has_text="big_obj")
    big_row.get_by_test_id("xcom-value").wait_for(timeout=60_000)
    big_value = big_row.get_by_test_id("xcom-value").inner_text()
    assert url in big_value and big_value.startswith(f"{contract.REFERENCE_CLASSNAME}@version=3("), big_value
    assert page.get_by_text(url, exact=False).is_visible()  # shown as text, not inside a collapsed object

    # Airflow shows a dict collapsed ("{…}"), whichever backend: a person expands it to see small_obj's value.
    small_value = page.get_by_role("row").filter(has_text="small_obj").get_by_test_id("xcom-value")
    number = small_value.get_by_text("23", exact=True)
    page.get_by_role("button", name="Expand all extra JSON").click()
    expect(number).to_be_visible()
    expect(small_value.get_by_text("a", exact=False).first).to_be_visible()
    body = page.inner_text("body")
    assert "error" not in body.lower(), body[-2000:]

    screenshot = tmp_path / f"xcom-tab-{stack.run.outputs['cloud']}.png"
    page.screenshot(path=str(screenshot), full_page=True)
    if target := os.environ.get("XCOM_TAB_SCREENSHOT"):  # docs/xcom-tab.png is made this way
        shutil.copy(screenshot, target)
    page.close()
