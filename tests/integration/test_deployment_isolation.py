"""Two deployments in one stack, deployed by the real program into each emulator: with one deployment's
emitted credential, everything in its own place works and the other deployment's place cannot be read,
written, listed or deleted.

Enforced by: moto's IAM (resource ARNs of each deployment's policy) plus emulation.s3_conditions (the policy's
``s3:prefix`` condition on listings); emulation.gcs_iam (each binding's CEL condition on the prefix); Azurite
(each SAS's signature over its own container).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobServiceClient
from botocore.exceptions import ClientError
from google.api_core import exceptions as gcs_errors
from google.cloud import storage
from google.oauth2 import service_account

from tests.conftest import DeployedStack, deploy
from tests.stores import AdminBucket
from xcom_backend import contract

pytestmark = pytest.mark.integration
DEPLOYMENTS = ("sales", "ml")
OPERATIONS = ("write", "read", "list", "delete")


@dataclass
class Place:
    """One deployment's bucket and prefix, and its emitted connection."""

    deployment: str
    bucket: str
    prefix: str
    connection: dict[str, Any]


def places(stack: DeployedStack) -> dict[str, Place]:
    found = {}
    for name, env in stack.run.outputs["airflow_env"].items():
        location = contract.parse_objectstorage_path(env[contract.PATH_ENV])
        connection = json.loads(env[contract.connection_env(location.conn_id or "")])
        found[name] = Place(name, location.bucket, location.prefix, connection)
    return found


def operations(stack: DeployedStack, credential: Place, target: Place) -> dict[str, Callable[[], Any]]:
    """The four operations with ``credential``'s connection on ``target``'s place (a planted object there)."""
    planted, new = f"{target.prefix}/planted.json", f"{target.prefix}/written-by-{credential.deployment}.json"
    server = stack.server
    if stack.run.outputs["cloud"] == "aws":
        s3 = server.client("s3", (credential.connection["login"], credential.connection["password"]))
        return {
            "write": lambda: s3.put_object(Bucket=target.bucket, Key=new, Body=b"{}"),
            "read": lambda: s3.get_object(Bucket=target.bucket, Key=planted)["Body"].read(),
            "list": lambda: s3.list_objects_v2(Bucket=target.bucket, Prefix=f"{target.prefix}/"),
            "delete": lambda: s3.delete_object(Bucket=target.bucket, Key=planted),
        }
    if stack.run.outputs["cloud"] == "gcp":
        keyfile = json.loads(credential.connection["extra"]["keyfile_dict"])
        scopes = ["https://www.googleapis.com/auth/devstorage.full_control"]
        credentials = service_account.Credentials.from_service_account_info(keyfile, scopes=scopes)
        client = storage.Client(
            project="emulated-project", credentials=credentials, client_options={"api_endpoint": server.endpoint}
        )
        bucket = client.bucket(target.bucket)
        return {
            "write": lambda: bucket.blob(new).upload_from_string(b"{}"),
            "read": lambda: bucket.blob(planted).download_as_bytes(),
            "list": lambda: list(client.list_blobs(target.bucket, prefix=f"{target.prefix}/")),
            "delete": lambda: bucket.blob(planted).delete(),
        }
    service = BlobServiceClient.from_connection_string(
        credential.connection["extra"]["connection_string"], connection_verify=str(server.certificate.ca_file)
    )
    container = service.get_container_client(target.bucket)
    return {
        "write": lambda: container.upload_blob(new, b"{}", overwrite=True),
        "read": lambda: container.download_blob(planted).readall(),
        "list": lambda: list(container.list_blobs(name_starts_with=f"{target.prefix}/")),
        "delete": lambda: container.delete_blob(planted),
    }


def denied(error: BaseException) -> bool:
    if isinstance(error, ClientError):
        return error.response["Error"]["Code"] in ("AccessDenied", "403")
    if isinstance(error, gcs_errors.Forbidden):
        return True
    return isinstance(error, HttpResponseError) and error.status_code == 403


@pytest.fixture(scope="module", params=["aws", "gcp", "azure"])
def two_deployments(request: pytest.FixtureRequest) -> Iterator[DeployedStack]:
    server = request.getfixturevalue({"aws": "moto_conditions", "gcp": "gcs", "azure": "azurite"}[request.param])
    stack = deploy(server, stack="isolation", deployments=list(DEPLOYMENTS))
    yield stack
    stack.mocks.destroy()


@pytest.mark.reliability
def test_a_deployments_credential_works_in_its_place_and_nowhere_in_the_others(
    two_deployments: DeployedStack, figures: list[dict[str, Any]]
) -> None:
    found = places(two_deployments)
    assert set(found) == set(DEPLOYMENTS)
    cloud = two_deployments.run.outputs["cloud"]
    outcomes: dict[tuple[str, str, str], str] = {}
    for own in DEPLOYMENTS:
        for target in DEPLOYMENTS:
            admin = AdminBucket(two_deployments.server, found[target].bucket)
            admin.put(f"{found[target].prefix}/planted.json", b'{"planted": true}')
            for operation, call in operations(two_deployments, found[own], found[target]).items():
                try:
                    call()
                    outcomes[own, target, operation] = "allowed"
                except Exception as err:
                    outcomes[own, target, operation] = "denied" if denied(err) else f"failed: {err!r}"[:200]
            if own != target:  # what the other deployment holds is still there, untouched
                assert admin.get(f"{found[target].prefix}/planted.json") == b'{"planted": true}'
                assert f"{found[target].prefix}/written-by-{own}.json" not in admin.keys(found[target].prefix)
    expected = {key: "allowed" if key[0] == key[1] else "denied" for key in outcomes}
    wrong = {key: got for key, got in outcomes.items() if got != expected[key]}
    figures.append(
        {
            "area": f"isolation ({cloud})",
            "case": "a deployment's credential on its own place (allowed) and the other's (denied)",
            "tried": len(outcomes),
            "failed": len(wrong),
        }
    )
    assert len(outcomes) == len(DEPLOYMENTS) ** 2 * len(OPERATIONS)
    assert wrong == {}


def test_the_deployments_places_do_not_overlap(two_deployments: DeployedStack) -> None:
    sales, ml = places(two_deployments)["sales"], places(two_deployments)["ml"]
    if two_deployments.run.outputs["cloud"] == "azure":
        assert sales.bucket != ml.bucket  # a container each: a service SAS cannot be narrowed to a prefix
    else:
        assert sales.bucket == ml.bucket and (sales.prefix, ml.prefix) == ("xcom/sales", "xcom/ml")
