"""`syncer run --commit --push` against a real bare remote: one commit per run that changed
something, none for a run that did not, racing runs both land, and a push that keeps being
refused exits 1 with the commit kept locally and the tree clean."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.harness.gitrepo import git
from tests.harness.images import alpine_files, build_image
from tests.harness.world import World

CLEAN = (("musl", "1.2.5-r0", "musl"), ("busybox", "1.36.1-r29", "busybox"))


@pytest.fixture
def gworld(git_remote, registry_factory, trivy_db):
    world = World(
        root=git_remote.clone, hub=registry_factory(), target=registry_factory(delete=True), db=trivy_db
    )
    world.db.write(())
    world.push("library/alpine:3.20", build_image(alpine_files(CLEAN)))
    world.push("library/busybox:1.36", build_image(alpine_files(CLEAN[1:])))
    world.images("""
        images:
          - source: alpine
            tags: ["3.20"]
          - source: busybox
            tags: ["1.36"]
    """)
    return publish(world, git_remote)


def publish(world: World, remote) -> World:
    """Commits and pushes the world's catalog to ``remote`` (whose clone is ``world.root``)."""
    (world.root / ".gitignore").write_text("ci.key\npush/\n.syncer-run.lock\ntrivy-*\n")
    git(world.root, "add", "-A")
    git(world.root, "commit", "-q", "-m", "catalog")
    git(world.root, "push", "-q", "origin", "main")
    world.remote = remote
    return world


def _subjects(repo) -> list[str]:
    return git(repo, "log", "--format=%s", "origin/main").splitlines()


def test_a_run_commits_and_pushes_and_a_run_without_change_commits_nothing(gworld):
    world = gworld
    proc = world.run("--commit", "--push")
    assert "and pushed" in proc.stdout
    assert world.remote.head() == git(world.root, "rev-parse", "HEAD").strip()
    assert _subjects(world.root)[0] == "sync: 2 promoted"
    changed = git(world.root, "show", "--name-only", "--format=", "HEAD").split()
    assert changed and all(path.startswith("reports/") for path in changed)
    assert "reports/records/alpine/3.20.yaml" in changed and "reports/README.md" in changed

    head = world.remote.head()
    world.run("--commit", "--push")
    assert world.remote.head() == head, "nothing changed, nothing committed"
    assert git(world.root, "status", "--porcelain") == ""


def test_two_racing_runs_both_land(gworld):
    world = gworld
    other = world.remote.new_clone("racer")
    world.run("--commit", "--push", "--only", "alpine")
    # The racer started from the old tip: its push is refused once, then rebuilt on top.
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "syncer",
            "run",
            "--catalog",
            str(other / "catalog"),
            "--reports",
            str(other / "reports"),
            "--skip-db-update",
            "--commit",
            "--push",
            "--only",
            "busybox",
        ],
        cwd=other,
        env=world.run_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    git(world.root, "fetch", "-q", "origin")
    files = git(world.root, "ls-tree", "-r", "--name-only", "origin/main", "reports/records").split()
    assert files == ["reports/records/alpine/3.20.yaml", "reports/records/busybox/1.36.yaml"]
    index = git(world.root, "show", "origin/main:reports/README.md")
    assert "[alpine]" in index and "[busybox]" in index, "the index is rebuilt with both"
    assert _subjects(world.root)[:2] == ["sync: 1 promoted", "sync: 1 promoted"]


def test_a_push_that_keeps_failing_exits_1_and_leaves_the_tree_recoverable(gworld):
    world = gworld
    hook = world.remote.bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'protected branch: pushes are refused' >&2\nexit 1\n")
    hook.chmod(0o755)
    before = world.remote.head()
    proc = world.syncer("run", "--commit", "--push")
    assert proc.returncode == 1, proc.stderr
    assert "push" in proc.stderr.lower() and "Traceback" not in proc.stderr
    assert world.remote.head() == before
    assert git(world.root, "status", "--porcelain") == "", "nothing half-done in the tree"
    assert git(world.root, "log", "--format=%s", "-1") == "sync: 2 promoted\n", "the commit is kept locally"
    assert not (world.root / ".git" / "rebase-merge").exists()

    hook.unlink()
    git(world.root, "push", "-q", "origin", "main")  # the operator's recovery: just push
    assert world.remote.head() == git(world.root, "rev-parse", "HEAD").strip()
