"""The pages at scale: an index made from the ledger's index alone, image pages paged by size
with tags in version order, and incremental regeneration that gives the same bytes as a
regeneration from scratch."""

from __future__ import annotations

import hashlib
import re
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from syncer.catalog import load_catalog
from syncer.core.model import (
    Event,
    Finding,
    IndexEntry,
    PlatformScan,
    Record,
    ReplicaState,
    ScanResult,
    Severity,
    State,
)
from syncer.core.policy import count_by_severity
from syncer.core.refs import version_key
from syncer.core.summary import summarize
from syncer.trail import report

CATALOG = Path(__file__).resolve().parents[2] / "catalog"


def _digest(i: int) -> str:
    return "sha256:" + hashlib.sha256(str(i).encode()).hexdigest()


def _scan(digest: str, findings: int) -> ScanResult:
    return ScanResult(
        digest=digest,
        scanner="trivy 0.76.0",
        db_updated_at="2026-11-01T00:00:00Z",
        scanned_at="2026-11-02T00:00:00Z",
        findings=tuple(
            Finding(
                f"CVE-2026-{i:05d}",
                f"pkg{i % 97}",
                "1.0",
                None if i % 3 else "1.1",
                Severity(i % 5),
                title="t",
            )
            for i in range(findings)
        ),
        covered=(PlatformScan(digest, os="debian 12.8"),),
    )


def _record(
    name: str, tag: str, *, state: State = State.PROMOTED, scan: ScanResult | None = None, **kw
) -> Record:
    digest = scan.digest if scan else _digest(0)
    base = dict(
        name=name,
        tag=tag,
        source=f"docker.io/{name}:{tag}@{digest}",
        digest=digest,
        state=state,
        reasons=[f"{tag} is held: 3 critical vulnerabilities"] if state is State.HELD else [],
        scan=scan or _scan(digest, 0),
        events=[Event("2026-11-02T00:00:00Z", "discovered", "x"), Event("2026-11-02T00:00:01Z", state.value)],
        promoted_digest=digest if state is State.PROMOTED else None,
        signatures=["ci"] if state is State.PROMOTED else [],
    )
    base.update(kw)
    return Record(**base)


@dataclass
class Index:
    entries: dict[tuple[str, str], IndexEntry]
    unreadable: list = field(default_factory=list)


def _key(rec: Record) -> str:
    """A stand-in for the record file's hash: the tests change a tag's record, never its scan."""
    return hashlib.sha256(repr(replace(rec, scan=None)).encode()).hexdigest()[:16]


class Trail:
    """The two things the pages read of a ledger: its index, and one tag's full record."""

    def __init__(self, records: list[Record]):
        self.records = {(r.name, r.tag): r for r in records}
        self.loaded: list[tuple[str, str]] = []
        self.counts: dict[int, tuple[ScanResult, dict[str, int]]] = {}

    def index(self) -> Index:
        return Index({key: self._entry(r) for key, r in sorted(self.records.items())})

    def _entry(self, rec: Record) -> IndexEntry:
        # Counting a scan's findings once, not once per tag: the huge image shares its scans.
        scan = rec.scan
        entry = summarize(replace(rec, scan=scan and replace(scan, findings=())), record_key=_key(rec))
        if scan is None or entry.scan is None:
            return entry
        if id(scan) not in self.counts:
            self.counts[id(scan)] = (scan, count_by_severity(scan.findings))
        return replace(
            entry, scan=replace(entry.scan, result=scan.digest[-16:], counts=self.counts[id(scan)][1])
        )

    def load(self, name: str, tag: str, *, confirmed: bool = True) -> Record | None:
        self.loaded.append((name, tag))
        return self.records.get((name, tag))


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_index_is_a_summary_of_the_ledger_index(monkeypatch, tmp_path):
    catalog = load_catalog(str(shutil.copytree(CATALOG, tmp_path / "catalog")))
    records = [_record("team/app", f"1.{i}.0", state=State.HELD) for i in range(12)]
    records += [
        _record("alpine", "3.20", signatures=[]),  # the default policy requires ci
        _record("alpine", "3.21", replicas=[ReplicaState("eu.example.com", None, None, lagging=True)]),
        _record("alpine", "3.9", state=State.MIRRORED, scan=None, promoted_digest=None, signatures=[]),
    ]
    monkeypatch.setattr(report, "ATTENTION_PER_PAGE", 5)
    monkeypatch.setattr(report, "IMAGES_PER_PAGE", 1)
    pages = report.render_index(Trail(records).index().entries.values(), catalog)
    assert sorted(pages) == ["README.md", "attention@2.md", "attention@3.md", "images@2.md"]
    readme = pages["README.md"]
    assert "15 tracked tags: 1 mirrored, 2 promoted, 12 held." in readme
    assert "12 held, 1 lagging, 1 missing signers." in readme
    # Worst first, then by image and by version: 1.2.0 before 1.10.0.
    items = [
        line
        for page in ("README.md", "attention@2.md", "attention@3.md")
        for line in pages[page].splitlines()
        if line.startswith("- [")
    ]
    assert items[:2] == [
        "- [team/app `1.0.0`](images/team/app.md#tag-1-0-0) — held: 1.0.0 is held: 3 critical vulnerabilities",
        "- [team/app `1.1.0`](images/team/app.md#tag-1-1-0) — held: 1.1.0 is held: 3 critical vulnerabilities",
    ]
    assert [i.split("`")[1] for i in items[:12]] == [f"1.{i}.0" for i in range(12)]
    assert items[12:] == [
        "- [alpine `3.21`](images/alpine.md#tag-3-21) — lagging: replica eu.example.com",
        "- [alpine `3.20`](images/alpine.md#tag-3-20) — missing signers: ci",
    ]
    assert "Page 1 of 3: 1 · [2](attention@2.md) · [3](attention@3.md)" in readme
    assert "[Back to the index](README.md)" in pages["attention@2.md"]
    # One row per image, its tags counted by state; the other images on the next page.
    assert "| [alpine](images/alpine.md) | 3 | 1 | — | 2 | — | — | — | — | 2 |" in readme
    assert "| [team/app](images/team/app.md) | 12 | — | — | — | 12 | — | — | — | 12 |" in pages["images@2.md"]
    assert "1.0.0" not in readme.split("## Images")[1]  # no row per tag


def test_a_huge_image_pages_by_size_in_version_order(tmp_path):
    scans = [_scan(_digest(d), 1500) for d in range(8)]
    tags = [f"{major}.{minor}.{patch}" for major in range(1, 3) for minor in range(20) for patch in range(30)]
    records = [
        _record("big/app", tag, state=State.HELD, scan=scans[i % len(scans)]) for i, tag in enumerate(tags)
    ]
    records.append(_record("big/app", "latest", state=State.HELD, scan=_scan(_digest(99), 3000)))
    written = report.regenerate(Trail(records), None, str(tmp_path))
    tree = _tree(tmp_path)
    assert {str(tmp_path / p) for p in tree} == set(written)
    too_big = {p: len(b) for p, b in tree.items() if len(b) > 300_000}
    assert not too_big, too_big
    image_pages = sorted(
        (p for p in tree if p.startswith("images/")), key=lambda p: int(p.partition("@")[2][:-3] or 1)
    )
    assert len(image_pages) > 10 and image_pages[:2] == ["images/big/app.md", "images/big/app@2.md"]
    # Every tag once, in version order across the pages (1.2.0 before 1.10.0).
    sections = [m for p in image_pages for m in re.findall(r'<a id="(tag-[^"]+)"></a>', tree[p].decode())]
    assert sections == [str(report.anchor_for(t)) for t in sorted([*tags, "latest"], key=version_key)]
    for rel in image_pages:
        page = tree[rel].decode()
        # A digest's findings are listed once per page, capped, the rest in the stored result.
        tables = page.count("<details")
        assert tables == len(set(re.findall(r"- Digest: `(sha256:[0-9a-f]+)`", page))), rel
        assert page.count("| CRITICAL |") <= tables * report.FINDINGS_SHOWN
        assert "are in the stored scan result [`scans/big/app/sha256-" in page
        assert "Page " in page.split("| tag |")[0]
    latest = tree[image_pages[-1]].decode()
    assert "The worst 200 are listed; all 3000 are in the stored scan result" in latest
    assert f"(../../scans/big/app/{_digest(99).replace(':', '-')}.yaml)" in latest
    # The index links each tag to the page that has its section.
    attention = "".join(b.decode() for p, b in tree.items() if p == "README.md" or p.startswith("attention@"))
    for rel in image_pages:
        for anchor in re.findall(r'<a id="(tag-[^"]+)"></a>', tree[rel].decode()):
            assert f"({rel}#{anchor})" in attention, (rel, anchor)


def _world() -> list[Record]:
    return [
        _record("team/app", tag, state=State.HELD, scan=_scan(_digest(i % 3), 40))
        for i, tag in enumerate(["1.0", "1.1", "1.2", "2.0"])
    ] + [_record("alpine", "3.20"), _record("alpine", "3.21")]


def test_only_pages_whose_inputs_changed_are_rendered(monkeypatch, tmp_path):
    rendered: list[str] = []
    render_image = report.render_image

    def counting(name, records, catalog):
        rendered.append(name)
        return render_image(name, records, catalog)

    monkeypatch.setattr(report, "render_image", counting)
    index_renders = []
    render_index = report.render_index
    monkeypatch.setattr(report, "render_index", lambda *a: index_renders.append(1) or render_index(*a))
    trail = Trail(_world())
    root = tmp_path / "reports"
    report.regenerate(trail, None, str(root))
    assert sorted(rendered) == ["alpine", "team/app"] and index_renders == [1]

    # Nothing changed: nothing is rendered, no record is read, nothing is written.
    rendered.clear(), index_renders.clear(), trail.loaded.clear()
    assert report.regenerate(trail, None, str(root)) == []
    assert rendered == [] and index_renders == [] and trail.loaded == []

    # One tag changes: its image's pages and the index only.
    changed = trail.records["team/app", "1.1"]
    trail.records["team/app", "1.1"] = replace(
        changed,
        state=State.PROMOTED,
        reasons=[],
        events=[*changed.events, Event("2026-11-03T00:00:00Z", "promoted")],
    )
    written = report.regenerate(trail, None, str(root))
    assert rendered == ["team/app"] and index_renders == [1]
    assert sorted(written) == sorted(str(root / p) for p in ("README.md", "images/team/app.md", "pages.json"))
    assert {name for name, _ in trail.loaded} == {"team/app"}

    # The same tree as from scratch.
    scratch = tmp_path / "scratch"
    report.regenerate(trail, None, str(scratch))
    assert _tree(root) == _tree(scratch)

    # A hand-edited page is rendered again; so is every page when the renderer changes.
    rendered.clear()
    (root / "images" / "alpine.md").write_text("edited by hand\n")
    assert report.regenerate(trail, None, str(root)) == [str(root / "images" / "alpine.md")]
    assert rendered == ["alpine"] and _tree(root) == _tree(scratch)
    rendered.clear()
    monkeypatch.setattr(report, "_RENDERER", "another renderer")
    report.regenerate(trail, None, str(root))
    assert sorted(rendered) == ["alpine", "team/app"]


def test_pages_of_images_no_longer_tracked_are_removed(monkeypatch, tmp_path):
    monkeypatch.setattr(report, "PAGE_BUDGET", 10_000)
    trail = Trail(_world())
    root = tmp_path / "reports"
    report.regenerate(trail, None, str(root))
    assert (root / "images" / "team" / "app@2.md").is_file()
    (root / "images" / "older.md").write_text("a page no manifest lists: left alone\n")
    for tag in ("1.0", "1.1", "1.2"):
        del trail.records["team/app", tag]
    del trail.records["alpine", "3.20"], trail.records["alpine", "3.21"]
    written = report.regenerate(trail, None, str(root))
    assert str(root / "images" / "alpine.md") in written and not (root / "images" / "alpine.md").exists()
    assert str(root / "images" / "team" / "app@2.md") in written
    assert sorted(p for p in _tree(root) if p.startswith("images/")) == [
        "images/older.md",
        "images/team/app.md",
    ]
    scratch = tmp_path / "scratch"
    report.regenerate(trail, None, str(scratch))
    assert {p: b for p, b in _tree(root).items() if p != "images/older.md"} == _tree(scratch)


def test_run_pages_render_when_their_record_changed(tmp_path):
    from syncer.trail import runlog
    from tests.unit.test_runlog import CI, STARTED, result  # one run record, as runs write it

    run = runlog.from_result(result(), STARTED, CI, None)
    record = tmp_path / "runs" / "2026-12" / "a.yaml"
    record.parent.mkdir(parents=True)
    record.write_text(runlog.dump(run))
    (record.parent / "bad.yaml").write_text("version: 1\n")
    (record.parent / "bad.md").write_text("the page of a run record that broke later\n")
    problems: list[str] = []
    written = report.regenerate(Trail([]), None, str(tmp_path), problems)
    assert str(record.with_suffix(".md")) in written
    assert record.with_suffix(".md").read_text() == report.render_run(run)
    assert len(problems) == 1 and "bad.yaml: not a run record" in problems[0]
    assert (record.parent / "bad.md").read_text() == "the page of a run record that broke later\n"
    assert report.regenerate(Trail([]), None, str(tmp_path), []) == []


@pytest.mark.parametrize("manifest", ["", "not json", '{"groups": [{"group": 1}]}'])
def test_an_unreadable_manifest_renders_everything_again(tmp_path, manifest):
    trail = Trail(_world())
    report.regenerate(trail, None, str(tmp_path))
    before = _tree(tmp_path)
    (tmp_path / "pages.json").write_text(manifest)
    report.regenerate(trail, None, str(tmp_path))
    assert _tree(tmp_path) == before
