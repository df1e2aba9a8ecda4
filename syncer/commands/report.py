"""Regenerate the Markdown reports (reports/README.md, its continuation pages and
reports/images/*.md) from the ledger (its index, reports/ledger.json, and the records under
reports/records/ of the images whose pages are rendered), and each run page
(reports/runs/<month>/<run>.md) from the run record beside it (<run>.yaml, written by the run it
describes; run pages of older trails have none and are left as they are). The output depends
only on the records and the catalog, so the same records always give the same bytes; only the
pages whose inputs changed since reports/pages.json was written are rendered, and files whose
content is unchanged are not touched.

A record or run record that cannot be read is named with its remedy and left out of the pages;
a file under records/ that is no record is reported and skipped; a page that cannot be written
is named.
Each of these exits 1 after every other page was written (and committed, with --commit).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter

from syncer.catalog import load_catalog
from syncer.core.model import Catalog
from syncer.trail import report
from syncer.trail.ledger import Ledger


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--commit",
        action="store_true",
        help="commit the changed reports and records with git (e.g. after merging shards)",
    )
    parser.add_argument("--push", action="store_true", help="push that commit (implies --commit)")


def _commit(args: argparse.Namespace, ledger: Ledger, catalog: Catalog) -> str | None:
    from syncer.tools import gitops  # GitPython is imported only when committing

    reports = os.path.abspath(args.reports)
    repo_dir = os.path.dirname(reports)
    changed = {os.path.realpath(os.path.join(repo_dir, f)) for f in gitops.changed_files(repo_dir, [reports])}
    counts = Counter(
        e.state.value
        for e in ledger.index().entries.values()
        if os.path.realpath(ledger.path_for(e.name, e.tag)) in changed
    )
    result = gitops.commit_reports(
        repo_dir,
        [reports],
        gitops.summary_message(counts, os.environ.get("GITHUB_RUN_ID")),
        push=args.push,
        refresh=lambda: report.refresh_pages(args.reports, catalog),
    )
    return result.sha if result.committed else None


def run(args: argparse.Namespace) -> int:
    catalog = load_catalog(args.catalog)
    ledger = Ledger(args.reports)
    index = ledger.index()
    problems = [u.message for u in index.unreadable]
    for stray in index.strays:
        print(f"syncer report: warning: {stray}", file=sys.stderr)
    try:
        written = report.regenerate(ledger, catalog, args.reports, problems)
    except report.PageWriteError as err:
        written = err.written
        problems.append(str(err))
    # An index healed from the records (after shards' files were laid over each other, or
    # hand edits) is written, so that the next reader need not heal it again.
    if ledger.flush():
        written.append(str(ledger.index_path))
    sha = _commit(args, ledger, catalog) if args.commit or args.push else None
    for problem in problems:
        print(f"syncer report: error: {problem}", file=sys.stderr)
    if args.json:
        json.dump(
            {"records": len(index.entries), "written": written, "commit": sha, "problems": problems},
            sys.stdout,
            indent=2,
        )
        print()
    else:
        print(
            f"{len(index.entries)} records; {len(written)} report files written"
            + (":\n  " + "\n  ".join(written) if written else " (all up to date)")
        )
        if sha:
            print(f"Committed {sha[:12]}" + (" and pushed" if args.push else ""))
    return 1 if problems else 0
