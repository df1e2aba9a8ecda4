"""The ledger writes its documents itself (ruamel's emitter was most of a save's cost): the
bytes must be ruamel's, whatever the text in a record, so records written before and after
stay byte-identical where they are equal and any YAML reader reads them alike."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml.comments import CommentedMap

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
from syncer.trail.ledger import FoundWith, _ScanRef
from tests.harness.properties import examples
from tests.unit.test_ledger import full_record

# Text of every kind a scanner, a registry or a person may put in a record: indicators,
# quotes, YAML 1.1 and 1.2 words and numbers, spaces at the ends, non-ASCII, line breaks.
WORDS_LIST = [
    "",
    " ",
    "a b",
    "x ",
    " x",
    "yes",
    "No",
    "on",
    "~",
    "null",
    "true",
    "1e3",
    "0o17",
    "0x1F",
    "1_000",
    "1.10",
    "1.2.11",
    "7.2",
    "12",
    "-1",
    "+1",
    ".5",
    "...",
    "---",
    "- a",
    "? a",
    "a: b",
    "a:b",
    "#x",
    "a #b",
    "a,b",
    "[x]",
    "{x}",
    "&a",
    "*a",
    "!t",
    "|",
    ">",
    "'q'",
    '"q"',
    "%x",
    "@x",
    "`x`",
    "<<",
    "=",
    "1:1.2.13",
    "2026-03-01",
    "2026-03-01T10:00:00Z",
    "sha256:" + "a" * 64,
    "linux/amd64",
    "é",
    "日本",
    "a\nb",
    "a\n\nb",
    "\t",
    "a\tb",
    "\x07",
    "tab\there",
    "C:\\dir",
    "a  b",
    "trailing-",
    ".hidden",
    "a/b/c",
]
WORDS = st.sampled_from(WORDS_LIST)
TEXT = st.one_of(WORDS, st.text(max_size=12), st.from_regex(r"[A-Za-z0-9._:/+ -]{0,16}", fullmatch=True))


@st.composite
def records(draw) -> Record:
    def t() -> str:
        return draw(TEXT)

    findings = tuple(
        Finding(
            t(), t(), t(), draw(st.none() | TEXT), draw(st.sampled_from(list(Severity))), t(), t(), t(), t()
        )
        for _ in range(draw(st.integers(0, 3)))
    )
    covered = tuple(
        PlatformScan(
            t(),
            t(),
            draw(st.none() | st.just(datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC))),
            t(),
            tuple(draw(st.lists(TEXT, max_size=2))),
            tuple(draw(st.lists(TEXT, max_size=2))),
            t(),
        )
        for _ in range(draw(st.integers(0, 2)))
    )
    scan = ScanResult(
        "sha256:" + "a" * 64,
        t(),
        t(),
        t(),
        findings,
        tuple(LicenseFinding(t(), t(), t()) for _ in range(draw(st.integers(0, 2)))),
        None,
        covered,
        tuple(draw(st.lists(TEXT, max_size=2))),
        t(),
    )
    return Record(
        name="nginx",
        tag=draw(st.sampled_from(["1.0", "latest", "true", "1e3", "2026-03-01"])),
        source=t(),
        digest=t(),
        state=draw(st.sampled_from(list(State))),
        reasons=draw(st.lists(TEXT, max_size=3)),
        scan=scan,
        signatures=draw(st.lists(TEXT, max_size=2)),
        events=[Event(t(), "scanned", t()) for _ in range(draw(st.integers(0, 3)))],
        replicas=[ReplicaState(t(), draw(st.none() | TEXT), draw(st.none() | TEXT), draw(st.booleans()))],
        promoted_digest=draw(st.none() | TEXT),
    )


@settings(max_examples=examples(1200), deadline=None)
@given(TEXT)
def test_each_scalar_the_ledger_writes_itself_is_the_one_ruamel_writes(value: str):
    doc = CommentedMap(
        a=value,
        b=ledger_module._flow_map(x=value, y=value),
        c=ledger_module._block_seq([value]),
        d=ledger_module._flow_seq([value, value]),
        e=ledger_module._block_seq([CommentedMap(at=value, event=value)]),
    )
    out: list[str] = []
    try:
        ledger_module._emit_map(doc, 0, out)
    except ledger_module._Unusual:
        return  # left to ruamel
    assert "".join(out) == ledger_module._ruamel_dump(doc)


def test_the_scalars_written_by_the_ledger_itself_are_most_of_them():
    usual = [w for w in WORDS_LIST if _usual(w)]
    assert len(usual) > 0.75 * len(WORDS_LIST)
    assert not _usual("a\nb") and not _usual("é")


def _usual(value: str) -> bool:
    try:
        ledger_module._scalar(value)
        return True
    except ledger_module._Unusual:
        return False


def both(doc) -> tuple[str, str]:
    return ledger_module._dump(doc), ledger_module._ruamel_dump(doc)


@settings(max_examples=examples(90), deadline=None)
@given(records())
def test_documents_are_written_as_ruamel_writes_them(record: Record):
    assert record.scan is not None
    ref = _ScanRef(record.scan.digest, "0123456789012345", FoundWith(record.scan.scanner, "x", "y"))
    fast, slow = both(ledger_module._record_doc(record, ref))
    assert fast == slow
    fast, slow = both(ledger_module._result_doc(record.scan))
    assert fast == slow


def test_ordinary_records_need_no_ruamel(monkeypatch):
    def refuse(doc):
        raise AssertionError("ruamel was asked to write an ordinary record")

    monkeypatch.setattr(ledger_module, "_ruamel_dump", refuse)
    record = full_record()
    record.events = [e for e in record.events if "\n" not in e.detail]
    assert record.scan is not None
    ref = _ScanRef(record.scan.digest, "9f86d081884c7d65", FoundWith("trivy 0.76.0", "x", "y"))
    assert ledger_module._dump(ledger_module._record_doc(record, ref)).startswith(
        "format: 2\nname: bitnami/redis\n"
    )
    assert "findings:\n  - {id: CVE-2024-9" in ledger_module._dump(ledger_module._result_doc(record.scan))
