"""Shared fixtures: emulators are started here (never assumed to be running) and always stopped."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from emulation.azurite import AzuriteMocks, AzuriteServer, azurite_server
from emulation.gcs import GCSFS_ENV, GcsMocks, GcsServer, gcs_server
from emulation.gcs_iam import GcsIamProxy

# gcsfs reads this once, at import: tests in this process that use gcsfs against the emulator need it first.
os.environ.update(GCSFS_ENV)
from emulation.moto import MotoMocks, MotoServer, moto_server, with_conditions
from emulation.pulumi_runner import EmulatorMocks, ProgramRun, run_program, update_program

FIGURES: list[dict[str, Any]] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--xcom-backend",
        default=None,
        help="e2e: run Airflow with this XCom backend class instead of the emitted one "
        "(e.g. tests.e2e.broken_backends.StandInBackend), to see the suite fail",
    )


_PREVIOUS_SIGTERM = pytest.StashKey[Any]()


def pytest_configure(config: pytest.Config) -> None:
    """A SIGTERM (a CI job's timeout, `kill`) stops the run as Ctrl-C does: pytest then tears the fixtures down,
    which stop the emulators, PostgreSQL, Redis, the API server and the Celery workers. Python's default for
    SIGTERM ends the process at once and left all of them running."""

    def interrupt(signal_number: int, frame: Any) -> None:
        # Once: a second SIGTERM (a CI runner's cancel often sends more than one) must not cut the teardown the
        # first one started short (pytest runs the remaining finalizers only past an Exception). SIGKILL still
        # ends the run.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt(f"signal {signal_number}")

    if threading.current_thread() is threading.main_thread():
        config.stash[_PREVIOUS_SIGTERM] = signal.signal(signal.SIGTERM, interrupt)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _PREVIOUS_SIGTERM in config.stash:  # a pytest.main() inside another program gets its own handler back
        signal.signal(signal.SIGTERM, config.stash[_PREVIOUS_SIGTERM])


@pytest.fixture(scope="session")
def figures() -> list[dict[str, Any]]:
    """Reliability figures (cases tried, failures, lost/mismatched); `make reliability` prints them."""
    return FIGURES


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if path := os.environ.get("RELIABILITY_REPORT"):
        Path(path).write_text(json.dumps(FIGURES, indent=2))


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """One moto server (S3 + IAM, IAM enforced) on a free loopback port for the whole session."""
    with moto_server(tmp_path_factory.mktemp("moto"), enforce_iam=True) as server:
        yield server


@pytest.fixture(scope="session")
def moto_conditions(moto: MotoServer) -> Iterator[MotoServer]:
    """The session's moto behind emulation.s3_conditions: IAM Conditions (s3:prefix on listings, kms:ViaService
    and the encryption context on direct KMS calls) are evaluated too. Deploy into it to get such an endpoint."""
    with with_conditions(moto) as server:
        yield server


@pytest.fixture(scope="session")
def gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsServer]:
    """gcp-storage-emulator behind the IAM proxy (emulation.gcs_iam), plus a local token endpoint for the
    emitted service account key: the bindings a deployed stack declares decide every request."""
    with gcs_server(tmp_path_factory.mktemp("gcs"), enforce_iam=True) as server:
        yield server


@pytest.fixture(scope="session")
def gcs_iam(gcs: GcsServer) -> GcsIamProxy:
    """The enforcing proxy of the session's GCS server: its policy (declared bindings) and every decision."""
    assert gcs.iam is not None
    return gcs.iam


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteServer]:
    """Azurite's blob service over HTTPS (throwaway local CA) with one registered storage account."""
    with azurite_server(tmp_path_factory.mktemp("azurite")) as server:
        yield server


@dataclass
class DeployedStack:
    """The AWS stack deployed into moto by the real program; ``key`` is the emitted access key."""

    run: ProgramRun
    mocks: EmulatorMocks
    server: Any
    config: dict[str, Any] = field(default_factory=dict)
    stack: str = "test"

    @property
    def env(self) -> dict[str, str]:
        return self.run.outputs["airflow_env"]

    @property
    def bucket(self) -> str:
        return self.run.outputs["bucket_name"]

    @property
    def connection(self) -> dict[str, Any]:
        conn_id = self.env["AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH"].split("://", 1)[1].split("@", 1)[0]
        return json.loads(self.env[f"AIRFLOW_CONN_{conn_id.upper()}"])

    @property
    def key(self) -> tuple[str, str]:
        return self.connection["login"], self.connection["password"]

    def client(self, service: str = "s3") -> Any:
        """A boto3 client signed with the emitted (least-privilege) key."""
        return self.server.client(service, self.key)

    def gcp_credentials(self) -> Any:
        """The emitted service account key (keyfile_dict) as google-auth credentials."""
        from google.oauth2 import service_account

        keyfile = json.loads(self.connection["extra"]["keyfile_dict"])
        scopes = ["https://www.googleapis.com/auth/devstorage.full_control"]
        return service_account.Credentials.from_service_account_info(keyfile, scopes=scopes)


def deploy(server: MotoServer | GcsServer | AzuriteServer, *, stack: str = "test", **settings: Any) -> DeployedStack:
    """Run the real program as stack ``stack`` with the mocks that deploy into ``server``'s emulator."""
    if isinstance(server, GcsServer):
        mocks: EmulatorMocks = GcsMocks(server)
        settings = {"cloud": "gcp", "project": "emulated-project", **settings}
    elif isinstance(server, AzuriteServer):
        mocks = AzuriteMocks(server)
        expiry = (datetime.now(timezone.utc) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        settings = {"cloud": "azure", "storageAccountName": server.account_name, "sasExpiry": expiry, **settings}
    else:
        mocks = MotoMocks(server)
    allow_http = server.endpoint.startswith("http:")
    config = {"endpointUrl": server.endpoint, "allowHttpEndpoint": allow_http, "forceDestroy": True, **settings}
    run = run_program(_settings(config), mocks, stack=stack, provider_config=_provider_keys(config))
    return DeployedStack(run, mocks, server, config, stack)


def _settings(config: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in config.items() if ":" not in key}


def _provider_keys(config: dict[str, Any]) -> dict[str, Any]:
    """Keys such as ``aws:region`` are the stack's provider config, not the program's settings."""
    return {key: value for key, value in config.items() if ":" in key}


def redeploy(deployed: DeployedStack, **changes: Any) -> tuple[DeployedStack, list[str]]:
    """`pulumi up` on a deployed stack with some settings changed (None removes one); returns the stack as it
    now is and what the update deleted."""
    config = {k: v for k, v in {**deployed.config, **changes}.items() if v is not None}
    run, deleted = update_program(
        _settings(config), deployed.mocks, stack=deployed.stack, provider_config=_provider_keys(config)
    )
    return DeployedStack(run, deployed.mocks, deployed.server, config, deployed.stack), deleted


@pytest.fixture(scope="module")
def aws_stack(moto: MotoServer) -> Iterator[DeployedStack]:
    stack = deploy(moto)
    yield stack
    stack.mocks.destroy()


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
