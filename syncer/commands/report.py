"""Regenerate the Markdown reports (reports/README.md and reports/images/*.md) from the
records under reports/records/, and each run page (reports/runs/<month>/<run>.md) from the
run record beside it (<run>.yaml, written by the run it describes; run pages of older trails
have none and are left as they are). The output depends only on the records and the catalog,
so the same records always give the same bytes; files whose content is unchanged are not
touched.

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
from syncer.core.model import Catalog, Record
from syncer.trail import report
from syncer.trail.ledger import Ledger


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--commit",
        action="store_true",
        help="commit the changed reports and records with git (e.g. after merging shards)",
    )
    parser.add_argument("--push", action="store_true", help="push that commit (implies --commit)")


def _commit(args: argparse.Namespace, records: list[Record], catalog: Catalog) -> str | None:
    from syncer.tools import gitops  # GitPython is imported only when committing

    reports = os.path.abspath(args.reports)
    repo_dir = os.path.dirname(reports)
    changed = {os.path.realpath(os.path.join(repo_dir, f)) for f in gitops.changed_files(repo_dir, [reports])}
    ledger = Ledger(args.reports)
    counts = Counter(
        r.state.value for r in records if os.path.realpath(ledger.path_for(r.name, r.tag)) in changed
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
    contents = Ledger(args.reports).contents()
    records = contents.records
    problems = [u.message for u in contents.unreadable]
    for stray in contents.strays:
        print(f"syncer report: warning: {stray}", file=sys.stderr)
    try:
        written = report.regenerate(records, catalog, args.reports, problems)
    except report.PageWriteError as err:
        written = err.written
        problems.append(str(err))
    sha = _commit(args, records, catalog) if args.commit or args.push else None
    for problem in problems:
        print(f"syncer report: error: {problem}", file=sys.stderr)
    if args.json:
        json.dump(
            {"records": len(records), "written": written, "commit": sha, "problems": problems},
            sys.stdout,
            indent=2,
        )
        print()
    else:
        print(
            f"{len(records)} records; {len(written)} report files written"
            + (":\n  " + "\n  ".join(written) if written else " (all up to date)")
        )
        if sha:
            print(f"Committed {sha[:12]}" + (" and pushed" if args.push else ""))
    return 1 if problems else 0
