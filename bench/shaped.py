"""`make bench`, shaped: the backends through a cloud's latency and bandwidth (emulation/netshape.py).

moto (IAM enforced, the stack's own key) behind a shaping link in a process of its own: 20 ms per
request/response turn, one more for a new connection's handshake, 80 MB/s per connection. Side by side, rotated
within each repetition: the bundled backend, common-io's, raw s3fs (one put_file/cat_file), and boto3's
TransferManager with its defaults (upload_fileobj/download_fileobj: 8 MiB parts, 10 at once), each pushing and
pulling the same JSON payload (serialize and parse included); a fan-in of 200 mapped XComs of 200 KB read by
one consumer through the task SDK's own LazyXComSequence; the RTT of one 1 KB GET on an open connection; the
peak RSS of a 200 MB push in a fresh process.
"""

from __future__ import annotations

import io
import json
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bench import goals as goals_module

SIZES = {"1 KB": 1_000, "1 MB": 1_000_000, "50 MB": 50_000_000, "200 MB": 200_000_000}
REPETITIONS = {"1 KB": 9, "1 MB": 7, "50 MB": 5, "200 MB": 5}
BACKENDS = ("bundled", "common-io", "raw-s3fs", "transfer-manager")
FAN_IN_COUNT, FAN_IN_SIZE, FAN_IN_REPETITIONS = 200, 200_000, 5
SETTLE_SECONDS = 0.2


class ShapedPushers:
    """Push/pull of one JSON value per backend, every one of them through the link (the emitted endpoint)."""

    def __init__(self, coords: dict[str, Any]) -> None:
        import boto3
        import s3fs
        from airflow.providers.common.io.xcom.backend import XComObjectStorageBackend
        from boto3.s3.transfer import TransferConfig

        from xcom_backend.backend import ObjectStorageXComBackend

        self.coords = coords
        self.bundled, self.common_io = ObjectStorageXComBackend, XComObjectStorageBackend
        connection = json.loads(os.environ["AIRFLOW_CONN_MY_AWS_CONN"])
        endpoint, region = connection["extra"]["endpoint_url"], connection["extra"]["region_name"]
        key = {"aws_access_key_id": connection["login"], "aws_secret_access_key": connection["password"]}
        self.client = boto3.client("s3", endpoint_url=endpoint, region_name=region, **key)
        self.transfer_config = TransferConfig()  # TransferManager's defaults
        self.raw_fs = s3fs.S3FileSystem(
            key=key["aws_access_key_id"],
            secret=key["aws_secret_access_key"],
            endpoint_url=endpoint,
            client_kwargs={"region_name": region},
        )
        base = os.environ["AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH"].split("@", 1)[1]
        self.bucket, self.prefix = base.split("/", 1)

    def push(self, backend: str, value: Any) -> Any:
        if backend == "bundled":
            return self.bundled.serialize_value(value, **self.coords)
        if backend == "common-io":
            return self.common_io.serialize_value(value, **self.coords)
        data = json.dumps(value).encode()
        key = f"{self.prefix}/raw/{backend}.json"
        if backend == "raw-s3fs":
            self.raw_fs.pipe_file(f"{self.bucket}/{key}", data)
        else:
            self.client.upload_fileobj(io.BytesIO(data), self.bucket, key, Config=self.transfer_config)
        return key

    def pull(self, backend: str, reference: Any) -> Any:
        if backend == "bundled":
            return self.bundled.deserialize_value(SimpleNamespace(value=reference, **self.coords))
        if backend == "common-io":
            return self.common_io.deserialize_value(SimpleNamespace(value=reference, **self.coords))
        if backend == "raw-s3fs":
            return json.loads(self.raw_fs.cat_file(f"{self.bucket}/{reference}"))
        buffer = io.BytesIO()
        self.client.download_fileobj(self.bucket, reference, buffer, Config=self.transfer_config)
        return json.loads(buffer.getvalue())


def _median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 1)


def measure_transfers(pushers: ShapedPushers, payload: Callable[[int], Any]) -> dict[str, Any]:
    """Median push and pull per backend and size; backends rotate within each repetition, after a warm-up."""
    results: dict[str, Any] = {}
    for label, size in SIZES.items():
        value = payload(size)
        samples: dict[str, dict[str, list[float]]] = {b: {"push": [], "pull": []} for b in BACKENDS}
        for backend in BACKENDS:  # warm-up: connections, clients, imports
            assert pushers.pull(backend, pushers.push(backend, value)) == value, f"{backend} {label} differs"
        for repetition in range(REPETITIONS[label]):
            order = BACKENDS[repetition % len(BACKENDS) :] + BACKENDS[: repetition % len(BACKENDS)]
            for backend in order:
                started = time.perf_counter()
                reference = pushers.push(backend, value)
                samples[backend]["push"].append(time.perf_counter() - started)
                time.sleep(SETTLE_SECONDS)
                started = time.perf_counter()
                pushers.pull(backend, reference)
                samples[backend]["pull"].append(time.perf_counter() - started)
        for backend in BACKENDS:
            results[f"{backend} {label}"] = {
                "push_ms": _median_ms(samples[backend]["push"]),
                "pull_ms": _median_ms(samples[backend]["pull"]),
                "push_samples_ms": [round(x * 1000, 1) for x in samples[backend]["push"]],
                "pull_samples_ms": [round(x * 1000, 1) for x in samples[backend]["pull"]],
            }
        del value
    return results


def one_round_trip_ms(pushers: ShapedPushers) -> dict[str, float]:
    """A 1 KB PUT and a 1 KB GET on an open connection, sent straight with botocore: the RTT-bound requests
    the 1 KB push and pull are compared with (moto takes longer over a PUT than over a GET)."""
    key = f"{pushers.prefix}/raw/one-rtt.json"
    samples: dict[str, list[float]] = {"put": [], "get": []}
    for _ in range(15):
        started = time.perf_counter()
        pushers.client.put_object(Bucket=pushers.bucket, Key=key, Body=b"r" * 1000)
        samples["put"].append(time.perf_counter() - started)
        started = time.perf_counter()
        pushers.client.get_object(Bucket=pushers.bucket, Key=key)["Body"].read()
        samples["get"].append(time.perf_counter() - started)
    return {kind: _median_ms(times) for kind, times in samples.items()}


class _Supervisor:
    """Answers the task SDK's sequence messages from rows held here, as the API server answers from the DB."""

    def __init__(self, rows: list[Any]) -> None:
        self.rows = rows

    def send(self, msg: Any) -> Any:
        from airflow.sdk.execution_time import comms

        if isinstance(msg, comms.GetXComCount):
            return comms.XComCountResponse(len=len(self.rows))
        if isinstance(msg, comms.GetXComSequenceItem):
            if msg.offset >= len(self.rows):
                return comms.ErrorResponse()
            return comms.XComSequenceIndexResult(root=self.rows[msg.offset])
        return comms.XComSequenceSliceResult(root=self.rows[msg.start : msg.stop : msg.step])


@contextmanager
def _sdk_reading_with(backend_class: Any, rows: list[Any], wrapped: bool) -> Iterator[Any]:
    """The SDK's LazyXComSequence over ``rows`` of a mapped task, read with ``backend_class`` as Airflow's XCom;
    ``wrapped``: with the bundled backend's LazyXComSequence wrapper (mapped_reads), else the SDK's own."""
    import pendulum
    from airflow.sdk import dag, task
    from airflow.sdk.definitions.xcom_arg import PlainXComArg
    from airflow.sdk.execution_time import task_runner
    from airflow.sdk.execution_time import xcom as sdk_xcom
    from airflow.sdk.execution_time.lazy_sequence import LazyXComSequence

    @dag(dag_id="bench_fan_in", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"))
    def bench_fan_in():
        @task
        def fan(index: int) -> None:
            pass

        @task
        def consume(values) -> None:
            pass

        consume(fan.expand(index=list(range(len(rows)))))

    (xcom_arg,) = [arg for arg in bench_fan_in().get_task("consume").op_args if isinstance(arg, PlainXComArg)]
    saved = (sdk_xcom.XCom, getattr(task_runner, "SUPERVISOR_COMMS", None), LazyXComSequence.__getitem__)
    sdk_xcom.XCom, task_runner.SUPERVISOR_COMMS = backend_class, _Supervisor(rows)
    if not wrapped:
        LazyXComSequence.__getitem__ = LazyXComSequence.__getitem__.__wrapped__  # type: ignore[method-assign]
    try:
        yield xcom_arg.resolve({"ti": SimpleNamespace(run_id=FAN_IN_RUN)})
    finally:
        sdk_xcom.XCom, task_runner.SUPERVISOR_COMMS, LazyXComSequence.__getitem__ = saved


FAN_IN_RUN = "manual__fan_in"


def backend_classes() -> tuple[Any, Any]:
    from airflow.providers.common.io.xcom.backend import XComObjectStorageBackend

    from xcom_backend.backend import ObjectStorageXComBackend

    return ObjectStorageXComBackend, XComObjectStorageBackend


def measure_fan_in(payload: Callable[[int], Any]) -> dict[str, Any]:
    """200 mapped XComs of 200 KB, pushed by each backend as map indexes of one task, then read by one
    consumer the way the task SDK reads a mapped task's results (iterating its LazyXComSequence)."""
    results: dict[str, Any] = {}
    value = payload(FAN_IN_SIZE)
    bundled, common_io = backend_classes()
    for backend, backend_class, wrapped in (("bundled", bundled, True), ("common-io", common_io, False)):
        rows = [
            backend_class.serialize_value(
                {"index": index, **value},
                key="return_value",
                dag_id="bench_fan_in",
                run_id=FAN_IN_RUN,
                task_id="fan",
                map_index=index,
            )
            for index in range(FAN_IN_COUNT)
        ]
        samples = []
        for _ in range(FAN_IN_REPETITIONS):
            with _sdk_reading_with(backend_class, rows, wrapped) as sequence:
                started = time.perf_counter()
                indexes = [item["index"] for item in sequence]
                samples.append(time.perf_counter() - started)
            assert indexes == list(range(FAN_IN_COUNT)), f"{backend}: fan-in read the wrong values"
        results[backend] = {"read_ms": _median_ms(samples), "samples_ms": [round(x * 1000) for x in samples]}
    return results


def child_rss_shaped(size: int, payload: Callable[[int], Any]) -> dict[str, Any]:
    """Peak RSS increase of one bundled push of ``size`` through the link, in this fresh process."""
    from bench.memory import peak_rss_increase
    from xcom_backend.backend import ObjectStorageXComBackend

    coords = {"key": "return_value", "dag_id": "bench", "run_id": "manual__rss", "task_id": "push", "map_index": -1}
    ObjectStorageXComBackend.serialize_value(payload(20_000), **coords)  # imports, client, connection
    value = payload(size)
    increase = peak_rss_increase(lambda: ObjectStorageXComBackend.serialize_value(value, **coords))
    return {"peak_increase_bytes": increase, "payload_bytes": len(json.dumps(value))}


def child_shaped_cloud(cloud: str, payload: Callable[[int], Any]) -> dict[str, Any]:
    """On GCS (gcp-storage-emulator) or Azure (Azurite over HTTPS), through a shaped link in a
    process of its own: the bundled backend and common-io's at 200 MB (push, pull) and the fan-in."""
    import tempfile

    from bench.emulators import bench_emulator
    from emulation.netshape import LinkShape, shaped
    from tests.conftest import deploy
    from tests.xcom_calls import use_emitted_env

    label, size = "200 MB", SIZES["200 MB"]
    with tempfile.TemporaryDirectory() as scratch:
        # Without the IAM proxy on GCS: it reads each request whole and evaluates the binding in Python before
        # forwarding it, on the same 2 cores; what is measured here is the link, not our emulation of IAM
        # (which the tests enforce).
        server_cm = bench_emulator(cloud, Path(scratch), enforce_iam=False)
        with server_cm as server, shaped(server, LinkShape(), own_process=True) as (view, _):
            stack = deploy(view, prefix="shaped", backend="common-io")
            try:
                use_emitted_env(stack.run.outputs["airflow_env"], server.client_env, os.environ.__setitem__)
                bundled, common_io = backend_classes()
                coords = {"key": "return_value", "dag_id": "bench", "run_id": "manual__shaped", "task_id": "push"}
                coords["map_index"] = -1
                value = payload(size)
                samples: dict[str, dict[str, list[float]]] = {}
                for repetition in range(REPETITIONS[label] + 1):  # the first is the warm-up
                    pairs = (("bundled", bundled), ("common-io", common_io))
                    for backend, backend_class in pairs if repetition % 2 else pairs[::-1]:
                        started = time.perf_counter()
                        reference = backend_class.serialize_value(value, **coords)
                        pushed = time.perf_counter() - started
                        time.sleep(SETTLE_SECONDS)
                        started = time.perf_counter()
                        pulled = backend_class.deserialize_value(SimpleNamespace(value=reference, **coords))
                        times = samples.setdefault(backend, {"push": [], "pull": []})
                        if repetition:
                            times["push"].append(pushed)
                            times["pull"].append(time.perf_counter() - started)
                        else:
                            assert pulled == value, f"{cloud} {backend}: the 200 MB value differs"
                        del pulled
                del value
                results: dict[str, Any] = {
                    f"{backend} {label}": {"push_ms": _median_ms(t["push"]), "pull_ms": _median_ms(t["pull"])}
                    for backend, t in samples.items()
                }
                results["fan_in"] = measure_fan_in(payload)
                return results
            finally:
                stack.mocks.destroy()


def run_shaped(
    outside: dict[str, str], scratch: Path, payload: Callable[[int], Any], run_child: Callable[..., dict[str, Any]]
) -> dict[str, Any]:
    """The shaped measurements, with their own moto and link; the env is restored afterwards."""
    from emulation.moto import moto_server
    from emulation.netshape import LinkShape, shaped
    from tests.conftest import deploy
    from xcom_backend.store import clear_caches

    shape = LinkShape()
    saved_env = dict(os.environ)
    results: dict[str, Any] = {"shape": shape.describe()}
    with (
        moto_server(scratch / "shaped-moto", enforce_iam=True) as moto,
        shaped(moto, shape, own_process=True) as (
            view,
            _,
        ),
    ):
        stack = deploy(view, prefix="shaped", backend="common-io")
        try:
            env = {**outside, **stack.run.outputs["airflow_env"], "AIRFLOW_HOME": str(scratch)}
            env["AWS_EC2_METADATA_DISABLED"] = "true"
            os.environ.clear()
            os.environ.update(env)
            clear_caches()
            coords = {"key": "return_value", "dag_id": "bench", "run_id": "manual__shaped", "task_id": "push"}
            pushers = ShapedPushers({**coords, "map_index": -1})
            print(f"shaped: {shape.describe()} in front of moto, {os.cpu_count()} CPUs", flush=True)
            results["one_rtt_ms"] = one_round_trip_ms(pushers)
            results["transfers"] = measure_transfers(pushers, payload)
            results["fan_in"] = measure_fan_in(payload)
            results["rss_200MB"] = run_child(["rss-shaped", str(SIZES["200 MB"])], env)
        finally:
            stack.mocks.destroy()
            os.environ.clear()
            os.environ.update(saved_env)
            clear_caches()
    for cloud in ("gcp", "azure"):
        results[cloud] = run_child(["shaped-cloud", cloud], {**outside, "AIRFLOW_HOME": str(scratch)})
    return results


def report(shaped_results: dict[str, Any], request_counts: dict[str, tuple[int, int]]) -> list[str]:
    """The shaped table, the fan-in and the goals of issue 19 that S3 decides."""
    transfers, fan_in = shaped_results["transfers"], shaped_results["fan_in"]
    one_rtt = shaped_results["one_rtt_ms"]
    lines = [f"shaped link: {shaped_results['shape']}; straight botocore requests of 1 KB on an open connection: "
             f"PUT {one_rtt['put']} ms, GET {one_rtt['get']} ms"]  # fmt: skip
    lines.append(
        f"{'payload':>7} | {'backend':<16} | {'push ms':>9} | {'pull ms':>9} | {'push vs common-io':>17} | "
        f"{'pull vs common-io':>17} | {'push vs TM':>10} | {'pull vs TM':>10}"
    )
    lines.append("-" * 120)
    for label in SIZES:
        common, manager = transfers[f"common-io {label}"], transfers[f"transfer-manager {label}"]
        for backend in BACKENDS:
            row = transfers[f"{backend} {label}"]
            lines.append(
                f"{label:>7} | {backend:<16} | {row['push_ms']:>9} | {row['pull_ms']:>9} | "
                f"{row['push_ms'] / common['push_ms']:>17.2f} | {row['pull_ms'] / common['pull_ms']:>17.2f} | "
                f"{row['push_ms'] / manager['push_ms']:>10.2f} | {row['pull_ms'] / manager['pull_ms']:>10.2f}"
            )
    lines.append(
        f"fan-in of {FAN_IN_COUNT} x {FAN_IN_SIZE // 1000} KB through the SDK's LazyXComSequence: bundled "
        f"{fan_in['bundled']['read_ms']} ms, common-io {fan_in['common-io']['read_ms']} ms"
    )
    rss = shaped_results["rss_200MB"]
    lines.append(
        f"200 MB push peak RSS: +{rss['peak_increase_bytes'] / 1e6:.1f} MB for {rss['payload_bytes'] / 1e6:.1f} MB"
    )
    common_fan_in = fan_in["common-io"]["read_ms"]
    bundled_200, common_200 = transfers["bundled 200 MB"], transfers["common-io 200 MB"]
    manager_200, bundled_1k = transfers["transfer-manager 200 MB"], transfers["bundled 1 KB"]
    goals = [
        ("shaped 200 MB push <= 0.5x common-io", bundled_200["push_ms"] / common_200["push_ms"], 0.5),
        ("shaped 200 MB pull <= 0.5x common-io", bundled_200["pull_ms"] / common_200["pull_ms"], 0.5),
        ("shaped 200 MB push <= 1.1x TransferManager", bundled_200["push_ms"] / manager_200["push_ms"], 1.1),
        ("shaped 200 MB pull <= 1.1x TransferManager", bundled_200["pull_ms"] / manager_200["pull_ms"], 1.1),
        ("shaped fan-in of 200 <= 0.25x common-io", fan_in["bundled"]["read_ms"] / common_fan_in, 0.25),
        ("shaped 1 KB push <= 1.05x one RTT-bound PUT", bundled_1k["push_ms"] / one_rtt["put"], 1.05),
        ("shaped 1 KB pull <= 1.05x one RTT-bound GET", bundled_1k["pull_ms"] / one_rtt["get"], 1.05),
        ("200 MB push peak RSS <= 1.3x payload", rss["peak_increase_bytes"] / rss["payload_bytes"], 1.3),
    ]  # fmt: skip
    for cloud, name in (("gcp", "GCS"), ("azure", "Azure")):
        if cloud not in shaped_results:
            continue
        other = shaped_results[cloud]
        bundled, common = other["bundled 200 MB"], other["common-io 200 MB"]
        fans = other["fan_in"]
        fan_common = fans["common-io"]["read_ms"]
        lines.append(
            f"{name}, shaped: 200 MB push {bundled['push_ms']} ms vs common-io {common['push_ms']} ms, pull "
            f"{bundled['pull_ms']} vs {common['pull_ms']} ms; fan-in {fans['bundled']['read_ms']} vs "
            f"{fans['common-io']['read_ms']} ms"
        )
        goals += [
            (f"{name} shaped 200 MB push <= 0.5x common-io", bundled["push_ms"] / common["push_ms"], 0.5),
            (f"{name} shaped 200 MB pull <= 0.5x common-io", bundled["pull_ms"] / common["pull_ms"], 0.5),
            (f"{name} shaped fan-in of 200 <= 0.25x common-io", fans["bundled"]["read_ms"] / fan_common, 0.25),
        ]  # fmt: skip
    checks = [goals_module.at_most(name, value, limit) for name, value, limit in goals]
    one_request = request_counts.get("1 KB") == (1, 1)
    checks.append(("1 KB push and pull: 1 request each", request_counts.get("1 KB"), one_request, "(1, 1)"))
    lines += goals_module.render("goals (issue 19, S3):", checks, shaped_results)
    return lines
