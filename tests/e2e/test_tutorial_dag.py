"""Real Airflow runs the tutorial DAG with the env the stack emitted, against the emulators.

AWS: moto with IAM enforced, so the emitted least-privilege key is really what lets the task through.
GCP: gcp-storage-emulator behind the IAM proxy: the emitted keyfile_dict is really exchanged for a token, and
the declared binding (role + prefix condition, evaluated with CEL) decides every request of the task.
Azure: Azurite over verified HTTPS; the emitted https-only container SAS is what authorises the task.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dotenv import dotenv_values

from emulation.airflow_run import AirflowHome, make_airflow_home, xcom_checks
from tests.conftest import DeployedStack, deploy
from xcom_backend import cli, contract
from xcom_backend.references import stored_url

pytestmark = pytest.mark.e2e

DAG_ID = "custom_xcom_backend_test"


def exported_env(stack: DeployedStack, work: Path) -> dict[str, str]:
    """The env as a deployment gets it: stack outputs -> `xcom-backend export` -> .env -> parsed."""
    outputs = work / "outputs.json"
    outputs.write_text(json.dumps(stack.run.outputs))
    assert cli.main(["export", "--input", str(outputs), "--output", str(work / ".env")]) == 0
    return {k: v for k, v in dotenv_values(work / ".env").items() if v is not None}


def run_dag(home: AirflowHome) -> tuple[dict, dict]:
    result = home.airflow("dags", "test", DAG_ID, timeout=600)
    assert result.returncode == 0, (result.stdout[-4000:], result.stderr[-4000:])
    return xcom_checks(result.stdout + result.stderr), home.xcom_rows(DAG_ID)


SCHEMES = {"aws": "s3", "gcp": "gs", "azure": "abfs"}
EMULATOR_FIXTURES = {"aws": "moto", "gcp": "gcs", "azure": "azurite"}


@pytest.fixture(
    scope="module",
    params=[("aws", "bundled"), ("aws", "common-io"), ("gcp", "bundled"), ("gcp", "common-io"), ("azure", "bundled")],
    ids=str,
)
def deployed_dag_run(request, tmp_path_factory):
    cloud, backend = request.param
    server = request.getfixturevalue(EMULATOR_FIXTURES[cloud])
    stack = deploy(server, backend=backend, compression="gzip")
    try:
        work = tmp_path_factory.mktemp(f"e2e-{cloud}-{backend}")
        env = exported_env(stack, work)
        home = make_airflow_home(work / "airflow", env, server.client_env)
        checks, rows = run_dag(home)
        yield stack, env, home, checks, rows
    finally:
        stack.mocks.destroy()


def test_small_xcom_stays_in_the_metadata_db(deployed_dag_run) -> None:
    _, _, _, checks, rows = deployed_dag_run
    assert rows["small_obj"] == {"a": 23}
    assert checks["small_obj"] == {"key": "small_obj", "serialized_bytes": "9", "equal": "True"}


def object_size(stack: DeployedStack, key: str) -> int:
    cloud = stack.run.outputs["cloud"]
    if cloud == "aws":
        return stack.client("s3").head_object(Bucket=stack.bucket, Key=key)["ContentLength"]
    if cloud == "azure":
        return stack.server.client().get_blob_client(stack.bucket, key).get_blob_properties().size
    return stack.server.client().bucket(stack.bucket).get_blob(key).size


def test_big_xcom_goes_to_storage_under_the_prefix_and_pulls_back_equal(deployed_dag_run) -> None:
    stack, env, _, checks, rows = deployed_dag_run
    cloud = stack.run.outputs["cloud"]
    base = f"{SCHEMES[cloud]}://my_{cloud}_conn@{stack.bucket}/xcom/"
    assert env[contract.PATH_ENV] + "/" == base
    url = stored_url(rows["big_obj"])
    assert url and url.startswith(f"{base}{DAG_ID}/") and url.endswith(".gz")
    key = url.split(f"@{stack.bucket}/", 1)[1]
    assert object_size(stack, key) > 0
    assert checks["big_obj"]["equal"] == "True"
    if cloud == "gcp":  # the emitted keyfile_dict was really loaded and exchanged for a token
        keyfile = json.loads(json.loads(env["AIRFLOW_CONN_MY_GCP_CONN"])["extra"]["keyfile_dict"])
        assert keyfile["client_email"] == stack.run.outputs["service_account_email"]
        assert stack.server.tokens_issued, "the task never exchanged the emitted key for a token"
    assert int(checks["big_obj"]["serialized_bytes"]) >= 1000


def test_airflow_conf_reads_the_emitted_names(deployed_dag_run) -> None:
    stack, env, home, _, _ = deployed_dag_run
    expected = {
        ("core", "xcom_backend"): env[contract.XCOM_BACKEND_ENV],
        ("common.io", "xcom_objectstorage_path"): stack.run.outputs["objectstorage_path"],
        ("common.io", "xcom_objectstorage_threshold"): "1000",
        ("common.io", "xcom_objectstorage_compression"): "gzip",
    }
    for (section, key), value in expected.items():
        got = home.airflow("config", "get-value", section, key)
        assert got.returncode == 0, got.stderr[-2000:]
        assert got.stdout.strip().splitlines()[-1] == value
