"""Azurite (Azure Blob emulator, from ./node_modules) on 127.0.0.1, and Pulumi mocks that deploy into it.

Azurite holds storage accounts given at start-up, so the emulated account is registered then under the name
the stack is told to use. What it cannot show: Azurite serves plain http and has no Azure AD, resource
groups, account hardening flags (HTTPS-only, minimum TLS, shared-key switch), lifecycle management or role
assignments; those are recorded (and asserted by the unit tests), not enforced. It does check SAS
signatures, permissions and expiry, so the SAS the stack emits is really what authorises the demo's writes.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pulumi
from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas

from emulation.airflow_run import REPO_ROOT
from emulation.processes import EmulatorProcess, emulator_process, free_port
from emulation.pulumi_runner import EmulatorMocks
from emulation.tls import LoopbackCertificate, make_loopback_certificate

AZURITE_BIN = REPO_ROOT / "node_modules" / ".bin" / "azurite-blob"
AZURITE_FAST_PRELOAD = Path(__file__).with_name("azurite_fast.js")
# What azurite_fast.js (its MARKER) writes to Azurite's log once the patch is in place.
AZURITE_FAST_MARKER = b"azurite_fast: CRC64Hash.update computes 8 bytes at a time"


@dataclass
class AzuriteServer:
    emulator: EmulatorProcess
    account_name: str
    account_key: str  # key1
    certificate: LoopbackCertificate
    account_key2: str = ""
    restart: Callable[[], EmulatorProcess] | None = None  # start Azurite again on the same port and data
    endpoint_override: str | None = None  # set on the view emulation.netshape.shaped() returns

    @property
    def client_env(self) -> dict[str, str]:
        """What a client process needs to verify Azurite's certificate (OpenSSL and requests read these)."""
        ca = str(self.certificate.ca_file)
        return {"SSL_CERT_FILE": ca, "REQUESTS_CA_BUNDLE": ca}

    @property
    def endpoint(self) -> str:
        """The account's blob service URL (path-style, as Azurite serves it on 127.0.0.1)."""
        return self.endpoint_override or f"{self.emulator.endpoint}/{self.account_name}"

    def key(self, name: str) -> str:
        return {"key1": self.account_key, "key2": self.account_key2}[name]

    def client(self, credential: str | None = None) -> BlobServiceClient:
        return BlobServiceClient(
            account_url=self.endpoint,
            credential=credential or self.account_key,
            connection_verify=str(self.certificate.ca_file),
        )

    def renew_key(self, name: str) -> None:
        """What `az storage account keys renew --key <name>` does: a new value for that key, so every SAS
        signed with the old one is refused from now on. Azurite reads its keys at start, so it restarts (on
        the same port, keeping its data on disk)."""
        if self.restart is None:
            raise RuntimeError("this Azurite keeps its data in memory; start it with persistent=True to renew keys")
        fresh = base64.b64encode(secrets.token_bytes(64)).decode()
        if name == "key1":
            self.account_key = fresh
        else:
            self.account_key2 = fresh
        self.emulator = self.restart()


@contextlib.contextmanager
def azurite_server(log_dir: Path, *, persistent: bool = False, fast: bool = False) -> Iterator[AzuriteServer]:
    """Azurite over HTTPS with one account holding two keys (key1, key2), as a storage account has.

    ``persistent`` keeps blobs on disk under ``log_dir`` so the server can restart with a renewed key.
    ``fast`` preloads emulation/azurite_fast.js (`make bench` only): the same CRC-64 without its per-byte cost.
    """
    if not AZURITE_BIN.exists():
        raise RuntimeError(f"{AZURITE_BIN} is missing: run `make node_modules` (npm ci) first")
    account = "xcom" + secrets.token_hex(5)
    keys = [base64.b64encode(secrets.token_bytes(64)).decode() for _ in range(2)]
    port = free_port()
    certificate = make_loopback_certificate(Path(log_dir) / f"azurite-tls-{port}")
    storage_args = (
        ["--location", str(Path(log_dir) / f"azurite-data-{port}")] if persistent else ["--inMemoryPersistence"]
    )
    command = [
        str(AZURITE_BIN),
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(port),
        *storage_args,
        "--skipApiVersionCheck",
        "--loose",
        "--disableProductStyleUrl",
        "--disableTelemetry",
        "--cert",
        str(certificate.cert_file),
        "--key",
        str(certificate.key_file),
    ]
    probe = f"/{account}?comp=list"
    with contextlib.ExitStack() as running:

        def start(server: AzuriteServer | None = None) -> EmulatorProcess:
            running.close()
            key1, key2 = (server.account_key, server.account_key2) if server else keys
            env = {"AZURITE_ACCOUNTS": f"{account}:{key1}:{key2}"}
            if fast:  # added to the caller's own Node options, if any
                preload = f'--require="{AZURITE_FAST_PRELOAD}"'
                env["NODE_OPTIONS"] = f"{os.environ.get('NODE_OPTIONS', '')} {preload}".strip()
            emulator = running.enter_context(
                emulator_process("azurite", command, log_dir, port, probe, env, certificate.ca_file)
            )
            if fast and AZURITE_FAST_MARKER not in emulator.log_path.read_bytes():
                raise RuntimeError(f"Azurite started without {AZURITE_FAST_PRELOAD.name}: see {emulator.log_path}")
            return emulator

        server = AzuriteServer(start(), account, keys[0], certificate, keys[1])
        if persistent:
            server.restart = lambda: start(server)
        try:
            yield server
        finally:
            running.close()


class AzuriteMocks(EmulatorMocks):
    """Pulumi mocks that create the container in Azurite and sign real SAS tokens with the account key."""

    server: AzuriteServer

    def deploy(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        resource_id, outputs = self.compute(args)
        kind = args.typ.split(":")[-1]
        if kind == "StorageAccount":
            if outputs["name"] != self.server.account_name:
                raise RuntimeError(f"Azurite only serves account {self.server.account_name}, not {outputs['name']}")
            self.skipped.append(
                "storage account hardening (HTTPS-only switch, minimum TLS 1.2, no public blob access, shared-key "
                "switch): recorded, not enforced by Azurite"
            )
        elif kind == "BlobContainer":
            self._create_container(outputs["name"])
        elif kind in ("ResourceGroup", "ManagementPolicy", "UserAssignedIdentity", "RoleAssignment"):
            self.skipped.append(f"{kind} {args.name}: Azurite has no such thing")
        return resource_id, outputs

    def _create_container(self, name: str) -> None:
        self.server.client().create_container(name)  # no public access level: private
        # A fresh admin client at delete time: the account key may have been renewed since.
        self._deployed("blob container", name, lambda: self.server.client().delete_container(name))

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        if args.token == "azure-native:storage:listStorageAccountServiceSAS":  # noqa: S105 (a type token)
            fields = args.args
            container = fields["canonicalizedResource"].rsplit("/", 1)[-1]
            token = generate_container_sas(
                account_name=self.server.account_name,
                container_name=container,
                account_key=self.server.key(fields.get("keyToSign") or "key1"),
                permission=ContainerSasPermissions.from_string(fields["permissions"]),
                expiry=datetime.fromisoformat(fields["sharedAccessExpiryTime"].replace("Z", "+00:00")),
                protocol=fields["protocols"],
            )
            return {"serviceSasToken": token}
        if args.token == "azure-native:storage:listStorageAccountKeys":  # noqa: S105
            return {
                "keys": [
                    {"keyName": name, "permissions": "FULL", "value": self.server.key(name)}
                    for name in ("key1", "key2")
                ]
            }
        return super().call(args)
