"""`xcom-backend export`: the .env a deployment loads, parsed back with python-dotenv."""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
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
    assert "wrote dotenv with 4 variables" in result.stderr


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


SECRET_FORMATS = ["dotenv", "astro", "k8s-secret", "json", "shell"]


def export_to(outputs_file: Path, tmp_path: Path, fmt: str, *extra: str) -> Path:
    target = tmp_path / f"out-{fmt}"
    result = run_cli("export", "--input", str(outputs_file), "--format", fmt, "--output", str(target), *extra)
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    return target


@pytest.mark.parametrize("fmt", SECRET_FORMATS)
def test_secret_formats_are_0600_files_and_refuse_stdout_without_the_flag(
    outputs_file: Path, tmp_path: Path, fmt
) -> None:
    target = export_to(outputs_file, tmp_path, fmt)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    refused = run_cli("export", "--input", str(outputs_file), "--format", fmt, "--output", "-")
    assert refused.returncode == 2 and "refusing to print secrets" in refused.stderr
    assert refused.stdout == "" and SECRET not in refused.stderr


def test_json_round_trips(outputs_file: Path, tmp_path: Path) -> None:
    assert json.loads(export_to(outputs_file, tmp_path, "json").read_text()) == ENV


def test_shell_round_trips_through_shlex_and_a_real_shell(outputs_file: Path, tmp_path: Path) -> None:
    target = export_to(outputs_file, tmp_path, "shell")
    parsed = {}
    for line in target.read_text().splitlines():
        (word, assignment) = shlex.split(line)
        assert word == "export"
        name, _, value = assignment.partition("=")
        parsed[name] = value
    assert parsed == ENV
    probe = f"import json, os; print(json.dumps({{k: os.environ[k] for k in {sorted(ENV)!r}}}))"
    script = f". {shlex.quote(str(target))} && {shlex.quote(sys.executable)} -c {shlex.quote(probe)}"
    result = subprocess.run(
        ["sh", "-c", script], capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin"}
    )
    assert json.loads(result.stdout) == ENV


def test_k8s_secret_is_a_valid_secret_holding_the_env(outputs_file: Path, tmp_path: Path) -> None:
    target = export_to(outputs_file, tmp_path, "k8s-secret", "--secret-name", "xcom-env", "--namespace", "data")
    manifest = yaml.safe_load(target.read_text())
    kubernetes_validate.validate(manifest, "1.30", strict=True)
    assert (manifest["kind"], manifest["type"]) == ("Secret", "Opaque")
    assert manifest["metadata"]["name"] == "xcom-env" and manifest["metadata"]["namespace"] == "data"
    assert manifest["stringData"] == ENV


def test_a_broken_secret_manifest_would_be_caught_by_the_validator() -> None:
    broken = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}, "stringData": {"A": 1}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.30", strict=True)


def test_helm_values_reference_every_key_of_the_secret_and_hold_no_secret(outputs_file: Path) -> None:
    result = run_cli("export", "--input", str(outputs_file), "--format", "helm-values", "--secret-name", "xcom-env")
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout and "AKIA1" not in result.stdout
    values = yaml.safe_load(result.stdout)
    assert values == {"secret": [{"envName": k, "secretName": "xcom-env", "secretKey": k} for k in sorted(ENV)]}


def test_astro_commands_flag_connections_as_secret(outputs_file: Path, tmp_path: Path) -> None:
    target = export_to(outputs_file, tmp_path, "astro")
    commands = [shlex.split(line) for line in target.read_text().splitlines() if line.startswith("astro ")]
    assert len(commands) == 2
    seen = {}
    for words in commands:
        assert words[:4] == ["astro", "deployment", "variable", "$VERB"]
        assert words[4:6] == ["--deployment-id", "$ASTRO_DEPLOYMENT_ID"]
        pairs = dict(word.split("=", 1) for word in words if "=" in word and not word.startswith("--"))
        secret = "--secret" in words
        assert all(name.startswith("AIRFLOW_CONN_") == secret for name in pairs)
        seen.update(pairs)
    assert seen == ENV
