"""The ledger writes its documents through libyaml's emitter from events (ruamel's emitter
was most of a save's cost): whatever the text in a record, every YAML reader the project
meets (libyaml and PyYAML as YAML 1.1, ruamel as 1.2) must read back exactly what was written,
and the layout must stay the one records are diffed in (one finding or event per line)."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML
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


def _readers(text: str) -> list:
    import yaml as pyyaml

    loaders = [pyyaml.SafeLoader, getattr(pyyaml, "CSafeLoader", pyyaml.SafeLoader)]
    return [pyyaml.load(text, Loader=loader) for loader in loaders] + [YAML(typ="safe", pure=True).load(text)]


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@settings(max_examples=examples(1200), deadline=None)
@given(TEXT)
def test_every_reader_reads_back_each_scalar_as_written(value: str):
    doc = CommentedMap(
        a=value,
        b=ledger_module._flow_map(x=value, y=value),
        c=ledger_module._block_seq([value]),
        d=ledger_module._flow_seq([value, value]),
        e=ledger_module._block_seq([CommentedMap(at=value, event=value)]),
        f=None,
        g=True,
        h=7,
    )
    text = ledger_module._dump(doc)
    for read in _readers(text):
        assert read == _plain(doc)
    if not any(c in value for c in "\n\r\x85\u2028\u2029"):
        assert text.count("\n") == 11  # one line per scalar: nothing folded


@settings(max_examples=examples(90), deadline=None)
@given(records())
def test_documents_are_read_back_alike_by_every_reader(record: Record):
    assert record.scan is not None
    ref = _ScanRef(record.scan.digest, "0123456789012345", FoundWith(record.scan.scanner, "x", "y"))
    for doc in (ledger_module._record_doc(record, ref), ledger_module._result_doc(record.scan)):
        text = ledger_module._dump(doc)
        for read in _readers(text):
            assert read == _plain(doc)


def test_records_keep_their_diffable_layout():
    record = full_record()
    assert record.scan is not None
    ref = _ScanRef(record.scan.digest, "9f86d081884c7d65", FoundWith("trivy 0.76.0", "x", "y"))
    text = ledger_module._dump(ledger_module._record_doc(record, ref))
    assert text.startswith("format: 2\nname: bitnami/redis\n")
    assert "\nevents:\n  - at: " in text
    result = ledger_module._dump(ledger_module._result_doc(record.scan))
    assert "findings:\n  - {id: CVE-2024-9" in result
