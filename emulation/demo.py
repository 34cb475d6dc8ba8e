"""`make demo [CLOUD=aws|gcp|azure]`: the whole chain offline, on a local emulator, with real Airflow.

EMULATION, not a cloud deployment: the Pulumi program runs under Pulumi's mock runtime, whose resource
hooks create each declared resource in an emulator on 127.0.0.1 (moto with IAM enforced for AWS,
gcp-storage-emulator behind an IAM proxy that enforces the declared binding and its CEL condition for GCP,
Azurite over HTTPS for Azure). Airflow then runs the tutorial DAG with
only the exported env: on SQLite in one process (``airflow dags test``), or in production's shape with
``--db postgres --executor celery`` (PostgreSQL, Redis and two Celery workers, each task in its own process).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import yaml
from dotenv import dotenv_values

from emulation.airflow_run import (
    REPO_ROOT,
    SQLITE_LOCAL,
    AirflowHome,
    Topology,
    make_airflow_home,
    printed,
    run_dag_in_task_processes,
    scrubbed_environ,
    with_executor,
    xcom_checks,
)
from emulation.pulumi_runner import EmulatorMocks, run_program
from emulation.services import postgres_server, redis_server
from xcom_backend import contract
from xcom_backend.export import write_private_file
from xcom_backend.pulumi.settings import PROJECT
from xcom_backend.references import stored_url

DAG_ID = "custom_xcom_backend_test"


def say(message: str = "") -> None:
    print(message, flush=True)


def stack_config(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """An example stack file's settings (without the project prefix) and its provider keys (aws:region, ...)."""
    document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    prefix = f"{PROJECT}:"
    config = document.get("config") or {}
    settings = {k[len(prefix) :]: v for k, v in config.items() if k.startswith(prefix)}
    return settings, {k: v for k, v in config.items() if not k.startswith(prefix)}


def _split_url(url: str) -> tuple[str, str]:
    location = contract.parse_objectstorage_path(url)
    return location.bucket, location.prefix


@dataclass(frozen=True)
class CloudDemo:
    """What differs per cloud: the emulator, the mocks deploying into it, and how to look at an object."""

    emulator: str
    start: Callable[[Path], contextlib.AbstractContextManager[Any]]
    mocks: Callable[[Any], EmulatorMocks]
    object_size: Callable[[Any, str], int]


def _aws() -> CloudDemo:
    from emulation.moto import MotoMocks, moto_server

    def size(server: Any, url: str) -> int:
        bucket, key = _split_url(url)
        return server.client("s3").head_object(Bucket=bucket, Key=key)["ContentLength"]

    return CloudDemo("moto (S3 + IAM, IAM enforced)", lambda d: moto_server(d, enforce_iam=True), MotoMocks, size)


def _gcp() -> CloudDemo:
    from emulation.gcs import GcsMocks, gcs_server

    def size(server: Any, url: str) -> int:
        bucket, key = _split_url(url)
        return server.client().bucket(bucket).get_blob(key).size

    return CloudDemo(
        "gcp-storage-emulator behind an IAM proxy (declared binding + CEL condition enforced)",
        lambda d: gcs_server(d, enforce_iam=True),
        GcsMocks,
        size,
    )


def _azure() -> CloudDemo:
    from emulation.azurite import AzuriteMocks, azurite_server

    def size(server: Any, url: str) -> int:
        container, key = _split_url(url)
        return server.client().get_blob_client(container, key).get_blob_properties().size

    return CloudDemo("Azurite (blob, HTTPS with a local CA, SAS checked)", azurite_server, AzuriteMocks, size)


CLOUDS: dict[str, Callable[[], CloudDemo]] = {"aws": _aws, "gcp": _gcp, "azure": _azure}


def demo_overrides(cloud: str, server: Any) -> dict[str, Any]:
    """Azure: the account Azurite was started with, and a SAS that expires a day from now."""
    if cloud != "azure":
        return {}
    expiry = datetime.now(timezone.utc) + timedelta(days=1)
    return {"storageAccountName": server.account_name, "sasExpiry": expiry.strftime("%Y-%m-%dT%H:%M:%SZ")}


@contextlib.contextmanager
def topology_for(db: str, executor: str, work_dir: Path) -> Any:
    """SQLite, or PostgreSQL (and Redis for Celery) started for the demo and stopped after it."""
    if db == "sqlite":
        yield SQLITE_LOCAL
        return
    with contextlib.ExitStack() as services:
        postgres = services.enter_context(postgres_server(work_dir / "services"))
        redis = services.enter_context(redis_server(work_dir / "services")) if executor == "celery" else None
        yield Topology(postgres=postgres, redis=redis)


def run_tutorial_dag(home: AirflowHome, executor: str, work_dir: Path) -> tuple[int, str]:
    """``airflow dags test``: in one process, or with the executor (each task in a process of its own)."""
    if executor == "none":
        result = home.airflow("dags", "test", DAG_ID, timeout=600)
        return result.returncode, result.stdout + result.stderr
    with with_executor(home) as running:
        result = run_dag_in_task_processes(running, DAG_ID)
        pull_log = "\n".join(printed(running.task_log(DAG_ID, "pull")))
        return result.returncode, result.stdout + "\n" + pull_log


def run(cloud: str, work_dir: Path, db: str = "sqlite", executor: str = "none") -> int:
    started = time.monotonic()
    demo = CLOUDS[cloud]()
    example_stack = REPO_ROOT / "stacks" / f"Pulumi.{cloud}.yaml"
    if work_dir.exists():
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True)
    say("=" * 78)
    say("EMULATION - not a cloud deployment. The Pulumi program below runs under Pulumi's mock runtime;")
    say(f"its resource hooks create each declared resource in {demo.emulator} on 127.0.0.1.")
    say("=" * 78)
    failures: list[str] = []
    with demo.start(work_dir) as server, topology_for(db, executor, work_dir) as topology:
        say(f"[1/6] {demo.emulator} up at {server.endpoint}")
        config, provider_config = stack_config(example_stack)
        # The demo's own overrides: point the connection at the emulator, and let teardown empty the bucket.
        config.update(endpointUrl=server.endpoint, allowHttpEndpoint=server.endpoint.startswith("http:"))
        config.update(forceDestroy=True, **demo_overrides(cloud, server))
        say(f"[2/6] `pulumi up` (emulated) with {example_stack.relative_to(REPO_ROOT)} + demo overrides:")
        say("      " + ", ".join(f"{k}={v}" for k, v in sorted({**provider_config, **config}.items())))
        mocks = demo.mocks(server)
        try:
            deployed = run_program(config, mocks, stack=cloud, provider_config=provider_config)
            for resource in mocks.deployed:
                say(f"      created {resource.type}: {resource.physical_id}")
            for note in mocks.skipped:
                say(f"      not applied in the emulator: {note}")
            secret_outputs = sorted(deployed.secret_outputs)
            say(f"      outputs: {', '.join(sorted(deployed.outputs))} (secret: {', '.join(secret_outputs)})")

            outputs_file = work_dir / "stack-outputs.json"
            write_private_file(outputs_file, json.dumps(deployed.outputs, indent=2))
            env_file = work_dir / "airflow.env"
            say(f"[3/6] xcom-backend export --input {outputs_file.name} --output {env_file.name}")
            exported = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "xcom_backend",
                    "export",
                    "--input",
                    str(outputs_file),
                    "--output",
                    str(env_file),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            say("      " + (exported.stderr.strip() or exported.stdout.strip()))
            if exported.returncode != 0:
                return 1
            deployment_env = {k: v for k, v in dotenv_values(env_file).items() if v is not None}
            verified = subprocess.run(
                [sys.executable, "-m", "xcom_backend", "verify", "--env-file", str(env_file)],
                env={**scrubbed_environ(), **server.client_env, "AIRFLOW_HOME": str(work_dir / "verify-home")},
                capture_output=True,
                text=True,
                check=False,
            )
            say(f"      xcom-backend verify --env-file {env_file.name}: {verified.stdout.strip().splitlines()[-1]}")
            if verified.returncode != 0:
                failures.append("xcom-backend verify failed on the exported env:\n" + verified.stdout)

            database = "SQLite" if topology.postgres is None else f"PostgreSQL on 127.0.0.1:{topology.postgres.port}"
            say(f"[4/6] airflow db migrate ({database}) with only the exported env")
            home = make_airflow_home(work_dir / "airflow-home", deployment_env, server.client_env, topology=topology)
            for key in (contract.PATH_KEY, contract.THRESHOLD_KEY, contract.COMPRESSION_KEY):
                got = home.airflow("config", "get-value", contract.AIRFLOW_CONFIG_SECTION, key)
                say(f"      airflow conf [{contract.AIRFLOW_CONFIG_SECTION}] {key} = {got.stdout.strip()}")

            shape = {
                "none": "in one process",
                "local": "--use-executor: LocalExecutor, each task in its own process",
                "celery": f"--use-executor: CeleryExecutor, {topology.workers} workers on Redis, each task in its "
                "own process",
            }[executor]
            say(f"[5/6] airflow dags test {DAG_ID} ({shape})")
            returncode, output = run_tutorial_dag(home, executor, work_dir)
            (work_dir / "dags-test.log").write_text(output, encoding="utf-8")
            checks = xcom_checks(output)
            if returncode != 0:
                failures.append(f"airflow dags test exited {returncode} (log: {work_dir / 'dags-test.log'})")

            base = deployment_env[contract.PATH_ENV].rstrip("/") + "/"
            rows = home.xcom_rows(DAG_ID)
            say("")
            say(f"      {'xcom':<10} {'stored in':<60} {'serialized':>10} {'equal':>6}")
            for key, stored in sorted(rows.items()):
                check = checks.get(key, {})
                url = stored_url(stored)
                where = (f"{url[:57]}..." if len(url) > 60 else url) if url else "metadata DB"
                say(
                    f"      {key:<10} {where:<60} {check.get('serialized_bytes', '?'):>10} {check.get('equal', '?'):>6}"
                )
                if url:
                    say(f"      {'':<10} full URL: {url} (object {demo.object_size(server, url)} B)")
                if check.get("equal") != "True":
                    failures.append(f"{key}: pulled value did not equal the pushed one")
            if rows.get("small_obj") != {"a": 23}:
                failures.append("small_obj is not stored in the metadata DB")
            if not (stored_url(rows.get("big_obj")) or "").startswith(base):
                failures.append(f"big_obj is not stored under {base}")
            if iam := getattr(server, "iam", None):
                allowed, denied = iam.counts()
                say(f"      IAM proxy: {allowed} requests allowed, {denied} denied by the declared binding")
                for decision in [d for d in iam.decisions if not d.allowed]:
                    say(f"        denied {decision.method} {decision.path.split('?')[0]}: {decision.reason}")
        finally:
            say("[6/6] teardown (the `pulumi destroy` counterpart)")
            for deleted in mocks.destroy():
                say(f"      deleted {deleted}")
    say("      emulator stopped")
    say("")
    if failures:
        for failure in failures:
            say(f"DEMO FAILED: {failure}")
        return 1
    say(f"DEMO OK in {time.monotonic() - started:.0f}s: small_obj in the metadata DB, big_obj under the prefix, ")
    say("values equal after the round trip. Work files (0600 where they hold secrets): " + str(work_dir))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cloud", default="aws", choices=sorted(CLOUDS), help="cloud to emulate (default aws)")
    parser.add_argument("--work-dir", type=Path, default=None, help="scratch directory (default .demo/<cloud>)")
    parser.add_argument(
        "--db", default="sqlite", choices=["sqlite", "postgres"], help="Airflow's metadata DB (default sqlite)"
    )
    parser.add_argument(
        "--executor",
        default="none",
        choices=["none", "local", "celery"],
        help="none: every task in one process (airflow dags test); local or celery: each in its own (celery needs "
        "--db postgres)",
    )
    args = parser.parse_args(argv)
    if args.executor == "celery" and args.db != "postgres":
        parser.error("--executor celery needs --db postgres (Celery keeps its results in the metadata DB's server)")
    return run(args.cloud, args.work_dir or REPO_ROOT / ".demo" / args.cloud, args.db, args.executor)


if __name__ == "__main__":
    sys.exit(main())
