"""`xcom-backend export`: the .env a deployment loads, parsed back with python-dotenv."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from dotenv import dotenv_values

from xcom_backend import cli, export

SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCY'quote\"dq\\slash$HOME"
ENV = {
    "AIRFLOW__CORE__XCOM_BACKEND": "xcom_backend.backend.ObjectStorageXComBackend",
    "AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH": "s3://my_aws_conn@bucket-1/xcom",
    "AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_THRESHOLD": "1000",
    "AIRFLOW_CONN_MY_AWS_CONN": json.dumps(
        {"conn_type": "aws", "login": "AKIA1", "password": SECRET, "extra": {"region_name": "us-east-1"}}
    ),
}


@pytest.fixture
def outputs_file(tmp_path: Path) -> Path:
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps({"bucket_name": "bucket-1", "airflow_env": ENV}))
    return path


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xcom_backend", *args], input=stdin, capture_output=True, text=True, check=False
    )


def test_dotenv_round_trips_through_python_dotenv(outputs_file: Path, tmp_path: Path) -> None:
    target = tmp_path / ".env"
    assert cli.main(["export", "--input", str(outputs_file), "--output", str(target)]) == 0
    assert dotenv_values(target) == ENV
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600


def test_existing_env_file_keeps_other_settings_and_becomes_0600(outputs_file: Path, tmp_path: Path) -> None:
    target = tmp_path / ".env"
    target.write_text("ASTRO_OTHER=1\n# a comment\n")
    os.chmod(target, 0o644)
    assert cli.main(["export", "--input", str(outputs_file), "--output", str(target)]) == 0
    assert cli.main(["export", "--input", str(outputs_file), "--output", str(target)]) == 0  # idempotent
    values = dotenv_values(target)
    assert values == {"ASTRO_OTHER": "1", **ENV}
    assert target.read_text().count(export.BLOCK_BEGIN) == 1
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600


def test_a_key_set_outside_the_block_is_an_error_not_a_silent_duplicate(outputs_file: Path, tmp_path: Path) -> None:
    target = tmp_path / ".env"
    target.write_text("AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_THRESHOLD=5\n")
    result = run_cli("export", "--input", str(outputs_file), "--output", str(target))
    assert result.returncode == 2
    assert "AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_THRESHOLD is already set outside" in result.stderr
    assert target.read_text() == "AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_THRESHOLD=5\n"


def test_stdout_needs_show_secrets(outputs_file: Path) -> None:
    refused = run_cli("export", "--input", str(outputs_file), "--output", "-")
    assert refused.returncode == 2
    assert "refusing to print secrets" in refused.stderr
    assert SECRET not in refused.stdout + refused.stderr
    shown = run_cli("export", "--input", "-", "--output", "-", "--show-secrets", stdin=outputs_file.read_text())
    assert shown.returncode == 0
    assert "AIRFLOW_CONN_MY_AWS_CONN=" in shown.stdout


def test_file_export_never_prints_the_secret(outputs_file: Path, tmp_path: Path) -> None:
    result = run_cli("export", "--input", str(outputs_file), "--output", str(tmp_path / "x.env"))
    assert result.returncode == 0
    assert SECRET not in result.stdout + result.stderr
    assert "wrote 4 variables" in result.stderr


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("not json", "not JSON"),
        (json.dumps({"bucket_name": "x"}), "no 'airflow_env'"),
        (json.dumps({"airflow_env": "[secret]"}), "--show-secrets"),
        (json.dumps({"airflow_env": {"A": "[secret]"}}), "masked"),
        (json.dumps({"airflow_env": {"BAD-NAME": "x"}}), "not a valid environment variable name"),
        (json.dumps({"airflow_env": {"A": 1}}), "must be a string"),
        (json.dumps({"airflow_env": {}}), "non-empty"),
    ],
)
def test_bad_input_gets_one_clear_error_and_writes_nothing(document: str, message: str, tmp_path: Path) -> None:
    target = tmp_path / ".env"
    result = run_cli("export", "--output", str(target), stdin=document)
    assert result.returncode == 2
    assert result.stderr.count("error:") == 1 and message in result.stderr
    assert "Traceback" not in result.stderr
    assert not target.exists()


def test_line_breaks_in_values_are_refused() -> None:
    with pytest.raises(export.ExportError, match="line break"):
        export.render_dotenv({"A": "x\ny"})
