"""Whose values a mapped task's results are, when the task SDK reads them lazily.

A downstream task gets an upstream mapped task's results as the SDK's ``LazyXComSequence``, which hands
``deserialize_value`` each value alone, without its coordinates. The sequence is built from two public
arguments, ``LazyXComSequence(xcom_arg=..., ti=...)``, and asks the API server for items by
``xcom_arg.operator.dag_id``, ``xcom_arg.operator.task_id``, ``xcom_arg.key`` and ``ti.run_id``: so its
``__getitem__`` (which its iterator and slices use too) is wrapped to declare those coordinates, any map index,
around the SDK's own. Without the wrapper, references read from such a sequence are refused, never read.

The SDK reads such a sequence one item per request, each object's read then adding a store round trip. When
the sequence is read in order (its iterator, or indexes counting up from 0), the wrapper asks the SDK for a
window of items at once instead (its own slice request) and has their objects read in parallel
(backend.reading_in_parallel). Each value is handed out once and then dropped (asked for again, it is read
again, a fresh object, as the SDK does); an item whose value cannot be read or deserialized raises only when it
is asked for. Any other access (an index out of order, from the end, a slice) is the SDK's own request.

Installed when the backend class is imported: a task process imports it with the task runner, before any
template or argument is rendered (and while ``airflow.sdk.definitions.xcom_arg`` is still being imported, so
nothing from that module can be used here). tests/unit/test_mapped_reads.py fails if the SDK changes the shape
this relies on.
"""

from __future__ import annotations

import functools
import logging
import weakref
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from xcom_backend.references import XComIdentity

log = logging.getLogger(__name__)

Declare = Callable[[XComIdentity], AbstractContextManager[None]]
_WRAPPED = "__xcom_backend_declares_owner__"


def _window_size(window: Callable[[], int]) -> int:
    """The configured window; 1 when the setting is bad (its error is raised by a read that needs it)."""
    try:
        return max(1, window())
    except Exception:
        return 1


def install(
    declare: Declare,
    in_parallel: Callable[[], AbstractContextManager[None]],
    settled: Callable[[Any], Any],
    window: Callable[[], int],
) -> bool:
    """Wrap the SDK's ``LazyXComSequence.__getitem__`` (once per process); False when the SDK lacks its shape.

    ``declare(owner)`` says whose values are read; within ``in_parallel()`` reads return placeholders that
    ``settled`` turns into values; ``window()`` items are asked for at once."""
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

    # id(sequence) -> (the next index in order, {index: value or placeholder not yet handed out})
    windows: dict[int, tuple[int, dict[int, Any]]] = {}

    @functools.wraps(original)
    def __getitem__(self: Any, key: Any) -> Any:
        xcom_arg, ti = getattr(self, xcom_arg_field), getattr(self, ti_field)
        source = xcom_arg.operator
        with declare(XComIdentity(source.dag_id, ti.run_id, source.task_id, None, xcom_arg.key)):
            if isinstance(key, slice):
                with in_parallel():
                    return settled(original(self, key))
            following, ahead = windows.get(id(self), (0, {}))
            if type(key) is not int or key < 0 or (key != following and key not in ahead):
                return original(self, key)  # not in order: one item, the SDK's own way
            if key not in ahead:
                with in_parallel():  # every read started here is over when the block ends
                    values = original(self, slice(key, key + _window_size(window)))
                if not values:
                    raise IndexError(key)
                ahead = dict(enumerate(values, start=key))
                if id(self) not in windows:
                    weakref.finalize(self, windows.pop, id(self), None)
            value = ahead.pop(key)  # handed out once: not kept alive by the window
            windows[id(self)] = (key + 1, ahead)
            return settled(value)

    setattr(__getitem__, _WRAPPED, True)
    LazyXComSequence.__getitem__ = __getitem__  # type: ignore[method-assign]
    return True
