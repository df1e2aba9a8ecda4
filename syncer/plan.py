"""The plan: what upstream has compared with what the ledger recorded.

A pure step between discovery and the stages. ``syncer plan`` prints it; ``syncer run``
executes it. Nothing here talks to a registry or writes a file.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field

from syncer.discover import EntryDiscovery
from syncer.markdown import code, text
from syncer.model import Record, ReplicaState, State


class Change(str, enum.Enum):
    NEW = "new"  # never recorded
    MOVED = "moved"  # recorded with another digest: the tag moved upstream
    UNCHANGED = "unchanged"
    VANISHED = "vanished"  # recorded, but upstream no longer has the tag


# States from which the pipeline still has work to do on the same digest.
UNFINISHED = {State.MIRRORED, State.SCANNED, State.FAILED}


@dataclass(frozen=True)
class TagPlan:
    name: str
    tag: str
    change: Change
    digest: str | None  # upstream digest now (None when vanished)
    source: str | None  # upstream reference with digest
    recorded: Record | None  # the ledger's record before this run
    rescan: bool = False  # the vulnerability database is newer than the last scan
    deferred: bool = False  # the source's pull budget is below min_remaining_pulls

    @property
    def needs_copy(self) -> bool:
        """A copy from upstream is needed: new or moved digest, or an earlier copy failed."""
        if self.change in (Change.NEW, Change.MOVED):
            return True
        r = self.recorded
        return self.change is Change.UNCHANGED and r is not None and not was_mirrored(r)

    @property
    def has_work(self) -> bool:
        if self.change is Change.VANISHED:
            return False
        r = self.recorded
        return self.needs_copy or self.rescan or (r is not None and r.state in UNFINISHED)


@dataclass
class Plan:
    tags: list[TagPlan] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (catalog name, message)
    missing: list[tuple[str, str]] = field(default_factory=list)  # explicit tags not upstream
    db_updated_at: str | None = None

    def by_change(self, change: Change) -> list[TagPlan]:
        return [t for t in self.tags if t.change is change]


def was_mirrored(record: Record) -> bool:
    """Whether the record's current digest reached quarantine (its ``mirrored`` event names it)."""
    return any(e.event == "mirrored" and record.digest in e.detail for e in record.events)


def _older(scan_db: str | None, current_db: str | None) -> bool:
    # ISO 8601 UTC strings of one format compare correctly as text.
    return bool(current_db) and (not scan_db or scan_db < current_db)


def build_plan(
    discoveries: list[EntryDiscovery],
    recorded: dict[tuple[str, str], Record],
    *,
    db_updated_at: str | None,
    min_remaining: dict[str, int] | None = None,
) -> Plan:
    """Compare discovery with the ledger. ``recorded`` maps (name, tag) to its record.

    ``min_remaining`` maps an upstream host to its ``min_remaining_pulls``; a source whose
    last seen remaining budget is below it gets its copies deferred to a later run.
    """
    plan = Plan(db_updated_at=db_updated_at)
    min_remaining = min_remaining or {}
    # Recorded tags by name, once: looking them up by scanning every record for every entry
    # cost a 2,000-tag no-op a quarter of a second.
    recorded_tags: dict[str, list[str]] = {}
    for n, tag in recorded:
        recorded_tags.setdefault(n, []).append(tag)
    for d in discoveries:
        name = d.entry.name
        for err in d.errors:
            plan.errors.append((name, err))
        for tag in d.missing:
            plan.missing.append((name, tag))
        floor = min_remaining.get(d.entry.source_host)
        low_budget = floor is not None and d.ratelimit is not None and d.ratelimit.remaining is not None \
            and d.ratelimit.remaining < floor
        seen = set()
        for up in d.tags:
            seen.add(up.tag)
            rec = recorded.get((name, up.tag))
            if rec is None:
                change = Change.NEW
            elif rec.digest != up.digest:
                change = Change.MOVED
            else:
                change = Change.UNCHANGED
            # A scan that does not cover what the entry requires now (its `platforms` changed,
            # or it predates recorded coverage) is re-done like one against an older database.
            rescan = change is Change.UNCHANGED and rec is not None and rec.scan is not None \
                and (_older(rec.scan.db_updated_at, db_updated_at)
                     or not rec.scan.fits(rec.digest, d.entry.platforms))
            tp = TagPlan(name=name, tag=up.tag, change=change, digest=up.digest, source=up.source,
                         recorded=rec, rescan=rescan)
            if low_budget and tp.needs_copy:
                tp = dataclasses.replace(tp, deferred=True)
            plan.tags.append(tp)
        # A recorded tag is vanished only when upstream was asked about it and said no: for a
        # listed entry, absent from the listing; for an explicit tag, a 404 on HEAD.
        gone = set(d.missing)
        if d.listed is not None:
            gone |= {tag for tag in recorded_tags.get(name, ()) if tag not in d.listed}
        for tag in sorted(gone - seen):
            rec = recorded.get((name, tag))
            if rec is not None:
                plan.tags.append(TagPlan(name=name, tag=tag, change=Change.VANISHED, digest=None,
                                         source=None, recorded=rec))
    plan.tags.sort(key=lambda t: (t.name, t.tag))
    return plan


def _short(digest: str | None) -> str:
    return digest.split(":", 1)[1][:12] if digest and ":" in digest else (digest or "")


def render_markdown(plan: Plan) -> str:
    """The plan as Markdown for a pull request's job summary or a terminal."""
    new = plan.by_change(Change.NEW)
    moved = plan.by_change(Change.MOVED)
    unchanged = plan.by_change(Change.UNCHANGED)
    vanished = plan.by_change(Change.VANISHED)
    rescans = [t for t in unchanged if t.rescan]
    resume = [t for t in unchanged if not t.rescan and t.has_work]
    idle = [t for t in unchanged if not t.rescan and not t.has_work]
    deferred = [t for t in plan.tags if t.deferred]
    lines = ["# syncer plan", ""]
    lines.append(
        f"{len(new)} new, {len(moved)} moved, {len(unchanged)} unchanged, {len(vanished)} vanished"
        + (f", {len(rescans)} to re-scan" if rescans else "")
        + (f", {len(deferred)} deferred" if deferred else "")
        + (f", {len(plan.errors)} errors" if plan.errors else "")
        + "."
    )
    if plan.db_updated_at:
        lines += ["", f"Vulnerability database updated at {text(plan.db_updated_at)}."]

    def table(title: str, rows: list, cols: list[str], cells) -> None:
        if not rows:
            return
        lines.extend(["", f"## {title}", "", "| " + " | ".join(cols) + " |",
                      "|" + "---|" * len(cols)])
        lines.extend("| " + " | ".join(text(c) for c in cells(row)) + " |" for row in rows)

    table("New tags (will be mirrored and scanned)", new, ["image", "tag", "digest"],
          lambda t: [t.name, code(t.tag), code(_short(t.digest))])
    table("Moved tags (new digest upstream)", moved, ["image", "tag", "recorded", "upstream now"],
          lambda t: [t.name, code(t.tag), code(_short(t.recorded.digest)), code(_short(t.digest))])
    table("Re-scans (database newer than last scan, or the platforms required changed)", rescans, ["image", "tag", "state", "last scan db"],
          lambda t: [t.name, code(t.tag), t.recorded.state.value, t.recorded.scan.db_updated_at])
    table("Unfinished (resumed from the ledger)", resume, ["image", "tag", "state"],
          lambda t: [t.name, code(t.tag), t.recorded.state.value])
    lagging = [(t, st) for t in unchanged if t.recorded and t.recorded.promoted_digest
               for st in t.recorded.replicas if st.lagging or st.digest != t.recorded.promoted_digest]
    def lagging_cells(row: tuple[TagPlan, ReplicaState]) -> list[object]:
        t, st = row
        return [t.name, code(t.tag), st.registry, code(_short(st.digest) or "nothing"),
                code(_short(t.recorded.promoted_digest))]

    table("Replicas lagging (caught up by the next run)", lagging,
          ["image", "tag", "replica", "has", "approved"], lagging_cells)
    # Listed too, so that a reviewer sees an entry's tags resolved as expected (a `match`
    # that selects nothing new looks the same in the counts as one that selects nothing).
    table("Unchanged (nothing to do)", idle, ["image", "tag", "state", "digest"],
          lambda t: [t.name, code(t.tag), t.recorded.state.value, code(_short(t.digest))])
    table("Vanished upstream (records kept)", vanished, ["image", "tag", "state", "digest"],
          lambda t: [t.name, code(t.tag), t.recorded.state.value, code(_short(t.recorded.digest))])
    table("Deferred (upstream pull budget low)", deferred, ["image", "tag"],
          lambda t: [t.name, code(t.tag)])
    if plan.missing:
        lines.extend(["", "## Explicit tags missing upstream", ""])
        lines.extend(f"- {text(name)}: {code(tag)}" for name, tag in plan.missing)
    if plan.errors:
        lines.extend(["", "## Errors", ""])
        lines.extend(f"- {text(name)}: {text(msg)}" for name, msg in plan.errors)
    return "\n".join(lines) + "\n"
