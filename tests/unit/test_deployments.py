"""Many deployments in one stack, under Pulumi's mock runtime: each deployment's resources, their isolation as
declared, and what `pulumi up` would change when deployments are added, removed, reordered or rotated."""

from __future__ import annotations

import json
from typing import Any

import pytest

from emulation.pulumi_runner import ProgramRun, RecordingMocks, planned_changes, run_program
from xcom_backend import contract

SEED = "deployments"
CLOUDS: dict[str, dict[str, Any]] = {
    "aws access-key": {},
    "aws role": {"credentials": "role", "roleTrustPrincipalArn": "arn:aws:iam::210987654321:role/astro-{deployment}"},
    "gcp key": {"cloud": "gcp", "project": "my-project-1"},
    "gcp key, common-io": {"cloud": "gcp", "project": "my-project-1", "backend": "common-io"},
    "gcp workload identity": {
        "cloud": "gcp",
        "project": "my-project-1",
        "credentials": "workload-identity",
        "workloadIdentityMember": "principal://iam.googleapis.com/projects/1/locations/global/"
        "workloadIdentityPools/p/subject/{deployment}",
    },
    "azure sas": {"cloud": "azure", "sasExpiry": "2099-01-31"},
    "azure identity": {"cloud": "azure", "credentials": "identity"},
}
# Shared resources whose inputs list every deployment (Azure allows one lifecycle policy per account).
SHARED_UPDATES = {"azure-native:storage:ManagementPolicy"}


def run(config: dict[str, Any], deployments: list[str], **more: Any) -> ProgramRun:
    return run_program({**config, "deployments": deployments, **more}, RecordingMocks(seed=SEED), stack="prod")


def owner(urn: str) -> str:
    """The logical name of the resource a URN names."""
    return urn.rsplit("::", 1)[1]


def belongs_to(urn: str, deployment: str) -> bool:
    return f"-{deployment}-" in owner(urn) or owner(urn).endswith(f"-{deployment}")


@pytest.mark.parametrize("case", list(CLOUDS))
def test_adding_removing_or_reordering_deployments_touches_no_other_deployment(case: str) -> None:
    config = CLOUDS[case]
    two = run(config, ["sales", "ml"])
    three = run(config, ["sales", "ml", "finance"])
    one = run(config, ["sales"])
    reordered = run(config, ["ml", "sales"])

    def types(changes: dict[str, str]) -> dict[str, str]:
        return {
            urn: action for urn, action in changes.items() if urn.split("::")[-2].split("$")[-1] not in SHARED_UPDATES
        }

    added = types(planned_changes(two, three))
    assert added and set(added.values()) == {"create"}, added
    assert all(belongs_to(urn, "finance") for urn in added), sorted(added)
    removed = types(planned_changes(two, one))
    assert removed and set(removed.values()) == {"delete"}, removed
    assert all(belongs_to(urn, "ml") for urn in removed), sorted(removed)
    assert types(planned_changes(two, reordered)) == {}
    shared = {urn for urn in planned_changes(two, three) if urn not in added}
    assert all(urn.split("::")[-2].split("$")[-1] in SHARED_UPDATES for urn in shared)
    # The envs the deployments already run with stay exactly as they were: nothing to re-export.
    for deployment in ("sales", "ml"):
        assert three.outputs["airflow_env"][deployment] == two.outputs["airflow_env"][deployment]
        assert reordered.outputs["airflow_env"][deployment] == two.outputs["airflow_env"][deployment]
    assert one.outputs["airflow_env"]["sales"] == two.outputs["airflow_env"]["sales"]


@pytest.mark.parametrize("case", list(CLOUDS))
def test_each_deployment_gets_its_own_env_path_and_credential(case: str) -> None:
    program = run(CLOUDS[case], ["sales", "ml"])
    outputs = program.outputs
    assert (
        set(outputs["airflow_env"])
        == set(outputs["objectstorage_path"])
        == set(outputs["deployments"])
        == {
            "sales",
            "ml",
        }
    )
    assert "airflow_env" in program.secret_outputs and "deployments" not in program.secret_outputs
    envs = outputs["airflow_env"]
    for name, env in envs.items():
        assert env[contract.DEPLOYMENT_ENV] == name
        assert env[contract.PATH_ENV] == outputs["objectstorage_path"][name]
        details = outputs["deployments"][name]
        location = contract.parse_objectstorage_path(env[contract.PATH_ENV])
        assert (location.bucket, location.prefix) == (details["bucket_name"], details["prefix"])
    paths = {contract.parse_objectstorage_path(env[contract.PATH_ENV]) for env in envs.values()}
    assert len({(p.bucket, p.prefix) for p in paths}) == 2, "each deployment has its own place"
    # Its own credential; with workload identity the connection holds none, the binding's member differs.
    identities = {
        env["AIRFLOW_CONN_MY_" + case.split()[0].upper() + "_CONN"] + str(outputs["deployments"][name].get("member"))
        for name, env in envs.items()
    }
    assert len(identities) == 2, "each deployment has its own credential"
    plain = json.dumps({k: v for k, v in outputs.items() if k not in program.secret_outputs})
    for env in envs.values():
        connection = json.loads(env["AIRFLOW_CONN_MY_" + case.split()[0].upper() + "_CONN"])
        for secret in (
            connection.get("password"),
            connection["extra"].get("keyfile_dict"),
            connection["extra"].get("sas_token"),
        ):
            assert not secret or secret not in plain


def test_aws_each_policy_grants_only_its_deployments_prefix() -> None:
    program = run({}, ["sales", "ml"])
    bucket_arn = f"arn:aws:s3:::{program.outputs['bucket_name']}"
    policies = {r.name: json.loads(r.inputs["policy"]) for r in program.of_type("aws:iam/policy:Policy")}
    assert set(policies) == {"AirflowXComBackendAWSS3-sales", "AirflowXComBackendAWSS3-ml"}
    for deployment in ("sales", "ml"):
        statements = {s["Sid"]: s for s in policies[f"AirflowXComBackendAWSS3-{deployment}"]["Statement"]}
        assert statements["ReadWriteXComObjects"]["Resource"] == [f"{bucket_arn}/xcom/{deployment}/*"]
        assert statements["ListXComPrefixOnly"]["Condition"] == {"StringLike": {"s3:prefix": [f"xcom/{deployment}/*"]}}
    users = {r.name: r.inputs for r in program.of_type("aws:iam/user:User")}
    assert users["airflow-xcom-sales-user"]["name"] == "airflow-xcom-backend-prod-sales"
    assert users["airflow-xcom-sales-user"]["tags"]["airflow-deployment"] == "sales"
    attachments = {
        r.inputs["user"]: r.inputs["policyArn"]
        for r in program.of_type("aws:iam/userPolicyAttachment:UserPolicyAttachment")
    }
    assert attachments["airflow-xcom-backend-prod-ml"] == program.outputs["deployments"]["ml"]["policy_arn"]
    # The lifecycle rules cover every deployment: they sit on <prefix>/.
    rules = program.one("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration").inputs["rules"]
    assert {rule["filter"]["prefix"] for rule in rules} == {"xcom/"}


def test_aws_role_per_deployment_trusts_its_own_principal() -> None:
    program = run(CLOUDS["aws role"], ["sales", "ml"])
    trust = {r.inputs["name"]: json.loads(r.inputs["assumeRolePolicy"]) for r in program.of_type("aws:iam/role:Role")}
    assert trust["airflow-xcom-backend-prod-ml"]["Statement"][0]["Principal"] == {
        "AWS": "arn:aws:iam::210987654321:role/astro-ml"
    }


def test_gcp_each_binding_is_conditioned_on_its_deployments_prefix() -> None:
    program = run(CLOUDS["gcp key"], ["sales", "ml"])
    bucket = program.outputs["bucket_name"]
    bindings = {r.name: r.inputs for r in program.of_type("gcp:storage/bucketIAMMember:BucketIAMMember")}
    accounts = {r.name: r.inputs for r in program.of_type("gcp:serviceaccount/account:Account")}
    for deployment in ("sales", "ml"):
        binding = bindings[f"airflow-xcom-{deployment}-xcom-access"]
        assert (
            binding["member"] == f"serviceAccount:{program.outputs['deployments'][deployment]['service_account_email']}"
        )
        assert f'objects/xcom/{deployment}/")' in binding["condition"]["expression"]
        assert f'.startsWith("xcom/{deployment}/")' in binding["condition"]["expression"]
        assert bucket in binding["condition"]["expression"]
        assert accounts[f"airflow-xcom-{deployment}-sa"]["accountId"].endswith(f"-{deployment}")
        assert len(accounts[f"airflow-xcom-{deployment}-sa"]["accountId"]) <= 30


def test_azure_each_deployment_has_its_own_container_and_scoped_credential() -> None:
    program = run(CLOUDS["azure sas"], ["sales", "ml"])
    containers = {r.inputs["containerName"] for r in program.of_type("azure-native:storage:BlobContainer")}
    assert containers == {"xcom-sales", "xcom-ml"}
    for deployment in ("sales", "ml"):
        sas = json.loads(program.outputs["airflow_env"][deployment]["AIRFLOW_CONN_MY_AZURE_CONN"])["extra"]["sas_token"]
        assert "sr=c" in sas and program.outputs["deployments"][deployment]["bucket_name"] == f"xcom-{deployment}"
    rules = program.one("azure-native:storage:ManagementPolicy").inputs["policy"]["rules"]
    assert {rule["definition"]["filters"]["prefixMatch"][0] for rule in rules} == {"xcom-sales/xcom/", "xcom-ml/xcom/"}
    identity = run(CLOUDS["azure identity"], ["sales", "ml"])
    scopes = {r.name: r.inputs["scope"] for r in identity.of_type("azure-native:authorization:RoleAssignment")}
    assert scopes["airflow-xcom-ml-blob-data-contributor"].endswith("/containers/xcom-ml")
    assert len(identity.of_type("azure-native:managedidentity:UserAssignedIdentity")) == 2


ROTATABLE = {
    "aws": ({}, "aws:iam/accessKey:AccessKey"),
    "gcp": (CLOUDS["gcp key"], "gcp:serviceaccount/key:Key"),
}


@pytest.mark.parametrize("cloud", list(ROTATABLE))
@pytest.mark.parametrize("deployments", [[], ["sales", "ml"]], ids=["single", "deployments"])
def test_rotation_creates_the_new_key_beside_the_old_then_deletes_only_the_old(
    cloud: str, deployments: list[str]
) -> None:
    config, key_type = ROTATABLE[cloud]
    before = run(config, deployments)
    overlap = run(config, deployments, credentialGeneration=2, keepPreviousCredential=True)
    after = run(config, deployments, credentialGeneration=2)

    step1 = planned_changes(before, overlap)
    assert step1 and all(
        action == "create" and key_type in urn and owner(urn).endswith("-g2") for urn, action in step1.items()
    )
    step2 = planned_changes(overlap, after)
    assert step2 and set(step2.values()) == {"delete"}
    assert all(key_type in urn and not owner(urn).endswith("-g2") for urn in step2)
    assert len(step1) == len(step2) == max(1, len(deployments))

    def envs(program: ProgramRun) -> list[dict[str, str]]:
        env = program.outputs["airflow_env"]
        return list(env.values()) if deployments else [env]

    # The env carries the new key from the overlap on, and says which credential it is.
    for old, new, final in zip(envs(before), envs(overlap), envs(after), strict=True):
        assert new != old and new == final
        described = json.loads(new[contract.CREDENTIAL_ENV])
        assert described["generation"] == 2 and described["kind"] in ("aws-access-key", "gcp-service-account-key")
        assert described["created"] == "2026-01-01T00:00:00Z"
        assert described["id"] in new[next(k for k in new if k.startswith("AIRFLOW_CONN_"))]


def test_rotation_outputs_name_the_previous_key_while_it_is_kept() -> None:
    overlap = run({}, [], credentialGeneration=2, keepPreviousCredential=True)
    assert overlap.outputs["previous_access_key_id"] != overlap.outputs["access_key_id"]
    assert "previous_access_key_id" not in run({}, [], credentialGeneration=2).outputs


def test_azure_rotation_signs_with_the_other_account_key() -> None:
    class Calls(RecordingMocks):
        def __init__(self) -> None:
            super().__init__(seed=SEED)
            self.sas: list[dict[str, Any]] = []

        def call(self, args: Any) -> dict[str, Any]:
            if args.token == "azure-native:storage:listStorageAccountServiceSAS":
                self.sas.append(dict(args.args))
            return super().call(args)

    signed = {}
    for generation in (1, 2, 3):
        mocks = Calls()
        program = run_program({**CLOUDS["azure sas"], "credentialGeneration": generation}, mocks, stack="prod")
        signed[generation] = mocks.sas[0].get("keyToSign")
        assert not program.resources or planned_changes(run(CLOUDS["azure sas"], []), program) == {}
    assert signed == {1: None, 2: "key2", 3: "key1"}  # generation 1: the default, key1


def test_without_deployments_the_env_names_no_deployment_until_a_rotation() -> None:
    env = run({}, []).outputs["airflow_env"]
    assert contract.DEPLOYMENT_ENV not in env and contract.CREDENTIAL_ENV not in env
    rotated = run({}, [], credentialGeneration=2).outputs["airflow_env"]
    assert contract.DEPLOYMENT_ENV not in rotated and json.loads(rotated[contract.CREDENTIAL_ENV])["generation"] == 2
