"""The built-in demo, end to end through the real CLI: first invocation promotes, holds and
follows a moved tag; the second changes nothing and commits nothing. With --access the same
happens through a token-mode registry behind syncer auth-server, and the demo shows what
access.yaml lets people do there."""

from __future__ import annotations

import base64
import re
import subprocess
import sys

from syncer.core.model import State
from syncer.demo.tokenauth import parse_events
from syncer.demo.world import PEOPLE
from syncer.trail.ledger import Ledger


def _demo(tmp_path, *args):
    return subprocess.run(
        [sys.executable, "-m", "syncer", "demo", "--dir", str(tmp_path / "demo"), *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


def _git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


def _check_first_run(first, repo) -> dict:
    """What the first invocation must have done, with or without --access; the records."""
    assert first.returncode == 0, first.stderr
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
    assert promoted and all(
        len(r.replicas) == 1 and r.replicas[0].digest == r.promoted_digest and not r.replicas[0].lagging
        for r in promoted
    ), "the replica is in step"
    assert "held" in first.stderr + first.stdout and "CVE-2026-10001" in first.stderr + first.stdout
    log = _git(repo, "log", "--format=%s", "origin/main")
    assert log.splitlines()[:2] == ["sync: 1 held", "sync: 5 promoted, 1 held"]
    # Every promoted tag verifies and every held quarantined digest is refused, by syncer verify.
    verified = re.findall(r"^  verified +approved/(\S+)$", first.stderr, re.MULTILINE)
    refused = re.findall(r"^  refused +quarantine/(\S+?)@", first.stderr, re.MULTILINE)
    assert sorted(verified) == sorted(f"{r.name}:{r.tag}" for r in promoted)
    assert sorted(refused) == ["alpine", "nginx"]
    assert "UNEXPECTED" not in first.stderr
    return records


def _check_second_run_changes_nothing(tmp_path, repo, *args):
    head = _git(repo, "rev-parse", "HEAD")
    second = _demo(tmp_path, *args)
    assert second.returncode == 0, second.stderr
    assert _git(repo, "rev-parse", "HEAD") == head, "a run in which nothing changed commits nothing"
    assert _git(repo, "status", "--porcelain") == ""
    assert "Nothing changed" in second.stdout
    return second


def test_demo_runs_offline_and_a_second_run_changes_nothing(tmp_path):
    repo = tmp_path / "demo" / "repo"
    _check_first_run(_demo(tmp_path), repo)
    _check_second_run_changes_nothing(tmp_path, repo)


def _access_lines(output: str) -> dict[tuple[str, str, str], str]:
    """The demo's access section as {(user, action, target): "ok sha256:…" | "refused" …}."""
    section = output[output.index("\nAccess control on ") :]
    found = re.findall(r"^  (\w+) +(pull|push) +(\S+) +(.*)$", section, re.MULTILINE)
    return {(user, action, target): rest.strip() for user, action, target, rest in found}


def test_demo_with_access_control_through_the_token_service(tmp_path):
    demo = tmp_path / "demo"
    repo = demo / "repo"
    first = _demo(tmp_path, "--access")
    records = _check_first_run(first, repo)
    assert "auth: {username_env: TARGET_USERNAME" in (repo / "catalog" / "settings.yaml").read_text()

    nginx = records[("nginx", "1.27.4")].promoted_digest
    held = records[("nginx", "1.27.3")].digest
    assert _access_lines(first.stderr) == {
        ("dev1", "pull", "approved/nginx:1.27.4"): f"ok       {nginx[:19]}",
        ("dev1", "pull", "quarantine/nginx:1.27.3"): "refused",
        ("dev1", "push", "approved/nginx"): "refused",
        ("admin", "pull", "quarantine/nginx:1.27.3"): f"ok       {held[:19]}",
    }
    assert "UNEXPECTED" not in first.stderr

    audit = demo / "access" / "auth-server.log"
    assert str(audit) in first.stderr
    text = audit.read_text()
    events = parse_events(text)
    # The pipeline pushed as the robot; dev1 was denied quarantine/ and given pull only
    # where it asked to push.
    assert any(
        e["event"] == "grant"
        and e["user"] == "syncer"
        and e["granted"] == "pull,push"
        and e["scope"].startswith("repository:quarantine/")
        for e in events
    )
    assert {
        "event": "deny",
        "user": "dev1",
        "scope": "repository:quarantine/nginx:pull",
        "granted": "-",
    }.items() <= next(e for e in events if e["event"] == "deny").items()
    assert any(
        e["event"] == "grant"
        and e["user"] == "dev1"
        and e["granted"] == "pull"
        and e["scope"] == "repository:approved/nginx:pull,push"
        for e in events
    )
    for user, password in PEOPLE.items():
        assert password not in text + first.stdout + first.stderr
        assert base64.b64encode(f"{user}:{password}".encode()).decode() not in text
    assert all(
        line.startswith("syncer auth-server: listening on ") or " event=" in line
        for line in text.splitlines()
    ), "nothing but decisions in the audit log"

    second = _check_second_run_changes_nothing(tmp_path, repo, "--access")
    assert _access_lines(second.stderr) == _access_lines(first.stderr)

    plain = _demo(tmp_path)
    assert plain.returncode == 2 and "made with --access" in plain.stderr
