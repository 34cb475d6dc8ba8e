"""A stack deployed per cloud, its emitted env in this process: the fixtures of the backend's store tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import DeployedStack, deploy
from tests.stores import AdminBucket
from tests.xcom_calls import clear_all_caches, use_emitted_env
from xcom_backend import contract

EMULATORS = {"aws": "moto", "gcp": "gcs", "azure": "azurite"}


class Deployment:
    """A deployed stack, its env applied to this process, and the bucket seen with admin rights."""

    def __init__(self, stack: DeployedStack, monkeypatch: pytest.MonkeyPatch) -> None:
        self.stack, self.monkeypatch = stack, monkeypatch
        self.admin = AdminBucket(stack.server, stack.bucket)

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
    yield stack
    stack.mocks.destroy()


@pytest.fixture
def deployment(deployed: DeployedStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[Deployment]:
    """The emitted env, and nothing else that grants access, in this process's environment."""
    monkeypatch.delenv("AIRFLOW_CTX_TASK_ID", raising=False)  # errors must be raised in and out of tasks
    use_emitted_env(deployed.env, deployed.server.client_env, monkeypatch.setenv)
    yield Deployment(deployed, monkeypatch)
    clear_all_caches()
