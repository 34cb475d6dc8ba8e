"""GcsObjects (xcom_backend/gcs.py) against a local stand-in for GCS's JSON API and token endpoint that answers
what the emulator never does: expired tokens, 5xx, proxies that drop Range, bodies broken off, objects longer or
shorter than their reference."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from xcom_backend import gcs
from xcom_backend.gcs import GcsObjects, key_file_connection
from xcom_backend.transfer import PART_SIZE


class FakeGcs(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: dict[str, Any]

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _seen(self) -> bytes:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.state["lock"]:
            self.state["requests"].append((self.command, self.path, self.headers.get("Authorization"), len(body)))
        return body

    def do_POST(self) -> None:
        self._seen()
        state = self.state
        if self.path == "/token":
            with state["lock"]:
                state["tokens"] += 1
                token = f"token-{state['tokens']}"
            return self._send(200, json.dumps({"access_token": token, "expires_in": 3600}).encode())
        status = state["post"](self.path)
        return self._send(status, json.dumps({"error": {"message": f"answered {status}"}}).encode())

    def do_GET(self) -> None:
        self._seen()
        state, data = self.state, self.state["data"]
        if self.headers.get("Authorization") in state["revoked"]:
            return self._send(401, b'{"error": {"message": "Invalid Credentials"}}')
        if state.get("status"):
            return self._send(state["status"], b'{"error": {"message": "no"}}')
        if state.get("break_once") and not state.get("broken"):
            state["broken"] = True
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.close_connection = True
            return
        wanted = self.headers.get("Range")
        if not wanted or state.get("ignore_range"):
            return self._send(200, data)
        start, end = (int(x) for x in wanted.split("=")[1].split("-"))
        if start >= len(data):
            error = b'{"error": {"code": 416, "message": "The requested range cannot be satisfied."}}'
            return self._send(416, error, {"Content-Range": f"bytes */{len(data)}"})
        chunk = data[start : end + 1]
        return self._send(206, chunk, {"Content-Range": f"bytes {start}-{start + len(chunk) - 1}/{len(data)}"})

    def do_DELETE(self) -> None:
        self._seen()
        self._send(self.state.get("delete", 204))


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    state: dict[str, Any] = {
        "lock": threading.Lock(),
        "requests": [],
        "tokens": 0,
        "revoked": set(),
        "data": b"0123456789" * 10,
        "post": lambda path: 200,
    }
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (FakeGcs,), {"state": state}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    info = {
        "type": "service_account",
        "project_id": "p",
        "private_key_id": "k1",
        "private_key": pem.decode(),
        "client_email": "xcom@p.iam.gserviceaccount.com",
        "client_id": "104729000000000000001",
        "token_uri": f"http://127.0.0.1:{port}/token",
    }
    extra = {"keyfile_dict": info, "gcs.endpoint": f"http://127.0.0.1:{port}"}
    monkeypatch.setenv("AIRFLOW_CONN_FAKE_GCS", json.dumps({"conn_type": "google_cloud_platform", "extra": extra}))
    monkeypatch.setattr(gcs, "BACKOFF_FACTOR", 0.0)
    state["objects"] = lambda concurrency=4: GcsObjects(key_file_connection("fake_gcs"), "bucket", concurrency)
    yield state
    server.shutdown()
    server.server_close()


def requests_of(fake: dict[str, Any], method: str, path: str = "") -> list[tuple]:
    return [r for r in fake["requests"] if r[0] == method and path in r[1]]


def test_a_refused_token_is_refreshed_once_however_many_threads_saw_it(fake: dict[str, Any]) -> None:
    objects = fake["objects"](8)
    assert objects.get("k") == fake["data"]
    assert fake["tokens"] == 1
    fake["revoked"].add("Bearer token-1")
    barrier = threading.Barrier(8)

    def read(_: int) -> bytes:
        barrier.wait()
        return objects.get("k")

    from xcom_backend.transfer import in_parallel

    assert in_parallel(read, range(8), 8) == [fake["data"]] * 8
    assert fake["tokens"] == 2  # one refresh for the eight 401s


def test_a_5xx_upload_is_tried_as_often_as_gcsfs_tries_it_then_fails(fake: dict[str, Any]) -> None:
    fake["post"] = lambda path: 503
    with pytest.raises(OSError, match="503"):
        fake["objects"]().put("k", b"value")
    assert len(requests_of(fake, "POST", "/upload/")) == gcs.RETRIES


def test_errors_are_the_ones_gcsfs_raises(fake: dict[str, Any]) -> None:
    objects = fake["objects"]()
    for status, error in ((404, FileNotFoundError), (403, PermissionError), (412, OSError), (500, OSError)):
        fake["status"] = status
        with pytest.raises(error, match=str(status)) as raised:
            objects.get("k")
        assert "Bearer" not in str(raised.value)
    fake["delete"] = 404
    assert objects.delete("k") is False
    fake["delete"] = 204
    assert objects.delete("k") is True


def test_ranges_read_what_the_reference_names_or_fail(fake: dict[str, Any]) -> None:
    objects = fake["objects"]()
    size = 3 * PART_SIZE
    fake["data"] = full = bytes(range(256)) * (size // 256)
    assert objects.get("k", size) == full
    assert len(requests_of(fake, "GET", "/download/")) == 3  # ranges of a part each (range_size at 4)
    with pytest.raises(OSError, match="not the"):  # longer than its reference: refused
        objects.get("k", size - 10)
    shorter = full[: size - PART_SIZE - 7]
    fake["data"] = shorter
    assert objects.get("k", size) == shorter  # short: the digest check refuses it
    fake["data"] = shorter = full[: 2 * PART_SIZE]
    assert objects.get("k", size) == shorter  # the last range answered 416 (with an error body): nothing of it
    fake["ignore_range"] = True
    with pytest.raises(OSError, match="whole object"):
        objects.get("k", size)


def test_a_body_broken_off_is_read_again(fake: dict[str, Any]) -> None:
    fake["data"] = b"x" * 100_000
    fake["break_once"] = True
    assert fake["objects"]().get("k") == fake["data"]
    assert len(requests_of(fake, "GET", "/download/")) == 2


@pytest.mark.parametrize("failing", ["part", "compose"])
def test_a_failed_composite_upload_deletes_its_parts(fake: dict[str, Any], failing: str) -> None:
    fake["post"] = lambda path: 200 if not path.endswith("/compose") and "part-02" not in path else 400
    if failing == "compose":
        fake["post"] = lambda path: 400 if path.endswith("/compose") else 200
    parts = [f"_parts/p.part-{n:02d}" for n in range(32)]
    with pytest.raises(OSError):
        fake["objects"]().put("value", b"v" * (3 * PART_SIZE), parts)
    assert len(requests_of(fake, "POST", "/batch/storage/v1")) == 1  # the parts written, deleted in one batch
    assert bool(requests_of(fake, "POST", "/compose")) == (failing == "compose")  # no compose of a missing part


def test_set_ups_only_gcsfs_knows_keep_requests_on_gcsfs(fake: dict[str, Any], monkeypatch: pytest.MonkeyPatch):
    connection = key_file_connection("fake_gcs")
    assert not connection.filesystem_only
    bare = gcs.KeyFileConnection({**connection.extras, "gcs.endpoint": None}, connection.credentials)
    for name in ("STORAGE_EMULATOR_HOST", "GOOGLE_CLOUD_UNIVERSE_DOMAIN"):
        monkeypatch.setenv(name, "x")
        assert bare.filesystem_only and not connection.filesystem_only, name  # only without gcs.endpoint
        monkeypatch.delenv(name)
    checked = gcs.KeyFileConnection({**connection.extras, "gcs.consistency": "md5"}, connection.credentials)
    assert checked.filesystem_only
    from google.auth.transport import mtls

    monkeypatch.setattr(mtls, "should_use_client_cert", lambda: True)
    monkeypatch.setattr(mtls, "has_default_client_cert_source", lambda: True)
    assert connection.filesystem_only


@pytest.mark.parametrize("key", ["{}", "null", "[]", ""])
def test_an_empty_key_is_no_key(monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    extra = {"keyfile_dict": key}
    monkeypatch.setenv("AIRFLOW_CONN_EMPTY_KEY", json.dumps({"conn_type": "google_cloud_platform", "extra": extra}))
    assert key_file_connection("empty_key") is None  # the provider's: the worker's own identity


def test_the_key_is_not_in_a_repr(fake: dict[str, Any]) -> None:
    connection = key_file_connection("fake_gcs")
    assert "PRIVATE KEY" not in repr(connection)
    assert "PRIVATE KEY" in json.dumps(connection.extras)  # it was there to leak
