"""The plan: what upstream has compared with what the ledger recorded.

A pure step between discovery and the stages. ``syncer plan`` prints it; ``syncer run``
executes it. Nothing here talks to a registry or writes a file. ``predict`` adds what the
next run would decide for the recorded tags it evaluates without a new scan, from their
recorded scans and the catalog as it is now (a pull request's).

The plan is made from the ledger's index (``IndexEntry``, one per tracked tag), never from
full records: those are read, through the loader ``predict`` is given, only for the tags
whose decision's inputs changed since the run last decided them (``decision_key``).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from syncer.core.markdown import code, text
from syncer.core.model import Catalog, EntryDiscovery, IndexEntry, Location, Record, ReplicaSummary, State
from syncer.core.policy import decision_key, evaluate, next_state
from syncer.core.refs import short_digest
from syncer.errors import Diagnostic


class Change(str, enum.Enum):
    NEW = "new"  # never recorded
    MOVED = "moved"  # recorded with another digest: the tag moved upstream
    UNCHANGED = "unchanged"
    VANISHED = "vanished"  # recorded, but upstream no longer has the tag


# Past this many rows a table of the plan is counted by image instead of listed.
LIST_MAX = 200

# States from which the pipeline still has work to do on the same digest.
UNFINISHED = {State.MIRRORED, State.SCANNED, State.FAILED}


@dataclass(frozen=True)
class TagPlan:
    name: str
    tag: str
    change: Change
    digest: str | None  # upstream digest now (None when vanished)
    source: str | None  # upstream reference with digest
    recorded: IndexEntry | None  # the ledger's index entry before this run
    rescan: bool = False  # the vulnerability database is newer than the last scan
    deferred: bool = False  # the source's pull budget is below min_remaining_pulls

    @property
    def needs_copy(self) -> bool:
        """A copy from upstream is needed: new or moved digest, or an earlier copy failed."""
        if self.change in (Change.NEW, Change.MOVED):
            return True
        r = self.recorded
        return self.change is Change.UNCHANGED and r is not None and not r.mirrored

    @property
    def has_work(self) -> bool:
        if self.change is Change.VANISHED:
            return False
        r = self.recorded
        return self.needs_copy or self.rescan or (r is not None and r.state in UNFINISHED)


@dataclass(frozen=True)
class Prediction:
    """A recorded tag whose decision the next run would change: its state, or its reasons."""

    name: str
    tag: str
    digest: str
    before: State
    after: State
    reasons: tuple[str, ...]


@dataclass
class Plan:
    tags: list[TagPlan] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (catalog name, message)
    missing: list[tuple[str, str]] = field(default_factory=list)  # explicit tags not upstream
    db_updated_at: str | None = None
    predictions: list[Prediction] = field(default_factory=list)  # filled by ``predict``
    missing_at: dict[tuple[str, str], Location] = field(default_factory=dict)  # ``locate_missing``

    def by_change(self, change: Change) -> list[TagPlan]:
        return [t for t in self.tags if t.change is change]


def was_mirrored(record: Record) -> bool:
    """Whether the record's current digest reached quarantine (its ``mirrored`` event names it)."""
    return any(e.event == "mirrored" and record.digest in e.detail for e in record.events)


def _older(scan_db: str | None, current_db: str | None) -> bool:
    # ISO 8601 UTC strings of one format compare correctly as text.
    return bool(current_db and (not scan_db or scan_db < current_db))


def build_plan(
    discoveries: list[EntryDiscovery],
    recorded: dict[tuple[str, str], IndexEntry],
    *,
    db_updated_at: str | None,
    min_remaining: dict[str, int] | None = None,
) -> Plan:
    """Compare discovery with the ledger. ``recorded`` maps (name, tag) to its index entry.

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
        low_budget = (
            floor is not None
            and d.ratelimit is not None
            and d.ratelimit.remaining is not None
            and d.ratelimit.remaining < floor
        )
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
            rescan = (
                change is Change.UNCHANGED
                and rec is not None
                and rec.scan is not None
                and (
                    _older(rec.scan.db_updated_at, db_updated_at)
                    or not rec.scan.fits(rec.digest, d.entry.platforms)
                )
            )
            tp = TagPlan(
                name=name,
                tag=up.tag,
                change=change,
                digest=up.digest,
                source=up.source,
                recorded=rec,
                rescan=rescan,
            )
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
                plan.tags.append(
                    TagPlan(
                        name=name, tag=tag, change=Change.VANISHED, digest=None, source=None, recorded=rec
                    )
                )
    plan.tags.sort(key=lambda t: (t.name, t.tag))
    return plan


def tag_decision_key(entry: IndexEntry, catalog: Catalog, today: date) -> str | None:
    """``decision_key`` of a recorded tag under ``catalog`` on ``today``, from its index entry
    alone; None when there is nothing to decide from (no usable scan, no catalog entry or
    policy), which never equals a recorded key."""
    image, scan = catalog.image(entry.name), entry.scan
    if scan is None or image is None or image.policy not in catalog.policies:
        return None
    return decision_key(
        name=entry.name,
        digest=entry.digest,
        scan_result_key=scan.result,
        created=scan.created,
        policy=catalog.policy_for(image),
        exceptions=catalog.exceptions,
        approvals=catalog.approvals,
        today=today,
    )


def predict(
    plan: Plan, catalog: Catalog, today: date, load: Callable[[str, str], Record | None]
) -> list[Prediction]:
    """What the next run would decide anew for each unchanged tag it evaluates from its
    recorded scan (no copy, no re-scan due): the run's own evaluation and state rule, so a
    pull request that adds an exception, an approval or a policy change shows its effect.
    Tags to be copied or re-scanned first are not predicted: their scan is yet to be made.

    Only tags whose ``decision_key`` differs from the one the last run decided with are
    evaluated, their full record read through ``load(name, tag)``: an equal key is the
    recorded decision, so a plan of an unchanged catalog reads no record."""
    out = []
    for t in plan.tags:
        entry, image = t.recorded, catalog.image(t.name)
        if (
            t.change is not Change.UNCHANGED
            or t.needs_copy
            or t.rescan
            or entry is None
            or entry.scan is None
            or image is None
            or not entry.scan.fits(entry.digest, image.platforms)
        ):
            continue
        key = tag_decision_key(entry, catalog, today)
        if key is None or key == entry.decided:
            continue
        rec = load(t.name, t.tag)
        if rec is None or rec.scan is None:
            continue
        policy = catalog.policy_for(image)
        decision = evaluate(
            name=t.name,
            digest=rec.digest,
            scan=rec.scan,
            policy=policy,
            exceptions=catalog.exceptions,
            approvals=catalog.approvals,
            today=today,
        )
        after = next_state(
            decision,
            current=rec.state,
            in_approved=rec.promoted_digest == rec.digest,
            on_regression=policy.on_regression,
        )
        if after is not rec.state or list(decision.reasons) != rec.reasons:
            out.append(Prediction(t.name, t.tag, rec.digest, rec.state, after, decision.reasons))
    return out


def locate_missing(plan: Plan, catalog: Catalog) -> list[Diagnostic]:
    """Each explicit tag upstream does not have, at the catalog line that lists it (also
    kept in ``plan.missing_at`` for the Markdown)."""
    out = []
    for name, tag in plan.missing:
        entry = catalog.image(name)
        if entry is None:
            continue
        where = dict(entry.tag_locations).get(tag, entry.location)
        if where is not None:
            plan.missing_at[(name, tag)] = where
            out.append(
                Diagnostic(
                    where,
                    f"tag '{tag}' of {name} is not in {entry.source} "
                    "upstream; fix the tag or remove it from 'tags'",
                )
            )
    return out


def render_markdown(plan: Plan) -> str:
    """The plan as Markdown for a pull request's job summary or a terminal."""
    new = plan.by_change(Change.NEW)
    moved = plan.by_change(Change.MOVED)
    unchanged = plan.by_change(Change.UNCHANGED)
    vanished = plan.by_change(Change.VANISHED)
    predicted = {(p.name, p.tag) for p in plan.predictions}
    rescans = [t for t in unchanged if t.rescan]
    resume = [t for t in unchanged if not t.rescan and t.has_work and (t.name, t.tag) not in predicted]
    idle = [t for t in unchanged if not t.rescan and not t.has_work and (t.name, t.tag) not in predicted]
    deferred = [t for t in plan.tags if t.deferred]
    decided: dict[str, int] = {}
    for p in plan.predictions:
        if p.after is not p.before:
            decided[p.after.value] = decided.get(p.after.value, 0) + 1
    lines = ["# syncer plan", ""]
    lines.append(
        f"{len(new)} new, {len(moved)} moved, {len(unchanged)} unchanged, {len(vanished)} vanished"
        + (f", {len(rescans)} to re-scan" if rescans else "")
        + "".join(f", {n} to be {state}" for state, n in sorted(decided.items()))
        + (f", {len(deferred)} deferred" if deferred else "")
        + (f", {len(plan.errors)} errors" if plan.errors else "")
        + "."
    )
    if plan.db_updated_at:
        lines += ["", f"Vulnerability database updated at {text(plan.db_updated_at)}."]

    def table(
        title: str,
        rows: Sequence[Any],
        cols: list[str],
        cells: Callable[[Any], list[object]],
        image: Callable[[Any], str] = lambda row: str(row.name),
    ) -> None:
        if not rows:
            return
        lines.extend(["", f"## {title}", ""])
        if len(rows) > LIST_MAX:
            # A job summary or a pull request comment has to stay readable at 50,000 tags.
            per_image: dict[str, int] = {}
            for row in rows:
                per_image[image(row)] = per_image.get(image(row), 0) + 1
            lines.append(
                f"{len(rows)} rows in {len(per_image)} images, counted by image (listed one by one up to {LIST_MAX}):"
            )
            cols, rows, cells = ["image", "rows"], sorted(per_image.items()), list
        lines.extend(["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)])
        lines.extend("| " + " | ".join(text(c) for c in cells(row)) + " |" for row in rows)

    table(
        "New tags (will be mirrored and scanned)",
        new,
        ["image", "tag", "digest"],
        lambda t: [t.name, code(t.tag), code(short_digest(t.digest))],
    )
    table(
        "Moved tags (new digest upstream)",
        moved,
        ["image", "tag", "recorded", "upstream now"],
        lambda t: [t.name, code(t.tag), code(short_digest(t.recorded.digest)), code(short_digest(t.digest))],
    )
    table(
        "Decisions the next run changes (recorded scans evaluated against this catalog)",
        plan.predictions,
        ["image", "tag", "now", "next run", "why"],
        lambda p: [
            p.name,
            code(p.tag),
            p.before.value,
            p.after.value,
            "; ".join(p.reasons) or "passes the policy",
        ],
    )
    table(
        "Re-scans (database newer than last scan, or the platforms required changed)",
        rescans,
        ["image", "tag", "state", "last scan db"],
        lambda t: [t.name, code(t.tag), t.recorded.state.value, t.recorded.scan.db_updated_at],
    )
    table(
        "Unfinished (resumed from the ledger)",
        resume,
        ["image", "tag", "state"],
        lambda t: [t.name, code(t.tag), t.recorded.state.value],
    )
    lagging = [
        (t, rec, st)
        for t in unchanged
        if (rec := t.recorded) and rec.promoted_digest
        for st in rec.replicas
        if st.lagging or st.digest != rec.promoted_digest
    ]

    def lagging_cells(row: tuple[TagPlan, IndexEntry, ReplicaSummary]) -> list[object]:
        t, rec, st = row
        return [
            t.name,
            code(t.tag),
            st.registry,
            code(short_digest(st.digest) or "nothing"),
            code(short_digest(rec.promoted_digest)),
        ]

    table(
        "Replicas lagging (caught up by the next run)",
        lagging,
        ["image", "tag", "replica", "has", "approved"],
        lagging_cells,
        lambda row: row[0].name,
    )
    # Listed too, so that a reviewer sees an entry's tags resolved as expected (a `match`
    # that selects nothing new looks the same in the counts as one that selects nothing).
    table(
        "Unchanged (nothing to do)",
        idle,
        ["image", "tag", "state", "digest"],
        lambda t: [t.name, code(t.tag), t.recorded.state.value, code(short_digest(t.digest))],
    )
    table(
        "Vanished upstream (records kept)",
        vanished,
        ["image", "tag", "state", "digest"],
        lambda t: [t.name, code(t.tag), t.recorded.state.value, code(short_digest(t.recorded.digest))],
    )
    table("Deferred (upstream pull budget low)", deferred, ["image", "tag"], lambda t: [t.name, code(t.tag)])
    if plan.missing:
        lines.extend(["", "## Explicit tags missing upstream", ""])
        lines.extend(
            f"- {text(name)}: {code(tag)}"
            + (f" ({text(plan.missing_at[(name, tag)])})" if (name, tag) in plan.missing_at else "")
            for name, tag in plan.missing
        )
    if plan.errors:
        lines.extend(["", "## Errors", ""])
        lines.extend(f"- {text(name)}: {text(msg)}" for name, msg in plan.errors)
    return "\n".join(lines) + "\n"
