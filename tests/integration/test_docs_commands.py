"""Every command block of the README and the docs pages runs, in order, on the emulators.

A ``sh`` block is preceded by ``<!-- docs-test: aws, gcp, azure -->`` (the clouds it is run on) or
``<!-- docs-test: not run (why) -->``. In a run block:
- ``xcom-backend ...`` lines (also as ``.venv/bin/xcom-backend``), pipes, loops and ``sh <script>`` run as
  written in bash, in a fresh directory, with stand-ins on PATH for the CLIs that need an account: ``pulumi``
  answers ``pulumi stack output --json --show-secrets`` with the stack's current outputs, ``astro`` checks the
  ``astro deployment variable`` calls an exported script makes;
- ``pulumi login``, ``pulumi stack init <name>`` (loads ``stacks/Pulumi.<name>.yaml``), ``pulumi config set``,
  ``pulumi up`` and ``az storage account keys renew`` have no CLI here (no Pulumi CLI, no Azure CLI, no cloud):
  they are carried out by their emulated counterparts: the settings are applied, the real program runs (as an
  update after the first) on the emulator (emulation.pulumi_runner), Azurite renews the key;
- ``make <target>`` lines are the repo's own targets (checked to exist): ``make venv`` and ``make test`` are what
  CI runs, ``make demo`` is run by tests/e2e/test_demo.py, ``make bench`` and ``make reliability`` print figures.
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
REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
PAGES = [REPO / "README.md", *sorted(DOCS.glob("*.md"))]
MARKER = re.compile(r"<!-- docs-test: (?P<what>[^>]*?) -->\n```(?P<lang>\w*)\n(?P<body>.*?)```", re.DOTALL)
FENCE = re.compile(r"^```sh$", re.MULTILINE)
# The stack each page's commands start from, where the page begins with a deployed stack.
PRESETS: dict[tuple[str, str], dict[str, Any]] = {
    ("rotation.md", "aws"): {},
    ("rotation.md", "gcp"): {},
    ("rotation.md", "azure"): {"deployments": ["sales"]},
    ("env.md", "aws"): {},
    ("backend.md", "aws"): {},
}
# Pages whose commands run where Airflow runs: the exported env applied and a metadata DB migrated.
IN_AIRFLOW = {"backend.md"}
STAND_IN_PULUMI = """#!/bin/sh
if [ "$1 $2" = "stack output" ]; then exec cat "$XCOM_DOCS_OUTPUTS"; fi
echo "pulumi $*: not emulated in the docs test" >&2
exit 1
"""
# The Astro CLI's `astro deployment variable create|update --deployment-id ID [--secret] KEY=VALUE...`.
STAND_IN_ASTRO = """#!/bin/sh
[ "$1 $2" = "deployment variable" ] || { echo "astro $*: unexpected" >&2; exit 1; }
case "$3" in create|update) ;; *) echo "astro: verb $3" >&2; exit 1;; esac
[ "$4" = "--deployment-id" ] && [ -n "$5" ] || { echo "astro: no --deployment-id" >&2; exit 1; }
shift 5
[ "$1" = "--secret" ] && shift
[ $# -gt 0 ] || { echo "astro: no variables" >&2; exit 1; }
for pair in "$@"; do case "$pair" in *=*) ;; *) echo "astro: $pair is not KEY=VALUE" >&2; exit 1;; esac; done
echo "$*" >> "$XCOM_DOCS_ASTRO_LOG"
"""
MAKE_TARGETS = {"venv", "test", "demo", "bench", "reliability"}


@dataclass
class Block:
    page: str
    clouds: list[str]  # empty: not run
    reason: str
    lines: list[str]


def blocks() -> list[Block]:
    found = []
    for page in PAGES:
        text = page.read_text()
        marked = list(MARKER.finditer(text))
        assert len(FENCE.findall(text)) == sum(m["lang"] == "sh" for m in marked), f"{page.name}: unmarked sh block"
        for match in marked:
            what = match["what"].strip()
            lines = [line.strip() for line in match["body"].splitlines() if line.split("#", 1)[0].strip()]
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

    provider_config: dict[str, Any] = field(default_factory=dict)
    airflow_env: dict[str, str] = field(default_factory=dict)
    stack_name: str = "docs"  # principal names derive from it: one per page, so pages never collide

    def pulumi_stack_init(self, name: str) -> None:
        from emulation.demo import stack_config

        self.config, self.provider_config = stack_config(REPO / "stacks" / f"Pulumi.{name}.yaml")

    def pulumi_config_set(self, args: list[str]) -> None:
        path = "--path" in args
        key, value = [arg for arg in args if arg != "--path"]
        if ":" in key:  # a provider's key (aws:region, gcp:project, ...)
            self.provider_config[key] = value
            return
        if path:
            name, index = re.fullmatch(r"(\w+)\[(\d+)\]", key).groups()  # type: ignore[union-attr]
            items = list(self.config.get(name, []))
            items[int(index) : int(index) + 1] = [value]
            self.config[name] = items
        else:
            self.config[key] = value

    def pulumi_up(self) -> None:
        settings = {**self.config, **self.provider_config}
        if self.stack is None:
            self.stack = deploy(self.server, stack=self.stack_name, **settings)
        else:
            self.stack, _ = redeploy(self.stack, **settings)
        outputs = self.workdir / ".outputs.json"
        outputs.write_text(json.dumps(self.stack.run.outputs))
        outputs.chmod(0o600)

    def enter_airflow(self) -> None:
        """Run the next commands as inside a deployment: the exported env, a migrated metadata DB."""
        from emulation.airflow_run import make_airflow_home
        from tests.e2e.test_tutorial_dag import exported_env

        assert self.stack is not None
        (self.workdir / ".export").mkdir(exist_ok=True)
        env = exported_env(self.stack, self.workdir / ".export")
        home = make_airflow_home(self.workdir / "airflow-home", env, self.server.client_env)
        self.airflow_env = {k: v for k, v in home.env.items() if k.startswith(("AIRFLOW", "GCSFS", "SSL", "REQ"))}

    def shell(self, line: str) -> None:
        bin_dir = self.workdir / ".bin"
        bin_dir.mkdir(exist_ok=True)
        for name, script in (("pulumi", STAND_IN_PULUMI), ("astro", STAND_IN_ASTRO)):
            (bin_dir / name).write_text(script)
            (bin_dir / name).chmod(0o700)
        # The docs' own paths: the repo's .venv, and the placeholder project directory of the AWS page.
        (self.workdir / ".venv" / "bin").mkdir(parents=True, exist_ok=True)
        if not (self.workdir / ".venv" / "bin" / "xcom-backend").exists():
            (self.workdir / ".venv" / "bin" / "xcom-backend").symlink_to(Path(sys.executable).parent / "xcom-backend")
        (self.workdir / "path" / "to" / "astro-project").mkdir(parents=True, exist_ok=True)
        env = {
            **scrubbed_environ(),
            **self.server.client_env,
            "PATH": f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin",
            "AIRFLOW_HOME": str(self.workdir / "airflow-home"),
            "AWS_EC2_METADATA_DISABLED": "true",
            "XCOM_DOCS_OUTPUTS": str(self.workdir / ".outputs.json"),
            "XCOM_DOCS_ASTRO_LOG": str(self.workdir / ".astro-calls"),
            **self.airflow_env,
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
        words = shlex.split(line, comments=True)
        command = next((word for word in words if "=" not in word), "")  # after VAR=value assignments
        if words[:2] == ["make", words[1] if len(words) > 1 else ""]:
            target = words[1]
            assert target in MAKE_TARGETS and f"\n{target}:" in (REPO / "Makefile").read_text(), line
        elif words[:2] == ["pulumi", "login"]:
            pass  # the emulated engine keeps its state in memory
        elif words[:3] == ["pulumi", "stack", "init"]:
            self.pulumi_stack_init(words[3])
        elif words[:3] == ["pulumi", "config", "set"]:
            self.pulumi_config_set(words[3:])
        elif words[:2] == ["pulumi", "up"]:
            self.pulumi_up()
        elif words[:5] == ["az", "storage", "account", "keys", "renew"]:
            self.server.renew_key(words[words.index("--key") + 1])
        elif command in ("xcom-backend", ".venv/bin/xcom-backend", "sh", "for") or "xcom-backend " in line:
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
    assert {block.page for block in found} >= {"README.md", "platform-teams.md", "rotation.md", "component.md"}
    assert all(block.clouds or block.reason for block in found)


@pytest.mark.parametrize(("page", "cloud"), scenarios(), ids=[f"{p}-{c}" for p, c in scenarios()])
def test_the_pages_commands_run_in_order(page: str, cloud: str, request, tmp_path: Path) -> None:
    server = request.getfixturevalue({"aws": "moto", "gcp": "gcs", "azure": "azurite_for_docs"}[cloud])
    scenario = Scenario(server, tmp_path, stack_name="docs-" + page.removesuffix(".md").lower().replace(".", "-"))
    if (page, cloud) in PRESETS:
        scenario.config = dict(PRESETS[page, cloud])
        scenario.pulumi_up()
    if page in IN_AIRFLOW:
        scenario.enter_airflow()
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
