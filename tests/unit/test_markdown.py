"""Every value is escaped where it lands: the pages, the plan and the run summary, rendered by
cmark-gfm, show hostile upstream text as exactly its characters, and it adds no element.

Each document is rendered twice from the same records: once with hostile values, once with a
tame token (``tame7``) in each place. The two must have the same elements in the same order
(no link, image, strikethrough, emphasis, raw HTML or table cell more), and each block of the
hostile page must read as the tame one with every token replaced by its value.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from syncer.commands.run import summary_markdown
from syncer.core import markdown
from syncer.core.model import Event, Finding, PlatformScan, Record, ReplicaState, ScanResult, Severity, State
from syncer.core.plan import Change, Plan, TagPlan, render_markdown
from syncer.core.summary import summarize
from syncer.stages.pipeline import RunResult, TagOutcome
from syncer.trail import report, runlog
from tests.harness import gfm

HOSTILE = (
    "<img src=x onerror=alert(1)>",
    "[Approve now](https://evil.example/approve)",
    "![pixel](https://evil.example/p.png)",
    "@acme/security please approve",
    "ping @octocat, mail admin@evil.example, xmpp:a@b.example",
    "3.0.13-1~deb12u1, fixed in 3.0.13-1~deb12u2",
    "~~struck~~ and ~single~",
    "*emph* **bold** _under_ __dunder__ a*b*c _foo_bar and a_b_",
    "a | b || c \\| d",
    "back`tick ``double`` ```",
    "https://evil.example/x www.evil.example WWW.evil.example ftp://evil.example",
    "&#64;acme &amp; &lt;b&gt; AT&T",
    "# heading",
    "## heading two",
    "- item",
    "+ item",
    "1. ordered",
    "7) ordered",
    "> quote",
    "---",
    "***",
    "first line\nsecond line\r\n    indented\ttab",
    "\\ backslash \\\\ \\[ \\",
    "<script>alert(1)</script>",
    "<!-- comment -->",
    "$x^2$ and $$y$$",
    "[ref]: https://evil.example",
    "<https://evil.example>",
    '<a href="https://evil.example">click</a>',
    "`",
    "` spaced `",
    "trailing backslash \\",
    "[^1] footnote",
    "HUB_TOKEN (sources.docker.io.auth.password_env) is not set!",
)
TOKEN = re.compile(r"tame\d+")
DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32


class Values:
    """Hands out one value per place, the n-th from ``pick(n)``, and remembers them."""

    def __init__(self, pick: Callable[[int], str]) -> None:
        self.pick, self.given = pick, []

    def __call__(self) -> str:
        self.given.append(self.pick(len(self.given)))
        return self.given[-1]


def tame() -> Values:
    return Values(lambda n: f"tame{n}")


def rotated(offset: int) -> Values:
    """Hostile strings in turn, from ``offset``: over the rotations, each reaches each place."""
    return Values(lambda n: HOSTILE[(n + offset) % len(HOSTILE)])


def _records(v: Values) -> list[Record]:
    """Records with upstream text wherever a record holds it. Finding severities differ, so
    that the order of the findings does not depend on their text."""
    covered = (
        PlatformScan(digest=DIGEST, platform=v(), os=v(), packages=(v(), v()), unassessed=(v(),)),
        PlatformScan(digest=OTHER, platform=v(), problem=v()),
    )
    findings = tuple(
        Finding(
            id=v(),
            package=v(),
            installed=v(),
            fixed=v() if s % 2 else None,
            severity=s,
            title=v(),
            platform=v(),
        )
        for s in Severity
    )
    scan = ScanResult(
        digest=DIGEST, scanner=v(), db_updated_at=v(), scanned_at=v(), findings=findings, covered=covered
    )
    held = Record(
        name="team/app",
        tag="1.0",
        source=f"docker.io/team/app:1.0@{DIGEST}",
        digest=DIGEST,
        state=State.HELD,
        reasons=[v(), v()],
        scan=scan,
        events=[Event("2026-11-02T00:00:00Z", "discovered", v()), Event("2026-11-02T00:00:01Z", "held", v())],
        replicas=[ReplicaState("eu.example.com", OTHER, "2026-11-02T00:00:02Z")],
        promoted_digest=OTHER,
        signatures=["ci"],
    )
    artifact = Record(
        name="team/app",
        tag="2.0",
        source=f"docker.io/team/app:2.0@{OTHER}",
        digest=OTHER,
        state=State.FAILED,
        reasons=[v()],
        scan=ScanResult(
            digest=OTHER,
            scanner="trivy 0.76.0",
            db_updated_at="2026-11-01T00:00:00Z",
            scanned_at="2026-11-02T00:00:00Z",
            artifact=v(),
        ),
        events=[Event("2026-11-02T00:00:00Z", "failed", v())],
    )
    return [held, artifact]


def _result(v: Values, records: list[Record]) -> RunResult:
    plan = Plan(errors=[("team/app", v()), ("alpine", v())], missing=[("alpine", "3.99")], db_updated_at=v())
    entries = [summarize(r, record_key="0" * 16) for r in records]
    plan.tags = [
        TagPlan("team/app", "1.0", Change.UNCHANGED, DIGEST, records[0].source, entries[0], rescan=True),
        TagPlan("team/app", "2.0", Change.UNCHANGED, OTHER, records[1].source, entries[1]),
    ]
    outcomes = [
        TagOutcome("team/app", "1.0", State.HELD, changed=True, message=v()),
        TagOutcome("team/app", "2.0", None, failed=True, message=v()),
    ]
    return RunResult(plan=plan, outcomes=outcomes)


def _documents(v: Values) -> dict[str, str]:
    records = _records(v)
    result = _result(v, records)
    started = datetime(2026, 11, 2, tzinfo=UTC)
    return {
        **report.render_index([summarize(r, record_key="k") for r in records], None),
        "images/team/app.md": report.render_image("team/app", records, None)[0][1],
        "run page": report.render_run(runlog.from_result(result, started, {}, None)),
        "plan": render_markdown(result.plan),
        "run summary": summary_markdown(result, [v()]),
    }


def _expected(block: str, tame: Values, hostile: Values) -> str:
    values = dict(zip(tame.given, hostile.given, strict=True))
    return gfm.visible(TOKEN.sub(lambda m: values[m.group(0)], block))


def _structure(page: gfm.Page) -> list:
    # A code value holding `|` is written as text (see markdown.code): <code> may come and go.
    return [element for element in page.skeleton if element[0] not in ("code", "/code")]


def _assert_same_but_for_values(
    tame_doc: str, hostile_doc: str, tame: Values, hostile: Values, where: str
) -> gfm.Page:
    tame_page, page = gfm.read(tame_doc), gfm.read(hostile_doc)
    for name in ("img", "del", "em", "script"):
        assert not page.tags(name), f"{where}: a value became <{name}>:\n{hostile_doc}"
    assert _structure(page) == _structure(tame_page), f"{where}: a value changed the elements:\n{hostile_doc}"
    for tame_block, block in zip(tame_page.blocks, page.blocks, strict=True):
        assert block == _expected(tame_block, tame, hostile), f"{where}: reads differently"
    assert not page.mentions(), f"{where}: {page.mentions()} would ping"
    return page


@pytest.mark.parametrize("offset", range(0, len(HOSTILE), 3))
@pytest.mark.parametrize("where", ["README.md", "images/team/app.md", "run page", "plan", "run summary"])
def test_pages_plan_and_run_summary_show_hostile_text_as_text(where, offset):
    tamed, hostile = tame(), rotated(offset)
    tame_doc, hostile_doc = _documents(tamed)[where], _documents(hostile)[where]
    assert len(hostile.given) >= len(HOSTILE)
    page = _assert_same_but_for_values(tame_doc, hostile_doc, tamed, hostile, where)
    # Our own links only: the image pages, the index, a tag's anchor, the CI run.
    for a in page.tags("a"):
        assert "evil" not in (a.get("href") or ""), a


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize("render", [markdown.text, markdown.code], ids=["text", "code"])
def test_a_value_reads_as_itself_as_a_paragraph_a_list_item_and_a_table_cell(value, render):
    """A value at the start of a line too (a list item's text is): no heading, list, quote."""

    def doc(v: Values) -> str:
        return (
            f"{render(v())}\n\nsee {render(v())} here\n\n- {render(v())}\n- {render(v())} x\n\n"
            f"| a | b |\n|---|---|\n| {render(v())} | {render(v())} |\n"
        )

    tamed, hostile = tame(), Values(lambda n: value)
    _assert_same_but_for_values(doc(tamed), doc(hostile), tamed, hostile, repr(value))


def test_code_spans_outlast_any_backtick_run_and_text_keeps_plain_words_plain():
    assert markdown.code("a``b") == "```a``b```"
    assert markdown.code("`x") == "`` `x ``"
    assert markdown.code(DIGEST) == f"`{DIGEST}`"
    # Readable in a terminal: only what could start Markdown is escaped.
    assert (
        markdown.text("HUB_TOKEN (sources.docker.io) is not set!")
        == "HUB_TOKEN (sources.docker.io) is not set!"
    )
    assert markdown.text("3.0.13-1~deb12u1") == "3.0.13-1\\~deb12u1"
    assert markdown.text(markdown.code("a|b")) == "a\\|b"  # already Markdown: as it is


def test_link_targets_cannot_end_early():
    page = gfm.read(f"[x]({markdown.target('https://h.example/a b(c)<d>')})\n")
    assert page.tags("a") == [{"href": "https://h.example/a%20b%28c%29%3Cd%3E"}]
