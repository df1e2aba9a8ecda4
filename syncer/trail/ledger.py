"""The ledger: one YAML record per tracked tag under ``<reports>/records/<name>/<tag>.yaml``.

Records are the audit trail and live in git, so writing them is careful about three things:

- small diffs: an existing file is loaded round-trip and updated in place, so unchanged parts
  (and any comments) stay byte-identical; findings are one line each;
- no churn: saving a record equal to the stored one writes nothing (``save`` returns False);
- no half files: a write goes to a temporary file in the same directory, is fsynced and then
  atomically renamed over the record.

A file that cannot be read never stops a reader (``Ledger.contents``): it fails its own tag
and is left as it is, to be restored from git history; a file that is no record is reported
and skipped.

Events are append-only and records are never deleted. Finding order is normalised on save
(severity, worst first, then id, then package), so it does not depend on the scanner's order.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml as pyyaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from ruamel.yaml.representer import RoundTripRepresenter

from syncer.core import refs
from syncer.core.model import (
    EVENT_KINDS,
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
from syncer.core.policy import count_by_severity
from syncer.errors import SyncerError, UnsafePathError
from syncer.trail.atomic import is_temp_name, read_regular, write_atomic

_SUFFIX = ".yaml"


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


class Ledger:
    def __init__(self, reports_dir: str | os.PathLike[str]):
        self.root = Path(reports_dir)
        self.records_dir = self.root / "records"
        # The text and round-trip document this ledger last wrote per file: the next save of
        # the same record (a tag passes several stages in one run) need not parse it again.
        self._written: dict[Path, tuple[str, Any]] = {}

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

    def load(self, name: str, tag: str) -> Record | None:
        path = self.path_for(name, tag)
        text = _read_text(self.root, path)
        return (
            None if text is None else _record_from_doc(_parse(text, path, round_trip=False), path, name, tag)
        )

    def records_for(self, name: str) -> list[Record]:
        """Every readable record of one repository, sorted by tag."""
        validate_name(name)
        return [r for r in self.contents().records if r.name == name]

    def all(self) -> list[Record]:
        """Every readable record, sorted by (name, tag); see ``contents`` for the others."""
        return self.contents().records

    def contents(self) -> LedgerContents:
        """Every file under ``records/``: one that cannot be read fails only its own tag, and
        one that is no record is reported and skipped; neither stops the reader. Only a
        directory that cannot be listed raises LedgerError: which tags it holds is unknown."""
        out = LedgerContents()
        if not self.records_dir.is_dir():
            return out

        def unlisted(err: OSError) -> None:
            raise LedgerError(
                f"{err.filename}: cannot list the records ({err.strerror}); fix its "
                "permissions: a run must know every record before it acts"
            ) from None

        for directory, subdirs, files in os.walk(self.records_dir, onerror=unlisted):
            here = Path(directory)
            for sub in [d for d in subdirs if (here / d).is_symlink()]:
                subdirs.remove(sub)
                out.strays.append(
                    f"{here / sub}: a symlink under records/ is never followed; "
                    "skipped: replace it with a directory (git rm the link)"
                )
            for file in files:
                self._classify(here / file, out)
        out.records.sort(key=lambda r: (r.name, r.tag))
        out.unreadable.sort(key=lambda u: (u.name, u.tag))
        out.strays.sort()
        return out

    def _classify(self, path: Path, out: LedgerContents) -> None:
        if is_temp_name(path.name) or path.name.startswith(".git"):
            return  # a write in progress (the run removes leftovers), or git's own files
        rel = path.relative_to(self.records_dir)
        name, tag = "/".join(rel.parent.parts), path.name.removesuffix(_SUFFIX)
        try:
            if not path.name.endswith(_SUFFIX):
                raise ValueError("not a .yaml file")
            validate_name(name)
            validate_tag(tag)
        except ValueError as err:
            out.strays.append(
                f"{path}: not a record path ({err}); only records <name>/<tag>.yaml "
                "belong under records/: skipped; move the file away"
            )
            return
        try:
            text = _read_text(self.root, path)
            if text is not None:  # gone since it was listed: nothing to read
                out.records.append(_record_from_doc(_parse(text, path, round_trip=False), path, name, tag))
        except SyncerError as err:
            out.unreadable.append(Unreadable(name, tag, str(path), str(err)))
        except Exception as err:  # noqa: BLE001 - no file under records/ may stop a reader
            out.unreadable.append(
                Unreadable(
                    name,
                    tag,
                    str(path),
                    (f"{path}: corrupt record ({type(err).__name__}: {err}); {_RESTORE.format(path=path)}"),
                )
            )

    def save(self, record: Record) -> bool:
        """Write ``record``; True if the file changed. Refuses (ValueError) to drop events."""
        path = self.path_for(record.name, record.tag)
        desired = _record_doc(record)
        doc: Any = desired
        old_text = _read_text(self.root, path)
        if old_text is not None:
            cached = self._written.get(path)
            existing = cached[1] if cached and cached[0] == old_text else _parse(old_text, path)
            stored = _record_from_doc(existing, path, record.name, record.tag)
            if record.events[: len(stored.events)] != stored.events:
                raise ValueError(
                    f"events of {record.name}:{record.tag} do not extend the "
                    f"{len(stored.events)} events stored in {path}: events are append-only"
                )
            doc = _merge(existing, desired)
        text = _dump(doc)
        if text == old_text:
            return False
        write_atomic(path, text.encode("utf-8"), root=self.root)
        self._written[path] = (text, doc)
        return True


# --- YAML ----------------------------------------------------------------------------------


class _Representer(RoundTripRepresenter):
    """Round-trip representer that writes ``null`` (not an empty value) and never aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


_Representer.add_representer(
    type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null")
)

# Characters that YAML 1.1 readers (libyaml and PyYAML, which read records here) treat
# differently from the YAML 1.2 rules ruamel writes by: `installed: 1:1.2.13` is a plain
# scalar in 1.2 but breaks a 1.1 flow mapping, and `1:20` is the number 80 in 1.1. Quoting
# such strings keeps records readable by any YAML tool.
_NEEDS_QUOTES = re.compile(r"[:#,\[\]{}&*!|>'\"%@`]|^[-?]|\s$")


_YAML11 = pyyaml.resolver.Resolver()
_FastLoader = getattr(pyyaml, "CSafeLoader", pyyaml.SafeLoader)


def _represent_str(rep: RoundTripRepresenter, data: str) -> Any:
    # Also quoted: words YAML 1.1 reads as something else (no, on, 1_000, 0o7, ~).
    plain_elsewhere = _YAML11.resolve(pyyaml.ScalarNode, data, (True, False)) != "tag:yaml.org,2002:str"
    style = "'" if _NEEDS_QUOTES.search(data) or plain_elsewhere else None
    return rep.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Representer.add_representer(str, _represent_str)


def _yaml() -> YAML:
    # One instance per call: YAML objects keep state while dumping and are not thread-safe.
    yaml = YAML(typ="rt")
    yaml.Representer = _Representer
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 100_000  # never fold a long reason or finding onto a second line
    return yaml


def _dump(doc: Any) -> str:
    out = io.StringIO()
    _yaml().dump(doc, out)
    return out.getvalue()


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


def _parse(text: str, path: Path, *, round_trip: bool = True) -> Any:
    try:
        return _yaml().load(text) if round_trip else _fast_load(text)
    except RecursionError:
        raise LedgerError(
            f"{path}: corrupt record (nested too deeply); {_RESTORE.format(path=path)}"
        ) from None
    except (YAMLError, pyyaml.YAMLError) as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise LedgerError(f"{where}: corrupt record ({problem}); {_RESTORE.format(path=path)}") from None


def _read_text(root: Path, path: Path) -> str | None:
    """The record's text, None when there is no file; never through a symlink."""
    try:
        data = read_regular(root, path)
        return None if data is None else data.decode("utf-8")
    except UnsafePathError as err:
        raise LedgerError(f"{err} ({_RESTORE.format(path=path)})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise LedgerError(
            f"{path}: cannot read record ({err.__class__.__name__}); {_RESTORE.format(path=path)}"
        ) from None


def _merge(existing: Any, desired: Any) -> Any:
    """``desired`` built into ``existing`` so that equal parts keep their nodes (and comments)."""
    if isinstance(existing, CommentedMap) and isinstance(desired, CommentedMap):
        for key in [k for k in existing if k not in desired]:
            del existing[key]
        for key, value in desired.items():
            existing[key] = _merge(existing[key], value) if key in existing else value
        if list(existing) != list(desired):
            for key in desired:
                existing.move_to_end(key)
        return existing
    if isinstance(existing, CommentedSeq) and isinstance(desired, CommentedSeq):
        for i, value in enumerate(desired):
            if i < len(existing):
                existing[i] = _merge(existing[i], value)
            else:
                existing.append(value)
        del existing[len(desired) :]
        return existing
    if type(existing) is type(desired) and existing == desired:
        return existing
    return desired


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


def _record_doc(r: Record) -> CommentedMap:
    doc = CommentedMap()
    doc["name"] = r.name
    doc["tag"] = r.tag
    doc["source"] = r.source
    doc["digest"] = r.digest
    doc["state"] = r.state.value
    doc["reasons"] = _block_seq(r.reasons)
    doc["scan"] = _scan_doc(r.scan) if r.scan is not None else None
    doc["signatures"] = _flow_seq(r.signatures)
    doc["replicas"] = _block_seq(_replica_doc(x) for x in r.replicas)
    doc["promoted_digest"] = r.promoted_digest
    doc["events"] = _block_seq(_event_doc(e) for e in r.events)
    return doc


def _scan_doc(scan: ScanResult) -> CommentedMap:
    doc = CommentedMap()
    doc["digest"] = scan.digest
    doc["scanner"] = scan.scanner
    doc["db_updated_at"] = scan.db_updated_at
    doc["scanned_at"] = scan.scanned_at
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

    def __init__(self, path: Path):
        self.path = path

    def fail(self, problem: str) -> LedgerError:
        return LedgerError(f"{self.path}: corrupt record ({problem}); {_RESTORE.format(path=self.path)}")

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


def _record_from_doc(doc: Any, path: Path, name: str, tag: str) -> Record:
    rd = _Reader(path)
    top = rd.map(doc, "the document")
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
        scan=_scan_from_doc(rd, rd.map(scan, "scan")) if scan is not None else None,
        signatures=rd.strings(top, "signatures", where),
        replicas=[
            _replica_from_doc(rd, rd.map(x, f"replicas[{i}]"), f"replicas[{i}]")
            for i, x in enumerate(rd.seq(top, "replicas", where))
        ],
        promoted_digest=rd.text(top, "promoted_digest", where, optional=True),
        events=[
            _event_from_doc(rd, rd.map(x, f"events[{i}]"), f"events[{i}]")
            for i, x in enumerate(rd.seq(top, "events", where))
        ],
    )


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
