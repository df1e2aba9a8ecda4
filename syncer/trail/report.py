"""Markdown reports from the records: the index, a page per image, a page per run.

Pages are a pure function of the records (and the catalog, for the signers a policy requires),
so ``syncer report`` regenerates them byte for byte, and a run that changed nothing leaves the
tree untouched. Run pages are written once, by the run they describe.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

import jinja2

from syncer.access.enforce import required_signers
from syncer.core import markdown
from syncer.core.model import Catalog, Finding, Record, State
from syncer.core.plan import Plan
from syncer.core.policy import count_by_severity, counts_text
from syncer.errors import SyncerError
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


def short(digest: str | None) -> str:
    if not digest:
        return ""
    return digest.split(":", 1)[-1][:12]


_env.filters["code"] = markdown.code
_env.filters["target"] = markdown.target
_env.filters["short"] = short


def sorted_findings(findings: Iterable[Finding]) -> list[Finding]:
    unique = {(f.id, f.package, f.installed, f.fixed, f.severity, f.platform): f for f in findings}
    return sorted(unique.values(), key=lambda f: (-int(f.severity), f.id, f.package, f.platform, f.installed))


def page_for(name: str) -> str:
    return f"{name}.md"


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
    signers: list[str]
    missing: list[str]
    replicas: str
    last_change: str


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
        name=rec.name, tag=rec.tag, page=page_for(rec.name), state=rec.state.value,
        state_badge=BADGES.get(rec.state, rec.state.value), digest=rec.digest,
        promoted=rec.promoted_digest, counts=counts, signers=list(rec.signatures),
        missing=_missing(rec, catalog), replicas=_replicas_cell(rec),
        last_change=rec.events[-1].at if rec.events else "",
    )


def _replicas_cell(rec: Record) -> str:
    """"2/2 in step", "1/2 in step, 1 lagging", or "—" without replicas."""
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
    return _env.get_template("index.md.j2").render(rows=rows, totals=_totals([r.state for r in rows]))


def render_image(name: str, records: list[Record], catalog: Catalog | None) -> str:
    entry = catalog.image(name) if catalog else None
    tags = []
    for rec in sorted(records, key=lambda r: r.tag):
        findings = sorted_findings(rec.scan.findings) if rec.scan else []
        counts = count_by_severity(findings)
        # The anchor is written into raw HTML (<a id=…>) and a link: [a-z0-9-] needs no escape.
        anchor = markdown.Markdown(re.sub(r"[^a-z0-9-]", "-", rec.tag.lower()))
        tags.append(dict(
            tag=rec.tag, anchor=anchor, state=rec.state.value,
            state_badge=BADGES.get(rec.state, rec.state.value), digest=rec.digest, source=rec.source,
            promoted=rec.promoted_digest, counts=counts, counts_text=counts_text(counts),
            signers=list(rec.signatures), missing=_missing(rec, catalog), scan=rec.scan,
            scanned=rec.scan.scanned_at if rec.scan else "", reasons=list(rec.reasons),
            findings=findings, multi_platform=len(rec.scan.platforms) > 1 if rec.scan else False,
            assessed=rec.scan is not None and not rec.scan.artifact
            and not any(c.unassessed or c.problem for c in rec.scan.covered),
            events=list(reversed(rec.events)), replicas=list(rec.replicas),
        ))
    return _env.get_template("image.md.j2").render(
        name=name, up="../" * name.count("/"), source=entry.source if entry else "",
        policy=entry.policy if entry else "", tags=tags)


def render_all(records: list[Record], catalog: Catalog | None) -> dict[str, str]:
    """Every derived page, keyed by its path relative to the reports directory."""
    by_name: dict[str, list[Record]] = defaultdict(list)
    for rec in records:
        by_name[rec.name].append(rec)
    pages = {"README.md": render_index(records, catalog)}
    for name, recs in sorted(by_name.items()):
        pages[f"images/{page_for(name)}"] = render_image(name, recs, catalog)
    return pages


class RunOutcome(Protocol):
    """A tag's outcome as the run page shows it (``syncer.stages.pipeline.TagOutcome``)."""

    name: str
    tag: str
    state: State | None
    changed: bool
    failed: bool
    message: str


class RunSummary(Protocol):
    """What a run hands the trail (``syncer.stages.pipeline.RunResult``); described here, as
    the trail sits below the stages and does not import them."""

    @property
    def outcomes(self) -> Sequence[RunOutcome]: ...
    @property
    def plan(self) -> Plan: ...
    def counts(self) -> dict[str, int]: ...


def render_run(result: RunSummary, started: datetime, run_id: str) -> str:
    outcomes = [dict(name=o.name, page=page_for(o.name), tag=o.tag,
                     state=o.state.value if o.state else "", message=o.message)
                for o in sorted(result.outcomes, key=lambda o: (o.name, o.tag)) if o.changed or o.failed]
    counts = result.counts()
    totals = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "No record changed."
    server, repo, ci_run = (os.environ.get(k) for k in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID"))
    ci_url = f"{server}/{repo}/actions/runs/{ci_run}" if server and repo and ci_run else ""
    return _env.get_template("run.md.j2").render(
        run_id=run_id, started=started.strftime("%Y-%m-%dT%H:%M:%SZ"), ci_url=ci_url, totals=totals,
        outcomes=outcomes, errors=list(result.plan.errors))


class PageWriteError(SyncerError):
    """Some pages could not be written; ``written`` lists the ones that were."""

    def __init__(self, problems: list[str], written: list[str]):
        super().__init__("could not write " + "; ".join(problems) + " (the records are "
                         "unaffected; fix the path and run `syncer report`)")
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


def regenerate(records: list[Record], catalog: Catalog | None, reports_dir: str) -> list[str]:
    """Write every derived page that differs; returns the paths written."""
    return _write_pages(Path(reports_dir), render_all(records, catalog))


def refresh_pages(reports_dir: str, catalog: Catalog | None) -> None:
    """The pages regenerated from the records on disk, after another run's commits were
    integrated; a page that cannot be written was reported by the run already."""
    try:
        regenerate(Ledger(reports_dir).all(), catalog, reports_dir)
    except PageWriteError:
        pass


def write_reports(ledger: Ledger, catalog: Catalog | None, reports_dir: str, *, result: RunSummary,
                  started: datetime) -> list[str]:
    """After a run that changed records: the derived pages, and a page for the run itself."""
    run_id = os.environ.get("GITHUB_RUN_ID") or started.strftime("%Y%m%dT%H%M%SZ")
    run_page = f"runs/{started.strftime('%Y-%m')}/{started.strftime('%Y%m%dT%H%M%SZ')}.md"
    pages = render_all(ledger.all(), catalog)
    pages[run_page] = render_run(result, started, run_id)
    return _write_pages(Path(reports_dir), pages)
