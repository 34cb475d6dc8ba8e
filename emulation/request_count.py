"""Requests a store sends to S3, GCS or Azure, recorded where each client sends them.

S3: botocore's before-send event on the store's S3 client (or on s3fs's client). GCS: the IAM proxy's
decisions (a stack's key reaches the emulator only through it). Azure: the transport of adlfs's blob service
client. Used by the tests that require one request per write and per read, and by `make bench`, which prints
the counts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


class Requests:
    """'<METHOD> <url without query>' of each request seen since counting started."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self._proxy: Any = None
        self._start = 0

    def __len__(self) -> int:
        return len(self.lines())

    def lines(self) -> list[str]:
        if self._proxy is not None:
            return [f"{d.method} {d.path.split('?')[0]}" for d in self._proxy.decisions[self._start :]]
        return list(self.seen)

    def __repr__(self) -> str:
        return repr(self.lines())


def botocore_events(transport: Any) -> Any | None:
    """The event system of the botocore client under an S3 transport (the client, or s3fs's); None for others."""
    library = type(transport).__module__.split(".", 1)[0]
    if library == "botocore":
        return transport.meta.events
    if library == "s3fs":
        transport.connect() if getattr(transport, "_s3", None) is None else None
        return transport.s3.meta.events
    return None


@contextlib.contextmanager
def counting(transport: Any, *, gcs_iam: Any = None) -> Iterator[Requests]:
    """Record the requests ``transport`` (a Store's: a botocore S3 client, s3fs, gcsfs or GcsObjects behind
    ``gcs_iam``, or adlfs) sends inside the block."""
    requests = Requests()
    library = type(transport).__module__.split(".", 1)[0]
    if (events := botocore_events(transport)) is not None:

        def record(request: Any, **_: Any) -> None:
            requests.seen.append(f"{request.method} {request.url.split('?')[0]}")

        events.register("before-send.s3", record)
        try:
            yield requests
        finally:
            events.unregister("before-send.s3", record)
    elif library == "gcsfs" or type(transport).__name__ == "GcsObjects":  # xcom_backend.gcs
        if gcs_iam is None:
            raise ValueError("GCS requests are counted at the IAM proxy: pass gcs_iam")
        requests._proxy, requests._start = gcs_iam, len(gcs_iam.decisions)
        yield requests
    elif library == "adlfs":
        sender = transport.service_client._pipeline._transport
        send = sender.send

        async def counted(request: Any, **kwargs: Any) -> Any:
            requests.seen.append(f"{request.method} {request.url.split('?')[0]}")  # no SAS in messages
            return await send(request, **kwargs)

        sender.send = counted
        try:
            yield requests
        finally:
            del sender.send
    else:
        raise ValueError(f"no request counter for {library}")
