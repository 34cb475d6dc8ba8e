"""The Azure program under Pulumi's mock runtime: account hardening, container, SAS scope, role scope, env."""

from __future__ import annotations

import json
from urllib.parse import parse_qs

import pulumi
import pytest
from airflow.models.connection import Connection

from emulation.pulumi_runner import DestroyRefused, ProgramRun, RecordingMocks, destroy_plan, run_program
from xcom_backend import contract

ACCOUNT = "azure-native:storage:StorageAccount"
CONTAINER = "azure-native:storage:BlobContainer"
ROLE = "azure-native:authorization:RoleAssignment"
BASE = {"cloud": "azure", "sasExpiry": "2099-01-31"}


class SasRecordingMocks(RecordingMocks):
    """Also keeps the arguments of each invoke, to assert what the SAS was requested with."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, dict]] = []

    def call(self, args):
        self.calls.append((args.token, dict(args.args)))
        return super().call(args)


def run(**config) -> ProgramRun:
    return run_program({**BASE, **config}, RecordingMocks())


@pytest.fixture(scope="module")
def default_run() -> tuple[ProgramRun, SasRecordingMocks]:
    mocks = SasRecordingMocks()
    return run_program(BASE, mocks), mocks


def test_account_is_hardened(default_run) -> None:
    program, _ = default_run
    account = program.one(ACCOUNT).inputs
    assert account["kind"] == "StorageV2"
    assert account["sku"] == {"name": "Standard_LRS"}
    assert account["allowBlobPublicAccess"] is False
    assert account["enableHttpsTrafficOnly"] is True
    assert account["minimumTlsVersion"] == "TLS1_2"
    assert account["allowCrossTenantReplication"] is False
    assert account["location"] == "eastus"
    assert account["tags"] == {"managed-by": "pulumi", "purpose": "airflow-xcom"}


def test_container_is_private_and_lifecycle_targets_the_prefix(default_run) -> None:
    program, _ = default_run
    container = program.one(CONTAINER).inputs
    assert container["publicAccess"] == "None"
    policy = program.one("azure-native:storage:ManagementPolicy").inputs
    assert policy["managementPolicyName"] == "default"
    (rule,) = policy["policy"]["rules"]
    assert rule["definition"]["filters"]["prefixMatch"] == [f"{program.outputs['bucket_name']}/xcom/"]
    assert rule["definition"]["actions"]["baseBlob"]["delete"] == {"daysAfterCreationGreaterThan": 30}
    assert not run(expiryDays=0).of_type("azure-native:storage:ManagementPolicy")


def test_sas_is_container_scoped_least_permission_https_only_with_expiry(default_run) -> None:
    program, mocks = default_run
    ((_, sas_args),) = [call for call in mocks.calls if call[0].endswith("listStorageAccountServiceSAS")]
    account, container = program.outputs["storage_account_name"], program.outputs["bucket_name"]
    assert sas_args["canonicalizedResource"] == f"/blob/{account}/{container}"
    assert sas_args["resource"] == "c"
    assert sas_args["permissions"] == "rwdl"
    assert sas_args["protocols"] == "https"
    assert sas_args["sharedAccessExpiryTime"] == "2099-01-31T00:00:00Z"
    assert program.outputs["sas_expiry"] == "2099-01-31T00:00:00Z"
    connection = json.loads(program.outputs["airflow_env"]["AIRFLOW_CONN_MY_AZURE_CONN"])
    token = parse_qs(connection["extra"]["sas_token"])
    assert token["sp"] == ["rwdl"] and token["spr"] == ["https"] and token["sr"] == ["c"]
    assert not program.of_type(ROLE)
    assert program.one(ACCOUNT).inputs["allowSharedKeyAccess"] is True  # a service SAS is signed with a key


def test_env_and_secrets(default_run) -> None:
    program, _ = default_run
    env = program.outputs["airflow_env"]
    assert "airflow_env" in program.secret_outputs
    assert env[contract.PATH_ENV] == f"abfs://my_azure_conn@{program.outputs['bucket_name']}/xcom"
    parsed = Connection.from_json(env["AIRFLOW_CONN_MY_AZURE_CONN"], conn_id="my_azure_conn")
    assert parsed.conn_type == "wasb"
    assert parsed.extra_dejson["account_name"] == program.outputs["storage_account_name"]
    plain = {k: v for k, v in program.outputs.items() if k not in program.secret_outputs}
    assert "sig=" not in json.dumps(plain)


def test_changing_the_expiry_rotates_the_sas() -> None:
    first = json.loads(run(sasExpiry="2099-01-31").outputs["airflow_env"]["AIRFLOW_CONN_MY_AZURE_CONN"])
    second = json.loads(run(sasExpiry="2099-02-28").outputs["airflow_env"]["AIRFLOW_CONN_MY_AZURE_CONN"])
    assert parse_qs(first["extra"]["sas_token"])["se"] == ["2099-01-31T00:00:00Z"]
    assert parse_qs(second["extra"]["sas_token"])["se"] == ["2099-02-28T00:00:00Z"]


def test_identity_mode_assigns_blob_data_contributor_on_the_container_only() -> None:
    program = run_program({"cloud": "azure", "credentials": "identity"}, RecordingMocks())
    role = program.one(ROLE).inputs
    assert role["roleDefinitionId"].endswith("/roleDefinitions/ba92f5b4-2d11-453d-a403-e96b0029c9fe")
    assert role["scope"].endswith(f"/blobServices/default/containers/{program.outputs['bucket_name']}")
    assert "/storageAccounts/" in role["scope"]
    assert role["principalType"] == "ServicePrincipal"
    identity = program.one("azure-native:managedidentity:UserAssignedIdentity").outputs
    assert role["principalId"] == identity["principalId"]
    account = program.one(ACCOUNT).inputs
    assert account["allowSharedKeyAccess"] is False and account["defaultToOAuthAuthentication"] is True
    connection = json.loads(program.outputs["airflow_env"]["AIRFLOW_CONN_MY_AZURE_CONN"])
    assert connection["extra"] == {
        "account_name": program.outputs["storage_account_name"],
        "managed_identity_client_id": identity["clientId"],
    }


def test_identity_mode_with_a_given_principal_creates_no_identity() -> None:
    principal = "11111111-2222-3333-4444-555555555555"
    program = run_program(
        {"cloud": "azure", "credentials": "identity", "identityPrincipalId": principal, "resourceGroupName": "rg-1"},
        RecordingMocks(),
    )
    assert program.one(ROLE).inputs["principalId"] == principal
    assert not program.of_type("azure-native:managedidentity:UserAssignedIdentity")
    assert not program.of_type("azure-native:resources:ResourceGroup")
    assert program.one(ACCOUNT).inputs["resourceGroupName"] == "rg-1"
    assert (
        "managed_identity_client_id"
        not in json.loads(program.outputs["airflow_env"]["AIRFLOW_CONN_MY_AZURE_CONN"])["extra"]
    )


def test_a_given_principal_is_assigned_with_its_own_type() -> None:
    """A user or group object id sent as ServicePrincipal fails with UnmatchedPrincipalType."""
    principal = "11111111-2222-3333-4444-555555555555"
    for principal_type in ("User", "Group", "ServicePrincipal"):
        program = run_program(
            {
                "cloud": "azure",
                "credentials": "identity",
                "identityPrincipalId": principal,
                "identityPrincipalType": principal_type,
            },
            RecordingMocks(),
        )
        assert program.one(ROLE).inputs["principalType"] == principal_type


def test_force_destroy_off_protects_what_holds_xcoms(default_run) -> None:
    """Azure deletes a container with its blobs: with forceDestroy=false the destroy refuses up front."""
    program, _ = default_run
    protected = {r.type for r in program.resources if r.options.protect}
    assert protected == {ACCOUNT, CONTAINER, "azure-native:resources:ResourceGroup"}
    with pytest.raises(DestroyRefused):
        destroy_plan(program.resources)
    released = run(forceDestroy=True)
    assert not [r for r in released.resources if r.options.protect]
    assert [r.type for r, action in destroy_plan(released.resources) if action == "delete"][-1] == (
        "airflow-xcom-backend:azure:XComStorage"
    )


def test_the_stacks_azure_provider_config_reaches_every_resource() -> None:
    stack_file = {"azure-native:subscriptionId": "00000000-0000-0000-0000-0000000000aa", "azure-native:useOidc": True}
    program = run_program(BASE, RecordingMocks(), provider_config=stack_file)
    azure_resources = [r for r in program.resources if r.type.startswith("azure-native:")]
    assert len(azure_resources) >= 4
    for resource in azure_resources:
        config = program.provider_config(resource)
        assert config["subscriptionId"] == "00000000-0000-0000-0000-0000000000aa", resource.type
        assert config["useOidc"] == "true"
    assert not program.of_type("pulumi:providers:azure-native")


def test_account_key_mode_is_opt_in_and_secret() -> None:
    program = run_program({"cloud": "azure", "credentials": "account-key"}, RecordingMocks())
    connection = json.loads(program.outputs["airflow_env"]["AIRFLOW_CONN_MY_AZURE_CONN"])
    assert connection["extra"]["account_key"]
    assert "airflow_env" in program.secret_outputs


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"storageAccountName": "My-Account"}, "storageAccountName"),
        ({"bucketName": "bad--name"}, "bucketName"),
        ({"credentials": "password"}, "credentials"),
        ({"sasExpiry": "2001-01-01"}, "in the past"),
        ({"sasExpiry": ""}, "is required when credentials=sas"),
        ({"skuName": "Premium_LRS"}, "skuName"),
        ({"tags": "cost/center=42"}, "Azure tag names may not contain /"),
        (
            {"credentials": "identity", "identityPrincipalId": "x", "identityPrincipalType": "Robot"},
            "identityPrincipalType",
        ),
    ],
)
def test_bad_settings_stop_the_program_before_any_resource(config: dict, message: str) -> None:
    mocks = RecordingMocks()
    with pytest.raises(pulumi.RunError, match=message):
        run_program({**BASE, **config}, mocks)
    assert mocks.resources == []
