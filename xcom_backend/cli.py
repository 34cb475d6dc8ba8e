"""xcom-backend: export a stack's env to a deployment, verify it there, collect orphaned XCom objects."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from xcom_backend.errors import StoreConfigError
from xcom_backend.export import FORMATS, ExportError, load_airflow_env, merge_managed_block, write_private_file
from xcom_backend.gc import GcError
from xcom_backend.verify import DEFAULT_WARN_DAYS


class CommandError(ValueError):
    """A command's options or inputs that cannot be used: one line on stderr, exit code 2."""


def _read_input(args: argparse.Namespace) -> str:
    if args.stack is not None:
        return _pulumi_outputs(args.stack)
    if args.input == "-":
        if sys.stdin.isatty() and shutil.which("pulumi"):
            return _pulumi_outputs("")  # nothing piped in: ask the Pulumi CLI for the current stack
        if sys.stdin.isatty():
            raise ExportError(
                "no input: pipe `pulumi stack output --json --show-secrets` in, or pass --input FILE or --stack NAME"
            )
        return sys.stdin.read()
    try:
        return Path(args.input).read_text(encoding="utf-8")
    except OSError as err:
        raise ExportError(f"cannot read --input {args.input}: {err.strerror}") from err


def _pulumi_outputs(stack: str) -> str:
    """Run the Pulumi CLI itself (it must be on PATH and logged in)."""
    pulumi = shutil.which("pulumi")
    if pulumi is None:
        raise ExportError(
            "--stack needs the Pulumi CLI on PATH; or pipe `pulumi stack output --json --show-secrets` in"
        )
    command = [pulumi, "stack", "output", "--json", "--show-secrets", *(["--stack", stack] if stack else [])]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ExportError(f"`{' '.join(command[1:])}` failed: {result.stderr.strip()[-500:]}")
    return result.stdout


def _export(args: argparse.Namespace) -> int:
    env = load_airflow_env(_read_input(args), args.deployment)
    chosen = FORMATS[args.format]
    output = args.output or chosen.default_output
    if args.format == "dotenv" and output != "-":
        target = Path(output)
        existing = target.read_text(encoding="utf-8") if target.exists() else ""
        content = merge_managed_block(existing, env)
    else:
        content = chosen.render(env, name=args.secret_name, namespace=args.namespace)
    if output == "-":
        if chosen.holds_secrets and not args.show_secrets:
            raise ExportError(
                f"refusing to print secrets (the {args.format} output holds the connection's credentials) to "
                "stdout; write to a file with --output, or add --show-secrets"
            )
        sys.stdout.write(content)
        return 0
    write_private_file(Path(output), content)
    print(
        f"wrote {args.format} with {len(env)} variables to {output} (mode 0600): {', '.join(sorted(env))}",
        file=sys.stderr,
    )
    return 0


def _gc(args: argparse.Namespace) -> int:
    from xcom_backend import gc

    older_than = gc.parse_duration(args.older_than)
    store = gc.checked_store()
    scan = gc.find_orphans(store, older_than)
    orphans = scan.orphans
    if scan.not_xcom:
        example = store.url_of(scan.not_xcom[0])
        print(f"left alone: {len(scan.not_xcom)} objects under the prefix that no XCom backend writes (e.g. {example})")
    for item in orphans:
        modified = item.modified.isoformat(timespec="seconds") if item.modified else "unknown time"
        print(f"{'deleting' if args.delete else 'orphan'} {item.url} ({item.size} bytes, written {modified})")
    total = sum(item.size for item in orphans)
    if not args.delete:
        print(
            f"{len(orphans)} orphaned objects ({total} bytes) older than {args.older_than}; "
            "nothing deleted (dry run): add --delete to delete them"
        )
        return 0
    result = gc.delete_orphans(store, orphans, older_than)
    for item, why in result.kept:
        print(f"kept {item.url}: {why}")
    deleted = sum(item.size for item in result.deleted)
    print(f"deleted {len(result.deleted)} orphaned objects ({deleted} bytes); kept {len(result.kept)}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    if args.env_file:
        from dotenv import dotenv_values

        try:
            values = dotenv_values(args.env_file)
        except OSError as err:
            raise CommandError(f"cannot read --env-file {args.env_file}: {err.strerror}") from err
        os.environ.update({k: v for k, v in values.items() if v is not None})
    # Airflow and its providers log to stdout; keep stdout for the report so --json stays parseable.
    with contextlib.redirect_stdout(sys.stderr):
        from xcom_backend.verify import verify

        report = verify(run_probe=not args.no_probe, warn_days=args.warn_days)
    print(report.as_json() if args.json else report.as_text())
    return 0 if report.ok else 1


DESCRIPTION = """\
Object-storage XCom backend for Apache Airflow: export a stack's env to a deployment,
verify it where Airflow runs, and collect orphaned XCom objects.

Typical use, after pulumi up:
  pulumi stack output --json --show-secrets | xcom-backend export --output .env
  xcom-backend verify --env-file .env
"""


def _formats_help() -> str:
    width = max(len(name) for name in FORMATS)
    lines = [f"  {name.ljust(width)}  {fmt.summary}" for name, fmt in FORMATS.items()]
    return "export formats (xcom-backend export --format NAME):\n" + "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xcom-backend",
        description=DESCRIPTION,
        epilog=_formats_help() + "\n\nRun xcom-backend COMMAND --help for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    export = commands.add_parser(
        "export",
        help="write the stack's airflow_env output for a deployment (.env, Astro, Kubernetes, Helm, JSON, shell)",
        description="Reads the output of pulumi stack output --json --show-secrets (from --input, stdin or\n"
        "--stack) and writes the Airflow env of one deployment. Files holding credentials get mode 0600;\n"
        "secrets go to stdout only with --output - --show-secrets.",
        epilog=_formats_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument("--input", "-i", default="-", help="stack output JSON file, or - for stdin (default)")
    export.add_argument(
        "--stack",
        nargs="?",
        const="",
        default=None,
        help="run pulumi stack output --json --show-secrets (optionally for STACK) instead of reading --input",
    )
    export.add_argument(
        "--format",
        "-f",
        choices=list(FORMATS),
        default="dotenv",
        metavar="FORMAT",
        help=f"output format: {', '.join(FORMATS)} (default dotenv; each described below)",
    )
    export.add_argument(
        "--deployment",
        "-d",
        default=None,
        metavar="NAME",
        help="for a stack with deployments: the deployment whose env to write (required there)",
    )
    export.add_argument(
        "--output",
        "-o",
        default=None,
        help="file to write, mode 0600 (default per format: "
        + ", ".join(f"{name} {fmt.default_output}" for name, fmt in FORMATS.items())
        + "); for dotenv only our block of an existing file is replaced; - for stdout",
    )
    export.add_argument("--show-secrets", action="store_true", help="allow printing secrets with --output -")
    export.add_argument("--secret-name", default="airflow-xcom-backend", help="k8s-secret/helm-values: Secret name")
    export.add_argument("--namespace", default="airflow", help="k8s-secret/helm-values: namespace")
    export.set_defaults(handler=_export)

    gc = commands.add_parser(
        "gc",
        help="list (or --delete) objects under the XCom prefix that no XCom row references",
        description="Run where Airflow's metadata DB and the storage connection are configured. Dry run by default.",
    )
    gc.add_argument("--delete", action="store_true", help="delete the orphans instead of only listing them")
    gc.add_argument(
        "--older-than",
        default="1h",
        help="only objects written at least this long ago (0, 30m, 12h, 7d, 2w; default 1h, so objects of "
        "tasks still running are left alone)",
    )
    gc.set_defaults(handler=_gc)

    check = commands.add_parser(
        "verify",
        help="check this deployment's XCom env the way Airflow reads it, then probe the store",
        description="Exit code 0 only when every check passes. Run inside a deployment, or locally with --env-file.",
    )
    check.add_argument("--env-file", help="a .env file to check (applied over this process's environment)")
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.add_argument("--no-probe", action="store_true", help="skip the write/read/delete probe of the store")
    check.add_argument(
        "--warn-days",
        type=int,
        default=DEFAULT_WARN_DAYS,
        metavar="N",
        help=f"warn when the credential (an Azure SAS) expires within N days (default {DEFAULT_WARN_DAYS})",
    )
    check.set_defaults(handler=_verify)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ExportError, CommandError, GcError, StoreConfigError) as err:
        print(f"xcom-backend {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
