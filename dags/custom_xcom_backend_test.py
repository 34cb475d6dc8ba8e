"""The tutorial's check DAG: one small and one big XCom, pushed, pulled and compared.

With the default threshold (1000 bytes) small_obj stays in the metadata DB and big_obj (about 10 KB)
goes to object storage. Sizes printed are the serialized JSON byte length, which is what the threshold
is compared with (not ``sys.getsizeof``/``__sizeof__``, which measure Python's in-memory object).
"""

from __future__ import annotations

import json

import pendulum
from airflow.sdk import dag, task
from airflow.utils.json import XComEncoder

SMALL_OBJ = {"a": 23}
BIG_OBJ = {f"key{i}": "x" * 100 for i in range(100)}
EXPECTED = {"small_obj": SMALL_OBJ, "big_obj": BIG_OBJ}


def serialized_size(value: object) -> int:
    return len(json.dumps(value, cls=XComEncoder).encode("utf-8"))


@dag(
    dag_id="custom_xcom_backend_test",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    tags=["xcom", "object-storage"],
)
def custom_xcom_backend_test():
    @task
    def push(**context):
        for key, value in EXPECTED.items():
            context["ti"].xcom_push(key=key, value=value)
            print(f"pushed {key}: {serialized_size(value)} bytes serialized")

    @task
    def pull(**context):
        mismatched = []
        for key, expected in EXPECTED.items():
            pulled = context["ti"].xcom_pull(task_ids="push", key=key)
            equal = pulled == expected
            print(f"XCOM_CHECK key={key} serialized_bytes={serialized_size(pulled)} equal={equal}")
            if not equal:
                mismatched.append(key)
        if mismatched:
            raise ValueError(f"pulled XComs differ from what was pushed: {', '.join(mismatched)}")

    push() >> pull()


custom_xcom_backend_test()
