"""A small threaded reverse proxy on 127.0.0.1: the base of the IAM layers put in front of the emulators.

A subclass decides per request (``authorise``) and either answers itself or forwards the request unchanged,
Host header included, so signatures over the Host (AWS SigV4) still verify and URLs the emulator builds
from it (GCS resumable upload sessions) point back at the proxy.
"""

from __future__ import annotations

import contextlib
import http.client
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_HOP_BY_HOP = ("content-length", "transfer-encoding", "connection", "keep-alive", "server", "date")


class ForwardingHandler(BaseHTTPRequestHandler):
    """Reads the request, asks ``authorise`` and forwards it to ``upstream`` when that returns None."""

    protocol_version = "HTTP/1.1"
    upstream: tuple[str, int]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def authorise(self, body: bytes) -> tuple[int, dict[str, str], bytes] | None:
        """None to forward; otherwise the (status, headers, body) to answer with instead."""
        raise NotImplementedError

    def forwarded(self, status: int, headers: list[tuple[str, str]]) -> None:
        """Called with the upstream's answer to a forwarded request (e.g. to note session ids)."""

    def read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def handle_any(self) -> None:
        body = self.read_body()
        answer = self.authorise(body)
        if answer is None:
            answer = self._forward(body)
        status, headers, payload = answer
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _forward(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection(*self.upstream, timeout=300)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("content-length", "transfer-encoding")}
        try:
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
        finally:
            connection.close()
        self.forwarded(response.status, response.getheaders())
        kept = {k: v for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP}
        return response.status, kept, payload

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = handle_any


def upstream_of(url: str) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


@contextlib.contextmanager
def serve(handler: type[ForwardingHandler], name: str) -> Iterator[str]:
    """Serve ``handler`` on a free loopback port until the block ends; yields its http:// endpoint."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
