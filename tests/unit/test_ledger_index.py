"""The ledger's compact index (reports/ledger.json) and stored scan results (reports/scans/):
derived from the records, checked against them by content hashes, healed when they differ."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from syncer.core.model import Event, Record, State
from syncer.core.summary import summarize
from syncer.trail import ledger as ledger_module
from syncer.trail.ledger import Ledger, content_key, read_index, result_key
from tests.unit.test_ledger import DIGEST, full_record

OTHER = "sha256:" + "c" * 64


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "reports")


def entry_of(ledger: Ledger, record: Record, decided: str = ""):
    data = ledger.path_for(record.name, record.tag).read_bytes()
    scan_key = result_key(record.scan) if record.scan else ""
    return summarize(record, record_key=content_key(data), scan_key=scan_key, decided=decided)


def test_the_index_holds_one_entry_per_record_made_from_it(ledger: Ledger):
    records = [
        full_record("nginx", "1.10.0"),
        full_record("bitnami/redis", "7.2"),
        full_record("nginx", "1.2.0"),
    ]
    for r in records:
        ledger.save(r)
    index = Ledger(ledger.root).index()
    assert list(index.entries) == [("bitnami/redis", "7.2"), ("nginx", "1.10.0"), ("nginx", "1.2.0")]
    for r in records:
        assert index.entries[(r.name, r.tag)] == entry_of(ledger, r)
    assert index.unreadable == [] and index.strays == [] and index.legacy == 0
    assert any("no index yet" in n for n in index.notes)


def test_flush_writes_one_entry_per_line_that_reads_back_equal(ledger: Ledger):
    for tag in ("1.0", "2.0"):
        ledger.save(full_record("nginx", tag))
    index = ledger.index()
    assert ledger.flush() is True
    data = ledger.index_path.read_bytes()
    lines = data.decode().splitlines()
    assert lines[0] == '{"format": 2,' and lines[1] == ' "tags": [' and lines[-1] == "]}"
    assert len(lines) == 2 + len(index.entries) + 1
    assert json.loads(data)["format"] == 2 and len(json.loads(data)["tags"]) == 2
    assert read_index(data, ledger.index_path) == (index.entries, [])
    assert ledger.flush() is False  # unchanged: not written again


def test_an_unchanged_ledger_loads_without_parsing_a_record(ledger: Ledger, monkeypatch):
    for tag in ("1.0", "2.0"):
        ledger.save(full_record("nginx", tag))
    ledger.index()
    ledger.flush()

    def no_parse(*args, **kwargs):
        raise AssertionError("a record was parsed")

    monkeypatch.setattr(ledger_module, "_parse", no_parse)
    again = Ledger(ledger.root).index()
    assert len(again.entries) == 2 and again.notes == []


def test_hand_edits_deleted_records_and_a_deleted_index_heal(ledger: Ledger):
    a, b, c = full_record("nginx", "1.0"), full_record("nginx", "2.0"), full_record("redis", "7")
    for r in (a, b, c):
        ledger.save(r)
    ledger.index()
    ledger.set_decided("nginx", "1.0", "k1")
    ledger.set_decided("nginx", "2.0", "k2")
    ledger.flush()
    # b is edited by hand, c deleted, a new record d arrives (a merge of another run's commit).
    path_b = ledger.path_for("nginx", "2.0")
    path_b.write_text(path_b.read_text().replace("state: held", "state: promoted"))
    ledger.path_for("redis", "7").unlink()
    d = full_record("alpine", "3.20")
    Ledger(ledger.root).save(d)
    healed = Ledger(ledger.root)
    index = healed.index()
    assert list(index.entries) == [("alpine", "3.20"), ("nginx", "1.0"), ("nginx", "2.0")]
    assert index.entries[("nginx", "2.0")].state == State.PROMOTED
    assert index.entries[("nginx", "1.0")].decided == "k1"
    # Edited outside the ledger: its decision is made anew, whatever the old entry said.
    assert index.entries[("nginx", "2.0")].decided == ""
    assert any("2 entries made again" in n and "1 dropped" in n for n in index.notes), index.notes
    assert healed.flush() is True
    ledger.index_path.unlink()
    rebuilt = Ledger(ledger.root).index()
    assert rebuilt.entries == {k: replace(e, decided="") for k, e in index.entries.items()}


def test_an_index_edited_alone_is_healed_from_the_records(ledger: Ledger):
    ledger.save(full_record("nginx", "1.0"))
    ledger.index()
    ledger.flush()
    good = ledger.index_path.read_text()
    ledger.index_path.write_text(good.replace('"state": "held"', '"state": "promoted"'))
    healed = Ledger(ledger.root)
    index = healed.index()
    assert index.entries[("nginx", "1.0")].state == State.HELD
    assert any("ledger.json:3: the entry does not match its check" in n for n in index.notes), index.notes
    assert healed.flush() is True and ledger.index_path.read_text() == good


def reseal(text: str) -> str:
    """An index whose lines were changed, with their checks made again: what another tool
    that writes the layout would write."""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if i > 0 and line.startswith("{"):
            comma = line.endswith(",")
            body = line.rstrip(",")
            body = body[: body.rfind(', "check"')] + "}"
            lines[i] = body[:-1] + f', "check": "{content_key(body.encode())}"}}' + ("," if comma else "")
    return "\n".join(lines)


@pytest.mark.parametrize(
    "mangle, problem",
    [
        (
            lambda t: t.replace('"reasons": 2', '"reasons": "2"'),
            r"ledger.json:3: invalid entry \(reasons must be int",
        ),
        (
            lambda t: t.replace('"vanished": false', '"vanished": 0'),
            r"ledger.json:3: invalid entry \(vanished must be bool",
        ),
        (
            lambda t: t.replace('"state": "held"', '"state": "lost"'),
            r"ledger.json:3: invalid entry \('lost' is not a valid State",
        ),
        (
            lambda t: t.replace('"decided": ""', '"decided": "", "extra": 1'),
            r"ledger.json:3: invalid entry \(unknown field 'extra'",
        ),
        (
            lambda t: t.replace('"usable": true', '"usable": null'),
            r"ledger.json:3: invalid entry \(scan.usable must be bool",
        ),
        (lambda t: t.replace('{"name"', "{name", 1), r"ledger.json:3: not a JSON entry"),
        (lambda t: t.replace('"tags"', '"entries"'), r"ledger.json:1: not the layout syncer writes"),
    ],
)
def test_a_bad_index_line_is_named_by_file_and_line_and_made_again(ledger: Ledger, mangle, problem):
    import re

    record = full_record("nginx", "1.0")
    ledger.save(record)
    ledger.save(full_record("nginx", "2.0"))
    ledger.index()
    ledger.flush()
    good = ledger.index_path.read_text()
    ledger.index_path.write_text(reseal(mangle(good)))
    healed = Ledger(ledger.root)
    index = healed.index()
    assert any(re.search(problem, n) for n in index.notes), index.notes
    assert index.entries[("nginx", "1.0")] == entry_of(ledger, record)
    assert healed.flush() is True and ledger.index_path.read_text() == good


def test_a_stored_result_is_shared_by_the_tags_of_its_digest_and_kept_while_equal(ledger: Ledger):
    a, b = full_record("nginx", "1.0"), full_record("nginx", "latest")
    assert ledger.save(a) and ledger.save(b)
    stored = ledger.result_path("nginx", DIGEST)
    assert [p.name for p in stored.parent.iterdir()] == [stored.name]
    first = (stored.read_bytes(), stored.stat().st_mtime_ns)
    # A re-scan with the same result and later times: the stored result is not written.
    later = replace(a.scan, db_updated_at="2026-04-01T00:00:00Z", scanned_at="2026-04-01T01:00:00Z")
    ledger.save(replace(a, scan=later))
    assert (stored.read_bytes(), stored.stat().st_mtime_ns) == first
    # A changed content is: and its found_with is the scan that produced it.
    fewer = replace(later, findings=later.findings[1:])
    ledger.save(replace(a, scan=fewer))
    assert stored.read_bytes() != first[0]
    assert stored.read_text().startswith(
        "found_with: {scanner: trivy 0.76.0, db_updated_at: '2026-04-01T00:00:00Z'"
    )


def test_a_stored_scan_is_read_by_digest(ledger: Ledger):
    record = full_record("nginx", "1.0")
    ledger.save(record)
    assert Ledger(ledger.root).stored_scan("nginx", DIGEST) == record.scan
    assert Ledger(ledger.root).stored_scan("nginx", OTHER) is None


def test_load_joins_the_stored_result_with_the_times_of_the_last_confirmation(ledger: Ledger):
    record = full_record("nginx", "1.0")
    ledger.save(record)
    ledger.index()
    path = ledger.path_for("nginx", "1.0")
    before = path.read_bytes()
    assert ledger.touch_scan(
        "nginx",
        "1.0",
        scanner="trivy 0.77.0",
        db_updated_at="2026-04-01T00:00:00Z",
        scanned_at="2026-04-02T00:00:00Z",
    )
    assert path.read_bytes() == before  # the record did not change
    ledger.flush()
    loaded = Ledger(ledger.root).load("nginx", "1.0")
    assert loaded is not None and loaded.scan is not None
    assert (loaded.scan.scanner, loaded.scan.db_updated_at, loaded.scan.scanned_at) == (
        "trivy 0.77.0",
        "2026-04-01T00:00:00Z",
        "2026-04-02T00:00:00Z",
    )
    assert replace(loaded, scan=record.scan) == record
    # Without the index, the record's own times (the scan that produced the result) stand.
    ledger.index_path.unlink()
    assert Ledger(ledger.root).load("nginx", "1.0") == record


def test_a_missing_stored_result_fails_its_tag_only(ledger: Ledger):
    ledger.save(full_record("nginx", "1.0"))
    ledger.save(replace(full_record("redis", "7"), scan=None))
    ledger.result_path("nginx", DIGEST).unlink()
    index = Ledger(ledger.root).index()
    assert list(index.entries) == [("redis", "7")]
    [broken] = index.unreadable
    assert broken.tag == "1.0" and "scan result" in broken.message and "is missing" in broken.message


def test_set_decided_and_touch_scan_change_only_the_index(ledger: Ledger):
    ledger.save(full_record("nginx", "1.0"))
    ledger.index()
    ledger.flush()
    record_bytes = ledger.path_for("nginx", "1.0").read_bytes()
    assert ledger.set_decided("nginx", "1.0", "abc") is True
    assert ledger.set_decided("nginx", "1.0", "abc") is False
    assert ledger.flush() is True
    assert ledger.written() == sorted(
        {ledger.path_for("nginx", "1.0"), ledger.result_path("nginx", DIGEST), ledger.index_path}
    )
    assert ledger.path_for("nginx", "1.0").read_bytes() == record_bytes
    assert Ledger(ledger.root).index().entries[("nginx", "1.0")].decided == "abc"
    with pytest.raises(KeyError):
        ledger.set_decided("nginx", "9.9", "x")


def test_saving_with_a_new_event_keeps_the_decided_fingerprint(ledger: Ledger):
    record = full_record("nginx", "1.0")
    ledger.save(record)
    ledger.index()
    ledger.set_decided("nginx", "1.0", "abc")
    record.events.append(Event("2026-03-02T10:00:00Z", "promoted", ""))
    record.state = State.PROMOTED
    assert ledger.save(record)
    entry = ledger.index().entries[("nginx", "1.0")]
    assert entry.state == State.PROMOTED and entry.decided == "abc"
    assert entry == entry_of(ledger, record, decided="abc")


def test_result_key_ignores_times_and_scanner_version():
    scan = full_record().scan
    assert scan is not None
    assert result_key(scan) == result_key(replace(scan, scanner="trivy 9", db_updated_at="x", scanned_at="y"))
    assert result_key(scan) != result_key(replace(scan, findings=scan.findings[1:]))
    assert result_key(scan) == result_key(replace(scan, findings=tuple(reversed(scan.findings))))
    assert len(result_key(scan)) == 16 and OTHER != DIGEST


def test_a_bad_line_of_a_tag_that_is_gone_is_written_away(ledger: Ledger):
    ledger.save(full_record("nginx", "1.0"))
    ledger.save(full_record("nginx", "2.0"))
    ledger.index()
    ledger.flush()
    good = ledger.index_path.read_text()
    ledger.path_for("nginx", "2.0").unlink()
    ledger.index_path.write_text(good.replace('"tag": "2.0"', '"tag": "2.x"'))  # fails its check
    healed = Ledger(ledger.root)
    assert list(healed.index().entries) == [("nginx", "1.0")]
    assert healed.flush() is True
    assert Ledger(ledger.root).index().notes == []


def test_a_no_op_flush_does_not_even_serialise_the_index(ledger: Ledger, monkeypatch):
    ledger.save(full_record("nginx", "1.0"))
    ledger.index()
    ledger.flush()
    again = Ledger(ledger.root)
    again.index()
    monkeypatch.setattr(ledger_module, "entry_line", lambda entry: pytest.fail("serialised"))
    assert again.flush() is False
