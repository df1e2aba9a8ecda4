"""Read-only: ask upstream what changed (tag lists and HEAD requests, never a pull) and print,
as Markdown, what `syncer run` would mirror, re-scan and resume. Compares with the records
under reports/records/. Needs no credentials for the target registry and writes nothing.

Also predicts, offline, what the next run would decide anew: every recorded tag that needs no
copy or re-scan is evaluated from its recorded scan against this catalog (a pull request's),
and each that would be promoted, held, flagged or demoted, or whose reasons would change, is
listed with the reasons. The plan reads the ledger's index (reports/ledger.json) and only the
records of tags whose decision's inputs changed since the last run; a table longer than 200
rows is counted by image instead of listed. An explicit tag that upstream does not have is named at its line in
the catalog (``file:line: error:`` on stderr, an annotation in GitHub Actions).

Exit codes: 0 planned; 1 some entries could not be checked upstream, or an explicit tag is
missing upstream; 2 invalid catalog or usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from typing import TYPE_CHECKING

from syncer.errors import SyncerError, UsageError

if TYPE_CHECKING:
    from syncer.core.model import Record
    from syncer.tools.trivy import TrivyOptions


def add_scan_options(parser: argparse.ArgumentParser) -> None:
    # Wrapped here: the command's formatter keeps descriptions as written.
    group = parser.add_argument_group(
        "Trivy's databases",
        textwrap.fill(
            "Trivy runs in an environment syncer chooses: of its variables only TRIVY_CACHE_DIR, "
            "TRIVY_SKIP_DB_UPDATE, TRIVY_SKIP_JAVA_DB_UPDATE, TRIVY_DB_REPOSITORY and "
            "TRIVY_JAVA_DB_REPOSITORY are honoured, as the defaults of the options below (a flag "
            "wins over its variable); any other TRIVY_* is ignored with a warning, since it would "
            "change what Trivy finds (exceptions belong in catalog/exceptions/). No secret but the "
            "pull credential of the registry scanned reaches Trivy.",
            78,
        ),
    )
    group.add_argument(
        "--trivy-cache",
        metavar="DIR",
        help="Trivy cache directory holding its databases (default: "
        "$SYNCER_TRIVY_CACHE, else $TRIVY_CACHE_DIR, else ~/.cache/syncer/trivy)",
    )
    group.add_argument(
        "--skip-db-update",
        action="store_true",
        help="use the vulnerability database already in --trivy-cache; do not "
        "download one ($TRIVY_SKIP_DB_UPDATE)",
    )
    group.add_argument(
        "--skip-java-db-update",
        action="store_true",
        help="use the Java database (Trivy's index of Maven artifacts, needed to "
        "scan images holding jars) already in --trivy-cache; do not download one "
        "($TRIVY_SKIP_JAVA_DB_UPDATE)",
    )
    group.add_argument(
        "--db-repository",
        metavar="REF",
        help="OCI repository of the Trivy vulnerability database, an internal "
        "mirror; several comma-separated are tried in order ($TRIVY_DB_REPOSITORY)",
    )
    group.add_argument(
        "--java-db-repository",
        metavar="REF",
        help="OCI repository of Trivy's Java database ($TRIVY_JAVA_DB_REPOSITORY)",
    )
    group.add_argument(
        "--trivy-server",
        metavar="URL",
        help="scan with this `trivy server` (client mode) and its vulnerability "
        "database, which the records then name; the Java database stays local. "
        "Never taken from TRIVY_SERVER",
    )


def scan_options(args: argparse.Namespace) -> TrivyOptions:
    """The options of Trivy's databases for this run: flags over Trivy's variables."""
    from syncer.tools import trivy

    return trivy.resolve_options(
        os.environ,
        cache_dir=args.trivy_cache,
        skip_db_update=args.skip_db_update,
        skip_java_db_update=args.skip_java_db_update,
        db_repository=args.db_repository,
        java_db_repository=args.java_db_repository,
        server=args.trivy_server,
    )


def add_registry_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--registry-timeout",
        type=float,
        metavar="SECONDS",
        help="give up one answer of a registry (a tag list, manifest, token) "
        "after this long, its body included; a silent registry is given up "
        "after 30 seconds at most (default: 120)",
    )


def registry_deadline(args: argparse.Namespace) -> float:
    from syncer.tools.registry import DEADLINE_DEFAULT

    if args.registry_timeout is None:
        return DEADLINE_DEFAULT
    if not args.registry_timeout > 0:
        raise UsageError(f"--registry-timeout {args.registry_timeout:g}: give a number of seconds above 0")
    return float(args.registry_timeout)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="plan only this catalog image name (repeatable)",
    )
    add_registry_options(parser)
    add_scan_options(parser)


def run(args: argparse.Namespace) -> int:
    # Imported here, not at the top: `syncer run` imports this module for its options.
    from syncer.catalog import load_catalog
    from syncer.commands.validate import annotation
    from syncer.core.plan import locate_missing, predict, render_markdown
    from syncer.stages.pipeline import Pipeline, RunOptions
    from syncer.stages.progress import Progress
    from syncer.stages.scan import ScanSettings
    from syncer.tools import trivy
    from syncer.trail.ledger import Ledger

    catalog = load_catalog(args.catalog)
    # A misspelt name would otherwise plan nothing and exit 0, which reads as "all is well".
    unknown = [n for n in args.only if catalog.image(n) is None]
    if unknown:
        raise UsageError(f"--only {', '.join(unknown)}: no such image in {args.catalog}/images/")
    options = scan_options(args)
    try:
        info = trivy.server_info(options.server).db if options.server else trivy.db_info(options.cache_dir)
        scan_settings = ScanSettings(options.cache_dir, info.updated_at, server=options.server)
    except SyncerError:
        scan_settings = None  # without a local database, re-scans are simply not planned
    progress = Progress()
    # Read-only: a ledger in an older format is read as it is (a run migrates it).
    ledger = Ledger(args.reports)
    pipeline = Pipeline(
        catalog,
        ledger,
        scan_settings=scan_settings,
        signer=None,
        options=RunOptions(
            only=tuple(args.only),
            shard=getattr(args, "shard", None),
            dry_run=True,
            registry_deadline=registry_deadline(args),
        ),
        progress=progress,
    )
    plan = pipeline.plan()
    progress.close()

    def load(name: str, tag: str) -> Record | None:
        # The index did not vouch for this record's decision, so it is read, and may be
        # corrupt: that tag is an error of the plan, as an unreadable record is.
        try:
            return ledger.load(name, tag)
        except SyncerError as err:
            plan.errors.append((name, f"tag {tag}: {err}"))
            return None

    plan.predictions = predict(plan, catalog, RunOptions().today, load)
    for diagnostic in locate_missing(plan, catalog):
        print(diagnostic, file=sys.stderr)
        if os.environ.get("GITHUB_ACTIONS") == "true":
            print(annotation(diagnostic), file=sys.stderr)
    if args.json:
        json.dump(
            {
                "tags": [
                    {
                        "name": t.name,
                        "tag": t.tag,
                        "change": t.change.value,
                        "digest": t.digest,
                        "recorded": t.recorded.digest if t.recorded else None,
                        "rescan": t.rescan,
                        "deferred": t.deferred,
                    }
                    for t in plan.tags
                ],
                "predicted": [
                    {
                        "name": p.name,
                        "tag": p.tag,
                        "digest": p.digest,
                        "state": p.before.value,
                        "next": p.after.value,
                        "reasons": list(p.reasons),
                    }
                    for p in plan.predictions
                ],
                "missing": [
                    {"name": n, "tag": t, "at": str(plan.missing_at.get((n, t), ""))} for n, t in plan.missing
                ],
                "errors": [{"name": n, "error": e} for n, e in plan.errors],
            },
            sys.stdout,
            indent=2,
        )
        print()
    else:
        sys.stdout.write(render_markdown(plan))
    return 1 if plan.errors or plan.missing else 0
