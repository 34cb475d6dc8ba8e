"""8 parallel writers x 250 XComs of mixed sizes, as threads and as processes, against moto (IAM enforced);
then everything is read back: nothing lost, nothing mismatched, every mapped index its own object."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import pytest

from tests.conftest import DeployedStack, deploy
from tests.xcom_calls import clear_all_caches, pull
from xcom_backend import contract

pytestmark = [pytest.mark.integration, pytest.mark.reliability]
WRITERS, PER_WRITER = 8, 250
SIZES = (40, 3_000, 40_000)  # below the threshold (DB), and two object sizes


def value_for(mode: str, writer: int, index: int) -> dict[str, Any]:
    size = SIZES[(writer + index) % len(SIZES)]
    return {"mode": mode, "writer": writer, "index": index, "pad": f"{writer}-{index}-".ljust(size, "z")}


def write_batch(mode: str, writer: int) -> list[tuple[int, Any]]:
    """One writer: a mapped task with PER_WRITER indexes pushing its return value."""
    from xcom_backend.backend import ObjectStorageXComBackend

    out = []
    for index in range(PER_WRITER):
        coords = {
            "key": "return_value",
            "dag_id": f"conc-{mode}",
            "run_id": "r",
            "task_id": f"writer{writer}",
            "map_index": index,
        }
        out.append((index, ObjectStorageXComBackend.serialize_value(value_for(mode, writer, index), **coords)))
    return out


def _process_writer(args: tuple[str, int, dict[str, str]]) -> list[tuple[int, Any]]:
    mode, writer, env = args
    os.environ.update(env)
    return write_batch(mode, writer)


@pytest.fixture(scope="module")
def concurrency_stack(moto):
    stack = deploy(moto, prefix="conc")
    yield stack
    stack.mocks.destroy()


@pytest.mark.parametrize("mode", ["threads", "processes"])
def test_parallel_writers_lose_and_mix_nothing(mode: str, concurrency_stack: DeployedStack, monkeypatch, figures):
    env = {**concurrency_stack.env, "AWS_EC2_METADATA_DISABLED": "true"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    clear_all_caches()
    if mode == "threads":
        with ThreadPoolExecutor(WRITERS) as pool:
            batches = list(pool.map(lambda w: write_batch(mode, w), range(WRITERS)))
    else:
        # spawn, not fork: forking a process that runs fsspec's event-loop thread can inherit held locks.
        with ProcessPoolExecutor(WRITERS, mp_context=multiprocessing.get_context("spawn")) as pool:
            batches = list(pool.map(_process_writer, [(mode, w, env) for w in range(WRITERS)]))

    from xcom_backend.references import XComIdentity, stored_url

    lost = mismatched = 0
    urls = []
    for writer, batch in enumerate(batches):
        assert [index for index, _ in batch] == list(range(PER_WRITER))
        for index, stored in batch:
            if isinstance(stored, dict) and (url := stored_url(stored)):
                urls.append(url)
            owner = XComIdentity(f"conc-{mode}", "r", f"writer{writer}", index, "return_value")
            try:
                pulled = pull(stored, owner)
            except FileNotFoundError:
                lost += 1
                continue
            mismatched += pulled != value_for(mode, writer, index)
    listing = concurrency_stack.client("s3").get_paginator("list_objects_v2")
    keys = [
        o["Key"]
        for page in listing.paginate(Bucket=concurrency_stack.bucket, Prefix=f"conc/conc-{mode}/")
        for o in page.get("Contents", [])
    ]
    figures.append(
        {
            "area": "concurrency",
            "case": f"{WRITERS} {mode} x {PER_WRITER} XComs (mixed sizes)",
            "tried": WRITERS * PER_WRITER,
            "failed": int(lost or mismatched or len(set(urls)) != len(urls)),
            "lost": lost,
            "mismatched": mismatched,
        }
    )
    assert (lost, mismatched) == (0, 0)
    assert len(set(urls)) == len(urls) == len(keys), "every mapped index must have its own object"
    threshold = int(concurrency_stack.env[contract.THRESHOLD_ENV])
    expected = sum(SIZES[(w + i) % len(SIZES)] >= threshold for w in range(WRITERS) for i in range(PER_WRITER))
    assert len(urls) == expected > 0
