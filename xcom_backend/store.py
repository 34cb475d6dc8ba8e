"""The configured object store: resolved once per process, one request per read, write or delete.

One request each on S3, GCS and Azure (counted by tests/integration/test_backend_stores.py), up to the largest
object each takes in a single request (``SINGLE_REQUEST_LIMIT``). On S3 those go through the Amazon
provider's botocore client (xcom_backend/s3.py), not s3fs, which would HEAD before every read; gcsfs's default
class asks the Storage Control API for the bucket's layout; adlfs splits reads above 32 MiB and writes above
64 MiB, s3fs and gcsfs writes above 100 and 50 MiB.

Accepts every path common-io accepts: ``<scheme>://<conn_id>@<bucket>/<prefix>``, the same without a
connection id (the scheme's default credentials: instance role, IRSA, ADC, ...), ``file:///shared/xcom``
and any other scheme Airflow's ObjectStoragePath knows.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import posixpath
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache, cached_property, partial
from typing import TYPE_CHECKING, Any

from xcom_backend import codec, contract
from xcom_backend.errors import StoreConfigError
from xcom_backend.gcs import GcsObjects, KeyFileConnection, key_file_connection
from xcom_backend.references import name_budget, part_name
from xcom_backend.s3 import S3Objects, UploadBody, checksum_headers, provider_client
from xcom_backend.transfer import PART_SIZE, parts_of, range_size

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

# Object stores have no directories: a write is one PUT, with no mkdir/exists probes before it.
_OBJECT_STORE_FAMILIES = frozenset(scheme.fs_module for scheme in contract.STORE_SCHEMES.values())
# Largest object sent or fetched in one request: S3's PutObject limit (5 GiB) and Azure's Put Blob limit
# (5000 MiB); GCS takes the same in one upload. Larger values fall back to the libraries' multipart paths.
SINGLE_REQUEST_LIMIT = 5000 * 2**20


@dataclass(frozen=True)
class Store:
    base_url: str  # as configured, e.g. s3://my_aws_conn@bucket/xcom
    location: contract.ObjectStorageLocation
    compression: str | None
    build_fs: Callable[[], AbstractFileSystem]  # built at first use: on S3 only gc's listing needs it
    s3: S3Objects | None = None  # S3: reads, writes and deletes through the provider's client (xcom_backend.s3)
    gcs: GcsObjects | None = None  # GCS with a key file connection: the same over the JSON API (xcom_backend.gcs)
    concurrency: int = contract.DEFAULT_CONCURRENCY  # parts or ranges of one value in flight at once

    @cached_property
    def fs(self) -> AbstractFileSystem:
        with _cyclic_gc_deferred():
            return self.build_fs()

    @property
    def transport(self) -> Any:
        """What sends this store's reads and writes: the S3 client, GcsObjects, or the filesystem."""
        if self.s3 is not None:
            return self.s3.client
        return self.gcs if self.gcs is not None else self.fs

    @property
    def base_path(self) -> str:
        return self.location.path

    @property
    def name_budget(self) -> int:
        return name_budget(self.location)

    @property
    def is_object_store(self) -> bool:
        return self.location.family in _OBJECT_STORE_FAMILIES

    def path_of(self, name: str) -> str:
        return f"{self.base_path}/{name}"

    def key_of(self, name: str) -> str:
        """The object's key in its bucket."""
        return f"{self.location.prefix}/{name}" if self.location.prefix else name

    def url_of(self, name: str) -> str:
        return f"{self.base_url}/{name}"

    @property
    def library(self) -> str:
        """The filesystem's package: s3fs, gcsfs, adlfs, fsspec (local), ..."""
        return type(self.fs).__module__.split(".", 1)[0]

    def write(self, name: str, data: bytes) -> None:
        """One request up to SINGLE_REQUEST_LIMIT; above it the libraries' multipart uploads (s3fs's on S3).
        Through s3fs, S3 gets the same CRC32C the S3 client sends, and a body aiohttp does not copy
        (UploadBody)."""
        if self.s3 is not None and len(data) <= SINGLE_REQUEST_LIMIT:
            self.s3.put(self.key_of(name), data)
            return
        if self.gcs is not None and len(data) <= GCS_MAX_COMPONENTS * SINGLE_REQUEST_LIMIT:
            self.gcs.put(self.key_of(name), data, [self.key_of(part_name(name, n)) for n in range(GCS_MAX_COMPONENTS)])
            return
        path = self.path_of(name)
        library = self.library
        if library == "s3fs" and len(data) <= SINGLE_REQUEST_LIMIT:
            from fsspec.asyn import sync

            bucket, key, _ = self.fs.split_path(path)
            checksum = checksum_headers(self.fs.s3, data)
            body = UploadBody(data)
            sync(self.fs.loop, self.fs._call_s3, "put_object", Bucket=bucket, Key=key, Body=body, **checksum)
            self.fs.invalidate_cache(path)
        elif library == "gcsfs" and PART_SIZE < len(data) <= GCS_MAX_COMPONENTS * SINGLE_REQUEST_LIMIT:
            from fsspec.asyn import sync

            parts = [self.path_of(part_name(name, number)) for number in range(GCS_MAX_COMPONENTS)]
            sync(self.fs.loop, _composed_upload, self.fs, path, parts, memoryview(data), self.concurrency)
        elif library in ("s3fs", "gcsfs"):  # gcsfs: one request up to a part; s3fs: multipart above the limit
            self.fs.pipe_file(path, data, chunksize=SINGLE_REQUEST_LIMIT)
        else:
            if not self.is_object_store:  # local files, sftp, ...: parent directories must exist
                self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
            self.fs.pipe_file(path, data)

    def read(self, name: str, size: int | None = None) -> bytes | bytearray:
        """One request (s3fs would HEAD first to decide on ranged reads); on S3, with the stored ``size`` known
        from the reference and above a part, ranges read in parallel (xcom_backend.s3)."""
        if self.s3 is not None:
            return self.s3.get(self.key_of(name), size)
        if self.gcs is not None:
            return self.gcs.get(self.key_of(name), size)
        library = self.library
        if library == "s3fs":
            return self.fs.cat_file(self.path_of(name), max_concurrency=1)
        if library == "gcsfs" and size is not None and size > PART_SIZE:  # ranges at once, no metadata request
            # One byte more than the reference names: a longer object then reads longer and fails its check.
            concurrency = min(self.concurrency, len(parts_of(size, range_size(size, self.concurrency))))
            return self.fs.cat_file(self.path_of(name), start=0, end=size + 1, concurrency=concurrency)
        return self.fs.cat_file(self.path_of(name))  # adlfs: in ranges above a part, in parallel (_tuned)

    def delete(self, name: str) -> bool:
        """Delete one object; False when it was already gone (gcsfs and adlfs raise then; S3 answers a missing key
        as deleted, and only a missing bucket as gone)."""
        if self.s3 is not None:
            return self.s3.delete(self.key_of(name))
        if self.gcs is not None:
            return self.gcs.delete(self.key_of(name))
        try:
            self.fs.rm_file(self.path_of(name))
        except FileNotFoundError:
            return False
        return True

    def info(self, name: str) -> dict[str, Any] | None:
        try:
            return self.fs.info(self.path_of(name))
        except FileNotFoundError:
            return None

    def list_objects(self) -> dict[str, dict[str, Any]]:
        """name -> info of every object under ``<prefix>/``.

        Only the ``<prefix>/`` listing is sent. The libraries' own ``find`` adds a probe when that listing is
        empty — s3fs HEADs the bare key ``<prefix>``, gcsfs lists ``<prefix>`` without the slash — which a
        credential limited to ``<prefix>/`` is denied.
        """
        from fsspec.asyn import sync

        family = self.library
        if family == "s3fs":
            found = sync(self.fs.loop, self.fs._lsdir, self.base_path, delimiter="")
        elif family == "gcsfs":
            found, _ = sync(self.fs.loop, self.fs._do_list_objects, self.base_path, delimiter="")
        else:  # adlfs lists "<prefix>/" (its probe of the bare blob is a read the container SAS allows)
            found = self.fs.find(self.base_path, detail=True).values()
        start = self.base_path.rstrip("/") + "/"
        return {
            info["name"][len(start) :]: info
            for info in found
            if info.get("type") != "directory" and info["name"].startswith(start) and not info["name"].endswith("/")
        }


def _filesystem(
    location: contract.ObjectStorageLocation, concurrency: int, gcs_connection: KeyFileConnection | None = None
) -> AbstractFileSystem:
    """The filesystem ObjectStoragePath would use, built straight from the scheme's provider module.

    That skips ObjectStoragePath's discovery, which imports every installed provider's filesystem module
    (measured: 0.84 s of a 1.23 s first offload, half of it Google's hook while writing to S3). On GCS, a
    connection with a service account key skips the provider's hook module too (xcom_backend.gcs).
    """
    if gcs_connection is not None:
        fs = gcs_connection.filesystem()
    elif scheme := contract.STORE_SCHEMES.get(location.scheme):
        fs = importlib.import_module(scheme.fs_module).get_fs(location.conn_id, None)
    else:
        from airflow.sdk.io import get_fs

        fs = get_fs(location.scheme, location.conn_id)
    return _tuned(fs, concurrency)


def _tuned(fs: AbstractFileSystem, concurrency: int) -> AbstractFileSystem:
    """The same filesystem, set up to send one request per read and write up to a part, and parts in parallel
    above it.

    gcsfs's default class (when GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT is not "false" in the worker's env, which the
    GCP stack emits) asks the Storage Control API for the bucket's layout on every operation: the plain
    GCSFileSystem with the same options does not. adlfs's Azure client reads in 32 MiB ranges and writes in
    blocks above 64 MiB, one at a time: here in PART_SIZE blocks and ranges, ``concurrency`` at once (the Azure
    SDK's own parallel upload_blob and download_blob).
    """
    if type(fs).__name__ == "ExtendedGcsFileSystem":
        from gcsfs.core import GCSFileSystem

        fs = GCSFileSystem(**fs.storage_options)
    if type(fs).__module__.startswith("s3fs."):
        fs.connect()  # the client, built now (while the collector is held off) rather than at the first request
    config = getattr(getattr(fs, "service_client", None), "_config", None)  # adlfs's BlobServiceClient
    if config is not None and hasattr(config, "max_single_get_size"):
        config.max_single_get_size = config.max_single_put_size = config.max_block_size = PART_SIZE
        config.max_chunk_get_size = PART_SIZE  # the SDK's ranges after the first (its size unknown until then)
        fs.max_concurrency = concurrency
    return fs


GCS_MAX_COMPONENTS = 32  # sources one compose request takes


async def _composed_upload(fs: Any, path: str, parts: list[str], data: memoryview, concurrency: int) -> None:
    """GCS's parallel composite upload: parts written as objects of their own (``parts``: their paths, as many
    as may be needed), ``concurrency`` at once, then composed into ``path`` in one request and deleted. gcsfs
    writes one object per request. A part that fails fails the write; the parts are deleted whatever happens
    (those left by a killed process are names gc takes for orphans: references.part_name)."""
    import asyncio

    size = max(PART_SIZE, -(-len(data) // GCS_MAX_COMPONENTS))
    starts = range(0, len(data), size)
    names = parts[: len(starts)]
    limit = asyncio.Semaphore(concurrency)

    async def write(name: str, start: int) -> None:
        async with limit:
            await fs._pipe_file(name, bytes(data[start : start + size]))

    try:
        written = await asyncio.gather(
            *(write(name, start) for name, start in zip(names, starts, strict=True)), return_exceptions=True
        )  # every part's request over before any is deleted
        if failures := [result for result in written if isinstance(result, BaseException)]:
            raise failures[0]
        await fs._merge(path, names)
    finally:
        with contextlib.suppress(Exception):
            await fs._rm_files(names)  # one batch request (gcsfs's _rm would look each up first)
        fs.invalidate_cache(path)


@contextlib.contextmanager
def _cyclic_gc_deferred() -> Iterator[None]:
    """Hold off the cyclic garbage collector while the store is built (imports, connection, client).

    Those allocate many objects, and each collection then walks the task's whole heap: measured on a process
    with Airflow's SDK imported, 0.40 s for the first offload with collections and 0.30 s without.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _setting(key: str) -> str:
    section = contract.AIRFLOW_CONFIG_SECTION
    return f"[{section}] {key} ({contract.airflow_config_env(section, key)})"


@cache
def configured_location() -> contract.ObjectStorageLocation | None:
    """The configured base path, from conf only (no connection or filesystem is resolved); None when unset."""
    from airflow.providers.common.compat.sdk import conf

    url = conf.get(contract.AIRFLOW_CONFIG_SECTION, contract.PATH_KEY, fallback="").strip().rstrip("/")
    if not url:
        return None
    try:
        return contract.parse_objectstorage_path(url)
    except contract.ContractError as err:
        raise StoreConfigError(f"{_setting(contract.PATH_KEY)}: {err}") from None


@cache
def configured_concurrency() -> int:
    """[xcom_backend] transfer_concurrency: parts, ranges or objects of one pull in flight at once."""
    from airflow.providers.common.compat.sdk import conf

    text = conf.get(contract.TRANSFER_SECTION, contract.CONCURRENCY_KEY, fallback="") or ""
    if not text.strip():
        return contract.DEFAULT_CONCURRENCY
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= contract.MAX_CONCURRENCY:
        setting = f"[{contract.TRANSFER_SECTION}] {contract.CONCURRENCY_KEY} ({contract.CONCURRENCY_ENV})"
        raise StoreConfigError(f"{setting} is {text!r}: give a whole number from 1 to {contract.MAX_CONCURRENCY}")
    return value


@cache
def current_store() -> Store:
    from airflow.providers.common.compat.sdk import conf

    location = configured_location()
    if location is None:
        raise StoreConfigError(
            f"{_setting(contract.PATH_KEY)} is not set: give it <scheme>://<conn_id>@<bucket>/<prefix>"
        )
    compression = conf.get(contract.AIRFLOW_CONFIG_SECTION, contract.COMPRESSION_KEY, fallback=None) or None
    try:
        compression = codec.validate_compression(compression)
    except ValueError as err:
        raise StoreConfigError(f"{_setting(contract.COMPRESSION_KEY)}: {err}") from None
    base_url = conf.get(contract.AIRFLOW_CONFIG_SECTION, contract.PATH_KEY).strip().rstrip("/")
    with _cyclic_gc_deferred():
        concurrency = configured_concurrency()
        client = provider_client(location.conn_id, concurrency) if location.family == contract.S3_FAMILY else None
        gcs_connection = key_file_connection(location.conn_id) if location.family == contract.GCS_FAMILY else None
        gcs_direct = gcs_connection is not None and not gcs_connection.filesystem_only
        store = Store(
            base_url=base_url,
            location=location,
            compression=compression,
            build_fs=partial(_filesystem, location, concurrency, gcs_connection),
            s3=S3Objects(client, location.bucket, concurrency) if client is not None else None,
            gcs=GcsObjects(gcs_connection, location.bucket, concurrency) if gcs_direct else None,
            concurrency=concurrency,
        )
        if client is None and not gcs_direct:
            store.fs  # noqa: B018 (built now: a connection or filesystem error is raised here, not at a write)
        return store


@cache
def configured_threshold() -> int:
    from airflow.providers.common.compat.sdk import conf

    return conf.getint(contract.AIRFLOW_CONFIG_SECTION, contract.THRESHOLD_KEY, fallback=-1)


def clear_caches() -> None:
    """Forget settings and filesystem (for tests that change the config in-process)."""
    for cached in (configured_location, current_store, configured_threshold, configured_concurrency):
        cached.cache_clear()
