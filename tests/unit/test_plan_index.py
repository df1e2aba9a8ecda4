"""The plan made from the ledger's index: records are read only for tags whose decision may
have changed, and the Markdown stays bounded however many tags are tracked."""

from __future__ import annotations

from datetime import date, timedelta

from syncer.core.model import (
    Catalog,
    EntryDiscovery,
    Finding,
    ImageEntry,
    IndexEntry,
    PlatformScan,
    Policy,
    Record,
    ScanResult,
    ScanSummary,
    Settings,
    Severity,
    State,
    Target,
    UpstreamTag,
    VulnException,
)
from syncer.core.plan import (
    LIST_MAX,
    Change,
    Plan,
    TagPlan,
    build_plan,
    predict,
    render_markdown,
    tag_decision_key,
)

TODAY = date(2026, 12, 1)
DB = "2026-11-30T00:00:00Z"
DIGEST = "sha256:" + "a" * 64
FINDING = Finding("CVE-2026-1", "zlib", "1.0", "1.1", Severity.CRITICAL)


def catalog(*names: str, exceptions: tuple[VulnException, ...] = ()) -> Catalog:
    return Catalog(
        root="catalog",
        settings=Settings(target=Target("registry.example")),
        images=tuple(ImageEntry(source=f"docker.io/library/{n}", name=n) for n in names),
        policies={"default": Policy("default", max={Severity.CRITICAL: 0})},
        exceptions=exceptions,
    )


def scan_result() -> ScanResult:
    return ScanResult(DIGEST, "trivy", DB, DB, findings=(FINDING,), covered=(PlatformScan(DIGEST),))


def record(name: str, tag: str, state: State, reasons: list[str]) -> Record:
    return Record(
        name, tag, f"docker.io/library/{name}:{tag}@{DIGEST}", DIGEST, state, reasons, scan_result()
    )


def entry(name: str, tag: str, state: State = State.HELD, decided: str = "", db: str = DB) -> IndexEntry:
    scan = ScanSummary(DIGEST, "result-key", "trivy", db, db)
    return IndexEntry(name, tag, DIGEST, state, "record-key", mirrored=True, scan=scan, decided=decided)


def discovery(name: str, *tags: str) -> EntryDiscovery:
    ups = [UpstreamTag(name, t, DIGEST, "", f"docker.io/library/{name}:{t}@{DIGEST}") for t in tags]
    return EntryDiscovery(
        ImageEntry(source=f"docker.io/library/{name}", name=name), ups, listed=frozenset(tags)
    )


def test_build_plan_compares_discovery_with_index_entries():
    recorded = {
        ("nginx", "1.0"): entry("nginx", "1.0", db="2026-11-01T00:00:00Z"),
        ("nginx", "2.0"): IndexEntry(
            "nginx", "2.0", "sha256:" + "b" * 64, State.PROMOTED, "k", mirrored=True
        ),
        ("nginx", "3.0"): IndexEntry("nginx", "3.0", DIGEST, State.MIRRORED, "k", mirrored=False),
        ("nginx", "old"): entry("nginx", "old"),
    }
    plan = build_plan([discovery("nginx", "1.0", "2.0", "3.0", "4.0")], recorded, db_updated_at=DB)
    got = {t.tag: (t.change, t.rescan, t.needs_copy, t.has_work) for t in plan.tags}
    assert got == {
        "1.0": (Change.UNCHANGED, True, False, True),  # scanned against an older database
        "2.0": (Change.MOVED, False, True, True),
        "3.0": (Change.UNCHANGED, False, True, True),  # never reached quarantine
        "4.0": (Change.NEW, False, True, True),
        "old": (Change.VANISHED, False, False, False),
    }


def test_predict_reads_only_the_records_whose_decision_key_changed():
    cat = catalog("nginx", "redis")
    held = "1 critical vulnerability (max 0): CVE-2026-1 (zlib 1.0, fixed in 1.1)"
    decided = {n: tag_decision_key(entry(n, "1.0"), cat, TODAY) or "" for n in ("nginx", "redis")}
    plan = build_plan(
        [discovery("nginx", "1.0"), discovery("redis", "1.0")],
        {(n, "1.0"): entry(n, "1.0", decided=decided[n]) for n in ("nginx", "redis")},
        db_updated_at=DB,
    )
    loaded: list[tuple[str, str]] = []

    def load(name: str, tag: str) -> Record:
        loaded.append((name, tag))
        return record(name, tag, State.HELD, [held])

    assert predict(plan, cat, TODAY, load) == [] and loaded == []

    # An exception for nginx's finding: its key changes, so its record is read and it is promoted.
    excepted = catalog(
        "nginx", "redis", exceptions=(VulnException("CVE-2026-1", ("nginx",), TODAY, "unreachable"),)
    )
    got = predict(plan, excepted, TODAY, load)
    assert loaded == [("nginx", "1.0")]
    assert [(p.name, p.before, p.after) for p in got] == [("nginx", State.HELD, State.PROMOTED)]

    # The day after it expires, nginx is decided anew again (the note names the expiry).
    loaded.clear()
    decided["nginx"] = tag_decision_key(entry("nginx", "1.0"), excepted, TODAY) or ""
    plan = build_plan(
        [discovery("nginx", "1.0")],
        {("nginx", "1.0"): entry("nginx", "1.0", State.PROMOTED, decided=decided["nginx"])},
        db_updated_at=DB,
    )
    assert predict(plan, excepted, TODAY, load) == [] and loaded == []
    later = predict(plan, excepted, TODAY + timedelta(days=1), load)
    assert loaded == [("nginx", "1.0")]
    assert later[0].after is State.HELD and "exception for CVE-2026-1 expired on" in later[0].reasons[-1]


def idle_plan(images: int, tags: int) -> Plan:
    plan = Plan(db_updated_at=DB)
    plan.tags = [
        TagPlan(
            f"team{i}/app", f"1.{t}.0", Change.UNCHANGED, DIGEST, "src", entry(f"team{i}/app", f"1.{t}.0")
        )
        for i in range(images)
        for t in range(tags)
    ]
    return plan


def test_the_plan_lists_unchanged_tags_up_to_the_limit_and_counts_them_by_image_beyond():
    listed = render_markdown(idle_plan(2, LIST_MAX // 2))
    assert listed.count("| team0/app | `1.") == LIST_MAX // 2
    counted = render_markdown(idle_plan(2, LIST_MAX // 2 + 1))
    assert "| `1." not in counted
    assert "| team0/app | 101 |" in counted and "| team1/app | 101 |" in counted


def test_the_plan_of_50000_tracked_tags_stays_small():
    markdown = render_markdown(idle_plan(500, 100))
    assert markdown.startswith("# syncer plan\n\n0 new, 0 moved, 50000 unchanged, 0 vanished.")
    assert len(markdown.encode()) < 30_000
