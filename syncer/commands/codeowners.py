"""Write .github/CODEOWNERS from the catalog, so that review rights follow the catalog.

Each catalog/images/*.yaml file is owned by its entries' ``owners`` and the content admins;
policies, exceptions, approvals, signers, access.yaml, settings.yaml, the workflows and
CODEOWNERS itself by the content admins (``content_admins`` in settings.yaml) alone. The file
goes to .github/CODEOWNERS in the catalog directory's parent, the repository root.

With --check nothing is written: exit 0 when the file is up to date, 2 when it is missing or
stale (``syncer validate`` runs the same check).
"""

from __future__ import annotations

import argparse
import json
import sys

from syncer.access.codeowners import codeowners_file, repo_root_of, stale_check, write_codeowners
from syncer.catalog import display_path, load_catalog
from syncer.errors import UsageError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 2 when .github/CODEOWNERS is missing or stale",
    )


def run(args: argparse.Namespace) -> int:
    catalog = load_catalog(args.catalog)
    root = repo_root_of(catalog)
    shown = display_path(codeowners_file(root))
    if args.check:
        problem = stale_check(catalog, root)
        if problem:
            print(problem, file=sys.stderr)
        _report(args, shown, stale=problem is not None, written=False, text=f"{shown} is up to date")
        return 2 if problem else 0
    try:
        written = write_codeowners(catalog, root)
    except OSError as err:
        raise UsageError(
            f"cannot write {shown} ({err.strerror}); check that the repository is writable"
        ) from None
    _report(
        args,
        shown,
        stale=False,
        written=written,
        text=f"wrote {shown}" if written else f"{shown} is up to date",
    )
    return 0


def _report(args: argparse.Namespace, path: str, *, stale: bool, written: bool, text: str) -> None:
    if args.json:
        json.dump({"path": path, "stale": stale, "written": written}, sys.stdout)
        print()
    elif not stale:
        print(text)
