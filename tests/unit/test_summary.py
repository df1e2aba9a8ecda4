from datetime import UTC, datetime

from syncer.core.model import Event, Finding, PlatformScan, Record, ReplicaState, ScanResult, Severity, State
from syncer.core.plan import was_mirrored
from syncer.core.summary import REASON_MAX, summarize

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


def _record(**kw):
    scan = ScanResult(
        digest=D1,
        scanner="trivy 0.76.0",
        db_updated_at="2026-11-30T00:00:00Z",
        scanned_at="2026-12-01T00:00:00Z",
        findings=(Finding("CVE-2026-1", "zlib", "1.0", None, Severity.HIGH),),
        created=datetime(2026, 1, 1, tzinfo=UTC),
        covered=(PlatformScan(D1),),
    )
    base = dict(
        name="library/nginx",
        tag="1.27.3",
        source="docker.io/library/nginx:1.27.3@" + D1,
        digest=D1,
        state=State.HELD,
        reasons=["x" * 500, "second"],
        scan=scan,
        events=[
            Event("2026-12-01T00:00:00Z", "discovered", "src"),
            Event("2026-12-01T00:00:01Z", "mirrored", D1),
            Event("2026-12-01T00:00:02Z", "held", "why"),
        ],
        replicas=[ReplicaState("eu", D2, "2026-12-01T00:00:03Z", lagging=True)],
    )
    base.update(kw)
    return Record(**base)


def test_an_entry_keeps_what_a_plan_and_the_index_page_read():
    rec = _record()
    e = summarize(rec, record_key="r1", scan_key="s1", decided="k")
    assert (e.name, e.tag, e.digest, e.state, e.record_key, e.decided) == (
        "library/nginx",
        "1.27.3",
        D1,
        State.HELD,
        "r1",
        "k",
    )
    assert e.mirrored is was_mirrored(rec) is True
    assert not e.vanished
    assert e.reasons == 2 and len(e.reason) == REASON_MAX and e.reason.endswith("…")
    assert e.last_change == "2026-12-01T00:00:02Z"
    assert e.replicas[0].registry == "eu" and e.replicas[0].lagging
    assert e.scan is not None and e.scan.result == "s1" and e.scan.counts["high"] == 1
    assert e.scan.fits(D1, ()) is rec.scan.fits(D1, ()) is True
    assert e.scan.fits(D2, ()) is rec.scan.fits(D2, ()) is False
    assert e.scan.fits(D1, ("linux/amd64",)) is rec.scan.fits(D1, ("linux/amd64",)) is False


def test_vanished_is_the_last_upstream_event_and_a_new_digest_is_not_mirrored():
    rec = _record(events=[Event("t1", "mirrored", D1), Event("t2", "vanished", ""), Event("t3", "held", "")])
    assert summarize(rec, record_key="r").vanished
    rec = _record(events=[Event("t1", "vanished", ""), Event("t2", "discovered", "")], digest=D2, scan=None)
    e = summarize(rec, record_key="r")
    assert not e.vanished and not e.mirrored and e.scan is None
