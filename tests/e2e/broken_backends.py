"""Deliberately broken XCom backends, to show the end-to-end suite fails without a working one.

``pytest tests/e2e --xcom-backend tests.e2e.broken_backends.StandInBackend`` (or common-io's own class,
``airflow.providers.common.io.xcom.backend.XComObjectStorageBackend``) runs every Airflow home of the suite
with that class instead of the emitted one; docs/testing.md lists what failed.
"""

from __future__ import annotations

from typing import Any

from xcom_backend.backend import ObjectStorageXComBackend


class StandInBackend(ObjectStorageXComBackend):
    """Writes like the bundled backend, but hands a reader the row itself instead of the value it names."""

    @staticmethod
    def deserialize_value(result: Any) -> Any:
        return getattr(result, "value", None)


class NoOwnerCheckBackend(ObjectStorageXComBackend):
    """Reads whatever a row names, as if every row were a metadata-DB row owning it (no identity check)."""

    @staticmethod
    def deserialize_value(result: Any) -> Any:
        from xcom_backend import backend, references

        raw = getattr(result, "value", None)
        if isinstance(raw, dict) and references.is_reference_shaped(raw):
            fields = ("dag_id", "run_id", "task_id", "map_index", "key")
            owner = references.XComIdentity(*(raw.get(name) for name in fields))
            with backend.reading_xcom(owner):
                return ObjectStorageXComBackend.deserialize_value(result)
        return ObjectStorageXComBackend.deserialize_value(result)
