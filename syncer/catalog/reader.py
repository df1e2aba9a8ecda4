"""The bounded, typed YAML reader of catalog files: values that remember their line, typed
getters that report wrong or missing keys at file:line, and the bounds (size, depth, aliases)
that keep a hostile file from stalling the loader."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.composer import Composer
from ruamel.yaml.constructor import DuplicateKeyError, RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent
from ruamel.yaml.scanner import RoundTripScanner

from syncer.core.model import (
    Location,
)
from syncer.errors import Diagnostic

T = TypeVar("T")
_Choice = TypeVar("_Choice", bound=str)  # one of a Literal's strings (syncer.core.model)


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
            hint = f"did you mean '{close[0]}'?" if close else "remove it or use one of: " + ", ".join(known)
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
            self.error(key, f"'{key}' in {self.what} must be one of {', '.join(choices)}, not {shown}")
            return default
        return chosen

    def str_list(
        self, key: str, *, required: str | None = None, example: str
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
                self.sink.error(
                    where,
                    f"item {item} in '{key}' of {self.what} is read by "
                    f"YAML as a number; quote it, e.g. {example}",
                )
                continue
            if not isinstance(item, str) or not item.strip():
                self.sink.error(
                    where,
                    f"each item in '{key}' of {self.what} must be a "
                    f"non-empty string, not {_kind(item)}; e.g. {example}",
                )
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
                self.sink.error(
                    where, f"each item in '{key}' must be a mapping (key: value lines), not {_kind(item)}"
                )
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


_TOO_DEEP = (
    f"nesting is deeper than {MAX_DEPTH} levels; a catalog file needs only a few, "
    "so close the open brackets or indents"
)


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
                raise _Refused(
                    None,
                    None,
                    f"alias *{event.anchor} refers to a value that "
                    "contains it (a recursive alias); write the value out instead",
                    event.start_mark,
                )
            self.expanded += size
            if self.expanded > MAX_ALIAS_NODES:
                raise _Refused(
                    None,
                    None,
                    f"aliases expand to more than {MAX_ALIAS_NODES:,} "
                    "values (an alias bomb?); write the values out or use fewer "
                    "nested aliases",
                    event.start_mark,
                )
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
            self.sink.error(
                _mark(file, err), f"key {name}appears twice in the same mapping; keep one of them"
            )
            return None
        except _Refused as err:
            self.sink.error(_mark(file, err), str(err.problem))
            return None
        except MarkedYAMLError as err:
            mark = err.problem_mark or err.context_mark
            column = f" (column {mark.column + 1})" if mark else ""
            self.sink.error(
                _mark(file, err), f"invalid YAML: {err.problem or err.context}{column}; fix the syntax"
            )
            return None
        except YAMLError:
            self.sink.error(Location(file, 0), "invalid YAML; fix the syntax")
            return None
        except Exception as err:  # noqa: BLE001 - see below
            # The last resort around a large third-party parser, which has failed in other ways
            # on odd input: one file's problem is reported like the others, never a traceback.
            self.sink.error(
                Location(file, 0),
                f"invalid YAML: the YAML reader failed ({type(err).__name__}: {err}); fix the syntax",
            )
            return None
        if data is None:
            data = CommentedMap()
        if not isinstance(data, CommentedMap):
            self.sink.error(
                Location(file, 1),
                f"must be a mapping with the keys {', '.join(top)}, not {_kind(data)}; see docs/catalog.md",
            )
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
            self.sink.error(
                Location(file, 0), f"cannot be read ({err.strerror}); check that it is a readable file"
            )
            return None
        if len(data) > MAX_FILE_BYTES:
            line, _ = _line_column(data, MAX_FILE_BYTES)
            self.sink.error(
                Location(file, line),
                f"the file goes beyond {MAX_FILE_BYTES // 1024} "
                "KiB, the limit for one catalog file, on this "
                "line; split it into several files",
            )
            return None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            line, column = _line_column(data, err.start)
            self.sink.error(
                Location(file, line),
                f"is not UTF-8 text: column {column} holds byte 0x{data[err.start]:02x}; save it as UTF-8",
            )
            return None
        bad = _NOT_YAML_RE.search(text)
        if bad is not None:
            line, column = _line_column(text, bad.start())
            code = ord(bad.group())
            name = "a NUL byte" if code == 0 else "a control character"
            self.sink.error(
                Location(file, line),
                f"column {column} holds {name} (U+{code:04X}), "
                "which YAML does not allow; remove it (is the "
                "file binary, or saved as UTF-16?)",
            )
            return None
        return text


# The characters YAML 1.2 allows in a stream (its c-printable production); ruamel refuses the
# others without a line, so they are found first.
_NOT_YAML_RE = re.compile(
    r"[^\x09\x0A\x0D\x20-\x7E\x85\xA0-\uD7FF\uE000-\uFFFD"
    r"\U00010000-\U0010FFFF]"
)


def _line_column(text: str | bytes, offset: int) -> tuple[int, int]:
    """1-based line and column of ``offset`` in ``text``."""
    newline = "\n" if isinstance(text, str) else b"\n"
    start = text.rfind(newline, 0, offset) + 1  # type: ignore[arg-type]
    return text.count(newline, 0, offset) + 1, offset - start + 1  # type: ignore[arg-type]


def _mark(file: str, err: MarkedYAMLError) -> Location:
    mark = err.problem_mark or err.context_mark
    return Location(file, mark.line + 1 if mark else 0)
