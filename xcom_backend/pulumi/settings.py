"""Every stack setting, its default and its validation, shared by all clouds.

This module owns the settings table; ``Pulumi.yaml`` declares the same keys (a unit test keeps the two in
step), and the XComStorage component takes the same keys as typed arguments and validates them here too. It
imports no Pulumi or cloud SDK, so bad settings are rejected before anything is declared.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from xcom_backend import contract

PROJECT = "airflow-xcom-backend"
CLOUDS = tuple(contract.SCHEMES)
IMPLEMENTED_CLOUDS = ("aws", "gcp", "azure")
DEFAULT_LOCATIONS = {"gcp": "US", "azure": "eastus"}
AZURE_SKUS = ("Standard_LRS", "Standard_ZRS", "Standard_GRS", "Standard_RAGRS", "Standard_GZRS", "Standard_RAGZRS")
ALL = CLOUDS


@dataclass(frozen=True)
class Key:
    name: str
    type: str  # as declared in Pulumi.yaml: string, integer, boolean or array (of strings)
    default: Any
    description: str
    clouds: tuple[str, ...] = ALL

    def declaration(self) -> dict[str, Any]:
        """The key's entry under ``config:`` in Pulumi.yaml."""
        declared: dict[str, Any] = {"type": self.type}
        if self.type == "array":
            declared["items"] = {"type": "string"}
        return {**declared, "default": self.default, "description": self.description}


KEYS: tuple[Key, ...] = (
    Key("cloud", "string", "aws", "Cloud to deploy to: aws, gcp or azure."),
    Key(
        "connectionId",
        "string",
        "",
        "Airflow connection id in the storage path and AIRFLOW_CONN_<ID>; empty means my_<cloud>_conn (my_aws_conn).",
    ),
    Key(
        "bucketName",
        "string",
        "",
        "Bucket name (Azure: blob container name); empty lets Pulumi auto-name it from the stack.",
    ),
    Key(
        "prefix",
        "string",
        contract.DEFAULT_PREFIX,
        "Key prefix XComs are written under; the credential is limited to it.",
    ),
    Key(
        "threshold",
        "integer",
        contract.DEFAULT_THRESHOLD,
        "Serialized XCom size in bytes from which values "
        "go to object storage; -1 keeps all in the metadata DB, 0 sends all to storage.",
    ),
    Key(
        "compression",
        "string",
        "",
        f"Codec for stored XComs: one of {', '.join(contract.COMPRESSIONS)}; empty for none.",
    ),
    Key(
        "backend",
        "string",
        "bundled",
        "Backend class the env selects: bundled "
        f"({contract.BUNDLED_BACKEND}) or common-io ({contract.COMMON_IO_BACKEND}).",
    ),
    Key(
        "expiryDays",
        "integer",
        30,
        "Delete stored XComs this many days after writing (lifecycle rule), "
        "so objects orphaned by `airflow db clean` do not stay forever; 0 turns it off.",
    ),
    Key(
        "forceDestroy",
        "boolean",
        False,
        "Let `pulumi destroy` delete the bucket while it still holds XComs. Off by default so a destroy never "
        "deletes data silently (Azure, which has no non-empty guard: the container and account are protected "
        "from destroy until this is true).",
    ),
    Key(
        "tags",
        "string",
        "",
        "Extra tags (GCP: labels) as comma-separated key=value pairs, e.g. team=data,env=prod.",
    ),
    Key(
        "credentials",
        "string",
        "",
        "How Airflow authenticates; empty means the cloud's default. aws: access-key (default; an IAM user "
        "and access key in the connection) or role (an IAM role trusting roleTrustPrincipalArn, no secret). "
        "gcp: key (default; a service account and JSON key in the connection) or workload-identity (the role "
        "is granted to workloadIdentityMember, no secret). azure: sas (default; a container-scoped service SAS "
        "until sasExpiry), identity (a managed identity with Storage Blob Data Contributor on the container, no "
        "secret) or account-key (opt-in, broad: the account key controls every container).",
    ),
    Key(
        "endpointUrl",
        "string",
        "",
        "Storage endpoint the Airflow connection uses instead of the cloud's default (an S3-compatible store, "
        "a private endpoint, an emulator); must be https unless allowHttpEndpoint.",
    ),
    Key(
        "allowHttpEndpoint",
        "boolean",
        False,
        "Allow a plain-http endpointUrl (emulators only; the bucket stays TLS-only on the real cloud).",
    ),
    Key(
        "deployments",
        "array",
        [],
        "Names of the Airflow deployments this stack serves (e.g. [sales, ml]); each gets its own prefix "
        "<prefix>/<name> (azure: its own container), its own credential limited to it and its own airflow_env. "
        "Empty: one deployment, as without this setting.",
    ),
    Key(
        "credentialGeneration",
        "integer",
        1,
        "Generation of the credential the env carries (access key, service account key or SAS); raise it by "
        "one to rotate: pulumi up creates the new credential and emits it in airflow_env.",
    ),
    Key(
        "keepPreviousCredential",
        "boolean",
        False,
        "Keep the previous generation's access key or service account key working while the new env is rolled "
        "out; set it back to false and run pulumi up to delete it (aws and gcp; azure's previous SAS lives on "
        "until its expiry or until the account key it was signed with is renewed).",
    ),
    Key(
        "region",
        "string",
        "",
        "AWS region of the bucket; empty takes the stack's aws:region, else us-east-1.",
        ("aws",),
    ),
    Key(
        "userName",
        "string",
        "",
        "IAM user name (credentials=access-key); empty derives <project>-<stack>, unique per stack "
        "(IAM names are unique per account).",
        ("aws",),
    ),
    Key(
        "roleName",
        "string",
        "",
        "IAM role name (credentials=role); empty derives <project>-<stack>, unique per stack.",
        ("aws",),
    ),
    Key(
        "roleTrustPrincipalArn",
        "string",
        "",
        "IAM principal ARN allowed to assume the role, e.g. the "
        "deployment's workload identity role (required when credentials=role).",
        ("aws",),
    ),
    Key("kmsKeyArn", "string", "", "KMS key ARN for SSE-KMS; empty uses SSE-S3 (AES256).", ("aws",)),
    Key(
        "project",
        "string",
        "",
        "GCP project id that owns the bucket; empty takes the stack's gcp:project (one of the two is required).",
        ("gcp",),
    ),
    Key(
        "location",
        "string",
        "",
        "gcp: bucket location, a multi-region (US, EU, ASIA), dual- or single region (default US); "
        "azure: region such as westeurope (default eastus).",
        ("gcp", "azure"),
    ),
    Key(
        "serviceAccountId",
        "string",
        "",
        "Service account id, 6-30 characters (credentials=key); empty derives one from <project>-<stack>, "
        "unique per stack (ids are unique per GCP project).",
        ("gcp",),
    ),
    Key(
        "workloadIdentityMember",
        "string",
        "",
        "IAM member granted access when credentials=workload-identity, e.g. "
        "serviceAccount:airflow@my-project.iam.gserviceaccount.com or a principal:// workload identity.",
        ("gcp",),
    ),
    Key(
        "kmsKeyName",
        "string",
        "",
        "Cloud KMS key (projects/.../locations/.../keyRings/.../cryptoKeys/...) for CMEK; empty uses "
        "Google-managed encryption. The GCS service agent needs encrypter/decrypter on it.",
        ("gcp",),
    ),
    Key(
        "softDeleteDays",
        "integer",
        0,
        "Days GCS keeps deleted or overwritten XComs restorable (and billed); 0 turns soft delete off, otherwise 7-90.",
        ("gcp",),
    ),
    Key(
        "resourceGroupName",
        "string",
        "",
        "Existing resource group to deploy into; empty creates a new one.",
        ("azure",),
    ),
    Key(
        "storageAccountName",
        "string",
        "",
        "Storage account name, 3-24 lowercase letters and digits, globally unique; empty auto-names it.",
        ("azure",),
    ),
    Key(
        "skuName",
        "string",
        "Standard_LRS",
        "Storage account SKU: Standard_LRS, Standard_ZRS, Standard_GRS, Standard_RAGRS, Standard_GZRS or "
        "Standard_RAGZRS.",
        ("azure",),
    ),
    Key(
        "sasExpiry",
        "string",
        "",
        "When the SAS stops working (credentials=sas, required), e.g. 2027-06-30 or 2027-06-30T12:00:00Z; "
        "change it and run `pulumi up` to rotate the SAS.",
        ("azure",),
    ),
    Key(
        "identityPrincipalId",
        "string",
        "",
        "credentials=identity: object id of an existing principal (e.g. a workload identity) to grant; "
        "empty creates a user-assigned managed identity.",
        ("azure",),
    ),
    Key(
        "identityPrincipalType",
        "string",
        "ServicePrincipal",
        "Type of identityPrincipalId: ServicePrincipal (managed or workload identity), User or Group; Azure "
        "rejects a role assignment whose type does not match the principal.",
        ("azure",),
    ),
)
KEYS_BY_NAME: Mapping[str, Key] = {key.name: key for key in KEYS}

AZURE_PRINCIPAL_TYPES = ("ServicePrincipal", "User", "Group")
# Deployment names become a prefix segment, part of IAM user/role names, service account ids and Azure
# container names: lowercase letters, digits and single hyphens fit all of them.
_DEPLOYMENT_RE = re.compile(r"^[a-z](?:[a-z0-9]|-(?=[a-z0-9])){0,39}$")
MAX_DEPLOYMENTS = 100  # GCP's default quota is 100 service accounts per project; Azure's 100 lifecycle rules
DEPLOYMENT_PLACEHOLDER = "{deployment}"
AZURE_CONTAINER_MAX = 63
# Limits of the names this stack derives per stack (see derived_name).
AWS_IAM_NAME_MAX = 64
GCP_ACCOUNT_ID_MAX = 30
# Stack config of the providers that the settings fall back to (the default providers read the same keys).
PROVIDER_DEFAULT_KEYS = ("aws:region", "gcp:project")
GCS_SOFT_DELETE_DAYS = range(7, 91)  # GCS accepts 0 (off) or 7-90 days

CREDENTIALS: Mapping[str, tuple[str, ...]] = {
    "aws": ("access-key", "role"),
    "gcp": ("key", "workload-identity"),
    "azure": ("sas", "identity", "account-key"),
}
_INT_RE = re.compile(r"^-?\d+$")
_AWS_REGION_RE = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d{1,2}$")
_AWS_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_AWS_BUCKET_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_AWS_BUCKET_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", "--x-s3", "--table-s3")
_IAM_NAME_RE = re.compile(r"^[A-Za-z0-9+=,.@_-]{1,64}$")
_PRINCIPAL_ARN_RE = re.compile(r"^arn:aws(-[a-z]+)*:iam::\d{12}:(root|role/[\w+=,.@/-]+|user/[\w+=,.@/-]+)$")
_KMS_ARN_RE = re.compile(r"^arn:aws(-[a-z]+)*:kms:[a-z0-9-]+:\d{12}:key/[A-Za-z0-9-]+$")
_TAG_RE = re.compile(r"^[\w .:/=+\-@]*$")
_AZURE_TAG_NAME_FORBIDDEN = set("<>%&\\?/")
_GCS_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{1,61}[a-z0-9]$")
_GCS_LOCATION_RE = re.compile(r"^(US|EU|ASIA|ASIA1|EUR4|EUR5|EUR7|EUR8|NAM4|[a-z]+-[a-z]+\d{1,2})$", re.IGNORECASE)
_GCP_PROJECT_RE = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_GCP_ACCOUNT_ID_RE = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_GCP_MEMBER_RE = re.compile(
    r"^(serviceAccount:[\w.+-]+@[\w.-]+|user:[\w.+-]+@[\w.-]+|group:[\w.+-]+@[\w.-]+|principal(Set)?://\S+)$"
)
_GCP_KMS_RE = re.compile(r"^projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+$")
_GCP_LABEL_KEY_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_GCP_LABEL_VALUE_RE = re.compile(r"^[a-z0-9_-]{0,63}$")
_AZURE_CONTAINER_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_AZURE_ACCOUNT_RE = re.compile(r"^[a-z0-9]{3,24}$")
_AZURE_LOCATION_RE = re.compile(r"^[a-z][a-z0-9]*$")
_AZURE_GROUP_RE = re.compile(r"^[\w.()-]{0,89}[\w()-]$")
_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class SettingsError(ValueError):
    """One message naming every bad setting and what is allowed, raised before any resource exists."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid settings:\n" + "\n".join(f"  - {problem}" for problem in problems))


@dataclass(frozen=True)
class AwsSettings:
    region: str
    user_name: str
    role_name: str
    role_trust_principal_arn: str | None
    kms_key_arn: str | None


@dataclass(frozen=True)
class GcpSettings:
    project: str
    location: str
    service_account_id: str
    workload_identity_member: str | None
    kms_key_name: str | None
    soft_delete_days: int = 0


@dataclass(frozen=True)
class AzureSettings:
    location: str
    resource_group_name: str | None
    storage_account_name: str | None
    sku_name: str
    sas_expiry: str | None  # ISO 8601 UTC, e.g. 2027-06-30T00:00:00Z
    identity_principal_id: str | None
    identity_principal_type: str = "ServicePrincipal"


@dataclass(frozen=True)
class Settings:
    """Validated settings. With ``deployments`` empty the stack serves one deployment, exactly as before
    deployments existed; otherwise each name gets its own prefix (azure: container), credential and env."""

    cloud: str
    conn_id: str
    bucket_name: str | None
    prefix: str
    threshold: int
    compression: str | None
    backend: str
    expiry_days: int
    force_destroy: bool
    credentials: str
    endpoint_url: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    aws: AwsSettings | None = None
    gcp: GcpSettings | None = None
    azure: AzureSettings | None = None
    deployments: tuple[str, ...] = ()
    credential_generation: int = 1
    keep_previous_credential: bool = False

    @property
    def describes_credential(self) -> bool:
        """Whether the env also names its deployment and credential (for `xcom-backend verify`).

        Off for a stack without deployments that never rotated, whose env stays what it always was.
        """
        return bool(self.deployments) or self.credential_generation > 1

    def deployment_prefix(self, deployment: str | None) -> str:
        """Where a deployment's XComs live: ``<prefix>/<name>`` (azure: ``<prefix>`` in its own container)."""
        if deployment is None or self.cloud == "azure":
            return self.prefix
        return f"{self.prefix}/{deployment}"

    def units(self) -> list[str | None]:
        """The deployments to declare; ``[None]`` is the single deployment of a stack without the setting."""
        return list(self.deployments) or [None]


def _qualified(name: str) -> str:
    return f"{PROJECT}:{name}"


class _Reader:
    """Collects every problem instead of stopping at the first, so one run shows them all."""

    def __init__(self, raw: Mapping[str, Any], name_of: Any = _qualified):
        self.raw = raw
        self.problems: list[str] = []
        self.name_of = name_of  # how a problem names the setting: project:key, or a component's argument

    def fail(self, name: str, message: str) -> None:
        self.problems.append(f"{self.name_of(name)}: {message}")

    def value(self, name: str) -> Any:
        value = self.raw.get(name)
        return KEYS_BY_NAME[name].default if value is None else value

    def string(self, name: str) -> str:
        value = self.value(name)
        if not isinstance(value, str):
            self.fail(name, f"must be a string, got {value!r}")
            return str(KEYS_BY_NAME[name].default)
        return value.strip()

    def integer(self, name: str, minimum: int) -> int:
        value = self.value(name)
        if isinstance(value, bool) or not (isinstance(value, int) or _INT_RE.match(str(value).strip())):
            self.fail(name, f"must be a whole number >= {minimum}, got {value!r}")
            return int(KEYS_BY_NAME[name].default)
        number = int(value)
        if number < minimum:
            self.fail(name, f"must be >= {minimum}, got {number}")
        return number

    def boolean(self, name: str) -> bool:
        value = self.value(name)
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text not in ("true", "false"):
            self.fail(name, f"must be true or false, got {value!r}")
            return bool(KEYS_BY_NAME[name].default)
        return text == "true"

    def check(self, name: str, check: Any, value: Any) -> Any:
        """Run a contract validator, turning its error into a problem naming the setting."""
        try:
            return check(value)
        except contract.ContractError as err:
            self.fail(name, str(err))
            return None


def derived_name(project: str, stack: str, *, max_length: int, lowercase: bool = False) -> str:
    """``<project>-<stack>``, cut to ``max_length`` with a hash of the whole kept, so every stack gets its own.

    IAM user/role names are unique per AWS account and service account ids per GCP project: a fixed default
    makes the second stack (dev next to prod) fail with EntityAlreadyExists / 409.
    """
    full = f"{project}-{stack}"
    allowed = r"[^a-z0-9-]" if lowercase else r"[^A-Za-z0-9+=,.@_-]"
    name = re.sub(allowed, "-", full.lower() if lowercase else full)
    name = re.sub(r"-{2,}", "-", name).strip("-")
    if len(name) > max_length:
        digest = hashlib.sha256(full.encode()).hexdigest()[:6]
        name = f"{name[: max_length - len(digest) - 1].rstrip('-')}-{digest}"
    return name


def _parse_tags(reader: _Reader) -> dict[str, str]:
    """``team=data,env=prod`` from stack config, or a mapping from the component."""
    tags: dict[str, str] = {}
    value = reader.value("tags")
    if isinstance(value, Mapping):
        pairs = [(str(key).strip(), "=", str(item).strip()) for key, item in value.items()]
    else:
        text = reader.string("tags")
        pairs = [pair.partition("=") for pair in text.split(",")] if text else []
    for tag_key, sep, tag_value in pairs:
        pair = f"{tag_key}{sep}{tag_value}"
        tag_key, tag_value = tag_key.strip(), tag_value.strip()
        if not sep or not tag_key:
            reader.fail("tags", f"{pair.strip()!r} is not key=value (use e.g. team=data,env=prod)")
        elif len(tag_key) > 128 or len(tag_value) > 256 or not _TAG_RE.match(tag_key + tag_value):
            reader.fail(
                "tags", f"{pair.strip()!r}: keys are 1-128 and values 0-256 letters, digits, spaces or _.:/=+-@"
            )
        elif tag_key.lower().startswith("aws:"):
            reader.fail("tags", f"{tag_key!r}: the aws: prefix is reserved")
        elif tag_key in tags:
            reader.fail("tags", f"{tag_key!r} is given twice")
        else:
            tags[tag_key] = tag_value
    return tags


def validate_aws_bucket_name(name: str) -> str:
    if not _AWS_BUCKET_RE.match(name):
        raise contract.ContractError(
            f"{name!r} is not a valid S3 bucket name: use 3-63 lowercase letters, digits and hyphens, "
            "starting and ending with a letter or digit (dots are refused: they break TLS on "
            "virtual-hosted-style endpoints, and this bucket only accepts TLS)"
        )
    if name.startswith(_AWS_BUCKET_RESERVED_PREFIXES) or name.endswith(_AWS_BUCKET_RESERVED_SUFFIXES):
        raise contract.ContractError(f"{name!r} uses a prefix or suffix S3 reserves")
    return name


def _parse_aws(reader: _Reader, credentials: str, provider: Mapping[str, str], stack: str, project: str) -> AwsSettings:
    region = reader.string("region")
    source = ""
    if not region:
        region, source = provider.get("aws:region") or "us-east-1", " (from the stack's aws:region)"
    if not _AWS_REGION_RE.match(region):
        reader.fail("region", f"{region!r}{source} is not an AWS region name such as us-east-1 or eu-central-1")
    default_name = derived_name(project, stack, max_length=AWS_IAM_NAME_MAX)
    user_name = reader.string("userName") or default_name
    role_name = reader.string("roleName") or default_name
    for name, value in (("userName", user_name), ("roleName", role_name)):
        if not _IAM_NAME_RE.match(value):
            reader.fail(name, f"{value!r} is not a valid IAM name (1-64 letters, digits or +=,.@_-)")
    principal = reader.string("roleTrustPrincipalArn") or None
    if credentials == "role" and not principal:
        reader.fail("roleTrustPrincipalArn", "is required when credentials=role (the principal that assumes it)")
    if principal and not _PRINCIPAL_ARN_RE.match(principal.replace(DEPLOYMENT_PLACEHOLDER, "x")):
        reader.fail("roleTrustPrincipalArn", f"{principal!r} is not an IAM role, user or account-root ARN")
    if principal and credentials != "role":
        reader.fail("roleTrustPrincipalArn", "only applies with credentials=role")
    kms_key_arn = reader.string("kmsKeyArn") or None
    if kms_key_arn and not _KMS_ARN_RE.match(kms_key_arn):
        reader.fail("kmsKeyArn", f"{kms_key_arn!r} is not a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>)")
    return AwsSettings(region, user_name, role_name, principal, kms_key_arn)


def validate_gcs_bucket_name(name: str) -> str:
    if not _GCS_BUCKET_RE.match(name):
        raise contract.ContractError(
            f"{name!r} is not a valid GCS bucket name: use 3-63 lowercase letters, digits, hyphens and "
            "underscores, starting and ending with a letter or digit (dotted, domain-named buckets are refused)"
        )
    if name.startswith("goog") or "google" in name or "g00gle" in name:
        raise contract.ContractError(f"{name!r}: GCS refuses names starting with 'goog' or containing 'google'")
    return name


def _parse_gcp(
    reader: _Reader,
    credentials: str,
    tags: Mapping[str, str],
    provider: Mapping[str, str],
    stack: str,
    pulumi_project: str,
) -> GcpSettings:
    project = reader.string("project") or provider.get("gcp:project", "")
    if not project:
        reader.fail("project", "is required for gcp (the project id that owns the bucket), or set gcp:project")
    elif not _GCP_PROJECT_RE.match(project):
        reader.fail("project", f"{project!r} is not a GCP project id (6-30 lowercase letters, digits, hyphens)")
    location = reader.string("location") or DEFAULT_LOCATIONS["gcp"]
    if not _GCS_LOCATION_RE.match(location):
        reader.fail("location", f"{location!r} is not a GCS location such as US, EU, ASIA, NAM4 or europe-west1")
    account_id = reader.string("serviceAccountId") or derived_name(
        pulumi_project, stack, max_length=GCP_ACCOUNT_ID_MAX, lowercase=True
    )
    if not _GCP_ACCOUNT_ID_RE.match(account_id):
        reader.fail(
            "serviceAccountId",
            f"{account_id!r} is not a service account id (6-30 lowercase letters, "
            "digits, hyphens; starting with a letter)",
        )
    member = reader.string("workloadIdentityMember") or None
    if credentials == "workload-identity" and not member:
        reader.fail("workloadIdentityMember", "is required when credentials=workload-identity")
    if member and not _GCP_MEMBER_RE.match(member.replace(DEPLOYMENT_PLACEHOLDER, "x")):
        reader.fail(
            "workloadIdentityMember",
            f"{member!r} is not an IAM member: use serviceAccount:EMAIL, "
            "principal://..., principalSet://..., user:EMAIL or group:EMAIL",
        )
    if member and credentials != "workload-identity":
        reader.fail("workloadIdentityMember", "only applies with credentials=workload-identity")
    kms_key_name = reader.string("kmsKeyName") or None
    if kms_key_name and not _GCP_KMS_RE.match(kms_key_name):
        reader.fail("kmsKeyName", f"{kms_key_name!r} is not projects/P/locations/L/keyRings/R/cryptoKeys/K")
    soft_delete_days = reader.integer("softDeleteDays", 0)
    if soft_delete_days and soft_delete_days not in GCS_SOFT_DELETE_DAYS:
        reader.fail("softDeleteDays", f"must be 0 (off) or 7-90 (what GCS accepts), got {soft_delete_days}")
    for label, value in tags.items():
        if not _GCP_LABEL_KEY_RE.match(label) or not _GCP_LABEL_VALUE_RE.match(value):
            reader.fail(
                "tags",
                f"{label}={value}: GCP labels need lowercase keys starting with a letter and "
                "values of lowercase letters, digits, _ or - (at most 63 each)",
            )
    return GcpSettings(project, location, account_id, member, kms_key_name, soft_delete_days)


def validate_azure_container_name(name: str) -> str:
    if not _AZURE_CONTAINER_RE.match(name) or "--" in name:
        raise contract.ContractError(
            f"{name!r} is not a valid blob container name: use 3-63 lowercase letters, digits and single "
            "hyphens, starting and ending with a letter or digit"
        )
    return name


def _parse_sas_expiry(reader: _Reader, credentials: str, now: datetime) -> str | None:
    text = reader.string("sasExpiry")
    if not text:
        if credentials == "sas":
            example = (now + timedelta(days=90)).date().isoformat()
            reader.fail("sasExpiry", f"is required when credentials=sas: a date such as {example} (the SAS stops then)")
        return None
    if credentials != "sas":
        reader.fail("sasExpiry", "only applies with credentials=sas")
        return None
    try:
        expiry = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        reader.fail("sasExpiry", f"{text!r} is not a date or date-time such as 2027-06-30 or 2027-06-30T12:00:00Z")
        return None
    if expiry.tzinfo is None:
        expiry = expiry.replace(tzinfo=timezone.utc)
    if expiry <= now:
        reader.fail("sasExpiry", f"{text!r} is in the past; choose a future date to issue (or rotate) the SAS")
        return None
    return expiry.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_azure(reader: _Reader, credentials: str, now: datetime, tags: Mapping[str, str]) -> AzureSettings:
    location = reader.string("location") or DEFAULT_LOCATIONS["azure"]
    if not _AZURE_LOCATION_RE.match(location):
        reader.fail("location", f"{location!r} is not an Azure region name such as eastus or westeurope")
    group = reader.string("resourceGroupName") or None
    if group and not _AZURE_GROUP_RE.match(group):
        reader.fail("resourceGroupName", f"{group!r} is not a resource group name (1-90 letters, digits, ._-())")
    account = reader.string("storageAccountName") or None
    if account and not _AZURE_ACCOUNT_RE.match(account):
        reader.fail(
            "storageAccountName",
            f"{account!r} is not allowed: use 3-24 lowercase letters and digits (it must also be globally unique)",
        )
    sku = reader.string("skuName")
    if sku not in AZURE_SKUS:
        reader.fail("skuName", f"{sku!r} is not allowed: use one of {', '.join(AZURE_SKUS)}")
    principal = reader.string("identityPrincipalId") or None
    if principal and not _UUID_RE.match(principal):
        reader.fail("identityPrincipalId", f"{principal!r} is not an object id (a GUID)")
    if principal and credentials != "identity":
        reader.fail("identityPrincipalId", "only applies with credentials=identity")
    principal_type = reader.string("identityPrincipalType")
    if principal_type not in AZURE_PRINCIPAL_TYPES:
        reader.fail(
            "identityPrincipalType", f"{principal_type!r} is not allowed: use one of {', '.join(AZURE_PRINCIPAL_TYPES)}"
        )
    elif principal_type != KEYS_BY_NAME["identityPrincipalType"].default and not principal:
        reader.fail(
            "identityPrincipalType", "only applies with identityPrincipalId (a created identity is a service principal)"
        )
    for tag in tags:
        if forbidden := sorted(set(tag) & _AZURE_TAG_NAME_FORBIDDEN):
            reader.fail("tags", f"{tag!r}: Azure tag names may not contain {' '.join(forbidden)}")
    expiry = _parse_sas_expiry(reader, credentials, now)
    return AzureSettings(location, group, account, sku, expiry, principal, principal_type)


def _parse_deployments(reader: _Reader) -> tuple[str, ...]:
    """A list of names: a YAML list in the stack file reaches the program as JSON text; a component passes a
    Python list; "a,b" is accepted too."""
    value = reader.value("deployments")
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                reader.fail("deployments", f"{text!r} is not a list of names such as [sales, ml]")
                return ()
        else:
            value = [part.strip() for part in text.split(",")] if text else []
    if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
        reader.fail("deployments", f"must be a list of names such as [sales, ml], got {value!r}")
        return ()
    names = [item.strip() for item in value]
    for name in names:
        if not _DEPLOYMENT_RE.match(name):
            reader.fail(
                "deployments",
                f"{name!r} is not a deployment name: 1-40 lowercase letters, digits and single hyphens, "
                "starting with a letter and ending with a letter or digit",
            )
    if twice := sorted({name for name in names if names.count(name) > 1}):
        reader.fail("deployments", f"{', '.join(twice)} given more than once")
    if len(names) > MAX_DEPLOYMENTS:
        reader.fail("deployments", f"at most {MAX_DEPLOYMENTS} per stack (got {len(names)}); split them over stacks")
    return tuple(names)


# Credential modes with a long-lived secret, the only ones there is anything to rotate in.
ROTATABLE = {"aws": ("access-key",), "gcp": ("key",), "azure": ("sas", "account-key")}


def _parse_rotation(reader: _Reader, cloud: str, credentials: str) -> tuple[int, bool]:
    generation = reader.integer("credentialGeneration", 1)
    keep_previous = reader.boolean("keepPreviousCredential")
    rotatable = credentials in ROTATABLE[cloud]
    if generation > 1 and not rotatable:
        reader.fail(
            "credentialGeneration",
            f"credentials={credentials} holds no long-lived secret, so there is nothing to rotate; "
            f"it applies with credentials={' or '.join(ROTATABLE[cloud])}",
        )
    if keep_previous and cloud == "azure":
        reader.fail(
            "keepPreviousCredential",
            "is not needed on azure: the previous SAS (or account key) keeps working until its sasExpiry or until "
            "the account key it was signed with is renewed (see docs/rotation.md)",
        )
    elif keep_previous and generation < 2:
        reader.fail("keepPreviousCredential", "needs credentialGeneration >= 2 (generation 1 has no previous one)")
    return generation, keep_previous


def _check_per_deployment_principal(reader: _Reader, name: str, value: str | None, deployments: tuple[str, ...]):
    """A given principal must be one per deployment, or each deployment's credential would reach the others'."""
    if not value:
        return
    if deployments and DEPLOYMENT_PLACEHOLDER not in value:
        reader.fail(
            name,
            f"with deployments, each deployment needs its own principal: put {DEPLOYMENT_PLACEHOLDER} in it "
            f"(replaced by each name), or one principal could read every deployment's XComs",
        )
    elif not deployments and DEPLOYMENT_PLACEHOLDER in value:
        reader.fail(name, f"{DEPLOYMENT_PLACEHOLDER} only applies with deployments")


def _parse_endpoint(reader: _Reader) -> str | None:
    endpoint_url = reader.string("endpointUrl") or None
    allow_http = reader.boolean("allowHttpEndpoint")
    if endpoint_url:
        scheme = endpoint_url.split("://", 1)[0] if "://" in endpoint_url else ""
        if scheme not in ("https", "http") or not endpoint_url.split("://", 1)[1]:
            reader.fail("endpointUrl", f"{endpoint_url!r} is not an http(s) URL")
        elif scheme == "http" and not allow_http:
            reader.fail(
                "endpointUrl",
                f"{endpoint_url!r} is plain http; use https, or set allowHttpEndpoint=true for an emulator",
            )
    return endpoint_url


def parse(
    raw: Mapping[str, Any],
    *,
    now: datetime | None = None,
    stack: str = "dev",
    provider: Mapping[str, str] | None = None,
    name_of: Any = _qualified,
    project: str = PROJECT,
) -> Settings:
    """Validate raw config (keys without the project prefix); raise SettingsError listing every problem.

    ``project`` and ``stack`` name the Pulumi stack (principal names are derived from them); ``provider``
    holds the stack's provider config (``aws:region``, ``gcp:project``) that empty settings fall back to;
    ``name_of`` says how a problem names a key (``project:key`` for stack config, its argument for a component).
    """
    provider = provider or {}
    reader = _Reader(raw, name_of)
    now = now or datetime.now(timezone.utc)
    for name in sorted(set(raw) - set(KEYS_BY_NAME)):
        reader.fail(name, f"unknown setting; known settings: {', '.join(sorted(KEYS_BY_NAME))}")

    cloud = reader.string("cloud")
    if cloud not in CLOUDS:
        reader.fail("cloud", f"{cloud!r} is not allowed: use one of {', '.join(CLOUDS)}")
        raise SettingsError(reader.problems)
    if cloud not in IMPLEMENTED_CLOUDS:
        reader.fail("cloud", f"{cloud!r} is not implemented yet; use one of {', '.join(IMPLEMENTED_CLOUDS)}")
        raise SettingsError(reader.problems)
    for name in sorted(raw):
        key = KEYS_BY_NAME.get(name)
        # The Pulumi CLI fills in declared defaults, so only a value differing from it was set on purpose.
        if key and cloud not in key.clouds and raw[name] not in (None, "", key.default, str(key.default).lower()):
            reader.fail(name, f"applies to {', '.join(key.clouds)} only, not {cloud}")

    conn_id = reader.string("connectionId") or f"my_{cloud}_conn"
    reader.check("connectionId", contract.validate_conn_id, conn_id)
    bucket_name = reader.string("bucketName") or None
    if bucket_name:
        reader.check("bucketName", BUCKET_NAME_VALIDATORS[cloud], bucket_name)
    prefix = reader.string("prefix")
    reader.check("prefix", contract.validate_prefix, prefix)
    threshold = reader.integer("threshold", -1)
    compression = reader.check("compression", contract.validate_compression, reader.string("compression"))
    backend = reader.string("backend")
    if backend not in contract.BACKEND_CLASSES:
        reader.fail("backend", f"{backend!r} is not allowed: use one of {', '.join(contract.BACKEND_CLASSES)}")
    expiry_days = reader.integer("expiryDays", 0)
    force_destroy = reader.boolean("forceDestroy")
    tags = _parse_tags(reader)
    credentials = reader.string("credentials") or CREDENTIALS[cloud][0]
    if credentials not in CREDENTIALS[cloud]:
        reader.fail(
            "credentials", f"{credentials!r} is not allowed for {cloud}: use one of {', '.join(CREDENTIALS[cloud])}"
        )
    endpoint_url = _parse_endpoint(reader)
    deployments = _parse_deployments(reader)
    generation, keep_previous = _parse_rotation(reader, cloud, credentials)
    _check_per_deployment_principal(
        reader, "roleTrustPrincipalArn", reader.string("roleTrustPrincipalArn"), deployments
    )
    _check_per_deployment_principal(
        reader, "workloadIdentityMember", reader.string("workloadIdentityMember"), deployments
    )
    if deployments and cloud == "azure" and reader.string("identityPrincipalId"):
        reader.fail(
            "identityPrincipalId",
            "one principal for every deployment would let each read the others' containers; leave it empty with "
            "deployments (a managed identity is created per deployment)",
        )
    if deployments and cloud == "azure" and credentials == "account-key":
        reader.fail("credentials", "account-key cannot keep deployments apart (the key opens every container)")
    if deployments and cloud == "azure":
        for deployment in deployments:
            container = azure_container_name(reader.string("bucketName") or None, deployment)
            reader.check("deployments", validate_azure_container_name, container)
    aws = _parse_aws(reader, credentials, provider, stack, project) if cloud == "aws" else None
    gcp = _parse_gcp(reader, credentials, tags, provider, stack, project) if cloud == "gcp" else None
    azure = _parse_azure(reader, credentials, now, tags) if cloud == "azure" else None
    if cloud == "azure" and credentials == "identity" and endpoint_url:
        reader.fail("endpointUrl", "is not supported with credentials=identity (adlfs then ignores the endpoint)")

    if reader.problems:
        raise SettingsError(reader.problems)
    return Settings(
        cloud=cloud,
        conn_id=conn_id,
        bucket_name=bucket_name,
        prefix=prefix,
        threshold=threshold,
        compression=compression,
        backend=backend,
        expiry_days=expiry_days,
        force_destroy=force_destroy,
        credentials=credentials,
        endpoint_url=endpoint_url,
        tags=tags,
        aws=aws,
        gcp=gcp,
        azure=azure,
        deployments=deployments,
        credential_generation=generation,
        keep_previous_credential=keep_previous,
    )


def credential_generations(settings: Settings) -> list[int]:
    """The generations of the rotatable credential to declare: the current one, and the previous one while
    keepPreviousCredential holds it (AWS allows two access keys per user: exactly these two)."""
    current = settings.credential_generation
    return [current - 1, current] if settings.keep_previous_credential else [current]


def generation_name(logical_name: str, generation: int) -> str:
    """Generation 1 keeps the logical name the credential always had; later ones are new resources."""
    return logical_name if generation == 1 else f"{logical_name}-g{generation}"


def deployment_name(base: str, deployment: str | None, *, max_length: int, lowercase: bool = False) -> str:
    """A principal's or container's name for one deployment: ``<base>-<deployment>``.

    Too long for the cloud's limit, the base is cut and a hash of it added, keeping the deployment's name
    readable at the end (``airflow-xcom-backend-p-1a2b3c-sales``); a deployment name too long even for that
    gets derived_name's cut. The single deployment of a stack without ``deployments`` keeps ``base`` itself.
    """
    if deployment is None:
        return base
    full = derived_name(base, deployment, max_length=10_000, lowercase=lowercase)
    if len(full) <= max_length:
        return full
    digest = hashlib.sha256(base.encode()).hexdigest()[:6]
    room = max_length - len(deployment) - len(digest) - 2
    if room < 3:
        return derived_name(base, deployment, max_length=max_length, lowercase=lowercase)
    head = derived_name(base, "", max_length=10_000, lowercase=lowercase)[:room].rstrip("-")
    return f"{head}-{digest}-{deployment}"


def azure_container_name(bucket_name: str | None, deployment: str) -> str:
    """Each deployment's own container: ``<bucketName or xcom>-<deployment>`` (unique within the account)."""
    return deployment_name(bucket_name or "xcom", deployment, max_length=AZURE_CONTAINER_MAX, lowercase=True)


BUCKET_NAME_VALIDATORS = {
    "aws": validate_aws_bucket_name,
    "gcp": validate_gcs_bucket_name,
    "azure": validate_azure_container_name,
}
