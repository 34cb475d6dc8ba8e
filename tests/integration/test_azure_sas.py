"""The emitted SAS against Azurite (which checks signature, permissions, protocol and expiry)."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobServiceClient

from tests.conftest import DeployedStack, deploy

pytestmark = pytest.mark.integration


def sas_client(stack: DeployedStack) -> BlobServiceClient:
    connection_string = stack.connection["extra"]["connection_string"]
    return BlobServiceClient.from_connection_string(
        connection_string, connection_verify=str(stack.server.certificate.ca_file)
    )


@pytest.fixture(scope="module")
def azure_stack(azurite):
    stack = deploy(azurite)
    yield stack
    stack.mocks.destroy()


def test_sas_can_do_what_the_backend_needs(azure_stack: DeployedStack) -> None:
    container = sas_client(azure_stack).get_container_client(azure_stack.bucket)
    container.upload_blob("xcom/d/r/t/a.json", b"{}", overwrite=True)
    container.upload_blob("xcom/d/r/t/a.json", b"[]", overwrite=True)  # retries overwrite
    assert container.download_blob("xcom/d/r/t/a.json").readall() == b"[]"
    assert [b.name for b in container.list_blobs(name_starts_with="xcom/")] == ["xcom/d/r/t/a.json"]
    container.delete_blob("xcom/d/r/t/a.json")


def test_sas_cannot_touch_other_containers_or_the_container_itself(azure_stack: DeployedStack) -> None:
    admin = azure_stack.server.client()
    admin.create_container("other-container")
    try:
        client = sas_client(azure_stack)
        denied = {
            "write another container": lambda: client.get_container_client("other-container").upload_blob("x", b"1"),
            "list containers": lambda: list(client.list_containers()),
            "create a container": lambda: client.create_container("new-container"),
            "delete the container": lambda: client.get_container_client(azure_stack.bucket).delete_container(),
            "make the container public": lambda: client.get_container_client(
                azure_stack.bucket
            ).set_container_access_policy(signed_identifiers={}, public_access="container"),
        }
        allowed = []
        for name, operation in denied.items():
            try:
                operation()
                allowed.append(name)
            except HttpResponseError as err:
                assert err.status_code in (403, 404), (name, err.status_code)
        assert allowed == []
    finally:
        admin.delete_container("other-container")


def test_an_expired_sas_is_refused(azurite) -> None:
    expiry = (datetime.now(timezone.utc) + timedelta(seconds=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    stack = deploy(azurite, sasExpiry=expiry)
    try:
        container = sas_client(stack).get_container_client(stack.bucket)
        container.upload_blob("xcom/x.json", b"{}")
        time.sleep(
            max(
                0.0,
                (datetime.fromisoformat(expiry.replace("Z", "+00:00")) - datetime.now(timezone.utc)).total_seconds(),
            )
            + 1.5
        )
        with pytest.raises(HttpResponseError) as caught:
            container.upload_blob("xcom/y.json", b"{}")
        assert caught.value.status_code == 403
    finally:
        stack.mocks.destroy()


def test_connection_is_https_only(azure_stack: DeployedStack) -> None:
    connection_string = azure_stack.connection["extra"]["connection_string"]
    assert "BlobEndpoint=https://" in connection_string and "spr=https" in connection_string
    assert json.dumps(azure_stack.connection).count("AccountKey") == 0
