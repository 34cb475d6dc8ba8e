"""`make bench`: the bundled backend vs common-io's vs the DB XCom vs raw s3fs, side by side in one run.

Everything runs against one moto server on 127.0.0.1 (IAM enforced, the stack's own least-privilege key).
Figures: push/pull medians per payload size, storage requests per write, peak RSS increase of one push
(a fresh process per case), a below-threshold push, and the first offload in a fresh process. Prints a
table with ratios and the goals of issue 5, and writes the raw numbers to bench-results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
SIZES = {"1 KB": 1_000, "1 MB": 1_000_000, "10 MB": 10_000_000, "50 MB": 50_000_000}
REPETITIONS = {"1 KB": 15, "1 MB": 9, "10 MB": 5, "50 MB": 3}
BACKENDS = ("bundled", "common-io", "db", "raw-s3fs")
COORDS = {"key": "return_value", "dag_id": "bench", "run_id": "manual__bench", "task_id": "push", "map_index": -1}


def payload(size: int) -> dict[str, str]:
    """A JSON object whose serialized form is about ``size`` bytes."""
    chunk = 1000
    count = max(1, size // (chunk + 12))
    return {f"k{i:07d}": "x" * chunk for i in range(count)}


# --- the four ways to push and pull ------------------------------------------------------------------
class Pushers:
    """Push/pull callables per backend, sharing one process, one moto and one SQLite file."""

    def __init__(self, sqlite_path: Path) -> None:
        import sqlite3

        import s3fs
        from airflow.providers.common.io.xcom.backend import XComObjectStorageBackend
        from airflow.sdk.bases.xcom import BaseXCom
        from airflow.utils.json import XComDecoder, XComEncoder

        from xcom_backend.backend import ObjectStorageXComBackend

        self.bundled, self.common_io, self.base = ObjectStorageXComBackend, XComObjectStorageBackend, BaseXCom
        self.encoder, self.decoder = XComEncoder, XComDecoder
        self.db = sqlite3.connect(sqlite_path, check_same_thread=False)
        self.db.execute("CREATE TABLE IF NOT EXISTS xcom (id INTEGER PRIMARY KEY, value TEXT)")
        connection = json.loads(os.environ["AIRFLOW_CONN_MY_AWS_CONN"])
        self.raw_fs = s3fs.S3FileSystem(
            key=connection["login"],
            secret=connection["password"],
            endpoint_url=connection["extra"]["endpoint_url"],
            client_kwargs={"region_name": connection["extra"]["region_name"]},
        )
        path = os.environ["AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH"]
        self.raw_path = path.split("@", 1)[1] + "/raw/bench.json"

    def push(self, backend: str, value: Any) -> Any:
        if backend == "bundled":
            return self.bundled.serialize_value(value, **COORDS)
        if backend == "common-io":
            return self.common_io.serialize_value(value, **COORDS)
        if backend == "db":
            # Airflow's DB XCom: the SDK's serialize_value in the task, then (API server side) XComEncoder
            # JSON, one INSERT and a commit.
            text = json.dumps(self.base.serialize_value(value), cls=self.encoder)
            cursor = self.db.execute("INSERT INTO xcom (value) VALUES (?)", (text,))
            self.db.commit()
            return cursor.lastrowid
        data = json.dumps(value, cls=self.encoder).encode()
        self.raw_fs.pipe_file(self.raw_path, data)
        return self.raw_path

    def pull(self, backend: str, ref: Any) -> Any:
        if backend == "bundled":
            from xcom_backend.backend import reading_xcom
            from xcom_backend.references import XComIdentity

            with reading_xcom(XComIdentity(**COORDS)):
                return self.bundled.deserialize_value(SimpleNamespace(value=ref))
        if backend == "common-io":
            return self.common_io.deserialize_value(SimpleNamespace(value=ref))
        if backend == "db":
            (text,) = self.db.execute("SELECT value FROM xcom WHERE id = ?", (ref,)).fetchone()
            return json.loads(text, cls=self.decoder)
        return json.loads(self.raw_fs.cat_file(ref))

    def fs_for(self, backend: str) -> Any:
        if backend == "raw-s3fs":
            return self.raw_fs
        if backend == "common-io":
            from airflow.providers.common.io.xcom.backend import _get_base_path

            return _get_base_path().fs  # Airflow's cached filesystem for the connection
        from xcom_backend.store import current_store

        return current_store().fs


class RequestCounter:
    """Counts HTTP requests an s3fs filesystem sends (botocore's before-send event)."""

    def __init__(self) -> None:
        self.count = 0
        self.hooked: set[int] = set()

    def attach(self, fs: Any) -> None:
        if id(fs) in self.hooked:
            return
        fs.connect() if getattr(fs, "_s3", None) is None else None
        fs.s3.meta.events.register("before-send.s3", self._seen)
        self.hooked.add(id(fs))

    def _seen(self, **_: Any) -> None:
        self.count += 1


def _median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 2)


def measure_latency(pushers: Pushers, counter: RequestCounter) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for label, size in SIZES.items():
        value = payload(size)
        for backend in BACKENDS:
            ref = pushers.push(backend, value)  # warm-up (connections, caches) outside the medians
            if backend != "db":
                counter.attach(pushers.fs_for(backend))
            pushes, pulls, requests = [], [], []
            for _ in range(REPETITIONS[label]):
                before = counter.count
                started = time.perf_counter()
                ref = pushers.push(backend, value)
                pushes.append(time.perf_counter() - started)
                requests.append(counter.count - before)
                started = time.perf_counter()
                pulled = pushers.pull(backend, ref)
                pulls.append(time.perf_counter() - started)
                assert pulled == value, f"{backend} {label}: pulled value differs"
            results[f"{backend} {label}"] = {
                "push_ms": _median_ms(pushes),
                "pull_ms": _median_ms(pulls),
                "requests_per_write": 0 if backend == "db" else statistics.median(requests),
            }
            print(
                f"  {backend:<10} {label:>6}: push {results[f'{backend} {label}']['push_ms']:>8} ms, "
                f"pull {results[f'{backend} {label}']['pull_ms']:>8} ms",
                flush=True,
            )
    return results


def measure_below_threshold(pushers: Pushers, counter: RequestCounter) -> dict[str, Any]:
    """A small XCom: the bundled backend's serialize_value plus the same DB write the DB XCom does."""
    value = {"a": 23, "b": "small"}
    results = {}
    for backend in ("bundled", "db"):
        samples = []
        before = counter.count
        for _ in range(3000):
            started = time.perf_counter()
            if backend == "bundled":
                kept = pushers.bundled.serialize_value(value, **COORDS)  # below threshold: the value itself
                pushers.push("db", kept)
            else:
                pushers.push("db", value)
            samples.append(time.perf_counter() - started)
        results[backend] = {"push_us": round(statistics.median(samples) * 1e6, 2), "requests": counter.count - before}
    return results


# --- child processes: peak RSS of one push, first offload in a fresh process ---------------------------
def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child_rss(backend: str, size: int, sqlite_path: str) -> dict[str, Any]:
    pushers = Pushers(Path(sqlite_path))
    pushers.push(backend, payload(1000) if backend != "db" else {"warm": 1})  # imports, connection, client
    value = payload(size)
    baseline = _rss_bytes()
    peak = baseline
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss_bytes())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    pushers.push(backend, value)
    done.set()
    sampler.join()
    peak = max(peak, _rss_bytes())
    return {"peak_increase_bytes": peak - baseline, "payload_bytes": len(json.dumps(value))}


def child_first_offload(backend: str) -> dict[str, Any]:
    # A task process has Airflow's SDK imported before the first XCom push; the backend class is
    # resolved from config then. What is timed is the first push that reaches object storage.
    from airflow.sdk.bases.xcom import BaseXCom  # noqa: F401

    if backend == "bundled":
        from xcom_backend.backend import ObjectStorageXComBackend as backend_class
    else:
        from airflow.providers.common.io.xcom.backend import XComObjectStorageBackend as backend_class
    value = payload(2000)
    started = time.perf_counter()
    backend_class.serialize_value(value, **COORDS)
    first = time.perf_counter() - started
    started = time.perf_counter()
    backend_class.serialize_value(value, **COORDS)
    second = time.perf_counter() - started
    return {"first_ms": round(first * 1000, 1), "second_ms": round(second * 1000, 1)}


def run_child(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "bench.run", "--child", *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"bench child {args} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- the report ------------------------------------------------------------------------------------------
def ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else float("nan")


def report(results: dict[str, Any]) -> list[str]:
    lines = []
    latency, rss = results["latency"], results["rss"]
    lines.append(
        f"{'payload':>7} | {'backend':<10} | {'push ms':>9} | {'pull ms':>9} | {'req/write':>9} | "
        f"{'push RSS +MB':>12} | {'push vs raw':>11} | {'pull vs common-io':>17}"
    )
    lines.append("-" * 110)
    for label in SIZES:
        raw = latency[f"raw-s3fs {label}"]
        common = latency[f"common-io {label}"]
        for backend in BACKENDS:
            row = latency[f"{backend} {label}"]
            peak = rss.get(f"{backend} {label}", {}).get("peak_increase_bytes")
            lines.append(
                f"{label:>7} | {backend:<10} | {row['push_ms']:>9} | {row['pull_ms']:>9} | "
                f"{row['requests_per_write']:>9} | {('%.1f' % (peak / 1e6)) if peak is not None else '-':>12} | "
                f"{ratio(row['push_ms'], raw['push_ms']):>11} | {ratio(row['pull_ms'], common['pull_ms']):>17}"
            )
    small = results["below_threshold"]
    first = results["first_offload"]
    lines.append("")
    small_ratio = ratio(small["bundled"]["push_us"], small["db"]["push_us"])
    lines.append(
        f"below threshold: bundled push {small['bundled']['push_us']} us ({small['bundled']['requests']} storage "
        f"requests) vs DB XCom {small['db']['push_us']} us: {small_ratio}x"
    )
    lines.append(
        f"first offload in a fresh process: bundled {first['bundled']['first_ms']} ms, common-io "
        f"{first['common-io']['first_ms']} ms (second push: {first['bundled']['second_ms']} / "
        f"{first['common-io']['second_ms']} ms)"
    )
    payload_50 = rss["bundled 50 MB"]["payload_bytes"]
    goals = [
        (
            "push 50 MB <= 1.10x raw s3fs",
            ratio(latency["bundled 50 MB"]["push_ms"], latency["raw-s3fs 50 MB"]["push_ms"]),
            1.10,
        ),
        (
            "pull <= common-io's (50 MB)",
            ratio(latency["bundled 50 MB"]["pull_ms"], latency["common-io 50 MB"]["pull_ms"]),
            1.0,
        ),
        ("push 50 MB peak RSS <= 1.5x payload", ratio(rss["bundled 50 MB"]["peak_increase_bytes"], payload_50), 1.5),
        ("below-threshold push <= 1.2x DB XCom", ratio(small["bundled"]["push_us"], small["db"]["push_us"]), 1.2),
        ("below-threshold storage requests == 0", small["bundled"]["requests"], 0),
        ("first offload in fresh process <= 0.5 s", round(first["bundled"]["first_ms"] / 1000, 3), 0.5),
    ]
    lines.append("")
    lines.append("goals (issue 5):")
    for name, value, limit in goals:
        lines.append(f"  {'MET ' if value <= limit else 'MISSED'} {name}: {value} (limit {limit})")
    results["goals"] = {name: {"value": value, "limit": limit, "met": value <= limit} for name, value, limit in goals}
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "bench-results.json")
    args = parser.parse_args(argv)
    if args.child:
        kind, *rest = args.child
        if kind == "rss":
            print(json.dumps(child_rss(rest[0], int(rest[1]), rest[2])))
        else:
            print(json.dumps(child_first_offload(rest[0])))
        return 0

    from emulation.moto import moto_server
    from tests.conftest import deploy

    with tempfile.TemporaryDirectory() as scratch, moto_server(Path(scratch), enforce_iam=True) as moto:
        # backend=common-io: the policy then also grants the GetBucketLocation its mkdir probe needs.
        stack = deploy(moto, prefix="bench", backend="common-io")
        try:
            env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AWS_"))}
            env.update(stack.run.outputs["airflow_env"], AIRFLOW_HOME=scratch, AWS_EC2_METADATA_DISABLED="true")
            os.environ.clear()
            os.environ.update(env)
            sqlite_path = Path(scratch) / "xcom.db"
            print(
                f"moto on {moto.endpoint} (IAM enforced); stack key {stack.key[0]}; {os.cpu_count()} CPUs", flush=True
            )
            pushers, counter = Pushers(sqlite_path), RequestCounter()
            results: dict[str, Any] = {"latency": measure_latency(pushers, counter)}
            results["below_threshold"] = measure_below_threshold(pushers, counter)
            results["rss"] = {}
            for label, size in SIZES.items():
                for backend in BACKENDS:
                    results["rss"][f"{backend} {label}"] = run_child(["rss", backend, str(size), str(sqlite_path)], env)
            results["first_offload"] = {b: run_child(["first", b], env) for b in ("bundled", "common-io")}
        finally:
            stack.mocks.destroy()
    lines = report(results)
    print()
    print("\n".join(lines))
    args.output.write_text(json.dumps(results, indent=2))
    print(f"\nraw numbers: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
