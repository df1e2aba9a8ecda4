"""The built-in demo, end to end through the real CLI: first invocation promotes, holds and
follows a moved tag; the second changes nothing and commits nothing."""

from __future__ import annotations

import subprocess
import sys

from syncer.ledger import Ledger
from syncer.model import State


def _demo(tmp_path):
    return subprocess.run([sys.executable, "-m", "syncer", "demo", "--dir", str(tmp_path / "demo")],
                          capture_output=True, text=True, timeout=600)


def _git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


def test_demo_runs_offline_and_a_second_run_changes_nothing(tmp_path):
    first = _demo(tmp_path)
    assert first.returncode == 0, first.stderr
    repo = tmp_path / "demo" / "repo"
    records = {(r.name, r.tag): r for r in Ledger(str(repo / "reports")).all()}
    assert records[("nginx", "1.27.4")].state is State.PROMOTED
    assert records[("nginx", "1.27.3")].state is State.HELD
    assert ("nginx", "1.27.4-alpine") not in records, "exclude must drop the -alpine variant"
    assert records[("postgres", "16")].state is State.PROMOTED  # through its exception
    assert records[("redis", "7.4")].scan.platforms == ("linux/amd64", "linux/arm64")
    moved = records[("alpine", "3.20")]
    assert moved.state is State.HELD and moved.promoted_digest and moved.promoted_digest != moved.digest
    assert "moved" in [e.event for e in moved.events]
    promoted = [r for r in records.values() if r.promoted_digest]
    assert promoted and all(len(r.replicas) == 1 and r.replicas[0].digest == r.promoted_digest
                            and not r.replicas[0].lagging for r in promoted), "the replica is in step"
    assert "held" in first.stderr + first.stdout and "CVE-2026-10001" in first.stderr + first.stdout
    log = _git(repo, "log", "--format=%s", "origin/main")
    assert log.splitlines()[:2] == ["sync: 1 held", "sync: 5 promoted, 1 held"]

    head = _git(repo, "rev-parse", "HEAD")
    second = _demo(tmp_path)
    assert second.returncode == 0, second.stderr
    assert _git(repo, "rev-parse", "HEAD") == head, "a run in which nothing changed commits nothing"
    assert _git(repo, "status", "--porcelain") == ""
    assert "Nothing changed" in second.stdout
