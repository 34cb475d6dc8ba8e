"""A network-shaping TCP proxy on 127.0.0.1: a cloud's latency and bandwidth in front of a local emulator.

Loopback answers in microseconds at memory speed; a cloud store answers in ~10-30 ms and gives one TCP
connection ~50-100 MB/s. ``shaped_link`` relays bytes between a client and an emulator (plain HTTP or TLS:
it does not look inside) and, per connection and direction:

- delays every byte by half the round-trip time, so a request and its answer (one turn) cost one RTT;
- delays the first byte of a connection by one more RTT, as TCP's handshake does;
- sends at most ``per_connection`` bytes/s (a token bucket: a chunk leaves once the ones before it have);
- optionally shares ``aggregate`` bytes/s between all connections, per direction (the host's link).

Reading stops while a chunk waits for its turn, so a fast sender is slowed by TCP's own back-pressure, as
on a real link, and the proxy holds at most one chunk per connection and direction in flight.

Cloud endpoints keep HTTP connections alive; werkzeug's server (moto) closes every one after its answer, so a
client would pay the handshake's RTT on every request. With ``keep_alive=True`` the link keeps the client's
connection open and sends each request to the emulator on a fresh loopback connection of its own (an HTTP/1.1
relay: Content-Length and chunked bodies, ``Expect: 100-continue``; an answer whose body ends with the
connection, as gcp-storage-emulator's do, is passed on chunked). TLS upstreams (Azurite) keep their
connections alive themselves and are relayed as bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

CHUNK = 256 * 1024


@dataclass(frozen=True)
class LinkShape:
    rtt: float = 0.020  # seconds per request/response turn
    per_connection: float | None = 80e6  # bytes/s, each direction of each connection
    aggregate: float | None = None  # bytes/s, each direction, shared by every connection

    def describe(self) -> str:
        def rate(value: float | None) -> str:
            return "unlimited" if value is None else f"{value / 1e6:g} MB/s"

        return f"RTT {self.rtt * 1000:g} ms, {rate(self.per_connection)} per connection, {rate(self.aggregate)} in all"


@dataclass
class _Clock:
    """When the link in one direction is next free (seconds on the loop's monotonic clock)."""

    free_at: float = 0.0

    def send(self, now: float, size: int, rate: float | None) -> float:
        """Occupy the link for ``size`` bytes at ``rate``; when they have left."""
        start = max(now, self.free_at)
        self.free_at = start + (size / rate if rate else 0.0)
        return self.free_at


@dataclass
class ShapedLink:
    upstream: tuple[str, int]
    shape: LinkShape
    keep_alive: bool = False
    port: int = 0
    connections: int = 0
    bytes_relayed: int = 0
    _aggregate: dict[str, _Clock] = field(default_factory=lambda: {"up": _Clock(), "down": _Clock()})

    @property
    def endpoint_host(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: str) -> None:
        loop = asyncio.get_running_loop()
        own = _Clock()
        one_way = self.shape.rtt / 2
        first = direction == "up"  # the handshake's RTT, before the client's first bytes arrive
        pending: set[asyncio.Task[None]] = set()
        last_delivery: asyncio.Future[None] | None = None
        try:
            while chunk := await reader.read(CHUNK):
                now = loop.time()
                left = own.send(now, len(chunk), self.shape.per_connection)
                left = max(left, self._aggregate[direction].send(now, len(chunk), self.shape.aggregate))
                arrive = left + one_way + (self.shape.rtt if first else 0.0)
                first = False
                if left > now:  # the sender waits for the link: back-pressure, one chunk in flight
                    await asyncio.sleep(left - now)
                previous, last_delivery = last_delivery, loop.create_future()
                task = asyncio.create_task(self._deliver(writer, chunk, arrive, previous, last_delivery))
                pending.add(task)
                task.add_done_callback(pending.discard)
            if last_delivery is not None:
                await last_delivery
            with contextlib.suppress(OSError, RuntimeError):
                writer.write_eof()
        except (ConnectionError, OSError):
            pass
        finally:
            for task in pending:
                task.cancel()

    async def _deliver(
        self,
        writer: asyncio.StreamWriter,
        chunk: bytes,
        arrive: float,
        previous: asyncio.Future[None] | None,
        done: asyncio.Future[None],
    ) -> None:
        try:
            if previous is not None:  # in order: after the chunk before it
                await previous
            delay = arrive - asyncio.get_running_loop().time()
            if delay > 0:
                await asyncio.sleep(delay)
            writer.write(chunk)
            await writer.drain()
            self.bytes_relayed += len(chunk)
        except (ConnectionError, OSError):
            pass
        finally:
            if not done.done():
                done.set_result(None)

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        target = ("127.0.0.1", self._relay_port) if self.keep_alive else self.upstream
        try:
            server_reader, server_writer = await asyncio.open_connection(*target, limit=CHUNK * 2)
        except OSError:
            client_writer.close()
            return
        try:
            await asyncio.gather(
                self._pump(client_reader, server_writer, "up"),
                self._pump(server_reader, client_writer, "down"),
            )
        except (asyncio.CancelledError, ConnectionError, OSError):
            pass
        finally:
            for writer in (server_writer, client_writer):
                writer.close()

    _relay_port: int = 0

    async def _relay_requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """HTTP/1.1 keep-alive towards the client; a fresh upstream connection per request."""
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    return
                headers = _headers(head)
                up_reader, up_writer = await asyncio.open_connection(*self.upstream, limit=CHUNK * 2)
                try:
                    up_writer.write(head)
                    sending = asyncio.create_task(_relay_body(reader, up_writer, headers))
                    keep = await self._relay_response(up_reader, writer, head.split(b" ", 1)[0] == b"HEAD")
                    await asyncio.wait({sending}, timeout=1.0)  # its last bytes may still be leaving
                    if not sending.done():  # answered before the whole body was sent (an early refusal):
                        sending.cancel()  # where the next request would begin is unknown, so this connection ends
                        return
                    await sending
                finally:
                    up_writer.close()
                if not keep or headers.get(b"connection", b"").lower() == b"close":
                    return
        except (asyncio.CancelledError, asyncio.IncompleteReadError, ConnectionError, OSError):
            return  # the link is closing, or a side went away: as a TCP connection would end
        finally:
            writer.close()

    async def _relay_response(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head_only: bool
    ) -> bool:
        """Relay interim and final answers; True when the client's connection can carry another request."""
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            if 100 <= status < 200:  # 100 Continue: the client sends its body now
                writer.write(head)
                await writer.drain()
                continue
            headers = _headers(head)
            lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"connection:")]
            lines[0] = b"HTTP/1.1 " + lines[0].split(b" ", 1)[1]
            bodyless = head_only or status in (204, 304)
            framed = bodyless or b"content-length" in headers or _chunked(headers)
            if not framed:  # the body would end when the emulator closes: sent chunked, so the client's stays open
                lines.insert(1, b"Transfer-Encoding: chunked")
            writer.write(b"\r\n".join(lines))
            if framed and not bodyless:
                await _relay_body(reader, writer, headers)
            elif not framed:
                while chunk := await reader.read(CHUNK):
                    writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    await writer.drain()
                writer.write(b"0\r\n\r\n")
            await writer.drain()
            return True


async def _relay_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, headers: dict[bytes, bytes]) -> None:
    """Copy one HTTP message body as framed by ``headers`` (Content-Length or chunked)."""
    if _chunked(headers):
        while True:
            size_line = await reader.readuntil(b"\r\n")
            writer.write(size_line)
            size = int(size_line.split(b";", 1)[0], 16)
            if size == 0:
                while (trailer := await reader.readuntil(b"\r\n")) != b"\r\n":
                    writer.write(trailer)
                writer.write(b"\r\n")
                break
            await _copy(reader, writer, size + 2)
    else:
        await _copy(reader, writer, int(headers.get(b"content-length", b"0")))
    await writer.drain()


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, size: int) -> None:
    while size > 0:
        chunk = await reader.read(min(CHUNK, size))
        if not chunk:
            raise ConnectionError("the body ended early")
        writer.write(chunk)
        await writer.drain()
        size -= len(chunk)


def _headers(head: bytes) -> dict[bytes, bytes]:
    fields = {}
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            fields[name.strip().lower()] = value.strip()
    return fields


def _chunked(headers: dict[bytes, bytes]) -> bool:
    return b"chunked" in headers.get(b"transfer-encoding", b"").lower()


@contextlib.contextmanager
def shaped_link(
    upstream: tuple[str, int], shape: LinkShape | None = None, *, keep_alive: bool = False, port: int = 0
) -> Iterator[ShapedLink]:
    """A shaping proxy to ``upstream`` on a free loopback port (``link.port``) until the block ends;
    ``keep_alive`` for an HTTP upstream that closes its connections (see the module's docstring)."""
    link = ShapedLink(upstream, shape or LinkShape(), keep_alive)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    server: asyncio.Server | None = None

    async def start() -> None:
        nonlocal server
        if keep_alive:
            relay = await asyncio.start_server(link._relay_requests, "127.0.0.1", 0, limit=CHUNK * 2)
            link._relay_port = relay.sockets[0].getsockname()[1]
        server = await asyncio.start_server(link._handle, "127.0.0.1", port, limit=CHUNK * 2)
        link.port = server.sockets[0].getsockname()[1]
        started.set()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        loop.run_forever()

    thread = threading.Thread(target=run, name=f"shaped-link-{upstream[1]}", daemon=True)
    thread.start()
    if not started.wait(10):
        raise RuntimeError("the shaping proxy did not start")
    try:
        yield link
    finally:

        async def stop() -> None:
            assert server is not None
            server.close()
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


Server = TypeVar("Server")


@contextlib.contextmanager
def shaped(
    server: Server, shape: LinkShape | None = None, *, own_process: bool = False
) -> Iterator[tuple[Server, ShapedLink]]:
    """An emulator (MotoServer, GcsServer, AzuriteServer) seen through a shaped link: a copy of it whose
    ``endpoint`` (what a stack deployed into it emits) is the link's, and the link. ``own_process``: the link
    runs in a process of its own (python -m emulation.netshape), so that relaying large transfers does not
    compete for this process's interpreter lock with the clients being measured (the link object then only
    carries its port)."""
    endpoint: str = server.endpoint  # type: ignore[attr-defined]
    parts = urllib.parse.urlsplit(endpoint)
    upstream = (parts.hostname or "127.0.0.1", parts.port or (443 if parts.scheme == "https" else 80))
    shape = shape or LinkShape()
    keep_alive = parts.scheme == "http"
    if own_process:
        context: Any = _link_process(upstream, shape, keep_alive)
    else:
        context = shaped_link(upstream, shape, keep_alive=keep_alive)
    with context as link:
        view: Any = dataclasses.replace(  # type: ignore[type-var]
            server, endpoint_override=f"{parts.scheme}://127.0.0.1:{link.port}{parts.path}"
        )
        yield view, link


@contextlib.contextmanager
def _link_process(upstream: tuple[str, int], shape: LinkShape, keep_alive: bool) -> Iterator[ShapedLink]:
    import socket
    import subprocess
    import sys
    import time

    from emulation.processes import free_port

    port = free_port()
    command = [sys.executable, "-m", "emulation.netshape", f"{upstream[0]}:{upstream[1]}", "--port", str(port)]
    command += ["--rtt", str(shape.rtt), "--per-connection", str(shape.per_connection or 0)]
    command += ["--aggregate", str(shape.aggregate or 0)] + (["--keep-alive"] if keep_alive else [])
    process = subprocess.Popen(command)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the shaping proxy did not start: {command}")
            time.sleep(0.1)
        yield ShapedLink(upstream, shape, keep_alive, port)
    finally:
        process.terminate()
        process.wait(timeout=10)


def main(argv: list[str] | None = None) -> None:
    import argparse
    import signal
    import time

    parser = argparse.ArgumentParser(description="A network-shaping proxy to an emulator on 127.0.0.1.")
    parser.add_argument("upstream", help="host:port of the emulator")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rtt", type=float, default=LinkShape.rtt, help="seconds per request/response turn")
    parser.add_argument("--per-connection", type=float, default=LinkShape.per_connection, help="bytes/s, 0: none")
    parser.add_argument("--aggregate", type=float, default=0, help="bytes/s shared by all connections, 0: none")
    parser.add_argument("--keep-alive", action="store_true", help="keep clients' HTTP connections open")
    args = parser.parse_args(argv)
    host, _, port = args.upstream.rpartition(":")
    shape = LinkShape(args.rtt, args.per_connection or None, args.aggregate or None)
    stop = False

    def stopped(*_: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, stopped)
    with shaped_link((host, int(port)), shape, keep_alive=args.keep_alive, port=args.port):
        while not stop:
            time.sleep(0.2)


if __name__ == "__main__":
    main()
