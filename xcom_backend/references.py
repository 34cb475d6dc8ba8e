"""Which object an XCom row points at, and when to believe it.

An XCom row's value is user-controlled: a task can return any string or dict, and the REST API edits XCom
values. So a value is honoured as a pointer into object storage only when it names the object that this XCom
itself was written to — the bundled backend's retry-stable name for its (dag, run, task, map index, key), or
common-io's key shape for its dag/run/task — under the configured bucket and path. Everything else is the
value itself. Reading, purging and ``xcom-backend gc`` all decide here, so they always agree.

Standard library only: the gc command and the tests use it without a store.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import astuple, dataclass
from typing import Any
from urllib.parse import quote, unquote

from xcom_backend.contract import (
    REFERENCE_CLASSNAME,
    REFERENCE_MARKER,
    SERDE_CLASSNAME,
    SERDE_DATA,
    SERDE_VERSION,
    ContractError,
    ObjectStorageLocation,
    parse_objectstorage_path,
)
from xcom_backend.errors import XComForeignReferenceError, XComReferenceError

REFERENCE_VERSION = 3
MAX_KEY_BYTES = 1024  # S3 and GCS object names; Azure allows 1024 characters, so at least as many bytes
MAX_SEGMENT_BYTES = 255  # one path segment on local filesystems (NAME_MAX); object stores allow more
LONG_NAME_DIR = "_long"
# GCS parts of a large value until they are composed into it (store._composed_upload):
# _parts/<sha256 of the value's name>.part-NN, short whatever the value's name (GCS takes 1024 bytes a name).
PARTS_DIR = "_parts"
_PART = re.compile(rf"^{PARTS_DIR}/[0-9a-f]{{64}}\.part-\d{{2}}$")


def part_name(name: str, number: int) -> str:
    """The name (below the base) of part ``number`` of the value named ``name``."""
    return f"{PARTS_DIR}/{hashlib.sha256(name.encode()).hexdigest()}.part-{number:02d}"


_V1_NAME_LIMIT = MAX_KEY_BYTES - 256
# fsspec's suffix for each codec (fsspec.utils.compressions, inverted); kept here so this module needs no
# third-party import. fsspec registers snappy with no suffix, so common-io (and this backend) refuse it.
COMPRESSION_SUFFIXES: Mapping[str, str] = {
    "gzip": "gz",
    "bz2": "bz2",
    "lzma": "lzma",
    "xz": "xz",
    "zip": "zip",
    "zstd": "zst",
    "lz4": "lz4",
}
_CODEC_OF_SUFFIX = {suffix: codec for codec, suffix in COMPRESSION_SUFFIXES.items()}
_UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
# Digests a reference may name for the stored bytes, and their length in hex digits. Version 2 references
# written before BLAKE3 carry sha256; codec.py computes each.
CHECKSUM_ALGORITHMS: Mapping[str, int] = {"sha256": 64, "blake3": 64}
_HEX = re.compile(r"[0-9a-f]+")
_SHA256 = re.compile(r"[0-9a-f]{64}")  # the hex digest in a hashed (`_long/`) object name


@dataclass(frozen=True)
class XComIdentity:
    """The coordinates of one XCom; a field left None is not known (and matches anything)."""

    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    map_index: int | None = None
    key: str | None = None

    @property
    def exact(self) -> bool:
        return None not in astuple(self)

    def agrees_with(self, other: XComIdentity) -> bool:
        """Every field known on both sides is equal."""
        return all(a is None or b is None or a == b for a, b in zip(astuple(self), astuple(other), strict=True))

    def describe(self) -> str:
        mapped = f"[{self.map_index}]" if self.map_index is not None and self.map_index >= 0 else ""
        return f"dag {self.dag_id} run {self.run_id} task {self.task_id}{mapped} key {self.key}"


def name_budget(base: ObjectStorageLocation) -> int:
    """Bytes left for an object's name once the base prefix and its '/' are counted (S3/GCS: 1024 per key)."""
    return MAX_KEY_BYTES - len(base.prefix.encode()) - 1


def compression_suffix(compression: str | None) -> str:
    if compression is None:
        return ""
    if compression not in COMPRESSION_SUFFIXES:
        raise XComReferenceError(f"no file suffix known for compression {compression!r}")
    return "." + COMPRESSION_SUFFIXES[compression]


def _segment(value: object) -> str:
    """A path segment that survives every store: percent-encoded, never '', '.' or '..', never ending in '.'
    (Azure trims a trailing dot from each segment, so ``t.`` and ``t`` would name the same blob)."""
    text = quote(str(value), safe="-_.~")
    if not text.strip("."):
        return text.replace(".", "%2E") or "%00"
    return text[:-1] + "%2E" if text.endswith(".") else text


def _digest(identity: XComIdentity) -> str:
    return hashlib.sha256("\0".join(map(str, astuple(identity))).encode()).hexdigest()


def object_name(identity: XComIdentity, compression: str | None, budget: int = MAX_KEY_BYTES) -> str:
    """The retry-stable object name (below the base path) of one XCom.

    ``<dag>/<run>/<task>/<map_index>/<key>.json[.gz]``, each part percent-encoded. When that would not fit in
    ``budget`` bytes (what the store's key limit leaves after the prefix) or a segment is longer than a local
    filesystem allows, ``_long/<sha256 of the identity>.json[.gz]`` instead: always short, still unique.
    """
    suffix = ".json" + compression_suffix(compression)
    parts = [_segment(part) for part in astuple(identity)]
    parts[-1] += suffix
    name = "/".join(parts)
    if len(name.encode()) <= budget and all(len(part) <= MAX_SEGMENT_BYTES for part in parts):
        return name
    return f"{LONG_NAME_DIR}/{_digest(identity)}{suffix}"


def _v1_object_name(identity: XComIdentity, compression: str | None) -> str:
    """How version 1 of this backend named objects (read-only compatibility)."""
    suffix = ".json" + compression_suffix(compression)
    parts = [_segment(part) for part in astuple(identity)]
    name = "/".join(parts) + suffix
    if len(name.encode()) > _V1_NAME_LIMIT:
        name = f"{parts[0]}/{LONG_NAME_DIR}/{_digest(identity)}{suffix}"
    return name


def decode_object_name(name: str, compression: str | None) -> XComIdentity | None:
    """The identity a readable (not hashed) object name encodes, or None."""
    parts = name.split("/")
    suffix = ".json" + compression_suffix(compression)
    if len(parts) != 5 or not parts[4].endswith(suffix):
        return None
    dag_id, run_id, task_id, map_index, key = (unquote(part) for part in (*parts[:4], parts[4][: -len(suffix)]))
    try:
        return XComIdentity(dag_id, run_id, task_id, int(map_index), key)
    except ValueError:
        return None


@dataclass(frozen=True)
class ObjectReference:
    """A row's pointer to an object that belongs to that row's XCom."""

    url: str  # as recorded in the row (may carry an older connection id)
    name: str  # the object's name below the configured base path: what is read or deleted
    owner: XComIdentity  # whose object it is, as far as the reference tells
    compression: str | None
    kind: str  # "bundled" or "common-io"
    size: int | None = None  # serialized bytes (bundled only)
    stored_size: int | None = None  # bytes in storage (bundled only)
    checksum: str | None = None  # "<algorithm>:<hex>" of the stored bytes (bundled only), see CHECKSUM_ALGORITHMS
    version: int = REFERENCE_VERSION  # version 1 wrote its objects with Airflow's XComEncoder, as common-io;
    # versions 2 and 3 write the same objects (3 changed only the row's shape)

    @property
    def writer(self) -> str:
        return self.owner.describe() if self.kind == "bundled" else f"common-io's backend ({self.owner.describe()})"


def bundled_reference(
    url: str,
    owner: XComIdentity,
    *,
    size: int,
    stored_size: int,
    checksum: str,
    compression: str | None,
) -> dict[str, Any]:
    """What the bundled backend stores in the metadata DB for an offloaded XCom: shaped as a serde object whose
    data is the URL, so that Airflow's API server (which reads rows without the backend) shows
    ``xcom_backend.InObjectStorage@version=3(<url>)`` in the UI and API; the other fields are ignored there.

    It keeps version 2's marker and ``url`` too, so that version 2 of the backend, still running somewhere during
    a rolling upgrade or after a rollback, refuses the row as a newer version's (and its gc keeps the object)
    instead of taking the dict for a value."""
    return {
        SERDE_CLASSNAME: REFERENCE_CLASSNAME,
        SERDE_VERSION: REFERENCE_VERSION,
        SERDE_DATA: url,
        REFERENCE_MARKER: f"in object storage: {url} ({size} bytes)",
        "url": url,
        "dag_id": owner.dag_id,
        "run_id": owner.run_id,
        "task_id": owner.task_id,
        "map_index": owner.map_index,
        "key": owner.key,
        "size": size,
        "stored_size": stored_size,
        "checksum": checksum,
        "compression": compression,
    }


def display_text(url: str) -> str:
    """How Airflow's API server and UI show a version 3 row (its stringify of a serde object)."""
    return f"{REFERENCE_CLASSNAME}@version={REFERENCE_VERSION}({url})"


_DISPLAY_PREFIX = f"{REFERENCE_CLASSNAME}@version="


def is_reference_shaped(value: Any) -> bool:
    """Cheap pre-check: could ``value`` be a reference at all? (Most XComs are not even candidates.)"""
    if isinstance(value, dict):
        return _is_bundled_shaped(value)
    return isinstance(value, str) and "://" in value[:64]


def _is_bundled_shaped(value: Mapping[str, Any]) -> bool:
    """A dict in the bundled backend's reference shape: version 3's serde class, or versions 1-2's marker key."""
    return value.get(SERDE_CLASSNAME) == REFERENCE_CLASSNAME or REFERENCE_MARKER in value


def resolve(value: Any, base: ObjectStorageLocation, expected: XComIdentity | None) -> ObjectReference | None:
    """The object ``value`` points at when it belongs to the XCom ``expected`` describes; None: a plain value.

    ``expected`` may leave fields unknown (None) where the caller cannot tell them (a pull of every map
    index, or ``include_prior_dates``); the reference must agree with every known field. With no expected
    identity at all, a value that looks like a reference under ``base`` is an error, never read.
    Raises XComReferenceError for a reference that is ours in shape but cannot be interpreted.
    """
    if isinstance(value, dict) and _is_bundled_shaped(value):
        return _bundled(value, base, expected)
    if isinstance(value, str) and value.startswith(_DISPLAY_PREFIX):
        # The UI's Edit dialog loads the display text and saves it back as the value, even unchanged.
        raise XComReferenceError(
            f"this XCom's row holds the text Airflow shows for an object-storage reference ({value[:300]}), not "
            "the reference: it was replaced, e.g. saved from the UI's Edit XCom dialog; re-run the writing task"
        )
    if isinstance(value, str) and "://" in value[:64]:
        return _common_io(value, base, expected)
    return None


def _field(reference: Mapping[str, Any], name: str, kind: type | tuple[type, ...], url: object) -> Any:
    value = reference.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise XComReferenceError(f"malformed XCom reference to {url}: field {name!r} is {value!r}")
    return value


def _bundled(
    reference: Mapping[str, Any], base: ObjectStorageLocation, expected: XComIdentity | None
) -> ObjectReference | None:
    url, version, versions = _url_and_version(reference)
    if not isinstance(url, str):
        raise XComReferenceError(f"malformed XCom reference (no URL): {str(dict(reference))[:200]}")
    if versions == (3,) and reference.get("url", url) != url:  # repeated for version 2's readers: must agree
        raise XComReferenceError(f"malformed XCom reference: it names {url} and {str(reference.get('url'))[:200]}")
    if type(version) is not int or version not in versions:  # not True, 2.0 or "2"
        raise XComReferenceError(
            f"XCom reference to {url} has version v={version!r}; this backend reads versions 1, 2 and 3 "
            "(was it written by a newer version of the backend?)"
        )
    compression = reference.get("compression")
    if compression is not None and compression not in COMPRESSION_SUFFIXES:
        raise XComReferenceError(f"XCom reference to {url} names unknown compression {compression!r}")
    size = _field(reference, "size", int, url)
    stored_size = _field(reference, "stored_size", int, url)
    if version == 1:
        checksum = "sha256:" + _field(reference, "sha256", str, url)
    else:
        checksum = _field(reference, "checksum", str, url)
    algorithm, _, digest = checksum.partition(":")
    if len(digest) != CHECKSUM_ALGORITHMS.get(algorithm) or not _HEX.fullmatch(digest):
        raise XComReferenceError(f"XCom reference to {url} has an unknown checksum {checksum[:80]!r}")
    try:
        target = parse_objectstorage_path(url)
    except ContractError as err:
        raise XComReferenceError(f"malformed XCom reference: {err}") from None

    name = base.relative_name(url)
    if version >= 2:
        owner = XComIdentity(
            _field(reference, "dag_id", str, url),
            _field(reference, "run_id", str, url),
            _field(reference, "task_id", str, url),
            _field(reference, "map_index", int, url),
            _field(reference, "key", str, url),
        )
        own_name = object_name(owner, compression, name_budget(base))
    else:  # v1 carried no identity: read it back from the readable name, or take the expected one
        tail = name if name is not None else "/".join(target.prefix.split("/")[-5:])
        owner = decode_object_name(tail, compression) or expected or XComIdentity()
        own_name = _v1_object_name(owner, compression) if owner.exact else None

    # The backend never leaves a dict in the reference shape in the DB as a value (must_offload), so such a dict
    # that is not this XCom's own reference is refused loudly, never handed over as if it were the value.
    if name != own_name:
        if own_name and ("/" + target.prefix).endswith("/" + own_name):  # its own name, under another path
            raise XComForeignReferenceError(
                f"XCom object {url} (written by {owner.describe()}) is not under the configured storage path "
                f"{base.family}:{base.bucket}/{base.prefix}; was [common.io] xcom_objectstorage_path changed? "
                "Point it back, or re-run the writing task"
            )
        raise XComForeignReferenceError(
            f"XCom reference to {url} does not name the object its own XCom ({owner.describe()}) is written to "
            f"under {base.family}:{base.bucket}/{base.prefix}; not read (was the row edited?)"
        )
    if expected is None:
        raise XComReferenceError(
            f"cannot tell which XCom the reference to {url} belongs to; it is read from a metadata-DB row (which "
            "carries its dag_id, run_id, task_id, map_index and key), XCom.get_one/get_all or a mapped task's results"
        )
    if not expected.agrees_with(owner):
        raise XComForeignReferenceError(
            f"XCom reference to {url} belongs to {owner.describe()}, not to the XCom being read "
            f"({expected.describe()}); not read (was the row edited?)"
        )
    return ObjectReference(url, name, owner, compression, "bundled", size, stored_size, checksum, version)


def _url_and_version(reference: Mapping[str, Any]) -> tuple[Any, Any, tuple[int, ...]]:
    """(URL, version, versions that shape may have): version 3 keeps them in serde's fields, 1 and 2 in their own."""
    if reference.get(SERDE_CLASSNAME) == REFERENCE_CLASSNAME:
        return reference.get(SERDE_DATA), reference.get(SERDE_VERSION), (3,)
    return reference.get("url"), reference.get("v"), (1, 2)


def common_io_owner(name: str) -> tuple[XComIdentity, str | None] | None:
    """(dag/run/task, compression) of a name in common-io's shape ``<dag>/<run>/<task>/<uuid4>[.json][.<codec>]``."""
    parts = name.split("/")
    if len(parts) != 4:
        return None
    stem, compression = parts[3], None
    head, dot, suffix = stem.rpartition(".")
    if dot and suffix in _CODEC_OF_SUFFIX:
        stem, compression = head, _CODEC_OF_SUFFIX[suffix]
    stem = stem.removesuffix(".json")
    if not _UUID4.fullmatch(stem) or not all(parts[:3]):
        return None
    return XComIdentity(parts[0], parts[1], parts[2]), compression


def _common_io(url: str, base: ObjectStorageLocation, expected: XComIdentity | None) -> ObjectReference | None:
    name = base.relative_name(url)
    shaped = common_io_owner(name) if name else None
    if shaped is None:
        return None
    owner, compression = shaped
    if expected is None:
        raise XComReferenceError(
            f"cannot tell which XCom the common-io reference {url} belongs to; it is read from a metadata-DB row "
            "(which carries its coordinates), XCom.get_one/get_all or a mapped task's results"
        )
    if not expected.agrees_with(owner):
        return None
    return ObjectReference(url, name, owner, compression, "common-io")


def must_offload(value: Any, base: ObjectStorageLocation | None) -> bool:
    """A value that could read back as a reference if kept in the DB — a dict in our reference shape, a string
    in common-io's key shape under the base (whichever task it names: a pull of a mapped task's results cannot
    tell the task apart), or the text Airflow shows for one of our references — is offloaded whatever its size,
    so a row never holds an ambiguous value."""
    if isinstance(value, dict):
        return _is_bundled_shaped(value)
    if base is None or not isinstance(value, str) or "://" not in value[:64]:
        return False
    if value.startswith(_DISPLAY_PREFIX):  # Airflow's display text of a reference: read back as an error
        return True
    name = base.relative_name(value)
    return bool(name) and common_io_owner(name) is not None


def xcom_shaped(name: str) -> bool:
    """Could a backend have written an object by this name (below the base)? gc deletes nothing else. A part
    left by an upload that never completed is one (no row ever names it: an orphan)."""
    if _PART.fullmatch(name):
        return True
    parts = name.split("/")
    if parts[0] == LONG_NAME_DIR or (len(parts) == 3 and parts[1] == LONG_NAME_DIR):  # v2 / v1 hashed names
        stem = parts[-1].split(".", 1)[0]
        return _SHA256.fullmatch(stem) is not None and parts[-1][len(stem) :].startswith(".json")
    if common_io_owner(name) is not None:
        return True
    compression = next((c for c, suffix in COMPRESSION_SUFFIXES.items() if name.endswith(f".json.{suffix}")), None)
    decoded = decode_object_name(name, compression)
    return decoded is not None and name in (object_name(decoded, compression), _v1_object_name(decoded, compression))


def stored_url(value: Any) -> str | None:
    """The URL a stored value names, for display only (the demo's table); trusts nothing."""
    if isinstance(value, dict) and _is_bundled_shaped(value):
        url = _url_and_version(value)[0]
        return url if isinstance(url, str) else None
    return value if isinstance(value, str) and "://" in value[:64] else None
