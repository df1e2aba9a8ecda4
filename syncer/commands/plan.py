"""Read-only: ask upstream what changed (tag lists and HEAD requests, never a pull) and print,
as Markdown, what `syncer run` would mirror, re-scan and resume. Compares with the records
under reports/records/. Needs no credentials for the target registry and writes nothing.

Exit codes: 0 planned; 1 some entries could not be checked upstream; 2 invalid catalog or usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from syncer.errors import SyncerError, UsageError


def add_scan_options(parser: argparse.ArgumentParser) -> None:
    default_cache = os.environ.get("SYNCER_TRIVY_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "syncer", "trivy")
    parser.add_argument("--trivy-cache", default=default_cache, metavar="DIR",
                        help="Trivy cache directory holding the vulnerability database "
                        "(default: $SYNCER_TRIVY_CACHE or %(default)s)")
    parser.add_argument("--skip-db-update", action="store_true",
                        help="use the database already in --trivy-cache; do not download one")
    parser.add_argument("--db-repository", metavar="REF",
                        help="OCI repository of the Trivy database (an internal mirror)")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="plan only this catalog image name (repeatable)")
    add_scan_options(parser)


def run(args) -> int:
    # Imported here, not at the top: `syncer run` imports this module for its options.
    from syncer import trivy
    from syncer.catalog import load_catalog
    from syncer.ledger import Ledger
    from syncer.pipeline import Pipeline, RunOptions
    from syncer.plan import render_markdown
    from syncer.progress import Progress
    from syncer.scan import ScanSettings

    catalog = load_catalog(args.catalog)
    # A misspelt name would otherwise plan nothing and exit 0, which reads as "all is well".
    unknown = [n for n in args.only if catalog.image(n) is None]
    if unknown:
        raise UsageError(f"--only {', '.join(unknown)}: no such image in {args.catalog}/images/")
    try:
        info = trivy.db_info(args.trivy_cache)
        scan_settings = ScanSettings(args.trivy_cache, info.updated_at)
    except SyncerError:
        scan_settings = None  # without a local database, re-scans are simply not planned
    progress = Progress()
    pipeline = Pipeline(catalog, Ledger(args.reports), scan_settings=scan_settings, signer=None,
                        options=RunOptions(only=tuple(args.only), shard=getattr(args, "shard", None),
                                           dry_run=True), progress=progress)
    plan = pipeline.plan()
    progress.close()
    if args.json:
        json.dump({"tags": [{"name": t.name, "tag": t.tag, "change": t.change.value, "digest": t.digest,
                             "recorded": t.recorded.digest if t.recorded else None, "rescan": t.rescan,
                             "deferred": t.deferred} for t in plan.tags],
                   "missing": [{"name": n, "tag": t} for n, t in plan.missing],
                   "errors": [{"name": n, "error": e} for n, e in plan.errors]}, sys.stdout, indent=2)
        print()
    else:
        sys.stdout.write(render_markdown(plan))
    return 1 if plan.errors or plan.missing else 0
