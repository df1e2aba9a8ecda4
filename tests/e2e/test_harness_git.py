"""The git fixture: a bare origin and clones that commit and push to it with real git."""

from __future__ import annotations

import pytest

from tests.harness.gitrepo import GitRemote, git

pytestmark = pytest.mark.e2e


def test_clone_is_on_main_with_an_identity_and_tracks_origin(git_remote: GitRemote) -> None:
    clone = git_remote.clone

    assert git(clone, "branch", "--show-current").strip() == "main"
    assert git(clone, "config", "user.email").strip() == "tests@syncer.invalid"
    assert git(clone, "rev-parse", "HEAD").strip() == git_remote.head()
    assert git(clone, "rev-parse", "--abbrev-ref", "main@{upstream}").strip() == "origin/main"
    assert git(git_remote.bare, "symbolic-ref", "HEAD").strip() == "refs/heads/main"


def test_commit_and_push_reach_the_bare_remote_and_new_clones(git_remote: GitRemote) -> None:
    clone = git_remote.clone
    (clone / "reports").mkdir()
    (clone / "reports" / "README.md").write_text("# Reports\n")
    git(clone, "add", "reports")
    git(clone, "commit", "--quiet", "-m", "Add reports")
    git(clone, "push", "--quiet")

    assert git_remote.head() == git(clone, "rev-parse", "HEAD").strip()
    other = git_remote.new_clone()
    assert (other / "reports" / "README.md").read_text() == "# Reports\n"
    assert other != clone


def test_two_clones_race_and_the_loser_must_rebase(git_remote: GitRemote) -> None:
    first, second = git_remote.clone, git_remote.new_clone("runner-b")
    for clone, name in ((first, "a.txt"), (second, "b.txt")):
        (clone / name).write_text(name)
        git(clone, "add", name)
        git(clone, "commit", "--quiet", "-m", f"Add {name}")

    git(first, "push", "--quiet")
    with pytest.raises(RuntimeError, match="rejected"):
        git(second, "push", "--quiet")

    git(second, "pull", "--quiet", "--rebase")
    git(second, "push", "--quiet")
    assert git(git_remote.bare, "ls-tree", "--name-only", "main").split() == ["README.md", "a.txt", "b.txt"]
