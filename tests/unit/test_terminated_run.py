"""A test run stopped with SIGTERM (a CI job's timeout or cancel, which may send it twice) tears its fixtures
down, so the services they started (emulators, PostgreSQL, Redis, the API server, Celery workers) do not outlive
it (tests/conftest.py)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

SLEEPER = """
import time
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def service():
    yield
    Path({tearing!r}).write_text("tearing down")
    time.sleep(2)  # a slow teardown (PostgreSQL's shutdown), during which a second SIGTERM arrives
    Path({torn_down!r}).write_text("torn down")


def test_sleeps(service):
    Path({started!r}).write_text("started")
    time.sleep(120)
"""


def test_a_terminated_run_tears_its_fixtures_down(tmp_path: Path) -> None:
    started, tearing, torn_down = tmp_path / "started", tmp_path / "tearing", tmp_path / "torn-down"
    test_file = tmp_path / "test_sleeper.py"
    test_file.write_text(SLEEPER.format(started=str(started), tearing=str(tearing), torn_down=str(torn_down)))
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider", "-q", str(test_file)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while not started.exists() and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert started.exists(), run.communicate(timeout=10)[0].decode()[-2000:]
        run.send_signal(signal.SIGTERM)
        while not tearing.exists() and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        run.send_signal(signal.SIGTERM)  # again, while the first one's teardown runs
        output = run.communicate(timeout=60)[0].decode()
    finally:
        if run.poll() is None:
            run.kill()
    assert torn_down.read_text() == "torn down", output[-2000:]
    assert run.returncode != 0  # still a failed run


def test_an_emulator_patch_refuses_functions_it_does_not_know() -> None:
    import pytest

    from emulation.processes import require_known_sources

    def patched() -> int:
        return 1

    with pytest.raises(ValueError, match=r"patched changed: emulation/x\.py needs review"):
        require_known_sources("emulation/x.py", {"patched": "0" * 64}, {"patched": patched})
