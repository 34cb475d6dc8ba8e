"""`make bench`: the bundled backend vs common-io's vs the DB XCom vs raw s3fs, side by side in one run.

Latency, memory and the S3 request counts run against one moto server on 127.0.0.1 (IAM enforced, the
stack's own least-privilege key). Figures: push/pull medians per payload size, storage requests per write and
per read, peak RSS increase of one push (a fresh process per case), the integrity check's share of a 50 MB
pull, a below-threshold push, the first offload in a fresh process, each codec at 50 MB, and the requests per
write and read on GCS (behind the IAM proxy) and Azure (Azurite), each in a process of its own. Prints a table
with ratios and the goals of issue 12, and writes the raw numbers to bench-results.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bench import goals as goals_module
from bench import shaped
from bench.memory import peak_rss_increase

REPO_ROOT = Path(__file__).resolve().parent.parent
SIZES = {"1 KB": 1_000, "1 MB": 1_000_000, "10 MB": 10_000_000, "50 MB": 50_000_000}
REPETITIONS = {"1 KB": 15, "1 MB": 9, "10 MB": 7, "50 MB": 7}
# A pull happens in another task, long after the push: the store has finished with the upload by then. moto
# (one Python process on the same 2 cores) goes on working after answering a 50 MB PUT, which made the next
# request's timing bimodal (a 50 MB GET 70 or 190 ms); every backend waits this long before its pull.
SETTLE_SECONDS = 0.2
WARM_UP_ROUNDS = 2
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
            return self.db_insert(self.base.serialize_value(value))
        data = json.dumps(value, cls=self.encoder).encode()
        self.raw_fs.pipe_file(self.raw_path, data)
        return self.raw_path

    def db_insert(self, serialized: Any) -> Any:
        """What the API server does with whatever the configured backend's serialize_value returned."""
        text = json.dumps(serialized, cls=self.encoder)
        cursor = self.db.execute("INSERT INTO xcom (value) VALUES (?)", (text,))
        self.db.commit()
        return cursor.lastrowid

    def pull(self, backend: str, ref: Any) -> Any:
        if backend in ("bundled", "common-io"):  # a metadata-DB row, as Airflow core hands it to a backend
            backend_class = self.bundled if backend == "bundled" else self.common_io
            return backend_class.deserialize_value(SimpleNamespace(value=ref, **COORDS))
        if backend == "db":
            (text,) = self.db.execute("SELECT value FROM xcom WHERE id = ?", (ref,)).fetchone()
            return json.loads(text, cls=self.decoder)
        return json.loads(self.raw_fs.cat_file(ref))

    def transport_for(self, backend: str) -> Any:
        """What sends the backend's requests: an s3fs filesystem, or the bundled backend's S3 client."""
        if backend == "raw-s3fs":
            return self.raw_fs
        if backend == "common-io":
            from airflow.providers.common.io.xcom.backend import _get_base_path

            return _get_base_path().fs  # Airflow's cached filesystem for the connection
        from xcom_backend.store import current_store

        return current_store().transport


class RequestCounter:
    """Counts the HTTP requests s3fs filesystems and botocore clients send (botocore's before-send event)."""

    def __init__(self) -> None:
        self.count = 0
        self.hooked: set[int] = set()

    def attach(self, transport: Any) -> None:
        if id(transport) in self.hooked:
            return
        from emulation.request_count import botocore_events

        botocore_events(transport).register("before-send.s3", self._seen)
        self.hooked.add(id(transport))

    def _seen(self, **_: Any) -> None:
        self.count += 1


def _median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 2)


def measure_latency(pushers: Pushers, counter: RequestCounter) -> dict[str, Any]:
    """Push and pull medians per payload and backend. The backends take turns within each repetition (in an
    order rotated every repetition), so a slow stretch of the machine hits all of them rather than one."""
    results: dict[str, Any] = {}
    for label, size in SIZES.items():
        value = payload(size)
        refs: dict[str, Any] = {}
        for backend in BACKENDS:
            for _ in range(WARM_UP_ROUNDS):  # connections, caches, and the server's own buffers: outside the medians
                refs[backend] = pushers.push(backend, value)
                pushers.pull(backend, refs[backend])
            if backend != "db":
                counter.attach(pushers.transport_for(backend))
        samples = {backend: {"push": [], "pull": [], "writes": [], "reads": []} for backend in BACKENDS}
        for repetition in range(REPETITIONS[label]):
            shift = repetition % len(BACKENDS)
            for backend in BACKENDS[shift:] + BACKENDS[:shift]:
                taken = samples[backend]
                before = counter.count
                started = time.perf_counter()
                refs[backend] = pushers.push(backend, value)
                taken["push"].append(time.perf_counter() - started)
                taken["writes"].append(counter.count - before)
                time.sleep(SETTLE_SECONDS)
                before = counter.count
                started = time.perf_counter()
                pulled = pushers.pull(backend, refs[backend])
                taken["pull"].append(time.perf_counter() - started)
                taken["reads"].append(counter.count - before)
                assert pulled == value, f"{backend} {label}: pulled value differs"
        for backend, taken in samples.items():
            results[f"{backend} {label}"] = {
                "push_ms": _median_ms(taken["push"]),
                "pull_ms": _median_ms(taken["pull"]),
                "requests_per_write": max(taken["writes"]),
                "requests_per_read": max(taken["reads"]),
                "push_samples_ms": [round(t * 1000, 2) for t in taken["push"]],
                "pull_samples_ms": [round(t * 1000, 2) for t in taken["pull"]],
            }
            print(
                f"  {backend:<10} {label:>6}: push {results[f'{backend} {label}']['push_ms']:>8} ms, "
                f"pull {results[f'{backend} {label}']['pull_ms']:>8} ms",
                flush=True,
            )
        if label == "50 MB":
            results["integrity 50 MB"] = measure_integrity(refs["bundled"])
    return results


def measure_integrity(reference: dict[str, Any]) -> dict[str, Any]:
    """What a pull spends on the integrity check: the size comparison and the digest of the stored bytes."""
    from xcom_backend import codec
    from xcom_backend.references import XComIdentity, resolve
    from xcom_backend.store import configured_location, current_store

    resolved = resolve(reference, configured_location(), XComIdentity(**COORDS))
    stored = current_store().read(resolved.name)
    samples = []
    for _ in range(REPETITIONS["50 MB"]):
        started = time.perf_counter()
        assert len(stored) == resolved.stored_size and codec.checksum_matches(resolved.checksum, stored)
        samples.append(time.perf_counter() - started)
    return {"check_ms": _median_ms(samples), "algorithm": resolved.checksum.split(":")[0], "bytes": len(stored)}


def measure_below_threshold(pushers: Pushers, counter: RequestCounter) -> dict[str, Any]:
    """A small XCom, as the task SDK pushes it: the configured backend's serialize_value (the bundled one, or
    BaseXCom's for the DB XCom), then the same DB write of what it returned. Interleaved, in alternating order,
    so drift and the SQLite commit's rhythm hit both alike.

    The goal is decided on serialize_value, each call timed on its own right after the other side's DB write
    (so with the caches as a task leaves them, not warmed by a loop): it is the only work that differs. The
    write both pay (an fsynced SQLite commit here; in Airflow 3 the API server's, outside the task) varies by
    more than the whole difference, so the end-to-end figures are shown, with their paired difference, but
    cannot decide a ratio this close to 1."""
    value = {"a": 23, "b": "small"}
    serializers = {
        "bundled": lambda: pushers.bundled.serialize_value(value, **COORDS),
        "db": lambda: pushers.base.serialize_value(value),
    }
    total: dict[str, list[float]] = {"bundled": [], "db": []}
    serialize: dict[str, list[float]] = {"bundled": [], "db": []}
    before = counter.count
    for round_number in range(3000):
        for backend in ("bundled", "db") if round_number % 2 else ("db", "bundled"):
            started = time.perf_counter()
            serialized = serializers[backend]()
            serialized_at = time.perf_counter()
            pushers.db_insert(serialized)
            total[backend].append(time.perf_counter() - started)
            serialize[backend].append(serialized_at - started)
    requests = {"bundled": counter.count - before, "db": 0}
    paired = statistics.median(b - d for b, d in zip(total["bundled"], total["db"], strict=True))
    results: dict[str, Any] = {
        backend: {
            "push_us": round(statistics.median(times) * 1e6, 2),
            "serialize_us": round(statistics.median(serialize[backend]) * 1e6, 3),
            "requests": requests[backend],
        }
        for backend, times in total.items()
    }
    results["paired_difference_us"] = round(paired * 1e6, 2)
    results["ratio"] = statistics.median(serialize["bundled"]) / statistics.median(serialize["db"])
    return results


def measure_codecs(pushers: Pushers, counter: RequestCounter) -> dict[str, Any]:
    """The bundled backend at 50 MB with each compression: push/pull medians and the stored size."""
    from tests.xcom_calls import clear_all_caches
    from xcom_backend import codec

    value, results = payload(SIZES["50 MB"]), {}
    for compression in ("gzip", *(["zstd"] if "zstd" in codec.available_compressions() else [])):
        os.environ["AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_COMPRESSION"] = compression
        clear_all_caches()
        pushes, pulls = [], []
        ref = pushers.push("bundled", value)
        for _ in range(3):
            started = time.perf_counter()
            ref = pushers.push("bundled", value)
            pushes.append(time.perf_counter() - started)
            started = time.perf_counter()
            assert pushers.pull("bundled", ref) == value
            pulls.append(time.perf_counter() - started)
        results[compression] = {
            "push_ms": _median_ms(pushes),
            "pull_ms": _median_ms(pulls),
            "stored_mb": round(ref["stored_size"] / 1e6, 2),
        }
    del os.environ["AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_COMPRESSION"]
    clear_all_caches()
    return results


# --- child processes: peak RSS of one push, first offload in a fresh process ---------------------------
def child_rss(backend: str, size: int, sqlite_path: str) -> dict[str, Any]:
    pushers = Pushers(Path(sqlite_path))
    pushers.push(backend, payload(1000) if backend != "db" else {"warm": 1})  # imports, connection, client
    value = payload(size)
    increase = peak_rss_increase(lambda: pushers.push(backend, value))
    return {"peak_increase_bytes": increase, "payload_bytes": len(json.dumps(value))}


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


def child_requests(cloud: str) -> dict[str, Any]:
    """Requests per write and per read of the bundled backend on GCS (gcp-storage-emulator behind the IAM proxy)
    or Azure (Azurite over HTTPS), with the stack's emitted env, in this process of its own."""
    from bench.emulators import bench_emulator
    from emulation.request_count import counting
    from tests.conftest import deploy
    from tests.xcom_calls import use_emitted_env
    from xcom_backend.backend import ObjectStorageXComBackend
    from xcom_backend.store import current_store

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as scratch:
        server_cm = bench_emulator(cloud, Path(scratch), enforce_iam=True)
        with server_cm as server:
            stack = deploy(server, prefix="bench")
            try:
                use_emitted_env(stack.run.outputs["airflow_env"], server.client_env, os.environ.__setitem__)
                ObjectStorageXComBackend.serialize_value(payload(1000), **COORDS)  # store and client exist
                for label in ("1 KB", "50 MB"):
                    value = payload(SIZES[label])
                    gcs_iam = server.iam if cloud == "gcp" else None
                    with counting(current_store().transport, gcs_iam=gcs_iam) as requests:
                        reference = ObjectStorageXComBackend.serialize_value(value, **COORDS)
                        written = len(requests)
                        pulled = ObjectStorageXComBackend.deserialize_value(SimpleNamespace(value=reference, **COORDS))
                        assert pulled == value, f"{cloud} {label}: pulled value differs"
                        results[label] = {"write": written, "read": len(requests) - written, "seen": requests.lines()}
            finally:
                stack.mocks.destroy()
    return results


def run_child(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "bench.run", "--child", *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"bench child {args} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def first_offload_median(backend: str, env: dict[str, str]) -> dict[str, Any]:
    """Medians over FIRST_OFFLOAD_PROCESSES fresh processes (one is at the mercy of the page cache)."""
    runs = [run_child(["first", backend], env) for _ in range(FIRST_OFFLOAD_PROCESSES)]
    return {key: statistics.median(run[key] for run in runs) for key in ("first_ms", "second_ms")} | {
        "runs_ms": [run["first_ms"] for run in runs]
    }


FIRST_OFFLOAD_PROCESSES = 5


# --- the report ------------------------------------------------------------------------------------------
def ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else float("nan")


def report(results: dict[str, Any]) -> list[str]:
    lines = []
    latency, rss = results["latency"], results["rss"]
    lines.append(
        f"{'payload':>7} | {'backend':<10} | {'push ms':>9} | {'pull ms':>9} | {'req/write':>9} | {'req/read':>8} | "
        f"{'push RSS +MB':>12} | {'push vs raw':>11} | {'push vs common-io':>17} | {'pull vs common-io':>17}"
    )
    lines.append("-" * 139)
    for label in SIZES:
        raw = latency[f"raw-s3fs {label}"]
        common = latency[f"common-io {label}"]
        for backend in BACKENDS:
            row = latency[f"{backend} {label}"]
            peak = rss.get(f"{backend} {label}", {}).get("peak_increase_bytes")
            lines.append(
                f"{label:>7} | {backend:<10} | {row['push_ms']:>9} | {row['pull_ms']:>9} | "
                f"{row['requests_per_write']:>9} | {row['requests_per_read']:>8} | "
                f"{('%.1f' % (peak / 1e6)) if peak is not None else '-':>12} | "
                f"{ratio(row['push_ms'], raw['push_ms']):>11} | {ratio(row['push_ms'], common['push_ms']):>17} | "
                f"{ratio(row['pull_ms'], common['pull_ms']):>17}"
            )
    small, first = results["below_threshold"], results["first_offload"]
    integrity, others = latency["integrity 50 MB"], results["other_clouds"]
    bundled_50 = latency["bundled 50 MB"]
    lines.append("")
    lines.append(
        f"below threshold: bundled push {small['bundled']['push_us']} us ({small['bundled']['requests']} storage "
        f"requests) vs DB XCom {small['db']['push_us']} us with the SQLite write, paired difference "
        f"{small['paired_difference_us']} us; serialize_value {small['bundled']['serialize_us']} vs "
        f"{small['db']['serialize_us']} us"
    )
    lines.append(
        f"first offload in a fresh process (median of {FIRST_OFFLOAD_PROCESSES}): bundled "
        f"{first['bundled']['first_ms']} ms, common-io "
        f"{first['common-io']['first_ms']} ms (second push: {first['bundled']['second_ms']} / "
        f"{first['common-io']['second_ms']} ms)"
    )
    first_other = results.get("first_offload_other", {})
    for cloud, row in first_other.items():
        lines.append(f"first offload on {cloud} (bundled, median of {FIRST_OFFLOAD_PROCESSES}): {row['first_ms']} ms")
    lines.append(
        f"integrity check of a 50 MB pull (size + {integrity['algorithm']} of {integrity['bytes']} stored bytes): "
        f"{integrity['check_ms']} ms of {bundled_50['pull_ms']} ms"
    )
    for compression, row in results["codecs"].items():
        lines.append(
            f"50 MB bundled with {compression}: push {row['push_ms']} ms, pull {row['pull_ms']} ms, "
            f"stored {row['stored_mb']} MB"
        )
    s3_counts = {
        label: (latency[f"bundled {label}"]["requests_per_write"], latency[f"bundled {label}"]["requests_per_read"])
        for label in ("1 KB", "50 MB")
    }
    counts = {"s3 (moto)": s3_counts}  # (writes, reads) per payload
    for cloud, name in (("gcp", "gcs (emulator + IAM proxy)"), ("azure", "azure (azurite)")):
        counts[name] = {label: (row["write"], row["read"]) for label, row in others[cloud].items()}
    per_store = (
        f"{name} " + ", ".join(f"{label} {w}/{r}" for label, (w, r) in per.items()) for name, per in counts.items()
    )
    lines.append("storage requests per write/read: " + "; ".join(per_store))
    payload_50 = rss["bundled 50 MB"]["payload_bytes"]
    one_each = all(per["1 KB"] == (1, 1) for per in counts.values())

    def share(a: float, b: float) -> float:  # unrounded: a goal is decided on the measured ratio itself
        return a / b if b else float("nan")

    at_most = [
        ("push 50 MB <= 0.80x raw s3fs", share(bundled_50["push_ms"], latency["raw-s3fs 50 MB"]["push_ms"]), 0.80),
        ("push 50 MB <= 0.80x common-io", share(bundled_50["push_ms"], latency["common-io 50 MB"]["push_ms"]), 0.80),
        ("pull 50 MB <= 0.80x common-io", share(bundled_50["pull_ms"], latency["common-io 50 MB"]["pull_ms"]), 0.80),
        ("push 50 MB peak RSS <= 1.2x payload", share(rss["bundled 50 MB"]["peak_increase_bytes"], payload_50), 1.2),
        ("integrity check <= 5% of a 50 MB pull", share(integrity["check_ms"], bundled_50["pull_ms"]), 0.05),
        ("first offload in fresh process <= 0.3 s", first["bundled"]["first_ms"] / 1000, 0.3),
        *(
            (f"first offload in fresh process on {cloud} <= 0.3 s", row["first_ms"] / 1000, 0.3)
            for cloud, row in first_other.items()
        ),
        ("below-threshold push (serialize_value) <= 1.0x DB XCom", small["ratio"], 1.0),
        ("below-threshold storage requests == 0", small["bundled"]["requests"], 0),
    ]
    goals = [goals_module.at_most(name, value, limit) for name, value, limit in at_most]
    goals.append(
        ("1 KB: exactly 1 request per write and per read on S3, GCS, Azure", one_each, one_each, "counts above")
    )
    lines += goals_module.render("goals (issue 12):", goals, results)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "bench-results.json")
    parser.add_argument(
        "--only", choices=["unshaped", "shaped"], help="one half of the run (both by default, side by side)"
    )
    args = parser.parse_args(argv)
    logging.getLogger("azure").setLevel(logging.WARNING)  # the Azure SDK logs every request at INFO
    if args.child:
        kind, *rest = args.child
        if kind == "rss":
            print(json.dumps(child_rss(rest[0], int(rest[1]), rest[2])))
        elif kind == "rss-shaped":
            print(json.dumps(shaped.child_rss_shaped(int(rest[0]), payload)))
        elif kind == "shaped-cloud":
            print(json.dumps(shaped.child_shaped_cloud(rest[0], payload)))
        elif kind == "requests":
            print(json.dumps(child_requests(rest[0])))
        else:
            print(json.dumps(child_first_offload(rest[0])))
        return 0

    outside = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AWS_"))}
    results: dict[str, Any] = {}
    lines: list[str] = []
    if args.only != "shaped":
        results = run_unshaped(outside)
        args.output.write_text(json.dumps(results, indent=2))  # the raw numbers, even if the report fails
        lines = report(results)
    if args.only != "unshaped":
        with tempfile.TemporaryDirectory() as scratch:
            results["shaped"] = shaped.run_shaped(outside, Path(scratch), payload, run_child)
        args.output.write_text(json.dumps(results, indent=2, default=str))
        counts = {
            label: (results["latency"][f"bundled {label}"]["requests_per_write"],
                    results["latency"][f"bundled {label}"]["requests_per_read"])
            for label in ("1 KB",)
        } if "latency" in results else {}  # fmt: skip
        lines += ["", *shaped.report(results["shaped"], counts)]
    print()
    print("\n".join(lines))
    args.output.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nraw numbers: {args.output}")
    return 0


def run_unshaped(outside: dict[str, str]) -> dict[str, Any]:
    """The unshaped table: loopback moto, and the GCS and Azure request counts."""
    from emulation.moto import moto_server
    from tests.conftest import deploy

    with tempfile.TemporaryDirectory() as scratch, moto_server(Path(scratch), enforce_iam=True) as moto:
        # backend=common-io: the policy then also grants the GetBucketLocation its mkdir probe needs.
        stack = deploy(moto, prefix="bench", backend="common-io")
        try:
            env = {**outside, **stack.run.outputs["airflow_env"]}
            env.update(AIRFLOW_HOME=scratch, AWS_EC2_METADATA_DISABLED="true")
            os.environ.clear()
            os.environ.update(env)
            sqlite_path = Path(scratch) / "xcom.db"
            print(
                f"moto on {moto.endpoint} (IAM enforced); stack key {stack.key[0]}; {os.cpu_count()} CPUs", flush=True
            )
            pushers, counter = Pushers(sqlite_path), RequestCounter()
            results: dict[str, Any] = {"latency": measure_latency(pushers, counter)}
            results["below_threshold"] = measure_below_threshold(pushers, counter)
            results["codecs"] = measure_codecs(pushers, counter)
            results["rss"] = {}
            for label, size in SIZES.items():
                for backend in BACKENDS:
                    results["rss"][f"{backend} {label}"] = run_child(["rss", backend, str(size), str(sqlite_path)], env)
            results["first_offload"] = {b: first_offload_median(b, env) for b in ("bundled", "common-io")}
        finally:
            stack.mocks.destroy()
        # GCS and Azure: an emulator and a stack each, in a child process, after moto's work is done.
        results["other_clouds"] = {
            cloud: run_child(["requests", cloud], {**outside, "AIRFLOW_HOME": scratch}) for cloud in ("gcp", "azure")
        }
        results["first_offload_other"] = {
            cloud: first_offload_on(cloud, outside, scratch) for cloud in ("gcp", "azure")
        }
    return results


def first_offload_on(cloud: str, outside: dict[str, str], scratch: str) -> dict[str, Any]:
    """The bundled backend's first offload in fresh processes on GCS (behind the IAM proxy) or Azure."""
    from bench.emulators import bench_emulator
    from tests.conftest import deploy

    with tempfile.TemporaryDirectory() as own:
        server_cm = bench_emulator(cloud, Path(own), enforce_iam=True)
        with server_cm as server:
            stack = deploy(server, prefix="first")
            try:
                env = {**outside, **stack.run.outputs["airflow_env"], **server.client_env, "AIRFLOW_HOME": scratch}
                return first_offload_median("bundled", env)
            finally:
                stack.mocks.destroy()


if __name__ == "__main__":
    sys.exit(main())
