"""How large values and many objects move: in parts, several at once, as tuned clients do.

A cloud store answers a request in ~10-30 ms and gives one connection ~50-100 MB/s, so one request per value
is right for small values and slow for large ones. Values above PART_SIZE are written in parts and read in
ranges of PART_SIZE, up to ``[xcom_backend] transfer_concurrency`` at once (boto3's TransferManager's
defaults: 8 MiB, 10); a mapped task's results are read that many objects at once (backend.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

PART_SIZE = 8 * 2**20
MAX_RANGE_SIZE = 64 * 2**20

Item = TypeVar("Item")


def parts_of(size: int, part_size: int = PART_SIZE) -> range:
    """The start offset of every part of a ``size``-byte object."""
    return range(0, size, part_size)


def range_size(size: int, concurrency: int) -> int:
    """How much one ranged read of a ``size``-byte object asks for: a share of it per connection, so that one
    wave of ``concurrency`` requests reads it (fewer requests, and no second round trip where one suffices), at
    least a part and at most MAX_RANGE_SIZE (what a failed range costs to read again)."""
    return min(max(PART_SIZE, -(-size // max(1, concurrency))), MAX_RANGE_SIZE)


def read_in_ranges(read_range: Callable[[int, int], bytes], size: int, concurrency: int) -> bytearray:
    """The ``size`` bytes an object's reference names, read in ranges (``read_range(start, end)``, end
    exclusive) ``concurrency`` at a time into one buffer. An object shorter than ``size`` comes back short (up
    to the first range that came back short): the caller checks size and digest of what it gets."""
    buffer = bytearray(size)
    view = memoryview(buffer)
    step = range_size(size, concurrency)

    def fetch(start: int) -> int:
        got = read_range(start, min(start + step, size))
        view[start : start + len(got)] = got
        return len(got)

    lengths = in_parallel(fetch, parts_of(size, step), concurrency)
    if sum(lengths) != size:
        whole = next(i for i, length in enumerate(lengths) if length != min(step, size - i * step))
        return buffer[: whole * step + lengths[whole]]
    return buffer


def in_parallel(work: Callable[[Item], Any], items: Sequence[Item], concurrency: int) -> list[Any]:
    """``work`` on every item, at most ``concurrency`` at once, results in order. The first error is raised once
    the calls already started have ended: none is left running against the store."""
    if len(items) <= 1 or concurrency <= 1:
        return [work(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(concurrency, len(items)), thread_name_prefix="xcom-transfer") as pool:
        futures = [pool.submit(work, item) for item in items]
        try:
            return [future.result() for future in futures]
        except BaseException:
            for future in futures:
                future.cancel()
            raise


_SLOTS: dict[int, threading.BoundedSemaphore] = {}
_SLOTS_LOCK = threading.Lock()


def request_slots(concurrency: int) -> threading.BoundedSemaphore:
    """The process's slots for requests in flight: held by each part or range request, and by each single
    request of a pull of many values, so that those values' own ranges add none beyond ``concurrency``."""
    with _SLOTS_LOCK:
        return _SLOTS.setdefault(concurrency, threading.BoundedSemaphore(concurrency))
