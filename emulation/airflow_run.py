"""Run real Airflow (SQLite metadata DB) in a subprocess with nothing but a given deployment env."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DAGS_FOLDER = REPO_ROOT / "dags"

# Inherited variables that would let Airflow or boto find config or credentials other than the emitted ones.
_SCRUBBED_PREFIXES = ("AIRFLOW_", "AWS_", "GOOGLE_", "AZURE_", "PULUMI_")


@dataclass
class AirflowHome:
    path: Path
    env: dict[str, str]

    @property
    def db_path(self) -> Path:
        return self.path / "airflow.db"

    def airflow(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        airflow_bin = Path(sys.executable).with_name("airflow")
        return subprocess.run(
            [str(airflow_bin), *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def xcom_rows(self, dag_id: str) -> dict[str, Any]:
        """key -> value exactly as stored in the metadata DB (a URL string for offloaded XComs)."""
        with sqlite3.connect(self.db_path) as db:
            rows = db.execute("SELECT key, value FROM xcom WHERE dag_id = ?", (dag_id,)).fetchall()
        return {key: json.loads(value) if value is not None else None for key, value in rows}

    def task_states(self, dag_id: str) -> dict[str, str]:
        """task_id -> state of the latest try, from the metadata DB."""
        with sqlite3.connect(self.db_path) as db:
            rows = db.execute("SELECT task_id, state FROM task_instance WHERE dag_id = ?", (dag_id,)).fetchall()
        return dict(rows)


def scrubbed_environ() -> dict[str, str]:
    """This process's environment without anything that could configure Airflow or a cloud SDK."""
    return {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_PREFIXES)}


def make_airflow_home(
    path: Path, deployment_env: dict[str, str], emulator_env: dict[str, str] | None = None
) -> AirflowHome:
    """An AIRFLOW_HOME whose config comes only from ``deployment_env`` plus local DB/DAG settings.

    ``emulator_env`` is what a client needs to talk to the local emulator (e.g. trust its TLS certificate);
    it is kept apart because it is not part of what a real deployment gets.
    """
    path.mkdir(parents=True, exist_ok=True)
    env = {
        **scrubbed_environ(),
        "AIRFLOW_HOME": str(path),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{path / 'airflow.db'}",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "AWS_EC2_METADATA_DISABLED": "true",  # no instance-metadata credential probing on this machine
        **(emulator_env or {}),
        **deployment_env,
    }
    home = AirflowHome(path=path, env=env)
    migrated = home.airflow("db", "migrate", timeout=300)
    if migrated.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{migrated.stdout[-3000:]}\n{migrated.stderr[-3000:]}")
    return home


def xcom_checks(output: str) -> dict[str, dict[str, str]]:
    """The tutorial DAG's ``XCOM_CHECK key=... serialized_bytes=... equal=...`` lines, by key."""
    checks = {}
    for line in output.splitlines():
        if "XCOM_CHECK" in line:
            fields = dict(part.split("=", 1) for part in line.split("XCOM_CHECK", 1)[1].split() if "=" in part)
            checks[fields["key"]] = fields
    return checks
