"""The CLI for platform teams: export --deployment, plain help listing every export format, and verify's
report of the credential's deployment, age and expiry."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from dotenv import dotenv_values

from emulation.pulumi_runner import RecordingMocks, run_program
from xcom_backend import cli, contract
from xcom_backend.export import FORMATS
from xcom_backend.verify import Report, check_credential, check_deployment


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xcom_backend", *args], input=stdin, capture_output=True, text=True, check=False
    )


@pytest.fixture(scope="module")
def multi_outputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    program = run_program({"deployments": ["sales", "ml"]}, RecordingMocks(seed="cli"), stack="prod")
    path = tmp_path_factory.mktemp("outputs") / "outputs.json"
    path.write_text(json.dumps(program.outputs))
    return path


def test_export_picks_one_deployments_env(multi_outputs: Path, tmp_path: Path) -> None:
    outputs = json.loads(multi_outputs.read_text())
    for name in ("sales", "ml"):
        target = tmp_path / f"{name}.env"
        assert cli.main(["export", "-i", str(multi_outputs), "--deployment", name, "-o", str(target)]) == 0
        assert dotenv_values(target) == outputs["airflow_env"][name]
        assert dotenv_values(target)[contract.DEPLOYMENT_ENV] == name


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "this stack serves 2 deployments (ml, sales): pass --deployment NAME"),
        (("--deployment", "hr"), "no deployment 'hr' in this stack; its deployments: ml, sales"),
    ],
)
def test_export_without_or_with_an_unknown_deployment_names_them(multi_outputs: Path, args, message, tmp_path) -> None:
    result = run_cli("export", "-i", str(multi_outputs), "-o", str(tmp_path / ".env"), *args)
    assert result.returncode == 2
    assert result.stderr.strip() == f"xcom-backend export: error: {message}"
    assert not (tmp_path / ".env").exists()


def test_export_refuses_a_deployment_for_a_single_deployment_stack(tmp_path: Path) -> None:
    program = run_program({}, RecordingMocks(seed="cli"))
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(program.outputs))
    result = run_cli("export", "-i", str(path), "--deployment", "sales", "-o", str(tmp_path / ".env"))
    assert (
        result.returncode == 2 and "single deployment" in result.stderr and "drop --deployment sales" in result.stderr
    )


@pytest.mark.parametrize("command", [(), ("export",), ("verify",), ("gc",)], ids=["main", "export", "verify", "gc"])
def test_help_is_plain_text(command: tuple[str, ...]) -> None:
    result = run_cli(*command, "--help")
    assert result.returncode == 0
    assert "`" not in result.stdout and "``" not in result.stdout, result.stdout
    assert "::" not in result.stdout and ":class:" not in result.stdout


@pytest.mark.parametrize("command", [(), ("export",)], ids=["main", "export"])
def test_help_lists_every_export_format_with_a_line_each(command: tuple[str, ...]) -> None:
    lines = run_cli(*command, "--help").stdout.splitlines()
    for name, fmt in FORMATS.items():
        assert any(line.split() and line.split()[0] == name and fmt.summary in line for line in lines), name


NOW = datetime(2027, 6, 1, tzinfo=timezone.utc)


def sas_env(expiry: datetime) -> dict[str, str]:
    token = f"sv=2022-11-02&sr=c&sp=rwdl&spr=https&se={expiry:%Y-%m-%dT%H:%M:%SZ}&sig=abc"
    connection = {
        "conn_type": "wasb",
        "extra": {"connection_string": f"BlobEndpoint=https://x;SharedAccessSignature={token};"},
    }
    return {"AIRFLOW_CONN_MY_AZURE_CONN": json.dumps(connection)}


@pytest.mark.parametrize(
    ("expiry", "ok", "warning", "text"),
    [
        (NOW + timedelta(days=90), True, False, "expires 2027-08-30T00:00:00Z (in 90 days)"),
        (NOW + timedelta(days=5), True, True, "less than 14 days left: rotate it now"),
        (NOW - timedelta(hours=1), False, False, "EXPIRED at 2027-05-31T23:00:00Z"),
    ],
    ids=["far", "soon", "expired"],
)
def test_verify_reports_a_sas_expiry_and_warns_before_it(expiry, ok, warning, text) -> None:
    report = Report()
    check_credential(sas_env(expiry), "my_azure_conn", report, warn_days=14, now=NOW)
    (check,) = report.checks
    assert (check.name, check.ok, check.warning) == ("credential", ok, warning)
    assert check.detail.startswith("azure-sas") and text in check.detail
    assert "sig=" not in check.detail and "abc" not in check.detail
    assert report.as_text().splitlines()[0].startswith("FAIL" if not ok else "WARN" if warning else "PASS")


def test_verify_reports_the_deployment_and_the_credentials_age() -> None:
    env = {
        contract.DEPLOYMENT_ENV: "sales",
        contract.CREDENTIAL_ENV: json.dumps(
            {"kind": "aws-access-key", "id": "AKIAEXAMPLE", "generation": 2, "created": "2027-05-29T08:00:00Z"}
        ),
        "AIRFLOW_CONN_MY_AWS_CONN": json.dumps({"conn_type": "aws", "login": "AKIAEXAMPLE", "password": "s3cr3t"}),
    }
    report = Report()
    check_deployment(env, report)
    check_credential(env, "my_aws_conn", report, warn_days=14, now=NOW)
    assert [c.name for c in report.checks] == ["deployment", "credential"]
    assert report.checks[0].detail == f"sales (from {contract.DEPLOYMENT_ENV})"
    assert report.checks[1].detail == (
        "aws-access-key, AKIAEXAMPLE, generation 2, created 2027-05-29 08:00 UTC (2 days ago)"
    )
    assert "s3cr3t" not in report.as_text()


def test_verify_says_when_the_age_is_unknown() -> None:
    env = {"AIRFLOW_CONN_MY_AWS_CONN": json.dumps({"conn_type": "aws", "login": "AKIAEXAMPLE", "password": "x"})}
    report = Report()
    check_credential(env, "my_aws_conn", report, warn_days=14, now=NOW)
    assert (
        report.checks[0].detail == "aws-access-key, AKIAEXAMPLE, age unknown: the env does not say when it was created"
    )
