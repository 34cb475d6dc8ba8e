"""The env contract between the Pulumi stacks and an Airflow deployment.

This module is the single owner of the environment variable names, the object-storage path format and
the connection JSON each cloud needs. It imports nothing outside the standard library so the stacks,
the CLI and the backend can all share it without pulling Airflow or a cloud SDK along.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

AIRFLOW_CONFIG_SECTION = "common.io"
PATH_KEY = "xcom_objectstorage_path"
THRESHOLD_KEY = "xcom_objectstorage_threshold"
COMPRESSION_KEY = "xcom_objectstorage_compression"


def airflow_config_env(section: str, key: str) -> str:
    """Env name Airflow reads for ``[section] key``: dots in the section become underscores.

    ``AIRFLOW__COMMON.IO__...`` (a name circulating in tutorials) is silently ignored by Airflow.
    """
    return f"AIRFLOW__{section.upper().replace('.', '_')}__{key.upper()}"


XCOM_BACKEND_ENV = airflow_config_env("core", "xcom_backend")
PATH_ENV = airflow_config_env(AIRFLOW_CONFIG_SECTION, PATH_KEY)
THRESHOLD_ENV = airflow_config_env(AIRFLOW_CONFIG_SECTION, THRESHOLD_KEY)
COMPRESSION_ENV = airflow_config_env(AIRFLOW_CONFIG_SECTION, COMPRESSION_KEY)

# The bundled backend's own setting (common-io has none): how many parts or ranges of one large value, or
# objects of a mapped task's results, it sends or reads at once. The default is boto3's TransferManager's.
TRANSFER_SECTION = "xcom_backend"
CONCURRENCY_KEY = "transfer_concurrency"
CONCURRENCY_ENV = airflow_config_env(TRANSFER_SECTION, CONCURRENCY_KEY)
DEFAULT_CONCURRENCY = 10
MAX_CONCURRENCY = 64

# Not Airflow settings: they tell `xcom-backend verify` (and whoever reads the env) which deployment of a
# multi-deployment stack this env is for, and which credential it carries (kind, id, generation, created,
# expires; never the secret). Stacks without deployments that never rotated do not emit them.
DEPLOYMENT_ENV = "XCOM_BACKEND_DEPLOYMENT"
CREDENTIAL_ENV = "XCOM_BACKEND_CREDENTIAL"

BUNDLED_BACKEND = "xcom_backend.backend.ObjectStorageXComBackend"
COMMON_IO_BACKEND = "airflow.providers.common.io.xcom.backend.XComObjectStorageBackend"
BACKEND_CLASSES: Mapping[str, str] = {"bundled": BUNDLED_BACKEND, "common-io": COMMON_IO_BACKEND}

# Codecs fsspec registers from the standard library alone, so every worker can read what another wrote.
# (fsspec adds zstd/lz4/snappy only when their third-party libraries are installed.) fsspec's "zip" is left
# out: common-io accepts it, but it writes a stored, uncompressed archive (measured: 11412 B for 11290 B).
COMPRESSIONS: tuple[str, ...] = ("gzip", "bz2", "lzma", "xz")

# Object-storage schemes Airflow's providers register, per cloud. Azure's provider registers abfs/abfss/adl,
# not wasb or azblob.
SCHEMES: Mapping[str, str] = {"aws": "s3", "gcp": "gs", "azure": "abfs"}


@dataclass(frozen=True)
class StoreScheme:
    """What Airflow's provider does for one object-storage scheme."""

    fs_module: str  # the module whose get_fs(conn_id) builds the filesystem
    connection_types: frozenset[str]  # connection types that module's hook accepts


_S3 = StoreScheme("airflow.providers.amazon.aws.fs.s3", frozenset({"aws"}))
_GCS = StoreScheme("airflow.providers.google.cloud.fs.gcs", frozenset({"google_cloud_platform"}))
_ADLS = StoreScheme(
    "airflow.providers.microsoft.azure.fs.adls", frozenset({"wasb", "adls", "azure_data_lake", "azure"})
)
STORE_SCHEMES: Mapping[str, StoreScheme] = {
    "s3": _S3,
    "s3a": _S3,
    "s3n": _S3,
    "gs": _GCS,
    "gcs": _GCS,
    "abfs": _ADLS,
    "abfss": _ADLS,
    "adl": _ADLS,
}
S3_FAMILY = _S3.fs_module  # ObjectStorageLocation.family of s3://, s3a:// and s3n:// paths
GCS_FAMILY = _GCS.fs_module  # ... of gs:// and gcs:// paths
# gcsfs reads this once, at import. Unless it is "false", its default GCSFileSystem asks the Storage Control API
# for the bucket's layout on every operation: an extra request each time, which a binding conditioned on the
# prefix denies (gcsfs logs a warning and goes on). Emitted for GCP so a worker sends one request per operation.
GCSFS_HNS_ENV = "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"
CLOUD_ENV: Mapping[str, Mapping[str, str]] = {"gcp": {GCSFS_HNS_ENV: "false"}}

# Schemes seen in tutorials that Airflow registers no object storage for, and what to use instead.
UNREGISTERED_SCHEMES: Mapping[str, str] = {"wasb": "abfs", "wasbs": "abfs", "azblob": "abfs", "az": "abfs"}

# The bundled backend stores a dict in the metadata DB for an offloaded XCom; common-io stores the bare URL
# string instead. xcom_backend.references decides when either is to be believed. Since version 3 the dict has
# the shape of a serde-serialized object (Airflow's own wire names below) whose data is the object's URL, so
# the API server's stringify shows "xcom_backend.InObjectStorage@version=3(<url>)" in the UI's XCom tab.
# Versions 1 and 2 carried REFERENCE_MARKER instead (shown there as a collapsed JSON object).
REFERENCE_CLASSNAME = "xcom_backend.InObjectStorage"
SERDE_CLASSNAME, SERDE_VERSION, SERDE_DATA = "__classname__", "__version__", "__data__"
REFERENCE_MARKER = "__xcom_object_storage__"

DEFAULT_THRESHOLD = 1000
DEFAULT_PREFIX = "xcom"

_CONN_ID_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,249}$")
_PREFIX_SEGMENT_RE = re.compile(r"^[A-Za-z0-9._-]+$")
MAX_PREFIX_LENGTH = 256


class ContractError(ValueError):
    """A value that would give Airflow an env it silently ignores or misreads."""


def connection_env(conn_id: str) -> str:
    """Env name Airflow reads a connection from (``AIRFLOW_CONN_`` + upper-cased id)."""
    validate_conn_id(conn_id)
    return f"AIRFLOW_CONN_{conn_id.upper()}"


def validate_conn_id(conn_id: str) -> str:
    # The id appears in an env var name and as the user part of the storage URL, so it is limited
    # to characters that are valid in both without quoting.
    if not isinstance(conn_id, str) or not _CONN_ID_RE.match(conn_id):
        raise ContractError(
            f"connection id {conn_id!r} is not allowed: use a letter followed by letters, digits or "
            "underscores (at most 250 characters)"
        )
    return conn_id


def validate_prefix(prefix: str) -> str:
    if not isinstance(prefix, str) or not prefix:
        raise ContractError("prefix must be a non-empty path such as 'xcom' or 'airflow/xcom'")
    if prefix.startswith("/") or prefix.endswith("/"):
        raise ContractError(f"prefix {prefix!r} must not start or end with '/'")
    if len(prefix) > MAX_PREFIX_LENGTH:
        raise ContractError(f"prefix {prefix!r} is longer than {MAX_PREFIX_LENGTH} characters")
    for segment in prefix.split("/"):
        if segment in ("", ".", ".."):
            raise ContractError(f"prefix {prefix!r} must not contain empty, '.' or '..' segments")
        if not _PREFIX_SEGMENT_RE.match(segment):
            raise ContractError(
                f"prefix {prefix!r} may only contain letters, digits, '.', '_', '-' and '/' between segments"
            )
    return prefix


def validate_threshold(threshold: int) -> int:
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < -1:
        raise ContractError(
            f"threshold {threshold!r} is not allowed: use -1 (keep every XCom in the metadata DB), "
            "0 (every XCom to object storage) or a positive byte count"
        )
    return threshold


def validate_compression(compression: str | None) -> str | None:
    if compression in (None, ""):
        return None
    if compression not in COMPRESSIONS:
        raise ContractError(
            f"compression {compression!r} is not allowed: use one of {', '.join(COMPRESSIONS)} or leave it empty"
        )
    return compression


def objectstorage_path(cloud: str, conn_id: str, bucket: str, prefix: str) -> str:
    """``<scheme>://<conn_id>@<bucket>/<prefix>``, the form ``ObjectStoragePath`` resolves credentials from."""
    if cloud not in SCHEMES:
        raise ContractError(f"cloud {cloud!r} is not allowed: use one of {', '.join(SCHEMES)}")
    validate_conn_id(conn_id)
    validate_prefix(prefix)
    if not bucket or "/" in bucket or "@" in bucket:
        raise ContractError(f"bucket {bucket!r} is not a valid bucket/container name")
    return f"{SCHEMES[cloud]}://{conn_id}@{bucket}/{prefix}"


# Schemes that name the same filesystem: a reference written under one is read under the other.
_LOCAL_SCHEMES = frozenset({"file", "local"})


@dataclass(frozen=True)
class ObjectStorageLocation:
    """``<scheme>://[<conn_id>@]<bucket>/<prefix>`` split into its parts (``file:///<path>`` has no bucket)."""

    scheme: str
    conn_id: str | None  # None: the scheme's default credentials (IRSA, instance role, ADC, ...)
    bucket: str
    prefix: str  # for an object URL: the object's key

    @property
    def path(self) -> str:
        """The filesystem's own path (``bucket/prefix``; ``/prefix`` for local files), as fsspec takes it."""
        if self.scheme in _LOCAL_SCHEMES:
            return "/" + self.prefix
        return f"{self.bucket}/{self.prefix}".rstrip("/")

    @property
    def family(self) -> str:
        """Which filesystem the scheme selects: ``s3``/``s3a``/``s3n`` are one, ``gs``/``gcs`` are one, ..."""
        if self.scheme in _LOCAL_SCHEMES:
            return "file"
        known = STORE_SCHEMES.get(self.scheme)
        return known.fs_module if known else self.scheme

    def relative_name(self, url: str) -> str | None:
        """The part of object ``url`` below this base (compared by bucket and path), or None outside it."""
        try:
            target = parse_objectstorage_path(url)
        except ContractError:
            return None
        if (target.family, target.bucket) != (self.family, self.bucket):
            return None
        base = self.prefix + "/" if self.prefix else ""
        if not target.prefix.startswith(base) or len(target.prefix) == len(base):
            return None
        return target.prefix[len(base) :]


def parse_objectstorage_path(url: str) -> ObjectStorageLocation:
    """Split ``<scheme>://[<conn_id>@]<bucket>/<prefix>`` the way ``ObjectStoragePath`` reads it.

    The connection id is optional (common-io then uses the scheme's default credentials), and local paths
    (``file:///shared/xcom``) have no bucket.
    """
    if not isinstance(url, str):
        raise ContractError(f"{url!r} is not a storage URL")
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme or not scheme.replace("+", "").replace("-", "").replace(".", "").isalnum():
        raise ContractError(f"{url!r} has no scheme; use <scheme>://<conn_id>@<bucket>/<prefix>")
    scheme = scheme.lower()
    netloc, _, prefix = rest.partition("/")
    conn_id, at, bucket = netloc.rpartition("@")
    if at and not conn_id:
        raise ContractError(f"{url!r} has an empty connection id before '@'")
    if not bucket and scheme not in _LOCAL_SCHEMES:
        raise ContractError(f"{url!r} names no bucket; use {scheme}://<conn_id>@<bucket>/<prefix>")
    return ObjectStorageLocation(scheme, conn_id or None, bucket, prefix.strip("/"))


def aws_connection(
    *,
    region: str,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    role_arn: str | None = None,
    endpoint_url: str | None = None,
) -> dict[str, Any]:
    """Airflow ``aws`` connection in its JSON form (what ``AIRFLOW_CONN_<ID>`` holds)."""
    if bool(access_key_id) != bool(secret_access_key):
        raise ContractError("an AWS access key needs both its id and its secret")
    extra: dict[str, Any] = {"region_name": region}
    if role_arn:
        extra["role_arn"] = role_arn
    if endpoint_url:
        extra["endpoint_url"] = endpoint_url
    connection: dict[str, Any] = {"conn_type": "aws"}
    if access_key_id:
        connection["login"] = access_key_id
        connection["password"] = secret_access_key
    connection["extra"] = extra
    return connection


def gcp_connection(*, project: str, keyfile_dict: str | None = None, endpoint_url: str | None = None) -> dict[str, Any]:
    """Airflow ``google_cloud_platform`` connection; without a key the worker's own identity (ADC) is used."""
    extra: dict[str, Any] = {"project": project}
    if keyfile_dict:
        extra["keyfile_dict"] = keyfile_dict
    if endpoint_url:
        extra["gcs.endpoint"] = endpoint_url  # read by Airflow's gs:// filesystem (gcsfs endpoint_url)
    return {"conn_type": "google_cloud_platform", "extra": extra}


def azure_connection(
    *,
    account_name: str,
    sas_token: str | None = None,
    account_key: str | None = None,
    managed_identity_client_id: str | None = None,
    endpoint_url: str | None = None,
) -> dict[str, Any]:
    """Airflow ``wasb`` connection in the form its ``abfs://`` filesystem (adlfs) reads.

    Without a credential the worker's own Azure identity is used (DefaultAzureCredential). ``endpoint_url``
    is the full blob service URL; adlfs only honours one given inside a connection string.
    """
    if sum(bool(value) for value in (sas_token, account_key, managed_identity_client_id)) > 1:
        raise ContractError("an Azure connection takes one credential: a SAS, an account key or an identity")
    if endpoint_url:
        if managed_identity_client_id:
            raise ContractError("a custom blob endpoint needs a SAS or an account key, not a managed identity")
        parts = [f"BlobEndpoint={endpoint_url.rstrip('/')}"]
        if sas_token:
            parts.append(f"SharedAccessSignature={sas_token.lstrip('?')}")
        elif account_key:
            parts += ["DefaultEndpointsProtocol=" + endpoint_url.split("://")[0], f"AccountName={account_name}"]
            parts.append(f"AccountKey={account_key}")
        return {"conn_type": "wasb", "extra": {"connection_string": ";".join(parts) + ";"}}
    extra: dict[str, Any] = {"account_name": account_name}
    if sas_token:
        extra["sas_token"] = sas_token.lstrip("?")
    if account_key:
        extra["account_key"] = account_key
    if managed_identity_client_id:
        extra["managed_identity_client_id"] = managed_identity_client_id
    return {"conn_type": "wasb", "login": account_name, "extra": extra}


@dataclass(frozen=True)
class XComEnv:
    """Everything a deployment needs to set, for one cloud."""

    cloud: str
    conn_id: str
    bucket: str
    prefix: str
    threshold: int
    connection: Mapping[str, Any]
    compression: str | None = None
    backend: str = "bundled"
    deployment: str | None = None
    credential: Mapping[str, Any] | None = None  # what the connection's credential is, without its secret

    def as_env(self) -> dict[str, str]:
        validate_threshold(self.threshold)
        compression = validate_compression(self.compression)
        if self.backend not in BACKEND_CLASSES:
            raise ContractError(f"backend {self.backend!r} is not allowed: use one of {', '.join(BACKEND_CLASSES)}")
        env = {
            XCOM_BACKEND_ENV: BACKEND_CLASSES[self.backend],
            PATH_ENV: objectstorage_path(self.cloud, self.conn_id, self.bucket, self.prefix),
            THRESHOLD_ENV: str(self.threshold),
            connection_env(self.conn_id): json.dumps(dict(self.connection), separators=(",", ":")),
        }
        if compression:
            env[COMPRESSION_ENV] = compression
        if self.deployment:
            env[DEPLOYMENT_ENV] = self.deployment
        if self.credential:
            env[CREDENTIAL_ENV] = json.dumps(dict(self.credential), separators=(",", ":"), sort_keys=True)
        env.update(CLOUD_ENV.get(self.cloud, {}))
        return env


def describe_threshold(threshold: int) -> str:
    """The threshold's meaning in words, as Airflow applies it to the serialized JSON size."""
    if threshold < 0:
        return "every XCom stays in the metadata database (object storage is never used)"
    if threshold == 0:
        return "every XCom goes to object storage"
    return f"XComs whose serialized JSON is {threshold} bytes or more go to object storage; smaller stay in the DB"
