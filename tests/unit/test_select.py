"""Tag selection: version ordering properties and the catalog's selection rules."""

from __future__ import annotations

import random
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncer.core.model import ImageEntry
from syncer.core.selection import (
    PatternError,
    Selection,
    compile_pattern,
    needs_listing,
    select_tags,
    version_key,
)
from tests.harness.properties import examples

# --- version ordering ----------------------------------------------------------------------

# Tags shaped like Docker Hub's, so the properties exercise the version branches, plus any text.
_tagish = st.from_regex(r"\A[vV]?[0-9]{1,3}(\.[0-9]{1,3}){0,3}([-_.+]?[a-zA-Z0-9]{0,6}){0,2}\Z")
_any = st.one_of(_tagish, st.text(max_size=20))


def _sorted(tags):
    return sorted(tags, key=version_key)


@pytest.mark.parametrize(
    "ascending",
    [
        ["1.9", "1.10", "1.27", "1.27.0", "1.27.3"],
        ["1.27.3-alpha", "1.27.3-beta.2", "1.27.3-rc9", "1.27.3-rc10", "1.27.3", "1.27.3-alpine", "1.27.4"],
        ["3.13.0a1", "3.13.0b2", "3.13.0rc1", "3.13.0", "3.13.0-bookworm", "3.13.0-slim"],
        ["1.27.3-alpine3.9", "1.27.3-alpine3.20"],
        ["21-ea-jdk", "21", "21.0.1"],
        ["edge", "latest", "mainline", "stable", "0", "1"],
        ["sha-9", "sha-10", "0.0.1"],
        ["8", "17", "20240101"],
        ["1.0-dev", "1.0", "1.0-devel"],  # dev is a prerelease marker, devel a variant
    ],
)
def test_known_orders(ascending):
    shuffled = ascending[:]
    random.Random(7).shuffle(shuffled)
    assert _sorted(shuffled) == ascending


def test_suffix_kinds():
    assert version_key("1.27.3-rc1") < version_key("1.27.3") < version_key("1.27.3-alpine")
    assert version_key("1.27.3-alpine") < version_key("1.27.4-rc1")
    assert version_key("v1.2") != version_key("1.2")  # distinct tags never tie


def test_huge_numbers_do_not_crash():
    # int() refuses more than 4300 digits; the key must not.
    assert version_key("9" * 5000) > version_key("9" * 4999)
    assert version_key("1." + "1" * 5000) > version_key("1.2") > version_key("1.01")


@given(_any, _any)
def test_total_and_antisymmetric(a, b):
    ka, kb = version_key(a), version_key(b)
    assert (ka < kb) + (ka == kb) + (ka > kb) == 1
    assert (ka == kb) == (a == b)


@given(_any, _any, _any)
def test_transitive(a, b, c):
    x, y, z = sorted([a, b, c], key=version_key)
    assert version_key(x) <= version_key(z)
    assert not version_key(z) < version_key(x)
    assert version_key(x) <= version_key(y) <= version_key(z)


@given(st.lists(_any, max_size=12), st.randoms())
def test_order_independent_of_input_order(tags, rnd):
    shuffled = tags[:]
    rnd.shuffle(shuffled)
    assert _sorted(tags) == _sorted(shuffled)


@given(_tagish, st.text(max_size=10).filter(lambda s: not re.match(r"[vV]?[0-9]", s)))
def test_versions_above_non_versions(version, word):
    assert version_key(word) < version_key(version)


@given(
    st.lists(st.integers(0, 10**6), min_size=1, max_size=4),
    st.lists(st.integers(0, 10**6), min_size=1, max_size=4),
)
def test_numeric_components_compare_as_numbers(a, b):
    ta, tb = ".".join(map(str, a)), ".".join(map(str, b))
    if a != b:
        assert (version_key(ta) < version_key(tb)) == (a < b)


@settings(max_examples=examples(300))
@given(st.text())
def test_never_crashes(tag):
    key = version_key(tag)
    assert key == version_key(tag)
    hash(key)


# --- selection rules -----------------------------------------------------------------------

UPSTREAM = [
    "latest",
    "1.26.2",
    "1.27.0",
    "1.27.1",
    "1.27.2",
    "1.27.3",
    "1.27.3-alpine",
    "1.27.4-rc1",
    "1.27.10",
    "1.28.0",
]


def entry(**kw) -> ImageEntry:
    return ImageEntry(source="docker.io/library/nginx", name="nginx", **kw)


def test_explicit_tags_need_no_listing():
    e = entry(tags=("1.27.3", "1.26.2"))
    assert not needs_listing(e)
    assert select_tags(e, None) == Selection(tags=("1.26.2", "1.27.3"), missing_explicit=())


def test_match_needs_listing():
    e = entry(match=r"1\.27\.\d+")
    assert needs_listing(e)
    with pytest.raises(ValueError, match="nginx"):
        select_tags(e, None)


def test_match_is_a_full_match():
    sel = select_tags(entry(match=r"1\.27\.\d"), UPSTREAM)
    # 1.27.10 has two digits, 1.27.3-alpine a suffix: fullmatch rejects both.
    assert sel.tags == ("1.27.0", "1.27.1", "1.27.2", "1.27.3")


def test_exclude_searches_anywhere():
    sel = select_tags(entry(match=r"1\.27\..*", exclude=("-rc", "alpine$")), UPSTREAM)
    assert sel.tags == ("1.27.0", "1.27.1", "1.27.2", "1.27.3", "1.27.10")


def test_newest_keeps_highest_versions():
    sel = select_tags(entry(match=r"1\.27\.\d+", newest=2), UPSTREAM)
    assert sel.tags == ("1.27.3", "1.27.10")


def test_newest_applies_after_exclude():
    sel = select_tags(entry(match=r"1\.\d+\.\d+.*", exclude=("1\\.28",), newest=1), UPSTREAM)
    assert sel.tags == ("1.27.10",)


def test_newest_larger_than_matches_keeps_all():
    sel = select_tags(entry(match=r"1\.26\..*", newest=5), UPSTREAM)
    assert sel.tags == ("1.26.2",)


def test_newest_zero_keeps_only_explicit():
    sel = select_tags(entry(tags=("latest",), match=r"1\..*", newest=0), UPSTREAM)
    assert sel.tags == ("latest",)


def test_explicit_tags_bypass_match_exclude_and_newest():
    e = entry(tags=("1.26.2", "1.27.3-alpine"), match=r"1\.27\.\d+", exclude=("alpine",), newest=1)
    sel = select_tags(e, UPSTREAM)
    assert sel.tags == ("1.26.2", "1.27.3-alpine", "1.27.10")
    assert sel.missing_explicit == ()


def test_missing_explicit_tags_are_reported_not_selected():
    sel = select_tags(entry(tags=("1.27.3", "9.9.9", "nope"), match=r"1\.28\..*"), UPSTREAM)
    assert sel.tags == ("1.27.3", "1.28.0")
    assert sel.missing_explicit == ("nope", "9.9.9")


def test_result_is_deduplicated_and_sorted_by_version():
    sel = select_tags(
        entry(tags=("1.27.10", "latest"), match=r"1\.27\.(1|10)"), [*UPSTREAM, "1.27.10", "1.27.1"]
    )
    assert sel.tags == ("latest", "1.27.1", "1.27.10")


def test_no_match_and_no_tags_selects_nothing():
    assert select_tags(entry(), UPSTREAM) == Selection(tags=(), missing_explicit=())


# --- the regex engine ----------------------------------------------------------------------


def test_backtracking_pattern_against_long_tags_runs_in_linear_time():
    # Under Python's re, '^(a+)+$' against 30 a's and a '-' takes minutes (ReDoS); RE2 does not
    # backtrack, so the time grows with the tags' length only.
    upstream = ["a" * n + "-x" for n in range(20, 128)] + ["a" * 127]
    start = time.process_time()
    sel = select_tags(entry(match=r"^(a+)+$", exclude=(r"(a|aa)+b",)), upstream)
    assert time.process_time() - start < 1
    assert sel.tags == ("a" * 127,)


@pytest.mark.parametrize(
    "pattern, tag, full",
    [
        (r"1\.27\.\d+", "1.27.10", True),
        (r"1\.27", "1.27.3", False),  # a whole-tag match, as re.fullmatch
        (r"1\.27\.\d+$", "1.27.3", True),
        (r"^(1|2)\.\d+$", "2.0", True),
        (r"(?i)V1\.0", "v1.0", True),
        (r"[0-9]{2,3}", "8", False),
        (r"[0-9]{2,3}", "2024", False),
        (r"\d+-[[:alpha:]]+", "17-alpine", True),
    ],
)
def test_full_match_agrees_with_python_re(pattern, tag, full):
    assert (compile_pattern(pattern).fullmatch(tag) is not None) is full
    assert (re.fullmatch(pattern.replace("[[:alpha:]]", "[a-zA-Z]"), tag) is not None) is full


@pytest.mark.parametrize(
    "pattern, reason",
    [
        (r"(a)\1", r"invalid escape sequence: \1"),
        (r"1\.27(?!-rc)", "invalid perl operator: (?!"),
        (r"(?<=v)1", "invalid perl operator: (?<="),
        (r"a{1001}", "invalid repetition size: {1001}"),
        (r"(a{100}){100}", "invalid repetition size: {100}"),
        # RE2 would read these braces as literal text; Python as repetitions (or OverflowError).
        (
            r"a{99999999999}",
            "'{' at position 1 starts no repetition {n}, {n,} or {n,m} (each at "
            "most 1000), so RE2 would read a literal brace, which no tag contains",
        ),
        (r"1\.{,3}", "'{' at position 3 starts no repetition"),
        (r"x{01}", "'{' at position 1 starts no repetition"),
    ],
)
def test_patterns_re2_cannot_run_in_linear_time_are_refused(pattern, reason):
    with pytest.raises(PatternError) as raised:
        compile_pattern(pattern)
    assert str(raised.value).startswith(reason)


@pytest.mark.parametrize("pattern", [r"a\{1\}", r"[{]", r"\Q{\E", r"[[:alpha:]{]+", r"a{0,1000}"])
def test_literal_braces_written_as_such_are_accepted(pattern):
    compile_pattern(pattern)
