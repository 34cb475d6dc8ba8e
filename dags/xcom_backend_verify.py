"""Trigger from the UI to check this deployment's XCom object storage setup from inside a task.

Runs the same checks as `xcom-backend verify` (variable names, backend class, Airflow's conf, the
storage path and its connection, then a write/read/delete probe under the prefix) and fails the task,
with one line per failed check, if any of them fails.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task


@dag(
    dag_id="xcom_backend_verify",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    tags=["xcom", "object-storage"],
)
def xcom_backend_verify():
    @task
    def verify_xcom_backend() -> None:
        from xcom_backend.verify import verify

        report = verify()
        print(report.as_text())
        if not report.ok:
            failed = [f"{check.name}: {check.detail}" for check in report.checks if not check.ok]
            raise RuntimeError("XCom object storage setup is broken:\n" + "\n".join(failed))

    verify_xcom_backend()


xcom_backend_verify()
