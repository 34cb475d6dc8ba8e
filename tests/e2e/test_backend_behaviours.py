"""The bundled backend inside real Airflow tasks (AWS stack on moto, IAM enforced): retries, mapping,
missing objects, and `xcom-backend gc` against the real metadata DB."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

from emulation.airflow_run import make_airflow_home
from tests.conftest import deploy
from tests.e2e.test_tutorial_dag import exported_env
from xcom_backend import contract

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def airflow_on_moto(moto, tmp_path_factory):
    stack = deploy(moto, prefix="behaviours")
    try:
        work = tmp_path_factory.mktemp("behaviours")
        env = exported_env(stack, work)
        yield stack, env, make_airflow_home(work / "airflow", env, moto.client_env)
    finally:
        stack.mocks.destroy()


def keys_under(stack, prefix: str) -> list[str]:
    listing = stack.client("s3").list_objects_v2(Bucket=stack.bucket, Prefix=prefix)
    return sorted(item["Key"] for item in listing.get("Contents", []))


def test_retry_leaves_one_object_and_mapped_indexes_get_their_own(airflow_on_moto) -> None:
    stack, _, home = airflow_on_moto
    result = home.airflow("dags", "test", "xcom_backend_behaviours", timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "BEHAVIOUR_CHECK mapped=[0, 1, 2] payload_tag='try 2'" in output
    flaky = keys_under(stack, "behaviours/xcom_backend_behaviours/")
    payload_objects = [key for key in flaky if "/flaky_push/" in key]
    assert len(payload_objects) == 1, payload_objects
    mapped = [key for key in flaky if "/mapped_push/" in key]
    assert sorted(key.split("/mapped_push/")[1] for key in mapped) == [
        "0/return_value.json",
        "1/return_value.json",
        "2/return_value.json",
    ]


def test_a_deleted_object_fails_the_pulling_task_with_its_url(airflow_on_moto) -> None:
    _, env, home = airflow_on_moto
    result = home.airflow("dags", "test", "xcom_missing_object", timeout=600)
    output = result.stdout + result.stderr
    base = env[contract.PATH_ENV]
    assert "XComObjectMissingError" in output
    assert f"XCom object {base}/xcom_missing_object/" in output
    assert "CONSUMED" not in output, "the task must fail, not run with something in place of its argument"
    states = home.task_states("xcom_missing_object")
    assert states["consume"] == "failed" and states["push"] == "success"


def test_gc_finds_exactly_the_orphans_and_deletes_only_them(airflow_on_moto) -> None:
    stack, env, home = airflow_on_moto
    if not home.task_states("xcom_backend_behaviours"):  # this test run alone
        assert home.airflow("dags", "test", "xcom_backend_behaviours").returncode == 0
    referenced = keys_under(stack, "behaviours/")
    admin = stack.server.client("s3")
    # One bundled-named and one common-io-named object whose rows are gone; a file no backend writes.
    orphans = ["behaviours/orphan-dag/run/task/-1/return_value.json", f"behaviours/db-cleaned/run/t/{uuid.uuid4()}.gz"]
    for key in [*orphans, "behaviours/reports/x.csv"]:
        admin.put_object(Bucket=stack.bucket, Key=key, Body=b"{}")
    gc = [sys.executable, "-m", "xcom_backend", "gc", "--older-than", "0"]
    dry = subprocess.run(gc, env=home.env, capture_output=True, text=True, timeout=300, check=False)
    assert dry.returncode == 0, dry.stderr[-3000:]
    listed = sorted(line.split()[1] for line in dry.stdout.splitlines() if line.startswith("orphan "))
    base = env[contract.PATH_ENV].rsplit("/", 1)[0]
    assert listed == sorted(f"{base}/{key}" for key in orphans)
    assert "nothing deleted (dry run)" in dry.stdout
    assert "left alone: 1 objects under the prefix that no XCom backend writes" in dry.stdout
    assert keys_under(stack, "behaviours/") == sorted([*referenced, *orphans, "behaviours/reports/x.csv"])

    deleted = subprocess.run([*gc, "--delete"], env=home.env, capture_output=True, text=True, timeout=300, check=False)
    assert deleted.returncode == 0, deleted.stderr[-3000:]
    assert "deleted 2 orphaned objects" in deleted.stdout
    assert keys_under(stack, "behaviours/") == sorted([*referenced, "behaviours/reports/x.csv"])

    young = subprocess.run(
        [sys.executable, "-m", "xcom_backend", "gc"],
        env=home.env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert "0 orphaned objects" in young.stdout


def test_the_verify_dag_passes_inside_a_task(airflow_on_moto) -> None:
    _, _, home = airflow_on_moto
    result = home.airflow("dags", "test", "xcom_backend_verify", timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "PASS  probe: compare: read back what was written" in output
    assert home.task_states("xcom_backend_verify") == {"verify_xcom_backend": "success"}


@pytest.mark.reliability
def test_storage_down_fails_the_push_and_leaves_no_dangling_row(airflow_on_moto, tmp_path, figures) -> None:
    from emulation.processes import free_port

    _, env, _ = airflow_on_moto
    connection = json.loads(env["AIRFLOW_CONN_MY_AWS_CONN"])
    connection["extra"]["endpoint_url"] = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    broken = {**env, "AIRFLOW_CONN_MY_AWS_CONN": json.dumps(connection)}
    home = make_airflow_home(tmp_path / "down", broken, {})
    result = home.airflow("dags", "test", "custom_xcom_backend_test", timeout=600)
    output = result.stdout + result.stderr
    rows = home.xcom_rows("custom_xcom_backend_test")
    loud = f"writing XCom object {env[contract.PATH_ENV]}/custom_xcom_backend_test/" in output
    figures.append(
        {
            "area": "faults",
            "case": "storage down in a real task: push fails, no dangling row",
            "tried": 1,
            "failed": int(not loud or "big_obj" in rows),
        }
    )
    assert loud, output[-3000:]
    assert "big_obj" not in rows and home.task_states("custom_xcom_backend_test")["push"] == "failed"
