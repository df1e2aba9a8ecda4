"""A real git remote: a bare repository and working clones of it, on ``main``.

The bare repository plays GitHub; clones play CI runners, so two clones pushing in turn give
the non-fast-forward races ``syncer run --push`` must survive.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

IDENTITY = {"user.name": "Syncer Tests", "user.email": "tests@syncer.invalid"}


def git(cwd: Path, *args: str) -> str:
    """Runs git in ``cwd`` and returns its stdout; fails the test with git's message."""
    result = subprocess.run(
        ["git", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        # The machine's ~/.gitconfig and system config must not change what tests see.
        env={**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"},
    )
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} in {cwd} failed: {result.stderr.strip()}")
    return result.stdout


@dataclass
class GitRemote:
    bare: Path  # the "origin" every clone pushes to
    clone: Path  # a clone on main with one commit and an identity configured
    _root: Path = field(repr=False)
    _clones: int = field(default=0, repr=False)

    def new_clone(self, name: str | None = None) -> Path:
        """Another independent clone of the bare repository, on main, identity configured."""
        self._clones += 1
        path = self._root / (name or f"clone{self._clones}")
        git(self._root, "clone", "--quiet", "--branch", "main", str(self.bare), str(path))
        for key, value in IDENTITY.items():
            git(path, "config", key, value)
        return path

    def refuse_pushes(self, message: str) -> Path:
        """Makes the remote refuse every push with ``message``; delete the returned hook to
        let pushes through again."""
        hook = self.bare / "hooks" / "pre-receive"
        hook.write_text(f"#!/bin/sh\necho '{message}' >&2\nexit 1\n")
        hook.chmod(0o755)
        return hook

    def head(self, branch: str = "main") -> str:
        """The commit the bare repository's ``branch`` points to."""
        return git(self.bare, "rev-parse", f"refs/heads/{branch}").strip()


def make_git_remote(root: Path) -> GitRemote:
    bare = root / "origin.git"
    git(root, "init", "--quiet", "--bare", "--initial-branch=main", str(bare))
    remote = GitRemote(bare=bare, clone=root / "clone", _root=root)
    git(root, "init", "--quiet", "--initial-branch=main", str(remote.clone))
    for key, value in IDENTITY.items():
        git(remote.clone, "config", key, value)
    (remote.clone / "README.md").write_text("syncer test repository\n")
    git(remote.clone, "add", "README.md")
    git(remote.clone, "commit", "--quiet", "-m", "Initial commit")
    git(remote.clone, "remote", "add", "origin", str(bare))
    git(remote.clone, "push", "--quiet", "--set-upstream", "origin", "main")
    return remote


@pytest.fixture
def git_remote(tmp_path_factory: pytest.TempPathFactory) -> GitRemote:
    """A bare ``origin`` and a clone of it on ``main`` with an initial commit."""
    return make_git_remote(tmp_path_factory.mktemp("git"))
