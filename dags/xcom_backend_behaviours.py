"""DAGs that exercise the bundled backend where common-io falls short: retries, mapped tasks, lost objects.

``xcom_backend_behaviours``: a task that pushes a big XCom and fails on its first try (the retry must
leave exactly one object), a mapped task (each index gets its own object) and a check of the pulled values.
``xcom_missing_object``: pushes a big XCom, deletes its object behind Airflow's back, then pulls it; the
pull must fail with the object's URL rather than hand the URL over as the value.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag, task

START = pendulum.datetime(2024, 1, 1, tz="UTC")


def big_value(tag: object) -> dict[str, object]:
    return {"tag": tag, "pad": "p" * 2000}


@dag(dag_id="xcom_backend_behaviours", schedule=None, start_date=START, catchup=False, tags=["xcom"])
def xcom_backend_behaviours():
    @task(retries=1, retry_delay=timedelta(seconds=0))
    def flaky_push(**context):
        ti = context["ti"]
        ti.xcom_push(key="payload", value=big_value(f"try {ti.try_number}"))
        if ti.try_number == 1:
            raise RuntimeError("first try fails after pushing; the retry must overwrite, not orphan")

    @task(multiple_outputs=False)  # one XCom per index, not one per dict key
    def mapped_push(index: int) -> dict[str, object]:
        return big_value(index)

    @task
    def check(mapped: list[dict[str, object]], **context) -> None:
        tags = sorted(item["tag"] for item in mapped)
        payload = context["ti"].xcom_pull(task_ids="flaky_push", key="payload")
        print(f"BEHAVIOUR_CHECK mapped={tags} payload_tag={payload['tag']!r}")
        if tags != [0, 1, 2] or payload["tag"] != "try 2":
            raise ValueError(f"unexpected pulled values: mapped={tags} payload={payload['tag']!r}")

    pushed = mapped_push.expand(index=[0, 1, 2])
    flaky_push() >> check(pushed)


@dag(dag_id="xcom_missing_object", schedule=None, start_date=START, catchup=False, tags=["xcom"])
def xcom_missing_object():
    @task(multiple_outputs=False)
    def push() -> dict[str, object]:
        return big_value("doomed")

    @task
    def lose_object(**context) -> None:
        from xcom_backend.store import current_store

        store = current_store()
        for name in store.list_objects():
            if name.startswith("xcom_missing_object/"):
                store.delete(name)
                print(f"deleted {store.url_of(name)} behind Airflow's back")

    @task
    def pull(**context) -> None:
        value = context["ti"].xcom_pull(task_ids="push")
        print(f"PULLED {value!r}")

    push() >> lose_object() >> pull()


xcom_backend_behaviours()
xcom_missing_object()
