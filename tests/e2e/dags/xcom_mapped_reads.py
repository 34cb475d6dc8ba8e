"""Test-only DAG: a mapped task's results read back lazily (the task SDK's LazyXComSequence hands the backend
the value alone), in a downstream task, in a callback, and by a mapped task expanded over them.

``plant`` writes an object in common-io's key shape for another task of this run, and the mapped task returns
its URL as a plain string: that string must reach ``reduce`` as the string, never as the object's content.
"""

from __future__ import annotations

import json
import uuid

import pendulum
from airflow.sdk import dag, task


@dag(dag_id="xcom_mapped_reads", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False)
def xcom_mapped_reads():
    @task
    def plant(**context) -> str:
        from xcom_backend.store import current_store

        ti, store = context["ti"], current_store()
        name = f"{ti.dag_id}/{ti.run_id}/some_other_task/{uuid.uuid4()}"
        store.write(name, json.dumps({"secret": "SIBLING-OBJECT-CONTENT"}).encode())
        return store.url_of(name)

    @task
    def mapped_strings(index: int, url: str) -> str:
        return url

    @task
    def reduce(values) -> None:
        print(f"REDUCED {list(values)!r}")

    @task
    def mapped_big(index: int) -> dict:
        return {"index": index, "pad": "b" * 3000}

    @task
    def mapped_over_mapped(value: dict) -> None:
        print(f"MAPPED_OVER_MAPPED {value['index']}")

    def read_in_callback(context) -> None:
        values = context["task"].op_args[0] if context["task"].op_args else None
        if values is None:
            values = next(iter(context["task"].op_kwargs.values()))
        print(f"CALLBACK_READ {[value['index'] for value in values]}")

    @task(on_success_callback=read_in_callback)
    def reduce_big(values) -> None:
        print(f"REDUCE_BIG {[value['index'] for value in values]}")

    reduce(mapped_strings.partial(url=plant()).expand(index=[0, 1]))
    reduce_big(mapped_big.expand(index=[5, 6]))
    mapped_over_mapped.expand(value=mapped_big.expand(index=[0, 1]))


xcom_mapped_reads()
