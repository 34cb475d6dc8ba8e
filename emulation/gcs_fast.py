"""gcp-storage-emulator with its per-byte costs taken out, so that the link, not the emulator, bounds a transfer.

Started as ``python -m emulation.gcs_fast start ...`` (the console script's arguments) by emulation.gcs for
`make bench` (``gcs_server(fast=True)``); the tests run the stock emulator. The stock
emulator (2026.7.19), profiled on this machine (docs/benchmark.md), serves one request at a time with a listen
backlog of 5 (ten parallel connections lose SYNs and wait 1 s to retry), composes by ``bytes +=`` per source
(1.4 s of a 1.7 s compose of 25 x 8 MiB: quadratic copying), appends each resumable chunk the same way, and
rewrites all metadata as indented JSON after every write. Real GCS has none of these costs; they made its
200 MB uploads and parallel reads emulator-bound whichever client sent them. Changed here, in the emulator's
own process:

1. ``ThreadingHTTPServer`` with a backlog of 128: request bodies are read and responses written concurrently;
   routing and the handler (all storage access) still run one at a time under a lock, as before.
2. compose joins its sources once (``b"".join``).
3. In memory, a resumable upload's chunks are appended to one bytearray.
4. In memory, the metadata JSON (read back only by a new store over the same directory) is not rewritten.

Responses, stored bytes and metadata (md5Hash, crc32c, etag) are unchanged; the emulator's md5 of every write is
kept. ``apply`` refuses to patch an emulator whose replaced functions changed (their source hashes below).
"""

from __future__ import annotations

import sys
import threading
from functools import partial
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from typing import Any

from gcp_storage_emulator import server as _server
from gcp_storage_emulator import storage as _storage
from gcp_storage_emulator.exceptions import BadRequest, Conflict, NotFound
from gcp_storage_emulator.handlers import objects as _objects

from emulation.processes import require_known_sources

# sha256 of the source of each function replaced or wrapped, in gcp-storage-emulator 2026.7.19.
_EXPECTED = {
    "server._read_raw_data": "3fdfaa334582bbdf22d5faff14aa9102f0873db01c4e7b7d9dccd96d297c6837",
    "server.Router.handle": "44ac49255a02af47c341610ca68efa0fe1416ac2bcaf02f74ab6bae07e7fa3e2",
    "server.Response.close": "f3b5a3cf3eec31e168f396cdc23025d69dfc210b982e0ada31b13cc51ebfab9a",
    "server.APIThread.run": "35c08305e9b5695f8840b1cd830219397b2c8b48eb690c01fdd22cd607951c71",
    "objects.compose": "31905c0ccfce8f50a3d8806615598c7ea0c62b504586f57d14aae1c756e26937",
    "storage.Storage.add_to_resumable_upload": "f651a45b668fd334d089ce03fe18ddc9bb6f1064d218f92ba64aa908f8c029fa",
    "storage.Storage._write_config_to_file": "000bd7d2db58085f0cd8aff6698d9e0b1ab1cab793001f3149fe28adb63f24ee",
}
_ORIGINAL = {
    "server._read_raw_data": _server._read_raw_data,
    "server.Router.handle": _server.Router.handle,
    "server.Response.close": _server.Response.close,
    "server.APIThread.run": _server.APIThread.run,
    "objects.compose": _objects.compose,
    "storage.Storage.add_to_resumable_upload": _storage.Storage.add_to_resumable_upload,
    "storage.Storage._write_config_to_file": _storage.Storage._write_config_to_file,
}
_HANDLING = threading.RLock()  # one request's routing and handler at a time, as the stock server ran them
_held = threading.local()  # the responses a handler closed while holding _HANDLING, sent after it
_NOT_READ = object()


# 1. Threads: bodies read and responses written outside the lock.
class _ThreadingServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


def _run(self: Any) -> None:
    self._httpd = _ThreadingServer((self._host, self._port), partial(_server.RequestHandler, self._storage))
    self.is_running.set()
    self._httpd.serve_forever()


def _handle(self: Any, method: str) -> None:
    handler = self._request_handler
    handler._gcs_fast_body = _ORIGINAL["server._read_raw_data"](handler)
    _held.responses = []
    try:
        with _HANDLING:
            _ORIGINAL["server.Router.handle"](self, method)
    finally:
        responses, _held.responses = _held.responses, None
    for response in responses:
        _ORIGINAL["server.Response.close"](response)


def _close(self: Any) -> None:
    responses = getattr(_held, "responses", None)
    if responses is None:
        _ORIGINAL["server.Response.close"](self)
    else:
        responses.append(self)


def _read_raw_data(request_handler: Any) -> bytes | None:
    body = getattr(request_handler, "_gcs_fast_body", _NOT_READ)
    if body is _NOT_READ:
        return _ORIGINAL["server._read_raw_data"](request_handler)
    request_handler._gcs_fast_body = _NOT_READ  # read once, as from the socket
    return body


# 2. compose: the stock handler (handlers/objects.py) with its sources joined once.
def _compose(request: Any, response: Any, storage: Any, *args: Any, **kwargs: Any) -> None:
    content_type = None
    sources = []
    try:
        dest_properties = request.data["destination"]
        for src_obj in request.data["sourceObjects"]:
            if content_type is None:
                content_type = storage.get_file_obj(request.params["bucket_name"], src_obj["name"])["contentType"]
            sources.append(storage.get_file(request.params["bucket_name"], src_obj["name"]))
    except NotFound:
        response.status = HTTPStatus.NOT_FOUND
        return
    dest_file = b"".join(sources)
    del sources
    dest_obj = _objects._make_object_resource(
        request.base_url,
        request.params["bucket_name"],
        request.params["object_id"],
        content_type,
        len(dest_file),
        dest_properties,
    )
    try:
        dest_obj = _objects._checksums(dest_file, dest_obj)
        storage.create_file(request.params["bucket_name"], request.params["object_id"], dest_file, dest_obj)
        response.json(dest_obj)
    except NotFound:
        response.status = HTTPStatus.NOT_FOUND
    except Conflict as err:
        _objects._handle_conflict(response, err)


# 3. and 4. In-memory storage.
def _add_to_resumable_upload(
    self: Any, file_id: str, content: bytes, total_size: int | None = None, expected_start: int | None = None
) -> bytes | None:
    if not self._use_memory_fs:
        return _ORIGINAL["storage.Storage.add_to_resumable_upload"](
            self, file_id, content, total_size=total_size, expected_start=expected_start
        )
    path = self._object_path(_storage.RESUMABLE_DIR, self.safe_id(file_id))
    received = self._store._files.get(self._store._norm(path), b"")
    if expected_start is not None and expected_start != len(received):
        raise BadRequest(f"Invalid Content-Range start: expected {len(received)}, got {expected_start}")
    if not received:
        received = content or b""
    elif content:
        if not isinstance(received, bytearray):
            received = bytearray(received)
        received += content
    self._store.write_bytes(path, received)
    if total_size is None or len(received) < total_size:
        return None
    return bytes(memoryview(received)[:total_size])


def _write_config_to_file(self: Any) -> None:
    if not self._use_memory_fs:
        _ORIGINAL["storage.Storage._write_config_to_file"](self)


def apply() -> None:
    """Patch the emulator's modules in this process; ValueError if a replaced function is not the one known."""
    require_known_sources("emulation/gcs_fast.py", _EXPECTED, _ORIGINAL)
    _server._read_raw_data = _read_raw_data
    _server.Router.handle = _handle
    _server.Response.close = _close
    _server.APIThread.run = _run
    _objects.compose = _compose
    _server.HANDLERS = tuple(  # the route table holds the handler functions themselves
        (regex, {method: _compose if h is _ORIGINAL["objects.compose"] else h for method, h in handlers.items()})
        for regex, handlers in _server.HANDLERS
    )
    _storage.Storage.add_to_resumable_upload = _add_to_resumable_upload
    _storage.Storage._write_config_to_file = _write_config_to_file


if __name__ == "__main__":
    apply()
    from gcp_storage_emulator.__main__ import main

    main(sys.argv[1:])
