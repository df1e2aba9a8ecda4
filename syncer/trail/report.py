"""Markdown reports from the records: the index, a page per image, a page per run.

Pages are a pure function of the records (and the catalog, for the signers a policy requires),
so ``syncer report`` regenerates them byte for byte, and a run that changed nothing leaves the
tree untouched. A run page is a function of its run record (syncer/trail/runlog.py), which the run it
describes writes beside it.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import jinja2

from syncer.access.enforce import required_signers
from syncer.core import markdown
from syncer.core.model import Catalog, Finding, Policy, Record, State
from syncer.core.policy import APPROVED_BY, count_by_severity, counts_text, evaluate, live_exceptions
from syncer.core.refs import short_digest
from syncer.errors import SyncerError
from syncer.trail import runlog
from syncer.trail.atomic import read_regular, write_atomic
from syncer.trail.ledger import Ledger

BADGES = {
    State.PROMOTED: "✅ promoted",
    State.HELD: "⏸️ held",
    State.FLAGGED: "🚩 flagged",
    State.DEMOTED: "⛔ demoted",
    State.FAILED: "❌ failed",
    State.MIRRORED: "⏳ mirrored",
    State.SCANNED: "⏳ scanned",
}

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("syncer.trail", "templates"),
    # Markdown, not HTML: every value a template writes goes through markdown.text (a `code`
    # span, already Markdown, passes as it is), so that no value can be left unescaped.
    autoescape=False,
    finalize=markdown.text,
    keep_trailing_newline=True,
    trim_blocks=False,
    undefined=jinja2.StrictUndefined,
)


_env.filters["code"] = markdown.code
_env.filters["target"] = markdown.target
_env.filters["short"] = short_digest


def sorted_findings(findings: Iterable[Finding]) -> list[Finding]:
    unique = {(f.id, f.package, f.installed, f.fixed, f.severity, f.platform): f for f in findings}
    return sorted(unique.values(), key=lambda f: (-int(f.severity), f.id, f.package, f.platform, f.installed))


def page_for(name: str) -> str:
    return f"{name}.md"


def anchor_for(tag: str) -> markdown.Markdown:
    """The id of a tag's section on its image page. It is written into raw HTML (<a id=…>)
    and links: [a-z0-9-] needs no escape."""
    return markdown.Markdown("tag-" + re.sub(r"[^a-z0-9-]", "-", tag.lower()))


# Where an advisory id is described when Trivy gave no URL (records made before URLs were
# kept, or a database without references): the id's own issuer.
_ADVISORY_PAGES = (
    (re.compile(r"CVE-\d{4}-\d{4,}"), "https://nvd.nist.gov/vuln/detail/{}"),
    (re.compile(r"GHSA(?:-[23456789cfghjmpqrvwx]{4}){3}"), "https://github.com/advisories/{}"),
    (
        re.compile(r"(?:DSA|DLA)-\d{3,5}(?:-\d{1,3})?|TEMP-\d{7}-[0-9A-F]{6}"),
        "https://security-tracker.debian.org/tracker/{}",
    ),
)


def advisory_url(finding: Finding) -> str:
    """Trivy's primary URL of the advisory, else the issuer's page for the id, else ''."""
    if markdown.is_web_url(finding.url):
        return finding.url
    return next(
        (page.format(finding.id) for pattern, page in _ADVISORY_PAGES if pattern.fullmatch(finding.id)), ""
    )


def _advisory(finding: Finding) -> markdown.Markdown:
    linked = markdown.link(finding.id, advisory_url(finding))
    return markdown.Markdown(f"{linked} {markdown.text(finding.title)}" if finding.title else linked)


def _decided_on(rec: Record) -> date | None:
    """The day of the record's last event: the day its decision was last made, so that pages
    stay a function of the records (and the catalog) whatever day they are regenerated."""
    return date.fromisoformat(rec.events[-1].at[:10]) if rec.events else None


def _policy_of(catalog: Catalog | None, name: str) -> Policy | None:
    entry = catalog.image(name) if catalog else None
    return catalog.policies.get(entry.policy) if catalog and entry else None


def _judged(rec: Record, catalog: Catalog | None) -> tuple[list[tuple[Finding, str]], dict[str, int] | None]:
    """Each finding with how the policy counted it, and the counts that held or passed the
    tag; without the entry's policy (a removed image) the counts are None."""
    findings = sorted_findings(rec.scan.findings) if rec.scan else []
    policy, day = _policy_of(catalog, rec.name), _decided_on(rec)
    if policy is None or day is None or rec.scan is None or catalog is None:
        return [(f, "") for f in findings], None
    live = live_exceptions(rec.name, catalog.exceptions, day)

    def how(f: Finding) -> str:
        if policy.ignore_unfixed and not f.fixed:
            return "not counted: no fix yet (ignore_unfixed)"
        exc = live.get(f.id)
        if exc is not None:
            where = f" ({exc.location})" if exc.location else ""
            return f"excepted until {exc.expires.isoformat()}{where}: {exc.reason}"
        return "counted"

    decision = evaluate(
        name=rec.name,
        digest=rec.digest,
        scan=rec.scan,
        policy=policy,
        exceptions=catalog.exceptions,
        approvals=catalog.approvals,
        today=day,
    )
    return [(f, how(f)) for f in findings], decision.counts


def _signed(rec: Record) -> str:
    """Who signed, said of the digest the signatures belong to: the one in approved/."""
    if not rec.promoted_digest:
        return ""
    names = ", ".join(rec.signatures)
    if rec.promoted_digest == rec.digest:
        return names
    return f"{names or 'nobody'}, of the approved digest {short_digest(rec.promoted_digest)}"


def _approver(rec: Record) -> str:
    """Who approved the digest in approved/, as its promoted event says (a manual policy's
    approval); "" for a digest a policy let through on its own."""
    promoted = rec.promoted_digest
    last = next((e for e in reversed(rec.events) if e.event == "promoted"), None)
    if promoted is None or last is None or not last.detail.startswith(promoted):
        return ""
    return last.detail.partition(APPROVED_BY)[2]


@dataclass
class _Row:
    name: str
    tag: str
    page: str
    state: str
    state_badge: str
    digest: str
    promoted: str | None
    counts: dict[str, int]
    signers: str
    missing: list[str]
    replicas: str
    last_change: str
    anchor: str
    reasons: list[str]
    counted: dict[str, int] | None


def _required_signers(catalog: Catalog | None, name: str) -> tuple[str, ...]:
    if catalog is None:
        return ()
    entry = catalog.image(name)
    if entry is None or entry.policy not in catalog.policies:
        return ()
    return required_signers(catalog, entry)


def _missing(rec: Record, catalog: Catalog | None) -> list[str]:
    if not rec.promoted_digest:
        return []
    return [s for s in _required_signers(catalog, rec.name) if s not in rec.signatures]


def _row(rec: Record, catalog: Catalog | None) -> _Row:
    counts = count_by_severity(rec.scan.findings if rec.scan else ())
    return _Row(
        name=rec.name,
        tag=rec.tag,
        page=page_for(rec.name),
        state=rec.state.value,
        state_badge=BADGES.get(rec.state, rec.state.value),
        digest=rec.digest,
        promoted=rec.promoted_digest,
        counts=counts,
        signers=_signed(rec),
        missing=_missing(rec, catalog),
        replicas=_replicas_cell(rec),
        last_change=rec.events[-1].at if rec.events else "",
        anchor=anchor_for(rec.tag),
        reasons=list(rec.reasons) if rec.state in _EXPLAINED else [],
        counted=_judged(rec, catalog)[1],
    )


# States whose reasons the index lists: what someone has to act on.
_EXPLAINED = (State.HELD, State.FLAGGED, State.DEMOTED, State.FAILED)


def _count_cell(counts: dict[str, int], counted: dict[str, int] | None, key: str) -> str:
    """ "2", or "2 (0)" when the policy counted fewer (no fix yet, or excepted)."""
    if counted is None or counted.get(key, 0) == counts.get(key, 0):
        return str(counts.get(key, 0))
    return f"{counts.get(key, 0)} ({counted.get(key, 0)})"


def _replicas_cell(rec: Record) -> str:
    """ "2/2 in step", "1/2 in step, 1 lagging", or "—" without replicas."""
    if not rec.replicas:
        return "—"
    in_step = sum(1 for r in rec.replicas if r.digest and r.digest == rec.promoted_digest and not r.lagging)
    lagging = sum(1 for r in rec.replicas if r.lagging)
    return f"{in_step}/{len(rec.replicas)} in step" + (f", {lagging} lagging" if lagging else "")


def _totals(states: list[str]) -> str:
    if not states:
        return ""
    by_state: dict[str, int] = defaultdict(int)
    for s in states:
        by_state[s] += 1
    order = [s.value for s in State]
    parts = [f"{by_state[s]} {s}" for s in order if by_state.get(s)]
    noun = "tag" if len(states) == 1 else "tags"
    return f"{len(states)} tracked {noun}: " + ", ".join(parts) + "."


def render_index(records: list[Record], catalog: Catalog | None) -> str:
    rows = [_row(r, catalog) for r in sorted(records, key=lambda r: (r.name, r.tag))]
    return _env.get_template("index.md.j2").render(
        rows=rows,
        totals=_totals([r.state for r in rows]),
        cell=_count_cell,
        explained=[r for r in rows if r.reasons],
    )


def render_image(name: str, records: list[Record], catalog: Catalog | None) -> str:
    entry = catalog.image(name) if catalog else None
    tags = []
    for rec in sorted(records, key=lambda r: r.tag):
        findings = sorted_findings(rec.scan.findings) if rec.scan else []
        counts = count_by_severity(findings)
        judged, counted = _judged(rec, catalog)
        anchor = anchor_for(rec.tag)
        tags.append(
            dict(
                tag=rec.tag,
                anchor=anchor,
                state=rec.state.value,
                state_badge=BADGES.get(rec.state, rec.state.value),
                digest=rec.digest,
                source=rec.source,
                promoted=rec.promoted_digest,
                counts=counts,
                counts_text=counts_text(counts),
                signers=_signed(rec),
                signed_names=", ".join(rec.signatures) or "nobody",
                approved_by=_approver(rec),
                missing=_missing(rec, catalog),
                scan=rec.scan,
                scanned=rec.scan.scanned_at if rec.scan else "",
                reasons=list(rec.reasons),
                findings=[dict(f=f, advisory=_advisory(f), counted=how) for f, how in judged],
                counted_text=counts_text(counted) if counted is not None else "",
                cell=lambda key, counts=counts, counted=counted: _count_cell(counts, counted, key),
                multi_platform=len(rec.scan.platforms) > 1 if rec.scan else False,
                assessed=rec.scan is not None
                and not rec.scan.artifact
                and not any(c.unassessed or c.problem for c in rec.scan.covered),
                events=list(reversed(rec.events)),
                replicas=list(rec.replicas),
            )
        )
    return _env.get_template("image.md.j2").render(
        name=name,
        up="../" * name.count("/"),
        source=entry.source if entry else "",
        policy=entry.policy if entry else "",
        tags=tags,
    )


def render_all(records: list[Record], catalog: Catalog | None) -> dict[str, str]:
    """Every derived page, keyed by its path relative to the reports directory."""
    by_name: dict[str, list[Record]] = defaultdict(list)
    for rec in records:
        by_name[rec.name].append(rec)
    pages = {"README.md": render_index(records, catalog)}
    for name, recs in sorted(by_name.items()):
        pages[f"images/{page_for(name)}"] = render_image(name, recs, catalog)
    return pages


def render_run(run: runlog.RunRecord) -> str:
    outcomes = [
        dict(name=o.name, page=page_for(o.name), tag=o.tag, state=o.state, message=o.message)
        for o in run.outcomes
    ]
    totals = ", ".join(f"{n} {s}" for s, n in sorted(run.counts.items())) or "No record changed."
    return _env.get_template("run.md.j2").render(
        run_id=runlog.title(run),
        started=run.started,
        ci_url=run.ci_url,
        totals=totals,
        outcomes=outcomes,
        errors=list(run.errors),
    )


def run_pages(reports_dir: str, problems: list[str] | None = None) -> dict[str, str]:
    """The page of every run record; records that cannot be read are left out (and added to
    ``problems``), as are run pages without a record, which older trails have."""
    found, unreadable = runlog.load_all(reports_dir)
    if problems is not None:
        problems.extend(unreadable)
    return {f"{stem}.md": render_run(run) for stem, run in found}


class PageWriteError(SyncerError):
    """Some pages could not be written; ``written`` lists the ones that were."""

    def __init__(self, problems: list[str], written: list[str]):
        super().__init__(
            "could not write " + "; ".join(problems) + " (the records are "
            "unaffected; fix the path and run `syncer report`)"
        )
        self.written = written


def write_if_changed(root: Path, rel: str, content: str) -> bool:
    """Atomically replace ``root/rel`` with ``content``; untouched when the bytes are the same.
    Never through a symlink under ``root`` (UnsafePathError)."""
    path = root / rel
    data = content.encode("utf-8")
    if read_regular(root, path) == data:
        return False
    write_atomic(path, data, root=root)
    return True


def _write_pages(root: Path, pages: dict[str, str]) -> list[str]:
    """Writes each page that differs; one that cannot be written does not stop the others
    (PageWriteError at the end, naming every failure)."""
    written, problems = [], []
    for rel, content in pages.items():
        try:
            if write_if_changed(root, rel, content):
                written.append(str(root / rel))
        except (OSError, SyncerError) as err:
            problems.append(f"{root / rel}: {err}")
    if problems:
        raise PageWriteError(problems, written)
    return written


def regenerate(
    records: list[Record], catalog: Catalog | None, reports_dir: str, problems: list[str] | None = None
) -> list[str]:
    """Write every derived page that differs, run pages included; returns the paths written.
    Run records that cannot be read are added to ``problems``."""
    pages = render_all(records, catalog) | run_pages(reports_dir, problems)
    return _write_pages(Path(reports_dir), pages)


def refresh_pages(reports_dir: str, catalog: Catalog | None) -> None:
    """The pages regenerated from the records on disk, after another run's commits were
    integrated; a page that cannot be written was reported by the run already."""
    try:
        regenerate(Ledger(reports_dir).all(), catalog, reports_dir)
    except PageWriteError:
        pass


def write_reports(
    ledger: Ledger,
    catalog: Catalog | None,
    reports_dir: str,
    *,
    result: runlog.RunSummary,
    started: datetime,
    shard: tuple[int, int] | None = None,
) -> list[str]:
    """After a run that changed records: the derived pages, and the run's own record and page,
    named so that no other run's (another shard's, one started in the same second) is
    overwritten."""
    root = Path(reports_dir)
    run = runlog.from_result(result, started, os.environ, shard)
    stem = runlog.stem(run, lambda s: any(os.path.lexists(root / f"{s}{ext}") for ext in (".yaml", ".md")))
    # The record first: a page without its record could not be rebuilt.
    pages = {f"{stem}.yaml": runlog.dump(run), f"{stem}.md": render_run(run)}
    return _write_pages(root, pages | render_all(ledger.all(), catalog))
