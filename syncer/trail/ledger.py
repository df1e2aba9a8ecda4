"""The ledger: the audit trail under ``<reports>/`` (ledger format 2).

- ``records/<name>/<tag>.yaml``: one record per tracked tag (events, reasons, signatures,
  replicas, state), starting with ``format: 2``. Its ``scan:`` refers to the stored result by
  ``result: <key>`` and repeats its scanner, counts and the times of the scan that first
  produced it; findings are not in the record.
- ``scans/<name>/<algorithm>-<hex>.yaml``: the stored scan result of one digest of one catalog
  image, shared by every tag of that digest. Its first line, ``found_with``, names the scan that
  first produced it; the rest is the content, whose sha256 (16 hex digits) is the result's key
  (``result_key``). It is rewritten only when the content changes.
- ``ledger.json``: the compact index, one ``IndexEntry`` per line (``read_index``,
  ``index_bytes``), derived from the records and the stored results and checked against them
  by content hashes on every load; it alone holds when a scan last confirmed its result.

API (the signatures the plan, run and report code build on):

- ``Ledger(reports_dir)``
- ``index() -> LedgerIndex``: every tracked tag's entry, unreadable records and strays. The first
  call lists the records and hashes their bytes (no YAML parse) and the stored results'; an
  entry whose record or result changed, or that is missing, is made again from the record
  (``summarize``); later calls return the ledger's current state without reading again.
- ``load(name, tag, *, confirmed=True) -> Record | None``: the full record, its ``scan`` joined
  from the stored result with the times of the last confirmation (from the index); with
  ``confirmed=False`` those of the scan that first found the result (the pages show these).
- ``save(record) -> bool``: writes the record from a fresh document (and the stored result when
  its content is new) and updates the tag's entry; True when the record file changed.
  Refuses (ValueError) a record whose events do not extend the stored ones.
- ``touch_scan(name, tag, *, scanner, db_updated_at, scanned_at) -> bool``: a re-scan that
  found the same result: the entry's times only (the record does not change).
- ``set_decided(name, tag, decided) -> bool``: the entry's decision fingerprint only.
- ``flush() -> bool``: writes ``ledger.json`` when it differs from the file (call it before
  committing).
- ``migrate() -> int``: rewrites the records still in format 1 (inline scans, no ``format``) as
  format 2 with their stored results, flushes the index, and returns how many; ``index`` and
  ``load`` read format 1 records as they are in the meantime.
- ``written() -> list[Path]``: every file this ledger wrote, for the commit.
- ``stored_scan(name, digest) -> ScanResult | None``: a digest's stored result (times of the
  scan that first produced it), e.g. to fill a scan cache lazily.
- ``result_key(scan) -> str`` (module function): the key a scan result is stored under; equal
  keys mean an equal content (findings, licenses, coverage, ...), whatever the scan times.
- ``contents()``, ``all()``, ``records_for(name)``: every full record, for the commands that
  need them all (``sign``'s candidates, tests); a plan, a no-op run and the reports use
  ``index`` instead.

Writing is careful about three things: small diffs (documents are deterministic, so unchanged
parts stay byte-identical; findings are one line each; comments in a file are not kept), no
churn (saving an equal record writes nothing), no half files (every write is atomic,
``syncer.trail.atomic``). A file that cannot be read never stops a reader: it fails its own tag
and is left as it is, to be restored from git history; a file that is no record is reported
and skipped. Events are append-only and records are never deleted. Finding order is normalised
(severity, worst first, then id, then package), so it does not depend on the scanner's order.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml as pyyaml
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.nodes import ScalarNode
from ruamel.yaml.resolver import VersionedResolver

from syncer.core import refs
from syncer.core.model import (
    EVENT_KINDS,
    Event,
    Finding,
    IndexEntry,
    LicenseFinding,
    PlatformScan,
    Record,
    ReplicaState,
    ReplicaSummary,
    ScanResult,
    ScanSummary,
    Severity,
    State,
)
from syncer.core.policy import count_by_severity
from syncer.core.summary import summarize
from syncer.errors import SyncerError, UnsafePathError
from syncer.trail.atomic import is_temp_name, read_regular, write_atomic

FORMAT = 2
INDEX_FILE = "ledger.json"
_SUFFIX = ".yaml"
_FORMAT_LINE = b"format: 2\n"
_KEY_LENGTH = 16  # hex digits of sha256 kept as a content key: 64 bits, no collision in practice


class LedgerError(SyncerError):
    """A record file could not be read: corrupt YAML or not the layout of a record."""


def now_iso() -> str:
    """The current time for events: UTC, seconds precision, ``2025-01-31T12:00:00Z``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# The distribution reference grammar admits neither "..", a leading "/" nor a backslash in a
# repository name or tag, so a valid one cannot escape the records directory.
def validate_name(name: str) -> None:
    if len(name) > refs.NAME_MAX or not refs.is_valid_repository_path(name):
        raise ValueError(
            f"invalid repository name {name!r}: use lower-case path components "
            "like 'nginx' or 'bitnami/redis' (distribution reference grammar)"
        )


def validate_tag(tag: str) -> None:
    if not refs.is_valid_tag(tag):
        raise ValueError(
            f"invalid tag {tag!r}: a tag is up to 128 letters, digits, '_', '.' "
            "or '-', not starting with '.' or '-'"
        )


def content_key(data: bytes) -> str:
    """The content hash the index keeps of a file: sha256, 16 hex digits."""
    return hashlib.sha256(data).hexdigest()[:_KEY_LENGTH]


@dataclass(frozen=True)
class Unreadable:
    """A record file at a valid ``<name>/<tag>.yaml`` path that could not be read: its tag
    fails (``message`` says why and how to restore it) and the file is left as it is."""

    name: str
    tag: str
    path: str
    message: str


@dataclass(frozen=True)
class LedgerContents:
    """Every record that could be read, every one that could not, and every file under
    ``records/`` that is no record (``strays``: one message each, the file skipped)."""

    records: list[Record] = field(default_factory=list)
    unreadable: list[Unreadable] = field(default_factory=list)
    strays: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LedgerIndex:
    """Every readable record's entry by (name, tag), sorted; the unreadable records and the
    strays as ``contents`` has them; ``notes``: what loading healed or found to migrate, for
    the progress output (never an error); ``legacy``: records still in format 1."""

    entries: dict[tuple[str, str], IndexEntry] = field(default_factory=dict)
    unreadable: list[Unreadable] = field(default_factory=list)
    strays: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    legacy: int = 0


@dataclass(frozen=True)
class FoundWith:
    """The scan that first produced a stored result."""

    scanner: str
    db_updated_at: str
    scanned_at: str


@dataclass(frozen=True)
class _ScanRef:
    """A format 2 record's ``scan:``: which stored result, and what it repeats of it."""

    digest: str
    result: str
    found: FoundWith


@dataclass(frozen=True)
class _Legacy:
    """What migration needs to know of a format 1 record's inline scan, without keeping it."""

    digest: str
    key: str
    found: FoundWith


class Ledger:
    def __init__(self, reports_dir: str | os.PathLike[str]):
        self.root = Path(reports_dir)
        self.records_dir = self.root / "records"
        self.scans_dir = self.root / "scans"
        self.index_path = self.root / INDEX_FILE
        # Saves come from the run's worker threads; one lock keeps the index and the files of
        # shared stored results consistent (tags of one digest are already processed in turn).
        self._lock = threading.RLock()
        self._entries: dict[tuple[str, str], IndexEntry] | None = None  # None: not loaded yet
        self._on_disk: dict[tuple[str, str], IndexEntry] | None = None  # ledger.json as read
        self._lines: dict[tuple[str, str], str] = {}  # serialised entries, reused by flush
        # Hash of ledger.json as last read or written (not its bytes: 55 MB at 50,000 tags).
        self._index_key: str | None = None
        self._dirty = False  # entries differ from what ledger.json was read with
        self._unreadable: list[Unreadable] = []
        self._strays: list[str] = []
        self._notes: list[str] = []
        self._legacy: dict[tuple[str, str], _Legacy] = {}
        # Key and raw found_with line of every stored result read or written: a few dozen bytes
        # each, never the findings.
        self._results: dict[Path, tuple[str, bytes] | None] = {}
        self._written: set[Path] = set()

    # --- paths ----------------------------------------------------------------------------

    def path_for(self, name: str, tag: str) -> Path:
        """The record file of ``name:tag``; ValueError for a name or tag outside the grammar,
        UnsafePathError (also a ValueError) for one that a symlink leads elsewhere."""
        validate_name(name)
        validate_tag(tag)
        path = self.records_dir.joinpath(*name.split("/"), tag + _SUFFIX)
        # The grammar already rules out escapes; this also catches a symlinked directory.
        if not path.resolve().is_relative_to(self.records_dir.resolve()):
            raise UnsafePathError(
                f"record path for {name}:{tag} resolves outside "
                f"{self.records_dir}: a symlink on the way; replace it with a "
                "real directory or file (git rm the link)"
            )
        return path

    def result_path(self, name: str, digest: str) -> Path:
        """The stored scan result of ``digest`` for catalog image ``name``."""
        validate_name(name)
        if not refs.is_valid_digest(digest):
            raise ValueError(f"invalid digest {digest!r} for a stored scan result of {name}")
        return self.scans_dir.joinpath(*name.split("/"), digest.replace(":", "-", 1) + _SUFFIX)

    def written(self) -> list[Path]:
        """Every file this ledger wrote (records, stored results, the index), sorted."""
        with self._lock:
            return sorted(self._written)

    # --- the index ------------------------------------------------------------------------

    def index(self) -> LedgerIndex:
        """The entry of every readable record; see the module docstring. LedgerError only
        for a records directory that cannot be listed."""
        with self._lock:
            entries = self._loaded()
            return LedgerIndex(
                entries=dict(sorted(entries.items())),
                unreadable=list(self._unreadable),
                strays=list(self._strays),
                notes=list(self._notes),
                legacy=len(self._legacy),
            )

    def _loaded(self) -> dict[tuple[str, str], IndexEntry]:
        if self._entries is None:
            self._entries = self._build_index()
        return self._entries

    def _stored_entry(self, name: str, tag: str) -> IndexEntry | None:
        """The tag's entry: the loaded index's, else ledger.json's as it is (not healed: a
        caller uses it only where the stored result's key confirms it)."""
        if self._entries is not None:
            return self._entries.get((name, tag))
        if self._on_disk is None:
            self._on_disk = self._read_index_file()
        return self._on_disk.get((name, tag))

    def _read_index_file(self) -> dict[tuple[str, str], IndexEntry]:
        try:
            data = read_regular(self.root, self.index_path)
        except (OSError, UnsafePathError) as err:
            self._notes.append(f"{self.index_path}: cannot read the index ({err}); rebuilt from the records")
            return {}
        if data is None:
            self._notes.append(f"{self.index_path}: no index yet; built from the records")
            return {}
        self._index_key = content_key(data)
        entries, problems = read_index(data, self.index_path)
        self._notes.extend(problems)
        self._dirty = bool(problems)  # bad lines are written again even when their tags are gone
        return entries

    def _build_index(self) -> dict[tuple[str, str], IndexEntry]:
        stored = self._on_disk if self._on_disk is not None else self._read_index_file()
        self._on_disk = None
        out: dict[tuple[str, str], IndexEntry] = {}
        self._unreadable, self._strays = [], []
        remade = 0
        for path, name, tag in self._record_paths(self._strays):
            try:
                data = _read_bytes(self.root, path)
                if data is None:
                    continue  # gone since it was listed: nothing to read
                key = content_key(data)
                entry = stored.get((name, tag))
                if (
                    entry is not None
                    and entry.record_key == key
                    and data.startswith(_FORMAT_LINE)
                    and (entry.scan is None or self._result_key(name, entry.scan.digest) == entry.scan.result)
                ):
                    out[(name, tag)] = entry
                    continue
                record, scan_key = self._read_record(data, path, name, tag, entry)
                # Changed outside this ledger (a hand edit, a merged commit, a lost index): its
                # decision is made anew from the record, never carried over from the old entry.
                out[(name, tag)] = summarize(record, record_key=key, scan_key=scan_key)
                self._lines.pop((name, tag), None)
                remade += 1
            except Exception as err:  # noqa: BLE001 - no file under records/ may stop a reader
                self._unreadable.append(_unreadable(name, tag, path, err))
        self._unreadable.sort(key=lambda u: (u.name, u.tag))
        self._strays.sort()
        dropped = len(stored.keys() - out.keys())
        self._dirty = self._dirty or bool(remade or dropped)
        for gone in stored.keys() - out.keys():
            self._lines.pop(gone, None)
        if stored and (remade or dropped):
            self._notes.append(
                f"{self.index_path}: {remade} entries made again from changed or new records, "
                f"{dropped} dropped for records that are gone or unreadable"
            )
        if self._legacy:
            self._notes.append(
                f"{len(self._legacy)} records are in ledger format 1 (findings inline): a run "
                "migrates them to format 2"
            )
        return out

    def _record_paths(self, strays: list[str]) -> Iterator[tuple[Path, str, str]]:
        """Every file under ``records/`` at a record path; the others are named in ``strays``.
        Only a directory that cannot be listed raises LedgerError: which tags it holds is
        unknown."""
        if not self.records_dir.is_dir():
            return

        def unlisted(err: OSError) -> None:
            raise LedgerError(
                f"{err.filename}: cannot list the records ({err.strerror}); fix its "
                "permissions: a run must know every record before it acts"
            ) from None

        for directory, subdirs, files in os.walk(self.records_dir, onerror=unlisted):
            here = Path(directory)
            for sub in [d for d in subdirs if (here / d).is_symlink()]:
                subdirs.remove(sub)
                strays.append(
                    f"{here / sub}: a symlink under records/ is never followed; "
                    "skipped: replace it with a directory (git rm the link)"
                )
            for file in files:
                path = here / file
                if is_temp_name(file) or file.startswith(".git"):
                    continue  # a write in progress (the run removes leftovers), or git's own files
                rel = path.relative_to(self.records_dir)
                name, tag = "/".join(rel.parent.parts), file.removesuffix(_SUFFIX)
                try:
                    if not file.endswith(_SUFFIX):
                        raise ValueError("not a .yaml file")
                    validate_name(name)
                    validate_tag(tag)
                except ValueError as err:
                    strays.append(
                        f"{path}: not a record path ({err}); only records <name>/<tag>.yaml "
                        "belong under records/: skipped; move the file away"
                    )
                    continue
                yield path, name, tag

    # --- reading records ------------------------------------------------------------------

    def load(self, name: str, tag: str, *, confirmed: bool = True) -> Record | None:
        """The full record; its scan has the times of the last scan that confirmed the result
        (from the index), or with ``confirmed=False`` those of the scan that first found it
        (the record's own, which pages show so that a re-scan does not change them)."""
        path = self.path_for(name, tag)
        with self._lock:
            data = _read_bytes(self.root, path)
            if data is None:
                return None
            entry = self._stored_entry(name, tag) if confirmed else None
            return self._read_record(data, path, name, tag, entry)[0]

    def records_for(self, name: str) -> list[Record]:
        """Every readable record of one repository, sorted by tag."""
        validate_name(name)
        return [r for r in self.contents().records if r.name == name]

    def all(self) -> list[Record]:
        """Every readable record, sorted by (name, tag); see ``contents`` for the others."""
        return self.contents().records

    def contents(self) -> LedgerContents:
        """Every file under ``records/`` read in full: one that cannot be read fails only its
        own tag, and one that is no record is reported and skipped; neither stops the reader."""
        out = LedgerContents()
        with self._lock:
            for path, name, tag in self._record_paths(out.strays):
                try:
                    data = _read_bytes(self.root, path)
                    if data is not None:
                        entry = self._stored_entry(name, tag)
                        out.records.append(self._read_record(data, path, name, tag, entry)[0])
                except Exception as err:  # noqa: BLE001 - no file under records/ may stop a reader
                    out.unreadable.append(_unreadable(name, tag, path, err))
        out.records.sort(key=lambda r: (r.name, r.tag))
        out.unreadable.sort(key=lambda u: (u.name, u.tag))
        out.strays.sort()
        return out

    def _read_record(
        self, data: bytes, path: Path, name: str, tag: str, entry: IndexEntry | None
    ) -> tuple[Record, str]:
        """The full record in ``data`` and the key of its scan result ("" without a scan). A
        format 1 record keeps its inline scan and is noted for migration."""
        doc = _parse(_decode(data, path), path)
        rd = _Reader(path)
        top = rd.map(doc, "the document")
        if _is_legacy(rd, top):
            record = _record_from_doc(rd, top, name, tag, legacy=True)
            if record.scan is None:
                self._legacy[(name, tag)] = _Legacy("", "", FoundWith("", "", ""))
                return record, ""
            key = result_key(record.scan)
            s = record.scan
            self._legacy[(name, tag)] = _Legacy(
                s.digest, key, FoundWith(s.scanner, s.db_updated_at, s.scanned_at)
            )
            return record, key
        self._legacy.pop((name, tag), None)
        record = _record_from_doc(rd, top, name, tag, legacy=False)
        scan = top.get("scan")
        if scan is None:
            return record, ""
        ref = _ref_from_doc(rd, rd.map(scan, "scan"))
        content, found, key = self._stored_result(name, ref.digest, path)
        confirmed = entry.scan if entry is not None else None
        if confirmed is not None and (confirmed.digest, confirmed.result) == (ref.digest, key):
            times = FoundWith(confirmed.scanner, confirmed.db_updated_at, confirmed.scanned_at)
        elif key == ref.result:
            times = ref.found
        else:  # the digest's result changed since (another tag's save): the record follows it
            times = found
        record.scan = replace(
            content, scanner=times.scanner, db_updated_at=times.db_updated_at, scanned_at=times.scanned_at
        )
        return record, key

    def stored_scan(self, name: str, digest: str) -> ScanResult | None:
        """The stored result of ``digest`` for catalog image ``name`` with the scanner and
        times of the scan that first produced it (an entry's ``scan`` has the last ones);
        None when there is none; LedgerError when it cannot be read."""
        path = self.result_path(name, digest)
        with self._lock:
            if self._result_key(name, digest) is None:
                return None
            return self._stored_result(name, digest, path)[0]

    def _stored_result(self, name: str, digest: str, record_path: Path) -> tuple[ScanResult, FoundWith, str]:
        """The stored result of (name, digest), its found_with and key; LedgerError naming
        the record when there is none or it cannot be read."""
        try:
            path = self.result_path(name, digest)
        except ValueError as err:
            raise _Reader(record_path).fail(f"scan.digest: {err}") from None
        data = _read_bytes(self.root, path, what="stored scan result")
        if data is None:
            raise LedgerError(
                f"{record_path}: its scan result {path} is missing; restore it from git history "
                f"(git log -- {path}) or delete the record's scan to have the tag scanned again"
            )
        first, _, content = data.partition(b"\n")
        key = content_key(content)
        self._results[path] = (key, first)
        rd = _Reader(path, "stored scan result")
        doc = rd.map(
            _parse(_decode(data, path, "stored scan result"), path, "stored scan result"), "the document"
        )
        found = _found_from_doc(rd, rd.map(doc.get("found_with"), "found_with"))
        return _result_from_doc(rd, doc, found), found, key

    def _result_key(self, name: str, digest: str) -> str | None:
        """The key of the stored result of (name, digest), None when there is none; read once
        per ledger (only this ledger writes them while it lives: the run holds the lock)."""
        try:
            path = self.result_path(name, digest)
        except ValueError:
            return None
        if path not in self._results:
            try:
                data = _read_bytes(self.root, path, what="stored scan result")
            except LedgerError:
                data = None
            if data is None:
                self._results[path] = None
            else:
                first, _, content = data.partition(b"\n")
                self._results[path] = (content_key(content), first)
        cached = self._results[path]
        return None if cached is None else cached[0]

    # --- writing --------------------------------------------------------------------------

    def save(self, record: Record) -> bool:
        """Write ``record``; True if its file changed. Refuses (ValueError) to drop events."""
        path = self.path_for(record.name, record.tag)
        with self._lock:
            old = _read_bytes(self.root, path)
            key, ref, result = "", None, None
            if record.scan is not None:
                key, found, result = self._result_to_store(record.name, record.scan)
                ref = _ScanRef(record.scan.digest, key, found)
            data = _dump(_record_doc(record, ref)).encode("utf-8")
            if old is not None and old != data:
                self._check_events(old, data, path, record)
            if result is not None:  # first: a record never refers to a result not yet there
                self._write(*result)
                self._results[result[0]] = (key, result[1].partition(b"\n")[0])
            changed = old != data
            if changed:
                self._write(path, data)
            self._legacy.pop((record.name, record.tag), None)
            if self._entries is not None:
                previous = self._entries.get((record.name, record.tag))
                self._set_entry(
                    summarize(
                        record,
                        record_key=content_key(data),
                        scan_key=key,
                        decided=previous.decided if previous else "",
                    )
                )
            return changed

    def _write(self, path: Path, data: bytes) -> None:
        write_atomic(path, data, root=self.root)
        self._written.add(path)

    def _result_to_store(
        self, name: str, scan: ScanResult
    ) -> tuple[str, FoundWith, tuple[Path, bytes] | None]:
        """The key of ``scan``'s content, the scan that first produced it, and the stored
        result to write (path and bytes) when the digest has none of this content."""
        path = self.result_path(name, scan.digest)
        key, content = _result_content(scan)
        if self._result_key(name, scan.digest) == key:
            cached = self._results[path]
            assert cached is not None
            found = _found_line(cached[1], path)
            if found is not None:
                return key, found, None
        found = FoundWith(scan.scanner, scan.db_updated_at, scan.scanned_at)
        first = _dump(CommentedMap(found_with=_flow_map(**vars(found)))).encode("utf-8")
        return key, found, (path, first + content)

    def _check_events(self, old: bytes, new: bytes, path: Path, record: Record) -> None:
        """ValueError unless ``record``'s events extend the stored ones; LedgerError for a
        stored file that is no record (it is never overwritten). Documents end with their
        events and are deterministic, so for a file known good (the index's or this ledger's)
        a stored events block that starts the new one needs no parse; anything else is parsed."""
        entry = self._stored_entry(record.name, record.tag)
        if (entry is not None and entry.record_key == content_key(old)) or path in self._written:
            at_old, at_new = old.find(b"\nevents:"), new.find(b"\nevents:")
            old_events = old[at_old:]
            if at_old >= 0 and (old_events == b"\nevents: []\n" or new[at_new:].startswith(old_events)):
                return
        rd = _Reader(path)
        top = rd.map(_parse(_decode(old, path), path), "the document")
        stored = _record_from_doc(rd, top, record.name, record.tag, legacy=_is_legacy(rd, top)).events
        if record.events[: len(stored)] != stored:
            raise ValueError(
                f"events of {record.name}:{record.tag} do not extend the "
                f"{len(stored)} events stored in {path}: events are append-only"
            )

    def _set_entry(self, entry: IndexEntry) -> bool:
        assert self._entries is not None
        key = (entry.name, entry.tag)
        if self._entries.get(key) == entry:
            return False
        self._entries[key] = entry
        self._lines.pop(key, None)
        self._dirty = True
        return True

    def touch_scan(self, name: str, tag: str, *, scanner: str, db_updated_at: str, scanned_at: str) -> bool:
        """A re-scan of the tag's digest found the result its entry names: only the entry's
        scan times change (the record does not). True when the entry changed; KeyError for
        a tag without an entry or without a scan."""
        with self._lock:
            entry = self._loaded().get((name, tag))
            if entry is None or entry.scan is None:
                raise KeyError(f"{name}:{tag} has no scanned entry in the ledger index")
            scan = replace(entry.scan, scanner=scanner, db_updated_at=db_updated_at, scanned_at=scanned_at)
            return self._set_entry(replace(entry, scan=scan))

    def set_decided(self, name: str, tag: str, decided: str) -> bool:
        """Records the fingerprint of the decision's inputs the run evaluated the tag with
        (``IndexEntry.decided``); True when the entry changed; KeyError without an entry."""
        with self._lock:
            entry = self._loaded().get((name, tag))
            if entry is None:
                raise KeyError(f"{name}:{tag} has no entry in the ledger index")
            return self._set_entry(replace(entry, decided=decided))

    def flush(self) -> bool:
        """Writes ``ledger.json`` when the index differs from it; True when it wrote. Nothing
        to do for a ledger whose index was never loaded (its saves heal on the next load)."""
        with self._lock:
            if self._entries is None or not self._dirty:
                return False  # a no-op run's index is not even serialised
            lines = []
            for key in sorted(self._entries):
                line = self._lines.get(key)
                if line is None:
                    line = self._lines[key] = entry_line(self._entries[key])
                lines.append(line)
            data = index_text(lines).encode("utf-8")
            self._dirty = False
            written = content_key(data)
            if written == self._index_key:
                return False
            self._write(self.index_path, data)
            self._index_key = written
            return True

    def migrate(self) -> int:
        """Rewrites every format 1 record as format 2 with its stored result and flushes the
        index; returns how many records it rewrote. Tags of one digest share one stored result:
        where their inline scans differ, the newest (db_updated_at, then scanned_at) wins, and
        it is stored with the earliest scan that produced that same content as found_with."""
        with self._lock:
            self._loaded()
            legacy = dict(self._legacy)
            winners: dict[tuple[str, str], tuple[str, str, str]] = {}
            for (name, _), info in legacy.items():
                if info.key:
                    best = winners.get((name, info.digest))
                    mine = (info.found.db_updated_at, info.found.scanned_at, info.key)
                    if best is None or mine > best:
                        winners[(name, info.digest)] = mine

            def order(item: tuple[tuple[str, str], _Legacy]) -> tuple[Any, ...]:
                (name, tag), info = item
                won = winners.get((name, info.digest), ("", "", ""))[2] == info.key
                # The winning content's earliest scan goes first: it writes the stored result.
                return (name, info.digest, not won, info.found.db_updated_at, info.found.scanned_at, tag)

            for (name, tag), info in sorted(legacy.items(), key=order):
                record = self.load(name, tag)
                if record is None or (name, tag) not in self._legacy:
                    continue  # gone, or written meanwhile
                if record.scan is not None and winners[(name, info.digest)][2] != info.key:
                    stored, _, _ = self._stored_result(name, info.digest, self.path_for(name, tag))
                    # The loser of its digest keeps its own scan times: the index says when
                    # this tag was scanned.
                    s = record.scan
                    record.scan = replace(
                        stored, scanner=s.scanner, db_updated_at=s.db_updated_at, scanned_at=s.scanned_at
                    )
                self.save(record)
            self.flush()
            return len(legacy)


def _is_legacy(rd: _Reader, top: dict[str, Any]) -> bool:
    """Whether a record document is in format 1 (no ``format``: scan inline); LedgerError for
    a format this syncer does not know."""
    version = top.get("format")
    if version not in (None, FORMAT):
        raise rd.fail(f"format {version!r} is not one this syncer reads (a newer syncer wrote it?)")
    return version is None


def _unreadable(name: str, tag: str, path: Path, err: Exception) -> Unreadable:
    if isinstance(err, SyncerError):
        return Unreadable(name, tag, str(path), str(err))
    return Unreadable(
        name,
        tag,
        str(path),
        f"{path}: corrupt record ({type(err).__name__}: {err}); {_RESTORE.format(path=path)}",
    )


def result_key(scan: ScanResult) -> str:
    """The key ``scan`` is stored under: the hash of its content (what was found and covered,
    not when or by which scanner version)."""
    return _result_content(scan)[0]


# A tag passes several stages in a run and is saved after each with the same scan result:
# its content is dumped once. Keyed by identity, holding the result so the id is not reused.
_CONTENT_CACHE: OrderedDict[int, tuple[ScanResult, str, bytes]] = OrderedDict()
_CONTENT_CACHE_SIZE = 64
_CONTENT_LOCK = threading.Lock()


def _result_content(scan: ScanResult) -> tuple[str, bytes]:
    with _CONTENT_LOCK:
        hit = _CONTENT_CACHE.get(id(scan))
        if hit is not None and hit[0] is scan:
            _CONTENT_CACHE.move_to_end(id(scan))
            return hit[1], hit[2]
    content = _dump(_result_doc(scan)).encode("utf-8")
    key = content_key(content)
    with _CONTENT_LOCK:
        _CONTENT_CACHE[id(scan)] = (scan, key, content)
        while len(_CONTENT_CACHE) > _CONTENT_CACHE_SIZE:
            _CONTENT_CACHE.popitem(last=False)
    return key, content


def _found_line(line: bytes, path: Path) -> FoundWith | None:
    """The found_with of a stored result's first line; None when it is not that line (the
    caller then writes the file again)."""
    try:
        doc = _fast_load(line.decode("utf-8"))
        rd = _Reader(path, "stored scan result")
        return _found_from_doc(rd, rd.map(rd.map(doc, "the document").get("found_with"), "found_with"))
    except Exception:  # noqa: BLE001 - a damaged first line is repaired by writing the file
        return None


# --- the index file ------------------------------------------------------------------------

_INDEX_HEAD = '{"format": 2,\n "tags": [\n'
_INDEX_TAIL = "]}\n"


def index_text(lines: list[str]) -> str:
    """ledger.json from its entry lines: one JSON document, one tag per line."""
    return _INDEX_HEAD + ",\n".join(lines) + ("\n" if lines else "") + _INDEX_TAIL


_CHECK = ', "check": "'


def entry_line(entry: IndexEntry) -> str:
    """One entry as ledger.json writes it: a JSON object on one line, keys in field order,
    sealed by ``check``, the hash of the rest of the line: an entry edited by hand (or
    mangled by a merge) is known as such and made again from its record."""
    body = _entry_body(entry)
    return f'{body[:-1]}{_CHECK}{content_key(body.encode("utf-8"))}"}}'


def _unsealed(line: str) -> str | None:
    """The line without its check, None when the check is missing or does not match."""
    at = line.rfind(_CHECK)
    if at < 0 or not line.endswith('"}'):
        return None
    body = line[:at] + "}"
    return body if line[at + len(_CHECK) : -2] == content_key(body.encode("utf-8")) else None


def _entry_body(entry: IndexEntry) -> str:
    scan = entry.scan
    return json.dumps(
        {
            "name": entry.name,
            "tag": entry.tag,
            "digest": entry.digest,
            "state": entry.state.value,
            "record_key": entry.record_key,
            "source": entry.source,
            "promoted_digest": entry.promoted_digest,
            "signatures": list(entry.signatures),
            "replicas": [
                {"registry": r.registry, "digest": r.digest, "lagging": r.lagging} for r in entry.replicas
            ],
            "mirrored": entry.mirrored,
            "vanished": entry.vanished,
            "reason": entry.reason,
            "reasons": entry.reasons,
            "last_change": entry.last_change,
            "scan": None
            if scan is None
            else {
                "digest": scan.digest,
                "result": scan.result,
                "scanner": scan.scanner,
                "db_updated_at": scan.db_updated_at,
                "scanned_at": scan.scanned_at,
                "selection": list(scan.selection),
                "usable": scan.usable,
                "created": _format_time(scan.created) if scan.created is not None else None,
                "counts": scan.counts,
            },
            "decided": entry.decided,
        },
        ensure_ascii=False,
        separators=(", ", ": "),
    )


def index_bytes(entries: list[IndexEntry]) -> bytes:
    """ledger.json for ``entries``, sorted by (name, tag)."""
    return index_text([entry_line(e) for e in sorted(entries, key=lambda e: (e.name, e.tag))]).encode("utf-8")


def read_index(data: bytes, path: Path) -> tuple[dict[tuple[str, str], IndexEntry], list[str]]:
    """The entries of a ledger.json and a message for each line that is no valid entry
    (``<path>:<line>: ...``): the index is derived, so a bad entry is made again from its
    record rather than stopping anyone. A file not in the layout syncer writes gives no
    entries and one message."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        return {}, [f"{path}: not UTF-8 ({err.reason}); the index is rebuilt from the records"]
    if not (text.startswith(_INDEX_HEAD) and text.endswith(_INDEX_TAIL)):
        return {}, [
            f'{path}:1: not the layout syncer writes ({_INDEX_HEAD.strip()!r} ... "]}}"); '
            "the index is rebuilt from the records"
        ]
    lines = text[len(_INDEX_HEAD) : len(text) - len(_INDEX_TAIL)].split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    entries: dict[tuple[str, str], IndexEntry] = {}
    problems: list[str] = []
    again = "; that entry is made again from its record"
    first_line = _INDEX_HEAD.count("\n") + 1
    for i, line in enumerate(lines):
        where = f"{path}:{first_line + i}"
        sealed = line[:-1] if i < len(lines) - 1 and line.endswith(",") else line
        body = _unsealed(sealed)
        if body is None:
            problems.append(f"{where}: the entry does not match its check (edited by hand?){again}")
            continue
        try:
            entry = _entry_from_json(json.loads(body))
        except json.JSONDecodeError as err:
            problems.append(f"{where}: not a JSON entry ({err.msg} at column {err.colno}){again}")
            continue
        except _BadEntry as err:
            problems.append(f"{where}: invalid entry ({err}){again}")
            continue
        key = (entry.name, entry.tag)
        if key in entries:
            problems.append(f"{where}: a second entry for {entry.name}:{entry.tag}{again}")
            del entries[key]
            continue
        entries[key] = entry
    return entries, problems


class _BadEntry(Exception):
    """An index line that is JSON but no entry: the message names the field."""


def _field(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str = "") -> Any:
    if key not in obj:
        raise _BadEntry(f"{where}{key} is missing")
    value = obj[key]
    # bool is an int in Python: a count must not be true, a flag must not be 1.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise _BadEntry(f"{where}{key} must be {names.replace('NoneType', 'null')}, not {value!r}")
    return value


def _strings(obj: dict[str, Any], key: str, where: str = "") -> tuple[str, ...]:
    values = _field(obj, key, list, where)
    if not all(isinstance(v, str) for v in values):
        raise _BadEntry(f"{where}{key} must be a list of strings")
    return tuple(values)


_ENTRY_KEYS = frozenset(f.name for f in fields(IndexEntry))
_SCAN_KEYS = frozenset(f.name for f in fields(ScanSummary))


def _entry_from_json(obj: Any) -> IndexEntry:
    if not isinstance(obj, dict):
        raise _BadEntry("an entry must be a JSON object")
    if unknown := sorted(obj.keys() - _ENTRY_KEYS):
        raise _BadEntry(f"unknown field {unknown[0]!r}")
    name, tag = _field(obj, "name", str), _field(obj, "tag", str)
    try:
        validate_name(name)
        validate_tag(tag)
        state = State(_field(obj, "state", str))
    except ValueError as err:
        raise _BadEntry(str(err)) from None
    replicas = []
    for i, r in enumerate(_field(obj, "replicas", list)):
        where = f"replicas[{i}]."
        if not isinstance(r, dict) or r.keys() != {"registry", "digest", "lagging"}:
            raise _BadEntry(f"replicas[{i}] must be an object of registry, digest and lagging")
        replicas.append(
            ReplicaSummary(
                _field(r, "registry", str, where),
                _field(r, "digest", (str, type(None)), where),
                _field(r, "lagging", bool, where),
            )
        )
    return IndexEntry(
        name=name,
        tag=tag,
        digest=_field(obj, "digest", str),
        state=state,
        record_key=_field(obj, "record_key", str),
        source=_field(obj, "source", str),
        promoted_digest=_field(obj, "promoted_digest", (str, type(None))),
        signatures=_strings(obj, "signatures"),
        replicas=tuple(replicas),
        mirrored=_field(obj, "mirrored", bool),
        vanished=_field(obj, "vanished", bool),
        reason=_field(obj, "reason", str),
        reasons=_field(obj, "reasons", int),
        last_change=_field(obj, "last_change", str),
        scan=_scan_summary_from_json(_field(obj, "scan", (dict, type(None)))),
        decided=_field(obj, "decided", str),
    )


def _scan_summary_from_json(obj: dict[str, Any] | None) -> ScanSummary | None:
    if obj is None:
        return None
    where = "scan."
    if unknown := sorted(obj.keys() - _SCAN_KEYS):
        raise _BadEntry(f"unknown field {where}{unknown[0]!r}")
    created = _field(obj, "created", (str, type(None)), where)
    try:
        moment = datetime.fromisoformat(created) if created is not None else None
    except ValueError:
        raise _BadEntry(f"scan.created {created!r} is not an ISO 8601 time") from None
    counts = _field(obj, "counts", dict, where)
    if not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in counts.items()
    ):
        raise _BadEntry("scan.counts must map severities to numbers")
    return ScanSummary(
        digest=_field(obj, "digest", str, where),
        result=_field(obj, "result", str, where),
        scanner=_field(obj, "scanner", str, where),
        db_updated_at=_field(obj, "db_updated_at", str, where),
        scanned_at=_field(obj, "scanned_at", str, where),
        selection=_strings(obj, "selection", where),
        usable=_field(obj, "usable", bool, where),
        created=moment,
        counts=counts,
    )


# --- YAML ----------------------------------------------------------------------------------


# Characters that YAML 1.1 readers (libyaml and PyYAML, which read records here) treat
# differently from the YAML 1.2 rules ruamel writes by: `installed: 1:1.2.13` is a plain
# scalar in 1.2 but breaks a 1.1 flow mapping, and `1:20` is the number 80 in 1.1. Quoting
# such strings keeps records readable by any YAML tool.
_NEEDS_QUOTES = re.compile(r"[:#,\[\]{}&*!|>'\"%@`]|^[-?]|\s$")


_YAML11 = pyyaml.resolver.Resolver()
_SafeLoader = getattr(pyyaml, "CSafeLoader", pyyaml.SafeLoader)


@functools.lru_cache(maxsize=1 << 16)
def _resolve_scalar(value: str, implicit: tuple[bool, bool]) -> str:
    return _YAML11.resolve(pyyaml.ScalarNode, value, implicit)


class _FastLoader(_SafeLoader):  # type: ignore[misc, valid-type]
    """The safe loader with its scalar tags remembered: libyaml asks the Python resolver for
    every scalar, and records repeat their words (that was a third of reading a record)."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is pyyaml.ScalarNode and not self.yaml_path_resolvers:
            return _resolve_scalar(value, implicit)
        return super().resolve(kind, value, implicit)


def _dump(doc: Any) -> str:
    """The document's YAML, written by PyYAML's emitter from events, so that each mapping and
    list keeps the block or flow style its document gives it and every scalar is written in a
    form YAML reads back as that scalar. ruamel's dump (representer, serializer and emitter),
    which format 1 used, was most of the cost of a save; the layout is the one it wrote."""
    out = io.StringIO()
    # Wide enough that no reason or finding is folded onto a second line.
    emitter = _IndentedEmitter(out, indent=2, width=1 << 30, allow_unicode=True)
    emitter.emit(pyyaml.StreamStartEvent())
    emitter.emit(pyyaml.DocumentStartEvent(explicit=False))
    for event in _events(doc):
        emitter.emit(event)
    emitter.emit(pyyaml.DocumentEndEvent(explicit=False))
    emitter.emit(pyyaml.StreamEndEvent())
    return out.getvalue()


class _IndentedEmitter(pyyaml.emitter.Emitter):
    """Lists in a mapping indented under their key (``events:\n  - at: …``), as format 1's
    records were written, so that migrated events keep their lines byte for byte. libyaml's
    emitter cannot indent them (its lists are indentless), which is why this is PyYAML's."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _flow_style(value: Any) -> bool:
    return isinstance(value, CommentedMap | CommentedSeq) and bool(value.fa.flow_style())


def _events(value: Any) -> Iterator[Any]:
    if isinstance(value, dict):
        yield pyyaml.MappingStartEvent(None, None, True, flow_style=_flow_style(value))
        for key, item in value.items():
            yield from _events(key)
            yield from _events(item)
        yield pyyaml.MappingEndEvent()
    elif isinstance(value, list):
        yield pyyaml.SequenceStartEvent(None, None, True, flow_style=_flow_style(value))
        for item in value:
            yield from _events(item)
        yield pyyaml.SequenceEndEvent()
    else:
        text, style = _scalar(value)
        # implicit (plain, quoted): a quoted string needs no tag; a plain scalar needs none
        # only where it is what YAML resolves it to, which _scalar made sure of.
        yield pyyaml.ScalarEvent(None, None, (True, True), text, style=style)


# Records repeat their words (packages, versions, statuses, times): the resolvers were most of
# the time of writing one. typed: True and 1 are different scalars.
@functools.lru_cache(maxsize=1 << 16, typed=True)
def _scalar(value: Any) -> tuple[str, str | None]:
    """The scalar's text and style: None lets the emitter write it plain where YAML allows
    that (it quotes otherwise, and escapes what is not printable)."""
    if value is None:
        return "null", None
    if value is True or value is False:
        return ("true" if value else "false"), None
    if isinstance(value, int):
        return str(value), None
    if not isinstance(value, str):
        raise TypeError(f"cannot represent {value!r} in a record: not a string, number, boolean or null")
    # Quoted: text YAML 1.1 or 1.2 would read as something else (no, on, 1_000, 0o7, ~, 1:20),
    # and the indicators that break a 1.1 flow mapping (`installed: 1:1.2.13`).
    elsewhere = (
        _YAML11.resolve(pyyaml.ScalarNode, value, (True, False)) != _STR
        or _YAML12.resolve(ScalarNode, value, (True, False)) != _STR
    )
    if _BREAKS.search(value) or not value.isprintable():
        # Escaped: a line break inside quotes would be folded into a space when read back.
        return value, '"'
    return value, ("'" if value == "" or elsewhere or _NEEDS_QUOTES.search(value) else None)


_BREAKS = re.compile("[\n\r\x85\u2028\u2029]")


_YAML12 = VersionedResolver(version=(1, 2))


def _fast_load(text: str) -> Any:
    # Reading only: PyYAML's libyaml loader is several times faster than ruamel's round-trip
    # one, which only a save needs (to keep the file's formatting). A no-op run reads every
    # record, so this is its hot path. Records are written so that both read them alike.
    loader = _FastLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        try:
            return _plain(node, loader, set())
        except _NotPlain:
            return loader.construct_document(node)
    finally:
        loader.dispose()


_STR, _MAP, _SEQ = "tag:yaml.org,2002:str", "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"
_SCALARS = frozenset({"tag:yaml.org,2002:int", "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null"})


class _NotPlain(Exception):
    """A node ``_plain`` leaves to PyYAML's own constructor."""


def _plain(node: Any, loader: Any, seen: set[int]) -> Any:
    """What SafeConstructor makes of a document of string-keyed mappings, sequences,
    strings, integers, booleans and nulls, which every record is, built directly: PyYAML's
    constructor machinery was most of the time of reading a record. _NotPlain for anything
    else (another tag, a key that is no string, a node reached twice through an alias), which
    the caller then hands to SafeConstructor whole."""
    tag = node.tag
    if tag == _STR:
        return node.value
    if tag in _SCALARS:
        return loader.construct_object(node)
    if tag not in (_MAP, _SEQ) or id(node) in seen:
        raise _NotPlain
    seen.add(id(node))
    if tag == _SEQ:
        return [_plain(item, loader, seen) for item in node.value]
    out = {}
    for key, value in node.value:
        if key.tag != _STR:
            raise _NotPlain
        out[key.value] = _plain(value, loader, seen)
    return out


def _parse(text: str, path: Path, what: str = "record") -> Any:
    try:
        return _fast_load(text)
    except RecursionError:
        raise LedgerError(
            f"{path}: corrupt {what} (nested too deeply); {_RESTORE.format(path=path)}"
        ) from None
    except pyyaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise LedgerError(f"{where}: corrupt {what} ({problem}); {_RESTORE.format(path=path)}") from None


def _read_bytes(root: Path, path: Path, what: str = "record") -> bytes | None:
    """The file's bytes, None when there is none; never through a symlink."""
    try:
        return read_regular(root, path)
    except UnsafePathError as err:
        raise LedgerError(f"{err} ({_RESTORE.format(path=path)})") from None
    except OSError as err:
        raise LedgerError(
            f"{path}: cannot read {what} ({err.__class__.__name__}); {_RESTORE.format(path=path)}"
        ) from None


def _decode(data: bytes, path: Path, what: str = "record") -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise LedgerError(
            f"{path}: cannot read {what} (UnicodeDecodeError); {_RESTORE.format(path=path)}"
        ) from None


# --- Record -> document ---------------------------------------------------------------------


def _flow_map(**items: Any) -> CommentedMap:
    m = CommentedMap(items)
    m.fa.set_flow_style()
    return m


def _flow_seq(items: Any) -> CommentedSeq:
    s = CommentedSeq(items)
    s.fa.set_flow_style()
    return s


def _block_seq(items: Any) -> CommentedSeq:
    s = CommentedSeq(items)
    s.fa.set_block_style()
    return s


def _record_doc(r: Record, ref: _ScanRef | None) -> CommentedMap:
    doc = CommentedMap()
    doc["format"] = FORMAT
    doc["name"] = r.name
    doc["tag"] = r.tag
    doc["source"] = r.source
    doc["digest"] = r.digest
    doc["state"] = r.state.value
    doc["reasons"] = _block_seq(r.reasons)
    doc["scan"] = _ref_doc(ref, r.scan) if ref is not None and r.scan is not None else None
    doc["signatures"] = _flow_seq(r.signatures)
    doc["replicas"] = _block_seq(_replica_doc(x) for x in r.replicas)
    doc["promoted_digest"] = r.promoted_digest
    doc["events"] = _block_seq(_event_doc(e) for e in r.events)
    return doc


def _ref_doc(ref: _ScanRef, scan: ScanResult) -> CommentedMap:
    doc = CommentedMap()
    doc["digest"] = ref.digest
    doc["result"] = ref.result
    doc["scanner"] = ref.found.scanner
    doc["db_updated_at"] = ref.found.db_updated_at
    doc["scanned_at"] = ref.found.scanned_at
    doc["counts"] = _flow_map(**count_by_severity(scan.findings))
    return doc


def _result_doc(scan: ScanResult) -> CommentedMap:
    """A stored result's content: everything but found_with, which is its first line."""
    doc = CommentedMap()
    doc["digest"] = scan.digest
    doc["platforms"] = _flow_seq(scan.platforms)  # for readers; `covered` is what counts
    doc["selection"] = _flow_seq(scan.selection) if scan.selection else "all"
    if scan.artifact:
        doc["artifact"] = scan.artifact
    doc["created"] = _format_time(scan.created) if scan.created is not None else None
    doc["covered"] = _block_seq(_covered_doc(c) for c in scan.covered)
    doc["counts"] = _flow_map(**count_by_severity(scan.findings))
    doc["findings"] = _block_seq(_finding_doc(f) for f in sorted(scan.findings, key=_finding_order))
    doc["licenses"] = _block_seq(
        _license_doc(x) for x in sorted(scan.licenses, key=lambda x: (x.license, x.package, x.platform))
    )
    return doc


def _covered_doc(c: PlatformScan) -> CommentedMap:
    doc = _flow_map(digest=c.digest, platform=c.platform)
    if c.created is not None:
        doc["created"] = _format_time(c.created)
    doc["os"] = c.os
    doc["packages"] = _flow_seq(c.packages)
    if c.unassessed:
        doc["unassessed"] = _flow_seq(c.unassessed)
    if c.problem:
        doc["problem"] = c.problem
    return doc


def _finding_order(f: Finding) -> tuple[Any, ...]:
    return (-f.severity, f.id, f.package, f.installed, f.platform, f.fixed or "", f.status, f.title)


def _finding_doc(f: Finding) -> CommentedMap:
    doc = _flow_map(id=f.id, package=f.package, installed=f.installed, fixed=f.fixed, severity=f.severity.key)
    for key in ("status", "platform", "title", "url"):
        if getattr(f, key):
            doc[key] = getattr(f, key)
    return doc


def _license_doc(x: LicenseFinding) -> CommentedMap:
    doc = _flow_map(license=x.license, package=x.package)
    if x.platform:
        doc["platform"] = x.platform
    return doc


def _replica_doc(x: ReplicaState) -> CommentedMap:
    doc = CommentedMap()
    doc["registry"] = x.registry
    doc["digest"] = x.digest
    doc["copied_at"] = x.copied_at
    doc["lagging"] = x.lagging
    return doc


def _event_doc(e: Event) -> CommentedMap:
    doc = CommentedMap()
    doc["at"] = e.at
    doc["event"] = e.event
    doc["detail"] = e.detail
    return doc


def _format_time(moment: datetime) -> str:
    if moment.tzinfo is None:
        return moment.isoformat()
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --- document -> Record ---------------------------------------------------------------------

_RESTORE = "restore it from git history (git log -p -- {path})"


class _Reader:
    """Typed access to one record document; every complaint names the file and the key."""

    def __init__(self, path: Path, what: str = "record"):
        self.path = path
        self.what = what

    def fail(self, problem: str) -> LedgerError:
        return LedgerError(f"{self.path}: corrupt {self.what} ({problem}); {_RESTORE.format(path=self.path)}")

    def map(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(f"{where} must be a mapping")
        return value

    def seq(self, parent: dict[str, Any], key: str, where: str) -> list[Any]:
        value = parent.get(key, [])
        if not isinstance(value, list):
            raise self.fail(f"{where}.{key} must be a list")
        return value

    def text(
        self,
        parent: dict[str, Any],
        key: str,
        where: str,
        *,
        optional: bool = False,
        default: str | None = None,
    ) -> Any:
        if key not in parent and (optional or default is not None):
            return default
        value = parent.get(key)
        if value is None and optional:
            return None
        if not isinstance(value, str):
            raise self.fail(f"{where}.{key} must be a string")
        return value

    def flag(self, parent: dict[str, Any], key: str, where: str) -> bool:
        value = parent.get(key, False)
        if not isinstance(value, bool):
            raise self.fail(f"{where}.{key} must be true or false")
        return value

    def strings(self, parent: dict[str, Any], key: str, where: str) -> list[str]:
        values = self.seq(parent, key, where)
        if not all(isinstance(v, str) for v in values):
            raise self.fail(f"{where}.{key} must be a list of strings")
        return [str(v) for v in values]


def _record_from_doc(rd: _Reader, top: dict[str, Any], name: str, tag: str, *, legacy: bool) -> Record:
    """The record of a document; its scan only in format 1 (inline), else None (the caller
    joins the stored result)."""
    where = "record"
    if rd.text(top, "name", where) != name or rd.text(top, "tag", where) != tag:
        raise rd.fail(f"it names {top.get('name')}:{top.get('tag')} but its path is for {name}:{tag}")
    state_text = rd.text(top, "state", where)
    try:
        state = State(state_text)
    except ValueError:
        raise rd.fail(f"unknown state {state_text!r}") from None
    scan = top.get("scan")
    return Record(
        name=name,
        tag=tag,
        source=rd.text(top, "source", where),
        digest=rd.text(top, "digest", where),
        state=state,
        reasons=rd.strings(top, "reasons", where),
        scan=_scan_from_doc(rd, rd.map(scan, "scan")) if legacy and scan is not None else None,
        signatures=rd.strings(top, "signatures", where),
        replicas=[
            _replica_from_doc(rd, rd.map(x, f"replicas[{i}]"), f"replicas[{i}]")
            for i, x in enumerate(rd.seq(top, "replicas", where))
        ],
        promoted_digest=rd.text(top, "promoted_digest", where, optional=True),
        events=_events_from_doc(rd, top),
    )


def _events_from_doc(rd: _Reader, top: dict[str, Any]) -> list[Event]:
    return [
        _event_from_doc(rd, rd.map(x, f"events[{i}]"), f"events[{i}]")
        for i, x in enumerate(rd.seq(top, "events", "record"))
    ]


def _ref_from_doc(rd: _Reader, doc: dict[str, Any]) -> _ScanRef:
    where = "scan"
    return _ScanRef(
        digest=rd.text(doc, "digest", where),
        result=rd.text(doc, "result", where),
        found=_found_from_doc(rd, doc, where),
    )


def _found_from_doc(rd: _Reader, doc: dict[str, Any], where: str = "found_with") -> FoundWith:
    return FoundWith(
        scanner=rd.text(doc, "scanner", where),
        db_updated_at=rd.text(doc, "db_updated_at", where),
        scanned_at=rd.text(doc, "scanned_at", where),
    )


def _result_from_doc(rd: _Reader, doc: dict[str, Any], found: FoundWith) -> ScanResult:
    """A stored result's content, with found_with's scanner and times."""
    return _scan_from_doc(rd, {**doc, **vars(found)})


def _scan_from_doc(rd: _Reader, doc: dict[str, Any]) -> ScanResult:
    where = "scan"
    return ScanResult(
        digest=rd.text(doc, "digest", where),
        scanner=rd.text(doc, "scanner", where),
        db_updated_at=rd.text(doc, "db_updated_at", where),
        scanned_at=rd.text(doc, "scanned_at", where),
        findings=tuple(
            _finding_from_doc(rd, rd.map(x, f"scan.findings[{i}]"), f"scan.findings[{i}]")
            for i, x in enumerate(rd.seq(doc, "findings", where))
        ),
        licenses=tuple(
            _license_from_doc(rd, rd.map(x, f"scan.licenses[{i}]"), f"scan.licenses[{i}]")
            for i, x in enumerate(rd.seq(doc, "licenses", where))
        ),
        created=_time(rd, doc, "created", where),
        # Records written before coverage was recorded have none: they fit no entry, so the
        # pipeline scans them again rather than trust what they may not have covered.
        covered=tuple(
            _covered_from_doc(rd, rd.map(x, f"scan.covered[{i}]"), f"scan.covered[{i}]")
            for i, x in enumerate(rd.seq(doc, "covered", where))
        ),
        selection=() if doc.get("selection", "all") == "all" else tuple(rd.strings(doc, "selection", where)),
        artifact=rd.text(doc, "artifact", where, default=""),
    )


def _time(rd: _Reader, doc: dict[str, Any], key: str, where: str) -> datetime | None:
    text = rd.text(doc, key, where, optional=True)
    try:
        return datetime.fromisoformat(text) if text is not None else None
    except ValueError:
        raise rd.fail(f"{where}.{key} {text!r} is not an ISO 8601 time") from None


def _covered_from_doc(rd: _Reader, doc: dict[str, Any], where: str) -> PlatformScan:
    return PlatformScan(
        digest=rd.text(doc, "digest", where),
        platform=rd.text(doc, "platform", where, default=""),
        created=_time(rd, doc, "created", where),
        os=rd.text(doc, "os", where, default=""),
        packages=tuple(rd.strings(doc, "packages", where)),
        unassessed=tuple(rd.strings(doc, "unassessed", where)),
        problem=rd.text(doc, "problem", where, default=""),
    )


def _finding_from_doc(rd: _Reader, doc: dict[str, Any], where: str) -> Finding:
    severity_text = rd.text(doc, "severity", where)
    try:
        severity = Severity.parse(severity_text)
    except KeyError:
        raise rd.fail(f"{where}.severity {severity_text!r} is not a severity") from None
    return Finding(
        id=rd.text(doc, "id", where),
        package=rd.text(doc, "package", where),
        installed=rd.text(doc, "installed", where),
        fixed=rd.text(doc, "fixed", where, optional=True),
        severity=severity,
        status=rd.text(doc, "status", where, default=""),
        title=rd.text(doc, "title", where, default=""),
        platform=rd.text(doc, "platform", where, default=""),
        url=rd.text(doc, "url", where, default=""),
    )


def _license_from_doc(rd: _Reader, doc: dict[str, Any], where: str) -> LicenseFinding:
    return LicenseFinding(
        license=rd.text(doc, "license", where),
        package=rd.text(doc, "package", where),
        platform=rd.text(doc, "platform", where, default=""),
    )


def _replica_from_doc(rd: _Reader, doc: dict[str, Any], where: str) -> ReplicaState:
    return ReplicaState(
        registry=rd.text(doc, "registry", where),
        digest=rd.text(doc, "digest", where, optional=True),
        copied_at=rd.text(doc, "copied_at", where, optional=True),
        lagging=rd.flag(doc, "lagging", where),
    )


def _event_from_doc(rd: _Reader, doc: dict[str, Any], where: str) -> Event:
    at, kind = rd.text(doc, "at", where), rd.text(doc, "event", where)
    event = next((k for k in EVENT_KINDS if k == kind), None)
    if event is None:
        # Like an unknown state: a hand edit or a newer syncer's record, which this one misreads.
        raise rd.fail(f"{where}.event {kind!r} is not an event syncer writes")
    return Event(at=at, event=event, detail=rd.text(doc, "detail", where, default=""))
