"""The batch job: discover new upstream tags, mirror them into quarantine, scan them with
Trivy, evaluate each policy, promote and sign what passes, record every transition under
reports/records/, regenerate the Markdown reports, and optionally commit and push them.

Credentials come from the environment variables named in catalog/settings.yaml or, for a
registry without an auth block there, from the logins skopeo, podman and docker keep
(REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json, ~/.config/containers/auth.json,
$DOCKER_CONFIG/config.json or ~/.docker/config.json, ~/.dockercfg, with their credential
helpers); the output says which file or helper each came from. A registry's CAs: its ca_dir,
/etc/containers/certs.d/HOST/ and /etc/docker/certs.d/HOST/, SSL_CERT_FILE and SSL_CERT_DIR,
used alike by discovery, skopeo and Trivy. The pipeline key comes from the variable named by
signing.key_env (a file path) and its passphrase from signing.passphrase_env. Trivy runs in
an environment syncer chooses: of the TRIVY_* variables only those that say where its
databases live are honoured (see the options below); the others are ignored with a warning.
No secret but the pull credential reaches Trivy.

Records are written after every stage; the Markdown pages after the run, each on its own, so
a page that cannot be written fails the run (exit 1) but never keeps the records from being
committed. With --commit, whatever an earlier run left uncommitted under the reports
directory is committed too, and with --push, commits an earlier run could not push are pushed
(the output says so). SIGTERM stops a run like Ctrl-C: tags in progress finish and are recorded,
the queued ones are left for the next run.

Webhooks named in settings.yaml are sent the run's events (promoted, held, flagged, demoted,
failed) after the records are saved and committed; a webhook that is down is a warning on
stderr, never the run's failure.

Exit codes: 0 done (held images are not failures); 1 some images could not be processed
(the others were, and were recorded); 2 invalid catalog or usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from syncer.catalog import load_catalog
from syncer.commands import plan as plan_command
from syncer.commands.plan import add_registry_options, add_scan_options, registry_deadline, scan_options
from syncer.core.markdown import code, text
from syncer.core.model import Catalog
from syncer.errors import SyncerError, UsageError
from syncer.stages.pipeline import Pipeline, RunOptions, RunResult
from syncer.stages.progress import Progress
from syncer.stages.scan import ScanSettings
from syncer.stages.signer import signer_from_env
from syncer.tools import trivy
from syncer.tools.skopeo import COPY_TIMEOUT
from syncer.tools.trivy import TrivyOptions
from syncer.trail.atomic import remove_temp_files
from syncer.trail.ledger import Ledger
from syncer.trail.lock import run_lock

if TYPE_CHECKING:
    from syncer.core.model import Catalog, Record
    from syncer.stages.pipeline import RunResult
    from syncer.stages.progress import Progress
    from syncer.stages.scan import ScanSettings
    from syncer.tools.gitops import CommitResult
    from syncer.tools.trivy import TrivyOptions


def parse_shard(text: str) -> tuple[int, int]:
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard wants K/N such as 2/4, not {text!r}") from None
    if not (n >= 1 and 1 <= k <= n):
        raise argparse.ArgumentTypeError(f"--shard {text}: K must be between 1 and N")
    return k, n


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, not {text!r}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--jobs",
        type=positive_int,
        default=2,
        metavar="N",
        help="tags processed in parallel (default: %(default)s)",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="process only this catalog image name (repeatable)",
    )
    parser.add_argument(
        "--shard",
        type=parse_shard,
        metavar="K/N",
        help="process only shard K of N (a stable split of the catalog by name)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="discover and print what would happen; write nothing anywhere"
    )
    parser.add_argument("--commit", action="store_true", help="commit changed reports with git")
    parser.add_argument("--push", action="store_true", help="push that commit (implies --commit)")
    parser.add_argument(
        "--scan-timeout",
        type=positive_int,
        default=600,
        metavar="SECONDS",
        help="give up a Trivy scan after this long (default: %(default)s)",
    )
    parser.add_argument(
        "--copy-timeout",
        type=positive_int,
        default=COPY_TIMEOUT,
        metavar="SECONDS",
        help="give up one skopeo copy (mirroring, promotion, replication) after "
        "this long: a stalled transfer fails its tag, the next run retries it "
        "(default: %(default)s)",
    )
    add_registry_options(parser)
    add_scan_options(parser)


def prepare_scanning(
    options: TrivyOptions, catalog: Catalog, progress: Progress, scan_timeout: int
) -> tuple[ScanSettings | None, str]:
    """The database every scan of this run uses, downloaded at most once per run."""
    ignored = trivy.split_environment(os.environ).ignored
    if ignored:
        progress.note(f"warning: ignoring {', '.join(ignored)}: {trivy.IGNORED_HELP}")
    try:
        if options.updates:
            progress.note("updating Trivy's databases where due")
        info = trivy.prepare(options)
        licenses = any(p.deny_licenses for p in catalog.policies.values())
        return ScanSettings(
            cache_dir=options.cache_dir,
            db_updated_at=info.updated_at,
            timeout=float(scan_timeout),
            licenses=licenses,
            server=options.server,
        ), ""
    except SyncerError as err:
        return None, str(err)


def summary_markdown(result: RunResult, problems: list[str]) -> str:
    """The run's summary; ``problems`` are what failed after the tags were done (pages, git)."""
    lines = ["# syncer run", ""]
    counts = result.counts()
    deferred = sum(o.deferred for o in result.outcomes)
    lines.append(", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "Nothing changed.")
    if deferred:
        lines[-1] += f" {deferred} deferred: the upstream pull budget is below min_remaining_pulls."
    rows = [o for o in result.outcomes if o.changed or o.failed or o.deferred]
    if rows:
        lines += ["", "| image | tag | state | detail |", "|---|---|---|---|"]
        lines += [
            f"| {text(o.name)} | {code(o.tag)} | {text(o.state.value if o.state else '')} | "
            f"{text(o.message)} |"
            for o in rows
        ]
    for name, msg in result.plan.errors:
        lines.append(f"- error in {text(name)}: {text(msg)}")
    for name, tag in result.plan.missing:
        lines.append(
            f"- error in {text(name)}: tag {code(tag)} not found upstream; fix `tags` in the catalog"
        )
    lines += [f"- error: {text(problem)}" for problem in problems]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    if args.push:
        args.commit = True
    if args.dry_run:
        # A dry run is exactly the plan: discovery only, nothing written anywhere.
        return plan_command.run(args)

    started = datetime.now(UTC)
    trivy_options = scan_options(args)  # a bad TRIVY_* value is a usage error before anything runs
    with run_lock(args.reports):
        # Under the lock no write is in progress: any temporary file is a killed run's.
        for leftover in remove_temp_files(args.reports):
            print(f"removed {leftover}, left by an interrupted write", file=sys.stderr)
        return _run_locked(args, trivy_options, Ledger(args.reports), started)


def _run_locked(
    args: argparse.Namespace, trivy_options: TrivyOptions, ledger: Ledger, started: datetime
) -> int:
    catalog = load_catalog(args.catalog)
    progress = Progress(quiet=False)
    options = RunOptions(
        jobs=args.jobs,
        only=tuple(args.only),
        shard=args.shard,
        dry_run=False,
        copy_timeout=float(args.copy_timeout),
        registry_deadline=registry_deadline(args),
    )
    unknown = [n for n in options.only if catalog.image(n) is None]
    if unknown:
        raise UsageError(f"--only {', '.join(unknown)}: no such image in {args.catalog}/images/")
    migrated = ledger.migrate()
    if migrated:
        progress.note(
            f"ledger: migrated {migrated} records to format 2 (scan results stored once per digest)"
        )
        if args.commit:
            try:
                _commit_migration(args, ledger, migrated)
            except SyncerError as err:
                progress.note(f"warning: {err}; the migration is committed with the run instead")
    scan_settings, scan_problem = prepare_scanning(trivy_options, catalog, progress, args.scan_timeout)
    if scan_problem:
        progress.note(f"error: {scan_problem}; nothing will be scanned or promoted this run")
    signer, signer_problem = None, ""
    try:
        signer = signer_from_env(catalog.settings.signing)
    except SyncerError as err:
        signer_problem = str(err)
        progress.note(f"warning: {err}; nothing will be promoted this run")
    pipeline = Pipeline(
        catalog,
        ledger,
        scan_settings=scan_settings,
        signer=signer,
        options=options,
        progress=progress,
        scan_problem=scan_problem,
        signer_problem=signer_problem,
    )
    result = pipeline.run()
    progress.close()
    # The index is written once, after every tag: a killed run's saves heal on the next load.
    ledger.flush()
    written: list[str] = []
    problems: list[str] = []
    if result.changed:
        from syncer.trail import report  # jinja2 is imported only when there is something to write

        try:
            written = report.write_reports(
                ledger, catalog, args.reports, result=result, started=started, shard=args.shard
            )
        except report.PageWriteError as err:
            written = err.written
            problems.append(str(err))
    commit: CommitResult | None = None
    earlier: list[str] = []
    if args.commit:
        try:
            commit, earlier = _commit(args, ledger, result, catalog, written, problems)
        except SyncerError as err:
            problems.append(str(err))
    for problem in problems:
        print(f"syncer run: error: {problem}", file=sys.stderr)
    if catalog.settings.webhooks:
        for warning in _notify(catalog, ledger, result, started, args.reports):
            print(f"syncer run: warning: {warning}", file=sys.stderr)
    summary = summary_markdown(result, problems)
    if os.environ.get("GITHUB_STEP_SUMMARY"):
        with open(os.environ["GITHUB_STEP_SUMMARY"], "a", encoding="utf-8") as fh:
            fh.write(summary)
    if args.json:
        json.dump(
            {
                "counts": result.counts(),
                "failures": result.failures,
                "tags": [
                    {
                        "name": o.name,
                        "tag": o.tag,
                        "state": o.state.value if o.state else None,
                        "changed": o.changed,
                        "failed": o.failed,
                        "deferred": o.deferred,
                        "message": o.message,
                    }
                    for o in result.outcomes
                ],
                "errors": [{"name": n, "error": e} for n, e in result.plan.errors],
                "missing": [{"name": n, "tag": t} for n, t in result.plan.missing],
                "reports_written": written,
                "commit": commit.sha if commit else None,
                "pushed": bool(commit and commit.pushed),
                "earlier_uncommitted": earlier,
                "earlier_unpushed": commit.unpushed if commit else 0,
                "problems": problems,
            },
            sys.stdout,
            indent=2,
        )
        print()
    else:
        print(summary, end="")
        if written:
            print(f"\nReports: {args.reports}/README.md ({len(written)} files written)")
        if earlier:
            print(f"Committing {len(earlier)} files an earlier run left uncommitted under {args.reports}/")
        if commit and commit.unpushed and commit.pushed:
            print(
                f"Pushing {commit.unpushed} commit{'s' if commit.unpushed != 1 else ''} "
                "an earlier run left unpushed"
            )
        if commit and commit.sha and commit.committed:
            print(f"Committed {commit.sha[:12]}" + (" and pushed" if commit.pushed else ""))
        elif commit and commit.sha and commit.pushed:
            print(f"Pushed {commit.sha[:12]}")
    return 1 if problems else result.exit_code


def _notify(
    catalog: Catalog, ledger: Ledger, result: RunResult, started: datetime, reports: str
) -> list[str]:
    """The run's events to the catalog's webhooks, once its records are saved (and committed,
    when asked); a webhook that fails is a warning, never the run's failure."""
    from syncer.catalog import display_path
    from syncer.tools import webhooks

    records = [
        rec
        for o in result.outcomes
        if o.changed or o.failed
        if (rec := _readable(ledger, o.name, o.tag)) is not None
    ]
    entry_failures = list(result.plan.errors) + [
        (name, f"tag {tag} not found upstream; fix `tags` in the catalog")
        for name, tag in result.plan.missing
    ]
    found = webhooks.notifications(records, started.strftime("%Y-%m-%dT%H:%M:%SZ"), entry_failures)
    server, repo, ci_run = (
        os.environ.get(k) for k in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID")
    )
    return webhooks.deliver(
        catalog.settings.webhooks,
        found,
        os.environ,
        run=ci_run or started.strftime("%Y%m%dT%H%M%SZ"),
        reports=display_path(Path(reports)),
        run_url=f"{server}/{repo}/actions/runs/{ci_run}" if server and repo and ci_run else "",
    )


def _readable(ledger: Ledger, name: str, tag: str) -> Record | None:
    try:
        return ledger.load(name, tag)
    except SyncerError:
        return None  # its failure is in the run's output already


def _commit_migration(args: argparse.Namespace, ledger: Ledger, migrated: int) -> None:
    """The migration to ledger format 2 as its own commit, before the run's work, so that the
    run's commit shows what the run did (pushed with it when the run pushes)."""
    from syncer.tools import gitops

    repo_dir = os.path.dirname(os.path.abspath(args.reports)) or "."
    gitops.commit_reports(
        repo_dir,
        [str(p) for p in ledger.written()],
        f"ledger: migrate {migrated} records to format 2\n\nScan results are stored once per digest "
        "under scans/, the compact index is ledger.json; history and decisions are unchanged.\n",
    )


def _commit(
    args: argparse.Namespace,
    ledger: Ledger,
    result: RunResult,
    catalog: Catalog,
    written: list[str],
    problems: list[str],
) -> tuple[CommitResult, list[str]]:
    """Commits this run's files and whatever an earlier run left uncommitted (its records
    get their pages first); returns the commit and those earlier files."""
    from syncer.tools import gitops  # GitPython is imported only when the trail is committed
    from syncer.trail import report

    reports = os.path.abspath(args.reports)
    repo_dir = os.path.dirname(reports) or "."
    ours = {os.path.realpath(p) for p in written}
    ours |= {os.path.realpath(p) for p in ledger.written()}
    earlier = [
        f
        for f in gitops.changed_files(repo_dir, [reports])
        if os.path.realpath(os.path.join(repo_dir, f)) not in ours
    ]
    counts = dict(result.counts())
    if earlier:
        # A killed run's records have no pages yet.
        try:
            report.regenerate(ledger, catalog, args.reports)
        except SyncerError as err:
            problems.append(str(err))
        leftover = {os.path.realpath(os.path.join(repo_dir, f)) for f in earlier}
        for entry in ledger.index().entries.values():
            if os.path.realpath(ledger.path_for(entry.name, entry.tag)) in leftover:
                counts[entry.state.value] = counts.get(entry.state.value, 0) + 1
    message = gitops.summary_message(counts, os.environ.get("GITHUB_RUN_ID"))
    commit = gitops.commit_reports(
        repo_dir,
        [reports],
        message,
        push=args.push,
        refresh=lambda: report.refresh_pages(args.reports, catalog),
    )
    return commit, earlier
