"""Markdown reports: the index, the pages of each image, a page per run.

Pages are a pure function of the ledger (its index, and the full records of the image a page
shows), the catalog (the policy, signers, exceptions and approvals that explain a decision)
and the templates, so ``syncer report`` regenerates them byte for byte. They are rendered
incrementally: ``pages.json`` (the manifest, committed beside them) keeps, per group of pages
made together (the index, one image, one run), a hash of what they were made from and a hash of
each page's bytes; a group is rendered again only when its inputs changed or one of its pages
is not what was written (a hand edit, another run's version after a merge). The index is made
from the ledger's index alone; an image's pages load that image's records only.

No page grows without bound: an image's tags are packed into pages of at most ``PAGE_BUDGET``
bytes (``images/<name>.md``, ``<name>@2.md``, …; ``@`` is outside the name and tag grammars),
a tag's findings table lists the ``FINDINGS_SHOWN`` worst (all are in the stored scan result,
linked) and its history the ``EVENTS_SHOWN`` newest (all are in the record), and the index
lists ``ATTENTION_PER_PAGE`` tags that need attention and ``IMAGES_PER_PAGE`` images per page
(``attention@2.md``, ``images@2.md``, …).
"""

from __future__ import annotations

import bisect
import fnmatch
import hashlib
import json
import os
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

import jinja2

from syncer.access.enforce import required_signers
from syncer.core import markdown
from syncer.core.model import Catalog, Finding, IndexEntry, Policy, Record, State
from syncer.core.policy import APPROVED_BY, count_by_severity, counts_text, evaluate, live_exceptions
from syncer.core.refs import short_digest, version_key
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

PAGE_BUDGET = 250_000  # bytes of tag rows and sections per image page; one tag's section is far less
FINDINGS_SHOWN = 200  # rows of a tag's findings table, worst first
EVENTS_SHOWN = 50  # rows of a tag's history, newest first
REASONS_SHOWN = 50
TITLE_SHOWN = 160  # characters of an advisory's title
URL_SHOWN = 400  # longer advisory URLs are not linked as given (the issuer's page is)
ATTENTION_PER_PAGE = 200
IMAGES_PER_PAGE = 500
NAV_AROUND = 5  # page links either side of the current page
MANIFEST = "pages.json"

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


def _sources_hash() -> str:
    """What every page depends on besides its data: the templates and the code that fills
    them, so that a change to either renders every page again."""
    here = Path(__file__).resolve()
    core = here.parents[1] / "core"
    files = [here, core / "markdown.py", core / "policy.py", core / "refs.py"]
    files += sorted((here.parent / "templates").glob("*.j2"))
    h = hashlib.sha256()
    for path in files:
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


_RENDERER = _sources_hash()


def sorted_findings(findings: Iterable[Finding]) -> list[Finding]:
    unique = {(f.id, f.package, f.installed, f.fixed, f.severity, f.platform): f for f in findings}
    return sorted(unique.values(), key=lambda f: (-int(f.severity), f.id, f.package, f.platform, f.installed))


def page_for(name: str, number: int = 1) -> str:
    """The file of an image's page ``number``, relative to ``images/``."""
    return f"{name}.md" if number == 1 else f"{name}@{number}.md"


def anchor_for(tag: str) -> markdown.Markdown:
    """The id of a tag's section on its image page. It is written into raw HTML (<a id=…>)
    and links: [a-z0-9-] needs no escape."""
    return markdown.Markdown("tag-" + re.sub(r"[^a-z0-9-]", "-", tag.lower()))


def scan_file(name: str, digest: str) -> str:
    """The stored scan result of ``digest`` for image ``name``, relative to the reports."""
    return f"scans/{name}/{digest.replace(':', '-')}.yaml"


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
    if markdown.is_web_url(finding.url) and len(finding.url) <= URL_SHOWN:
        return finding.url
    return next(
        (page.format(finding.id) for pattern, page in _ADVISORY_PAGES if pattern.fullmatch(finding.id)), ""
    )


def _advisory(finding: Finding) -> markdown.Markdown:
    linked = markdown.link(finding.id, advisory_url(finding))
    title = finding.title if len(finding.title) <= TITLE_SHOWN else finding.title[: TITLE_SHOWN - 1] + "…"
    return markdown.Markdown(f"{linked} {markdown.text(title)}" if title else linked)


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


def _signed(promoted: str | None, digest: str, signatures: Sequence[str]) -> str:
    """Who signed, said of the digest the signatures belong to: the one in approved/."""
    if not promoted:
        return ""
    names = ", ".join(signatures)
    if promoted == digest:
        return names
    return f"{names or 'nobody'}, of the approved digest {short_digest(promoted)}"


def _required_signers(catalog: Catalog | None, name: str) -> tuple[str, ...]:
    if catalog is None:
        return ()
    entry = catalog.image(name)
    if entry is None or entry.policy not in catalog.policies:
        return ()
    return required_signers(catalog, entry)


def _missing(promoted: str | None, signatures: Sequence[str], required: Sequence[str]) -> list[str]:
    return [s for s in required if s not in signatures] if promoted else []


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


def _totals(states: Iterable[State]) -> str:
    by_state = Counter(states)
    total = sum(by_state.values())
    if not total:
        return ""
    parts = [f"{by_state[s]} {s.value}" for s in State if by_state.get(s)]
    noun = "tag" if total == 1 else "tags"
    return f"{total} tracked {noun}: " + ", ".join(parts) + "."


# --- navigation ----------------------------------------------------------------------------


def _nav(
    count: int, number: int, href: Callable[[int], str], first: str = "", last: str = ""
) -> dict[str, Any]:
    """Links to the first and last page and the NAV_AROUND pages either side of ``number``
    (a link without ``href`` where pages are left out); empty when there is one page."""
    if count <= 1:
        return {}
    shown = sorted({1, count} | set(range(max(1, number - NAV_AROUND), min(count, number + NAV_AROUND) + 1)))
    links: list[dict[str, Any]] = []
    for n in shown:
        if links and n > links[-1]["number"] + 1:
            links.append({"number": 0, "href": ""})
        links.append({"number": n, "href": href(n)})
    return {"count": count, "number": number, "links": links, "first": first, "last": last}


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)] or [[]]


# --- the index -----------------------------------------------------------------------------


# States that need someone to act, in the order the index lists them.
_EXPLAINED = (State.HELD, State.FLAGGED, State.DEMOTED, State.FAILED)
_KINDS = (*(s.value for s in _EXPLAINED), "lagging", "missing signers")


@dataclass(frozen=True)
class _Attention:
    kind: str  # one of _KINDS
    name: str
    tag: str
    page: str  # relative to images/
    anchor: str
    detail: str


def _attention(entry: IndexEntry, required: Sequence[str], page: str) -> list[_Attention]:
    items = []

    def add(kind: str, detail: str) -> None:
        items.append(_Attention(kind, entry.name, entry.tag, page, anchor_for(entry.tag), detail))

    if entry.state in _EXPLAINED:
        more = entry.reasons - 1
        noun = "reason" if more == 1 else "reasons"
        add(entry.state.value, entry.reason + (f" (and {more} more {noun} on its page)" if more > 0 else ""))
    lagging = [r.registry for r in entry.replicas if r.lagging]
    if lagging:
        add("lagging", "replica " + ", ".join(lagging))
    missing = _missing(entry.promoted_digest, entry.signatures, required)
    if missing:
        add("missing signers", ", ".join(missing))
    return items


@dataclass(frozen=True)
class _ImageRow:
    name: str
    page: str
    tags: int
    counts: tuple[int, ...]  # per State, in the enum's order
    attention: int
    databases: str  # the oldest and newest database its tags were last scanned with


_ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")


def _databases(entries: Iterable[IndexEntry]) -> str:
    """The database an image's tags were last scanned with, or the oldest and the newest
    ("A to B") when they differ; "" when none was scanned."""
    # Timestamps sort by time; anything else (a hand-edited record) after them.
    found = sorted({e.scan.db_updated_at for e in entries if e.scan}, key=lambda d: (not _ISO.match(d), d))
    if not found:
        return ""
    return found[0] if len(found) == 1 else f"{found[0]} to {found[-1]}"


def render_index(
    entries: Iterable[IndexEntry], catalog: Catalog | None, layout: dict[str, list[str]] | None = None
) -> dict[str, str]:
    """README.md and its continuation pages (``attention@N.md``, ``images@N.md``), from the
    index alone. ``layout`` gives, per image, the first tag of each of its pages (from
    ``render_image``), so that a tag's link lands on the page that has its section."""
    by_name: dict[str, list[IndexEntry]] = defaultdict(list)
    for e in entries:
        by_name[e.name].append(e)
    layout = layout or {}
    attention: list[_Attention] = []
    rows = []
    for name in sorted(by_name):
        group = sorted(by_name[name], key=lambda e: version_key(e.tag))
        required = _required_signers(catalog, name)
        firsts = [version_key(t) for t in layout.get(name, [])[1:]]
        found = []
        for e in group:
            number = bisect.bisect_right(firsts, version_key(e.tag)) + 1
            found += _attention(e, required, page_for(name, number))
        attention += found
        by_state = Counter(e.state for e in group)
        counts = tuple(by_state[s] for s in State)
        rows.append(
            _ImageRow(
                name, page_for(name), len(group), counts, len({a.tag for a in found}), _databases(group)
            )
        )
    attention.sort(key=lambda a: (_KINDS.index(a.kind), a.name, version_key(a.tag)))
    kinds = Counter(a.kind for a in attention)
    attention_totals = ", ".join(f"{kinds[k]} {k}" for k in _KINDS if kinds[k]) + "."
    states = [s.value for s in State]

    def pages(prefix: str, items: list[Any], size: int) -> list[dict[str, Any]]:
        chunks = _chunks(items, size)
        href = lambda n: "README.md" if n == 1 else f"{prefix}@{n}.md"  # noqa: E731
        return [dict(shown=c, nav=_nav(len(chunks), i + 1, href)) for i, c in enumerate(chunks)]

    attention_pages = pages("attention", attention, ATTENTION_PER_PAGE)
    image_pages = pages("images", rows, IMAGES_PER_PAGE)
    out = {
        "README.md": _env.get_template("index.md.j2").render(
            totals=_totals(e.state for group in by_name.values() for e in group),
            attention=attention_pages[0],
            attention_totals=attention_totals,
            images=image_pages[0],
            states=states,
        )
    }
    more = _env.get_template("more.md.j2")
    for n, p in enumerate(attention_pages[1:], start=2):
        out[f"attention@{n}.md"] = more.render(title="Needs attention", attention=p, nav=p["nav"])
    for n, p in enumerate(image_pages[1:], start=2):
        out[f"images@{n}.md"] = more.render(
            title="Images", attention=None, images=p, nav=p["nav"], states=states
        )
    return out


# --- image pages ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Findings:
    """A scan's findings as a page shows them on the day a tag was decided: the same for
    every tag of the image with that digest and day, so made once."""

    key: tuple[Any, ...]
    findings: tuple[Finding, ...]  # as scanned, to tell a different result of the same key
    found: int
    counts: dict[str, int]
    counted: dict[str, int] | None
    table: markdown.Markdown  # the findings table and where the rest are; "" without findings


def _findings_view(rec: Record, catalog: Catalog | None, cache: dict[Any, _Findings], up: str) -> _Findings:
    assert rec.scan is not None
    key = (rec.digest, rec.scan.digest, _decided_on(rec), rec.scan.platforms)
    cached = cache.get(key)
    if cached is not None and (cached.findings is rec.scan.findings or cached.findings == rec.scan.findings):
        return cached
    judged, counted = _judged(rec, catalog)
    counts = count_by_severity(f for f, _ in judged)
    result = scan_file(rec.name, rec.scan.digest)
    table = _env.get_template("findings.md.j2").render(
        found=len(judged),
        counts_text=counts_text(counts),
        multi_platform=len(rec.scan.platforms) > 1,
        findings=[dict(f=f, advisory=_advisory(f), counted=how) for f, how in judged[:FINDINGS_SHOWN]],
        result=result,
        result_link=up + result,
    )
    view = _Findings(
        key, rec.scan.findings, len(judged), counts, counted, markdown.Markdown(table if judged else "")
    )
    cache[key] = view
    return view


def _approver(rec: Record) -> str:
    """Who approved the digest in approved/, as its promoted event says (a manual policy's
    approval); "" for a digest a policy let through on its own."""
    promoted = rec.promoted_digest
    last = next((e for e in reversed(rec.events) if e.event == "promoted"), None)
    if promoted is None or last is None or not last.detail.startswith(promoted):
        return ""
    return last.detail.partition(APPROVED_BY)[2]


def _tag_view(
    rec: Record, catalog: Catalog | None, required: Sequence[str], findings: _Findings | None
) -> dict[str, Any]:
    counts = findings.counts if findings else count_by_severity(())
    counted = findings.counted if findings else None
    shown_events = list(reversed(rec.events))[:EVENTS_SHOWN]
    return dict(
        tag=rec.tag,
        anchor=anchor_for(rec.tag),
        state=rec.state.value,
        state_badge=BADGES.get(rec.state, rec.state.value),
        digest=rec.digest,
        source=rec.source,
        promoted=rec.promoted_digest,
        counts_text=counts_text(counts),
        signers=_signed(rec.promoted_digest, rec.digest, rec.signatures),
        signed_names=", ".join(rec.signatures) or "nobody",
        approved_by=_approver(rec),
        missing=_missing(rec.promoted_digest, rec.signatures, required),
        replicas_cell=_replicas_cell(rec),
        scan=rec.scan,
        scanned=rec.scan.scanned_at if rec.scan else "",
        reasons=rec.reasons[:REASONS_SHOWN],
        more_reasons=max(0, len(rec.reasons) - REASONS_SHOWN),
        record=f"records/{rec.name}/{rec.tag}.yaml",
        found=findings.found if findings else 0,
        findings=findings.table if findings else "",
        # Tags whose findings table is the same: it is shown once per page.
        findings_key=findings.key if findings and findings.found else None,
        counted_text=counts_text(counted) if counted is not None else "",
        cell=lambda key: _count_cell(counts, counted, key),
        assessed=rec.scan is not None
        and not rec.scan.artifact
        and not any(c.unassessed or c.problem for c in rec.scan.covered),
        events=shown_events,
        older_events=len(rec.events) - len(shown_events),
        replicas=list(rec.replicas),
    )


def render_image(name: str, records: Iterable[Record], catalog: Catalog | None) -> list[tuple[str, str]]:
    """The pages of one image as (first tag, page text), tags in version order, each page's
    tag rows and sections within PAGE_BUDGET bytes (a tag whose section alone is larger has
    a page of its own)."""
    entry = catalog.image(name) if catalog else None
    required = _required_signers(catalog, name)
    up = "../" * name.count("/")
    context = dict(
        name=name,
        up=up,
        source=entry.source if entry else "",
        policy=entry.policy if entry else "",
    )
    section, row = _env.get_template("tag.md.j2"), _env.get_template("tag_row.md.j2")
    cache: dict[Any, _Findings] = {}
    packed: list[list[tuple[dict[str, Any], str, str]]] = [[]]
    size, shown = 0, dict[Any, dict[str, Any]]()
    for rec in sorted(records, key=lambda r: version_key(r.tag)):
        # The stored results are beside images/.
        findings = _findings_view(rec, catalog, cache, "../" + up) if rec.scan else None
        t = _tag_view(rec, catalog, required, findings)
        parts = _tag_parts(t, section, row, shown, context)
        if packed[-1] and size + len(parts[0].encode()) + len(parts[1].encode()) > PAGE_BUDGET:
            packed.append([])
            size, shown = 0, dict[Any, dict[str, Any]]()
            parts = _tag_parts(t, section, row, shown, context)
        if t["findings_key"] is not None:
            shown.setdefault(t["findings_key"], t)
        packed[-1].append((t, *parts))
        size += len(parts[0].encode()) + len(parts[1].encode())
    page = _env.get_template("image.md.j2")
    pages = []
    for number, tags in enumerate(packed, start=1):
        first, last = (tags[0][0]["tag"], tags[-1][0]["tag"]) if tags else ("", "")
        nav = _nav(len(packed), number, lambda n: page_for(name.rsplit("/", 1)[-1], n), first, last)
        text = page.render(
            **context,
            nav=nav,
            rows=markdown.Markdown("".join(r for _, r, _ in tags)),
            sections=markdown.Markdown("".join(s for _, _, s in tags)),
        )
        pages.append((first, text))
    return pages


def _tag_parts(
    t: dict[str, Any],
    section: jinja2.Template,
    row: jinja2.Template,
    shown: dict[Any, Any],
    context: dict[str, Any],
) -> tuple[str, str]:
    """A tag's table row and its section, the section referring to an earlier tag of the
    same page that shows the same findings."""
    t["same_as"] = shown.get(t["findings_key"]) if t["findings_key"] is not None else None
    return row.render(t=t), section.render(t=t, **context)


# --- run pages -----------------------------------------------------------------------------


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


# --- incremental regeneration --------------------------------------------------------------


@dataclass(frozen=True)
class _Group:
    """Pages made together, and what they were made of: ``inputs`` hashes that, and each
    page is (path under the reports, hash of its bytes, first tag on it for image pages)."""

    inputs: str
    pages: tuple[tuple[str, str, str], ...]


def _digest(*parts: object) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(str(part).encode("utf-8") + b"\0")
    return h.hexdigest()[:16]


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _catalog_inputs(catalog: Catalog | None, name: str) -> str:
    """What of the catalog an image's pages show or explain its decisions with."""
    if catalog is None:
        return ""
    entry = catalog.image(name)
    return repr(
        (
            (entry.source, entry.policy) if entry else None,
            _policy_of(catalog, name),
            _required_signers(catalog, name),
            [e for e in catalog.exceptions if any(fnmatch.fnmatchcase(name, g) for g in e.images)],
            [a for a in catalog.approvals if a.image == name],
        )
    )


def read_manifest(root: Path) -> dict[str, _Group]:
    """The manifest's groups; an empty one when it is missing or not the manifest (every page
    is then rendered again, and the manifest rewritten)."""
    try:
        data = read_regular(root, root / MANIFEST)
        doc = json.loads(data) if data is not None else {}
        return {
            g["group"]: _Group(g["inputs"], tuple((p, sha, first) for p, sha, first in g["pages"]))
            for g in doc.get("groups", [])
        }
    except (OSError, SyncerError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def dump_manifest(groups: dict[str, _Group]) -> str:
    """One group per line, sorted: a change to one image's pages is a one-line diff."""
    lines = [
        json.dumps(
            {"group": key, "inputs": g.inputs, "pages": [list(p) for p in g.pages]}, ensure_ascii=False
        )
        for key, g in sorted(groups.items())
    ]
    return '{"format": 1,\n "groups": [\n' + ",\n".join(lines) + "\n]}\n"


def _intact(root: Path, group: _Group) -> bool:
    """Whether every page of ``group`` holds the bytes it was written with."""
    for rel, sha, _ in group.pages:
        try:
            data = read_regular(root, root / rel)
        except (OSError, SyncerError):
            return False
        if data is None or hashlib.sha256(data).hexdigest()[:16] != sha:
            return False
    return True


@dataclass
class _Plan:
    """What a regeneration found: the groups as they now are, and the pages to write."""

    old: dict[str, _Group]
    groups: dict[str, _Group] = field(default_factory=dict)
    pages: dict[str, str] = field(default_factory=dict)

    def fresh(self, root: Path, key: str, inputs: str) -> bool:
        """Keeps the group when its inputs are those its pages were made of and the pages are
        intact; False when it must be rendered."""
        prior = self.old.get(key)
        if prior is not None and prior.inputs == inputs and _intact(root, prior):
            self.groups[key] = prior
            return True
        return False

    def add(self, key: str, inputs: str, pages: Sequence[tuple[str, str, str]]) -> None:
        self.groups[key] = _Group(inputs, tuple((rel, _sha(text), first) for rel, text, first in pages))
        self.pages.update({rel: text for rel, text, _ in pages})


def regenerate(
    ledger: Ledger, catalog: Catalog | None, reports_dir: str, problems: list[str] | None = None
) -> list[str]:
    """Render the pages whose inputs changed and write those that differ; remove the pages
    of images no longer tracked. ``ledger`` gives the index (``ledger.index()``) and the full
    records of the tags of an image whose pages are rendered (``ledger.load(name, tag)``).
    Returns the paths written or removed; records and run records that cannot be read are
    added to ``problems``."""
    root = Path(reports_dir)
    index = ledger.index()
    plan = _Plan(read_manifest(root))
    by_name: dict[str, list[IndexEntry]] = defaultdict(list)
    for entry in index.entries.values():
        by_name[entry.name].append(entry)
    layout: dict[str, list[str]] = {}
    image_inputs = []
    for name in sorted(by_name):
        group = sorted(by_name[name], key=lambda e: version_key(e.tag))
        key = f"image:{name}"
        inputs = _digest(_RENDERER, _catalog_inputs(catalog, name), *map(_page_inputs, group))
        if not plan.fresh(root, key, inputs):
            records = _load_all(ledger, group, problems)
            rendered = render_image(name, records, catalog)
            plan.add(
                key,
                inputs,
                [(f"images/{page_for(name, n)}", text, first) for n, (first, text) in enumerate(rendered, 1)],
            )
        layout[name] = [first for _, _, first in plan.groups[key].pages]
        image_inputs.append((name, inputs, layout[name], _databases(group)))
    inputs = _digest(_RENDERER, *image_inputs)
    if not plan.fresh(root, "index", inputs):
        rendered_index = render_index(index.entries.values(), catalog, layout)
        plan.add("index", inputs, [(rel, text, "") for rel, text in rendered_index.items()])
    _plan_runs(root, plan, problems)
    # An image whose records cannot be read keeps its pages until they are restored.
    for key in {f"image:{u.name}" for u in index.unreadable} - plan.groups.keys():
        if key in plan.old:
            plan.groups[key] = plan.old[key]
    return _apply(root, plan)


def _page_inputs(entry: IndexEntry) -> str:
    """What of an entry an image page depends on: not when a re-scan last confirmed the
    result, nor the decision's fingerprint (the record holds the decision), so that a
    database update that changes no decision renders no image page (the index shows the
    databases of the last scans)."""
    scan = entry.scan and replace(entry.scan, scanner="", db_updated_at="", scanned_at="")
    return repr(replace(entry, scan=scan, decided=""))


def _load_all(ledger: Ledger, entries: Sequence[IndexEntry], problems: list[str] | None) -> list[Record]:
    records = []
    for e in entries:
        try:
            rec = ledger.load(e.name, e.tag, confirmed=False)
        except SyncerError as err:
            if problems is not None:
                problems.append(str(err))
            continue
        if rec is not None:
            records.append(rec)
    return records


def _plan_runs(root: Path, plan: _Plan, problems: list[str] | None) -> None:
    """Run pages: each from the run record beside it, rendered when the record's bytes (or
    the renderer) changed. A run record that cannot be read leaves its page as it is."""
    for stem, path in runlog.files(root):
        key = f"run:{stem}"
        try:
            data = read_regular(root, path)
            if data is None:
                continue
            inputs = _digest(_RENDERER, hashlib.sha256(data).hexdigest())
            if plan.fresh(root, key, inputs):
                continue
            run = runlog.parse_file(data, path)
        except (OSError, SyncerError) as err:
            _keep(plan, key, problems, str(err))
            continue
        plan.add(key, inputs, [(f"{stem}.md", render_run(run), "")])


def _keep(plan: _Plan, key: str, problems: list[str] | None, problem: str) -> None:
    if problems is not None:
        problems.append(problem)
    if key in plan.old:
        plan.groups[key] = plan.old[key]


def _apply(root: Path, plan: _Plan) -> list[str]:
    """Writes the rendered pages that differ, removes the pages no group has any more, and
    writes the manifest; returns the paths written or removed."""
    written, problems = [], []
    kept = {rel for g in plan.groups.values() for rel, _, _ in g.pages}
    gone = sorted({rel for g in plan.old.values() for rel, _, _ in g.pages} - kept)
    for rel in gone:
        try:
            if read_regular(root, root / rel) is not None:
                (root / rel).unlink()
                written.append(str(root / rel))
        except (OSError, SyncerError) as err:
            problems.append(f"{root / rel}: {err}")
    pages = dict(plan.pages)
    manifest = dump_manifest(plan.groups)
    if plan.pages or gone or plan.groups != plan.old:
        pages[MANIFEST] = manifest
    try:
        written += _write_pages(root, pages)
    except PageWriteError as err:
        raise PageWriteError(problems + err.problems, written + err.written) from None
    if problems:
        raise PageWriteError(problems, written)
    return written


class PageWriteError(SyncerError):
    """Some pages could not be written; ``written`` lists the ones that were."""

    def __init__(self, problems: list[str], written: list[str]):
        super().__init__(
            "could not write " + "; ".join(problems) + " (the records are "
            "unaffected; fix the path and run `syncer report`)"
        )
        self.problems = problems
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


def refresh_pages(reports_dir: str, catalog: Catalog | None) -> None:
    """The ledger's index and the pages made again from the records on disk, after another
    run's commits were integrated; a page that cannot be written was reported by the run
    already."""
    ledger = Ledger(reports_dir)
    try:
        regenerate(ledger, catalog, reports_dir)
    except PageWriteError:
        pass
    ledger.flush()


def write_reports(
    ledger: Ledger,
    catalog: Catalog | None,
    reports_dir: str,
    *,
    result: runlog.RunSummary,
    started: datetime,
    shard: tuple[int, int] | None = None,
) -> list[str]:
    """After a run that changed records: its run record, named so that no other run's
    (another shard's, one started in the same second) is overwritten, then the pages whose
    inputs changed, the run's own page among them."""
    root = Path(reports_dir)
    run = runlog.from_result(result, started, os.environ, shard)
    stem = runlog.stem(run, lambda s: any(os.path.lexists(root / f"{s}{ext}") for ext in (".yaml", ".md")))
    # The record first: a page without its record could not be rebuilt.
    written = _write_pages(root, {f"{stem}.yaml": runlog.dump(run)})
    return written + regenerate(ledger, catalog, reports_dir)
