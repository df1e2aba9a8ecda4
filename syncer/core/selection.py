"""Which upstream tags of a catalog entry to mirror: pure functions, no I/O.

Version ordering (``version_key``) — decisions, because Docker Hub tags are not semver:

* A *version* is an optional ``v``, then dot-separated decimal numbers (``1``, ``1.27.3``,
  ``v2.0``, ``20240101``), then an optional suffix. Numbers compare numerically, component
  by component, and a shorter prefix sorts first: ``1.9 < 1.10 < 1.27 < 1.27.0 < 1.27.3``.
* A suffix that starts with a prerelease marker (``alpha``, ``beta``, ``rc``, ``pre``,
  ``preview``, ``dev``, ``snapshot``, ``nightly``, ``canary``, ``ea``, or ``a``/``b`` directly
  followed by a digit, as in ``3.13.0b1``) is a *prerelease*: it sorts below the bare version,
  like semver (``1.27.3-rc1 < 1.27.3``).
* Any other suffix is a *variant* of the same release (``1.27.3-alpine``, ``3.12-slim``,
  ``17.0.9_9-jdk``): on Docker Hub these are flavours, not earlier releases, so they sort just
  above the bare version and below the next release (``1.27.3 < 1.27.3-alpine < 1.27.4``).
* Suffixes compare naturally, ignoring case: digit runs by value (``rc9 < rc10``,
  ``alpine3.9 < alpine3.20``), letters alphabetically (``alpha < beta < rc``).
* Every other tag (``latest``, ``stable``, ``sha-1a2b``) is *not a version* and sorts below
  all versions, naturally among themselves; so ``newest`` never prefers one over a version.
* The tag itself is the final tie-breaker, so distinct tags never compare equal and the order
  is total and independent of input order (``v1.0`` vs ``1.0``, ``01`` vs ``1``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import re2

from syncer.core.model import ImageEntry

# re.ASCII: only 0-9 are digits; other Unicode digits are ordinary text.
_VERSION = re.compile(r"[vV]?([0-9]+(?:\.[0-9]+)*)(.*)", re.ASCII | re.DOTALL)
_TOKEN = re.compile(r"[0-9]+|[^0-9]+", re.ASCII)
_PRERELEASE = re.compile(
    r"[-_.+~]?(?:alpha|beta|rc|pre|preview|dev|snapshot|nightly|canary|ea|[ab](?=[0-9]))"
    r"(?![a-z])",
    re.ASCII,
)

_NOT_VERSION, _VERSION_RANK = 0, 1
_PRE, _RELEASE, _VARIANT = 0, 1, 2


def _number(digits: str) -> tuple[int, str]:
    # Compared by length then text instead of int(): no size limit, same order for 0-9 runs.
    significant = digits.lstrip("0")
    return (len(significant), significant)


def _natural(text: str) -> tuple[tuple[int, tuple[int, str], str], ...]:
    """Digit runs by value, other runs by lower-cased text; digits sort before text."""
    return tuple(
        (0, _number(tok), "") if tok[0].isdigit() else (1, (0, ""), tok)
        for tok in _TOKEN.findall(text.lower())
    )


def version_key(tag: str) -> tuple:
    """A sort key giving a total order over any strings; see the module docstring."""
    m = _VERSION.fullmatch(tag)
    if m is None:
        return (_NOT_VERSION, (), _RELEASE, _natural(tag), tag)
    numbers = tuple(_number(part) for part in m.group(1).split("."))
    suffix = m.group(2)
    if not suffix:
        rank = _RELEASE
    elif _PRERELEASE.match(suffix.lower()):
        rank = _PRE
    else:
        rank = _VARIANT
    return (_VERSION_RANK, numbers, rank, _natural(suffix), tag)


class PatternError(ValueError):
    """A ``match``/``exclude`` pattern RE2 refuses; ``str(err)`` is the reason."""


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # the reason is raised; RE2 would also print it to stderr
# A repetition as RE2 reads one: a '{' in any other form RE2 takes as a literal brace, where
# Python and PCRE see {,3} and a{99999999999} as repetitions.
_REPETITION = re.compile(r"\{(?:0|[1-9][0-9]{0,3})(?:,(?:0|[1-9][0-9]{0,3})?)?\}")


def compile_pattern(pattern: str) -> re2._Regexp:
    """``pattern`` compiled by RE2, whose matching time is linear in the tag whatever the
    pattern, so no upstream tag can make discovery spin. PatternError for what RE2 refuses
    (backreferences, lookaround, repetitions over 1000) and for a '{' that is no repetition."""
    position = _stray_brace(pattern)
    if position is not None:
        raise PatternError(
            f"'{{' at position {position} starts no repetition {{n}}, {{n,}} or "
            "{n,m} (each at most 1000), so RE2 would read a literal brace, which "
            "no tag contains"
        )
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as err:
        reason = err.args[0] if err.args else "invalid pattern"
        raise PatternError(
            reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
        ) from None


def _stray_brace(pattern: str) -> int | None:
    """Where a '{' outside a character class starts no repetition, if anywhere."""
    i, in_class = 0, False
    while i < len(pattern):
        if pattern.startswith("\\Q", i):  # \Q…\E quotes literal text
            end = pattern.find("\\E", i + 2)
            i = len(pattern) if end < 0 else end + 2
        elif pattern[i] == "\\":
            i += 2
        elif in_class:
            if pattern.startswith("[:", i) and (end := pattern.find(":]", i + 2)) >= 0:
                i = end + 2  # [:alpha:] inside a class
            else:
                in_class = pattern[i] != "]"
                i += 1
        elif pattern[i] == "[":
            in_class = True
            i += 1
            i += pattern.startswith("^", i)
            i += pattern.startswith("]", i)  # a ']' first in a class is literal
        elif pattern[i] == "{":
            found = _REPETITION.match(pattern, i)
            if found is None:
                return i
            i = found.end()
        else:
            i += 1
    return None


@dataclass(frozen=True)
class Selection:
    tags: tuple[str, ...]  # to mirror, sorted by version_key
    missing_explicit: tuple[str, ...]  # explicit tags the upstream listing does not have


def needs_listing(entry: ImageEntry) -> bool:
    """Only ``match`` needs upstream's tag list; explicit tags are looked up one by one."""
    return entry.match is not None


def select_tags(entry: ImageEntry, upstream_tags: Sequence[str] | None) -> Selection:
    """Tags of ``entry`` to mirror, given upstream's tag list (``None``: not listed).

    Explicit ``tags`` bypass ``match``, ``exclude`` and ``newest``: someone asked for exactly
    that tag. When a listing is given and lacks one, it is reported in ``missing_explicit``
    instead of being selected. ``match`` must match a whole tag; an ``exclude`` pattern that
    matches anywhere in a tag removes it; ``newest: N`` then keeps the N highest of what is
    left by ``version_key``. Patterns are RE2's (``compile_pattern``); PatternError for one
    it refuses, which ``syncer validate`` reports first.
    """
    if upstream_tags is None:
        if needs_listing(entry):
            raise ValueError(
                f"catalog entry {entry.name!r} has 'match', so select_tags needs upstream's tag list"
            )
        return Selection(tags=_ordered(entry.tags), missing_explicit=())

    listed = set(upstream_tags)
    explicit = set(entry.tags)
    matched: list[str] = []
    if entry.match is not None:
        pattern = compile_pattern(entry.match)
        excludes = [compile_pattern(x) for x in entry.exclude]
        matched = [t for t in listed if pattern.fullmatch(t) and not any(x.search(t) for x in excludes)]
    if entry.newest is not None:
        matched = sorted(matched, key=version_key)
        matched = matched[max(len(matched) - entry.newest, 0) :]
    return Selection(
        tags=_ordered((explicit & listed) | set(matched)), missing_explicit=_ordered(explicit - listed)
    )


def _ordered(tags: Sequence[str] | set[str]) -> tuple[str, ...]:
    return tuple(sorted(set(tags), key=version_key))
