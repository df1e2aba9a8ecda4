"""Run records: what one run (or one shard of a CI run) did, under
``<reports>/runs/<YYYY-MM>/<stem>.yaml``, from which ``syncer report`` rebuilds the run page
``<stem>.md`` beside it.

The stem starts with the run's start time, so pages sort by time, and then says which run it
was: ``20261201T211639Z-run12345678.1-shard-2-of-4`` in GitHub Actions (run id, attempt, shard),
``20261201T211639Z-shard-2-of-4-3f9a1c2e`` elsewhere, where a random suffix keeps two runs
started in the same second apart. Run pages of trails older than run records have no
``.yaml``; they are left as they are.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

import yaml

from syncer.core.model import State
from syncer.core.plan import Plan
from syncer.errors import SyncerError
from syncer.trail.atomic import is_temp_name

RUNS = "runs"
VERSION = 1
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
# GITHUB_RUN_ID and GITHUB_RUN_ATTEMPT are numbers; anything else is not written into a name.
_CI_NUMBER = re.compile(r"[0-9]{1,20}")


class RunRecordError(SyncerError):
    """A run record could not be read."""


@dataclass(frozen=True)
class RunOutcome:
    name: str
    tag: str
    state: str  # the tag's new state; empty when it failed before it had one
    message: str


@dataclass(frozen=True)
class RunRecord:
    started: str  # 2026-12-01T21:16:39Z
    run_id: str  # GITHUB_RUN_ID, else the start time (20261201T211639Z)
    attempt: str  # GITHUB_RUN_ATTEMPT, else empty
    shard: str  # "K/N", else empty
    ci_url: str  # the GitHub Actions run, else empty
    counts: dict[str, int]  # changed tags by their new state
    outcomes: tuple[RunOutcome, ...]  # the tags that changed or failed
    errors: tuple[tuple[str, str], ...]  # (image name, message) that failed before any tag


class RunOutcomeView(Protocol):
    """A tag's outcome as the run record keeps it (``syncer.stages.pipeline.TagOutcome``)."""

    name: str
    tag: str
    state: State | None
    changed: bool
    failed: bool
    message: str


class RunSummary(Protocol):
    """What a run hands the trail (``syncer.stages.pipeline.RunResult``), described here: the
    trail sits below the stages and does not import them (tests/unit/test_layout.py)."""

    @property
    def outcomes(self) -> Sequence[RunOutcomeView]: ...
    @property
    def plan(self) -> Plan: ...
    def counts(self) -> dict[str, int]: ...


def from_result(
    result: RunSummary, started: datetime, environ: Mapping[str, str], shard: tuple[int, int] | None
) -> RunRecord:
    """The record of a finished run (a pipeline RunResult)."""
    run_id = environ.get("GITHUB_RUN_ID", "")
    attempt = environ.get("GITHUB_RUN_ATTEMPT", "")
    if not _CI_NUMBER.fullmatch(run_id):
        run_id, attempt = "", ""
    elif not _CI_NUMBER.fullmatch(attempt):
        attempt = ""
    server, repo = environ.get("GITHUB_SERVER_URL"), environ.get("GITHUB_REPOSITORY")
    ci_url = f"{server}/{repo}/actions/runs/{run_id}" if server and repo and run_id else ""
    if ci_url and attempt:
        ci_url += f"/attempts/{attempt}"
    outcomes = tuple(
        RunOutcome(o.name, o.tag, o.state.value if o.state else "", o.message)
        for o in sorted(result.outcomes, key=lambda o: (o.name, o.tag))
        if o.changed or o.failed
    )
    return RunRecord(
        started=started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        run_id=run_id or started.strftime("%Y%m%dT%H%M%SZ"),
        attempt=attempt,
        shard=f"{shard[0]}/{shard[1]}" if shard else "",
        ci_url=ci_url,
        counts=dict(sorted(result.counts().items())),
        outcomes=outcomes,
        errors=tuple((name, message) for name, message in result.plan.errors),
    )


def in_ci(run: RunRecord) -> bool:
    return bool(_CI_NUMBER.fullmatch(run.run_id))


def _stamp(run: RunRecord) -> str:
    return run.started.replace("-", "").replace(":", "")


def stem(
    run: RunRecord, taken: Callable[[str], bool], suffix: Callable[[], str] = lambda: secrets.token_hex(4)
) -> str:
    """Where the run's record and page go, relative to the reports directory and without the
    extension. ``taken(stem)`` says whether a stem is in use already: then, and outside CI
    always, a random suffix is added."""
    parts = [_stamp(run)]
    if in_ci(run):
        parts.append(f"run{run.run_id}" + (f".{run.attempt}" if run.attempt else ""))
    if run.shard:
        k, n = run.shard.split("/")
        parts.append(f"shard-{k}-of-{n}")
    name = f"{RUNS}/{run.started[:7]}/" + "-".join(parts)
    if in_ci(run) and not taken(name):
        return name
    while True:
        unique = f"{name}-{suffix()}"
        if not taken(unique):
            return unique


def title(run: RunRecord) -> str:
    """``12345678 (attempt 2), shard 1 of 2``; the start time outside CI."""
    text = run.run_id + (f" (attempt {run.attempt})" if run.attempt else "")
    if run.shard:
        k, n = run.shard.split("/")
        text += f", shard {k} of {n}"
    return text


def dump(run: RunRecord) -> str:
    document = {
        "version": VERSION,
        "started": run.started,
        "run_id": run.run_id,
        "attempt": run.attempt,
        "shard": run.shard,
        "ci_url": run.ci_url,
        "counts": dict(run.counts),
        "outcomes": [
            {"name": o.name, "tag": o.tag, "state": o.state, "message": o.message} for o in run.outcomes
        ],
        "errors": [{"name": name, "message": message} for name, message in run.errors],
    }
    return (
        "# Written by the `syncer run` it describes; `syncer report` rebuilds the page beside it.\n"
        + yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    )


def parse(text: str, where: str) -> RunRecord:
    """RunRecordError names ``where`` and what is wrong."""
    try:
        doc = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f"{where}:{mark.line + 1}" if mark else where
        raise RunRecordError(
            f"{at}: not valid YAML ({getattr(err, 'problem', err)}); restore "
            "it from git history (its run page is left as it is)"
        ) from None
    try:
        if not isinstance(doc, dict) or doc.get("version") != VERSION:
            raise ValueError(f"expected a run record of version {VERSION}")
        strings = {k: doc[k] for k in ("started", "run_id", "attempt", "shard", "ci_url")}
        counts, outcomes, errors = doc["counts"], doc["outcomes"], doc["errors"]
        if (
            not all(isinstance(v, str) for v in strings.values())
            or not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", strings["started"])
            or (strings["shard"] and not re.fullmatch(r"\d+/\d+", strings["shard"]))
        ):
            raise ValueError(
                "started, run_id, attempt, shard and ci_url must be strings "
                "(started as 2026-12-01T21:16:39Z, shard as K/N)"
            )
        if not isinstance(counts, dict) or not all(
            isinstance(k, str) and type(v) is int for k, v in counts.items()
        ):
            raise ValueError("counts must map states to numbers")
        run = RunRecord(
            **strings,
            counts=dict(counts),
            outcomes=tuple(
                RunOutcome(**{k: _string(o, k) for k in ("name", "tag", "state", "message")})
                for o in outcomes
            ),
            errors=tuple((_string(e, "name"), _string(e, "message")) for e in errors),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise RunRecordError(
            f"{where}: not a run record ({type(err).__name__}: {err}); restore "
            "it from git history (its run page is left as it is)"
        ) from None
    return run


def _string(item: object, key: str) -> str:
    if not isinstance(item, dict) or not isinstance(item[key], str):
        raise TypeError(f"{key} must be a string in every item")
    return item[key]


def parse_file(data: bytes, path: Path) -> RunRecord:
    """The run record in the bytes of ``path``; RunRecordError names what is wrong."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise RunRecordError(f"{path}: not UTF-8 text; restore it from git history") from None
    return parse(text, str(path))


def files(reports_dir: str | os.PathLike) -> list[tuple[str, Path]]:
    """Every run record file, as (stem, path) in stem order, without reading it."""
    root = Path(reports_dir)
    return [
        (f"{RUNS}/{month}/{name[: -len('.yaml')]}", root / RUNS / month / name)
        for month in _entries(root / RUNS, directories=True)
        for name in _entries(root / RUNS / month, directories=False)
        if name.endswith(".yaml") and not is_temp_name(name)
    ]


def _entries(directory: Path, *, directories: bool) -> list[str]:
    try:
        with os.scandir(directory) as it:
            # Links are listed (read_regular then refuses them, and says so).
            return sorted(e.name for e in it if e.is_dir() == directories)
    except (FileNotFoundError, NotADirectoryError):
        return []
