"""The audit trail's write-back, against a real bare remote and real clones (tests.harness.gitrepo)."""

from __future__ import annotations

from pathlib import Path

import pytest

from syncer.errors import GitError
from syncer.tools import gitops
from tests.harness.gitrepo import git

pytestmark = pytest.mark.e2e


def no_sleep(_: float) -> None:
    pass


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def files_in(repo: Path, rev: str) -> dict[str, str]:
    names = git(repo, "ls-tree", "-r", "--name-only", rev).split()
    return {n: git(repo, "show", f"{rev}:{n}") for n in names}


def changed_in(repo: Path, rev: str) -> set[str]:
    return set(git(repo, "show", "--name-only", "--format=", rev).split())


def test_commits_and_pushes_only_the_reports(git_remote):
    clone = git_remote.clone
    write(clone, "reports/records/nginx/1.27.3.yaml", "state: promoted\n")
    write(clone, "reports/README.md", "# index\n")
    # Someone's unrelated work in the same checkout: modified, staged and untracked files.
    (clone / "README.md").write_text("edited by hand\n")
    write(clone, "notes.txt", "staged, not ours\n")
    git(clone, "add", "notes.txt")
    write(clone, "catalog/images/new.yaml", "images: []\n")

    result = gitops.commit_reports(clone, ["reports"], "sync: 1 promoted\n", push=True, sleep=no_sleep)

    assert result.committed and result.pushed and result.attempts == 1
    assert result.sha == git_remote.head()
    assert changed_in(clone, result.sha) == {"reports/README.md", "reports/records/nginx/1.27.3.yaml"}
    assert (
        git(clone, "log", "-1", "--format=%an <%ae>%n%B").strip()
        == "syncer-bot <syncer-bot@users.noreply.github.com>\nsync: 1 promoted"
    )
    status = git(clone, "status", "--porcelain").splitlines()
    assert sorted(status) == [" M README.md", "?? catalog/", "A  notes.txt"]


def test_nothing_changed_means_no_commit(git_remote):
    clone = git_remote.clone
    write(clone, "reports/records/nginx/1.27.3.yaml", "state: promoted\n")
    first = gitops.commit_reports(clone, ["reports"], "sync: 1 promoted", push=True, sleep=no_sleep)
    (clone / "README.md").write_text("dirty, but outside reports/\n")

    again = gitops.commit_reports(clone, ["reports"], "sync: nothing", push=True, sleep=no_sleep)

    assert again == gitops.CommitResult(committed=False, sha=None, pushed=False, attempts=0)
    assert git(clone, "rev-parse", "HEAD").strip() == first.sha == git_remote.head()


def test_missing_reports_directory_is_nothing_to_commit(git_remote):
    result = gitops.commit_reports(git_remote.clone, ["reports"], "sync", push=False)
    assert not result.committed


def test_absolute_paths_and_identity_from_environment(git_remote, monkeypatch):
    clone = git_remote.clone
    monkeypatch.setenv("SYNCER_GIT_NAME", "Release Bot")
    monkeypatch.setenv("SYNCER_GIT_EMAIL", "bot@example.invalid")
    write(clone, "reports/records/redis/7.yaml", "state: held\n")

    result = gitops.commit_reports(clone, [clone / "reports"], "sync: 1 held", push=False)

    assert result.committed and not result.pushed
    assert (
        git(clone, "log", "-1", "--format=%an <%ae>|%cn").strip()
        == "Release Bot <bot@example.invalid>|Release Bot"
    )
    assert git_remote.head() != result.sha  # not pushed


def test_racing_runs_both_land_and_nothing_is_lost(git_remote):
    first, second = git_remote.new_clone("runner-a"), git_remote.new_clone("runner-b")
    # Both runs rewrite the index page (a real conflict) and one record each.
    write(first, "reports/records/nginx/1.27.3.yaml", "state: promoted\n")
    write(first, "reports/README.md", "index as run A saw it\n")
    write(second, "reports/records/redis/7.4.yaml", "state: held\n")
    write(second, "reports/README.md", "index as run B saw it\n")
    # The first run also landed a catalog change the second run's checkout does not have.
    write(first, "catalog/images/web.yaml", "images: []\n")
    git(first, "add", "catalog")
    git(first, "commit", "--quiet", "-m", "catalog: add web")

    a = gitops.commit_reports(first, ["reports"], "sync: 1 promoted", push=True, sleep=no_sleep)
    sleeps: list[float] = []
    b = gitops.commit_reports(second, ["reports"], "sync: 1 held", push=True, sleep=sleeps.append)

    assert a.pushed and b.pushed and b.attempts == 2 and sleeps == [1.0]
    assert git_remote.head() == b.sha
    landed = files_in(second, b.sha)
    assert landed["reports/records/nginx/1.27.3.yaml"] == "state: promoted\n"
    assert landed["reports/records/redis/7.4.yaml"] == "state: held\n"
    assert landed["catalog/images/web.yaml"] == "images: []\n"
    assert landed["reports/README.md"] == "index as run B saw it\n"  # the newer view wins
    # Run A's commit is in history, and B's replayed commit changes only B's files.
    git(second, "merge-base", "--is-ancestor", a.sha, b.sha)
    assert changed_in(second, b.sha) == {"reports/README.md", "reports/records/redis/7.4.yaml"}
    assert git(second, "log", "-1", "--format=%s", b.sha).strip() == "sync: 1 held"
    # The working tree followed the branch: catalog/ arrived, nothing is left modified.
    assert (second / "catalog/images/web.yaml").read_text() == "images: []\n"
    assert git(second, "status", "--porcelain") == ""


def test_push_that_keeps_failing_gives_up_and_keeps_the_commit(git_remote):
    hook = git_remote.bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'pushes are frozen' >&2\nexit 1\n")
    hook.chmod(0o755)
    clone = git_remote.clone
    before = git_remote.head()
    write(clone, "reports/records/nginx/1.27.3.yaml", "state: promoted\n")
    sleeps: list[float] = []

    with pytest.raises(GitError) as caught:
        gitops.commit_reports(
            clone, ["reports"], "sync: 1 promoted", push=True, max_attempts=4, sleep=sleeps.append
        )

    message = str(caught.value)
    assert "pushes are frozen" in message and "gave up after 4 attempts" in message
    assert sleeps == [1.0, 2.0, 4.0]
    assert git_remote.head() == before
    assert git(clone, "log", "-1", "--format=%s").strip() == "sync: 1 promoted"
    assert git(clone, "status", "--porcelain") == ""
    git_dir = clone / ".git"
    assert not (git_dir / "rebase-merge").exists() and not (git_dir / "rebase-apply").exists()


def test_credentials_in_the_remote_url_never_reach_the_message(git_remote):
    clone = git_remote.clone
    # Nothing listens on port 9 of the loopback: the push fails at once.
    git(clone, "remote", "set-url", "origin", "http://robot:s3cr3t-t0ken@127.0.0.1:9/repo.git")
    write(clone, "reports/records/nginx/1.27.3.yaml", "state: promoted\n")

    with pytest.raises(GitError) as caught:
        gitops.commit_reports(clone, ["reports"], "sync", push=True, max_attempts=2, sleep=no_sleep)

    assert "s3cr3t-t0ken" not in str(caught.value) and "robot" not in str(caught.value)
    assert "127.0.0.1" in str(caught.value)


def test_both_sides_changing_a_file_outside_the_reports_is_left_to_a_person(git_remote):
    first, second = git_remote.new_clone(), git_remote.new_clone()
    for clone, text in ((first, "from A\n"), (second, "from B\n")):
        (clone / "README.md").write_text(text)
        git(clone, "commit", "--quiet", "-am", "edit README")
        write(clone, "reports/records/x/1.yaml", text)
    gitops.commit_reports(first, ["reports"], "sync", push=True, sleep=no_sleep)
    head_before = git(second, "rev-parse", "HEAD")

    with pytest.raises(GitError, match=r"both changed README\.md; rebase your local commits"):
        gitops.commit_reports(second, ["reports"], "sync", push=True, sleep=no_sleep)

    assert git(second, "log", "-1", "--format=%s").strip() == "sync"
    assert git(second, "rev-parse", "HEAD") != head_before  # our commit was made and kept
    assert git(second, "status", "--porcelain") == ""


def test_detached_head_cannot_push_and_commits_nothing(git_remote):
    clone = git_remote.clone
    git(clone, "checkout", "--quiet", "--detach")
    head = git(clone, "rev-parse", "HEAD")
    write(clone, "reports/records/nginx/1.27.3.yaml", "state: promoted\n")

    with pytest.raises(GitError, match="HEAD is detached"):
        gitops.commit_reports(clone, ["reports"], "sync", push=True, sleep=no_sleep)

    assert git(clone, "rev-parse", "HEAD") == head


def test_not_a_checkout(tmp_path):
    with pytest.raises(GitError, match="not inside a git checkout"):
        gitops.commit_reports(tmp_path, ["reports"], "sync")


def test_summary_message_orders_states_and_links_the_run():
    env = {"GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "acme/images"}
    counts = {"held": 1, "flagged": 1, "promoted": 3, "scanned": 0, "weird": 2}

    assert gitops.summary_message(counts, "42", env) == (
        "sync: 3 promoted, 1 held, 1 flagged, 2 weird\n\n"
        "Run: https://github.com/acme/images/actions/runs/42\n"
    )
    assert gitops.summary_message(counts, None, env).count("\n") == 1
    assert gitops.summary_message({}, "42", {}) == "sync: update reports\n"


def test_redact_removes_userinfo_from_urls():
    text = "fatal: unable to access 'https://x-access-token:ghs_abc@github.com/a/b.git/'"
    assert gitops.redact(text) == "fatal: unable to access 'https://***@github.com/a/b.git/'"


def test_changed_files_lists_what_a_commit_would_take(git_remote):
    clone = git_remote.clone
    write(clone, "reports/records/nginx/1.27.3.yaml", "state: promoted\n")
    write(clone, "reports/README.md", "# index\n")
    gitops.commit_reports(clone, ["reports"], "sync", push=False)
    write(clone, "reports/records/nginx/1.27.3.yaml", "state: flagged\n")
    write(clone, "reports/records/redis/7.yaml", "state: held\n")
    (clone / "reports/README.md").unlink()
    (clone / "README.md").write_text("outside\n")

    assert gitops.changed_files(clone, ["reports"]) == [
        "reports/README.md",
        "reports/records/nginx/1.27.3.yaml",
        "reports/records/redis/7.yaml",
    ]
    assert gitops.changed_files(clone / "reports", ["."]) == gitops.changed_files(clone, ["reports"])


def test_temporary_files_of_interrupted_writes_are_never_staged(git_remote):
    clone = git_remote.clone
    write(clone, "reports/records/nginx/1.27.3.yaml", "state: promoted\n")
    write(clone, "reports/records/nginx/.1.27.4.yaml.k2j4x9_a.tmp", "state: prom")
    write(clone, "reports/.README.md.abcdefgh.tmp", "# ind")
    assert gitops.changed_files(clone, ["reports"]) == ["reports/records/nginx/1.27.3.yaml"]

    result = gitops.commit_reports(clone, ["reports"], "sync: 1 promoted", push=True, sleep=no_sleep)

    assert changed_in(clone, result.sha) == {"reports/records/nginx/1.27.3.yaml"}
    assert git(clone, "ls-files", "--others", "reports").split() == [
        "reports/.README.md.abcdefgh.tmp",
        "reports/records/nginx/.1.27.4.yaml.k2j4x9_a.tmp",
    ]


def test_commits_a_failed_push_left_behind_are_pushed_when_nothing_else_changed(git_remote):
    hook = git_remote.refuse_pushes("pushes are frozen")
    clone = git_remote.clone
    write(clone, "reports/records/nginx/1.27.3.yaml", "state: promoted\n")
    with pytest.raises(GitError):
        gitops.commit_reports(clone, ["reports"], "sync: 1 promoted", push=True, max_attempts=1)
    kept = git(clone, "rev-parse", "HEAD").strip()
    hook.unlink()

    again = gitops.commit_reports(clone, ["reports"], "sync: nothing", push=True, sleep=no_sleep)

    assert again == gitops.CommitResult(committed=False, sha=kept, pushed=True, attempts=1, unpushed=1)
    assert git_remote.head() == kept
    # Pushed now, so the next call has nothing left to do.
    assert gitops.commit_reports(clone, ["reports"], "sync", push=True) == gitops.CommitResult(
        committed=False, sha=None, pushed=False, attempts=0
    )
