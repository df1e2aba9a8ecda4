"""``syncer run`` options through the real CLI: --only, --dry-run, --shard, --json, exit codes,
progress on a pipe and on a terminal, the GitHub job summary, and the one-run-per-checkout lock."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import subprocess
import sys
import time

from syncer.core.model import State
from syncer.stages.pipeline import in_shard
from tests.harness.images import alpine_files, build_image, debian_files
from tests.harness.trivydb import Advisory

CLEAN_ALPINE = (("musl", "1.2.5-r0", "musl"), ("busybox", "1.36.1-r29", "busybox"))
VULNERABLE_DEBIAN = (("base-files", "12.4+deb12u8", "base-files"), ("libssl3", "3.0.11-1", "openssl"))
ADVISORIES = (Advisory("CVE-2099-1001", "debian 12", "openssl", "CRITICAL", "3.0.15-1"),)
TWO_IMAGES = """
    images:
      - source: alpine
        tags: ["3.20"]
      - source: nginx
        tags: ["1.27.3"]
"""


def _alpine_and_nginx(world) -> tuple[str, str]:
    world.db.write(ADVISORIES)
    alpine = world.push("library/alpine:3.20", build_image(alpine_files(CLEAN_ALPINE)))
    nginx = world.push("library/nginx:1.27.3", build_image(debian_files(VULNERABLE_DEBIAN)))
    world.images(TWO_IMAGES)
    return alpine, nginx


def _writes(registry) -> int:
    return sum(registry.count(m) for m in ("PUT", "POST", "PATCH", "DELETE"))


def test_only_processes_the_named_image_and_rejects_unknown_names(world):
    alpine, _ = _alpine_and_nginx(world)
    asked = world.hub.count("HEAD", "/library/nginx/")  # pushing it asked too
    proc = world.run("--only", "alpine", "--json")
    summary = json.loads(proc.stdout)
    assert [(t["name"], t["tag"], t["state"]) for t in summary["tags"]] == [("alpine", "3.20", "promoted")]
    assert world.digest_at(world.target, "approved/alpine", "3.20") == alpine
    assert not (world.reports / "records" / "nginx").exists()
    assert world.tags(world.target, "quarantine/nginx") == []
    assert world.hub.count("HEAD", "/library/nginx/") == asked, (
        "--only must not even ask upstream about others"
    )

    before, writes = world.tree(), _writes(world.target)
    proc = world.run("--only", "nosuch", expect=2)
    assert "--only nosuch: no such image in" in proc.stderr and "images/" in proc.stderr, proc.stderr
    assert world.tree() == before and _writes(world.target) == writes


def test_dry_run_writes_nothing_anywhere(world):
    alpine, _ = _alpine_and_nginx(world)
    world.images("""
        images:
          - source: alpine
            tags: ["3.20"]
    """)
    world.run()
    assert world.record("alpine", "3.20").state is State.PROMOTED
    world.images(TWO_IMAGES)
    world.db.write()  # a newer database: a real run would re-scan alpine too
    before, writes = world.tree(), _writes(world.target)
    copies = world.hub.count("GET", "/manifests/")

    proc = world.run("--dry-run")
    assert world.tree() == before
    assert _writes(world.target) == writes, "a dry run pushes nothing to the target"
    assert world.hub.count("GET", "/manifests/") == copies, "a dry run discovers with HEAD only"
    assert "nginx" in proc.stdout and "1.27.3" in proc.stdout, proc.stdout
    assert "Re-scans" in proc.stdout and "alpine" in proc.stdout, proc.stdout
    assert world.digest_at(world.target, "approved/alpine", "3.20") == alpine


def test_shards_split_the_catalog_disjointly_and_stably(world):
    names = ["alpine", "debian", "nginx", "redis"]
    assert {k for n in names for k in (1, 2, 3) if in_shard(n, (k, 3))} == {1, 2, 3}, (
        "pick names that fill every shard, or the test proves less"
    )
    world.db.write(())
    image = build_image(alpine_files(CLEAN_ALPINE))
    for n in names:
        world.push(f"library/{n}:1", image)
    world.images("images:\n" + "".join(f"  - source: {n}\n    tags: ['1']\n" for n in names))

    def processed(k: int) -> set[str]:
        proc = world.run("--shard", f"{k}/3", "--json")
        return {t["name"] for t in json.loads(proc.stdout)["tags"]}

    first = [processed(k) for k in (1, 2, 3)]
    assert set().union(*first) == set(names)
    assert sum(len(s) for s in first) == len(names), f"shards overlap: {first}"
    assert all(world.record(n, "1").state is State.PROMOTED for n in names)
    assert [processed(k) for k in (1, 2, 3)] == first, "the split must not change between runs"

    bad = world.syncer("run", "--shard", "4/3")
    assert bad.returncode == 2 and "K must be between 1 and N" in bad.stderr, bad.stderr


def test_json_summary_exit_codes_step_summary_and_plain_progress(world, tmp_path):
    _alpine_and_nginx(world)
    world.images(
        TWO_IMAGES
        + """
      - source: redis
        tags: ["7.4"]
    """
    )
    step_summary = tmp_path / "step-summary.md"
    world.env["GITHUB_STEP_SUMMARY"] = str(step_summary)
    proc = world.run("--json", expect=1)  # redis:7.4 is not upstream

    summary = json.loads(proc.stdout)
    assert set(summary) >= {"counts", "failures", "tags", "errors", "missing", "reports_written", "commit"}
    assert summary["counts"] == {"promoted": 1, "held": 1}
    assert summary["failures"] == 1
    assert summary["missing"] == [{"name": "redis", "tag": "7.4"}]
    tags = {(t["name"], t["tag"]): t for t in summary["tags"]}
    assert tags[("alpine", "3.20")]["state"] == "promoted" and tags[("alpine", "3.20")]["changed"] is True
    assert (
        tags[("nginx", "1.27.3")]["state"] == "held"
        and "CVE-2099-1001" in tags[("nginx", "1.27.3")]["message"]
    )
    assert all(
        set(t) == {"name", "tag", "state", "changed", "failed", "deferred", "message"}
        for t in summary["tags"]
    )
    assert "README.md" in " ".join(summary["reports_written"]) and summary["commit"] is None

    markdown = step_summary.read_text()
    assert markdown.startswith("# syncer run\n")
    assert "| alpine | `3.20` | promoted |" in markdown and "| nginx | `1.27.3` | held |" in markdown
    assert "redis" in markdown and "7.4" in markdown, "the job summary must name what failed"

    # Not a terminal: one permanent line per step, no cursor control.
    lines = proc.stderr.splitlines()
    assert "\r" not in proc.stderr and "\x1b" not in proc.stderr
    for step in ("mirroring", "scanning", "signing", "promoting"):
        assert sum(line.endswith(f"alpine:3.20: {step}") for line in lines) == 1, (step, proc.stderr)
    assert any(line.endswith("alpine:3.20: promoted") for line in lines), proc.stderr
    assert any(
        line.endswith("redis:7.4: error: tag not found upstream; fix `tags` in the catalog") for line in lines
    ), proc.stderr

    world.images(TWO_IMAGES)
    again = world.run()  # a held image is not a failure
    assert "Nothing changed" in again.stdout
    assert world.record("nginx", "1.27.3").state is State.HELD

    world.images("""
        images:
          - source: alpine
            tags: ["3.20"]
            policy: strict
    """)
    invalid = world.syncer("run")
    assert invalid.returncode == 2 and "strict" in invalid.stderr, invalid.stderr


def test_live_progress_on_a_terminal(world):
    world.db.write(())
    world.push("library/alpine:3.20", build_image(alpine_files(CLEAN_ALPINE)))
    world.images("""
        images:
          - source: alpine
            tags: ["3.20"]
    """)
    argv = [
        sys.executable,
        "-m",
        "syncer",
        "run",
        "--catalog",
        str(world.catalog),
        "--reports",
        str(world.reports),
        "--skip-db-update",
    ]
    master, slave = pty.openpty()
    with open(world.root / "stdout.txt", "wb") as stdout:
        proc = subprocess.Popen(
            argv, cwd=world.root, env=world.run_env(), stdin=subprocess.DEVNULL, stdout=stdout, stderr=slave
        )
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer of the terminal has closed it
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
    assert proc.returncode == 0, seen.decode(errors="replace")
    # A status line is drawn, then erased in place (carriage return, clear to end of line).
    assert re.search(rb"alpine:3\.20: scanning\r\x1b\[K", seen), seen
    assert b"alpine:3.20: promoted\r\n" in seen, seen
    assert world.record("alpine", "3.20").state is State.PROMOTED


def test_a_second_run_in_the_same_checkout_is_refused(world):
    _alpine_and_nginx(world)
    lock = world.root / ".syncer-run.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, str(os.getpid()).encode())
        proc = world.run(expect=2)
    finally:
        os.close(fd)
    assert f"another syncer run (pid {os.getpid()}) holds {lock}" in proc.stderr, proc.stderr
    assert world.tree() == {} and _writes(world.target) == 0
    world.run()  # the lock is free again
    assert world.record("alpine", "3.20").state is State.PROMOTED
