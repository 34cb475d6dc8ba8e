"""`export --stack` runs `pulumi stack output --json --show-secrets`; a stand-in `pulumi` on PATH records it."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from tests.unit.test_export import ENV


def fake_pulumi(bin_dir: Path, log: Path) -> None:
    script = bin_dir / "pulumi"
    outputs = json.dumps({"airflow_env": ENV})
    script.write_text(f"#!/bin/sh\necho \"$@\" >> {log}\ncat <<'JSON'\n{outputs}\nJSON\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


def test_stack_runs_the_pulumi_cli_with_show_secrets(tmp_path: Path) -> None:
    log = tmp_path / "calls"
    fake_pulumi(tmp_path, log)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    target = tmp_path / "x.json"
    result = subprocess.run(
        [sys.executable, "-m", "xcom_backend", "export", "--stack", "aws", "-f", "json", "-o", str(target)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert log.read_text().split() == ["stack", "output", "--json", "--show-secrets", "--stack", "aws"]
    assert json.loads(target.read_text()) == ENV


def test_without_the_cli_stack_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "xcom_backend", "export", "--stack"],
        env={**os.environ, "PATH": str(Path(sys.executable).parent)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2 and "needs the Pulumi CLI on PATH" in result.stderr
