"""How the storage libraries list an XCom prefix, with the emitted credential, through the enforcing layers.

``fs.find("<bucket>/<prefix>")`` on an empty prefix is denied on both clouds: s3fs then HEADs the bare key
``<prefix>`` (GetObject is granted on ``<prefix>/*`` only) and gcsfs lists prefix ``<prefix>`` without the
slash (the condition requires ``<prefix>/``). Listing with the trailing slash, as
``fs.find(bucket, prefix="<prefix>/")`` does, is allowed. Tools that list the prefix must use the latter.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gcsfs
import pytest
import s3fs
from botocore.exceptions import ClientError

from emulation.gcs import GcsServer
from emulation.moto import REGION, MotoServer
from tests.conftest import DeployedStack, deploy

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def s3_stack(moto_conditions: MotoServer) -> Iterator[DeployedStack]:
    stack = deploy(moto_conditions, stack="prefix-listing")
    yield stack
    stack.mocks.destroy()


@pytest.fixture(scope="module")
def gcs_stack(gcs: GcsServer) -> Iterator[DeployedStack]:
    stack = deploy(gcs, stack="prefix-listing")
    yield stack
    stack.mocks.destroy()


def s3(stack: DeployedStack) -> s3fs.S3FileSystem:
    key, secret = stack.key
    return s3fs.S3FileSystem(
        key=key, secret=secret, endpoint_url=stack.server.endpoint, client_kwargs={"region_name": REGION}
    )


def gcs_fs(stack: DeployedStack) -> gcsfs.GCSFileSystem:
    return gcsfs.GCSFileSystem(token=stack.gcp_credentials(), endpoint_url=stack.server.endpoint, project="p")


@pytest.fixture(params=["aws", "gcp"])
def store(request: pytest.FixtureRequest) -> tuple[Any, DeployedStack]:
    """(filesystem with the emitted credential, stack) for each cloud, through its enforcing layer."""
    if request.param == "aws":
        stack = request.getfixturevalue("s3_stack")
        return s3(stack), stack
    stack = request.getfixturevalue("gcs_stack")
    return gcs_fs(stack), stack


def test_find_on_an_empty_prefix_is_denied(store: tuple[Any, DeployedStack]) -> None:
    fs, stack = store
    # s3fs lists xcom/ (allowed), then HEADs the bare key xcom; gcsfs lists xcom/, then the bare prefix xcom.
    with pytest.raises(OSError, match=r"Forbidden|Access ?Denied"):
        fs.find(f"{stack.bucket}/xcom")
    if getattr(stack.server, "iam", None):  # GCS: the proxy saw the listing without the slash
        denied = [d for d in stack.server.iam.decisions if not d.allowed]
        assert denied[-1].checks[0].list_prefix == "xcom"


def test_listing_with_the_trailing_slash_is_allowed(store: tuple[Any, DeployedStack]) -> None:
    fs, stack = store
    assert fs.find(stack.bucket, prefix="xcom/") == []
    fs.pipe(f"{stack.bucket}/xcom/d/r/t/x.json", b"{}")
    try:
        fs.invalidate_cache()
        assert fs.find(stack.bucket, prefix="xcom/") == [f"{stack.bucket}/xcom/d/r/t/x.json"]
    finally:
        fs.rm(f"{stack.bucket}/xcom/d/r/t/x.json")


def test_listing_the_bare_prefix_is_denied_on_s3(s3_stack: DeployedStack) -> None:
    """The ListBucket condition allows only <prefix>/ and below: "xcom" would also list "xcom2/", "xcom-x"."""
    client = s3_stack.client("s3")
    client.list_objects_v2(Bucket=s3_stack.bucket, Prefix="xcom/")
    with pytest.raises(ClientError, match="AccessDenied"):
        client.list_objects_v2(Bucket=s3_stack.bucket, Prefix="xcom")
    verdicts = [(r.context.get("s3:prefix"), ok) for _, r, ok in s3_stack.server.conditions.decisions[-2:]]
    assert verdicts == [("xcom/", True), ("xcom", False)]
