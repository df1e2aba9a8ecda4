"""benchmarks/ledger_records.py writes the records 48582ff's ledger wrote (format 1), and the
checkout's ledger reads them: the starting point of benchmarks/ledger_scale.py."""

from __future__ import annotations

from pathlib import Path

from benchmarks.ledger_records import BenchImage, PromotedTag, Scan, advisories, record_text, scalar
from syncer.core.model import State
from syncer.trail.ledger import Ledger

# A record 48582ff's `syncer run` wrote (tests/e2e/test_ledger_records_e2e.py's images; the
# tag promoted against one database, then re-scanned against the next).
FIXTURE = Path(__file__).parents[1] / "data" / "ledger" / "format1-promoted.yaml"
HOT = ("hotpkg", "1.0.0-r0", "hotpkg")


def fixture_tag() -> PromotedTag:
    image = BenchImage.build(99, 20, extra=[HOT])
    return PromotedTag(
        name="seed",
        tag="1.0.3",
        upstream="docker.io/library/seed",
        image=image.scan(advisories(20)),
        scanner="trivy 0.76.0",
        approved="127.0.0.1:49547/approved/seed",
        signer="ci",
        discovered_at="2026-12-02T00:20:20Z",
        mirrored_at="2026-12-02T00:20:21Z",
        promoted_at="2026-12-02T00:20:22Z",
        scans=(
            Scan("2026-12-02T00:20:22Z", "2025-01-02T00:00:00Z"),
            Scan("2026-12-02T00:20:27Z", "2025-01-03T00:00:00Z"),
        ),
    )


def test_generated_record_is_what_48582ff_wrote_byte_for_byte():
    assert record_text(fixture_tag()) == FIXTURE.read_text()


def test_the_checkouts_ledger_reads_generated_records(tmp_path: Path):
    tag = fixture_tag()
    path = tmp_path / "records" / "seed" / "1.0.3.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(record_text(tag))
    rec = Ledger(tmp_path).load("seed", "1.0.3")
    assert rec is not None
    assert (rec.state, rec.digest, rec.promoted_digest, rec.signatures) == (
        State.PROMOTED,
        tag.image.digest,
        tag.image.digest,
        ["ci"],
    )
    assert rec.scan is not None
    assert (rec.scan.db_updated_at, rec.scan.scanned_at) == ("2025-01-03T00:00:00Z", "2026-12-02T00:20:27Z")
    assert rec.scan.fits(tag.image.digest, ())
    assert sorted(f.id for f in rec.scan.findings) == sorted(f.id for f in tag.image.findings)
    assert [e.event for e in rec.events] == ["discovered", "mirrored", "scanned", "promoted", "scanned"]


def test_quoting_follows_the_writers_rule():
    assert scalar("1.0.3") == "1.0.3"
    assert scalar("1.10") == "'1.10'"  # a float in YAML 1.1
    assert scalar("no") == "'no'"
    assert scalar("a: b") == "'a: b'"
    assert scalar("it's #1") == "'it''s #1'"
    assert scalar("") == "''"
