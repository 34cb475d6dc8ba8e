"""Test-only DAG: values pushed through Airflow's own DB XCom and through the bundled backend's object storage
(threshold 0) inside one real task, then pulled back and compared by type and value.

The reference is Airflow's DB path as this task reaches it (task SDK -> supervisor -> API server -> metadata
DB). The object-storage value must equal what the DB path returns. Only where the DB path itself changes or
refuses a value in one of the known ways must it instead equal the exact serde round trip of what was pushed:
on every database a top-level integral float comes back as an int, an int beyond 64 bits as a float or
refused, NaN/inf and lone surrogates refused; on PostgreSQL (the value column is JSONB) also dict keys
reordered (shorter keys first, then bytewise), -0.0 as 0.0, a float written with an exponent and no fraction
(1e16) as an int, and a string holding NUL refused. Any other difference fails the task.
"""

from __future__ import annotations

import datetime
import decimal
import itertools
import json
import math
import os
from collections import Counter
from typing import Any

import pendulum
from airflow.sdk import dag, task

EXAMPLES = 200
CORPUS: dict[str, Any] = {
    "nested tuples": ((1, 2), [3, (4,)]),
    "bool and None keys": {True: 1, None: 2, 1.5: 3},
    "tuple keys": {(1, 2): "a"},
    "int keys": {1: "a"},
    "top-level 1.0": 1.0,
    "negative zero": [-0.0],
    "2**70": 2**70,
    "NaN": float("nan"),
    "inf": [float("inf")],
    "set": {1, 2, 3},
    "frozenset": frozenset({"a"}),
    "decimal": decimal.Decimal("1.10"),
    "datetime": datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.timezone.utc),
    "unicode": "ключ ✓ \x00",
    "key order": {"b": 1, "a": 2, "aa": 3},
    "integral float 1e16": [1e16],
    "integral float 1e20": [1e20],
}
# Whether this task's DB path ends in PostgreSQL: given by the run's conf ({"database": "postgresql"}), since
# Airflow 3 keeps the metadata DB's address out of task processes.
ON_POSTGRES = False


def jsonb_key_order(keys: list[str]) -> list[str]:
    """The order PostgreSQL's JSONB keeps an object's keys in: shorter first, then bytewise."""
    return sorted(keys, key=lambda key: (len(key.encode()), key.encode()))


def exact_round_trip(value: Any) -> Any:
    """What storing serde's JSON text and reading it back gives: the value as the DB path means to keep it."""
    from airflow.sdk.serde import deserialize, serialize

    return deserialize(json.loads(json.dumps(serialize(value))))


def is_float(value: Any) -> bool:
    return isinstance(value, float) or (type(value).__module__ == "numpy" and "float" in type(value).__name__)


def same(a: Any, b: Any) -> bool:
    """Equal in value and in type, all the way down (NaN equals NaN; -0.0 differs from 0.0)."""
    if type(a) is not type(b):
        return False
    if is_float(a):
        x, y = float(a), float(b)
        return (math.isnan(x) and math.isnan(y)) or (x == y and math.copysign(1, x) == math.copysign(1, y))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            same(ka, kb) and same(va, vb) for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True)
        )
    return bool(a == b)


def known_db_change(exact: Any, via_db: Any, top: bool = True) -> bool:
    """``via_db`` differs from ``exact`` only in the ways Airflow's DB path is known to change values."""
    if same(exact, via_db):
        return True
    if top and type(exact) is float and exact.is_integer() and type(via_db) is int and via_db == exact:
        return True
    if type(exact) is int and abs(exact) >= 2**63 and type(via_db) is float and via_db == float(exact):
        return True
    if ON_POSTGRES and is_float(exact) and type(via_db) is type(exact) and exact == 0.0 == via_db:
        return math.copysign(1, exact) < 0  # JSONB's numeric has no negative zero (numpy floats too)
    # JSONB keeps the decimal text (5.663238767774329e+16 as 56632387677743290, not the float's exact value).
    if ON_POSTGRES and type(exact) is float and type(via_db) is int and float(via_db) == exact:
        return _integral_in_exponent_form(exact)  # JSONB prints 1e+16 as 10000000000000000
    if isinstance(exact, (list, tuple)) and type(exact) is type(via_db) and len(exact) == len(via_db):
        return all(known_db_change(a, b, False) for a, b in zip(exact, via_db, strict=True))
    if isinstance(exact, dict) and type(via_db) is dict and set(exact) == set(via_db):
        if list(via_db) != list(exact) and not (ON_POSTGRES and list(via_db) == jsonb_key_order(list(exact))):
            return False
        return all(known_db_change(exact[key], via_db[key], False) for key in exact)
    return False


def _integral_in_exponent_form(value: float) -> bool:
    """JSON text of the float has an exponent and no fraction (1e+16): JSONB's numeric prints it as an int."""
    return math.isfinite(value) and float(value).is_integer() and "e" in repr(float(value))


def known_db_refusal(value: Any) -> bool:
    """The DB path refuses values holding an int beyond 64 bits, NaN or infinity, or a lone surrogate."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return abs(value) >= 2**63
    if is_float(value):  # numpy's float32 too, which is no Python float
        number = float(value)
        if ON_POSTGRES and _integral_in_exponent_form(number) and abs(number) >= 2**63:
            return True  # JSONB gives it back as an int beyond 64 bits, which the supervisor cannot send
        return math.isnan(number) or math.isinf(number)
    if isinstance(value, str):  # JSONB cannot hold NUL (\u0000) in a string
        return any(0xD800 <= ord(char) <= 0xDFFF or (ON_POSTGRES and char == "\x00") for char in value)
    if isinstance(value, dict):
        return any(known_db_refusal(key) or known_db_refusal(item) for key, item in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(known_db_refusal(item) for item in value)
    return False


def values():
    """Hypothesis strategy: what Airflow's serde can carry, nested."""
    import numpy as np
    from hypothesis import strategies as st

    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**80), max_value=2**80),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=20),
        st.decimals(allow_nan=False, allow_infinity=False, places=3, max_value=10**6, min_value=-(10**6)),
        st.datetimes(timezones=st.just(datetime.timezone.utc)),
        st.timedeltas(),
        st.builds(np.int64, st.integers(min_value=-(2**63), max_value=2**63 - 1)),
        st.builds(np.float64, st.floats(allow_nan=False)),
        st.builds(np.float32, st.floats(width=32, allow_nan=False)),
        st.frozensets(st.integers(), max_size=3),
        st.sets(st.text(max_size=5), max_size=3),
    )
    keys = st.one_of(st.text(max_size=8), st.integers(), st.booleans(), st.none())
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.tuples(inner, inner),
            st.dictionaries(keys, inner, max_size=4),
        ),
        max_leaves=12,
    )


@dag(dag_id="xcom_fidelity", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False)
def xcom_fidelity():
    @task
    def compare(**context) -> None:
        from airflow.sdk.bases.xcom import BaseXCom
        from airflow.sdk.execution_time.xcom import XCom  # the configured backend: the bundled one
        from hypothesis import HealthCheck, given, settings

        from xcom_backend.references import stored_url
        from xcom_backend.store import clear_caches

        # Everything through object storage, whichever process this runs in (a Celery worker keeps the env it
        # was started with, so the test cannot set this from outside).
        os.environ["AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_THRESHOLD"] = "0"
        clear_caches()
        global ON_POSTGRES
        ON_POSTGRES = (context["dag_run"].conf or {}).get("database") == "postgresql"
        print(f"FIDELITY_DATABASE {'postgresql' if ON_POSTGRES else 'other'}")
        ti = context["ti"]
        where = {"dag_id": ti.dag_id, "run_id": ti.run_id, "task_id": ti.task_id, "map_index": ti.map_index}
        counter, outcomes, failures = itertools.count(), Counter(), []

        def check(label: str, value: Any) -> None:
            number = next(counter)
            try:
                BaseXCom.set(f"db{number}", value, **where)
                via_db: Any = BaseXCom.get_one(key=f"db{number}", **where)
            except Exception as err:
                via_db = err
            XCom.set(f"os{number}", value, **where)
            stored = XCom._get_xcom_db_ref(key=f"os{number}", **where).value
            assert stored_url(stored), f"{label}: not offloaded: {stored!r:.200}"
            via_storage = XCom.get_one(key=f"os{number}", **where)
            exact = exact_round_trip(value)
            if isinstance(via_db, Exception):
                if not known_db_refusal(value):
                    failures.append(f"{label}: the DB path refused {value!r:.200} ({via_db!r:.200})")
                elif not same(via_storage, exact):
                    failures.append(f"{label}: storage gave {via_storage!r:.200}, exact round trip {exact!r:.200}")
                else:
                    outcomes[f"DB path refused ({type(via_db).__name__}); storage exact"] += 1
            elif same(via_storage, via_db):
                outcomes["storage equals DB path"] += 1
            elif known_db_change(exact, via_db) and same(via_storage, exact):
                outcomes["DB path changed the value in a known way; storage exact"] += 1
                print(f"FIDELITY_LOSSY_DB {label}: pushed {value!r:.120} db {via_db!r:.120}")
            else:
                failures.append(f"{label}: storage gave {via_storage!r:.200}, DB path {via_db!r:.200}")
            if label in CORPUS:
                print(f"FIDELITY_CASE {label}: storage={via_storage!r:.120} db={via_db!r:.120}")

        for label, value in CORPUS.items():
            check(label, value)

        @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(values())
        def generated(value: Any) -> None:
            before = len(failures)
            check("generated", value)
            assert len(failures) == before, failures[-1]  # let hypothesis shrink it to a minimal example

        try:
            generated()
        except AssertionError as err:
            failures.append(f"minimal failing example: {err}")
        total = sum(outcomes.values()) + len(failures)
        print(f"FIDELITY_SUMMARY total={total} failures={len(failures)} outcomes={dict(outcomes)}")
        if failures:
            raise AssertionError("\n".join(failures[:20]))

    compare()


xcom_fidelity()
