"""A GCS emulator (gcp-storage-emulator on 127.0.0.1), IAM in front of it, and Pulumi mocks that deploy into it.

The emulator has no IAM; by default it is reached through emulation.gcs_iam's enforcing proxy, configured
with the BucketIAMMember bindings the program declares, so the binding, its role and its prefix condition
(evaluated with Google's CEL runtime) decide every request. The service account key is a locally generated
RSA key in Google's key file format whose ``token_uri`` points at a local token endpoint; it issues a token
only for a JWT signed by a key the mocks minted, and the proxy maps that token to the service account.
Uniform bucket-level access, public access prevention, lifecycle rules and CMEK are recorded (and asserted by
the unit tests), not enforced; the bucket's soft delete policy is the emulator's own.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pulumi
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import jwt
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from emulation.gcs_iam import Binding, GcsIamProxy, gcs_iam_proxy
from emulation.processes import EmulatorProcess, emulator_process, free_port, module_command
from emulation.pulumi_runner import EmulatorMocks, auto_name
from xcom_backend import contract

# What the GCP stack emits for gcsfs (contract.CLOUD_ENV); without it gcsfs 2026.x calls a gRPC API the
# emulator lacks and stalls 60 s per bucket lookup.
GCSFS_ENV = dict(contract.CLOUD_ENV["gcp"])


class _TokenHandler(BaseHTTPRequestHandler):
    issued: list[str]
    # private_key_id -> (service account email, PEM public key) of each key the mocks minted and not deleted
    public_keys: dict[str, tuple[str, str]]
    members: dict[str, str]  # issued token -> IAM member

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())
        member = self._verified_member(form.get("assertion", [""])[0])
        ok = member is not None
        token = secrets.token_urlsafe(16)
        if ok:
            self.issued.append(token)
            self.members[token] = member
        payload = json.dumps(
            {"access_token": token, "expires_in": 3600, "token_type": "Bearer"} if ok else {"error": "invalid_grant"}
        )
        self.send_response(200 if ok else 400)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(payload.encode())

    def _verified_member(self, assertion: str) -> str | None:
        """The service account whose key signed ``assertion`` (a JWT bearer grant), if that key exists: as in
        IAM, a deleted key mints no more tokens (tokens it minted before stay valid until they expire)."""
        try:
            header = json.loads(base64.urlsafe_b64decode(assertion.split(".", 1)[0] + "=="))
            email, public_key = self.public_keys[header["kid"]]
            claims = jwt.decode(assertion, certs=public_key, verify=True)
        except (KeyError, ValueError, IndexError):
            return None
        return f"serviceAccount:{email}" if claims.get("iss") == email else None

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class GcsServer:
    """The emulator, its token endpoint and (``iam``) the enforcing proxy clients go through."""

    emulator: EmulatorProcess
    token_uri: str
    tokens_issued: list[str]
    public_keys: dict[str, tuple[str, str]]
    iam: GcsIamProxy | None = None
    service_accounts: set[str] = field(default_factory=set)
    endpoint_override: str | None = None  # set on the view emulation.netshape.shaped() returns

    @property
    def endpoint(self) -> str:
        """Where clients (and the emitted connection) go: through IAM when it is enforced."""
        return self.endpoint_override or (self.iam.endpoint if self.iam else self.emulator.endpoint)

    @property
    def client_env(self) -> dict[str, str]:
        return dict(GCSFS_ENV)

    def client(self, project: str = "emulated-project") -> storage.Client:
        """An admin client straight to the emulator (the project owner; IAM does not apply to it here)."""
        return storage.Client(
            project=project,
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": self.emulator.endpoint},
        )


@contextlib.contextmanager
def gcs_server(log_dir: Path, *, enforce_iam: bool = True, fast: bool = False) -> Iterator[GcsServer]:
    """The storage emulator (``fast``: with its per-byte costs taken out, emulation/gcs_fast.py, as `make bench`
    runs it), a local OAuth token endpoint and (``enforce_iam``) the IAM proxy, on loopback ports."""
    handler = type("TokenHandler", (_TokenHandler,), {"issued": [], "public_keys": {}, "members": {}})
    token_server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=token_server.serve_forever, daemon=True)
    thread.start()
    port = free_port()
    module = "emulation.gcs_fast" if fast else "gcp_storage_emulator"
    command, env = module_command(module, "start", "--host=127.0.0.1", f"--port={port}", "--in-memory", "--quiet")
    try:
        with contextlib.ExitStack() as stack:
            emulator = stack.enter_context(
                emulator_process("gcs-emulator", command, log_dir, port, "/storage/v1/b?project=probe", env)
            )
            token_uri = f"http://127.0.0.1:{token_server.server_port}/token"
            iam = stack.enter_context(gcs_iam_proxy(emulator.endpoint, handler.members)) if enforce_iam else None
            yield GcsServer(emulator, token_uri, handler.issued, handler.public_keys, iam)
    finally:
        token_server.shutdown()
        token_server.server_close()


def public_key_pem(key_file: dict[str, str]) -> str:
    private_key = serialization.load_pem_private_key(key_file["private_key"].encode(), password=None)
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def service_account_key(email: str, project: str, token_uri: str) -> dict[str, str]:
    """A key file in Google's format with a fresh RSA key (the emulator cannot mint real ones)."""
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return {
        "type": "service_account",
        "project_id": project,
        "private_key_id": secrets.token_hex(20),
        "private_key": pem,
        "client_email": email,
        "client_id": str(secrets.randbelow(10**20)),
        "token_uri": token_uri,
    }


class GcsMocks(EmulatorMocks):
    """Pulumi mocks that create the bucket in the emulator and mint a usable service account key."""

    server: GcsServer

    def deploy(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        inputs = dict(args.inputs)
        if args.typ == "gcp:storage/bucket:Bucket":
            return self._create_bucket(args.name, inputs)
        if args.typ == "gcp:serviceaccount/key:Key":
            return self._create_key(inputs)
        resource_id, outputs = self.compute(args)
        if args.typ == "gcp:storage/bucketIAMMember:BucketIAMMember":
            self._bind(inputs)
        elif args.typ == "gcp:serviceaccount/account:Account":
            self._create_account(outputs["email"])
        return resource_id, outputs

    def _bind(self, inputs: dict[str, Any]) -> None:
        condition = inputs.get("condition")
        binding = Binding(inputs["bucket"], inputs["role"], inputs["member"], condition and condition["expression"])
        described = f"{binding.role} for {binding.member}" + (f" if '{condition['title']}'" if condition else "")
        if self.server.iam is None:
            self.skipped.append(f"bucket IAM binding {described}: the emulator has no IAM (enforce_iam off)")
            return
        self.server.iam.policy.add(binding)
        self._deployed("bucket IAM binding (enforced)", described, lambda: self.server.iam.policy.remove(binding))

    def _create_account(self, email: str) -> None:
        """Service account ids are unique per project, as in IAM (409 alreadyExists)."""
        if email in self.server.service_accounts:
            raise RuntimeError(f"409 alreadyExists: service account {email} already exists in the project")
        self.server.service_accounts.add(email)
        self._deployed("service account", email, lambda: self.server.service_accounts.discard(email))

    def _create_bucket(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        bucket_name = inputs.get("name") or auto_name(name)
        client = self.server.client(inputs.get("project") or "emulated-project")
        bucket = client.bucket(bucket_name)
        bucket.labels = inputs.get("labels") or {}
        # The emulator implements soft delete (7 days unless the bucket says otherwise): the program's policy,
        # 0 unless asked for, so deleted and overwritten objects are not kept (in memory) when it is off.
        client.create_bucket(bucket, location=inputs.get("location"))
        retention = (inputs.get("softDeletePolicy") or {}).get("retentionDurationSeconds")
        if retention is not None:  # the emulator takes it in a patch, not at creation
            bucket.soft_delete_policy.retention_duration_seconds = int(retention)
            bucket.patch()
        self.skipped.append(
            "bucket uniform access, public access prevention, lifecycle rules, CMEK: recorded, "
            "not enforced by the emulator"
        )
        self._deployed("gcs bucket", bucket_name, lambda: self._delete_bucket(bucket_name, inputs))
        return bucket_name, {**inputs, "name": bucket_name, "url": f"gs://{bucket_name}"}

    def _delete_bucket(self, bucket_name: str, inputs: dict[str, Any]) -> None:
        bucket = self.server.client().bucket(bucket_name)
        blobs = list(bucket.list_blobs())
        if blobs and not inputs.get("forceDestroy"):
            raise RuntimeError(f"bucket {bucket_name} is not empty and forceDestroy is off")
        for blob in blobs:
            blob.delete()
        bucket.delete()

    def _create_key(self, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        email = inputs["serviceAccountId"].rsplit("/", 1)[-1]
        project = email.split("@", 1)[1].split(".", 1)[0]
        key = service_account_key(email, project, self.server.token_uri)
        key_id = key["private_key_id"]
        self.server.public_keys[key_id] = (email, public_key_pem(key))
        encoded = base64.b64encode(json.dumps(key).encode()).decode()
        self._deployed("service account key", key_id, lambda: self.server.public_keys.pop(key_id, None))
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        validity = {"validAfter": now, "validBefore": "9999-12-31T23:59:59Z"}  # user-managed keys do not expire
        return key_id, {**inputs, "name": key_id, "privateKey": encoded, **validity}
