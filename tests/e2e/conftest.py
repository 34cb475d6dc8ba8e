"""Airflow homes whose tasks each run in a fresh process (the executor, its API server and the UI), per cloud
and per topology: SQLite with the LocalExecutor, and production's shape, PostgreSQL with two CeleryExecutor
workers in processes of their own (Redis as the broker). PostgreSQL and Redis come from Debian's packages
(`make system-packages`) and are started here."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from emulation.airflow_run import (
    DAGS_FOLDER,
    REPO_ROOT,
    SQLITE_LOCAL,
    AirflowHome,
    Topology,
    make_airflow_home,
    with_executor,
)
from emulation.services import PostgresServer, RedisServer, postgres_server, redis_server
from tests.conftest import DeployedStack, deploy
from tests.e2e.test_tutorial_dag import exported_env
from xcom_backend import contract

TEST_DAGS = Path(__file__).parent / "dags"
EMULATORS = {"aws": "moto", "gcp": "gcs", "azure": "azurite"}
TOPOLOGIES = ("sqlite-local", "postgres-celery")
SHIPPED_DAGS = ("xcom_backend_behaviours.py", "custom_xcom_backend_test.py")


def swapped_backend(env: dict[str, str], config: pytest.Config) -> dict[str, str]:
    """The exported env, with ``--xcom-backend CLASS`` in place of the emitted backend (to see the suite fail)."""
    backend = config.getoption("--xcom-backend", default=None)
    if not backend:
        return env
    return {**env, contract.XCOM_BACKEND_ENV: backend, "PYTHONPATH": str(REPO_ROOT)}


def dags_folder(work: Path) -> Path:
    """The shipped DAGs next to this suite's own, in one folder (Airflow reads one DAG folder)."""
    folder = work / "dags"
    folder.mkdir()
    for source in (*(DAGS_FOLDER / name for name in SHIPPED_DAGS), *TEST_DAGS.glob("*.py")):
        shutil.copy(source, folder / source.name)
    return folder


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    with postgres_server(tmp_path_factory.mktemp("postgres")) as server:
        yield server


@pytest.fixture(scope="session")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(
    scope="package",
    params=[(cloud, topology) for topology in TOPOLOGIES for cloud in EMULATORS],
    ids=lambda param: "-".join(param),
)
def executor_home(request, tmp_path_factory) -> Iterator[tuple[DeployedStack, AirflowHome]]:
    """A stack deployed into the cloud's emulator, and an Airflow home with its exported env whose API server
    (and Celery workers) run (with_executor); one per cloud and topology, shared by this package's modules."""
    cloud, topology_name = request.param
    topology = SQLITE_LOCAL
    if topology_name == "postgres-celery":
        topology = Topology(postgres=request.getfixturevalue("postgres"), redis=request.getfixturevalue("redis"))
    server = request.getfixturevalue(EMULATORS[cloud])
    stack = deploy(server, prefix="tasks")
    try:
        work = tmp_path_factory.mktemp(f"tasks-{cloud}-{topology_name}")
        env = swapped_backend(exported_env(stack, work), request.config)
        home = make_airflow_home(work / "airflow", env, server.client_env, dags_folder(work), topology)
        with with_executor(home) as running:
            yield stack, running
    finally:
        stack.mocks.destroy()
