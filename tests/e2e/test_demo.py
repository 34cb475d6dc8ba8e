"""`make demo` itself: exit 0, the expected report, no secret printed, nothing left running."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def still_listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


PRODUCTION_SHAPE = ("--db", "postgres", "--executor", "celery")  # make demo DB=postgres


@pytest.mark.parametrize(
    ("cloud", "shape"), [("aws", ()), ("gcp", ()), ("azure", ()), ("aws", PRODUCTION_SHAPE)], ids=str
)
def test_demo_runs_the_whole_chain(repo_root: Path, tmp_path: Path, cloud: str, shape: tuple[str, ...]) -> None:
    work = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "emulation.demo", "--cloud", cloud, "--work-dir", str(work), *shape],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    assert "EMULATION - not a cloud deployment" in output
    assert "DEMO OK" in output
    small = next(line for line in output.splitlines() if line.strip().startswith("small_obj"))
    big = next(line for line in output.splitlines() if line.strip().startswith("big_obj"))
    assert "metadata DB" in small and small.split()[-1] == "True"
    scheme = {"aws": "s3", "gcp": "gs", "azure": "abfs"}[cloud]
    assert f"{scheme}://my_{cloud}_conn@" in big and big.split()[-1] == "True"
    deleted = {"aws": "deleted s3 bucket", "gcp": "deleted gcs bucket", "azure": "deleted blob container"}[cloud]
    assert deleted in output and "emulator stopped" in output
    if cloud == "gcp":  # the declared binding, enforced by the IAM proxy, let every request of the run through
        assert re.search(r"IAM proxy: [1-9]\d* requests allowed, 0 denied", output), output[-3000:]

    outputs = json.loads((work / "stack-outputs.json").read_text())
    connection = json.loads(outputs["airflow_env"][f"AIRFLOW_CONN_MY_{cloud.upper()}_CONN"])
    if cloud == "aws":
        secret = connection["password"]
    elif cloud == "gcp":
        secret = json.loads(connection["extra"]["keyfile_dict"])["private_key"]
    else:
        secret = connection["extra"]["connection_string"].split("sig=", 1)[1].split(";", 1)[0]
    assert secret not in output, "the secret key must never be printed"
    for name in ("stack-outputs.json", "airflow.env"):
        assert stat.S_IMODE(os.stat(work / name).st_mode) == 0o600
    port = int(re.search(r"up at https?://127\.0\.0\.1:(\d+)", output).group(1))
    assert not still_listening(port), f"the demo left its emulator running on port {port}"
    if shape:  # the tutorial DAG ran on PostgreSQL, each task in a Celery worker's process; nothing left running
        assert "CeleryExecutor, 2 workers on Redis" in output
        postgres_port = int(re.search(r"PostgreSQL on 127\.0\.0\.1:(\d+)", output).group(1))
        assert not still_listening(postgres_port), "the demo left PostgreSQL running"
        assert "executor=CeleryExecutor" in (work / "dags-test.log").read_text()
