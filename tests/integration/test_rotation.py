"""Credential rotation without downtime, on the emulators, through the real program run as successive
`pulumi up`s (emulation.pulumi_runner.update_program): the new credential is created while the old one keeps
working, both work during the overlap, and after it the old one is refused.

- AWS (moto, IAM enforced): the previous access key is deleted by the next `pulumi up`; moto then refuses it.
- GCP (token endpoint + IAM proxy): the previous key is deleted; the token endpoint refuses to mint for it.
  Tokens minted before stay valid until they expire (at most an hour), as Google documents for deleted keys.
- Azure (Azurite, SAS signatures checked): a SAS is not a resource; the new generation is signed with the other
  account key, and renewing the old key (az storage account keys renew) makes Azurite refuse the old SAS.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobServiceClient
from botocore.exceptions import ClientError
from google.auth.exceptions import RefreshError
from google.cloud import storage
from google.oauth2 import service_account

from emulation.azurite import AzuriteServer, azurite_server
from tests.conftest import DeployedStack, deploy, redeploy
from xcom_backend import contract

pytestmark = pytest.mark.integration


def env_of(stack: DeployedStack, deployment: str | None) -> dict[str, str]:
    env = stack.run.outputs["airflow_env"]
    return env[deployment] if deployment else env


def connection_of(env: dict[str, str]) -> dict[str, Any]:
    return json.loads(next(value for name, value in env.items() if name.startswith("AIRFLOW_CONN_")))


def prefix_of(env: dict[str, str]) -> tuple[str, str]:
    location = contract.parse_objectstorage_path(env[contract.PATH_ENV])
    return location.bucket, location.prefix


def ids_except(stack: DeployedStack, kind: str) -> dict[str, str | None]:
    return {r.options.urn: r.id for r in stack.run.resources if kind not in r.type}


# --- AWS --------------------------------------------------------------------------------------------


def s3_round_trip(stack: DeployedStack, env: dict[str, str], name: str) -> None:
    connection = connection_of(env)
    s3 = stack.server.client("s3", (connection["login"], connection["password"]))
    bucket, prefix = prefix_of(env)
    s3.put_object(Bucket=bucket, Key=f"{prefix}/{name}.json", Body=b"{}")
    assert s3.get_object(Bucket=bucket, Key=f"{prefix}/{name}.json")["Body"].read() == b"{}"


@pytest.mark.parametrize("deployment", [None, "sales"], ids=["single", "deployments"])
def test_aws_access_key_rotation(moto, deployment: str | None) -> None:
    extra = {"deployments": [deployment]} if deployment else {}
    stack = deploy(moto, stack=f"rotation-{deployment or 'single'}", **extra)
    try:
        old = env_of(stack, deployment)
        s3_round_trip(stack, old, "gen1")

        overlap, deleted = redeploy(stack, credentialGeneration=2, keepPreviousCredential=True)
        assert deleted == []
        new = env_of(overlap, deployment)
        assert connection_of(new)["login"] != connection_of(old)["login"]
        assert json.loads(new[contract.CREDENTIAL_ENV])["generation"] == 2
        s3_round_trip(overlap, old, "old-during-overlap")  # not yet rolled out everywhere: still works
        s3_round_trip(overlap, new, "new-during-overlap")

        final, deleted = redeploy(overlap, keepPreviousCredential=None)
        assert deleted == [f"access key {connection_of(old)['login']}"]
        assert env_of(final, deployment) == new
        s3_round_trip(final, new, "new-after")
        with pytest.raises(ClientError) as refused:
            s3_round_trip(final, old, "old-after")
        assert refused.value.response["Error"]["Code"] in ("InvalidAccessKeyId", "InvalidClientTokenId", "403")
        # Nothing else was replaced: bucket, policy, user, attachment keep their ids.
        assert ids_except(final, "accessKey") == ids_except(stack, "accessKey")
    finally:
        stack.mocks.destroy()


# --- GCP --------------------------------------------------------------------------------------------


def gcs_client(stack: DeployedStack, env: dict[str, str]) -> storage.Client:
    keyfile = json.loads(connection_of(env)["extra"]["keyfile_dict"])
    scopes = ["https://www.googleapis.com/auth/devstorage.full_control"]
    credentials = service_account.Credentials.from_service_account_info(keyfile, scopes=scopes)
    return storage.Client(
        project="emulated-project", credentials=credentials, client_options={"api_endpoint": stack.server.endpoint}
    )


def gcs_round_trip(client: storage.Client, env: dict[str, str], name: str) -> None:
    bucket, prefix = prefix_of(env)
    blob = client.bucket(bucket).blob(f"{prefix}/{name}.json")
    blob.upload_from_string(b"{}")
    assert blob.download_as_bytes() == b"{}"


def test_gcp_service_account_key_rotation(gcs) -> None:
    stack = deploy(gcs, stack="rotation")
    try:
        old = env_of(stack, None)
        already_running = gcs_client(stack, old)  # a worker that minted its token before the old key goes
        gcs_round_trip(already_running, old, "gen1")

        overlap, deleted = redeploy(stack, credentialGeneration=2, keepPreviousCredential=True)
        assert deleted == []
        new = env_of(overlap, None)
        old_key, new_key = (json.loads(connection_of(e)["extra"]["keyfile_dict"]) for e in (old, new))
        assert old_key["private_key_id"] != new_key["private_key_id"]
        assert old_key["client_email"] == new_key["client_email"]  # same service account, same binding
        gcs_round_trip(gcs_client(overlap, old), old, "old-during-overlap")
        gcs_round_trip(gcs_client(overlap, new), new, "new-during-overlap")

        final, deleted = redeploy(overlap, keepPreviousCredential=None)
        assert deleted == [f"service account key {old_key['private_key_id']}"]
        gcs_round_trip(gcs_client(final, new), new, "new-after")
        with pytest.raises(RefreshError, match="invalid_grant"):
            gcs_round_trip(gcs_client(final, old), old, "old-after")
        # As on GCP, a token minted before the key was deleted lives on until it expires (1 hour here).
        gcs_round_trip(already_running, old, "old-token-minted-before")
        assert ids_except(final, "serviceaccount/key") == ids_except(stack, "serviceaccount/key")
    finally:
        stack.mocks.destroy()


# --- Azure ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def azurite_with_keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteServer]:
    """An Azurite of its own that keeps its data on disk, so it can restart with a renewed account key."""
    with azurite_server(Path(tmp_path_factory.mktemp("azurite-rotation")), persistent=True) as server:
        yield server


def sas_container(stack: DeployedStack, env: dict[str, str]) -> Any:
    service = BlobServiceClient.from_connection_string(
        connection_of(env)["extra"]["connection_string"], connection_verify=str(stack.server.certificate.ca_file)
    )
    return service.get_container_client(prefix_of(env)[0])


def azure_round_trip(stack: DeployedStack, env: dict[str, str], name: str) -> None:
    container = sas_container(stack, env)
    prefix = prefix_of(env)[1]
    container.upload_blob(f"{prefix}/{name}.json", b"{}", overwrite=True)
    assert container.download_blob(f"{prefix}/{name}.json").readall() == b"{}"


def test_azure_sas_rotation_signs_with_the_other_key_and_renewing_the_old_key_revokes_it(
    azurite_with_keys: AzuriteServer,
) -> None:
    server = azurite_with_keys
    stack = deploy(server, stack="rotation", deployments=["sales"])
    try:
        old = env_of(stack, "sales")
        azure_round_trip(stack, old, "gen1")
        assert json.loads(old[contract.CREDENTIAL_ENV])["signed_with"] == "key1"

        rotated, deleted = redeploy(stack, credentialGeneration=2)
        assert deleted == []
        new = env_of(rotated, "sales")
        assert json.loads(new[contract.CREDENTIAL_ENV]) == {
            "expires": rotated.config["sasExpiry"],
            "generation": 2,
            "kind": "azure-sas",
            "signed_with": "key2",
        }
        azure_round_trip(rotated, old, "old-during-overlap")
        azure_round_trip(rotated, new, "new-during-overlap")

        server.renew_key("key1")  # az storage account keys renew --key key1
        azure_round_trip(rotated, new, "new-after")
        assert sas_container(rotated, new).download_blob("xcom/gen1.json").readall() == b"{}"  # data kept
        with pytest.raises(HttpResponseError) as refused:
            azure_round_trip(rotated, old, "old-after")
        assert refused.value.status_code == 403
    finally:
        stack.mocks.destroy()
