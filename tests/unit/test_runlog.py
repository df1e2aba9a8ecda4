"""Run records (syncer/trail/runlog.py): names that keep every shard's and every run's page, and a
record from which ``syncer report`` rebuilds the page byte for byte."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncer.core.model import State
from syncer.core.plan import Plan
from syncer.errors import UnsafePathError
from syncer.stages.pipeline import RunResult, TagOutcome
from syncer.trail import report, runlog
from syncer.trail.atomic import read_regular
from tests.harness.properties import examples

STARTED = datetime(2026, 12, 1, 21, 16, 39, 500000, tzinfo=UTC)
CI = {
    "GITHUB_RUN_ID": "12345678",
    "GITHUB_RUN_ATTEMPT": "2",
    "GITHUB_SERVER_URL": "https://github.com",
    "GITHUB_REPOSITORY": "acme/images",
}


def result() -> RunResult:
    plan = Plan(errors=[("broken", "no such repository upstream")])
    return RunResult(
        plan=plan,
        outcomes=[
            TagOutcome("nginx", "1.10", State.PROMOTED, changed=True, message="promoted"),
            TagOutcome("alpine", "no", State.HELD, changed=True, message="1 critical: CVE-2099-1"),
            TagOutcome("redis", "7", None, failed=True, message="upstream: 500 — try again"),
            TagOutcome("debian", "12", State.PROMOTED),  # unchanged: not on the page
        ],
    )


def never(_: str) -> bool:
    return False


def test_ci_shards_started_in_the_same_second_get_different_names():
    names = {runlog.stem(runlog.from_result(result(), STARTED, CI, (k, 2)), never) for k in (1, 2)}
    assert names == {
        "runs/2026-12/20261201T211639Z-run12345678.2-shard-1-of-2",
        "runs/2026-12/20261201T211639Z-run12345678.2-shard-2-of-2",
    }


def test_another_attempt_of_the_same_run_gets_its_own_name():
    first = runlog.from_result(result(), STARTED, {**CI, "GITHUB_RUN_ATTEMPT": "1"}, None)
    second = runlog.from_result(result(), STARTED, CI, None)
    assert runlog.stem(first, never) == "runs/2026-12/20261201T211639Z-run12345678.1"
    assert runlog.stem(second, never) == "runs/2026-12/20261201T211639Z-run12345678.2"


def test_outside_ci_a_random_suffix_keeps_runs_of_the_same_second_apart():
    run = runlog.from_result(result(), STARTED, {}, (2, 4))
    suffixes = iter(["aaaa", "aaaa", "bbbb"])
    taken = {"runs/2026-12/20261201T211639Z-shard-2-of-4-aaaa"}
    assert (
        runlog.stem(run, taken.__contains__, lambda: next(suffixes))
        == "runs/2026-12/20261201T211639Z-shard-2-of-4-bbbb"
    )
    stems = {runlog.stem(runlog.from_result(result(), STARTED, {}, None), never) for _ in range(20)}
    assert len(stems) == 20 and all(s.startswith("runs/2026-12/20261201T211639Z-") for s in stems)


def test_a_ci_name_in_use_already_gets_a_suffix_too():
    run = runlog.from_result(result(), STARTED, CI, None)
    taken = {"runs/2026-12/20261201T211639Z-run12345678.2"}
    assert (
        runlog.stem(run, taken.__contains__, lambda: "cafe")
        == "runs/2026-12/20261201T211639Z-run12345678.2-cafe"
    )


@pytest.mark.parametrize("run_id, attempt", [("../../etc", "1"), ("12 34", "1"), ("", "3")])
def test_ci_variables_that_are_not_numbers_are_not_written_into_names(run_id, attempt):
    run = runlog.from_result(
        result(), STARTED, {**CI, "GITHUB_RUN_ID": run_id, "GITHUB_RUN_ATTEMPT": attempt}, None
    )
    assert (run.run_id, run.attempt, run.ci_url) == ("20261201T211639Z", "", "")
    assert runlog.stem(run, never, lambda: "beef") == "runs/2026-12/20261201T211639Z-beef"


def test_the_record_says_what_the_page_shows_and_the_page_names_run_attempt_and_shard():
    run = runlog.from_result(result(), STARTED, CI, (1, 2))
    assert run.ci_url == "https://github.com/acme/images/actions/runs/12345678/attempts/2"
    assert [(o.name, o.state) for o in run.outcomes] == [
        ("alpine", "held"),
        ("nginx", "promoted"),
        ("redis", ""),
    ]
    page = report.render_run(run)
    assert page.startswith("# Run 12345678 (attempt 2), shard 1 of 2\n")
    assert "Started 2026-12-01T21:16:39Z" in page and run.ci_url in page
    assert "debian" not in page and "- broken: no such repository upstream" in page


def test_a_record_reads_back_as_written_and_renders_the_same_page():
    for env, shard in itertools.product(({}, CI), (None, (3, 4))):
        run = runlog.from_result(result(), STARTED, env, shard)
        text = runlog.dump(run)
        assert runlog.parse(text, "x.yaml") == run
        assert report.render_run(runlog.parse(text, "x.yaml")) == report.render_run(run)
    assert "tag: '1.10'" in text and "tag: 'no'" in text  # YAML 1.1 readers see strings too


@settings(max_examples=examples(200), deadline=None)
@given(
    st.lists(st.tuples(st.text(), st.text(), st.text(), st.text()), max_size=3),
    st.lists(st.tuples(st.text(), st.text()), max_size=2),
    st.text(),
)
def test_any_text_reads_back_as_written(outcomes, errors, ci_url):
    run = runlog.RunRecord(
        started="2026-12-01T21:16:39Z",
        run_id="1",
        attempt="",
        shard="",
        ci_url=ci_url,
        counts={"held": 1},
        outcomes=tuple(runlog.RunOutcome(*o) for o in outcomes),
        errors=tuple(errors),
    )
    assert runlog.parse(runlog.dump(run), "x.yaml") == run


@pytest.mark.parametrize(
    "text, expected",
    [
        ("version: 1\nstarted: a: b\n", "x.yaml:2: not valid YAML"),
        ("- a list\n", "x.yaml: not a run record"),
        ("version: 2\n", "expected a run record of version 1"),
        (
            (
                "version: 1\nstarted: '2026-12-01'\nrun_id: '1'\nattempt: ''\nshard: ''\nci_url: ''\n"
                "counts: {}\noutcomes: []\nerrors: []\n"
            ),
            "started as 2026-12-01T21:16:39Z",
        ),
        (
            (
                "version: 1\nstarted: '2026-12-01T21:16:39Z'\nrun_id: '1'\nattempt: ''\nshard: ''\n"
                "ci_url: ''\ncounts: {held: x}\noutcomes: []\nerrors: []\n"
            ),
            "counts must map states",
        ),
        (
            (
                "version: 1\nstarted: '2026-12-01T21:16:39Z'\nrun_id: '1'\nattempt: ''\nshard: ''\n"
                "ci_url: ''\ncounts: {}\noutcomes: [{name: a, tag: 1}]\nerrors: []\n"
            ),
            "tag must be a string",
        ),
    ],
)
def test_a_bad_record_is_named_with_what_is_wrong(text, expected):
    with pytest.raises(runlog.RunRecordError) as err:
        runlog.parse(text, "x.yaml")
    assert expected in str(err.value) and "restore it from git history" in str(err.value)


def test_files_lists_every_record_and_parse_file_names_the_bad_ones(tmp_path: Path):
    run = runlog.from_result(result(), STARTED, CI, (1, 2))
    month = tmp_path / "runs" / "2026-12"
    month.mkdir(parents=True)
    (month / "a.yaml").write_text(runlog.dump(run))
    (month / "a.md").write_text("the page\n")
    (month / "old.md").write_text("a page of an older trail, without a record\n")
    (month / "bad.yaml").write_text("version: 1\n")
    (month / "latin1.yaml").write_bytes(b"version: 1\nrun: \xe9\n")
    (month / ".b.yaml.tmp-1234").write_text("an interrupted write\n")
    (month / "link.yaml").symlink_to(month / "a.yaml")
    listed = runlog.files(tmp_path)
    assert [stem for stem, _ in listed] == [f"runs/2026-12/{n}" for n in ("a", "bad", "latin1", "link")]
    assert runlog.parse_file((month / "a.yaml").read_bytes(), month / "a.yaml") == run
    with pytest.raises(runlog.RunRecordError, match=re.escape(f"{month / 'bad.yaml'}: not a run record")):
        runlog.parse_file((month / "bad.yaml").read_bytes(), month / "bad.yaml")
    with pytest.raises(
        runlog.RunRecordError, match=r"latin1\.yaml: not UTF-8 text; restore it from git history"
    ):
        runlog.parse_file((month / "latin1.yaml").read_bytes(), month / "latin1.yaml")
    with pytest.raises(UnsafePathError, match=r"link\.yaml is a symlink"):
        read_regular(tmp_path, month / "link.yaml")
    assert runlog.files(tmp_path / "nowhere") == []
