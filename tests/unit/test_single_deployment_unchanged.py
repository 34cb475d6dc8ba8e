"""Without ``deployments`` a stack is exactly what it was before deployments and rotation existed.

The recording (``golden/single_deployment.json``) was made by this module's ``record()`` on the program as it
was before those features (commit cd170b1), with seeded mocks so every provider-made value is reproducible:
per credential mode, every stack output byte for byte (since regenerated once, for the GCP env's added
``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false``), which outputs are secret, and every resource's URN,
inputs and options. An existing stack that upgrades therefore sees no change at `pulumi up`: no resource
replaced, no credential rotated, the same airflow_env to export. Regenerate only for an intended change of
single-deployment stacks: ``python -m tests.unit.test_single_deployment_unchanged --write``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from emulation.pulumi_runner import RecordingMocks, run_program

GOLDEN = Path(__file__).parent / "golden" / "single_deployment.json"
SEED = "single-deployment"
CASES: dict[str, dict[str, Any]] = {
    "aws access-key": {},
    "aws access-key, every option": {
        "compression": "gzip",
        "backend": "common-io",
        "tags": "team=data",
        "kmsKeyArn": "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "region": "eu-west-1",
        "bucketName": "my-xcom-bucket",
        "endpointUrl": "https://s3.example.com",
        "expiryDays": 0,
    },
    "aws role": {"credentials": "role", "roleTrustPrincipalArn": "arn:aws:iam::210987654321:role/astro"},
    "gcp key": {"cloud": "gcp", "project": "my-project-1"},
    "gcp key, common-io": {"cloud": "gcp", "project": "my-project-1", "backend": "common-io", "softDeleteDays": 7},
    "gcp workload identity": {
        "cloud": "gcp",
        "project": "my-project-1",
        "credentials": "workload-identity",
        "workloadIdentityMember": "serviceAccount:airflow@my-project-1.iam.gserviceaccount.com",
    },
    "azure sas": {"cloud": "azure", "sasExpiry": "2099-01-31", "tags": "team=data"},
    "azure sas, endpoint": {
        "cloud": "azure",
        "sasExpiry": "2099-01-31",
        "storageAccountName": "xcomstore1",
        "endpointUrl": "https://127.0.0.1:10000/xcomstore1",
    },
    "azure identity": {"cloud": "azure", "credentials": "identity", "resourceGroupName": "rg-data"},
    "azure account-key": {"cloud": "azure", "credentials": "account-key", "forceDestroy": True},
}


def record(config: dict[str, Any]) -> dict[str, Any]:
    """What `pulumi up` of this config declares and outputs, in a form that compares byte for byte."""
    program = run_program(config, RecordingMocks(seed=SEED), stack="prod")
    resources = {
        r.options.urn: {
            "inputs": r.inputs,
            "parent": r.options.parent,
            "dependencies": sorted(r.options.dependencies),
            "deleted_with": r.options.deleted_with,
            "protect": r.options.protect,
        }
        for r in program.resources
    }
    return json.loads(
        json.dumps(
            {"outputs": program.outputs, "secret_outputs": sorted(program.secret_outputs), "resources": resources},
            sort_keys=True,
        )
    )


@pytest.fixture(scope="module")
def golden() -> dict[str, Any]:
    return json.loads(GOLDEN.read_text())


@pytest.mark.parametrize("case", list(CASES))
def test_outputs_and_resources_are_byte_for_byte_what_they_were(case: str, golden: dict[str, Any]) -> None:
    now = record(CASES[case])
    before = golden[case]
    assert json.dumps(now["outputs"], sort_keys=True) == json.dumps(before["outputs"], sort_keys=True)
    assert now["secret_outputs"] == before["secret_outputs"]
    assert sorted(now["resources"]) == sorted(before["resources"]), "a resource was added, removed or renamed"
    for urn, declared in before["resources"].items():
        assert now["resources"][urn] == declared, urn


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    GOLDEN.write_text(json.dumps({case: record(config) for case, config in CASES.items()}, indent=1, sort_keys=True))
    print(f"wrote {GOLDEN}")
