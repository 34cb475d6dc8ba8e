"""The emitted GCP key through the IAM proxy (emulation.gcs_iam): what the backends need is allowed, the rest denied.

Every request gcsfs or google-cloud-storage sends is mapped to the permission GCS checks, and allowed only if
the binding the stack declared (role + CEL-evaluated prefix condition) grants it. Each case below also checks
that the proxy, not the emulator, made the decision.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import asdict
from types import SimpleNamespace
from typing import Any

import gcsfs
import pytest
from google.api_core import exceptions as gcs_errors
from google.cloud import storage

from emulation.gcs import GCSFS_ENV, GcsServer
from emulation.gcs_iam import GcsIamProxy
from tests.conftest import DeployedStack, deploy
from tests.xcom_calls import OWNER, clear_all_caches
from xcom_backend import contract
from xcom_backend.backend import reading_xcom
from xcom_backend.references import stored_url

BIG = {f"key{i}": "x" * 100 for i in range(100)}
COORDINATES = asdict(OWNER)

pytestmark = pytest.mark.integration

OTHER_BUCKET = "other-team-bucket"


@pytest.fixture(scope="module", params=["bundled", "common-io"])
def gcp_stack(request: pytest.FixtureRequest, gcs: GcsServer) -> Iterator[DeployedStack]:
    stack = deploy(gcs, stack=f"iam-{request.param}", backend=request.param)
    yield stack
    stack.mocks.destroy()


@pytest.fixture(scope="module")
def other_bucket(gcs: GcsServer) -> str:
    admin = gcs.client()
    bucket = admin.create_bucket(OTHER_BUCKET) if not admin.lookup_bucket(OTHER_BUCKET) else admin.bucket(OTHER_BUCKET)
    bucket.blob("xcom/secret.json").upload_from_string(b"{}")
    return OTHER_BUCKET


@pytest.fixture
def deployment(gcp_stack: DeployedStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[DeployedStack]:
    """The emitted env, and nothing else, in this process's environment."""
    for name, value in {**gcp_stack.env, **GCSFS_ENV}.items():
        monkeypatch.setenv(name, value)
    clear_all_caches()
    yield gcp_stack
    clear_all_caches()


def filesystem(stack: DeployedStack) -> gcsfs.GCSFileSystem:
    """gcsfs as Airflow's gs:// filesystem builds it, with the emitted key, through the IAM proxy."""
    return gcsfs.GCSFileSystem(
        token=stack.gcp_credentials(), endpoint_url=stack.server.endpoint, project="emulated-project"
    )


def sdk_client(stack: DeployedStack) -> storage.Client:
    return storage.Client(
        project="emulated-project",
        credentials=stack.gcp_credentials(),
        client_options={"api_endpoint": stack.server.endpoint},
    )


def backend_class(stack: DeployedStack) -> Any:
    module, _, name = stack.env[contract.XCOM_BACKEND_ENV].rpartition(".")
    return getattr(importlib.import_module(module), name)


def decided(proxy: GcsIamProxy, operation: Callable[[], Any]) -> tuple[Any, list[bool]]:
    """Run ``operation``; return its result (or exception) and the proxy's decisions for its requests."""
    start = len(proxy.decisions)
    try:
        result: Any = operation()
    except Exception as err:  # the caller checks which
        result = err
    return result, [decision.allowed for decision in proxy.decisions[start:]]


def allowed_operations(stack: DeployedStack) -> dict[str, Callable[[], Any]]:
    backend, fs, bucket = backend_class(stack), filesystem(stack), stack.bucket
    state: dict[str, Any] = {}

    def write() -> None:
        state["reference"] = backend.serialize_value(BIG, **COORDINATES)
        assert (stored_url(state["reference"]) or "").startswith(stack.env[contract.PATH_ENV] + "/")

    def overwrite() -> None:  # a retried task: the bundled backend rewrites its key (create + delete on it)
        again = backend.serialize_value(BIG, **COORDINATES)
        if again != state["reference"]:  # common-io writes a new object per try; drop it to keep the prefix tidy
            with reading_xcom(OWNER):  # as the task SDK's XCom.delete calls purge
                backend.purge(SimpleNamespace(value=again))

    def read() -> None:
        with reading_xcom(OWNER):  # as the task SDK's XCom.get_one calls deserialize_value
            assert backend.deserialize_value(SimpleNamespace(value=state["reference"])) == BIG

    def purge() -> None:
        with reading_xcom(OWNER):
            backend.purge(SimpleNamespace(value=state["reference"]))

    def list_prefix_with_objects() -> None:
        fs.pipe(f"{bucket}/xcom/gc/orphan.json", b"{}")
        assert f"{bucket}/xcom/gc/orphan.json" in fs.find(f"{bucket}/xcom")
        fs.rm(f"{bucket}/xcom/gc/orphan.json")

    def list_empty_prefix_with_trailing_slash() -> None:
        fs.invalidate_cache()
        assert fs.find(bucket, prefix="xcom/") == []

    return {
        "write (serialize_value)": write,
        "overwrite the same key": overwrite,
        "read (deserialize_value)": read,
        "purge": purge,
        "find under the prefix (objects present)": list_prefix_with_objects,
        "list an empty prefix as <prefix>/": list_empty_prefix_with_trailing_slash,
    }


def denied_operations(stack: DeployedStack, other: str) -> dict[str, Callable[[], Any]]:
    fs, client, bucket = filesystem(stack), sdk_client(stack), stack.bucket
    mine = client.bucket(bucket)

    def empty_prefix_find() -> Any:
        fs.invalidate_cache()
        return fs.find(f"{bucket}/xcom")  # gcsfs lists prefix "xcom" (no slash) when "xcom/" is empty

    denied = {
        "find <bucket>/<prefix> on an empty prefix (lists the bare prefix)": empty_prefix_find,
        "list the bare prefix (also matches xcom2/, xcom-x)": lambda: list(client.list_blobs(bucket, prefix="xcom")),
        "list the whole bucket": lambda: list(client.list_blobs(bucket)),
        "list another prefix": lambda: list(client.list_blobs(bucket, prefix="other/")),
        "write outside the prefix": lambda: fs.pipe(f"{bucket}/other/x.json", b"{}"),
        "write at the bucket root": lambda: fs.pipe(f"{bucket}/x.json", b"{}"),
        "write into a look-alike prefix": lambda: fs.pipe(f"{bucket}/xcom2/x.json", b"{}"),
        "read outside the prefix": lambda: fs.cat(f"{bucket}/other/admin-only.json"),
        "delete outside the prefix": lambda: mine.blob("other/admin-only.json").delete(),
        "copy from outside the prefix into it": lambda: mine.copy_blob(
            mine.blob("other/admin-only.json"), mine, "xcom/c"
        ),
        "read from another bucket": lambda: fs.cat(f"{other}/xcom/secret.json"),
        "write to another bucket": lambda: fs.pipe(f"{other}/xcom/x.json", b"{}"),
        "list another bucket": lambda: list(client.list_blobs(other, prefix="xcom/")),
        "list the project's buckets": lambda: list(client.list_buckets()),
        "create a bucket": lambda: client.create_bucket("attacker-bucket"),
        "delete the bucket": lambda: mine.delete(),
        "read the bucket IAM policy": lambda: mine.get_iam_policy(),
        "grant itself storage.admin": lambda: mine.set_iam_policy(mine.get_iam_policy()),
        "change the bucket's labels (bucket update)": lambda: client.bucket(bucket).patch(),
        "read an object's ACL": lambda: list(mine.blob("xcom/x").acl.reload()),
    }
    if stack.env[contract.XCOM_BACKEND_ENV] == contract.BUNDLED_BACKEND:
        denied["read bucket metadata (bundled backend: not granted)"] = lambda: client.get_bucket(bucket)
    return denied


def is_forbidden(result: Any) -> bool:
    return isinstance(result, gcs_errors.Forbidden) or (isinstance(result, OSError) and "Forbidden" in str(result))


@pytest.mark.reliability
def test_every_operation_the_backend_needs_is_allowed(deployment: DeployedStack, gcs_iam: GcsIamProxy, figures) -> None:
    failures = {}
    for name, operation in allowed_operations(deployment).items():
        result, decisions = decided(gcs_iam, operation)
        if isinstance(result, BaseException) or not decisions or not all(decisions):
            failures[name] = repr(result)[:300]
    backend = "common-io" if deployment.env[contract.XCOM_BACKEND_ENV] == contract.COMMON_IO_BACKEND else "bundled"
    figures.append(
        {
            "area": "least privilege (gcp, IAM proxy)",
            "case": f"operations the {backend} backend needs: allowed",
            "tried": len(allowed_operations(deployment)),
            "failed": len(failures),
        }
    )
    assert failures == {}


@pytest.mark.reliability
def test_everything_else_is_denied(gcp_stack: DeployedStack, gcs: GcsServer, other_bucket: str, figures) -> None:
    gcs.client().bucket(gcp_stack.bucket).blob("other/admin-only.json").upload_from_string(b"{}")
    operations = denied_operations(gcp_stack, other_bucket)
    assert len(operations) >= 15
    wrongly_allowed = []
    for name, operation in operations.items():
        start = len(gcs.iam.decisions)
        result, decisions = decided(gcs.iam, operation)
        if not (is_forbidden(result) and False in decisions):
            seen = [(d.method, d.path[:90], d.allowed) for d in gcs.iam.decisions[start:]]
            wrongly_allowed.append(f"{name}: {result!r}"[:300] + f" decisions: {seen}")
    figures.append(
        {
            "area": "least privilege (gcp, IAM proxy)",
            "case": "other prefixes/buckets, bucket IAM/config: denied",
            "tried": len(operations),
            "failed": len(wrongly_allowed),
        }
    )
    assert wrongly_allowed == []


def test_common_io_writes_need_the_bucket_metadata_grant(gcp_stack: DeployedStack, gcs_iam: GcsIamProxy) -> None:
    """gcsfs mkdir(parents=True), which common-io calls before every write, reads the bucket."""
    fs = filesystem(gcp_stack)
    result, decisions = decided(gcs_iam, lambda: fs.mkdir(f"{gcp_stack.bucket}/xcom/d/r/t", create_parents=True))
    if gcp_stack.env[contract.XCOM_BACKEND_ENV] == contract.COMMON_IO_BACKEND:
        assert result is None and decisions == [True]
    else:  # the bundled backend never calls mkdir, so its binding does not include bucket reads
        assert is_forbidden(result)


def test_a_token_for_a_key_the_stack_did_not_mint_is_refused(gcp_stack: DeployedStack) -> None:
    from emulation.gcs import service_account_key

    stranger = service_account_key("stranger@emulated-project.iam.gserviceaccount.com", "p", gcp_stack.server.token_uri)
    from google.oauth2 import service_account

    credentials = service_account.Credentials.from_service_account_info(
        stranger, scopes=["https://www.googleapis.com/auth/devstorage.read_only"]
    )
    client = storage.Client(
        project="p", credentials=credentials, client_options={"api_endpoint": gcp_stack.server.endpoint}
    )
    with pytest.raises(Exception, match="invalid_grant"):
        list(client.list_blobs(gcp_stack.bucket, prefix="xcom/"))
