"""Errors the backend raises instead of handing a task a wrong value."""

from __future__ import annotations


class XComObjectError(RuntimeError):
    """An offloaded XCom that cannot be returned as it was written."""


class XComObjectMissingError(XComObjectError, FileNotFoundError):
    """The metadata DB points at an object that is not (or no longer) in storage."""


class XComObjectCorruptError(XComObjectError, ValueError):
    """The stored bytes differ from what was written (truncated, overwritten or corrupted)."""


class XComReferenceError(XComObjectError, ValueError):
    """A reference in the metadata DB that cannot be interpreted: malformed, from an unknown version, or
    under a storage path other than the configured one."""


class XComForeignReferenceError(XComReferenceError):
    """A row holds a reference that is not its own XCom's (edited, copied, or written under another path)."""


class StoreConfigError(ValueError):
    """A [common.io] setting the backend cannot use; names the setting and what is allowed."""
