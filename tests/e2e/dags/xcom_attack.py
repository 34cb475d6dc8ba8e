"""Test-only DAGs: a DAG whose XComs a user controls tries to read or delete another DAG's object.

``xcom_victim`` keeps a secret in object storage. ``xcom_attacker`` returns a string naming that object
(``params.target``) and hands it to a task as a TaskFlow argument; the test also overwrites the attacker's
row with a forged reference to the victim's object (as a user allowed to edit only the attacker's XComs can,
through the REST API) and re-runs the task, whose purge must leave the victim's object alone.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import dag, task

START = pendulum.datetime(2024, 1, 1, tz="UTC")


@dag(dag_id="xcom_victim", schedule=None, start_date=START, catchup=False)
def xcom_victim():
    @task(multiple_outputs=False)
    def secret() -> dict[str, str]:
        return {"secret": "VICTIM-SECRET", "pad": "v" * 2000}

    secret()


@dag(dag_id="xcom_attacker", schedule=None, start_date=START, catchup=False, params={"target": ""})
def xcom_attacker():
    @task
    def value_naming_another_object(**context) -> str:
        # A re-run from the test pushes a short value instead (the run's conf would win over task params).
        return os.environ.get("XCOM_ATTACKER_RERUN_VALUE") or context["params"]["target"]

    @task
    def consume(value: object) -> None:
        print(f"CONSUMED {value!r:.300}")

    consume(value_naming_another_object())


xcom_victim()
xcom_attacker()
