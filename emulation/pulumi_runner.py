"""Run the stacks' Pulumi program without the Pulumi CLI, under Pulumi's own mock runtime.

The unit tests use RecordingMocks to assert on declared inputs; the demo and the integration tests use a
subclass whose hooks create each resource in a local emulator. Either way the program code is exactly
what `pulumi up` runs (stacks.program.main, which __main__.py calls).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pulumi
from pulumi.runtime import settings as runtime_settings
from pulumi.runtime.mocks import MockMonitor

from stacks import program
from xcom_backend.pulumi.settings import PROJECT

FAKE_ACCOUNT = "123456789012"
FAKE_SUBSCRIPTION = "00000000-0000-0000-0000-00000000cafe"


@dataclass(frozen=True)
class Registration:
    """The resource options the engine sees for one resource (MockResourceArgs carries none of them)."""

    urn: str = ""
    parent: str = ""
    dependencies: frozenset[str] = frozenset()  # explicit depends_on plus every input's dependencies
    provider: str = ""  # an explicit provider reference; empty means the engine's default provider
    deleted_with: str = ""
    protect: bool = False
    retain_on_delete: bool = False


@dataclass
class DeclaredResource:
    type: str
    name: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    options: Registration = field(default_factory=Registration)
    id: str | None = None


class DestroyRefused(RuntimeError):
    """`pulumi destroy` refuses before deleting anything when a resource is protected."""


def destroy_plan(resources: list[DeclaredResource]) -> list[tuple[DeclaredResource, str]]:
    """What `pulumi destroy` does, in order: ``(resource, "delete" | "skip: ...")``.

    The engine's rules, as documented for resource options: dependents (children, resources depending on
    another through an input or depends_on) are deleted before what they depend on; a resource whose
    ``deleted_with`` target is deleted too, or that is ``retain_on_delete``, leaves state without a delete
    call; any protected resource makes the whole destroy fail before the first delete.
    """
    if protected := [r.name for r in resources if r.options.protect]:
        raise DestroyRefused(f"refusing to destroy protected resources: {', '.join(protected)}")
    by_urn = {r.options.urn: r for r in resources}
    needs: dict[str, set[str]] = {urn: set() for urn in by_urn}  # urn -> dependents that must go first
    for resource in resources:
        for target in {*resource.options.dependencies, resource.options.parent} & by_urn.keys():
            needs[target].add(resource.options.urn)
    order: list[DeclaredResource] = []
    remaining = list(reversed(resources))  # newest first among resources free to go
    while remaining:
        ready = next(r for r in remaining if not needs[r.options.urn] - {d.options.urn for d in order})
        order.append(ready)
        remaining.remove(ready)
    plan = []
    for resource in order:
        if resource.options.deleted_with in by_urn:
            plan.append((resource, f"skip: deleted with {by_urn[resource.options.deleted_with].name}"))
        elif resource.options.retain_on_delete:
            plan.append((resource, "skip: retained"))
        else:
            plan.append((resource, "delete"))
    return plan


@dataclass
class ProgramRun:
    resources: list[DeclaredResource]
    outputs: dict[str, Any]
    secret_outputs: set[str] = field(default_factory=set)
    config: dict[str, str] = field(default_factory=dict)  # the stack's whole config, provider keys included

    def provider_config(self, resource: DeclaredResource) -> dict[str, Any]:
        """The config the engine gives the provider of ``resource``.

        An explicit provider gets only its own inputs; the default provider of a package is configured from
        the stack's ``<package>:*`` keys (aws:profile, aws:assumeRoles, gcp:credentials, ...).
        """
        if resource.options.provider:
            urn = resource.options.provider.rsplit("::", 1)[0]  # a provider reference is <urn>::<id>
            (provider,) = [r for r in self.resources if r.options.urn == urn]
            return dict(provider.inputs)
        package = resource.type.split(":", 1)[0]
        return {k.split(":", 1)[1]: v for k, v in self.config.items() if k.startswith(f"{package}:")}

    def of_type(self, type_token: str) -> list[DeclaredResource]:
        return [resource for resource in self.resources if resource.type == type_token]

    def one(self, type_token: str) -> DeclaredResource:
        found = self.of_type(type_token)
        assert len(found) == 1, f"expected one {type_token}, declared {len(found)}"
        return found[0]


def auto_name(logical_name: str) -> str:
    """Pulumi's auto-naming: the logical name plus a random 7-hex-digit suffix."""
    return f"{logical_name}-{secrets.token_hex(4)[:7]}"


_registering = threading.local()  # the options of the resource being registered on this thread


class OptionsMonitor(MockMonitor):
    """Pulumi's mock monitor, also handing each resource's options (parent, dependencies, deleted_with,
    protect, provider) to the mocks, so tests can check what the engine would do with them."""

    def RegisterResource(self, request: Any) -> Any:
        dependencies = set(request.dependencies)
        for property_dependencies in request.propertyDependencies.values():
            dependencies.update(property_dependencies.urns)
        _registering.options = Registration(
            urn=self.make_urn(request.parent, request.type, request.name),
            parent=request.parent,
            dependencies=frozenset(dependencies),
            provider=request.provider,
            deleted_with=request.deletedWith,
            protect=bool(request.protect),
            retain_on_delete=bool(request.retainOnDelete),
        )
        try:
            return super().RegisterResource(request)
        finally:
            _registering.options = None


def current_registration() -> Registration:
    return getattr(_registering, "options", None) or Registration()


class RecordingMocks(pulumi.runtime.Mocks):
    """Records every declared resource and answers with plausible provider-computed outputs.

    With a ``seed``, every provider-made value (auto-names, key ids, secrets, principal ids) is derived from
    the seed and the resource's logical name instead of drawn at random, so two runs of the program can be
    compared resource by resource (what `pulumi preview` would plan between them) and against a recording.
    """

    def __init__(self, seed: str | None = None) -> None:
        self.resources: list[DeclaredResource] = []
        self._lock = threading.Lock()
        self.seed = seed

    def token(self, name: str, purpose: str, nbytes: int) -> str:
        """``nbytes`` of hex: random, or derived from the seed, the logical name and what it is for."""
        if self.seed is None:
            return secrets.token_hex(nbytes)
        material = f"{self.seed}/{name}/{purpose}".encode()
        digest = b"".join(hashlib.sha256(material + bytes([i])).digest() for i in range(nbytes // 32 + 1))
        return digest[:nbytes].hex()

    def auto_name(self, logical_name: str) -> str:
        return f"{logical_name}-{self.token(logical_name, 'auto-name', 4)[:7]}"

    def timestamp(self) -> str:
        """When a provider would say the resource was created: now, or a fixed time with a seed."""
        when = datetime(2026, 1, 1, tzinfo=timezone.utc) if self.seed is not None else datetime.now(timezone.utc)
        return when.strftime("%Y-%m-%dT%H:%M:%SZ")

    def uuid(self, name: str, purpose: str) -> str:
        return str(uuid.UUID(self.token(name, purpose, 16)))

    def record(
        self, args: pulumi.runtime.MockResourceArgs, outputs: dict[str, Any], resource_id: str | None = None
    ) -> None:
        resource = DeclaredResource(
            args.typ, args.name, dict(args.inputs), outputs, current_registration(), resource_id
        )
        with self._lock:
            self.resources.append(resource)

    def compute(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        inputs = dict(args.inputs)
        typ, name = args.typ, args.name
        if typ == "aws:s3/bucket:Bucket":
            bucket = inputs.get("bucket") or self.auto_name(name)
            return bucket, {**inputs, "bucket": bucket, "arn": f"arn:aws:s3:::{bucket}"}
        if typ == "aws:iam/policy:Policy":
            policy_name = inputs.get("name") or self.auto_name(name)
            arn = f"arn:aws:iam::{FAKE_ACCOUNT}:policy/{policy_name}"
            return arn, {**inputs, "name": policy_name, "arn": arn}
        if typ in ("aws:iam/user:User", "aws:iam/role:Role"):
            principal = inputs.get("name") or self.auto_name(name)
            kind = "user" if typ.endswith("User") else "role"
            return principal, {**inputs, "name": principal, "arn": f"arn:aws:iam::{FAKE_ACCOUNT}:{kind}/{principal}"}
        if typ == "aws:iam/accessKey:AccessKey":
            key_id = "AKIA" + self.token(name, "key-id", 8).upper()
            secret = self.token(name, "secret", 20)
            return key_id, {**inputs, "id": key_id, "secret": secret, "createDate": self.timestamp()}
        if typ == "gcp:storage/bucket:Bucket":
            bucket = inputs.get("name") or self.auto_name(name)
            return bucket, {**inputs, "name": bucket, "url": f"gs://{bucket}"}
        if typ == "gcp:serviceaccount/account:Account":
            email = f"{inputs['accountId']}@{inputs['project']}.iam.gserviceaccount.com"
            return f"projects/{inputs['project']}/serviceAccounts/{email}", {
                **inputs,
                "email": email,
                "name": f"projects/{inputs['project']}/serviceAccounts/{email}",
            }
        if typ == "gcp:serviceaccount/key:Key":
            key_id = self.token(name, "key-id", 20)
            key = {"type": "service_account", "private_key_id": key_id, "private_key": "-----BEGIN PRIVATE KEY-----"}
            encoded = base64.b64encode(json.dumps(key).encode()).decode()
            validity = {"validAfter": self.timestamp(), "validBefore": "9999-12-31T23:59:59Z"}
            return key_id, {**inputs, "name": key_id, "privateKey": encoded, **validity}
        if typ.startswith("azure-native:"):
            return self._azure(typ, name, inputs)
        return f"{name}-id", inputs

    def _azure(self, typ: str, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        group_id = f"/subscriptions/{FAKE_SUBSCRIPTION}/resourceGroups/{inputs.get('resourceGroupName')}"
        if typ == "azure-native:resources:ResourceGroup":
            group = inputs.get("resourceGroupName") or self.auto_name(name)
            return f"/subscriptions/{FAKE_SUBSCRIPTION}/resourceGroups/{group}", {**inputs, "name": group}
        if typ == "azure-native:storage:StorageAccount":
            account = inputs.get("accountName") or (name + self.token(name, "account", 4))[:24]
            resource_id = f"{group_id}/providers/Microsoft.Storage/storageAccounts/{account}"
            return resource_id, {**inputs, "name": account, "id": resource_id}
        if typ == "azure-native:storage:BlobContainer":
            container = inputs.get("containerName") or self.auto_name(name)
            account_id = f"{group_id}/providers/Microsoft.Storage/storageAccounts/{inputs['accountName']}"
            return f"{account_id}/blobServices/default/containers/{container}", {**inputs, "name": container}
        if typ == "azure-native:managedidentity:UserAssignedIdentity":
            return f"{group_id}/identities/{name}", {
                **inputs,
                "principalId": self.uuid(name, "principal-id"),
                "clientId": self.uuid(name, "client-id"),
            }
        return f"{name}-id", inputs

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        resource_id, outputs = self.compute(args)
        self.record(args, outputs, resource_id)
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
            signature = self.token(json.dumps(fields, sort_keys=True), "sig", 32)
            token = (
                f"sv=2022-11-02&sr={fields['resource']}&sp={fields['permissions']}&spr={fields['protocols']}"
                f"&se={fields['sharedAccessExpiryTime']}&sig={signature}"
            )
            return {"serviceSasToken": token}
        if args.token == "azure-native:storage:listStorageAccountKeys":  # noqa: S105
            account = args.args["accountName"]
            return {
                "keys": [
                    {"keyName": name, "permissions": "FULL", "value": self.token(account, name, 48)}
                    for name in ("key1", "key2")
                ]
            }
        return {}


def planned_changes(before: ProgramRun, after: ProgramRun) -> dict[str, str]:
    """What `pulumi up` would do going from ``before``'s declarations to ``after``'s, per URN:
    ``create``, ``delete`` or ``update`` (same URN, other inputs); unchanged URNs are left out.

    The engine identifies a resource by its URN (type, parent types and logical name) and diffs its inputs;
    both runs need seeded mocks so that provider-made values feeding other inputs compare equal.
    """
    old = {r.options.urn: r.inputs for r in before.resources}
    new = {r.options.urn: r.inputs for r in after.resources}
    changes = {urn: "create" for urn in new.keys() - old.keys()}
    changes.update({urn: "delete" for urn in old.keys() - new.keys()})
    changes.update({urn: "update" for urn in old.keys() & new.keys() if old[urn] != new[urn]})
    return changes


@dataclass
class Deployed:
    """One resource created in an emulator, and how to delete it (the `pulumi destroy` counterpart)."""

    type: str
    physical_id: str
    delete: Callable[[], None]
    urn: str = ""


class EmulatorMocks(RecordingMocks):
    """Base for mocks that really create resources in an emulator and can tear them down again.

    ``update_program`` runs the program again on what these mocks deployed, as `pulumi up` on an existing
    stack: a resource whose URN and inputs are unchanged is kept as it is (same id, same outputs), a new URN
    is created, and what is no longer declared is deleted afterwards, dependents first.
    """

    def __init__(self, server: Any) -> None:
        super().__init__()
        self.server = server
        self.skipped: list[str] = []  # declared settings the emulator cannot apply, said plainly in the demo
        self.deployed: list[Deployed] = []
        self.previous: dict[str, DeclaredResource] = {}  # the stack's state while an update runs

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        if pulumi.runtime.is_dry_run():  # a preview creates nothing
            return super().new_resource(args)
        before = self.previous.get(current_registration().urn)
        if before is not None:
            if before.inputs == dict(args.inputs):
                self.record(args, before.outputs, before.id)
                return before.id, before.outputs
            if any(d.urn == before.options.urn for d in self.deployed):
                raise NotImplementedError(f"the emulator mocks do not model updating {before.options.urn}")
        resource_id, outputs = self.deploy(args)
        self.record(args, outputs, resource_id)
        return resource_id, outputs

    def deploy(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        """Create the resource in the emulator; by default it is only computed (the emulator lacks it)."""
        return self.compute(args)

    def _deployed(self, kind: str, physical_id: str, delete: Callable[[], None]) -> None:
        self.deployed.append(Deployed(kind, physical_id, delete, current_registration().urn))

    def destroy(self) -> list[str]:
        """Delete what was created in the order and with the skips of `pulumi destroy` (destroy_plan).

        A failing delete stops the teardown there, as it stops a destroy: what is left stays deployed.
        Returns what was deleted.
        """
        with self._lock:
            resources = list(self.resources)
        plan = destroy_plan(resources)
        position = {resource.options.urn: i for i, (resource, _) in enumerate(plan)}
        skipped = {resource.options.urn for resource, action in plan if action != "delete"}
        # Deployed entries without a known resource (none today) go last, newest first.
        newest_first = list(reversed(self.deployed))
        self.deployed = sorted(newest_first, key=lambda d: position.get(d.urn, len(plan)))
        deleted = []
        while self.deployed:
            resource = self.deployed[0]
            if resource.urn not in skipped:
                resource.delete()
                deleted.append(f"{resource.type} {resource.physical_id}")
            self.deployed.pop(0)
        return deleted


def run_program(
    config: Mapping[str, Any],
    mocks: RecordingMocks,
    *,
    stack: str = "dev",
    preview: bool = False,
    provider_config: Mapping[str, Any] | None = None,
    main: Callable[[], Any] | None = None,
    project: str = PROJECT,
) -> ProgramRun:
    """Run stacks.program.main (or another program's ``main``, in Pulumi project ``project``) with ``config``
    (keys without the project prefix) and collect its outputs: what ``main`` returns, else what it exported.

    ``provider_config`` is the stack file's provider keys (``aws:region``, ``aws:profile``, ...).
    """
    # A fresh loop per run: code run in between (asyncio.run in s3fs/Airflow) may have unset the current one.
    asyncio.set_event_loop(asyncio.new_event_loop())
    runtime_settings.set_root_resource(None)
    all_config = {f"{project}:{key}": _config_text(value) for key, value in config.items()}
    all_config.update({key: _config_text(value) for key, value in (provider_config or {}).items()})
    pulumi.runtime.set_all_config(all_config)
    pulumi.runtime.set_mocks(mocks, project=project, stack=stack, preview=preview, monitor=OptionsMonitor(mocks))
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
        returned = (main or program.main)()
        if returned is None:  # a program that only calls pulumi.export
            root = runtime_settings.get_root_resource()
            returned = dict(getattr(root, "outputs", {}))
        return asyncio.ensure_future(collect(returned))

    run()
    return ProgramRun(list(mocks.resources), collected, secret_names, all_config)


def update_program(
    config: Mapping[str, Any],
    mocks: EmulatorMocks,
    *,
    stack: str = "dev",
    provider_config: Mapping[str, Any] | None = None,
) -> tuple[ProgramRun, list[str]]:
    """`pulumi up` with ``config`` on the stack ``mocks`` deployed before: returns the run and what was deleted.

    Unchanged resources stay (their ids and outputs, so an access key keeps its secret), new ones are created,
    and resources no longer declared are deleted after the program ran, in `pulumi destroy`'s order among
    themselves, as the engine deletes removed resources at the end of an update.
    """
    with mocks._lock:
        mocks.previous = {resource.options.urn: resource for resource in mocks.resources}
        mocks.resources = []
    try:
        run = run_program(config, mocks, stack=stack, provider_config=provider_config)
    finally:
        previous, mocks.previous = mocks.previous, {}
    declared = {resource.options.urn for resource in run.resources}
    removed = [resource for urn, resource in previous.items() if urn not in declared]
    deleted = []
    for resource, action in destroy_plan(removed):
        entries = [d for d in mocks.deployed if d.urn == resource.options.urn]
        for entry in entries:
            mocks.deployed.remove(entry)
            if action == "delete":
                entry.delete()
                deleted.append(f"{entry.type} {entry.physical_id}")
    return run, deleted


def _config_text(value: Any) -> str:
    # Pulumi hands every config value to the program as a string (booleans in lower case, objects as JSON).
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)
