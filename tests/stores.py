"""Each cloud's bucket seen with the emulator's admin rights, not the emitted credential: tests look at,
damage or plant objects behind the backend's back, and write common-io's objects through an admin connection."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from emulation.azurite import AzuriteServer
from emulation.gcs import GcsServer
from emulation.moto import REGION, MotoServer

ADMIN_CONN_ID = "emulator_admin"


@dataclass
class AdminBucket:
    """Object access by key with full rights, the same few operations on every cloud."""

    server: Any
    bucket: str

    @property
    def cloud(self) -> str:
        return {MotoServer: "aws", GcsServer: "gcp", AzuriteServer: "azure"}[type(self.server)]

    def keys(self, prefix: str = "") -> list[str]:
        if self.cloud == "aws":
            pages = (
                self.server.client("s3").get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
            )
            return sorted(item["Key"] for page in pages for item in page.get("Contents", []))
        if self.cloud == "gcp":
            return sorted(blob.name for blob in self.server.client().bucket(self.bucket).list_blobs(prefix=prefix))
        container = self.server.client().get_container_client(self.bucket)
        return sorted(blob.name for blob in container.list_blobs(name_starts_with=prefix))

    def get(self, key: str) -> bytes:
        if self.cloud == "aws":
            return self.server.client("s3").get_object(Bucket=self.bucket, Key=key)["Body"].read()
        if self.cloud == "gcp":
            return self.server.client().bucket(self.bucket).blob(key).download_as_bytes()
        return self.server.client().get_blob_client(self.bucket, key).download_blob().readall()

    def put(self, key: str, body: bytes) -> None:
        if self.cloud == "aws":
            self.server.client("s3").put_object(Bucket=self.bucket, Key=key, Body=body)
        elif self.cloud == "gcp":
            self.server.client().bucket(self.bucket).blob(key).upload_from_string(body)
        else:
            self.server.client().get_blob_client(self.bucket, key).upload_blob(body, overwrite=True)

    def delete(self, key: str) -> None:
        if self.cloud == "aws":
            self.server.client("s3").delete_object(Bucket=self.bucket, Key=key)
        elif self.cloud == "gcp":
            self.server.client().bucket(self.bucket).blob(key).delete()
        else:
            self.server.client().get_blob_client(self.bucket, key).delete_blob()

    def admin_connection(self) -> dict[str, Any]:
        """An Airflow connection with the emulator's full rights (for common-io's writes in the tests)."""
        if self.cloud == "aws":
            key_id, secret = self.server.admin_key
            extra = {"endpoint_url": self.server.endpoint, "region_name": REGION}
            return {"conn_type": "aws", "login": key_id, "password": secret, "extra": extra}
        if self.cloud == "gcp":
            # Straight to the emulator: the IAM proxy in front of it serves only the stacks' identities.
            extra = {"is_anonymous": True, "project": "emulated-project", "gcs.endpoint": self.server.emulator.endpoint}
            return {"conn_type": "google_cloud_platform", "extra": extra}
        connection_string = (
            f"DefaultEndpointsProtocol=https;AccountName={self.server.account_name};"
            f"AccountKey={self.server.account_key};BlobEndpoint={self.server.endpoint};"
        )
        return {"conn_type": "wasb", "extra": {"connection_string": connection_string}}

    def admin_connection_env(self) -> dict[str, str]:
        return {f"AIRFLOW_CONN_{ADMIN_CONN_ID.upper()}": json.dumps(self.admin_connection())}
