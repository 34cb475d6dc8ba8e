"""Turn ``pulumi stack output --json --show-secrets`` into what each kind of deployment loads.

Formats: dotenv (Astro project ``.env``, docker compose), astro (Astro CLI commands, secrets flagged),
k8s-secret (a Secret manifest), helm-values (values for the official apache-airflow chart that put that
Secret's keys in every Airflow container's env), json, shell (``export K=V``).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

AIRFLOW_ENV_OUTPUT = "airflow_env"
BLOCK_BEGIN = "# >>> xcom-backend (managed by `xcom-backend export`; edits inside are overwritten) >>>"
BLOCK_END = "# <<< xcom-backend <<<"
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MASKED = "[secret]"


class ExportError(ValueError):
    """Input that cannot be turned into a deployment's env."""


def deployment_names(outputs: Mapping[str, object]) -> list[str]:
    """The deployments a stack serves (empty for a stack without the ``deployments`` setting)."""
    details = outputs.get("deployments")
    return sorted(details) if isinstance(details, dict) else []


def load_airflow_env(stack_output_json: str, deployment: str | None = None) -> dict[str, str]:
    """The ``airflow_env`` map from a stack's JSON outputs (``deployment``'s, for a stack with deployments),
    checked to hold real values."""
    try:
        outputs = json.loads(stack_output_json)
    except json.JSONDecodeError as err:
        raise ExportError(f"stack output is not JSON ({err}); run `pulumi stack output --json --show-secrets`") from err
    if not isinstance(outputs, dict) or AIRFLOW_ENV_OUTPUT not in outputs:
        raise ExportError(f"stack output has no '{AIRFLOW_ENV_OUTPUT}'; is this the xcom-backend stack?")
    env = outputs[AIRFLOW_ENV_OUTPUT]
    if env == _MASKED:
        raise ExportError(
            f"'{AIRFLOW_ENV_OUTPUT}' is masked as {_MASKED}: run `pulumi stack output --json --show-secrets`"
        )
    names = deployment_names(outputs)
    if names:
        if deployment is None:
            raise ExportError(
                f"this stack serves {len(names)} deployments ({', '.join(names)}): pass --deployment NAME"
            )
        if deployment not in names or not isinstance(env, dict) or deployment not in env:
            raise ExportError(f"no deployment {deployment!r} in this stack; its deployments: {', '.join(names)}")
        env = env[deployment]
    elif deployment is not None:
        raise ExportError(
            f"this stack serves a single deployment (it has no deployments setting); drop --deployment {deployment}"
        )
    if not isinstance(env, dict) or not env:
        raise ExportError(f"'{AIRFLOW_ENV_OUTPUT}' must be a non-empty map of environment variables")
    for name, value in env.items():
        if not _ENV_NAME_RE.match(name):
            raise ExportError(f"'{name}' is not a valid environment variable name")
        if not isinstance(value, str):
            raise ExportError(f"value of '{name}' must be a string, got {type(value).__name__}")
        if value == _MASKED:
            raise ExportError(f"value of '{name}' is masked; run `pulumi stack output --json --show-secrets`")
    return dict(env)


def _dotenv_quote(value: str) -> str:
    # Single quotes: python-dotenv and docker compose take the content literally, except \\ and \'.
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def render_dotenv(env: Mapping[str, str]) -> str:
    if any("\n" in value or "\r" in value for value in env.values()):
        raise ExportError("a value contains a line break, which .env files cannot carry portably")
    return "".join(f"{name}={_dotenv_quote(value)}\n" for name, value in sorted(env.items()))


def merge_managed_block(existing: str, env: Mapping[str, str]) -> str:
    """Replace our block in an existing .env (an Astro project's has other settings), keeping the rest."""
    lines = existing.splitlines(keepends=True)
    kept: list[str] = []
    inside = False
    for line in lines:
        stripped = line.strip()
        if stripped == BLOCK_BEGIN:
            inside = True
            continue
        if stripped == BLOCK_END:
            inside = False
            continue
        if inside:
            continue
        name = stripped.removeprefix("export ").split("=", 1)[0].strip()
        if name in env:
            raise ExportError(
                f"{name} is already set outside the managed block of the .env file; remove that line first"
            )
        kept.append(line)
    if inside:
        raise ExportError(f"the .env file has '{BLOCK_BEGIN}' without '{BLOCK_END}'; fix it by hand")
    head = "".join(kept)
    if head and not head.endswith("\n"):
        head += "\n"
    return f"{head}{BLOCK_BEGIN}\n{render_dotenv(env)}{BLOCK_END}\n"


def write_private_file(path: Path, content: str) -> None:
    """Write atomically with mode 0600: secrets are never readable by others, not even half-written."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write(content)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def is_secret(name: str) -> bool:
    """Connections carry credentials; the other variables are settings."""
    return name.startswith("AIRFLOW_CONN_")


def render_json(env: Mapping[str, str], **_: str) -> str:
    return json.dumps(dict(sorted(env.items())), indent=2) + "\n"


def render_shell(env: Mapping[str, str], **_: str) -> str:
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in sorted(env.items()))


def render_k8s_secret(env: Mapping[str, str], *, name: str, namespace: str) -> str:
    manifest = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "xcom-backend", "app.kubernetes.io/part-of": "airflow"},
        },
        "type": "Opaque",
        "stringData": dict(sorted(env.items())),
    }
    return yaml.safe_dump(manifest, sort_keys=False, width=1_000_000)


def render_helm_values(env: Mapping[str, str], *, name: str, namespace: str) -> str:
    """The chart's documented ``secret`` list: each key of the Secret becomes an env var everywhere."""
    values = {"secret": [{"envName": key, "secretName": name, "secretKey": key} for key in sorted(env)]}
    header = (
        f"# Values for the official apache-airflow Helm chart. Create the Secret first:\n"
        f"#   xcom-backend export --format k8s-secret --secret-name {name} --namespace {namespace} -o secret.yaml\n"
        f"#   kubectl apply -f secret.yaml\n"
        f"# then: helm upgrade --install airflow apache-airflow/airflow -n {namespace} -f this-file.yaml\n"
    )
    return header + yaml.safe_dump(values, sort_keys=False)


def render_astro(env: Mapping[str, str], **_: str) -> str:
    """Astro CLI commands; connection variables are created with --secret so Astro masks them."""
    plain = [f"{k}={v}" for k, v in sorted(env.items()) if not is_secret(k)]
    secret = [f"{k}={v}" for k, v in sorted(env.items()) if is_secret(k)]
    lines = [
        "#!/bin/sh",
        "# Run with ASTRO_DEPLOYMENT_ID set; for variables that already exist use `update` instead of `create`.",
        "set -eu",
        'VERB="${ASTRO_VARIABLE_VERB:-create}"',
    ]
    for pairs, flag in ((plain, ""), (secret, " --secret")):
        if pairs:
            args = " ".join(shlex.quote(pair) for pair in pairs)
            lines.append(f'astro deployment variable "$VERB" --deployment-id "$ASTRO_DEPLOYMENT_ID"{flag} {args}')
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Format:
    render: Callable[..., str]
    default_output: str
    holds_secrets: bool
    summary: str  # one line for `xcom-backend --help`


FORMATS: Mapping[str, Format] = {
    "dotenv": Format(
        lambda env, **_: render_dotenv(env),
        ".env",
        True,
        "a managed block in a .env file (Astro project, docker compose); the rest of the file is kept",
    ),
    "astro": Format(
        render_astro, "astro-variables.sh", True, "a script of astro deployment variable commands (secrets flagged)"
    ),
    "k8s-secret": Format(
        render_k8s_secret, "airflow-xcom-secret.yaml", True, "a Kubernetes Secret manifest holding the env"
    ),
    "helm-values": Format(
        render_helm_values,
        "-",
        False,
        "values for the apache-airflow Helm chart that put that Secret's keys into every Airflow container",
    ),
    "json": Format(render_json, "airflow-env.json", True, "the env as one JSON object"),
    "shell": Format(render_shell, "airflow-env.sh", True, "export NAME='value' lines for a POSIX shell"),
}
