"""Writes the audit trail back to git: commit what changed under ``reports/`` and push it.

Only the given paths are ever staged, so files a person or a tool left dirty elsewhere in the
checkout are never committed. A push rejected because another run landed first is integrated
and retried a bounded number of times, never forced.

Integrating the remote is a rebase done file by file ("replay"): each local commit is
re-created on top of the remote tip with the files it changed taking the local version and
every other file the remote's. Records are one file per tag, so two runs rarely touch the same
file; when they do, this run's file wins because it is the newer view of the tags this run
processed, and the other run's version stays in history (its commit is an ancestor of ours).
Unlike ``git rebase`` this never stops half-way, so no rebase is ever left in progress, and it
never line-merges two versions of one record into a file neither run wrote. Files outside the
given paths changed on both sides are not ours to decide: that raises ``GitError``.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import git

from syncer.core.model import State
from syncer.errors import GitError

DEFAULT_NAME = "syncer-bot"
DEFAULT_EMAIL = "syncer-bot@users.noreply.github.com"
NETWORK_TIMEOUT = 120  # seconds for one fetch or push
MAX_BACKOFF = 30.0

# Order of states in a commit subject: what a reviewer looks for first.
_SUBJECT_ORDER = [
    State.PROMOTED,
    State.HELD,
    State.FLAGGED,
    State.DEMOTED,
    State.FAILED,
    State.SCANNED,
    State.MIRRORED,
]
_URL_USERINFO = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")
# Temporary files of atomic writes (syncer.trail.atomic) are never staged: one an interrupted run
# left behind holds half a record.
_NO_TEMP_FILES = ":(exclude,glob)**/.*.tmp"


@dataclass(frozen=True)
class CommitResult:
    committed: bool
    sha: str | None  # the commit that holds the changes (after integration, if any)
    pushed: bool
    attempts: int  # push attempts made; 0 when nothing was pushed
    # Commits that were on the branch but not on the remote before this call (an earlier
    # run's push failed or it was killed before pushing), pushed now with this one.
    unpushed: int = 0


def summary_message(
    counts: Mapping[str, int], run_id: str | None, env: Mapping[str, str] | None = None
) -> str:
    """``sync: 3 promoted, 1 held`` and, inside GitHub Actions, a ``Run:`` link to the run."""
    env = os.environ if env is None else env
    known = [s.value for s in _SUBJECT_ORDER]
    order = known + sorted(k for k in counts if k not in known)
    parts = [f"{counts[k]} {k}" for k in order if counts.get(k)]
    message = "sync: " + (", ".join(parts) if parts else "update reports")
    server, repository = env.get("GITHUB_SERVER_URL"), env.get("GITHUB_REPOSITORY")
    if run_id and server and repository:
        message += f"\n\nRun: {redact(server.rstrip('/'))}/{repository}/actions/runs/{run_id}"
    return message + "\n"


def identity_from_env(env: Mapping[str, str] | None = None) -> tuple[str, str]:
    env = os.environ if env is None else env
    return (env.get("SYNCER_GIT_NAME") or DEFAULT_NAME, env.get("SYNCER_GIT_EMAIL") or DEFAULT_EMAIL)


def redact(text: str) -> str:
    """Removes user:password@ from any URL in ``text``."""
    return _URL_USERINFO.sub(r"\1***@", text)


def commit_reports(
    repo_dir: str | os.PathLike[str],
    paths: Sequence[str | os.PathLike[str]],
    message: str,
    *,
    identity: tuple[str, str] | None = None,
    push: bool = False,
    remote: str = "origin",
    branch: str | None = None,
    max_attempts: int = 5,
    sleep: Callable[[float], None] = time.sleep,
    refresh: Callable[[], object] | None = None,
) -> CommitResult:
    """Commits the changes under ``paths`` (absolute or relative to ``repo_dir``) and pushes.

    Nothing changed: no commit, and no push unless the branch holds commits the remote lacks
    (an earlier run's push failed): those are pushed, so nothing finished is lost. After ``max_attempts`` failed pushes ``GitError`` is
    raised with the commit kept on the local branch and the working tree as it was.

    ``refresh`` is called after another run's commits were integrated, with the working tree
    holding both runs' files: pages derived from all records (the index) are regenerated
    there and folded into our commit, so that neither run's rows are lost.
    """
    repo = _open(repo_dir)
    pathspecs = _pathspecs(repo, Path(repo_dir), paths)
    name, email = identity or identity_from_env()
    ident_env = {
        "GIT_AUTHOR_NAME": name,
        "GIT_AUTHOR_EMAIL": email,
        "GIT_COMMITTER_NAME": name,
        "GIT_COMMITTER_EMAIL": email,
    }
    unpushed = 0
    if push:
        # Resolved before committing so that a detached HEAD fails without leaving a commit.
        branch = branch or _current_branch(repo)
        unpushed = _unpushed(repo, remote, branch)
    if not pathspecs:
        return CommitResult(False, None, False, 0)
    _git(repo, "add", "--all", "--", *pathspecs, _NO_TEMP_FILES, what="stage the reports")
    committed = bool(
        _git(repo, "diff", "--cached", "--name-only", "--", *pathspecs, _NO_TEMP_FILES, what="list changes")
    )
    if committed:
        # `commit -- paths` commits only those paths, even if other changes are staged.
        _git(
            repo,
            "commit",
            "--quiet",
            "--file=-",
            "--",
            *pathspecs,
            _NO_TEMP_FILES,
            istream_text=message,
            env=ident_env,
            what="commit the reports",
        )
    if not push or not (committed or unpushed):
        return CommitResult(committed, repo.head.commit.hexsha if committed else None, False, 0)
    assert branch is not None
    result = _push_with_retries(repo, remote, branch, pathspecs, max_attempts, sleep, ident_env, refresh)
    return CommitResult(committed, result.sha, result.pushed, result.attempts, unpushed)


def _unpushed(repo: git.Repo, remote: str, branch: str) -> int:
    """Commits on HEAD that the remote-tracking branch lacks; 0 when there is none to compare
    with (git updates it on every successful push and fetch, so no network is needed)."""
    tracking = f"refs/remotes/{remote}/{branch}"
    try:
        repo.git.execute(["git", "rev-parse", "--verify", "--quiet", tracking])
    except git.GitCommandError:
        return 0
    return int(_git(repo, "rev-list", "--count", f"{tracking}..HEAD", what="count unpushed commits"))


def changed_files(repo_dir: str | os.PathLike[str], paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Files under ``paths`` that differ from HEAD (added, modified, deleted or untracked),
    relative to the repository root: what ``commit_reports`` would commit."""
    repo = _open(repo_dir)
    pathspecs = _pathspecs(repo, Path(repo_dir), paths)
    if not pathspecs:
        return []
    out = _git(
        repo,
        "status",
        "--porcelain",
        "-z",
        "--no-renames",
        "--untracked-files=all",
        "--",
        *pathspecs,
        _NO_TEMP_FILES,
        what="list changed reports",
    )
    return sorted(entry[3:] for entry in out.split("\0") if entry)


def _push_with_retries(
    repo: git.Repo,
    remote: str,
    branch: str,
    pathspecs: list[str],
    max_attempts: int,
    sleep: Callable[[float], None],
    ident_env: dict[str, str],
    refresh: Callable[[], object] | None,
) -> CommitResult:
    reason = ""
    max_attempts = max(1, max_attempts)
    for attempt in range(1, max_attempts + 1):
        if attempt > 1:
            sleep(min(MAX_BACKOFF, 2.0 ** (attempt - 2)))
            try:
                if _integrate_remote(repo, remote, branch, pathspecs, ident_env) and refresh:
                    _fold_refresh(repo, pathspecs, refresh, ident_env)
            except _RetryableGitError as err:
                reason = str(err)
                continue
        try:
            _git(
                repo,
                "push",
                "--quiet",
                remote,
                f"HEAD:refs/heads/{branch}",
                what=f"push to {remote} {branch}",
                timeout=NETWORK_TIMEOUT,
                retryable=True,
            )
            return CommitResult(True, repo.head.commit.hexsha, True, attempt)
        except _RetryableGitError as err:
            reason = str(err)
    raise GitError(
        f"{reason} (gave up after {max_attempts} attempts); the commit "
        f"{repo.head.commit.hexsha[:12]} is kept on the local branch {branch}: "
        f"push it with `git push {remote} HEAD:{branch}` once the cause is fixed"
    )


def _fold_refresh(
    repo: git.Repo, pathspecs: list[str], refresh: Callable[[], object], ident_env: dict[str, str]
) -> None:
    """Regenerates derived files on the integrated tree and amends our top commit with them."""
    refresh()
    _git(repo, "add", "--all", "--", *pathspecs, _NO_TEMP_FILES, what="stage the regenerated reports")
    if _git(repo, "diff", "--cached", "--name-only", "--", *pathspecs, _NO_TEMP_FILES, what="list changes"):
        _git(
            repo,
            "commit",
            "--quiet",
            "--amend",
            "--no-edit",
            "--",
            *pathspecs,
            _NO_TEMP_FILES,
            env=ident_env,
            what="fold the regenerated reports into the commit",
        )


def _integrate_remote(
    repo: git.Repo, remote: str, branch: str, pathspecs: list[str], ident_env: dict[str, str]
) -> bool:
    """Re-creates the local commits on top of the remote tip (see the module docstring);
    True when there was something new to integrate."""
    _git(
        repo,
        "fetch",
        "--quiet",
        remote,
        f"+refs/heads/{branch}:refs/remotes/{remote}/{branch}",
        what=f"fetch {remote} {branch}",
        timeout=NETWORK_TIMEOUT,
        retryable=True,
    )
    onto = _git(repo, "rev-parse", f"refs/remotes/{remote}/{branch}", what="read the remote tip")
    head = repo.head.commit.hexsha
    if repo.is_ancestor(repo.commit(onto), repo.head.commit):
        return False  # nothing new upstream: the push failed for another reason
    base = _git(repo, "merge-base", onto, head, what="find the common ancestor")
    theirs = set(_changed(repo, base, onto))
    ours = _git(
        repo, "rev-list", "--reverse", "--first-parent", head, f"^{onto}", what="list local commits"
    ).split()
    outside = sorted(
        f for c in ours for f in _changed(repo, f"{c}^1", c) if f in theirs and not _under(f, pathspecs)
    )
    if outside:
        raise GitError(
            f"the remote branch {branch} and this checkout both changed "
            f"{', '.join(outside)}; rebase your local commits by hand, then run again"
        )
    tip = onto
    for commit in ours:
        tip = _replay(repo, commit, tip, ident_env)
    # --keep moves the branch and updates only files that differ, refusing (and changing
    # nothing) when one of them has local modifications.
    _git(repo, "reset", "--quiet", "--keep", tip, what="move the branch onto the remote's changes")
    return True


def _replay(repo: git.Repo, commit: str, onto: str, ident_env: dict[str, str]) -> str:
    """A copy of ``commit`` whose parent is ``onto``: the files it changed take its version."""
    entries = _git(
        repo, "diff", "--name-status", "--no-renames", "-z", f"{commit}^1", commit, what="read a local commit"
    )
    fields = entries.split("\0")
    with tempfile.TemporaryDirectory(prefix="syncer-index-") as tmp:
        index_env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        _git(repo, "read-tree", onto, env=index_env, what="read the remote tree")
        # -z ends the list with a NUL, so the last field is empty and has no partner.
        for status, path in zip(fields[0::2], fields[1::2], strict=False):
            if status == "D":
                _git(
                    repo,
                    "update-index",
                    "--force-remove",
                    "--",
                    path,
                    env=index_env,
                    what="replay a deletion",
                )
            else:
                mode, _, blob = (
                    _git(repo, "ls-tree", commit, "--", path, what="read a replayed file")
                    .split("\t")[0]
                    .split(" ")
                )
                _git(
                    repo,
                    "update-index",
                    "--add",
                    "--cacheinfo",
                    f"{mode},{blob},{path}",
                    env=index_env,
                    what="replay a file",
                )
        tree = _git(repo, "write-tree", env=index_env, what="write the replayed tree")
    original = repo.commit(commit)
    env = {
        **ident_env,
        "GIT_AUTHOR_NAME": original.author.name or "",
        "GIT_AUTHOR_EMAIL": original.author.email or "",
        "GIT_AUTHOR_DATE": original.authored_datetime.isoformat(),
    }
    # GitPython gives bytes for a message it could not decode.
    message = (
        original.message if isinstance(original.message, str) else original.message.decode(errors="replace")
    )
    return _git(
        repo,
        "commit-tree",
        tree,
        "-p",
        onto,
        "-F",
        "-",
        istream_text=message,
        env=env,
        what="write the replayed commit",
    )


def _changed(repo: git.Repo, a: str, b: str) -> list[str]:
    out = _git(repo, "diff", "--name-only", "--no-renames", "-z", a, b, what="compare commits")
    return [f for f in out.split("\0") if f]


def _under(path: str, pathspecs: list[str]) -> bool:
    return any(p == "." or path == p or path.startswith(p.rstrip("/") + "/") for p in pathspecs)


def _open(repo_dir: str | os.PathLike[str]) -> git.Repo:
    try:
        return git.Repo(repo_dir, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise GitError(
            f"{repo_dir} is not inside a git checkout; run from a clone of the "
            "repository or leave out --commit/--push"
        ) from None


def _current_branch(repo: git.Repo) -> str:
    try:
        return repo.active_branch.name
    except TypeError:
        raise GitError(
            f"{repo.working_tree_dir}: HEAD is detached, so there is no branch to "
            "push to; check out the branch first (actions/checkout: set `ref`)"
        ) from None


def _pathspecs(repo: git.Repo, base: Path, paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """The paths relative to the repository root, dropping those git knows nothing of."""
    top = Path(repo.working_tree_dir or ".").resolve()
    specs = []
    for path in paths:
        absolute = Path(path) if Path(path).is_absolute() else base / path
        try:
            rel = absolute.resolve().relative_to(top).as_posix()
        except ValueError:
            raise GitError(
                f"{path} is outside the repository {top}; reports can only be "
                "committed from inside the checkout"
            ) from None
        if absolute.exists() or _git(repo, "ls-files", "--", rel, what="list tracked files"):
            specs.append(rel)
    return specs


class _RetryableGitError(GitError):
    """A fetch or push that may succeed when tried again."""


def _git(
    repo: git.Repo,
    *args: str,
    what: str,
    env: dict[str, str] | None = None,
    istream_text: str | None = None,
    timeout: float | None = None,
    retryable: bool = False,
) -> str:
    """Runs one git command; failures become GitError with git's reason, credentials removed."""
    # A push must never wait for a password prompt that nobody will answer.
    full_env = {"GIT_TERMINAL_PROMPT": "0", **(env or {})}
    kwargs: dict = {"env": full_env, "kill_after_timeout": timeout}
    try:
        if istream_text is None:
            return repo.git.execute(["git", *args], **kwargs)
        with tempfile.TemporaryFile() as stdin:
            stdin.write(istream_text.encode())
            stdin.seek(0)
            return repo.git.execute(["git", *args], istream=stdin, **kwargs)
    except git.GitCommandError as err:
        error_class = _RetryableGitError if retryable else GitError
        raise error_class(f"could not {what} in {repo.working_tree_dir}: {_reason(err.stderr)}") from None


def _reason(stderr: str | bytes | None) -> str:
    """The lines of git's message that say why, without URLs' credentials."""
    text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else (stderr or "")
    text = text.strip().removeprefix("stderr: '").removesuffix("'")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    keep = [ln for ln in lines if ln.startswith(("fatal:", "error:", "remote:", "!", "hint: Updates"))]
    return redact("; ".join(keep or lines[-3:]) or "git gave no reason")
