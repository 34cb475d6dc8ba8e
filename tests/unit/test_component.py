"""The XComStorage component: the stack's settings as typed keyword arguments, the same validation and
outputs, the example program under examples/ run under Pulumi's mock runtime, and the component importable
from the built wheel alone."""

from __future__ import annotations

import json
import runpy
import shutil
import subprocess
import sys
import typing
import zipfile
from pathlib import Path
from typing import Any

import pulumi
import pytest

from emulation.pulumi_runner import ProgramRun, RecordingMocks, run_program
from xcom_backend.pulumi import XComStorage, XComStorageArgs
from xcom_backend.pulumi.component import XComStorageError, argument_name
from xcom_backend.pulumi.settings import KEYS

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "platform-xcom" / "__main__.py"
PROJECT = "platform-airflow"  # examples/platform-xcom/Pulumi.yaml


def run_example(**config: Any) -> ProgramRun:
    return run_program(config, RecordingMocks(seed="component"), stack="prod", project=PROJECT, main=example_main)


def example_main() -> None:
    runpy.run_path(str(EXAMPLE), run_name="__main__")


def run_component(mocks: RecordingMocks | None = None, **arguments: Any) -> ProgramRun:
    def main() -> dict[str, Any]:
        return XComStorage("xcom", **arguments).outputs

    return run_program({}, mocks or RecordingMocks(seed="component"), stack="prod", project=PROJECT, main=main)


def test_every_stack_setting_is_a_typed_argument() -> None:
    hints = typing.get_type_hints(XComStorageArgs)
    assert set(hints) == {argument_name(key.name) for key in KEYS}
    expected = {"string": str, "integer": int, "boolean": bool}
    for key in KEYS:
        hint = hints[argument_name(key.name)]
        if key.type == "array":
            assert typing.get_origin(hint) is not None and "Sequence" in str(hint), key.name
        elif key.name == "tags":
            assert str in typing.get_args(hint)
        elif typing.get_origin(hint) is typing.Literal:
            assert all(isinstance(choice, expected[key.type]) for choice in typing.get_args(hint))
        else:
            assert hint is expected[key.type], key.name


def test_the_example_program_runs_under_mocks_with_the_stacks_outputs() -> None:
    program = run_example()
    outputs = program.outputs
    assert set(outputs["airflow_env"]) == {"sales", "ml"} and "airflow_env" in program.secret_outputs
    for name in ("sales", "ml"):
        details = outputs["deployments"][name]
        assert details["user_name"] == f"{PROJECT}-prod-xcom-{name}"  # <project>-<stack>-<component>-<deployment>
        assert outputs["objectstorage_path"][name].endswith(f"/xcom/{name}")
    # The stack with the same settings declares and outputs the same things (names aside).
    stack = run_program(
        {
            "deployments": ["sales", "ml"],
            "compression": "gzip",
            "expiryDays": 14,
            "tags": "team=platform,cost-center=1234",
        },
        RecordingMocks(seed="component"),
        stack="prod",
    )
    assert set(outputs) == set(stack.outputs)
    assert sorted(r.type for r in program.resources if r.type != "airflow-xcom-backend:index:XComStorage") == sorted(
        r.type for r in stack.resources if r.type != "airflow-xcom-backend:aws:XComStorage"
    )
    for name in ("sales", "ml"):
        assert set(outputs["deployments"][name]) == set(stack.outputs["deployments"][name])
        assert set(outputs["airflow_env"][name]) == set(stack.outputs["airflow_env"][name])
    bucket = program.one("aws:s3/bucket:Bucket").inputs
    assert bucket["tags"] == {
        "managed-by": "pulumi",
        "purpose": "airflow-xcom",
        "team": "platform",
        "cost-center": "1234",
    }
    assert program.one("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration").inputs["rules"][1][
        "expiration"
    ] == {"days": 14}


def test_the_example_takes_its_deployments_and_rotation_from_stack_config() -> None:
    program = run_example(deployments=["hr"], credentialGeneration=2, keepPreviousCredential=True)
    assert set(program.outputs["airflow_env"]) == {"hr"}
    keys = sorted(r.name for r in program.of_type("aws:iam/accessKey:AccessKey"))
    assert keys == ["xcom-hr-access-key", "xcom-hr-access-key-g2"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"threshold": -5}, 'XComStorage("xcom") threshold: must be >= -1, got -5'),
        ({"cloud": "azure"}, 'XComStorage("xcom") sas_expiry: is required when credentials=sas'),
        ({"deployments": ["Sales"]}, "XComStorage(\"xcom\") deployments: 'Sales' is not a deployment name"),
        ({"tags": {"aws:x": "1"}}, "XComStorage(\"xcom\") tags: 'aws:x': the aws: prefix is reserved"),
        ({"treshold": 5}, 'XComStorage("xcom") treshold: unknown argument; known: allow_http_endpoint, backend,'),
    ],
)
def test_bad_arguments_are_named_before_any_resource(arguments: dict[str, Any], message: str) -> None:
    mocks = RecordingMocks()
    with pytest.raises(XComStorageError) as caught:
        run_component(mocks, **arguments)
    assert isinstance(caught.value, pulumi.RunError) and isinstance(caught.value, ValueError)
    assert message in str(caught.value)
    assert mocks.resources == []


def test_every_bad_argument_is_named_at_once() -> None:
    with pytest.raises(XComStorageError) as caught:
        run_component(threshold=-5, treshold=5)
    assert [problem.split(":")[0] for problem in caught.value.problems] == [
        'XComStorage("xcom") treshold',
        'XComStorage("xcom") threshold',
    ]


def test_two_components_in_one_program_get_their_own_resources() -> None:
    def main() -> dict[str, Any]:
        first, second = XComStorage("xcom-a"), XComStorage("xcom-b", cloud="gcp", project="my-project-1")
        third = XComStorage("xcom-c")
        return {"a": first.bucket_name, "b": second.bucket_name, "c": third.access_key_id}

    program = run_program({}, RecordingMocks(seed="two"), stack="prod", project=PROJECT, main=main)
    urns = [r.options.urn for r in program.resources]
    assert len(urns) == len(set(urns))
    users = sorted(r.inputs["name"] for r in program.of_type("aws:iam/user:User"))
    assert users == [f"{PROJECT}-prod-xcom-a", f"{PROJECT}-prod-xcom-c"]


SDKS = ("pulumi_aws", "pulumi_gcp", "pulumi_azure")


@pytest.mark.parametrize(
    ("entry", "run", "cloud"),
    [
        ("import stacks.program, stacks.settings", "run_program({}, RecordingMocks())", "aws"),
        (
            "from xcom_backend.pulumi import XComStorage",
            "run_program({}, RecordingMocks(), main=lambda: XComStorage('x', cloud='gcp', project='p-12345').outputs)",
            "gcp",
        ),
    ],
    ids=["stack-program", "component"],
)
def test_only_the_selected_clouds_sdk_is_imported(entry: str, run: str, cloud: str) -> None:
    selected = {"aws": "pulumi_aws", "gcp": "pulumi_gcp", "azure": "pulumi_azure"}[cloud]
    others = tuple(sdk for sdk in SDKS if sdk != selected)
    probe = (
        f"import sys; {entry}; import xcom_backend.pulumi.settings; "
        f"assert not [m for m in sys.modules if m.startswith({SDKS!r})]; "
        f"from emulation.pulumi_runner import run_program, RecordingMocks; {run}; "
        f"assert {selected!r} in sys.modules; "
        f"assert not [m for m in sys.modules if m.startswith({others!r})]; print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok"


# Runs with only the unpacked wheel (and the installed Pulumi SDKs) importable: no checkout, no stacks/.
INSTALLED_RUN = """
import json, runpy, sys
import pulumi
import xcom_backend
assert xcom_backend.__file__.startswith(sys.argv[1]), xcom_backend.__file__

class Mocks(pulumi.runtime.Mocks):
    def new_resource(self, args):
        outputs = dict(args.inputs)
        if args.typ == "aws:s3/bucket:Bucket":
            outputs.update(bucket="bucket-1", arn="arn:aws:s3:::bucket-1")
        if args.typ == "aws:iam/accessKey:AccessKey":
            outputs.update(secret="s3cr3t", createDate="2026-01-01T00:00:00Z")
        return args.name + "-id", outputs
    def call(self, args):
        return {}

pulumi.runtime.set_mocks(Mocks(), project="platform-airflow", stack="prod", preview=False)

@pulumi.runtime.test
def run():
    runpy.run_path(sys.argv[2], run_name="__main__")
    stack = pulumi.runtime.settings.get_root_resource()
    env = stack.outputs["airflow_env"]
    return pulumi.Output.from_input(env).apply(lambda envs: print(json.dumps(sorted(envs))))

run()
"""


def test_the_built_wheel_alone_provides_the_component(tmp_path: Path) -> None:
    # Built from a copy of what the wheel is made of, so no build/ directory is left in the checkout.
    source = tmp_path / "source"
    shutil.copytree(REPO / "xcom_backend", source / "xcom_backend", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            str(source),
            "-w",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("airflow_xcom_objectstorage-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for module in ("__init__", "component", "settings", "aws", "gcp", "azure", "env_outputs"):
        assert f"xcom_backend/pulumi/{module}.py" in names
    assert not [name for name in names if name.startswith(("stacks/", "emulation/", "tests/"))]
    unpacked = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(unpacked)
    result = subprocess.run(
        [sys.executable, "-c", INSTALLED_RUN, str(unpacked), str(EXAMPLE)],
        cwd=tmp_path,
        env={"PYTHONPATH": str(unpacked), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == ["ml", "sales"]
