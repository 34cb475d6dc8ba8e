"""Every command block of the docs pages runs, in order, on the emulators.

A ``sh`` block is preceded by ``<!-- docs-test: aws, gcp, azure -->`` (the clouds it is run on) or
``<!-- docs-test: not run (why) -->``. In a run block:
- ``xcom-backend ...`` lines and pipes run as written in bash, in a fresh directory, with a stand-in ``pulumi``
  on PATH that answers ``pulumi stack output --json --show-secrets`` with the stack's current outputs;
- ``pulumi config set`` / ``pulumi up`` and ``az storage account keys renew`` have no CLI here (no Pulumi CLI,
  no Azure CLI, no cloud): they are carried out by their emulated counterparts: the setting is applied, the real
  program runs as an update on the emulator (emulation.pulumi_runner.update_program), Azurite renews the key.
Any other command fails the test, so no command in the docs goes unrun without saying why.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from emulation.airflow_run import scrubbed_environ
from emulation.azurite import AzuriteServer, azurite_server
from tests.conftest import DeployedStack, deploy, redeploy

pytestmark = pytest.mark.integration
DOCS = Path(__file__).resolve().parents[2] / "docs"
MARKER = re.compile(r"<!-- docs-test: (?P<what>[^>]*?) -->\n```(?P<lang>\w*)\n(?P<body>.*?)```", re.DOTALL)
FENCE = re.compile(r"^```sh$", re.MULTILINE)
# The stack each page's commands start from, where the page begins with a deployed stack.
PRESETS: dict[tuple[str, str], dict[str, Any]] = {
    ("rotation.md", "aws"): {},
    ("rotation.md", "gcp"): {},
    ("rotation.md", "azure"): {"deployments": ["sales"]},
}
STAND_IN_PULUMI = """#!/bin/sh
if [ "$1 $2" = "stack output" ]; then exec cat "$XCOM_DOCS_OUTPUTS"; fi
echo "pulumi $*: not emulated in the docs test" >&2
exit 1
"""


@dataclass
class Block:
    page: str
    clouds: list[str]  # empty: not run
    reason: str
    lines: list[str]


def blocks() -> list[Block]:
    found = []
    for page in sorted(DOCS.glob("*.md")):
        text = page.read_text()
        marked = list(MARKER.finditer(text))
        assert len(FENCE.findall(text)) == sum(m["lang"] == "sh" for m in marked), f"{page.name}: unmarked sh block"
        for match in marked:
            what = match["what"].strip()
            lines = [line.strip() for line in match["body"].splitlines() if line.strip()]
            if what.startswith("not run"):
                assert re.fullmatch(r"not run \(.+\)", what), f"{page.name}: say why a block is not run"
                found.append(Block(page.name, [], what, lines))
            else:
                found.append(Block(page.name, [c.strip() for c in what.split(",")], "", lines))
    return found


def scenarios() -> list[tuple[str, str]]:
    return sorted({(block.page, cloud) for block in blocks() for cloud in block.clouds})


@dataclass
class Scenario:
    server: Any
    workdir: Path
    stack: DeployedStack | None = None
    config: dict[str, Any] = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)

    def pulumi_config_set(self, args: list[str]) -> None:
        path = "--path" in args
        key, value = [arg for arg in args if arg != "--path"]
        if path:
            name, index = re.fullmatch(r"(\w+)\[(\d+)\]", key).groups()  # type: ignore[union-attr]
            items = list(self.config.get(name, []))
            items[int(index) : int(index) + 1] = [value]
            self.config[name] = items
        else:
            self.config[key] = value

    def pulumi_up(self) -> None:
        if self.stack is None:
            self.stack = deploy(self.server, stack="docs", **self.config)
        else:
            self.stack, _ = redeploy(self.stack, **self.config)
        outputs = self.workdir / ".outputs.json"
        outputs.write_text(json.dumps(self.stack.run.outputs))
        outputs.chmod(0o600)

    def shell(self, line: str) -> None:
        bin_dir = self.workdir / ".bin"
        bin_dir.mkdir(exist_ok=True)
        (bin_dir / "pulumi").write_text(STAND_IN_PULUMI)
        (bin_dir / "pulumi").chmod(0o700)
        env = {
            **scrubbed_environ(),
            **self.server.client_env,
            "PATH": f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin",
            "AIRFLOW_HOME": str(self.workdir / "airflow-home"),
            "AWS_EC2_METADATA_DISABLED": "true",
            "XCOM_DOCS_OUTPUTS": str(self.workdir / ".outputs.json"),
        }
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", line],
            cwd=self.workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, f"{line}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"

    def run(self, line: str) -> None:
        words = shlex.split(line)
        if words[:3] == ["pulumi", "config", "set"]:
            self.pulumi_config_set(words[3:])
        elif words[:2] == ["pulumi", "up"]:
            self.pulumi_up()
        elif words[:5] == ["az", "storage", "account", "keys", "renew"]:
            self.server.renew_key(words[words.index("--key") + 1])
        elif words[0] == "xcom-backend" or (words[0] == "for" and "xcom-backend" in words) or "| xcom-backend" in line:
            self.shell(line)
        else:
            raise AssertionError(f"no way to run {line!r}: mark its block 'not run (why)' or teach this test")
        self.ran.append(line)


@pytest.fixture(scope="module")
def azurite_for_docs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteServer]:
    with azurite_server(Path(tmp_path_factory.mktemp("azurite-docs")), persistent=True) as server:
        yield server


def test_every_sh_block_is_marked_and_not_run_blocks_say_why() -> None:
    found = blocks()
    assert {block.page for block in found} >= {"platform-teams.md", "rotation.md", "component.md"}
    assert all(block.clouds or block.reason for block in found)


@pytest.mark.parametrize(("page", "cloud"), scenarios(), ids=[f"{p}-{c}" for p, c in scenarios()])
def test_the_pages_commands_run_in_order(page: str, cloud: str, request, tmp_path: Path) -> None:
    server = request.getfixturevalue({"aws": "moto", "gcp": "gcs", "azure": "azurite_for_docs"}[cloud])
    scenario = Scenario(server, tmp_path)
    if (page, cloud) in PRESETS:
        scenario.config = dict(PRESETS[page, cloud])
        scenario.pulumi_up()
    try:
        for block in blocks():
            if block.page == page and cloud in block.clouds:
                for line in block.lines:
                    scenario.run(line)
    finally:
        if scenario.stack is not None:
            scenario.stack.mocks.destroy()
    assert scenario.ran
    for written in tmp_path.glob("*.env"):
        assert oct(os.stat(written).st_mode & 0o777) == "0o600", written
