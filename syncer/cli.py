"""Command line entry point: ``syncer <command>``.

Each command lives in ``syncer/commands/<name>.py`` with two functions:
``configure(parser)`` adds its arguments and ``run(args) -> int`` does the work and returns
the exit code (0 done, 1 some images failed, 2 invalid catalog or usage).
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from syncer import __version__
from syncer.errors import CatalogError, SyncerError, UsageError

# (command, module under syncer.commands, one-line help)
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("validate", "validate", "check the whole catalog offline; exit 0 or 2"),
    ("plan", "plan", "read-only: what a run would mirror, re-scan and resume, as Markdown"),
    ("run", "run", "the batch job: discover, mirror, scan, evaluate, promote, sign, record, report"),
    ("report", "report", "regenerate every Markdown report from the records"),
    ("demo", "demo", "the built-in demo: local registries play Hub and the trusted registry (offline)"),
    (
        "keygen",
        "keygen",
        "write an encrypted cosign key pair: NAME.key outside the catalog, signers/NAME.pub inside",
    ),
    ("verify", "verify", "which required signers have signed REF; exit 0 only if all have"),
    ("sign", "sign", "add your signature (a content administrator's approval) to an approved image"),
    (
        "export-policy",
        "export_policy",
        "write a containers-policy.json and registries.d, or Kyverno policies, requiring the catalog's signers",
    ),
    ("auth-server", "auth_server", "serve registry tokens granting what catalog/access.yaml allows"),
    (
        "access-config",
        "access_config",
        "print a registry's auth: token config for auth-server and write its key and bundle",
    ),
    ("codeowners", "codeowners", "write .github/CODEOWNERS from the catalog's owners; --check for staleness"),
)


def common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--catalog", default="catalog", metavar="DIR", help="catalog directory (default: %(default)s)"
    )
    common.add_argument(
        "--reports", default="reports", metavar="DIR", help="audit trail directory (default: %(default)s)"
    )
    common.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout")
    return common


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only the module of ``command`` is imported, so that a heavy or broken
    command can never take down another (``validate`` must run in PR CI with nothing else)."""
    parser = argparse.ArgumentParser(
        prog="syncer",
        description="GitOps content pipeline: mirror images from Docker Hub into a quarantine, "
        "scan them with Trivy, promote the scanned digest when policy allows, sign it, and "
        "record everything under reports/.",
        epilog="Exit codes: 0 done (held images are not failures); 1 some images could not be "
        "processed; 2 invalid catalog or usage. Progress goes to stderr. "
        "`syncer COMMAND --help` describes one command.",
    )
    parser.add_argument("--version", action="version", version=f"syncer {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    common = common_options()
    for name, module, help_text in COMMANDS:
        if name != command:
            sub.add_parser(name, help=help_text)
            continue
        mod = importlib.import_module(f"syncer.commands.{module}")
        p = sub.add_parser(
            name,
            help=help_text,
            description=(mod.__doc__ or help_text).strip(),
            parents=[common],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        mod.configure(p)
        p.set_defaults(_run=mod.run)
    return parser


def _command_in(argv: list[str]) -> str | None:
    """The command named on the line: the first argument that is a command's name."""
    names = {name for name, _, _ in COMMANDS}
    return next((a for a in argv if a in names), None)


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextmanager
def _terminate_like_interrupt() -> Iterator[None]:
    """SIGTERM (a CI runner cancelling the job, ``kill``) stops a command as Ctrl-C does:
    writes in progress finish or are removed, the run lock is released, exit 130. Left as it
    was when not on the main thread, where no handler can be set."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(_command_in(argv))
    args = parser.parse_args(argv)
    try:
        with _terminate_like_interrupt():
            return int(args._run(args))
    except CatalogError as err:
        print(err, file=sys.stderr)
        return 2
    except UsageError as err:
        print(f"syncer {args.command}: {err}", file=sys.stderr)
        return 2
    except SyncerError as err:
        print(f"syncer {args.command}: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("syncer: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
