"""Whose values a mapped task's results are, when the task SDK reads them lazily.

A downstream task gets an upstream mapped task's results as the SDK's ``LazyXComSequence``, which hands
``deserialize_value`` each value alone, without its coordinates. The sequence is built from two public
arguments, ``LazyXComSequence(xcom_arg=..., ti=...)``, and asks the API server for items by
``xcom_arg.operator.dag_id``, ``xcom_arg.operator.task_id``, ``xcom_arg.key`` and ``ti.run_id``: so its
``__getitem__`` (which its iterator and slices use too) is wrapped to declare those coordinates, any map index,
around the SDK's own. Without the wrapper, references read from such a sequence are refused, never read.

Installed when the backend class is imported: a task process imports it with the task runner, before any
template or argument is rendered (and while ``airflow.sdk.definitions.xcom_arg`` is still being imported, so
nothing from that module can be used here). tests/unit/test_mapped_reads.py fails if the SDK changes the shape
this relies on.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from xcom_backend.references import XComIdentity

log = logging.getLogger(__name__)

Declare = Callable[[XComIdentity], AbstractContextManager[None]]
_WRAPPED = "__xcom_backend_declares_owner__"


def install(declare: Declare) -> bool:
    """Wrap the SDK's ``LazyXComSequence.__getitem__`` (once per process); False when the SDK lacks its shape."""
    try:
        import attrs
        from airflow.sdk.execution_time.lazy_sequence import LazyXComSequence

        original = LazyXComSequence.__getitem__
        fields = {field.alias: field.name for field in attrs.fields(LazyXComSequence)}
        xcom_arg_field, ti_field = fields["xcom_arg"], fields["ti"]
    except Exception as err:  # any other SDK shape: fail those reads, not every XCom
        log.warning("a mapped task's results cannot be read from object storage lazily: %r", err)
        return False
    if getattr(original, _WRAPPED, False):
        return True

    @functools.wraps(original)
    def __getitem__(self: Any, key: Any) -> Any:
        xcom_arg, ti = getattr(self, xcom_arg_field), getattr(self, ti_field)
        source = xcom_arg.operator
        with declare(XComIdentity(source.dag_id, ti.run_id, source.task_id, None, xcom_arg.key)):
            return original(self, key)

    setattr(__getitem__, _WRAPPED, True)
    LazyXComSequence.__getitem__ = __getitem__  # type: ignore[method-assign]
    return True
