"""Loads the catalog directory into the typed model and checks it, reporting every problem at once.

Reading happens in two steps. Each file is read on its own into ``Located`` values that remember
the line of every key (so that a later check can point at ``policy:`` rather than at the entry);
then the functions in ``CHECKS`` look across files (names unique, policies and signers defined,
exceptions and approvals pointing at real images). Further cross-file checks are added by
appending to ``CHECKS``. A ``Catalog`` is returned only when no error was found.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

from cryptography.hazmat.primitives.serialization import load_pem_public_key
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.composer import Composer
from ruamel.yaml.constructor import DuplicateKeyError, RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent
from ruamel.yaml.scanner import RoundTripScanner

from syncer.core.model import (
    APPROVAL_MODES,
    REGRESSION_ACTIONS,
    UNASSESSED_ACTIONS,
    WEBHOOK_EVENTS,
    AccessGroup,
    Approval,
    Auth,
    Catalog,
    ImageEntry,
    Location,
    Policy,
    RegistryEndpoint,
    Settings,
    Severity,
    Signing,
    Source,
    Target,
    VulnException,
    Webhook,
)
from syncer.core.refs import (
    DOCKER_HUB,
    is_sha256_digest,
    is_valid_domain,
    is_valid_repository_path,
    is_valid_tag,
    parse_reference,
    safe_relpath,
)
from syncer.core.selection import PatternError, compile_pattern
from syncer.errors import CatalogError, Diagnostic
from syncer.tools.trust import cert_dirs, problems

T = TypeVar("T")
_Choice = TypeVar("_Choice", bound=str)  # one of a Literal's strings (syncer.core.model)

_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLATFORM_RE = re.compile(r"[a-z0-9]+/[a-z0-9_]+(?:/[a-z0-9]+)?")
# CODEOWNERS accepts @user, @org/team and e-mail addresses.
_OWNER_RE = re.compile(
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:/[A-Za-z0-9][A-Za-z0-9._-]*)?"
    r"|[^@\s]+@[^@\s]+\.[^@\s]+")
# Signer names become file names under signers/, so no separators or leading dots.
_SIGNER_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_REPO_GLOB_RE = re.compile(r"[a-z0-9._/*-]+")
_SEVERITIES = tuple(s.key for s in sorted(Severity, reverse=True))


def is_valid_signer_name(name: str) -> bool:
    return _SIGNER_NAME_RE.fullmatch(name) is not None


def utc_today() -> date:
    """The date exceptions expire against: UTC, so that CI and laptops agree."""
    return datetime.now(UTC).date()


def display_path(path: Path) -> str:
    """A path as users should see it: relative to the current directory when inside it."""
    absolute = Path(os.path.abspath(path))
    try:
        return absolute.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return absolute.as_posix()


@dataclass(frozen=True)
class Located(Generic[T]):
    """A value read from the catalog, with the location of the entry ("") and of each key."""

    value: T
    at: dict[str, Location]

    def where(self, key: str = "") -> Location:
        return self.at.get(key) or self.at[""]


@dataclass
class Draft:
    """Everything read from the catalog files, before the cross-file checks."""

    root: Path
    root_display: str
    settings: Located[Settings] | None = None
    images: list[Located[ImageEntry]] = field(default_factory=list)
    policies: dict[str, Located[Policy]] = field(default_factory=dict)
    exceptions: list[Located[VulnException]] = field(default_factory=list)
    approvals: list[Located[Approval]] = field(default_factory=list)
    access: list[Located[AccessGroup]] = field(default_factory=list)
    signers: dict[str, str] = field(default_factory=dict)  # name -> PEM, only keys that parse
    signer_files: set[str] = field(default_factory=set)  # every signers/<name>.pub present
    broken_policies: set[str] = field(default_factory=set)  # policy files with errors of their own

    def path(self, *parts: str) -> str:
        return "/".join((self.root_display, *parts))


Check = Callable[[Draft, date], Iterable[Diagnostic]]


def load_catalog(root: str | os.PathLike[str] = "catalog") -> Catalog:
    """The checked catalog; raises CatalogError carrying every diagnostic when any is an error."""
    catalog, diagnostics = check_catalog(root, utc_today())
    if catalog is None:
        raise CatalogError(diagnostics)
    return catalog


def check_catalog(root: str | os.PathLike[str], today: date
                  ) -> tuple[Catalog | None, list[Diagnostic]]:
    """All errors and warnings, sorted by file and line; the Catalog only when there is no error."""
    root = Path(root)
    draft = Draft(root=root, root_display=display_path(root))
    sink = _Sink()
    if not root.is_dir():
        sink.error(Location(draft.root_display, 0),
                   "catalog directory not found; run syncer from the repository root "
                   "or pass --catalog DIR")
        return None, sink.items
    reader = _Reader(sink)
    _read_all(draft, reader)
    for check in CHECKS:
        sink.items.extend(check(draft, today))
    diagnostics = sorted(sink.items, key=lambda d: (d.location.file, d.location.line))
    if any(d.level == "error" for d in diagnostics) or draft.settings is None:
        return None, diagnostics
    return _assemble(draft), diagnostics


def _assemble(draft: Draft) -> Catalog:
    assert draft.settings is not None
    return Catalog(
        root=draft.root_display,
        settings=draft.settings.value,
        images=tuple(i.value for i in draft.images),
        policies={name: p.value for name, p in sorted(draft.policies.items())},
        exceptions=tuple(e.value for e in draft.exceptions),
        approvals=tuple(a.value for a in draft.approvals),
        access=tuple(g.value for g in draft.access),
        signers=dict(sorted(draft.signers.items())),
    )


# --- diagnostics and typed reads -----------------------------------------------------------


class _Sink:
    def __init__(self) -> None:
        self.items: list[Diagnostic] = []

    def error(self, location: Location, message: str) -> None:
        self.items.append(Diagnostic(location, message, "error"))

    def warning(self, location: Location, message: str) -> None:
        self.items.append(Diagnostic(location, message, "warning"))


_MISSING = object()


def _kind(value: Any) -> str:
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, (date, datetime)):
        return "a date"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


class _Map:
    """A YAML mapping being read: typed getters that report wrong or missing values by line.

    Values are never echoed for keys that may sit next to credentials; messages name keys and
    expected types instead.
    """

    def __init__(self, data: CommentedMap, file: str, line: int, what: str, sink: _Sink):
        self.data = data
        self.file = file
        self.line = line
        self.what = what  # how messages name this mapping: "image entry", "target"
        self.sink = sink
        self.suggested: set[str] = set()  # keys offered for a misspelling, not reported missing

    def loc(self, key: str = "") -> Location:
        if key and key in self.data:
            try:
                return Location(self.file, self.data.lc.key(key)[0] + 1)
            except (AttributeError, KeyError, TypeError):
                pass
        return Location(self.file, self.line)

    def item_loc(self, key: str, index: int) -> Location:
        seq = self.data.get(key)
        try:
            return Location(self.file, seq.lc.item(index)[0] + 1)
        except (AttributeError, KeyError, TypeError):
            return self.loc(key)

    def located_keys(self) -> dict[str, Location]:
        return {"": self.loc(), **{str(k): self.loc(k) for k in self.data}}

    def error(self, key: str, message: str) -> None:
        self.sink.error(self.loc(key), message)

    def check_keys(self, known: Sequence[str]) -> None:
        for key in self.data:
            if key in known:
                continue
            text = str(key)
            close = difflib.get_close_matches(text, known, n=1, cutoff=0.6)
            if close:
                self.suggested.add(close[0])
            hint = (f"did you mean '{close[0]}'?" if close
                    else "remove it or use one of: " + ", ".join(known))
            self.sink.error(self.loc(key), f"unknown key '{text}' in {self.what}; {hint}")

    def raw(self, key: str, required: str | None) -> Any:
        """The value, or _MISSING; ``required`` is the remedy shown when the key is absent."""
        if key not in self.data:
            if required is not None and key not in self.suggested:
                self.sink.error(self.loc(), f"{self.what} has no '{key}'; {required}")
            return _MISSING
        return self.data[key]

    def _wrong(self, key: str, value: Any, expected: str) -> None:
        self.error(key, f"'{key}' in {self.what} must be {expected}, not {_kind(value)}")

    def str_(self, key: str, *, required: str | None = None, example: str = "") -> str | None:
        value = self.raw(key, required)
        if value is _MISSING:
            return None
        if not isinstance(value, str) or not value.strip():
            hint = f" (quote it if YAML reads it as something else, e.g. {example})" if example else ""
            self._wrong(key, value, "a non-empty string" + hint)
            return None
        return value

    def bool_(self, key: str, default: bool) -> bool:
        value = self.raw(key, None)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            # YAML 1.2 reads yes/no/on/off as strings, a common surprise.
            hint = f" (YAML reads '{value}' as text)" if isinstance(value, str) else ""
            self._wrong(key, value, "true or false" + hint)
            return default
        return value

    def int_(self, key: str, *, minimum: int) -> int | None:
        value = self.raw(key, None)
        if value is _MISSING:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self._wrong(key, value, f"a whole number >= {minimum}")
            return None
        if value < minimum:
            self.error(key, f"'{key}' in {self.what} must be >= {minimum}, not {value}")
            return None
        return value

    def date_(self, key: str, *, required: str | None = None) -> date | None:
        value = self.raw(key, required)
        if value is _MISSING:
            return None
        if isinstance(value, datetime):
            return value.date()
        if isinstance(value, date):
            return value
        if isinstance(value, str):
            try:
                return date.fromisoformat(value)
            except ValueError:
                pass
        self._wrong(key, value, "a date written YYYY-MM-DD")
        return None

    def choice(self, key: str, choices: tuple[_Choice, ...], default: _Choice) -> _Choice:
        value = self.raw(key, None)
        if value is _MISSING:
            return default
        chosen = next((c for c in choices if value == c), None)
        if chosen is None:
            shown = f"'{value}'" if isinstance(value, str) else _kind(value)
            self.error(key, f"'{key}' in {self.what} must be one of {', '.join(choices)}, "
                            f"not {shown}")
            return default
        return chosen

    def str_list(self, key: str, *, required: str | None = None, example: str
                 ) -> list[tuple[str, Location]] | None:
        """The strings of a list with their lines; None when absent or not a list."""
        value = self.raw(key, required)
        if value is _MISSING:
            return None
        if not isinstance(value, list):
            self._wrong(key, value, f"a list, e.g. {example}")
            return None
        items: list[tuple[str, Location]] = []
        for index, item in enumerate(value):
            where = self.item_loc(key, index)
            if isinstance(item, (int, float)) and not isinstance(item, bool):
                # 1.10 would silently become 1.1: make the author quote it.
                self.sink.error(where, f"item {item} in '{key}' of {self.what} is read by "
                                       f"YAML as a number; quote it, e.g. {example}")
                continue
            if not isinstance(item, str) or not item.strip():
                self.sink.error(where, f"each item in '{key}' of {self.what} must be a "
                                       f"non-empty string, not {_kind(item)}; e.g. {example}")
                continue
            items.append((item, where))
        return items

    def map_(self, key: str, what: str, *, required: str | None = None) -> _Map | None:
        value = self.raw(key, required)
        if value is _MISSING:
            return None
        if not isinstance(value, CommentedMap):
            self._wrong(key, value, "a mapping (key: value lines)")
            return None
        return _Map(value, self.file, self.loc(key).line, what, self.sink)

    def maps(self, key: str, what: str, *, example: str) -> Iterator[_Map]:
        """The mappings of a list under ``key`` (a list of entries)."""
        value = self.raw(key, None)
        if value is _MISSING or value is None:
            return
        if not isinstance(value, CommentedSeq):
            self._wrong(key, value, f"a list of entries, e.g. {example}")
            return
        for index, item in enumerate(value):
            where = self.item_loc(key, index)
            if not isinstance(item, CommentedMap):
                self.sink.error(where, f"each item in '{key}' must be a mapping "
                                       f"(key: value lines), not {_kind(item)}")
                continue
            yield _Map(item, self.file, where.line, what, self.sink)


# Bounds on what one catalog file may ask of the loader. A hand-written catalog file is a few
# KiB, a few levels deep and uses aliases for a handful of repeated lists; these leave ample
# room for that while keeping the YAML library (pure Python, recursive, slow on huge comment
# blocks) within a second and a few MB per file, whatever the file holds.
MAX_FILE_BYTES = 64 * 1024
MAX_DEPTH = 64
MAX_ALIAS_NODES = 100_000


class _Refused(MarkedYAMLError):
    """A file the loader refuses (beyond a bound, or a value that cannot be converted), at a
    line; ``problem`` is the user-facing reason."""


_TOO_DEEP = (f"nesting is deeper than {MAX_DEPTH} levels; a catalog file needs only a few, "
             "so close the open brackets or indents")


class _BoundedScanner(RoundTripScanner):
    """ruamel's scanner, refusing brackets nested beyond MAX_DEPTH as it meets them: it keeps a
    pending simple key per open bracket and rescans them all for every token."""

    def fetch_flow_collection_start(self, TokenClass: Any, to_push: str) -> None:
        if self.flow_level >= MAX_DEPTH:
            raise _Refused(None, None, _TOO_DEEP, self.reader.get_mark())
        super().fetch_flow_collection_start(TokenClass, to_push)


class _BoundedComposer(Composer):
    """ruamel's composer, refusing deep nesting (its construction recurses per level) and
    alias expansion beyond MAX_ALIAS_NODES nodes (an alias is shared when built, but anything
    that walks the value, such as ruamel's own duplicate-key message, expands it)."""

    def compose_document(self) -> Any:
        self.levels = 0
        self.expanded = 0
        self.sizes: dict[int, int] = {}  # id(node) -> nodes in it, aliases expanded
        return super().compose_document()

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.parser.peek_event()
        if isinstance(event, AliasEvent):
            node = super().compose_node(parent, index)
            size = self.sizes.get(id(node))
            if size is None:
                raise _Refused(None, None, f"alias *{event.anchor} refers to a value that "
                               "contains it (a recursive alias); write the value out instead",
                               event.start_mark)
            self.expanded += size
            if self.expanded > MAX_ALIAS_NODES:
                raise _Refused(None, None, f"aliases expand to more than {MAX_ALIAS_NODES:,} "
                               "values (an alias bomb?); write the values out or use fewer "
                               "nested aliases", event.start_mark)
            return node
        self.levels += 1
        if self.levels > MAX_DEPTH:
            raise _Refused(None, None, _TOO_DEEP, event.start_mark)
        before = self.expanded
        self.expanded += 1
        node = super().compose_node(parent, index)
        self.levels -= 1
        self.sizes[id(node)] = self.expanded - before
        return node


class _LocatingConstructor(RoundTripConstructor):
    """ruamel's constructor, giving the line of a value it fails to convert: it raises a bare
    ValueError for 2027-02-30, for an integer beyond Python's 4300-digit conversion limit and
    for explicit tags such as '!!int 1.5'."""

    def construct_non_recursive_object(self, node: Any, tag: str | None = None) -> Any:
        try:
            return super().construct_non_recursive_object(node, tag)
        except (ValueError, OverflowError) as err:
            kind = str(node.tag).rsplit(":", 1)[-1]
            problem = str(err)
            if kind == "timestamp":
                hint = "write dates as real YYYY-MM-DD dates"
            elif kind == "int" and len(str(node.value)) > 4300:
                problem, hint = "more than 4300 digits", "quote it if it is text"
            else:
                hint = "fix the value or quote it"
            raise _Refused(None, None, f"invalid value: {problem}; {hint}", node.start_mark) from None


class _Reader:
    def __init__(self, sink: _Sink):
        self.sink = sink
        self.yaml = YAML(typ="rt")
        self.yaml.Scanner = _BoundedScanner
        self.yaml.Composer = _BoundedComposer
        self.yaml.Constructor = _LocatingConstructor

    def document(self, path: Path, top: Sequence[str], what: str) -> _Map | None:
        """The top-level mapping of a file (empty for a comments-only file); None on an error."""
        file = display_path(path)
        text = self._text(path, file)
        if text is None:
            return None
        try:
            data = self.yaml.load(text)
        except DuplicateKeyError as err:
            key = re.search(r'duplicate key "([^"]*)"', str(err.problem))
            name = f"'{key.group(1)}' " if key else ""
            self.sink.error(_mark(file, err), f"key {name}appears twice in the same mapping; "
                                              "keep one of them")
            return None
        except _Refused as err:
            self.sink.error(_mark(file, err), str(err.problem))
            return None
        except MarkedYAMLError as err:
            mark = err.problem_mark or err.context_mark
            column = f" (column {mark.column + 1})" if mark else ""
            self.sink.error(_mark(file, err), f"invalid YAML: {err.problem or err.context}"
                                              f"{column}; fix the syntax")
            return None
        except YAMLError:
            self.sink.error(Location(file, 0), "invalid YAML; fix the syntax")
            return None
        except Exception as err:  # noqa: BLE001 - see below
            # The last resort around a large third-party parser, which has failed in other ways
            # on odd input: one file's problem is reported like the others, never a traceback.
            self.sink.error(Location(file, 0), f"invalid YAML: the YAML reader failed "
                                               f"({type(err).__name__}: {err}); fix the syntax")
            return None
        if data is None:
            data = CommentedMap()
        if not isinstance(data, CommentedMap):
            self.sink.error(Location(file, 1), f"must be a mapping with the keys "
                                               f"{', '.join(top)}, not {_kind(data)}; "
                                               "see docs/catalog.md")
            return None
        doc = _Map(data, file, 1, what, self.sink)
        doc.check_keys(top)
        return doc

    def _text(self, path: Path, file: str) -> str | None:
        """The file's text, within MAX_FILE_BYTES and holding only characters YAML allows."""
        try:
            with path.open("rb") as stream:
                data = stream.read(MAX_FILE_BYTES + 1)
        except OSError as err:
            self.sink.error(Location(file, 0), f"cannot be read ({err.strerror}); "
                                               "check that it is a readable file")
            return None
        if len(data) > MAX_FILE_BYTES:
            line, _ = _line_column(data, MAX_FILE_BYTES)
            self.sink.error(Location(file, line), f"the file goes beyond {MAX_FILE_BYTES // 1024} "
                                                  "KiB, the limit for one catalog file, on this "
                                                  "line; split it into several files")
            return None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            line, column = _line_column(data, err.start)
            self.sink.error(Location(file, line), f"is not UTF-8 text: column {column} holds "
                                                  f"byte 0x{data[err.start]:02x}; save it as UTF-8")
            return None
        bad = _NOT_YAML_RE.search(text)
        if bad is not None:
            line, column = _line_column(text, bad.start())
            code = ord(bad.group())
            name = "a NUL byte" if code == 0 else "a control character"
            self.sink.error(Location(file, line), f"column {column} holds {name} (U+{code:04X}), "
                                                  "which YAML does not allow; remove it (is the "
                                                  "file binary, or saved as UTF-16?)")
            return None
        return text


# The characters YAML 1.2 allows in a stream (its c-printable production); ruamel refuses the
# others without a line, so they are found first.
_NOT_YAML_RE = re.compile(r"[^\x09\x0A\x0D\x20-\x7E\x85\xA0-\uD7FF\uE000-\uFFFD"
                          r"\U00010000-\U0010FFFF]")


def _line_column(text: str | bytes, offset: int) -> tuple[int, int]:
    """1-based line and column of ``offset`` in ``text``."""
    newline = "\n" if isinstance(text, str) else b"\n"
    start = text.rfind(newline, 0, offset) + 1  # type: ignore[arg-type]
    return text.count(newline, 0, offset) + 1, offset - start + 1  # type: ignore[arg-type]


def _mark(file: str, err: MarkedYAMLError) -> Location:
    mark = err.problem_mark or err.context_mark
    return Location(file, mark.line + 1 if mark else 0)


# --- reading each file ---------------------------------------------------------------------


def _yaml_files(directory: Path, sink: _Sink) -> list[Path]:
    if not directory.is_dir():
        return []
    for stray in sorted(directory.glob("*.yml")):
        sink.warning(Location(display_path(stray), 0),
                     "is ignored: catalog files end in .yaml; rename it")
    return sorted(p for p in directory.glob("*.yaml") if p.is_file())


def _read_all(draft: Draft, reader: _Reader) -> None:
    sink = reader.sink
    _read_signers(draft, sink)
    settings_path = draft.root / "settings.yaml"
    if settings_path.is_file():
        doc = reader.document(settings_path, _SETTINGS_KEYS, "settings.yaml")
        draft.settings = _read_settings(doc)
    else:
        sink.error(Location(draft.path("settings.yaml"), 0),
                   "is missing; create it with at least 'target: {registry: HOST}' "
                   "(see docs/catalog.md)")
    default_policy = draft.settings.value.default_policy if draft.settings else "default"

    for path in _yaml_files(draft.root / "images", sink):
        doc = reader.document(path, ("images",), path.name)
        if doc is not None:
            for entry in doc.maps("images", "image entry", example="images: [{source: nginx}]"):
                image = _read_image(entry, default_policy)
                if image is not None:
                    draft.images.append(image)

    for path in _yaml_files(draft.root / "policies", sink):
        errors_before = sum(d.level == "error" for d in sink.items)
        doc = reader.document(path, _POLICY_KEYS, f"policy '{path.stem}'")
        if doc is not None and not doc.data:
            # Fail closed: a policy without rules would promote everything.
            sink.error(doc.loc(), "is empty; a policy must say what it allows, e.g. "
                                  "'vulnerabilities: {max: {critical: 0}}'")
        # Recorded even when broken, so that images using it are not reported a second time.
        draft.policies[path.stem] = (_read_policy(doc, path.stem) if doc is not None else
                                     Located(Policy(path.stem),
                                             {"": Location(display_path(path), 0)}))
        if sum(d.level == "error" for d in sink.items) > errors_before:
            draft.broken_policies.add(path.stem)

    for path in _yaml_files(draft.root / "exceptions", sink):
        doc = reader.document(path, ("exceptions",), path.name)
        if doc is not None:
            for entry in doc.maps("exceptions", "exception",
                                  example="exceptions: [{vulnerability: CVE-…, …}]"):
                exception = _read_exception(entry)
                if exception is not None:
                    draft.exceptions.append(exception)

    for path in _yaml_files(draft.root / "approvals", sink):
        doc = reader.document(path, ("approvals",), path.name)
        if doc is not None:
            for entry in doc.maps("approvals", "approval",
                                  example="approvals: [{image: nginx, digest: sha256:…}]"):
                approval = _read_approval(entry)
                if approval is not None:
                    draft.approvals.append(approval)

    access_path = draft.root / "access.yaml"
    if access_path.is_file():
        doc = reader.document(access_path, ("groups",), "access.yaml")
        if doc is not None:
            draft.access = _read_access(doc)


_AUTH_KEYS = ("username_env", "password_env")
_TARGET_KEYS = ("registry", "quarantine", "approved", "tls_verify", "ca_dir", "auth")
_SOURCE_KEYS = ("endpoint", "tls_verify", "ca_dir", "auth", "min_remaining_pulls", "concurrency")
# More requests in flight than this gain nothing at any round trip measured (benchmarks/
# noop_discovery.py) and look like abuse to a registry's rate limiter.
MAX_CONCURRENCY = 64
_REPLICA_KEYS = ("registry", "tls_verify", "ca_dir", "auth")
_SIGNING_KEYS = ("signer", "key_env", "passphrase_env")
_SETTINGS_KEYS = ("target", "sources", "replicas", "signing", "defaults", "content_admins",
                  "webhooks")


def _read_settings(doc: _Map | None) -> Located[Settings] | None:
    if doc is None:
        return None
    target_map = doc.map_("target", "target", required="add 'target: {registry: HOST}', "
                                                      "the trusted registry to promote into")
    target = _read_target(target_map) if target_map else None

    sources: dict[str, Source] = {}
    sources_map = doc.map_("sources", "sources")
    if sources_map is not None:
        for host in sources_map.data:
            source = _read_source(sources_map, host)
            if source is not None:
                sources[source.host] = source

    replicas: list[RegistryEndpoint] = []
    for replica in doc.maps("replicas", "replica",
                            example="replicas: [{registry: registry.eu.example.com}]"):
        replica.check_keys(_REPLICA_KEYS)
        registry = _registry(replica, "registry", required="add 'registry: HOST[:PORT]'")
        auth = _read_auth(replica)
        if registry is not None:
            ca_dir = _ca_dir(replica, "registry", registry, f"replicas[{len(replicas)}]")
            replicas.append(RegistryEndpoint(registry, replica.bool_("tls_verify", True), auth,
                                             ca_dir=ca_dir))

    signing = Signing()
    signing_map = doc.map_("signing", "signing")
    if signing_map is not None:
        signing_map.check_keys(_SIGNING_KEYS)
        signer = signing_map.str_("signer") or signing.signer
        if not is_valid_signer_name(signer):
            signing_map.error("signer", _bad_signer_name(signer))
        signing = Signing(signer=signer,
                          key_env=_env_name(signing_map, "key_env") or signing.key_env,
                          passphrase_env=_env_name(signing_map, "passphrase_env")
                          or signing.passphrase_env)

    default_policy = "default"
    defaults_map = doc.map_("defaults", "defaults")
    if defaults_map is not None:
        defaults_map.check_keys(("policy",))
        default_policy = defaults_map.str_("policy") or default_policy

    admins = _owners(doc, "content_admins")
    webhooks = [hook for m in doc.maps("webhooks", "webhook",
                                       example="webhooks: [{url_env: SLACK_WEBHOOK_URL, events: [held]}]")
                if (hook := _read_webhook(m)) is not None]
    at = doc.located_keys()
    if signing_map is not None:
        at["signing.signer"] = signing_map.loc("signer")
    if defaults_map is not None:
        at["defaults.policy"] = defaults_map.loc("policy")
    # A broken target is already reported; the rest is still needed by the cross-file checks.
    settings = Settings(target=target or Target(registry=""), sources=sources, replicas=tuple(replicas),
                        signing=signing, default_policy=default_policy,
                        content_admins=admins, webhooks=tuple(webhooks), location=doc.loc())
    return Located(settings, at)


def _read_webhook(m: _Map) -> Webhook | None:
    m.check_keys(("url_env", "events"))
    if "url_env" not in m.data:
        m.error("", "webhook has no 'url_env'; name the environment variable that holds its "
                    "URL, e.g. url_env: SLACK_WEBHOOK_URL (the URL is a secret: never write it here)")
    url_env = _env_name(m, "url_env")
    events = []
    for event, where in m.str_list("events", required="add 'events: [held, flagged, demoted, "
                                   "failed]', what the webhook is told about",
                                   example="events: [held, failed]") or []:
        if event in WEBHOOK_EVENTS:
            events.append(event)
        else:
            m.sink.error(where, f"webhook event '{event}' is not one of {', '.join(WEBHOOK_EVENTS)}")
    if url_env is None or not events:
        return None
    return Webhook(url_env=url_env, events=tuple(dict.fromkeys(events)), location=m.loc())


def _read_target(m: _Map) -> Target | None:
    m.check_keys(_TARGET_KEYS)
    registry = _registry(m, "registry", required="add 'registry: HOST[:PORT]', the trusted "
                                                 "registry to promote into")
    quarantine = _prefix(m, "quarantine", "quarantine")
    approved = _prefix(m, "approved", "approved")
    if quarantine == approved:
        m.error("approved", "'quarantine' and 'approved' must be different repository "
                            "prefixes, or scanned and unscanned content would mix")
    auth = _read_auth(m)
    if registry is None:
        return None
    return Target(registry=registry, quarantine=quarantine, approved=approved,
                  tls_verify=m.bool_("tls_verify", True), auth=auth,
                  ca_dir=_ca_dir(m, "registry", registry, "target"))


def _read_source(sources: _Map, host: Any) -> Source | None:
    where = sources.loc(host)
    if not isinstance(host, str) or not is_valid_domain(host):
        sources.sink.error(where, f"'{host}' under sources is not a registry host; write the "
                                  "host as references use it, e.g. docker.io or ghcr.io")
        return None
    if host.startswith("["):
        sources.sink.error(where, _ipv6_refused(f"'{host}' under sources"))
        return None
    m = sources.map_(host, f"source '{host}'")
    if m is None:
        for d in cert_dirs(host, None, f"sources.{host}"):
            for problem in problems(d):
                sources.sink.error(where, problem)
        return Source(host=_canonical_host(host))
    m.check_keys(_SOURCE_KEYS)
    endpoint = _registry(m, "endpoint")
    auth = _read_auth(m)
    concurrency = m.int_("concurrency", minimum=1)
    if concurrency is not None and concurrency > MAX_CONCURRENCY:
        m.error("concurrency", f"'concurrency' in {m.what} must be at most {MAX_CONCURRENCY}, "
                               f"not {concurrency}: more requests in flight gain nothing and a "
                               "registry's rate limiter counts them against us")
        concurrency = None
    return Source(host=_canonical_host(host), endpoint=endpoint,
                  tls_verify=m.bool_("tls_verify", True), auth=auth,
                  min_remaining_pulls=m.int_("min_remaining_pulls", minimum=0),
                  ca_dir=_ca_dir(m, "endpoint" if endpoint else "", endpoint or host,
                                 f"sources.{_canonical_host(host)}"),
                  concurrency=concurrency)


def _canonical_host(host: str) -> str:
    return DOCKER_HUB if host == "index.docker.io" else host


def _registry(m: _Map, key: str, *, required: str | None = None) -> str | None:
    value = m.str_(key, required=required)
    if value is None:
        return None
    if "://" in value:
        m.error(key, f"'{key}' must be HOST[:PORT] without a scheme; remove "
                     f"'{value.split('://', 1)[0]}://'")
        return None
    if not is_valid_domain(value):
        m.error(key, f"'{key}' '{value}' is not a registry host; write HOST[:PORT], "
                     "e.g. registry.example.com or 127.0.0.1:5000")
        return None
    if value.startswith("["):
        m.error(key, _ipv6_refused(f"'{key}' '{value}'"))
        return None
    return value


def _ipv6_refused(what: str) -> str:
    # Checked against the real skopeo in tests/e2e/test_registry_config_e2e.py, which says when to
    # lift this.
    return (f"{what} is an IPv6 literal, which syncer refuses: skopeo 1.9's reference parser "
            "(containers/image docker/reference) rejects bracketed hosts with 'invalid "
            "reference format', so the copy would fail after discovery had planned it; give "
            "the registry a host name that resolves to the address (DNS or /etc/hosts) and "
            "write that name")


def _ca_dir(m: _Map, host_key: str, address: str, what: str) -> str | None:
    """``ca_dir`` of one registry, with every problem of it and of the certs.d directories
    that apply to ``address`` reported: a CA file that does not parse, a client certificate
    without its key (at the line of ``ca_dir``, or of the registry for a certs.d directory)."""
    value = m.str_("ca_dir")
    for d in cert_dirs(address, value, what):
        for problem in problems(d):
            m.error("ca_dir" if value and d.path == value else host_key, problem)
    return value


def _prefix(m: _Map, key: str, default: str) -> str:
    value = m.str_(key)
    if value is None:
        return default
    if not is_valid_repository_path(value):
        m.error(key, f"'{key}' '{value}' is not a repository path; use lowercase letters, "
                     "digits, '.', '_', '-' and '/'")
        return default
    return value


def _read_auth(parent: _Map) -> Auth:
    m = parent.map_("auth", f"auth of {parent.what}")
    if m is None:
        return Auth()
    m.check_keys(_AUTH_KEYS)
    present = [key for key in _AUTH_KEYS if key in m.data]
    if len(present) == 1:
        missing = next(key for key in _AUTH_KEYS if key not in present)
        m.error("", f"{m.what} names only one credential variable; add '{missing}'")
    return Auth(username_env=_env_name(m, "username_env"),
                password_env=_env_name(m, "password_env"))


def _env_name(m: _Map, key: str) -> str | None:
    value = m.raw(key, None)
    if value is _MISSING:
        return None
    # The value is never shown: if someone pasted a secret here, it must not reach the log.
    if not isinstance(value, str) or _ENV_NAME_RE.fullmatch(value) is None:
        m.error(key, f"'{key}' must be the name of an environment variable (letters, digits "
                     "and '_', not starting with a digit) that holds the secret, never the "
                     "secret itself")
        return None
    return value


def _owners(m: _Map, key: str) -> tuple[str, ...]:
    items = m.str_list(key, example=f'{key}: ["@acme/web"]') or []
    owners = []
    for owner, where in items:
        if _OWNER_RE.fullmatch(owner) is None:
            m.sink.error(where, f"owner '{owner}' in '{key}' is not a GitHub owner; write "
                                "@user, @org/team or an e-mail address")
            continue
        owners.append(owner)
    return tuple(owners)


def _bad_signer_name(name: str) -> str:
    return (f"signer name '{name}' is invalid: use letters, digits, '.', '_' and '-', "
            "starting with a letter or digit")


_IMAGE_KEYS = ("source", "tags", "match", "exclude", "newest", "platforms", "policy", "name",
               "owners")


def _read_image(m: _Map, default_policy: str) -> Located[ImageEntry] | None:
    m.check_keys(_IMAGE_KEYS)
    source = _image_source(m)
    tags, tag_locations = [], []
    for tag, where in m.str_list("tags", example='tags: ["1.27.3"]') or []:
        if is_valid_tag(tag):
            tags.append(tag)
            tag_locations.append((tag, where))
        else:
            m.sink.error(where, f"tag '{tag}' is invalid: up to 128 letters, digits, '_', '.' "
                                "or '-', not starting with '.' or '-'")
    match = m.str_("match", example="match: '^1\\.27\\.\\d+$'")
    if match is not None:
        _regex(m, m.loc("match"), "match", match)
    exclude = []
    for pattern, where in m.str_list("exclude", example="exclude: ['-rc']") or []:
        if _regex(m, where, "exclude", pattern):
            exclude.append(pattern)
    if "tags" not in m.data and "match" not in m.data:
        m.error("", "image entry has neither 'tags' nor 'match'; list tags, e.g. "
                    "tags: [\"1.27.3\"], or give a match regex, e.g. match: '^1\\.27\\.\\d+$'")
    platforms = []
    for platform, where in m.str_list("platforms", example="platforms: [linux/amd64]") or []:
        if _PLATFORM_RE.fullmatch(platform):
            platforms.append(platform)
        else:
            m.sink.error(where, f"platform '{platform}' is not os/arch[/variant]; write it "
                                "like linux/amd64 or linux/arm64/v8")
    newest = m.int_("newest", minimum=1)
    if "match" not in m.data:
        # Explicit tags bypass exclude and newest (syncer.core.selection), so alone they do nothing.
        for key in ("exclude", "newest"):
            if key in m.data:
                m.sink.warning(m.loc(key), f"'{key}' only filters tags found by 'match', and "
                                           "this entry has none; add 'match' or remove it")
    policy = m.str_("policy") or default_policy
    owners = _owners(m, "owners")
    explicit = m.str_("name")
    if source is None:
        return None
    name = explicit if explicit is not None else parse_reference(source).familiar_path
    try:
        safe_relpath(name)
    except ValueError as err:
        m.error("name" if explicit is not None else "source",
                f"{err}; image names become paths under reports/ and repositories under "
                "quarantine/ and approved/, so set 'name' to a lowercase repository path")
        return None
    entry = ImageEntry(source=source, name=name, tags=tuple(tags), match=match,
                       exclude=tuple(exclude), newest=newest, platforms=tuple(platforms),
                       policy=policy, owners=owners, location=m.loc(),
                       tag_locations=tuple(tag_locations))
    return Located(entry, m.located_keys())


def _image_source(m: _Map) -> str | None:
    text = m.str_("source", required="add 'source: docker.io/library/NAME', the upstream "
                                     "repository", example="source: nginx")
    if text is None:
        return None
    try:
        ref = parse_reference(text)
    except ValueError as err:
        m.error("source", f"source '{text}' is not a valid image reference: {err}; write it "
                          "like docker.io/library/nginx or bitnami/redis")
        return None
    if ref.registry.startswith("["):
        m.error("source", _ipv6_refused(f"source '{text}'"))
        return None
    if ref.tag is not None or ref.digest is not None:
        part = f"tag '{ref.tag}'" if ref.tag is not None else "a digest"
        m.error("source", f"source '{text}' includes {part}; write source: {ref.name} and "
                          "list tags under 'tags' (digests are resolved by the pipeline)")
        return None
    return ref.name


def _regex(m: _Map, where: Location, key: str, pattern: str) -> bool:
    try:
        compile_pattern(pattern)
    except PatternError as err:
        m.sink.error(where, f"'{key}' regex '{pattern}' is refused: {err}; fix the pattern "
                            "(RE2 syntax: no backreferences or lookaround, so that matching "
                            "takes linear time; see docs/catalog.md)")
        return False
    return True


_POLICY_KEYS = ("vulnerabilities", "licenses", "max_age_days", "approval", "signers",
                "on_regression", "unassessed", "teams")


def _read_policy(m: _Map, name: str) -> Located[Policy]:
    maximum: dict[Severity, int] = {}
    ignore_unfixed = False
    vulns = m.map_("vulnerabilities", f"vulnerabilities of policy '{name}'")
    if vulns is not None:
        vulns.check_keys(("max", "ignore_unfixed"))
        ignore_unfixed = vulns.bool_("ignore_unfixed", False)
        counts = vulns.map_("max", f"vulnerabilities.max of policy '{name}'")
        if counts is not None:
            counts.check_keys(_SEVERITIES)
            for severity in _SEVERITIES:
                count = counts.int_(severity, minimum=0)
                if count is not None:
                    maximum[Severity.parse(severity)] = count
    deny: list[str] = []
    licenses = m.map_("licenses", f"licenses of policy '{name}'")
    if licenses is not None:
        licenses.check_keys(("deny",))
        deny = [item for item, _ in licenses.str_list("deny", example="deny: [AGPL-3.0-only]")
                or []]
    signers = []
    for signer, where in m.str_list("signers", example="signers: [ci]") or []:
        if is_valid_signer_name(signer):
            signers.append(signer)
        else:
            m.sink.error(where, _bad_signer_name(signer))
    policy = Policy(
        name=name, max=maximum, ignore_unfixed=ignore_unfixed, deny_licenses=tuple(deny),
        max_age_days=m.int_("max_age_days", minimum=1),
        approval=m.choice("approval", APPROVAL_MODES, "auto"),
        signers=tuple(signers),
        on_regression=m.choice("on_regression", REGRESSION_ACTIONS, "flag"),
        unassessed=m.choice("unassessed", UNASSESSED_ACTIONS, "hold"),
        teams=_owners(m, "teams"),
        location=m.loc())
    at = m.located_keys()
    listed = m.data.get("signers")
    for index, signer in enumerate(listed if isinstance(listed, list) else []):
        if isinstance(signer, str):
            at.setdefault(f"signers.{signer}", m.item_loc("signers", index))
    return Located(policy, at)


_EXCEPTION_KEYS = ("vulnerability", "images", "expires", "reason")


def _read_exception(m: _Map) -> Located[VulnException] | None:
    m.check_keys(_EXCEPTION_KEYS)
    vulnerability = m.str_("vulnerability", required="add 'vulnerability: CVE-…', the id "
                                                     "Trivy reports")
    if vulnerability is not None and any(c.isspace() for c in vulnerability):
        m.error("vulnerability", f"vulnerability '{vulnerability}' contains whitespace; write "
                                 "one id as Trivy reports it, e.g. CVE-2024-1234")
        vulnerability = None
    patterns = m.str_list("images", required="add 'images: [NAME, …]', the catalog names "
                                             "(globs allowed) it applies to",
                          example='images: ["nginx", "redis*"]')
    if patterns == []:
        m.error("images", "'images' is empty; name the catalog images this exception covers")
    expires = m.date_("expires", required="add 'expires: YYYY-MM-DD'; every exception must "
                                          "end")
    reason = m.str_("reason", required="add 'reason: …', why the risk is accepted")
    if vulnerability is None or not patterns or expires is None:
        return None
    # A missing reason is already reported; expiry and patterns are still cross-checked.
    exception = VulnException(vulnerability=vulnerability,
                              images=tuple(p for p, _ in patterns), expires=expires,
                              reason=reason or "", location=m.loc())
    at = m.located_keys()
    for pattern, where in patterns:
        at.setdefault(f"images.{pattern}", where)
    return Located(exception, at)


def _read_approval(m: _Map) -> Located[Approval] | None:
    m.check_keys(("image", "digest", "by", "reason"))
    image = m.str_("image", required="add 'image: NAME', the catalog name it approves")
    digest = m.str_("digest", required="add 'digest: sha256:…', the exact digest approved")
    if digest is not None and not is_sha256_digest(digest):
        m.error("digest", f"digest '{digest}' is not sha256: followed by 64 lowercase hex "
                          "digits; copy it from the image's report")
    by = m.str_("by", required="add 'by: \"@user\"', who approved it")
    reason = m.str_("reason") or ""
    if image is None:
        return None
    # Missing or malformed fields are already reported; the image is still cross-checked.
    return Located(Approval(image=image, digest=digest or "", by=by or "", reason=reason,
                            location=m.loc()), m.located_keys())


def _read_access(doc: _Map) -> list[Located[AccessGroup]]:
    groups_map = doc.map_("groups", "groups")
    if groups_map is None:
        return []
    groups = []
    for name in groups_map.data:
        m = groups_map.map_(name, f"group '{name}'")
        if m is None:
            continue
        m.check_keys(("members", "pull", "push"))
        # The anonymous group applies to everyone, so it alone needs no members.
        needs_members = None if name == "anonymous" else "add 'members: [USER, …]'"
        members = [member for member, _ in
                   m.str_list("members", required=needs_members, example="members: [dev1, dev2]") or []]
        patterns: dict[str, tuple[str, ...]] = {}
        for key in ("pull", "push"):
            globs = []
            for glob, where in m.str_list(key, example=f'{key}: ["approved/*"]') or []:
                if _REPO_GLOB_RE.fullmatch(glob):
                    globs.append(glob)
                else:
                    m.sink.error(where, f"'{key}' pattern '{glob}' may only contain lowercase "
                                        "letters, digits, '.', '_', '-', '/' and '*'")
            patterns[key] = tuple(globs)
        groups.append(Located(AccessGroup(name=str(name), members=tuple(members),
                                          pull=patterns["pull"], push=patterns["push"],
                                          location=m.loc()), m.located_keys()))
    return groups


def _read_signers(draft: Draft, sink: _Sink) -> None:
    for stray in sorted(draft.root.rglob("*.key")):
        sink.error(Location(display_path(stray), 0),
                   "a private key file is inside the catalog; delete it, rotate the key, "
                   "and commit only the public half (signers/NAME.pub)")
    directory = draft.root / "signers"
    if not directory.is_dir():
        return
    for path in sorted(directory.glob("*.pub")):
        name, file = path.stem, display_path(path)
        draft.signer_files.add(name)
        if not is_valid_signer_name(name):
            sink.error(Location(file, 0), _bad_signer_name(name) + "; rename the file")
            continue
        try:
            with path.open("rb") as stream:
                data = stream.read(MAX_FILE_BYTES + 1)
        except OSError as err:
            sink.error(Location(file, 0), f"cannot be read ({err.strerror})")
            continue
        if len(data) > MAX_FILE_BYTES:
            sink.error(Location(file, 0), f"is larger than {MAX_FILE_BYTES // 1024} KiB; a public "
                                          f"key is a few hundred bytes: write the one from "
                                          f"'syncer keygen {name}'")
            continue
        if b"PRIVATE KEY" in data:
            sink.error(Location(file, 0), "contains a private key; delete it, rotate the key, "
                                          "and commit only the public half")
            continue
        try:
            load_pem_public_key(data)
            pem = data.decode("ascii")
        except (ValueError, TypeError):  # UnicodeDecodeError is a ValueError
            sink.error(Location(file, 0), "is not a PEM public key; replace it with the "
                                          f"public half written by 'syncer keygen {name}'")
            continue
        draft.signers[name] = pem


# --- checks across files -------------------------------------------------------------------


def check_policies_defined(draft: Draft, today: date) -> Iterator[Diagnostic]:
    defined = sorted(draft.policies)

    def missing(policy: str, where: Location) -> Diagnostic:
        others = (f"use one of: {', '.join(defined)}" if defined
                  else "no policies are defined yet")
        return Diagnostic(where, f"policy '{policy}' is not defined in "
                                 f"{draft.path('policies')}/; define "
                                 f"{draft.path('policies', policy + '.yaml')} or {others}")

    settings = draft.settings
    if settings is not None and settings.value.default_policy not in draft.policies:
        yield missing(settings.value.default_policy, settings.where("defaults.policy"))
    for image in draft.images:
        explicit = "policy" in image.at
        if image.value.policy not in draft.policies and explicit:
            yield missing(image.value.policy, image.where("policy"))


def check_policy_choices(draft: Draft, today: date) -> Iterator[Diagnostic]:
    """A policy other than the default is named only in files whose owners it lists in
    ``teams``. GitHub takes a review from any one code owner of a file, and an image file
    belongs to its entries' owners as well as the content admins, so without this a team
    alone could move its images to a weaker policy; a policy's ``teams`` are in
    ``policies/``, which only the content admins own."""
    settings = draft.settings
    if settings is None:
        return
    admins = set(settings.value.content_admins)
    default = settings.value.default_policy
    file_owners: dict[str, set[str]] = {}
    for image in draft.images:
        file_owners.setdefault(image.where().file, set()).update(image.value.owners)
    for image in draft.images:
        chosen = draft.policies.get(image.value.policy)
        # A broken policy file is reported already; who may use it is read once it is fixed.
        if ("policy" not in image.at or chosen is None or image.value.policy == default
                or image.value.policy in draft.broken_policies):
            continue
        file = image.where().file
        barred = sorted(file_owners[file] - admins - set(chosen.value.teams))
        if barred:
            yield Diagnostic(image.where("policy"),
                             f"policy '{image.value.policy}' is not open to {', '.join(barred)}, "
                             f"who own{'s' if len(barred) == 1 else ''} {file} and could approve "
                             "this change without the content admins; a content admin adds "
                             f"them to 'teams' in {draft.path('policies', image.value.policy + '.yaml')}, "
                             "or remove 'policy' to use the default")


def check_signers_have_keys(draft: Draft, today: date) -> Iterator[Diagnostic]:
    def missing(signer: str, where: Location) -> Diagnostic:
        return Diagnostic(where, f"signer '{signer}' has no public key; add "
                                 f"{draft.path('signers', signer + '.pub')} "
                                 f"(syncer keygen {signer}) or remove the signer")

    settings = draft.settings
    if settings is not None:
        signer = settings.value.signing.signer
        if is_valid_signer_name(signer) and signer not in draft.signer_files:
            yield missing(signer, settings.where("signing.signer"))
    for policy in draft.policies.values():
        for signer in policy.value.signers:
            if signer not in draft.signer_files:
                yield missing(signer, policy.where(f"signers.{signer}"))


def check_unique_names(draft: Draft, today: date) -> Iterator[Diagnostic]:
    first: dict[str, Located[ImageEntry]] = {}
    for image in draft.images:
        entry = image.value
        earlier = first.setdefault(entry.name, image)
        if earlier is image:
            continue
        where = image.where("name") if "name" in image.at else image.where("source")
        if earlier.value.source == entry.source:
            yield Diagnostic(where, f"{entry.source} is listed twice as '{entry.name}' (also "
                                    f"at {earlier.where()}); merge the two entries into one")
        else:
            yield Diagnostic(where, f"name '{entry.name}' is already used by "
                                    f"{earlier.value.source} at {earlier.where()}; give one "
                                    "of them a different 'name'")


def check_report_paths(draft: Draft, today: date) -> Iterator[Diagnostic]:
    """Names whose files under reports/ would collide: a record (records/<name>/<tag>.yaml)
    or page (images/<name>.md) of one name is a directory of another's, so the run could
    write neither. Checked for any tag, since `match` finds tags nobody listed. Also tags of
    one entry that differ only in case: one file on a case-insensitive checkout (macOS)."""
    first: dict[str, Located[ImageEntry]] = {}
    for image in draft.images:
        first.setdefault(image.value.name, image)
    for image in first.values():
        name = image.value.name
        where = _name_where(image)
        parts = name.split("/")
        for k, part in enumerate(parts):
            if k and part.endswith(".yaml") and is_valid_tag(part[:-5]):
                other = first.get("/".join(parts[:k]))
                if other is not None:
                    yield Diagnostic(where, _collision(
                        name, f"the record of {other.value.name}:{part[:-5]} "
                        f"(reports/records/{other.value.name}/{part})", other))
            if k < len(parts) - 1 and part.endswith(".md") and part[:-3]:
                other = first.get("/".join([*parts[:k], part[:-3]]))
                if other is not None:
                    yield Diagnostic(where, _collision(
                        name, f"the page of {other.value.name} "
                        f"(reports/images/{other.value.name}.md)", other))
        folded: dict[str, list[str]] = {}
        for tag in dict.fromkeys(image.value.tags):  # a tag listed twice is one file
            folded.setdefault(tag.casefold(), []).append(tag)
        for same in (tags for tags in folded.values() if len(tags) > 1):
            yield Diagnostic(image.where("tags"), f"tags {', '.join(repr(t) for t in same)} of "
                             f"'{name}' differ only in case: their records would be one file "
                             "on a case-insensitive checkout; keep one of them")


def _name_where(image: Located[ImageEntry]) -> Location:
    return image.where("name") if "name" in image.at else image.where("source")


def _collision(name: str, theirs: str, other: Located[ImageEntry]) -> str:
    return (f"name '{name}' collides with {theirs}, defined at {_name_where(other)}: one would be "
            "a directory where the other is a file under reports/; give one of them a "
            "different 'name'")


def check_exceptions(draft: Draft, today: date) -> Iterator[Diagnostic]:
    names = [i.value.name for i in draft.images]
    for exception in draft.exceptions:
        value = exception.value
        if value.expires < today:
            yield Diagnostic(exception.where("expires"),
                             f"exception for {value.vulnerability} expired on "
                             f"{value.expires.isoformat()} and no longer applies; remove it "
                             "or extend it", "warning")
        unmatched = [p for p in value.images if not any(fnmatch.fnmatchcase(n, p) for n in names)]
        if unmatched and len(unmatched) == len(value.images):
            # It excepts nothing: a misspelt name, or an image removed since. Either way the
            # pull request does not do what its reviewers were told.
            yield Diagnostic(exception.where("images"),
                             f"exception for {value.vulnerability} matches no image in the "
                             f"catalog ({', '.join(repr(p) for p in unmatched)}); fix the names "
                             "or remove the exception")
            continue
        for pattern in unmatched:
            yield Diagnostic(exception.where(f"images.{pattern}"),
                             f"'{pattern}' matches no image in the catalog; fix the name "
                             "or remove it", "warning")


def check_approvals(draft: Draft, today: date) -> Iterator[Diagnostic]:
    names = sorted({i.value.name for i in draft.images})
    for approval in draft.approvals:
        image = approval.value.image
        if image not in names:
            close = difflib.get_close_matches(image, names, n=1)
            hint = f"did you mean '{close[0]}'?" if close else "use a name from catalog/images/"
            yield Diagnostic(approval.where("image"),
                             f"approval names image '{image}', which is not in the catalog; "
                             f"{hint}")


# A user name as a token service sees it: htpasswd's `user:` field, no spaces.
_USER_RE = re.compile(r"[^\s:]+")


def check_access(draft: Draft, today: date) -> Iterator[Diagnostic]:
    """access.yaml as `syncer auth-server` will apply it: valid user names, and no grant that
    cannot work or that is silently ignored."""
    from syncer.core.access import ANONYMOUS_GROUP, glob_matches  # the rules the server applies

    groups = [g.value for g in draft.access]
    for located in draft.access:
        group = located.value
        for member in group.members:
            if not _USER_RE.fullmatch(member):
                yield Diagnostic(located.where("members"),
                                 f"group '{group.name}' lists '{member}', which is not a user name "
                                 "(no spaces or ':'); use the name people log in with")
        if group.name == ANONYMOUS_GROUP and group.members:
            yield Diagnostic(located.where("members"),
                             f"group '{ANONYMOUS_GROUP}' applies to everyone, logged in or not; "
                             "its members are ignored: remove them", level="warning")
        # The registry checks pull as well as push on every upload: a push without pull fails.
        for member in group.members:
            pulls = [p for g in groups if g.name == ANONYMOUS_GROUP or member in g.members for p in g.pull]
            for pattern in group.push:
                if not any(glob_matches(pull, pattern) for pull in pulls):
                    yield Diagnostic(located.where("push"),
                                     f"'{member}' may push {pattern} (group '{group.name}') but not "
                                     "pull it, and a registry checks both on every push: add the "
                                     f"pattern to 'pull' too", level="warning")


CHECKS: list[Check] = [
    check_policies_defined,
    check_policy_choices,
    check_signers_have_keys,
    check_unique_names,
    check_report_paths,
    check_exceptions,
    check_approvals,
    check_access,
]
