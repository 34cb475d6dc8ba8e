"""DAGs that exercise the bundled backend where common-io falls short: retries, mapped tasks, lost objects.

``xcom_backend_behaviours``: a task that pushes a big XCom and fails on its first try (the retry must
leave exactly one object), a mapped task (each index gets its own object) and a check of the pulled values.
``xcom_missing_object``: pushes a big XCom, deletes its object behind Airflow's back, then hands it to a
task as a TaskFlow argument; that task must fail naming the object's URL, never run with a stand-in value.
``xcom_purge_missing``: a task whose object is gone (expired by the lifecycle rule, or collected by gc)
before its retry; the retry's purge must count it as already purged, on every store, and the retry succeed.
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


def delete_object_of(context: dict, task_id: str, key: str) -> str:
    """Delete the object that XCom ``key`` of ``task_id`` in this DAG run was written to; its URL."""
    from xcom_backend.references import XComIdentity, object_name
    from xcom_backend.store import current_store

    ti, store = context["ti"], current_store()
    owner = XComIdentity(ti.dag_id, ti.run_id, task_id, -1, key)
    name = object_name(owner, store.compression, store.name_budget)
    store.delete(name)
    return store.url_of(name)


@dag(dag_id="xcom_missing_object", schedule=None, start_date=START, catchup=False, tags=["xcom"])
def xcom_missing_object():
    @task(multiple_outputs=False)
    def push(**context) -> dict[str, object]:
        return big_value("doomed")

    @task
    def lose_object(**context) -> None:
        print(f"deleted {delete_object_of(context, 'push', 'return_value')} behind Airflow's back")

    @task
    def consume(value: dict[str, object]) -> None:
        # The argument is pulled while the task's templates render, before the task runs.
        print(f"CONSUMED {value!r:.200}")

    pushed = push()
    pushed >> lose_object() >> consume(pushed)


@dag(dag_id="xcom_purge_missing", schedule=None, start_date=START, catchup=False, tags=["xcom"])
def xcom_purge_missing():
    @task(retries=1, retry_delay=timedelta(seconds=0))
    def push_lose_and_fail(**context) -> None:
        ti = context["ti"]
        ti.xcom_push(key="payload", value=big_value(f"try {ti.try_number}"))
        if ti.try_number == 1:
            url = delete_object_of(context, ti.task_id, "payload")
            raise RuntimeError(f"first try: deleted {url}; the retry's purge must not fail on it")
        print(f"PURGE_MISSING_OK try {ti.try_number}")

    push_lose_and_fail()


xcom_backend_behaviours()
xcom_missing_object()
xcom_purge_missing()
