"""Test-only DAG: every way a task reads an XCom through the task SDK, each on an offloaded value.

``push`` writes big values (offloaded at the default threshold): one under a key, one as its return value,
and ``mapped`` writes one per map index. The readers print ``READ <reader> <result>`` lines that the test
compares: ``ti.xcom_pull`` (get_one), ``XCom.get_one`` itself, a pull of a mapped task's results (get_all),
one map index, ``include_prior_dates``, a TaskFlow argument from a mapped task (the SDK's LazyXComSequence),
and Jinja's ``xcom_pull`` in a templated field.
"""

from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import dag, task

BIG = {f"key{i}": "r" * 100 for i in range(100)}


@dag(dag_id="xcom_readers", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False)
def xcom_readers():
    @task
    def push(**context):
        context["ti"].xcom_push(key="big_obj", value=BIG)
        return {"returned": True, **BIG}

    @task
    def mapped(index: int):
        return {"index": index, **BIG}

    @task
    def read(**context) -> None:
        from airflow.sdk.execution_time.xcom import XCom

        ti = context["ti"]
        print(f"READ xcom_pull {ti.xcom_pull(task_ids='push', key='big_obj') == BIG}")
        print(f"READ return_value {ti.xcom_pull(task_ids='push')['returned']}")
        pulled = XCom.get_one(key="big_obj", dag_id=ti.dag_id, task_id="push", run_id=ti.run_id)
        print(f"READ XCom.get_one {pulled == BIG}")
        print(f"READ all_indexes {sorted(value['index'] for value in ti.xcom_pull(task_ids='mapped'))}")
        print(f"READ map_index_1 {ti.xcom_pull(task_ids='mapped', map_indexes=1)['index']}")
        prior = ti.xcom_pull(task_ids="push", key="big_obj", include_prior_dates=True)
        print(f"READ include_prior_dates {prior == BIG}")

    @task
    def lazy(values) -> None:
        print(f"READ lazy {[value['index'] for value in values]} {values[1] == {'index': 1, **BIG}}")

    jinja = BashOperator(
        task_id="jinja",
        bash_command="echo READ jinja {{ ti.xcom_pull(task_ids='push', key='big_obj') | length }} "
        "{{ ti.xcom_pull(task_ids='push', key='big_obj')['key99'] | length }}",
    )

    results, reader = mapped.expand(index=[0, 1, 2]), read()
    push() >> [reader, jinja]
    results >> reader
    lazy(results)


xcom_readers()
