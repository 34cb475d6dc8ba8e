"""Airflow homes whose tasks each run in a fresh process (the executor, its API server and the UI), per cloud."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from emulation.airflow_run import DAGS_FOLDER, AirflowHome, make_airflow_home, with_executor
from tests.conftest import DeployedStack, deploy
from tests.e2e.test_tutorial_dag import exported_env

TEST_DAGS = Path(__file__).parent / "dags"
EMULATORS = {"aws": "moto", "gcp": "gcs", "azure": "azurite"}
SHIPPED_DAGS = ("xcom_backend_behaviours.py", "custom_xcom_backend_test.py")


def dags_folder(work: Path) -> Path:
    """The shipped DAGs next to this suite's own, in one folder (Airflow reads one DAG folder)."""
    folder = work / "dags"
    folder.mkdir()
    for source in (*(DAGS_FOLDER / name for name in SHIPPED_DAGS), *TEST_DAGS.glob("*.py")):
        shutil.copy(source, folder / source.name)
    return folder


@pytest.fixture(scope="package", params=list(EMULATORS))
def executor_home(request, tmp_path_factory) -> Iterator[tuple[DeployedStack, AirflowHome]]:
    """A stack deployed into the cloud's emulator, and an Airflow home with its exported env whose API server
    runs (with_executor); one per cloud, shared by the modules of this package."""
    server = request.getfixturevalue(EMULATORS[request.param])
    stack = deploy(server, prefix="tasks")
    try:
        work = tmp_path_factory.mktemp(f"tasks-{request.param}")
        home = make_airflow_home(work / "airflow", exported_env(stack, work), server.client_env, dags_folder(work))
        with with_executor(home) as running:
            yield stack, running
    finally:
        stack.mocks.destroy()
