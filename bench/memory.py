"""Peak resident memory of one call, sampled every millisecond from /proc (the benchmark's RSS figures)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_increase(action: Callable[[], Any]) -> int:
    """How far above its level before the call this process's RSS went while ``action`` ran."""
    baseline = peak = rss_bytes()
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_bytes())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        action()
    finally:
        done.set()
        sampler.join()
    return max(peak, rss_bytes()) - baseline
