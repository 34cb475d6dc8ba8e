"""`xcom-backend verify` (the real CLI, in a subprocess) against the emulators: passing on the emitted env,
failing with a one-line reason for each way an env is commonly broken."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from emulation.airflow_run import scrubbed_environ
from tests.conftest import DeployedStack, deploy
from xcom_backend import contract
from xcom_backend.export import render_dotenv

pytestmark = pytest.mark.integration


def run_verify(env: dict[str, str], tmp_path: Path, client_env: dict[str, str], *extra: str):
    env_file = tmp_path / "deployment.env"
    env_file.write_text(render_dotenv(env))
    base = scrubbed_environ()
    process_env = {**base, **client_env, "AIRFLOW_HOME": str(tmp_path / "home"), "AWS_EC2_METADATA_DISABLED": "true"}
    return subprocess.run(
        [sys.executable, "-m", "xcom_backend", "verify", "--env-file", str(env_file), "--json", *extra],
        env=process_env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def failures(result) -> dict[str, str]:
    report = json.loads(result.stdout)
    return {check["name"]: check["detail"] for check in report["checks"] if not check["ok"]}


@pytest.fixture(scope="module")
def verify_stack(moto):
    stack = deploy(moto, prefix="verify")
    yield stack
    stack.mocks.destroy()


@pytest.mark.parametrize("cloud", ["aws", "gcp", "azure"])
def test_passes_on_the_emitted_env(cloud: str, request, tmp_path: Path) -> None:
    server = request.getfixturevalue({"aws": "moto", "gcp": "gcs", "azure": "azurite"}[cloud])
    stack = deploy(server, prefix="verify")
    try:
        result = run_verify(stack.env, tmp_path, server.client_env)
    finally:
        stack.mocks.destroy()
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    report = json.loads(result.stdout)
    names = [check["name"] for check in report["checks"]]
    assert names[-4:] == ["probe: write", "probe: read back", "probe: compare", "probe: delete"]
    timed = [c for c in report["checks"] if c["name"] in ("probe: write", "probe: read back", "probe: delete")]
    assert all(check["latency_ms"] is not None for check in timed)


def test_passes_on_paths_common_io_accepts_without_a_connection(verify_stack: DeployedStack, tmp_path: Path) -> None:
    """``s3://<bucket>/<prefix>`` (the SDK's default credentials, as with an instance role) and a local path."""
    location = contract.parse_objectstorage_path(verify_stack.env[contract.PATH_ENV])
    key_id, secret = verify_stack.key
    settings = {k: v for k, v in verify_stack.env.items() if not k.startswith("AIRFLOW_CONN_")}
    default_credentials = {
        "AWS_ACCESS_KEY_ID": key_id,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_ENDPOINT_URL": verify_stack.server.endpoint,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for path, client_env in (
        (f"s3://{location.bucket}/{location.prefix}", default_credentials),
        (f"file://{tmp_path}/shared/xcom", {}),
    ):
        result = run_verify({**settings, contract.PATH_ENV: path}, tmp_path, client_env)
        assert result.returncode == 0, result.stdout + result.stderr[-2000:]
        report = json.loads(result.stdout)
        assert "connection" not in [check["name"] for check in report["checks"]]
        assert report["checks"][-1]["name"] == "probe: delete"


def broken_envs(stack: DeployedStack) -> dict[str, tuple[dict[str, str], str, str]]:
    env = dict(stack.env)
    conn_name = "AIRFLOW_CONN_MY_AWS_CONN"
    connection = json.loads(env[conn_name])
    wrong_secret = json.dumps({**connection, "password": "not-the-secret"})
    path = env[contract.PATH_ENV]
    without = {k: v for k, v in env.items() if k != conn_name}
    threshold = env.pop(contract.THRESHOLD_ENV)
    return {
        "dotted section typo": (
            {**env, "AIRFLOW__COMMON.IO__XCOM_OBJECTSTORAGE_THRESHOLD": threshold},
            "variable names",
            "AIRFLOW__COMMON.IO__XCOM_OBJECTSTORAGE_THRESHOLD is ignored",
        ),
        "objectstore spelling": (
            {**stack.env, "AIRFLOW__COMMON_IO__XCOM_OBJECTSTORE_COMPRESSION": "gzip"},
            "variable names",
            "not OBJECTSTORE",
        ),
        "old class name": (
            {**stack.env, contract.XCOM_BACKEND_ENV: "airflow.providers.common.io.xcom.backend.XComObjectStoreBackend"},
            "backend class",
            "no longer exists",
        ),
        "wasb scheme": (
            {**stack.env, contract.PATH_ENV: path.replace("s3://", "wasb://")},
            "storage path",
            "wasb:// is not an object-storage scheme Airflow registers",
        ),
        "missing connection": (without, "connection", "does not resolve"),
        "bad key": ({**stack.env, conn_name: wrong_secret}, "probe: write", "permission denied"),
        "no permission on the prefix": (
            {**stack.env, contract.PATH_ENV: path.rsplit("/", 1)[0] + "/not-granted"},
            "probe: write",
            "permission denied",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "dotted section typo",
        "objectstore spelling",
        "old class name",
        "wasb scheme",
        "missing connection",
        "bad key",
        "no permission on the prefix",
    ],
)
def test_fails_with_a_one_line_reason(case: str, verify_stack: DeployedStack, tmp_path: Path) -> None:
    env, check, reason = broken_envs(verify_stack)[case]
    result = run_verify(env, tmp_path, {})
    assert result.returncode == 1, result.stdout + result.stderr[-2000:]
    failed = failures(result)
    assert check in failed, failed
    assert reason in failed[check] and "\n" not in failed[check]


def test_human_output_ends_with_the_plain_count(verify_stack: DeployedStack, tmp_path: Path) -> None:
    env_file = tmp_path / "d.env"
    env_file.write_text(render_dotenv(verify_stack.env))
    base = scrubbed_environ()
    result = subprocess.run(
        [sys.executable, "-m", "xcom_backend", "verify", "--env-file", str(env_file)],
        env={**base, "AIRFLOW_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1].endswith("passed, 0 failed")
    assert json.loads(verify_stack.env["AIRFLOW_CONN_MY_AWS_CONN"])["password"] not in result.stdout + result.stderr


@pytest.mark.reliability
def test_export_and_verify_logs_never_hold_the_secret(verify_stack: DeployedStack, tmp_path: Path, figures) -> None:
    secret = json.loads(verify_stack.env["AIRFLOW_CONN_MY_AWS_CONN"])["password"]
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps(verify_stack.run.outputs))
    outputs.chmod(0o600)
    leaks, modes = [], []
    from xcom_backend.export import FORMATS

    for fmt, spec in FORMATS.items():
        target = tmp_path / f"out.{fmt}"
        result = subprocess.run(
            [sys.executable, "-m", "xcom_backend", "export", "-i", str(outputs), "-f", fmt, "-o", str(target)],
            capture_output=True,
            text=True,
            check=False,
        )
        leaks += [fmt] if secret in result.stdout + result.stderr or result.returncode else []
        if spec.holds_secrets:
            modes += [] if oct(target.stat().st_mode & 0o777) == "0o600" else [fmt]
    verified = run_verify(verify_stack.env, tmp_path, {})
    leaks += ["verify"] if secret in verified.stdout + verified.stderr else []
    figures.append(
        {
            "area": "secrets",
            "case": "export (6 formats) + verify output hold no secret; files 0600",
            "tried": len(FORMATS) + 1,
            "failed": len(leaks) + len(modes),
        }
    )
    assert leaks == [] and modes == []


@pytest.mark.parametrize("cloud", ["aws", "gcp", "azure"])
def test_names_the_deployment_it_checked_and_the_credentials_age_or_expiry(cloud: str, request, tmp_path: Path) -> None:
    server = request.getfixturevalue({"aws": "moto", "gcp": "gcs", "azure": "azurite"}[cloud])
    stack = deploy(server, stack="verify-deployments", deployments=["sales", "ml"])
    try:
        result = run_verify(stack.env["ml"], tmp_path, server.client_env)
    finally:
        stack.mocks.destroy()
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    checks = json.loads(result.stdout)["checks"]
    assert checks[0] == {"name": "deployment", "ok": True, "detail": "ml (from XCOM_BACKEND_DEPLOYMENT)",
                         "latency_ms": None, "warning": False}  # fmt: skip
    credential = next(check["detail"] for check in checks if check["name"] == "credential")
    expected = {
        "aws": ("aws-access-key, AKIA", "generation 1, created ", "(0 days ago)"),
        "gcp": ("gcp-service-account-key, ", "generation 1, created ", "(0 days ago)"),
        # deploy() gives the SAS an hour: verify warns it expires within 14 days
        "azure": ("azure-sas, generation 1, signed with key1, expires ", "(in 0 days)", "rotate it now"),
    }[cloud]
    assert all(part in credential for part in expected), credential
    warned = next(check["warning"] for check in checks if check["name"] == "credential")
    assert warned == (cloud == "azure")
    paths = [check["detail"] for check in checks if check["name"] == "probe: write"]
    assert "/xcom/ml/" in paths[0] or (cloud == "azure" and "@xcom-ml/xcom/" in paths[0])
