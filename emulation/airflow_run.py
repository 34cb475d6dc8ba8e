"""Run real Airflow in subprocesses with nothing but a given deployment env.

Two shapes (``Topology``): SQLite with the LocalExecutor, and production's, PostgreSQL with CeleryExecutor
workers in processes of their own on Redis (both servers from emulation.services).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from emulation.processes import emulator_process, free_port
from emulation.services import PostgresServer, RedisServer

REPO_ROOT = Path(__file__).resolve().parent.parent
DAGS_FOLDER = REPO_ROOT / "dags"

# Inherited variables that would let Airflow or boto find config or credentials other than the emitted ones.
_SCRUBBED_PREFIXES = ("AIRFLOW_", "AWS_", "GOOGLE_", "AZURE_", "PULUMI_")


@dataclass(frozen=True)
class Topology:
    """Where the metadata DB lives and what runs the tasks: SQLite and the LocalExecutor, or production's shape,
    PostgreSQL and CeleryExecutor workers (each a process of its own, with its own temp dir)."""

    postgres: PostgresServer | None = None
    redis: RedisServer | None = None
    workers: int = 2

    @property
    def name(self) -> str:
        return "postgres-celery" if self.postgres else "sqlite-local"


SQLITE_LOCAL = Topology()


@dataclass
class AirflowHome:
    path: Path
    env: dict[str, str]
    api_url: str | None = None  # the API server's (and UI's) base URL, while with_executor runs it
    topology: Topology = SQLITE_LOCAL

    @property
    def db_url(self) -> str:
        return self.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]

    @property
    def on_sqlite(self) -> bool:
        return self.db_url.startswith("sqlite")

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """The rows of one statement on the metadata DB (``?`` placeholders), or [(rows changed,)]."""
        if self.on_sqlite:
            with contextlib.closing(sqlite3.connect(self.db_url.split(":///", 1)[1])) as db, db:
                cursor = db.execute(sql, params)
                return cursor.fetchall() if cursor.description else [(cursor.rowcount,)]
        import psycopg2

        dsn = "postgresql://" + self.db_url.split("://", 1)[1]
        with contextlib.closing(psycopg2.connect(dsn)) as db, db, db.cursor() as cursor:
            cursor.execute(sql.replace("?", "%s"), params)
            return cursor.fetchall() if cursor.description else [(cursor.rowcount,)]

    def _value(self, stored: Any) -> Any:
        """A value column as the driver returns it: JSON text from SQLite, JSONB already decoded by psycopg2."""
        return _decoded(stored) if self.on_sqlite else stored

    def airflow(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        airflow_bin = Path(sys.executable).with_name("airflow")
        return subprocess.run(
            [str(airflow_bin), *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def xcom_rows(self, dag_id: str) -> dict[str, Any]:
        """key -> value exactly as stored in the metadata DB (a URL string for offloaded XComs)."""
        rows = self.query("SELECT key, value FROM xcom WHERE dag_id = ?", (dag_id,))
        return {key: self._value(value) for key, value in rows}

    def xcom_rows_of(self, dag_id: str, run_id: str | None = None) -> list[dict[str, Any]]:
        """Every XCom row of a DAG (optionally one run), decoded, with its coordinates."""
        query = "SELECT run_id, task_id, map_index, key, value FROM xcom WHERE dag_id = ?"
        params: tuple[str, ...] = (dag_id,)
        if run_id is not None:
            query, params = query + " AND run_id = ?", (dag_id, run_id)
        return [
            {"run_id": r, "task_id": t, "map_index": m, "key": k, "value": self._value(v)}
            for r, t, m, k, v in self.query(query, params)
        ]

    def set_xcom_value(self, dag_id: str, run_id: str, task_id: str, key: str, value: Any) -> None:
        """Overwrite a row's value, as a user with edit rights on this DAG's XComs can through the REST API."""
        ((changed,),) = self.query(
            "UPDATE xcom SET value = ? WHERE dag_id = ? AND run_id = ? AND task_id = ? AND key = ?",
            (json.dumps(value), dag_id, run_id, task_id, key),
        )
        assert changed == 1, f"no XCom row {dag_id}/{run_id}/{task_id}/{key}"

    def run_ids(self, dag_id: str) -> list[str]:
        rows = self.query("SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id", (dag_id,))
        return [run_id for (run_id,) in rows]

    def task_tries(self, dag_id: str) -> dict[str, tuple[str, int]]:
        """task_id -> (state, try_number) of the latest run's task instances."""
        rows = self.query(
            "SELECT task_id, state, try_number FROM task_instance WHERE dag_id = ? AND run_id = "
            "(SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1)",
            (dag_id, dag_id),
        )
        return {task_id: (state, tries) for task_id, state, tries in rows}

    def task_log(self, dag_id: str, task_id: str, run_id: str | None = None) -> str:
        """One task's log in a run (default: the latest), every try: task processes log to files, not to the
        output of the command that ran them."""
        run_id = run_id or self.run_ids(dag_id)[-1]
        logs = sorted((self.path / "logs").glob(f"dag_id={dag_id}/run_id={run_id}/task_id={task_id}/**/*.log"))
        assert logs, f"no log for {dag_id}.{task_id} in {run_id}"
        return "\n".join(path.read_text(errors="replace") for path in logs)

    def task_states(self, dag_id: str) -> dict[str, str]:
        """task_id -> state of the latest try, from the metadata DB."""
        return dict(self.query("SELECT task_id, state FROM task_instance WHERE dag_id = ?", (dag_id,)))


@contextlib.contextmanager
def with_executor(home: AirflowHome) -> Iterator[AirflowHome]:
    """This home with Airflow's API server running and its executor configured, so that
    ``airflow dags test --use-executor`` runs every task in its own process, as a real deployment does
    (plain ``airflow dags test`` runs them all in one process, which hides state leaking between tasks):
    the LocalExecutor on SQLite, or CeleryExecutor workers on PostgreSQL (``celery_workers``).

    The API server also serves the REST API and the UI at ``api_url``, every request as an admin (the
    simple auth manager's all-admins mode: loopback only, for the readers' tests).
    """
    port = free_port()
    env = {
        **home.env,
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor" if home.topology.redis else "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
    }
    command = [str(Path(sys.executable).with_name("airflow")), "api-server", "--host", "127.0.0.1", "--port", str(port)]
    with emulator_process("airflow-api-server", command, home.path, port, "/execution/health", env, inherit_env=False):
        running = replace(home, env=env, api_url=f"http://127.0.0.1:{port}")
        with celery_workers(running) if home.topology.redis else contextlib.nullcontext():
            yield running


@contextlib.contextmanager
def celery_workers(home: AirflowHome) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``airflow celery worker`` processes, each with a temp dir and working directory of its own (as on other
    machines; task logs go to the home's log folder, as with remote logging), until the block ends. Worker N
    serves the ``default`` queue and ``workerN``, so a DAG can send a task to a given worker."""
    workers: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    try:
        for number in range(1, home.topology.workers + 1):
            own = home.path / f"worker-{number}"
            (own / "tmp").mkdir(parents=True, exist_ok=True)
            logs.append(own / "worker.log")
            command = [
                str(Path(sys.executable).with_name("airflow")), "celery", "worker", "--concurrency", "2",
                "--celery-hostname", f"worker{number}@%h", "--queues", f"default,worker{number}",
                "--skip-serve-logs", "--without-mingle", "--without-gossip",
            ]  # fmt: skip
            env = {**home.env, "TMPDIR": str(own / "tmp")}
            with logs[-1].open("wb") as out:
                workers.append(subprocess.Popen(command, cwd=own, env=env, stdout=out, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 120
        while not all("ready" in log.read_text(errors="replace") for log in logs):
            exited = [log for worker, log in zip(workers, logs, strict=True) if worker.poll() is not None]
            if exited or time.monotonic() > deadline:
                details = "\n".join(log.read_text(errors="replace")[-2000:] for log in exited or logs)
                raise RuntimeError(f"Celery workers did not start:\n{details}")
            time.sleep(0.5)
        yield workers
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.terminate()
        for worker in workers:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(timeout=10)


def run_dag_in_task_processes(home: AirflowHome, dag_id: str, *options: str) -> subprocess.CompletedProcess[str]:
    """One DAG run with the home's executor (needs ``with_executor``): each task in a fresh process, run by the
    LocalExecutor or by a Celery worker. The run's env does not reach Celery workers (they keep the env they
    were started with), as in a deployment.

    Airflow 3.3's LocalExecutor sometimes never returns from its shutdown (one worker keeps waiting for a
    stop message another took), after the run has finished and its states are in the DB. So the run is
    over when Airflow logs "DagRun Finished"; the process group is stopped if it has not exited shortly after.
    """
    log_path = home.path / f"dags-test-{dag_id}-{secrets.token_hex(3)}.log"
    command = [str(Path(sys.executable).with_name("airflow")), "dags", "test", "--use-executor", *options, dag_id]
    with log_path.open("w") as log:
        process = subprocess.Popen(command, env=home.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        finished_at = None
        deadline = time.monotonic() + 600
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
            if finished_at is None and "DagRun Finished" in log_path.read_text(errors="replace"):
                finished_at = time.monotonic()
            if finished_at is not None and time.monotonic() - finished_at > 20:
                break
        stuck = process.poll() is None
        if stuck:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
    output = log_path.read_text(errors="replace")
    finished = [line for line in output.splitlines() if "DagRun Finished" in line]
    code = (0 if finished and "state=success" in finished[-1] else 1) if stuck else process.returncode
    return subprocess.CompletedProcess(command, code, output, "")


def scrubbed_environ() -> dict[str, str]:
    """This process's environment without anything that could configure Airflow or a cloud SDK."""
    return {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_PREFIXES)}


def make_airflow_home(
    path: Path,
    deployment_env: dict[str, str],
    emulator_env: dict[str, str] | None = None,
    dags_folder: Path = DAGS_FOLDER,
    topology: Topology = SQLITE_LOCAL,
) -> AirflowHome:
    """An AIRFLOW_HOME whose config comes only from ``deployment_env`` plus local DB/DAG settings.

    ``emulator_env`` is what a client needs to talk to the local emulator (e.g. trust its TLS certificate);
    it is kept apart because it is not part of what a real deployment gets. With a PostgreSQL topology the
    home gets a database of its own on that server (and a Redis database for its Celery broker).
    """
    path.mkdir(parents=True, exist_ok=True)
    env = {
        **scrubbed_environ(),
        "AIRFLOW_HOME": str(path),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "AWS_EC2_METADATA_DISABLED": "true",  # no instance-metadata credential probing on this machine
        **_database_env(path, topology),
        **(emulator_env or {}),
        **deployment_env,
    }
    home = AirflowHome(path=path, env=env, topology=topology)
    migrated = home.airflow("db", "migrate", timeout=300)
    if migrated.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{migrated.stdout[-3000:]}\n{migrated.stderr[-3000:]}")
    return home


def _database_env(path: Path, topology: Topology) -> dict[str, str]:
    if topology.postgres is None:
        return {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{path / 'airflow.db'}"}
    database = topology.postgres.create_database()
    env = {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": topology.postgres.url(database)}
    if topology.redis is not None:
        env |= {
            "AIRFLOW__CELERY__BROKER_URL": topology.redis.url(),
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + topology.postgres.url(database),
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
        }
    return env


def xcom_checks(output: str) -> dict[str, dict[str, str]]:
    """The tutorial DAG's ``XCOM_CHECK key=... serialized_bytes=... equal=...`` lines, by key."""
    checks = {}
    for line in output.splitlines():
        if "XCOM_CHECK" in line:
            fields = dict(part.split("=", 1) for part in line.split("XCOM_CHECK", 1)[1].split() if "=" in part)
            checks[fields["key"]] = fields
    return checks


def printed(log: str) -> list[str]:
    """What a task printed (and logged), line by line: task log files hold JSON lines with an ``event``."""
    lines = []
    for line in log.splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                line = str(json.loads(line).get("event", ""))
        lines.append(line)
    return lines


def _decoded(stored: Any) -> Any:
    """A value column as SQLite returns it: JSON text, or a bare number SQLite stored as one."""
    return json.loads(stored) if isinstance(stored, (str, bytes)) else stored
