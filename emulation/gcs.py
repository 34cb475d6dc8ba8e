"""A GCS emulator (gcp-storage-emulator on 127.0.0.1) and Pulumi mocks that deploy into it.

What it cannot show: the emulator has no IAM at all. The bucket-level binding and its prefix condition,
uniform bucket-level access, public access prevention, lifecycle rules and CMEK are recorded (and asserted
by the unit tests), not enforced. The service account key is a locally generated RSA key in Google's key
file format whose ``token_uri`` points at a local stand-in token endpoint, so Airflow really loads the
emitted ``keyfile_dict``, signs a JWT with it and sends the token; the emulator accepts any token.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pulumi
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from emulation.processes import EmulatorProcess, emulator_process, free_port
from emulation.pulumi_runner import EmulatorMocks, auto_name

# gcsfs 2026.x otherwise calls a gRPC API the emulator lacks and stalls 60 s per bucket lookup.
GCSFS_ENV = {"GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}


class _TokenHandler(BaseHTTPRequestHandler):
    issued: list[str]

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(length).decode()
        ok = "assertion=" in body  # a JWT signed with the service account key
        token = secrets.token_urlsafe(16)
        self.issued.append(token)
        payload = json.dumps({"access_token": token, "expires_in": 3600, "token_type": "Bearer"} if ok else {})
        self.send_response(200 if ok else 400)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(payload.encode())

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class GcsServer:
    emulator: EmulatorProcess
    token_uri: str
    tokens_issued: list[str]

    @property
    def endpoint(self) -> str:
        return self.emulator.endpoint

    @property
    def client_env(self) -> dict[str, str]:
        return dict(GCSFS_ENV)

    def client(self, project: str = "emulated-project") -> storage.Client:
        return storage.Client(
            project=project, credentials=AnonymousCredentials(), client_options={"api_endpoint": self.endpoint}
        )


@contextlib.contextmanager
def gcs_server(log_dir: Path) -> Iterator[GcsServer]:
    """The storage emulator plus a stand-in OAuth token endpoint, both on free loopback ports."""
    handler = type("TokenHandler", (_TokenHandler,), {"issued": []})
    token_server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=token_server.serve_forever, daemon=True)
    thread.start()
    port = free_port()
    command = [
        str(Path(sys.executable).with_name("gcp-storage-emulator")),
        "start",
        "--host=127.0.0.1",
        f"--port={port}",
        "--in-memory",
        "--quiet",
    ]
    try:
        with emulator_process("gcs-emulator", command, log_dir, port, "/storage/v1/b?project=probe") as emulator:
            yield GcsServer(emulator, f"http://127.0.0.1:{token_server.server_port}/token", handler.issued)
    finally:
        token_server.shutdown()
        token_server.server_close()


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
            self.skipped.append(
                f"bucket IAM binding {inputs['role']} for {inputs['member']} with condition "
                f"'{inputs['condition']['title']}': the emulator has no IAM"
            )
        elif args.typ == "gcp:serviceaccount/account:Account":
            self.skipped.append(f"service account {outputs['email']}: the emulator has no IAM")
        return resource_id, outputs

    def _create_bucket(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        bucket_name = inputs.get("name") or auto_name(name)
        client = self.server.client(inputs.get("project") or "emulated-project")
        bucket = client.bucket(bucket_name)
        bucket.labels = inputs.get("labels") or {}
        client.create_bucket(bucket, location=inputs.get("location"))
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
        encoded = base64.b64encode(json.dumps(key).encode()).decode()
        self._deployed("service account key", key["private_key_id"], lambda: None)
        return key["private_key_id"], {**inputs, "name": key["private_key_id"], "privateKey": encoded}
