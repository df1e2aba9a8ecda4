"""What the compact ledger index keeps of a record (``IndexEntry``), made from the record.

Pure: the ledger (syncer/trail/ledger.py) hashes the files and stores the entries; plans, no-op
runs and the index page read entries instead of records.
"""

from __future__ import annotations

from syncer.core.model import IndexEntry, Record, ReplicaSummary, ScanSummary
from syncer.core.plan import was_mirrored
from syncer.core.policy import count_by_severity

REASON_MAX = 200  # characters of the first reason an entry keeps; the record has them all

# Events that say where the tag stands upstream: the last of them tells whether it vanished.
_UPSTREAM_EVENTS = ("vanished", "discovered", "moved", "mirrored")


def summarize(record: Record, *, record_key: str, scan_key: str = "", decided: str = "") -> IndexEntry:
    """The entry of ``record``; ``record_key`` is the record file's content hash, ``scan_key``
    that of its stored scan result ("" without a scan)."""
    last_upstream = next((e.event for e in reversed(record.events) if e.event in _UPSTREAM_EVENTS), None)
    first = record.reasons[0] if record.reasons else ""
    scan = record.scan
    return IndexEntry(
        name=record.name,
        tag=record.tag,
        digest=record.digest,
        state=record.state,
        record_key=record_key,
        source=record.source,
        promoted_digest=record.promoted_digest,
        signatures=tuple(record.signatures),
        replicas=tuple(ReplicaSummary(r.registry, r.digest, r.lagging) for r in record.replicas),
        mirrored=was_mirrored(record),
        vanished=last_upstream == "vanished",
        reason=first if len(first) <= REASON_MAX else first[: REASON_MAX - 1] + "…",
        reasons=len(record.reasons),
        last_change=record.events[-1].at if record.events else "",
        scan=None
        if scan is None
        else ScanSummary(
            digest=scan.digest,
            result=scan_key,
            scanner=scan.scanner,
            db_updated_at=scan.db_updated_at,
            scanned_at=scan.scanned_at,
            selection=scan.selection,
            usable=bool(scan.covered or scan.artifact),
            created=scan.created,
            counts=count_by_severity(scan.findings),
        ),
        decided=decided,
    )
