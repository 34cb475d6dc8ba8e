"""Settings: defaults, Pulumi.yaml in step with the table, and every bad value rejected with its key."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from xcom_backend.pulumi import settings
from xcom_backend.pulumi.settings import SettingsError, parse


def test_defaults(repo_root: Path) -> None:
    parsed = parse({})
    assert parsed.cloud == "aws"
    assert parsed.conn_id == "my_aws_conn"
    assert parsed.bucket_name is None
    assert (parsed.prefix, parsed.threshold, parsed.compression) == ("xcom", 1000, None)
    assert parsed.backend == "bundled"
    assert (parsed.expiry_days, parsed.force_destroy) == (30, False)
    assert parsed.aws is not None
    assert (parsed.aws.region, parsed.credentials, parsed.aws.user_name) == (
        "us-east-1",
        "access-key",
        "airflow-xcom-backend-dev",
    )
    assert parsed.aws.kms_key_arn is None and parsed.endpoint_url is None and parsed.gcp is None


def test_empty_settings_fall_back_to_the_stacks_provider_config() -> None:
    aws = parse({}, provider={"aws:region": "ap-southeast-2"}).aws
    assert aws is not None and aws.region == "ap-southeast-2"
    assert parse({"region": "eu-west-1"}, provider={"aws:region": "ap-southeast-2"}).aws.region == "eu-west-1"
    gcp = parse({"cloud": "gcp"}, provider={"gcp:project": "stack-project"}).gcp
    assert gcp is not None and gcp.project == "stack-project"
    with pytest.raises(SettingsError, match="from the stack's aws:region"):
        parse({}, provider={"aws:region": "mars-1"})


def test_derived_names_are_unique_per_stack_and_fit_the_clouds_limits() -> None:
    names = {
        stack: (parse({}, stack=stack).aws.user_name, parse({"cloud": "gcp", "project": "p-123456"}, stack=stack))
        for stack in ("dev", "prod", "Prod_EU.1", "x" * 120, "x" * 119 + "y")
    }
    aws_names = [aws for aws, _ in names.values()]
    gcp_ids = [gcp.gcp.service_account_id for _, gcp in names.values()]
    assert len(set(aws_names)) == len(set(gcp_ids)) == 5
    assert all(len(name) <= 64 for name in aws_names) and all(6 <= len(i) <= 30 for i in gcp_ids)
    assert names["dev"][0] == "airflow-xcom-backend-dev"
    assert names["Prod_EU.1"][1].gcp.service_account_id == "airflow-xcom-backend-prod-eu-1"


def test_pulumi_yaml_declares_every_setting_with_type_default_description(repo_root: Path) -> None:
    project = yaml.safe_load((repo_root / "Pulumi.yaml").read_text())
    assert project["name"] == settings.PROJECT
    assert project["stackConfigDir"] == "stacks"
    assert project["runtime"]["name"] == "python"
    declared = project["config"]
    assert set(declared) == set(settings.KEYS_BY_NAME)
    for key in settings.KEYS:
        assert declared[key.name] == key.declaration()
        assert declared[key.name]["type"] in ("string", "integer", "boolean", "array")


@pytest.mark.parametrize("cloud", ["aws", "gcp", "azure"])
def test_example_stacks_are_valid(repo_root: Path, cloud: str) -> None:
    document = yaml.safe_load((repo_root / "stacks" / f"Pulumi.{cloud}.yaml").read_text())
    prefix = f"{settings.PROJECT}:"
    raw = {k.removeprefix(prefix): v for k, v in document["config"].items() if k.startswith(prefix)}
    provider = {k: v for k, v in document["config"].items() if not k.startswith(prefix)}
    assert set(provider) <= set(settings.PROVIDER_DEFAULT_KEYS)
    parsed = parse(raw, provider=provider, now=datetime(2026, 1, 1, tzinfo=timezone.utc))
    assert parsed.cloud == cloud and parsed.tags == {"team": "data", "env": "dev"}
    assert "userName" not in raw and "serviceAccountId" not in raw  # derived per stack


def test_cli_filled_defaults_of_other_clouds_are_not_errors() -> None:
    # The Pulumi CLI passes every declared default; AWS-only keys at their default must not trip a check.
    raw = {key.name: key.default for key in settings.KEYS}
    assert parse(raw).cloud == "aws"


def test_typed_values_from_stack_files_are_accepted() -> None:
    parsed = parse(
        {
            "threshold": 0,
            "expiryDays": "0",
            "forceDestroy": True,
            "allowHttpEndpoint": "TRUE",
            "endpointUrl": "http://127.0.0.1:9000",
        }
    )
    assert (parsed.threshold, parsed.expiry_days, parsed.force_destroy) == (0, 0, True)


BAD_SETTINGS = [
    ({"cloud": "oracle"}, "cloud", "use one of aws, gcp, azure"),
    ({"bucketName": "My_Bucket"}, "bucketName", "not a valid S3 bucket name"),
    ({"bucketName": "ab"}, "bucketName", "3-63"),
    ({"bucketName": "my.bucket.name"}, "bucketName", "dots are refused"),
    ({"bucketName": "xn--bucket"}, "bucketName", "reserves"),
    ({"bucketName": "bucket-s3alias"}, "bucketName", "reserves"),
    ({"threshold": "-2"}, "threshold", ">= -1"),
    ({"threshold": "1k"}, "threshold", "whole number"),
    ({"compression": "zstd"}, "compression", "gzip, bz2, lzma, xz or leave it empty"),
    ({"compression": "zip"}, "compression", "not allowed"),
    ({"compression": "snappy"}, "compression", "not allowed"),
    ({"prefix": "/xcom"}, "prefix", "must not start or end with '/'"),
    ({"prefix": "xcom/../other"}, "prefix", "'..'"),
    ({"prefix": "x com"}, "prefix", "may only contain"),
    ({"connectionId": "my-aws-conn"}, "connectionId", "letters, digits or underscores"),
    ({"backend": "XComObjectStoreBackend"}, "backend", "bundled, common-io"),
    ({"expiryDays": "-1"}, "expiryDays", ">= 0"),
    ({"forceDestroy": "yes"}, "forceDestroy", "true or false"),
    ({"tags": "team"}, "tags", "not key=value"),
    ({"tags": "aws:owner=me"}, "tags", "reserved"),
    ({"tags": "a=1,a=2"}, "tags", "twice"),
    ({"region": "us-east"}, "region", "not an AWS region"),
    ({"region": "US-EAST-1"}, "region", "not an AWS region"),
    ({"credentials": "password"}, "credentials", "access-key, role"),
    ({"credentials": "key"}, "credentials", "not allowed for aws"),
    ({"credentials": "role"}, "roleTrustPrincipalArn", "required when credentials=role"),
    ({"credentials": "role", "roleTrustPrincipalArn": "arn:aws:iam::12:role/x"}, "roleTrustPrincipalArn", "not an IAM"),
    ({"roleTrustPrincipalArn": "arn:aws:iam::123456789012:role/x"}, "roleTrustPrincipalArn", "only applies"),
    ({"userName": "airflow xcom"}, "userName", "not a valid IAM name"),
    ({"kmsKeyArn": "alias/aws/s3"}, "kmsKeyArn", "not a KMS key ARN"),
    ({"endpointUrl": "http://127.0.0.1:5000"}, "endpointUrl", "allowHttpEndpoint"),
    ({"endpointUrl": "ftp://x"}, "endpointUrl", "not an http(s) URL"),
    ({"xcomPrefix": "xcom"}, "xcomPrefix", "unknown setting"),
    ({"location": "europe-west1"}, "location", "applies to gcp, azure only, not aws"),
    ({"cloud": "azure"}, "sasExpiry", "is required when credentials=sas"),
    ({"cloud": "azure", "sasExpiry": "2020-01-01"}, "sasExpiry", "in the past"),
    ({"cloud": "azure", "sasExpiry": "next tuesday"}, "sasExpiry", "not a date"),
    ({"cloud": "azure", "credentials": "identity", "sasExpiry": "2099-01-01"}, "sasExpiry", "only applies"),
    ({"cloud": "azure", "sasExpiry": "2099-01-01", "storageAccountName": "Has-Dash"}, "storageAccountName", "3-24"),
    ({"cloud": "azure", "sasExpiry": "2099-01-01", "storageAccountName": "ab"}, "storageAccountName", "3-24"),
    ({"cloud": "azure", "sasExpiry": "2099-01-01", "bucketName": "-xcom"}, "bucketName", "blob container"),
    ({"cloud": "azure", "sasExpiry": "2099-01-01", "bucketName": "x--y"}, "bucketName", "blob container"),
    ({"cloud": "azure", "sasExpiry": "2099-01-01", "skuName": "Premium_LRS"}, "skuName", "Standard_LRS"),
    ({"cloud": "azure", "sasExpiry": "2099-01-01", "location": "West Europe"}, "location", "Azure region"),
    ({"cloud": "azure", "credentials": "wasb"}, "credentials", "sas, identity, account-key"),
    ({"cloud": "azure", "credentials": "identity", "identityPrincipalId": "bob"}, "identityPrincipalId", "GUID"),
    (
        {"cloud": "azure", "sasExpiry": "2099-01-01", "identityPrincipalId": "11111111-2222-3333-4444-555555555555"},
        "identityPrincipalId",
        "only applies",
    ),
    (
        {"cloud": "azure", "credentials": "identity", "endpointUrl": "https://x.example"},
        "endpointUrl",
        "not supported with credentials=identity",
    ),
    (
        {"cloud": "azure", "sasExpiry": "2099-01-01", "resourceGroupName": "rg/with/slash"},
        "resourceGroupName",
        "resource group",
    ),
    ({"cloud": "azure", "sasExpiry": "2099-01-01", "kmsKeyArn": "x"}, "kmsKeyArn", "applies to aws only"),
    ({"cloud": "gcp"}, "project", "is required for gcp"),
    ({"cloud": "gcp", "project": "P1"}, "project", "not a GCP project id"),
    ({"cloud": "gcp", "project": "my-project-1", "location": "mars"}, "location", "not a GCS location"),
    ({"cloud": "gcp", "project": "my-project-1", "bucketName": "google-xcom"}, "bucketName", "google"),
    ({"cloud": "gcp", "project": "my-project-1", "bucketName": "a.b.c"}, "bucketName", "not a valid GCS bucket"),
    ({"cloud": "gcp", "project": "my-project-1", "serviceAccountId": "ax"}, "serviceAccountId", "6-30"),
    (
        {"cloud": "gcp", "project": "my-project-1", "credentials": "workload-identity"},
        "workloadIdentityMember",
        "is required",
    ),
    (
        {
            "cloud": "gcp",
            "project": "my-project-1",
            "credentials": "workload-identity",
            "workloadIdentityMember": "airflow@x.iam.gserviceaccount.com",
        },
        "workloadIdentityMember",
        "not an IAM member",
    ),
    (
        {"cloud": "gcp", "project": "my-project-1", "workloadIdentityMember": "user:a@b.c"},
        "workloadIdentityMember",
        "only applies",
    ),
    ({"cloud": "gcp", "project": "my-project-1", "kmsKeyName": "my-key"}, "kmsKeyName", "cryptoKeys"),
    ({"cloud": "gcp", "project": "my-project-1", "tags": "Team=Data"}, "tags", "GCP labels"),
    ({"cloud": "gcp", "project": "my-project-1", "credentials": "role"}, "credentials", "key, workload-identity"),
    ({"cloud": "gcp", "project": "my-project-1", "region": "eu-west-1"}, "region", "applies to aws only"),
    ({"cloud": "gcp", "project": "my-project-1", "softDeleteDays": "3"}, "softDeleteDays", "0 (off) or 7-90"),
    ({"cloud": "gcp", "project": "my-project-1", "softDeleteDays": "91"}, "softDeleteDays", "0 (off) or 7-90"),
    ({"deployments": '["Sales"]'}, "deployments", "not a deployment name"),
    ({"deployments": '["a--b"]'}, "deployments", "single hyphens"),
    ({"deployments": "[sales"}, "deployments", "not a list of names"),
    ({"deployments": '["ml", "ml"]'}, "deployments", "ml given more than once"),
    ({"deployments": [f"d{i}" for i in range(101)]}, "deployments", "at most 100"),
    ({"credentialGeneration": "0"}, "credentialGeneration", ">= 1"),
    (
        {"credentials": "role", "roleTrustPrincipalArn": "arn:aws:iam::123456789012:role/x", "credentialGeneration": 2},
        "credentialGeneration",
        "nothing to rotate",
    ),
    ({"keepPreviousCredential": "true"}, "keepPreviousCredential", "needs credentialGeneration >= 2"),
    (
        {"cloud": "azure", "sasExpiry": "2099-01-01", "credentialGeneration": 2, "keepPreviousCredential": True},
        "keepPreviousCredential",
        "not needed on azure",
    ),
    (
        {"credentials": "role", "roleTrustPrincipalArn": "arn:aws:iam::123456789012:role/x", "deployments": ["a"]},
        "roleTrustPrincipalArn",
        "each deployment needs its own principal",
    ),
    (
        {"credentials": "role", "roleTrustPrincipalArn": "arn:aws:iam::123456789012:role/{deployment}"},
        "roleTrustPrincipalArn",
        "only applies with deployments",
    ),
    (
        {
            "cloud": "gcp",
            "project": "my-project-1",
            "credentials": "workload-identity",
            "workloadIdentityMember": "serviceAccount:a@b.iam.gserviceaccount.com",
            "deployments": ["a", "b"],
        },
        "workloadIdentityMember",
        "each deployment needs its own principal",
    ),
    (
        {
            "cloud": "azure",
            "credentials": "identity",
            "identityPrincipalId": "11111111-2222-3333-4444-555555555555",
            "deployments": ["a"],
        },
        "identityPrincipalId",
        "managed identity is created per deployment",
    ),
    ({"cloud": "azure", "credentials": "account-key", "deployments": ["a"]}, "credentials", "opens every container"),
    ({"cloud": "azure", "sasExpiry": "2099-01-01", "tags": "cost/center=1"}, "tags", "may not contain /"),
    (
        {"cloud": "azure", "credentials": "identity", "identityPrincipalType": "User"},
        "identityPrincipalType",
        "only applies with identityPrincipalId",
    ),
    (
        {
            "cloud": "azure",
            "credentials": "identity",
            "identityPrincipalId": "11111111-2222-3333-4444-555555555555",
            "identityPrincipalType": "Device",
        },
        "identityPrincipalType",
        "ServicePrincipal, User, Group",
    ),
]


@pytest.mark.parametrize(
    ("raw", "key", "message"), BAD_SETTINGS, ids=[f"{case[1]}-{i}" for i, case in enumerate(BAD_SETTINGS)]
)
def test_bad_setting_is_named_with_what_is_allowed(raw: dict, key: str, message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        parse(raw)
    problems = caught.value.problems
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{settings.PROJECT}:{key}: ")
    assert message in problems[0]


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(SettingsError) as caught:
        parse({"threshold": "-9", "prefix": "/", "compression": "rar"})
    assert len(caught.value.problems) == 3
    assert str(caught.value).startswith("invalid settings:\n  - ")


def test_docs_settings_table_lists_every_key_with_its_default(repo_root: Path) -> None:
    page = (repo_root / "docs" / "settings.md").read_text()
    rows = {line.split("|")[1].strip(" `"): line for line in page.splitlines() if line.startswith("| `")}
    for key in settings.KEYS:
        assert key.name in rows, f"docs/settings.md's table lacks {key.name}"
        cells = [cell.strip() for cell in rows[key.name].split("|")]
        default = str(key.default).lower() if isinstance(key.default, bool) else str(key.default)
        assert cells[2] == key.type
        assert cells[3] == (f"`{default}`" if default else "(empty)"), key.name
