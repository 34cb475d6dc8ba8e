"""Secrets across clouds and credential modes: every output holding one is a Pulumi secret, and the
credential appears in no plain output."""

from __future__ import annotations

import json

import pytest

from emulation.pulumi_runner import RecordingMocks, run_program

pytestmark = pytest.mark.reliability

MODES = [
    ({"cloud": "aws"}, lambda run: run.one("aws:iam/accessKey:AccessKey").outputs["secret"]),
    (
        {"cloud": "gcp", "project": "my-project-1"},
        lambda run: json.loads(
            json.loads(run.outputs["airflow_env"]["AIRFLOW_CONN_MY_GCP_CONN"])["extra"]["keyfile_dict"]
        )["private_key_id"],
    ),
    (
        {"cloud": "azure", "sasExpiry": "2099-01-01"},
        lambda run: json.loads(run.outputs["airflow_env"]["AIRFLOW_CONN_MY_AZURE_CONN"])["extra"]["sas_token"].split(
            "sig="
        )[1],
    ),
    (
        {"cloud": "azure", "credentials": "account-key"},
        lambda run: json.loads(run.outputs["airflow_env"]["AIRFLOW_CONN_MY_AZURE_CONN"])["extra"]["account_key"],
    ),
]


def test_secret_outputs_are_pulumi_secrets_and_never_plain(figures) -> None:
    failed = []
    for config, secret_of in MODES:
        program = run_program(config, RecordingMocks())
        secret = secret_of(program)
        plain = json.dumps({k: v for k, v in program.outputs.items() if k not in program.secret_outputs})
        if "airflow_env" not in program.secret_outputs or not secret or secret in plain:
            failed.append(config)
    figures.append(
        {
            "area": "secrets",
            "case": "stack outputs marked secret, no plain copy (4 credential modes)",
            "tried": len(MODES),
            "failed": len(failed),
        }
    )
    assert failed == []
