"""Run the stacks' Pulumi program without the Pulumi CLI, under Pulumi's own mock runtime.

The unit tests use RecordingMocks to assert on declared inputs; the demo and the integration tests use a
subclass whose hooks create each resource in a local emulator. Either way the program code is exactly
what `pulumi up` runs (stacks.program.main, which __main__.py calls).
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.runtime import settings as runtime_settings

from stacks import program
from stacks.settings import PROJECT

FAKE_ACCOUNT = "123456789012"
FAKE_SUBSCRIPTION = "00000000-0000-0000-0000-00000000cafe"


@dataclass
class DeclaredResource:
    type: str
    name: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]


@dataclass
class ProgramRun:
    resources: list[DeclaredResource]
    outputs: dict[str, Any]
    secret_outputs: set[str] = field(default_factory=set)

    def of_type(self, type_token: str) -> list[DeclaredResource]:
        return [resource for resource in self.resources if resource.type == type_token]

    def one(self, type_token: str) -> DeclaredResource:
        found = self.of_type(type_token)
        assert len(found) == 1, f"expected one {type_token}, declared {len(found)}"
        return found[0]


def auto_name(logical_name: str) -> str:
    """Pulumi's auto-naming: the logical name plus a random 7-hex-digit suffix."""
    return f"{logical_name}-{secrets.token_hex(4)[:7]}"


class RecordingMocks(pulumi.runtime.Mocks):
    """Records every declared resource and answers with plausible provider-computed outputs."""

    def __init__(self) -> None:
        self.resources: list[DeclaredResource] = []
        self._lock = threading.Lock()

    def record(self, args: pulumi.runtime.MockResourceArgs, outputs: dict[str, Any]) -> None:
        with self._lock:
            self.resources.append(DeclaredResource(args.typ, args.name, dict(args.inputs), outputs))

    def compute(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        inputs = dict(args.inputs)
        typ, name = args.typ, args.name
        if typ == "aws:s3/bucket:Bucket":
            bucket = inputs.get("bucket") or auto_name(name)
            return bucket, {**inputs, "bucket": bucket, "arn": f"arn:aws:s3:::{bucket}"}
        if typ == "aws:iam/policy:Policy":
            policy_name = inputs.get("name") or auto_name(name)
            arn = f"arn:aws:iam::{FAKE_ACCOUNT}:policy/{policy_name}"
            return arn, {**inputs, "name": policy_name, "arn": arn}
        if typ in ("aws:iam/user:User", "aws:iam/role:Role"):
            principal = inputs.get("name") or auto_name(name)
            kind = "user" if typ.endswith("User") else "role"
            return principal, {**inputs, "name": principal, "arn": f"arn:aws:iam::{FAKE_ACCOUNT}:{kind}/{principal}"}
        if typ == "aws:iam/accessKey:AccessKey":
            key_id = "AKIA" + secrets.token_hex(8).upper()
            return key_id, {**inputs, "id": key_id, "secret": secrets.token_urlsafe(30)}
        if typ == "gcp:storage/bucket:Bucket":
            bucket = inputs.get("name") or auto_name(name)
            return bucket, {**inputs, "name": bucket, "url": f"gs://{bucket}"}
        if typ == "gcp:serviceaccount/account:Account":
            email = f"{inputs['accountId']}@{inputs['project']}.iam.gserviceaccount.com"
            return f"projects/{inputs['project']}/serviceAccounts/{email}", {
                **inputs,
                "email": email,
                "name": f"projects/{inputs['project']}/serviceAccounts/{email}",
            }
        if typ == "gcp:serviceaccount/key:Key":
            key_id = secrets.token_hex(20)
            key = {"type": "service_account", "private_key_id": key_id, "private_key": "-----BEGIN PRIVATE KEY-----"}
            encoded = base64.b64encode(json.dumps(key).encode()).decode()
            return key_id, {**inputs, "name": key_id, "privateKey": encoded}
        if typ.startswith("azure-native:"):
            return self._azure(typ, name, inputs)
        return f"{name}-id", inputs

    def _azure(self, typ: str, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        group_id = f"/subscriptions/{FAKE_SUBSCRIPTION}/resourceGroups/{inputs.get('resourceGroupName')}"
        if typ == "azure-native:resources:ResourceGroup":
            group = inputs.get("resourceGroupName") or auto_name(name)
            return f"/subscriptions/{FAKE_SUBSCRIPTION}/resourceGroups/{group}", {**inputs, "name": group}
        if typ == "azure-native:storage:StorageAccount":
            account = inputs.get("accountName") or (name + secrets.token_hex(4))[:24]
            resource_id = f"{group_id}/providers/Microsoft.Storage/storageAccounts/{account}"
            return resource_id, {**inputs, "name": account, "id": resource_id}
        if typ == "azure-native:storage:BlobContainer":
            container = inputs.get("containerName") or auto_name(name)
            account_id = f"{group_id}/providers/Microsoft.Storage/storageAccounts/{inputs['accountName']}"
            return f"{account_id}/blobServices/default/containers/{container}", {**inputs, "name": container}
        if typ == "azure-native:managedidentity:UserAssignedIdentity":
            return f"{group_id}/identities/{name}", {
                **inputs,
                "principalId": str(uuid.uuid4()),
                "clientId": str(uuid.uuid4()),
            }
        return f"{name}-id", inputs

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        resource_id, outputs = self.compute(args)
        self.record(args, outputs)
        return resource_id, outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":  # noqa: S105 (a type token)
            return {"accountId": FAKE_ACCOUNT, "arn": f"arn:aws:iam::{FAKE_ACCOUNT}:user/deployer", "userId": "X"}
        if args.token == "azure-native:authorization:getClientConfig":  # noqa: S105 (a type token)
            return {
                "subscriptionId": FAKE_SUBSCRIPTION,
                "tenantId": str(uuid.UUID(int=1)),
                "clientId": str(uuid.UUID(int=2)),
                "objectId": str(uuid.UUID(int=3)),
            }
        if args.token == "azure-native:storage:listStorageAccountServiceSAS":  # noqa: S105
            fields = args.args
            token = (
                f"sv=2022-11-02&sr={fields['resource']}&sp={fields['permissions']}&spr={fields['protocols']}"
                f"&se={fields['sharedAccessExpiryTime']}&sig={secrets.token_urlsafe(32)}"
            )
            return {"serviceSasToken": token}
        if args.token == "azure-native:storage:listStorageAccountKeys":  # noqa: S105
            return {"keys": [{"keyName": "key1", "permissions": "FULL", "value": secrets.token_urlsafe(48)}]}
        return {}


@dataclass
class Deployed:
    """One resource created in an emulator, and how to delete it (the `pulumi destroy` counterpart)."""

    type: str
    physical_id: str
    delete: Callable[[], None]


class EmulatorMocks(RecordingMocks):
    """Base for mocks that really create resources in an emulator and can tear them down again."""

    def __init__(self, server: Any) -> None:
        super().__init__()
        self.server = server
        self.skipped: list[str] = []  # declared settings the emulator cannot apply, said plainly in the demo
        self.deployed: list[Deployed] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        if pulumi.runtime.is_dry_run():  # a preview creates nothing
            return super().new_resource(args)
        resource_id, outputs = self.deploy(args)
        self.record(args, outputs)
        return resource_id, outputs

    def deploy(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        """Create the resource in the emulator; by default it is only computed (the emulator lacks it)."""
        return self.compute(args)

    def _deployed(self, kind: str, physical_id: str, delete: Callable[[], None]) -> None:
        self.deployed.append(Deployed(kind, physical_id, delete))

    def destroy(self) -> list[str]:
        """Delete what was created, newest first, as `pulumi destroy` would; return what was deleted."""
        deleted = []
        while self.deployed:
            resource = self.deployed.pop()
            resource.delete()
            deleted.append(f"{resource.type} {resource.physical_id}")
        return deleted


def run_program(
    config: Mapping[str, Any], mocks: RecordingMocks, *, stack: str = "dev", preview: bool = False
) -> ProgramRun:
    """Run stacks.program.main with ``config`` (keys without the project prefix) and collect its outputs."""
    # A fresh loop per run: code run in between (asyncio.run in s3fs/Airflow) may have unset the current one.
    asyncio.set_event_loop(asyncio.new_event_loop())
    runtime_settings.set_root_resource(None)
    pulumi.runtime.set_all_config({f"{PROJECT}:{key}": _config_text(value) for key, value in config.items()})
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=preview)
    collected: dict[str, Any] = {}
    secret_names: set[str] = set()

    async def collect(outputs: dict[str, Any]) -> None:
        for name, value in outputs.items():
            output = pulumi.Output.from_input(value)
            collected[name] = await output.future()
            if await output.is_secret():
                secret_names.add(name)

    @pulumi.runtime.test
    def run() -> Any:
        return asyncio.ensure_future(collect(program.main()))

    run()
    return ProgramRun(resources=list(mocks.resources), outputs=collected, secret_outputs=secret_names)


def _config_text(value: Any) -> str:
    # Pulumi hands every config value to the program as a string (booleans in lower case).
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
