"""Ledger format 1 (scan inline, as commit 48582ff wrote records) migrates to format 2: the
full records read before and after are equal, and so are their index entries."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from syncer.trail.ledger import Ledger

FIXTURE = Path(__file__).parent.parent / "data" / "ledger_format1"


@pytest.fixture
def reports(tmp_path: Path) -> Path:
    shutil.copytree(FIXTURE / "records", tmp_path / "reports" / "records")
    return tmp_path / "reports"


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_format_1_records_read_as_they_are_and_nothing_is_written(reports: Path):
    before = files(reports)
    ledger = Ledger(reports)
    index = ledger.index()
    assert index.legacy == 7 and index.unreadable == [] and index.strays == []
    assert any("7 records are in ledger format 1" in n for n in index.notes)
    records = ledger.all()
    assert [(r.name, r.tag) for r in records] == list(index.entries)
    assert all(ledger.load(r.name, r.tag) == r for r in records)
    assert files(reports) == before  # a plan reads; it never writes


def test_migration_keeps_every_record_and_entry_and_rewrites_them_once(reports: Path):
    old = Ledger(reports)
    before_entries = old.index().entries
    before = old.all()
    ledger = Ledger(reports)
    assert ledger.migrate() == 7
    written = {str(p.relative_to(reports)) for p in ledger.written()}
    assert written == {
        *(f"records/{r.name}/{r.tag}.yaml" for r in before),
        *(f"scans/{n}/sha256-{c * 32}.yaml" for n, c in [("bitnami/redis", "1a"), ("nginx", "2b")]),
        "scans/app/tool/sha256-" + "4d" * 32 + ".yaml",
        "scans/alpine/sha256-" + "5e" * 32 + ".yaml",
        "ledger.json",
    }
    assert all(p.read_bytes().startswith(b"format: 2\n") for p in (reports / "records").rglob("*.yaml"))
    assert all(b"findings" not in p.read_bytes() for p in (reports / "records").rglob("*.yaml"))

    after_ledger = Ledger(reports)
    after_index = after_ledger.index()
    assert after_index.legacy == 0 and after_index.notes == [] and after_index.unreadable == []
    after = after_ledger.all()
    by_key = {(r.name, r.tag): r for r in after}
    # nginx 1.27 and 1.27.3 share a digest whose two inline scans differ: the newest wins
    # for both (1.27 keeps its own scan times); every other record is equal, scan included.
    winner = next(r for r in before if r.tag == "1.27.3").scan
    for r in before:
        if r.tag == "1.27":
            assert by_key[("nginx", "1.27")] == replace(
                r, scan=replace(winner, db_updated_at=r.scan.db_updated_at, scanned_at=r.scan.scanned_at)
            )
        else:
            assert by_key[(r.name, r.tag)] == r, r.tag
    for key, entry in after_index.entries.items():
        expected = before_entries[key]
        if key == ("nginx", "1.27"):
            expected = replace(
                expected,
                scan=replace(expected.scan, result=after_index.entries[("nginx", "1.27.3")].scan.result),
            )
        assert replace(entry, record_key="") == replace(expected, record_key=""), key
    assert list(after_index.entries) == list(before_entries)
    # Once is enough: nothing is left to migrate, and nothing is written again.
    settled = files(reports)
    again = Ledger(reports)
    assert again.migrate() == 0 and again.written() == [] and files(reports) == settled


def test_tags_of_one_digest_share_one_stored_result_with_the_first_scan_that_found_it(reports: Path):
    Ledger(reports).migrate()
    stored = reports / "scans" / "bitnami" / "redis" / ("sha256-" + "1a" * 32 + ".yaml")
    # 7.2.4 was scanned on 03-01 and 7.2 again on 03-02 with the same result.
    assert stored.read_text().startswith(
        "found_with: {scanner: trivy 0.76.0, db_updated_at: '2026-02-28T06:00:00Z', "
        "scanned_at: '2026-03-01T10:00:00Z'}\n"
    )
    ledger = Ledger(reports)
    assert ledger.load("bitnami/redis", "7.2").scan.scanned_at == "2026-03-02T07:00:00Z"
    assert ledger.load("bitnami/redis", "7.2.4").scan.scanned_at == "2026-03-01T10:00:00Z"
    record_72 = (reports / "records" / "bitnami" / "redis" / "7.2.yaml").read_text()
    assert "  scanned_at: '2026-03-01T10:00:00Z'\n" in record_72  # the record holds found_with's


def test_migrated_events_are_the_old_ones_byte_for_byte(reports: Path):
    old = {p: p.read_bytes() for p in (reports / "records").rglob("*.yaml")}
    Ledger(reports).migrate()
    for path, data in old.items():
        assert path.read_bytes().endswith(data[data.index(b"\nevents:") :]), path
