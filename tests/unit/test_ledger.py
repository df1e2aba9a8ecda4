"""The ledger against a real directory: layout, round trips, small diffs, atomic writes, bad input."""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from syncer.core.model import (
    Event,
    Finding,
    LicenseFinding,
    PlatformScan,
    Record,
    ReplicaState,
    ScanResult,
    Severity,
    State,
)
from syncer.trail import ledger as ledger_module
from syncer.trail.ledger import Ledger, LedgerError, now_iso

DIGEST = "sha256:" + "a" * 64
OLD = "sha256:" + "b" * 64


def full_record(name: str = "bitnami/redis", tag: str = "7.2") -> Record:
    scan = ScanResult(
        digest=DIGEST,
        scanner="trivy 0.76.0",
        db_updated_at="2026-02-28T06:00:00Z",
        scanned_at="2026-03-01T10:00:00Z",
        findings=(  # in the ledger's order: severity worst first, then id, then package
            Finding(
                "CVE-2024-9",
                "openssl",
                "3.0.1",
                "3.0.2",
                Severity.CRITICAL,
                status="fixed",
                title="buffer overflow: in x509 #1",
                platform="linux/amd64",
            ),
            Finding("CVE-2024-9", "openssl", "3.0.1", "3.0.2", Severity.CRITICAL, platform="linux/arm64"),
            Finding("CVE-2024-1", "zlib", "1.2.11", None, Severity.HIGH, status="affected"),
            Finding("GHSA-xxxx-yyyy-zzzz", "golang.org/x/net", "v0.1.0", "0.17.0", Severity.MEDIUM),
            Finding("CVE-2023-5", "bash", "5.1", "", Severity.UNKNOWN),
        ),
        licenses=(LicenseFinding("GPL-3.0-only", "bash", "linux/amd64"), LicenseFinding("MIT", "zlib")),
        created=datetime(2025, 12, 24, 8, 30, 5, tzinfo=UTC),
        covered=(
            PlatformScan(
                "sha256:" + "1" * 64,
                "linux/amd64",
                os="debian 12.8",
                packages=("debian",),
                created=datetime(2025, 12, 24, 8, 30, 5, tzinfo=UTC),
            ),
            PlatformScan(
                "sha256:" + "2" * 64,
                "linux/arm64",
                os="debian 99",
                packages=("debian", "jar"),
                unassessed=("debian 99: the vulnerability database has no advisories for this OS release",),
            ),
            PlatformScan(
                "sha256:" + "3" * 64,
                "sha256:" + "3" * 64,
                problem="a nested index, which syncer does not scan",
            ),
        ),
        selection=("linux/amd64", "linux/arm64"),
    )
    return Record(
        name=name,
        tag=tag,
        source=f"docker.io/{name}:{tag}@{DIGEST}",
        digest=DIGEST,
        state=State.HELD,
        reasons=[
            "1 critical vulnerability (max 0): CVE-2024-9 (openssl 3.0.1, fixed in 3.0.2)",
            "exception for CVE-2024-1 expired on 2026-02-01",
        ],
        scan=scan,
        signatures=["ci", "security"],
        events=[
            Event("2026-03-01T09:59:00Z", "discovered", "new tag"),
            Event("2026-03-01T10:00:00Z", "mirrored", f"quarantine/{name}:{tag}"),
            Event("2026-03-01T10:00:30Z", "held", "multi-line\ndetail: with colon"),
        ],
        replicas=[
            ReplicaState("eu.example.com:5000", OLD, "2026-01-01T00:00:00Z", lagging=True),
            ReplicaState("us.example.com"),
        ],
        promoted_digest=OLD,
    )


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "reports")


def stray_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob(".*"))


# --- layout and round trips ----------------------------------------------------------------


def test_full_record_round_trips_to_an_equal_record(ledger: Ledger):
    record = full_record()
    assert ledger.save(record) is True
    assert ledger.path_for("bitnami/redis", "7.2") == ledger.records_dir / "bitnami" / "redis" / "7.2.yaml"
    assert ledger.load("bitnami/redis", "7.2") == record


def test_a_copy_of_a_record_changes_without_changing_the_original():
    original = full_record()
    assert original.replicas, "the fixture must have a replica state to change"
    before = replace(
        original,
        reasons=list(original.reasons),
        events=list(original.events),
        signatures=list(original.signatures),
        replicas=[replace(r) for r in original.replicas],
    )
    changed = original.copy()
    assert changed == original
    changed.events.append(Event(at=now_iso(), event="held", detail="x"))
    changed.reasons.append("a reason")
    changed.signatures.append("another")
    changed.replicas[0].digest, changed.replicas[0].lagging = "sha256:" + "f" * 64, True
    changed.state = State.HELD
    assert original == before


def test_layout_keys_follow_the_spec_and_findings_are_one_line_each(ledger: Ledger):
    ledger.save(full_record())
    text = ledger.path_for("bitnami/redis", "7.2").read_text()
    top = [line.split(":")[0] for line in text.splitlines() if re.match(r"^[a-z_]+:", line)]
    assert top == [
        "format",
        "name",
        "tag",
        "source",
        "digest",
        "state",
        "reasons",
        "scan",
        "signatures",
        "replicas",
        "promoted_digest",
        "events",
    ]
    assert text.startswith("format: 2\n")
    # Format 2: the record refers to the stored result of its digest, which holds the findings.
    scan_keys = re.findall(r"^  ([a-z_]+):", text, flags=re.MULTILINE)
    assert scan_keys == ["digest", "result", "scanner", "db_updated_at", "scanned_at", "counts"]
    assert "  counts: {critical: 1, high: 1, medium: 1, low: 0, unknown: 1}\n" in text
    stored = ledger.result_path("bitnami/redis", DIGEST)
    assert stored == ledger.root / "scans" / "bitnami" / "redis" / ("sha256-" + "a" * 64 + ".yaml")
    result = stored.read_text()
    assert re.findall(r"^([a-z_]+):", result, flags=re.MULTILINE) == [
        "found_with",
        "digest",
        "platforms",
        "selection",
        "created",
        "covered",
        "counts",
        "findings",
        "licenses",
    ]
    assert result.startswith(
        "found_with: {scanner: trivy 0.76.0, db_updated_at: '2026-02-28T06:00:00Z', "
        "scanned_at: '2026-03-01T10:00:00Z'}\n"
    )
    assert f"  result: {ledger_module.result_key(full_record().scan)}\n" in text
    assert "counts: {critical: 1, high: 1, medium: 1, low: 0, unknown: 1}\n" in result
    assert (
        "  - {id: CVE-2024-1, package: zlib, installed: 1.2.11, fixed: null, severity: high, "
        "status: affected}\n"
    ) in result
    assert "tag: '7.2'\n" in text  # a tag that looks like a number stays a string


def test_findings_are_saved_worst_first_whatever_the_scanner_order(ledger: Ledger):
    record = full_record()
    shuffled = replace(
        record,
        scan=replace(
            record.scan,
            findings=tuple(reversed(record.scan.findings)),
            licenses=tuple(reversed(record.scan.licenses)),
        ),
    )
    ledger.save(shuffled)
    assert ledger.load(record.name, record.tag) == record


@pytest.mark.parametrize("tag", ["1.10", "true", "null", "1e3", "0x1F", "2026-03-01", "latest"])
def test_tags_that_look_like_other_yaml_types_stay_strings(ledger: Ledger, tag: str):
    record = Record(
        name="nginx",
        tag=tag,
        source=f"docker.io/library/nginx:{tag}@{DIGEST}",
        digest=DIGEST,
        state=State.MIRRORED,
    )
    ledger.save(record)
    assert ledger.load("nginx", tag) == record


def test_record_without_scan_round_trips(ledger: Ledger):
    record = Record(
        name="nginx",
        tag="1.27.3",
        source="docker.io/library/nginx:1.27.3@" + DIGEST,
        digest=DIGEST,
        state=State.FAILED,
        reasons=["scan timed out"],
    )
    ledger.save(record)
    assert "scan: null\n" in ledger.path_for("nginx", "1.27.3").read_text()
    assert ledger.load("nginx", "1.27.3") == record


def test_created_in_another_zone_is_stored_in_utc(ledger: Ledger):
    record = full_record()
    local = datetime(2025, 12, 24, 9, 30, 5, tzinfo=timezone(timedelta(hours=1)))
    ledger.save(replace(record, scan=replace(record.scan, created=local)))
    assert "created: '2025-12-24T08:30:05Z'\n" in ledger.result_path(record.name, DIGEST).read_text()
    assert ledger.load(record.name, record.tag).scan.created == local


# --- no churn, small diffs -----------------------------------------------------------------


def test_saving_an_equal_record_again_writes_nothing(ledger: Ledger):
    assert ledger.save(full_record())
    path = ledger.path_for("bitnami/redis", "7.2")
    before = (path.read_bytes(), path.stat().st_mtime_ns, path.stat().st_ino)
    assert ledger.save(full_record()) is False
    assert ledger.save(ledger.load("bitnami/redis", "7.2")) is False
    assert (path.read_bytes(), path.stat().st_mtime_ns, path.stat().st_ino) == before


def test_appending_an_event_only_adds_lines_at_the_end(ledger: Ledger):
    record = full_record()
    ledger.save(record)
    path = ledger.path_for(record.name, record.tag)
    old = path.read_text()
    record.events.append(Event("2026-03-02T10:00:00Z", "scanned", "db 2026-03-02"))
    assert ledger.save(record) is True
    new = path.read_text()
    assert new.startswith(old)
    assert (
        new[len(old) :] == "  - at: '2026-03-02T10:00:00Z'\n    event: scanned\n    detail: db 2026-03-02\n"
    )


def test_a_state_change_touches_only_its_lines(ledger: Ledger):
    record = full_record()
    ledger.save(record)
    path = ledger.path_for(record.name, record.tag)
    old = path.read_text().splitlines()
    record.state = State.PROMOTED
    record.reasons = record.reasons[1:]
    record.events.append(Event("2026-03-02T10:00:00Z", "promoted", ""))
    ledger.save(record)
    changes = [line for line in difflib.ndiff(old, path.read_text().splitlines()) if line[:2] in ("- ", "+ ")]
    assert changes == [
        "- state: held",
        "+ state: promoted",
        "-   - '1 critical vulnerability (max 0): CVE-2024-9 (openssl 3.0.1, fixed in 3.0.2)'",
        "+   - at: '2026-03-02T10:00:00Z'",
        "+     event: promoted",
        "+     detail: ''",
    ]


def test_a_hand_formatted_record_is_read_and_saved_in_the_canonical_layout(ledger: Ledger):
    """Format 2 writes every record from a fresh document (no round trip), so comments and
    hand formatting are not kept; the content and the events are."""
    record = full_record()
    ledger.save(record)
    path = ledger.path_for(record.name, record.tag)
    canonical = path.read_text()
    path.write_text("# reviewed by @alice\n" + canonical.replace("state: held", "state:   held  # see PR 12"))
    assert ledger.load(record.name, record.tag) == record
    assert ledger.save(record) is True
    assert path.read_text() == canonical
    record.events.append(Event("2026-03-02T10:00:00Z", "scanned", ""))
    assert ledger.save(record)
    assert ledger.load(record.name, record.tag) == record


def test_events_are_append_only(ledger: Ledger):
    record = full_record()
    ledger.save(record)
    path = ledger.path_for(record.name, record.tag)
    before = path.read_bytes()
    for events in (
        record.events[1:],
        [Event("2026-03-01T09:59:00Z", "discovered", "rewritten"), *record.events[1:]],
    ):
        with pytest.raises(ValueError, match="append-only"):
            ledger.save(replace(record, events=events))
    assert path.read_bytes() == before


# --- atomic writes -------------------------------------------------------------------------


def test_serializer_failure_midway_leaves_the_old_file_intact(ledger: Ledger):
    record = full_record()
    ledger.save(record)
    path = ledger.path_for(record.name, record.tag)
    before = path.read_bytes()
    # An object YAML cannot represent makes the dump fail after earlier keys were emitted.
    with pytest.raises(Exception, match="cannot represent"):
        ledger.save(replace(record, reasons=["fine", object()]))
    assert path.read_bytes() == before
    assert stray_files(ledger.records_dir) == []


def test_interrupted_write_leaves_the_old_file_intact_and_no_temp_file(ledger: Ledger, monkeypatch):
    record = full_record()
    ledger.save(record)
    path = ledger.path_for(record.name, record.tag)
    before = path.read_bytes()
    real_fdopen = os.fdopen

    class HalfWriter:
        def __init__(self, raw):
            self.raw = raw

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.raw.close()

        def write(self, data: bytes) -> int:
            self.raw.write(data[: len(data) // 2])
            self.raw.flush()
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(ledger_module.os, "fdopen", lambda fd, mode: HalfWriter(real_fdopen(fd, mode)))
    record.events.append(Event("2026-03-02T10:00:00Z", "scanned", ""))
    with pytest.raises(OSError, match="No space"):
        ledger.save(record)
    assert path.read_bytes() == before
    assert stray_files(ledger.records_dir) == []


def test_failed_rename_leaves_no_temp_file(ledger: Ledger, monkeypatch):
    record = full_record()

    def refuse(src, dst):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(ledger_module.os, "replace", refuse)
    with pytest.raises(OSError):
        ledger.save(record)
    assert not ledger.path_for(record.name, record.tag).exists()
    assert stray_files(ledger.records_dir) == []


# --- names, listing ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "../etc",
        "a/../../b",
        "/etc/passwd",
        "a//b",
        "Nginx",
        "a\\b",
        "",
        "a/",
        ".",
        "a/./b",
        "a..b",
        "-a",
        "a" * 256,
    ],
)
def test_names_outside_the_reference_grammar_are_refused(ledger: Ledger, name: str):
    with pytest.raises(ValueError, match="invalid repository name"):
        ledger.path_for(name, "1.0")


@pytest.mark.parametrize("tag", ["..", ".hidden", "-x", "a/b", "a\\b", "", "x" * 129, "1.0\n"])
def test_tags_outside_the_reference_grammar_are_refused(ledger: Ledger, tag: str):
    with pytest.raises(ValueError, match="invalid tag"):
        ledger.path_for("nginx", tag)


def test_symlinked_directory_out_of_the_records_is_refused(ledger: Ledger, tmp_path: Path):
    (tmp_path / "outside").mkdir()
    ledger.records_dir.mkdir(parents=True)
    (ledger.records_dir / "evil").symlink_to(tmp_path / "outside")
    with pytest.raises(ValueError, match="outside"):
        ledger.path_for("evil", "1.0")


def test_listing_sorts_by_name_and_tag_and_skips_temp_files(ledger: Ledger):
    for name, tag in [
        ("redis", "7.2"),
        ("bitnami/redis", "7.4"),
        ("nginx", "1.27.3"),
        ("bitnami/redis", "7.2"),
        ("bitnami", "1.0"),
    ]:
        ledger.save(full_record(name, tag))
    (ledger.records_dir / "nginx" / ".1.27.4.yaml.abc.tmp").write_text("half")
    assert [(r.name, r.tag) for r in ledger.all()] == [
        ("bitnami", "1.0"),
        ("bitnami/redis", "7.2"),
        ("bitnami/redis", "7.4"),
        ("nginx", "1.27.3"),
        ("redis", "7.2"),
    ]
    assert [r.tag for r in ledger.records_for("bitnami/redis")] == ["7.2", "7.4"]
    assert [r.tag for r in ledger.records_for("bitnami")] == ["1.0"]
    assert ledger.records_for("unknown") == [] and ledger.load("nginx", "9.9") is None


def test_empty_ledger_lists_nothing(ledger: Ledger):
    assert ledger.all() == [] and ledger.records_for("nginx") == []


# --- corrupt files -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, problem",
    [
        ("name: nginx\ntag: [unclosed\n", r"1\.0\.yaml:\d+: corrupt record \("),
        ("- a list\n", "must be a mapping"),
        ("name: nginx\ntag: '1.0'\nsource: s\ndigest: d\nstate: lost\n", "unknown state 'lost'"),
        ("name: nginx\ntag: 1.0\nsource: s\ndigest: d\nstate: held\n", "record.tag must be a string"),
        (
            "name: redis\ntag: '1.0'\nsource: s\ndigest: d\nstate: held\n",
            "names redis:1.0 but its path is for nginx:1.0",
        ),
        (
            "name: nginx\ntag: '1.0'\nsource: s\ndigest: d\nstate: held\nevents: [{at: x}]\n",
            r"events\[0\].event",
        ),
        (
            "name: nginx\ntag: '1.0'\nsource: s\ndigest: d\nstate: held\nevents: [{at: x, event: rewritten}]\n",
            r"events\[0\].event 'rewritten' is not an event syncer writes",
        ),
        (
            "name: nginx\ntag: '1.0'\nsource: s\ndigest: d\nstate: held\nscan: {scanner: t, digest: d, "
            "db_updated_at: x, scanned_at: y, findings: [{id: C, package: p, installed: '1', severity: awful}]}\n",
            "scan.findings.0..severity 'awful'",
        ),
    ],
)
def test_corrupt_record_error_names_the_file_and_the_problem(ledger: Ledger, text: str, problem: str):
    path = ledger.path_for("nginx", "1.0")
    path.parent.mkdir(parents=True)
    path.write_text(text)
    for read in (lambda: ledger.load("nginx", "1.0"), lambda: ledger.save(full_record("nginx", "1.0"))):
        with pytest.raises(LedgerError) as err:
            read()
        assert str(path) in str(err.value) and re.search(problem, str(err.value))
        assert "git log" in str(err.value)
    # Listing never raises: the record is named, with the same message, and left out.
    ledger.save(full_record("alpine", "3.20"))
    contents = ledger.contents()
    assert [(r.name, r.tag) for r in contents.records] == [("alpine", "3.20")]
    assert [(u.name, u.tag, u.path) for u in contents.unreadable] == [("nginx", "1.0", str(path))]
    assert re.search(problem, contents.unreadable[0].message) and "git log" in contents.unreadable[0].message
    assert ledger.all() == contents.records
    assert path.read_text() == text  # a corrupt record is never overwritten


@pytest.mark.parametrize(
    "data",
    [
        b"",  # empty: a killed editor, a truncated checkout
        b"name: nginx\ntag: '1.0'\nsource: s\ndig",  # truncated mid-key
        b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe",  # binary
        b"name: nginx\ntag: '1.0'\nsource: s\ndigest: d\nstate: held\nevents: 7\n",  # mistyped
        b"name: nginx\ntag: '1.0'\nsource: s\ndigest: d\nstate: held\nreasons: {a: 1}\n",
        b"name: nginx\ntag: '1.0'\nsource: s\ndigest: d\nstate: held\nscan: {created: 2025-01-01}\n",
        b"[" * 5000 + b"]" * 5000,  # nested too deeply for a recursive constructor
        b"\x00\x01 name: nginx",
    ],
)
def test_an_unreadable_record_of_any_kind_is_named_and_never_raises_from_a_listing(
    ledger: Ledger, data: bytes
):
    path = ledger.path_for("nginx", "1.0")
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    contents = ledger.contents()
    assert contents.records == [] and contents.strays == []
    [broken] = contents.unreadable
    assert (broken.name, broken.tag) == ("nginx", "1.0")
    assert str(path) in broken.message and "restore it from git history" in broken.message


def test_stray_files_under_records_are_reported_once_each_and_skipped(ledger: Ledger, tmp_path: Path):
    ledger.save(full_record("nginx", "1.0"))
    (ledger.records_dir / "Notes.yaml").write_text("hello: world\n")
    (ledger.records_dir / "nginx" / "README.txt").write_text("notes\n")
    (ledger.records_dir / "Upper").mkdir()
    (ledger.records_dir / "Upper" / "1.0.yaml").write_text("x: 1\n")
    (ledger.records_dir / "nginx" / ".1.1.yaml.abcd1234.tmp").write_text("half")  # a write in progress
    (ledger.records_dir / ".gitkeep").write_text("")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "9.9.yaml").write_text("x: 1\n")
    (ledger.records_dir / "linked").symlink_to(tmp_path / "elsewhere")
    contents = ledger.contents()
    assert [(r.name, r.tag) for r in contents.records] == [("nginx", "1.0")]
    assert contents.unreadable == []
    assert len(contents.strays) == 4, contents.strays
    for fragment in (
        "Notes.yaml: not a record path",
        "README.txt: not a record path",
        "Upper/1.0.yaml: not a record path",
        "linked: a symlink under records/",
    ):
        assert sum(fragment in s for s in contents.strays) == 1, (fragment, contents.strays)


def test_a_symlinked_record_is_never_read_through_and_fails_its_tag(ledger: Ledger, tmp_path: Path):
    secret = tmp_path / "secret.yaml"
    secret.write_text("name: nginx\ntag: '1.0'\nsource: s\ndigest: d\nstate: promoted\n")
    path = ledger.path_for("nginx", "1.0")
    path.parent.mkdir(parents=True)
    path.symlink_to(secret)
    [broken] = ledger.contents().unreadable
    assert "symlink" in broken.message and broken.tag == "1.0"
    with pytest.raises(ValueError, match="outside"):  # resolved by path_for before reading
        ledger.save(full_record("nginx", "1.0"))
    assert path.is_symlink() and "promoted" in secret.read_text()


def test_now_iso_is_utc_seconds_with_z():
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", now_iso())


def test_records_with_colons_and_flow_characters_are_portable_yaml(tmp_path):
    """Debian versions carry epochs (1:1.2.13) and titles carry colons and commas: a YAML 1.1
    reader such as libyaml must read the record as written (the ledger itself reads that way)."""
    import yaml as pyyaml  # PyYAML: libyaml's rules

    from syncer.core.model import Finding, ScanResult, Severity, State

    finding = Finding(
        id="CVE-1",
        package="zlib1g",
        installed="1:1.2.13.dfsg-1",
        fixed="1:1.3",
        severity=Severity.HIGH,
        title="zlib: inflate, {window} #overflow [x] 'q'",
        status="no",
    )  # YAML 1.1 reads a plain `no` as false
    scan = ScanResult(
        digest="sha256:" + "a" * 64,
        scanner="trivy 0.76.0",
        db_updated_at="2026-01-01T00:00:00Z",
        scanned_at="2026-01-02T00:00:00Z",
        findings=(finding,),
    )
    rec = Record(
        name="zlib",
        tag="1.2",
        source="docker.io/library/zlib:1@sha256:" + "a" * 64,
        digest="sha256:" + "a" * 64,
        state=State.HELD,
        reasons=["1 high: CVE-1 (zlib1g 1:1.2.13.dfsg-1)"],
        scan=scan,
    )
    ledger = Ledger(tmp_path)
    ledger.save(rec)
    text = ledger.path_for("zlib", rec.tag).read_text()
    doc = pyyaml.safe_load(text)
    assert doc["reasons"] == rec.reasons
    stored = pyyaml.safe_load(ledger.result_path("zlib", scan.digest).read_text())
    assert stored["findings"][0]["installed"] == "1:1.2.13.dfsg-1"
    assert stored["findings"][0]["title"] == finding.title
    assert stored["findings"][0]["status"] == "no"
    assert ledger.load("zlib", rec.tag) == rec


@pytest.mark.parametrize(
    "text",
    [
        "name: app\ntag: '1.0'\nreasons: []\nscan: {counts: {critical: 0}, findings: [{id: a}]}\n",
        "a: 0x1F\nb: yes\nc: ~\nd: 1_000\ne: null\n",
        "a: &x [1, 2]\nb: *x\n",
        "a: &a [*a]\n",
        "<<: {a: 1}\nb: 2\n",
        "1: a\n",
        "? [a]\n: b\n",
        "a: 1.5\n",
        "a: 2001-12-14\n",
        "a: !!binary aGk=\n",
        "a: !!set {x, y}\n",
        "a: !!python/object:os.system x\n",
        "a: 'x'\na: 'y'\n",
        "",
        "--- a\n--- b\n",
        "[a, b]\n",
        "a: {b: [c, {d: e}]}\n",
    ],
)
def test_records_read_as_pyyaml_safe_load_reads_them(text: str) -> None:
    import yaml

    from syncer.trail.ledger import _fast_load

    def outcome(load):
        try:
            return "ok", load(text)
        except yaml.YAMLError as err:
            return "error", type(err).__name__

    assert repr(outcome(_fast_load)) == repr(outcome(lambda t: yaml.safe_load(t)))
