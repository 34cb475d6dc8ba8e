"""A stack deployed per cloud, its emitted env in this process: the fixtures of the backend's store tests."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from emulation.gcs import GcsServer
from tests.conftest import DeployedStack, deploy
from tests.stores import AdminBucket
from tests.xcom_calls import clear_all_caches, use_emitted_env
from xcom_backend import contract

EMULATORS = {"aws": "moto", "gcp": "gcs", "gcp-gcsfs": "gcs", "azure": "azurite"}
# gcp-gcsfs: the GCP stack's connection with an option only gcsfs implements, so that the backend's GCS requests
# go through the provider's filesystem (as for every connection without a key: the worker's own identity, ...)
# rather than xcom_backend/gcs.py's client.
GCSFS_ONLY_EXTRA = {"gcs.session-kwargs": {"trust_env": False}}


class Deployment:
    """A deployed stack, its env applied to this process, and the bucket seen with admin rights."""

    def __init__(self, stack: DeployedStack, monkeypatch: pytest.MonkeyPatch, through_gcsfs: bool = False) -> None:
        self.stack, self.monkeypatch = stack, monkeypatch
        self.admin = AdminBucket(stack.server, stack.bucket)
        self.through_gcsfs = through_gcsfs

    @property
    def cloud(self) -> str:
        return self.admin.cloud

    @property
    def base(self) -> str:
        return self.stack.env[contract.PATH_ENV]

    def set(self, name: str, value: str | None) -> None:
        if value is None:
            self.monkeypatch.delenv(name, raising=False)
        else:
            self.monkeypatch.setenv(name, value)
        clear_all_caches()

    def key(self, url: str) -> str:
        return contract.parse_objectstorage_path(url).prefix

    def stored_keys(self) -> list[str]:
        return self.admin.keys("xcom/")


@pytest.fixture(scope="module", params=list(EMULATORS))
def deployed(request: pytest.FixtureRequest) -> Iterator[DeployedStack]:
    stack = deploy(request.getfixturevalue(EMULATORS[request.param]))
    stack.config["through_gcsfs"] = request.param == "gcp-gcsfs"
    yield stack
    stack.mocks.destroy()


@pytest.fixture
def deployment(deployed: DeployedStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[Deployment]:
    """The emitted env, and nothing else that grants access, in this process's environment."""
    monkeypatch.delenv("AIRFLOW_CTX_TASK_ID", raising=False)  # errors must be raised in and out of tasks
    env = dict(deployed.env)
    through_gcsfs = deployed.config.get("through_gcsfs", False)
    if through_gcsfs:
        name = next(name for name in env if name.startswith("AIRFLOW_CONN_"))
        env[name] = through_gcsfs_connection(env[name])
    use_emitted_env(env, deployed.server.client_env, monkeypatch.setenv)
    if isinstance(deployed.server, GcsServer):  # the variant really goes the way it names (else it passes vacuously)
        from xcom_backend.store import current_store

        assert (current_store().gcs is None) == through_gcsfs, "GCS requests not sent the way the variant names"
        clear_all_caches()
    yield Deployment(deployed, monkeypatch, through_gcsfs)
    clear_all_caches()


def through_gcsfs_connection(text: str) -> str:
    """A GCP connection's JSON with the option that sends its requests through gcsfs."""
    connection = json.loads(text)
    extra = connection.get("extra") or {}
    extra = json.loads(extra) if isinstance(extra, str) else extra
    return json.dumps({**connection, "extra": {**extra, **GCSFS_ONLY_EXTRA}})
