"""The network-shaping link (emulation/netshape.py) in front of moto, the GCS emulator and Azurite.

Each check has a lower bound the link must impose (it may never be faster than its own delays) and a
generous upper bound (what the emulator itself takes, measured unshaped in the same test, plus slack for a
loaded 2-core machine).
"""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from emulation.netshape import LinkShape, shaped, shaped_link

pytestmark = pytest.mark.integration

RTT = 0.040
BUCKET = f"netshape-{uuid.uuid4().hex[:8]}"


@dataclass
class Store:
    """get(key) and put(key, data) against one emulator, unshaped or through a link."""

    get: Callable[[str], bytes]
    put: Callable[[str, bytes], None]


@contextmanager
def moto_store(moto, shape: LinkShape | None) -> Iterator[Store]:
    admin = moto.client("s3")
    if BUCKET not in {bucket["Name"] for bucket in admin.list_buckets()["Buckets"]}:
        admin.create_bucket(Bucket=BUCKET)
    with shaped(moto, shape) if shape else _unshaped(moto) as (view, _):
        s3 = view.client("s3")
        s3.head_bucket(Bucket=BUCKET)  # the connection is open: the checks time requests, not handshakes
        yield Store(
            lambda key: s3.get_object(Bucket=BUCKET, Key=key)["Body"].read(),
            lambda key, data: s3.put_object(Bucket=BUCKET, Key=key, Body=data) and None,
        )


@contextmanager
def gcs_store(gcs, shape: LinkShape | None) -> Iterator[Store]:
    admin = gcs.client()
    if admin.lookup_bucket(BUCKET) is None:
        admin.create_bucket(BUCKET)
    emulator = (gcs.emulator.endpoint.split("//")[1].split(":")[0], gcs.emulator.port)
    with shaped_link(emulator, shape, keep_alive=True) if shape else _unshaped(None) as link:
        endpoint = f"http://127.0.0.1:{link.port}" if shape else gcs.emulator.endpoint
        client = storage.Client("emulated-project", AnonymousCredentials(), client_options={"api_endpoint": endpoint})
        bucket = client.bucket(BUCKET)
        bucket.reload()
        yield Store(
            lambda key: bucket.blob(key).download_as_bytes(),
            lambda key, data: bucket.blob(key).upload_from_string(data),
        )


@contextmanager
def azurite_store(azurite, shape: LinkShape | None) -> Iterator[Store]:
    admin = azurite.client().get_container_client(BUCKET)
    if not admin.exists():
        admin.create_container()
    with shaped(azurite, shape) if shape else _unshaped(azurite) as (view, _):
        container = view.client().get_container_client(BUCKET)
        container.get_container_properties()
        yield Store(
            lambda key: container.download_blob(key).readall(),
            lambda key, data: container.upload_blob(key, data, overwrite=True) and None,
        )


@contextmanager
def _unshaped(server):
    yield (server, None) if server is not None else None


STORES = {"moto": moto_store, "gcs": gcs_store, "azurite": azurite_store}


def median_seconds(action: Callable[[], object], times: int = 5) -> float:
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


@pytest.mark.parametrize("emulator", list(STORES))
def test_a_small_get_takes_one_round_trip(request, emulator: str) -> None:
    server = request.getfixturevalue(emulator)
    with STORES[emulator](server, None) as store:
        store.put("small", b"s" * 1000)
        unshaped = median_seconds(lambda: store.get("small"))
    with STORES[emulator](server, LinkShape(rtt=RTT)) as store:
        shaped_time = median_seconds(lambda: store.get("small"))
    assert RTT <= shaped_time < RTT + 2 * unshaped + 0.030, (shaped_time, unshaped)


@pytest.mark.parametrize("emulator", list(STORES))
def test_a_connection_carries_at_most_its_bandwidth(request, emulator: str) -> None:
    server = request.getfixturevalue(emulator)
    size, rate = 4_000_000, 8e6  # 0.5 s at the link's rate
    with STORES[emulator](server, None) as store:
        store.put("big", b"b" * size)
        unshaped = median_seconds(lambda: store.get("big"), times=3)
    with STORES[emulator](server, LinkShape(rtt=RTT, per_connection=rate)) as store:
        shaped_time = median_seconds(lambda: store.get("big"), times=3)
    assert size / rate <= shaped_time < size / rate + RTT + 2 * unshaped + 0.3, (shaped_time, unshaped)


def test_the_aggregate_cap_is_shared_by_parallel_connections(moto) -> None:
    size, rate = 2_000_000, 8e6
    with moto_store(moto, None) as store:
        store.put("shared", b"a" * size)
    with moto_store(moto, LinkShape(rtt=RTT, per_connection=None, aggregate=rate)) as store:
        threads = [threading.Thread(target=store.get, args=("shared",)) for _ in range(2)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        both = time.perf_counter() - started
    assert both >= 2 * size / rate, both  # 4 MB through 8 MB/s, whichever connection carried it


def test_a_request_on_a_new_connection_pays_the_handshake_too(moto) -> None:
    with moto_store(moto, None) as store:
        store.put("fresh", b"f" * 1000)
    with shaped(moto, LinkShape(rtt=RTT)) as (view, link):
        s3 = view.client("s3")
        started = time.perf_counter()
        s3.get_object(Bucket=BUCKET, Key="fresh")["Body"].read()
        first = time.perf_counter() - started
        assert link.connections == 1
    assert first >= 2 * RTT, first


def test_a_view_keeps_the_servers_other_settings(moto) -> None:
    with shaped(moto, LinkShape(rtt=0.001)) as (view, link):
        assert view.endpoint == f"http://127.0.0.1:{link.port}" and view.admin_key == moto.admin_key
        assert replace(view, endpoint_override=None).endpoint == moto.endpoint
