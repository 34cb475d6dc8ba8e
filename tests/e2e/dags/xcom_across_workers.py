"""Test-only DAG: a big XCom pushed by a task on one Celery worker and pulled by a task on the other.

Each task prints its process and temp dir, so the test can tell which worker ran it (emulation.airflow_run's
workers serve the queues ``workerN``; the LocalExecutor ignores queues and runs both in processes of its own).
"""

from __future__ import annotations

import os
import tempfile

import pendulum
from airflow.sdk import dag, task

BIG = {f"key{i}": "w" * 100 for i in range(100)}


@dag(dag_id="xcom_across_workers", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False)
def xcom_across_workers():
    @task(queue="worker1")
    def push():
        print(f"RAN_IN pid={os.getpid()} tmp={tempfile.gettempdir()}")
        return BIG

    @task(queue="worker2")
    def pull(value) -> None:
        print(f"RAN_IN pid={os.getpid()} tmp={tempfile.gettempdir()}")
        print(f"PULLED_EQUAL {value == BIG}")

    pull(push())


xcom_across_workers()
