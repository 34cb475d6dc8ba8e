"""GCS's single-object requests (read, write, delete) for a connection holding a service account key, without
the Google provider's hook module or gcsfs.

The provider's gs:// filesystem (``airflow.providers.google.cloud.fs.gcs.get_fs``) builds on GoogleBaseHook,
whose module imports gcloud-aio-auth, googleapiclient, httplib2 and the Secret Manager client, then gcsfs
with aiohttp, requests, google-api-core and google-cloud-storage's async writer: measured 0.24 s and 0.21 s
of a task's first offload on GCS (0.40 s in all, above the 0.3 s goal of issue 19). For a connection whose key
is ``keyfile_dict`` or ``key_path`` (what the GCP stack emits), the credentials are built here as the provider
builds them (google-auth's service-account credentials with the connection's scopes;
``tests/unit/test_gcs_connection.py`` compares both on each connection shape), and the JSON API's media
upload, download, compose and delete requests are sent over urllib3, refreshing the token as gcsfs does. gc's
listing still goes through gcsfs, built with the provider's options (``key_file_filesystem``).

Any other connection (the worker's own identity, impersonation, a credential configuration file, a key in
Secret Manager, anonymous access, a quota project, an identity provider, requester pays, custom session
options, versioned reads) and any other endpoint set-up (STORAGE_EMULATOR_HOST without ``gcs.endpoint``,
another universe domain, a client certificate) goes to the provider's ``get_fs`` and gcsfs for everything,
which also raise the provider's own errors for a key it refuses.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from xcom_backend.transfer import PART_SIZE, in_parallel, read_in_ranges, request_slots

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

# Fields GoogleBaseHook.get_credentials_and_project_id reads besides the key, scope and project.
PROVIDER_ONLY_FIELDS = (
    "key_secret_name",
    "key_secret_project_id",
    "credential_config_file",
    "impersonation_chain",
    "is_anonymous",
    "idp_issuer_url",
    "quota_project_id",
)
# gcs.* extras the provider passes to gcsfs that change what a request is (the others: listing caches, bucket
# creation, access scope, consistency checks gcsfs does not make with its default "none").
FILESYSTEM_ONLY_EXTRAS = ("gcs.requester-pays", "gcs.session-kwargs", "gcs.version-aware")
# Environment gcsfs reads to pick its endpoint (a client certificate: _client_certificate).
FILESYSTEM_ONLY_ENV = ("STORAGE_EMULATOR_HOST", "GOOGLE_CLOUD_UNIVERSE_DOMAIN")
DEFAULT_SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)  # the provider's _DEFAULT_SCOPES
DEFAULT_ENDPOINT = "https://storage.googleapis.com"
_PREFIX = "extra__google_cloud_platform__"  # the provider still reads fields saved under this prefix
RETRIES = 6  # gcsfs's retry_request
RETRIED_STATUSES = frozenset({408, 429, 500, 502, 503, 504})  # gcsfs.retry.is_retriable
BACKOFF_FACTOR = 0.5  # urllib3 waits 0, then 1, 2, 4, 8 s between tries (gcsfs: 1-2, 2-3, 4-5, 8-9 s)
CONNECT_TIMEOUT, READ_TIMEOUT = 30.0, 120.0  # seconds; a stalled connection fails the request, then is retried


@dataclass(frozen=True)
class KeyFileConnection:
    extras: dict[str, Any] = field(repr=False)  # holds the key: never in a repr (of the store, in a traceback)
    credentials: Any = field(repr=False)  # google.oauth2.service_account.Credentials
    project: str | None = None

    @property
    def endpoint(self) -> str:
        return (self.extras.get("gcs.endpoint") or DEFAULT_ENDPOINT).rstrip("/")

    @property
    def filesystem_only(self) -> bool:
        """Options only gcsfs implements: requests then go through it too."""
        options = any(self.extras.get(name) not in (None, "", False, {}, "false") for name in FILESYSTEM_ONLY_EXTRAS)
        checked = self.extras.get("gcs.consistency", "none") not in (None, "", "none")  # gcsfs checks each upload
        endpoint = not self.extras.get("gcs.endpoint") and any(os.environ.get(n) for n in FILESYSTEM_ONLY_ENV)
        return options or checked or endpoint or _client_certificate()

    def filesystem(self) -> AbstractFileSystem:
        """gcsfs with the options the provider's get_fs passes (``gcs.*`` extras, read without the prefix, as it
        reads them); its plain class, as store._tuned makes of the provider's."""
        from gcsfs.core import GCSFileSystem

        extras = self.extras
        return GCSFileSystem(
            project=self.project,
            access=extras.get("gcs.access", "full_control"),
            token=self.credentials,
            consistency=extras.get("gcs.consistency", "none"),
            cache_timeout=extras.get("gcs.cache-timeout"),
            requester_pays=extras.get("gcs.requester-pays", False),
            session_kwargs=extras.get("gcs.session-kwargs", {}),
            endpoint_url=extras.get("gcs.endpoint"),
            default_location=extras.get("gcs.default-bucket-location"),
            version_aware=extras.get("gcs.version-aware", "false").lower() == "true",
        )


def _client_certificate() -> bool:
    """Whether gcsfs would present google-auth's default client certificate (mutual TLS, its mTLS endpoint):
    gcsfs.core._use_client_cert's test."""
    try:
        from google.auth.transport import mtls
    except ImportError:
        return False
    should_use = getattr(mtls, "should_use_client_cert", None)
    return bool(should_use is not None and should_use() and mtls.has_default_client_cert_source())


def _field(extras: dict[str, Any], name: str) -> Any:
    """The provider's get_field: the plain name first, then the prefixed one; "" counts as unset."""
    value = extras[name] if name in extras else extras.get(_PREFIX + name)
    return None if value == "" else value


def key_file_connection(conn_id: str | None) -> KeyFileConnection | None:
    """The connection's service account credentials, built as GoogleBaseHook builds them, or None where the
    provider decides (no key, or anything besides a key, its scopes and project)."""
    if conn_id is None:
        return None
    from airflow.sdk.bases.hook import BaseHook

    extras = BaseHook.get_connection(conn_id).extra_dejson
    if any(_field(extras, name) for name in PROVIDER_ONLY_FIELDS):
        return None
    key_path, keyfile = _field(extras, "key_path"), _field(extras, "keyfile_dict")
    if bool(key_path) == bool(keyfile):  # no key (the worker's identity), or both (the provider refuses that)
        return None
    if keyfile and not isinstance(keyfile, dict):
        try:
            keyfile = json.loads(keyfile)
        except ValueError:
            return None
        if not keyfile:  # "{}", "null", "[]": no key, for the provider (which then uses the worker's identity)
            return None
    if keyfile and not (isinstance(keyfile, dict) and isinstance(keyfile.get("private_key"), str)):
        return None
    if key_path and not (isinstance(key_path, str) and key_path.endswith(".json")):
        return None
    scope = _field(extras, "scope")
    scopes = [s.strip() for s in scope.split(",")] if scope else list(DEFAULT_SCOPES)

    from google.oauth2 import service_account

    if keyfile:  # keys pasted with escaped newlines work with the provider, so here too
        info = {**keyfile, "private_key": keyfile["private_key"].replace("\\n", "\n")}
        credentials = service_account.Credentials.from_service_account_info(info, scopes=scopes)
    else:
        credentials = service_account.Credentials.from_service_account_file(key_path, scopes=scopes)
    return KeyFileConnection(extras, credentials, _field(extras, "project") or credentials.project_id)


class GcsObjects:
    """Reads, writes and deletes of objects in ``bucket``, errors as gcsfs raises them (404 ->
    FileNotFoundError; 401 and 403 -> PermissionError, an OSError as gcsfs's; others -> OSError): one request
    each up to PART_SIZE; above it a parallel composite upload and ranged reads, ``concurrency`` at a time."""

    def __init__(self, connection: KeyFileConnection, bucket: str, concurrency: int = 10) -> None:
        import ssl

        import urllib3

        self.credentials = connection.credentials
        self.endpoint = connection.endpoint
        self.bucket = bucket
        self.concurrency = concurrency
        self.slots = request_slots(concurrency)
        retries = urllib3.Retry(
            total=RETRIES - 1,
            backoff_factor=BACKOFF_FACTOR,
            status_forcelist=RETRIED_STATUSES,
            allowed_methods=None,  # uploads, composes and deletes of one name are idempotent
            raise_on_status=False,
        )
        # Whole bodies are read inside urllib3's request, so a connection that breaks off mid-body is retried too.
        self.pool = urllib3.PoolManager(
            maxsize=concurrency,
            retries=retries,
            timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT, read=READ_TIMEOUT),
            ssl_context=ssl.create_default_context(),
        )
        self._token_lock = threading.Lock()
        # The token endpoint without the data requests' retries: google-auth tries a refresh 3 times itself, and
        # every thread waits on _token_lock meanwhile.
        self._token_pool = urllib3.PoolManager(
            retries=False,
            timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT, read=READ_TIMEOUT),
            ssl_context=ssl.create_default_context(),
        )

    def put(self, key: str, data: bytes, parts: list[str] | None = None) -> None:
        """One media upload; above PART_SIZE, with ``parts`` (names for the parts), a composite upload."""
        if len(data) > PART_SIZE and parts:
            self._put_composed(key, memoryview(data), parts)
            return
        self._upload(key, data)

    def _upload(self, key: str, data: bytes | memoryview) -> None:
        url = f"{self.endpoint}/upload/storage/v1/b/{quote(self.bucket)}/o?uploadType=media&name={quote(key, safe='')}"
        with self.slots:
            self._request("POST", url, key, body=data, headers={"Content-Type": "application/octet-stream"})

    def _put_composed(self, key: str, data: memoryview, parts: list[str]) -> None:
        """GCS's parallel composite upload: parts written as objects of their own, ``concurrency`` at once, then
        composed into ``key`` in one request and deleted. A part that fails fails the write (nothing is composed);
        the parts are deleted whatever happens (those left by a killed process are names gc takes for orphans:
        references.part_name)."""
        size = max(PART_SIZE, -(-len(data) // len(parts)))
        starts = range(0, len(data), size)
        names = parts[: len(starts)]
        try:
            in_parallel(
                lambda item: self._upload(item[0], data[item[1] : item[1] + size]),
                list(zip(names, starts, strict=True)),
                self.concurrency,
            )
            body = {
                "sourceObjects": [{"name": name} for name in names],
                "kind": "storage#composeRequest",
                "destination": {"name": key, "bucket": self.bucket},
            }
            url = f"{self.endpoint}/storage/v1/b/{quote(self.bucket)}/o/{quote(key, safe='')}/compose"
            with self.slots:
                self._request(
                    "POST", url, key, body=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
                )
        finally:
            with contextlib.suppress(Exception):
                self._delete_batch(names)

    def _delete_batch(self, keys: list[str]) -> None:
        """Delete ``keys`` in one batch request (up to 100), as gcsfs's _rm_files; an object one of them fails to
        delete is left to gc (its name is a part's: references.part_name)."""
        boundary = "xcom-backend-batch"
        items = [
            f"--{boundary}\r\nContent-Type: application/http\r\nContent-ID: <{number}>\r\n\r\n"
            f"DELETE /storage/v1/b/{quote(self.bucket)}/o/{quote(key, safe='')} HTTP/1.1\r\n\r\n"
            for number, key in enumerate(keys, 1)
        ]
        body = ("".join(items) + f"--{boundary}--\r\n").encode()
        headers = {"Content-Type": f"multipart/mixed; boundary={boundary}"}
        with self.slots:
            self._request("POST", f"{self.endpoint}/batch/storage/v1", keys[0], body=body, headers=headers)

    def get(self, key: str, size: int | None = None) -> bytes | bytearray:
        """One download; with the object's ``size`` known and above PART_SIZE, ranges read ``concurrency`` at a
        time into one buffer (transfer.read_in_ranges). An object shorter than ``size`` comes back short, one
        longer raises: the caller checks size and digest of what it gets."""
        if size is None or size <= PART_SIZE:
            return self._download(key)
        return read_in_ranges(lambda start, end: self._download(key, start, end, size), size, self.concurrency)

    def _download(self, key: str, start: int = 0, end: int | None = None, size: int | None = None) -> bytes:
        url = f"{self.endpoint}/download/storage/v1/b/{quote(self.bucket)}/o/{quote(key, safe='')}?alt=media"
        headers = {"Range": f"bytes={start}-{end - 1}"} if end is not None else {}
        with self.slots:
            answer = self._request("GET", url, key, headers=headers, ok=(200, 206, 416))
        if answer.status == 416:
            return b""  # the object ends before this range
        if end is not None and answer.status == 200:  # the whole object (a proxy that drops Range): not the range
            raise OSError(errno.EIO, "a ranged read was answered with the whole object", self._url(key))
        total = answer.headers.get("Content-Range", "").rpartition("/")[2]
        if size is not None and total.isdigit() and int(total) > size:
            raise OSError(errno.EIO, f"the object is {total} bytes, not the {size} its reference names", self._url(key))
        return answer.data

    def delete(self, key: str) -> bool:
        """False when the object was already gone (gcsfs raises FileNotFoundError then)."""
        url = f"{self.endpoint}/storage/v1/b/{quote(self.bucket)}/o/{quote(key, safe='')}"
        try:
            with self.slots:
                self._request("DELETE", url, key)
        except FileNotFoundError:
            return False
        return True

    def _request(self, method: str, url: str, key: str, *, ok: tuple[int, ...] = (200, 204, 206), **kwargs: Any) -> Any:
        """One request with the credentials' token, refreshed as gcsfs refreshes it (when it is missing or
        expired, and once more when GCS answers 401); its status as gcsfs's errors."""
        import urllib3

        headers = kwargs.pop("headers", {})
        refused: str | None = None  # the token GCS answered 401 to
        for _ in range(2):
            authorization = self._authorization(refused)
            try:
                answer = self.pool.request(
                    method, url, headers={**headers, **authorization}, decode_content=False, **kwargs
                )
            except urllib3.exceptions.HTTPError as err:
                raise OSError(errno.EIO, f"{type(err).__name__}: {err}", self._url(key)) from err
            if answer.status != 401:
                break
            refused = authorization.get("authorization")
        if answer.status in ok:
            return answer
        message = f"{answer.status}: {_error_message(answer.data)}"
        if answer.status == 404:
            raise FileNotFoundError(errno.ENOENT, message, self._url(key))
        if answer.status in (401, 403):
            raise PermissionError(errno.EACCES, message, self._url(key))
        raise OSError(errno.EIO, message, self._url(key))

    def _authorization(self, refused: str | None = None) -> dict[str, str]:
        """The Authorization header, the token refreshed when missing or expired, or when it is still the one GCS
        refused (``refused``: a thread that saw a 401 after another refreshed uses the new token). Not
        google-auth's before_request: since 2.5x it also starts a background lookup of the credentials'
        regional access boundary, which gcsfs (refresh and apply) does not do."""
        with self._token_lock:
            headers: dict[str, str] = {}
            if self.credentials.valid:
                self.credentials.apply(headers)
            if not headers or headers.get("authorization") == refused:
                from google.auth.transport.urllib3 import Request

                self.credentials.refresh(Request(self._token_pool))  # google-auth retries a refresh itself
                headers = {}
                self.credentials.apply(headers)
        return headers

    def _url(self, key: str) -> str:
        return f"gs://{self.bucket}/{key}"


def _error_message(body: bytes) -> str:
    """GCS's JSON error message, or the start of the body."""
    try:
        error = json.loads(body)["error"]
        return str(error.get("message", error) if isinstance(error, dict) else error)
    except (ValueError, KeyError, TypeError):
        return body[:200].decode("utf-8", "replace")
