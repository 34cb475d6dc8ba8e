"""`make demo`: the whole AWS chain offline, on an S3+IAM emulator, with real Airflow.

EMULATION, not a cloud deployment: the Pulumi program runs under Pulumi's mock runtime, whose resource
hooks create each declared bucket setting, policy, user and key in a moto server on 127.0.0.1 (IAM
enforced). Airflow then runs the tutorial DAG with only the exported env and the emitted key.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from dotenv import dotenv_values

from emulation.airflow_run import REPO_ROOT, make_airflow_home, xcom_checks
from emulation.moto import MotoMocks, moto_server
from emulation.pulumi_runner import run_program
from stacks.settings import PROJECT
from xcom_backend import contract
from xcom_backend.export import write_private_file

DAG_ID = "custom_xcom_backend_test"
EXAMPLE_STACK = REPO_ROOT / "stacks" / "Pulumi.aws.yaml"


def say(message: str = "") -> None:
    print(message, flush=True)


def stack_config(path: Path) -> dict[str, Any]:
    """The example stack's settings, without the project prefix."""
    document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    prefix = f"{PROJECT}:"
    return {k[len(prefix) :]: v for k, v in (document.get("config") or {}).items() if k.startswith(prefix)}


def object_size(server: Any, url: str) -> int:
    bucket, _, key = url.split("@", 1)[1].partition("/")
    return server.client("s3").head_object(Bucket=bucket, Key=key)["ContentLength"]


def run(work_dir: Path) -> int:
    started = time.monotonic()
    if work_dir.exists():
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True)
    say("=" * 78)
    say("EMULATION - not a cloud deployment. The Pulumi program below runs under Pulumi's mock runtime;")
    say("its resource hooks create each declared resource in moto (S3 + IAM) on 127.0.0.1, with IAM enforced.")
    say("=" * 78)
    failures: list[str] = []
    with moto_server(work_dir, enforce_iam=True) as server:
        say(f"[1/6] moto server up at {server.endpoint} (IAM enforcement on)")
        config = stack_config(EXAMPLE_STACK)
        # The demo's own overrides: point the connection at the emulator, and let teardown empty the bucket.
        config.update(endpointUrl=server.endpoint, allowHttpEndpoint=True, forceDestroy=True)
        say(f"[2/6] `pulumi up` (emulated) with {EXAMPLE_STACK.relative_to(REPO_ROOT)} + demo overrides:")
        say("      " + ", ".join(f"{k}={v}" for k, v in sorted(config.items())))
        mocks = MotoMocks(server)
        try:
            deployed = run_program(config, mocks, stack="aws")
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

            say("[4/6] airflow db migrate (SQLite) with only the exported env")
            home = make_airflow_home(work_dir / "airflow-home", deployment_env)
            for key in (contract.PATH_KEY, contract.THRESHOLD_KEY, contract.COMPRESSION_KEY):
                got = home.airflow("config", "get-value", contract.AIRFLOW_CONFIG_SECTION, key)
                say(f"      airflow conf [{contract.AIRFLOW_CONFIG_SECTION}] {key} = {got.stdout.strip()}")

            say(f"[5/6] airflow dags test {DAG_ID}")
            result = home.airflow("dags", "test", DAG_ID, timeout=600)
            (work_dir / "dags-test.log").write_text(result.stdout + result.stderr, encoding="utf-8")
            checks = xcom_checks(result.stdout + result.stderr)
            if result.returncode != 0:
                failures.append(f"airflow dags test exited {result.returncode} (log: {work_dir / 'dags-test.log'})")

            base = deployment_env[contract.PATH_ENV].rstrip("/") + "/"
            say("")
            say(f"      {'xcom':<10} {'stored in':<60} {'serialized':>10} {'equal':>6}")
            for key, stored in sorted(home.xcom_rows(DAG_ID).items()):
                check = checks.get(key, {})
                if isinstance(stored, str) and stored.startswith(base):
                    where = f"{stored[:57]}..." if len(stored) > 60 else stored
                    size_note = f" (object {object_size(server, stored)} B)"
                else:
                    where, size_note = "metadata DB", ""
                say(
                    f"      {key:<10} {where:<60} {check.get('serialized_bytes', '?'):>10} {check.get('equal', '?'):>6}"
                )
                if size_note:
                    say(f"      {'':<10} full URL: {stored}{size_note}")
                if check.get("equal") != "True":
                    failures.append(f"{key}: pulled value did not equal the pushed one")
            rows = home.xcom_rows(DAG_ID)
            if rows.get("small_obj") != {"a": 23}:
                failures.append("small_obj is not stored in the metadata DB")
            if not (isinstance(rows.get("big_obj"), str) and rows["big_obj"].startswith(base)):
                failures.append(f"big_obj is not stored under {base}")
        finally:
            say("[6/6] teardown (the `pulumi destroy` counterpart)")
            for deleted in mocks.destroy():
                say(f"      deleted {deleted}")
    say("      moto server stopped")
    say("")
    if failures:
        for failure in failures:
            say(f"DEMO FAILED: {failure}")
        return 1
    say(f"DEMO OK in {time.monotonic() - started:.0f}s: small_obj in the metadata DB, big_obj in S3 under the prefix, ")
    say("values equal after the round trip. Work files (0600 where they hold secrets): " + str(work_dir))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cloud", default="aws", choices=["aws"], help="cloud to emulate (aws)")
    parser.add_argument("--work-dir", type=Path, default=REPO_ROOT / ".demo", help="scratch directory (git-ignored)")
    args = parser.parse_args(argv)
    return run(args.work_dir)


if __name__ == "__main__":
    sys.exit(main())
