"""Atomic file replacement: a reader sees the old bytes or the new ones, never half a file.

Writes into the audit trail pass the trail's root: no component between it and the file may
be a symlink, so a link committed under ``reports/`` (``reports/images -> /etc``) can never
make a run write outside it. The temporary file of a write is ``.<name>.<random>.tmp`` beside
its target; ``is_temp_name`` recognises the ones an interrupted run left behind.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import tempfile
from pathlib import Path

from syncer.errors import UnsafePathError

# mkstemp's random part is 8 or more of [a-z0-9_].
_TEMP_NAME = re.compile(r"\..+\.[A-Za-z0-9_]{8,}\.tmp")


def is_temp_name(name: str) -> bool:
    """Whether ``name`` (a file name, no directory) is the temporary file of a write."""
    return _TEMP_NAME.fullmatch(name) is not None


def write_atomic(path: Path, data: bytes, *, root: Path | None = None) -> None:
    """Replaces ``path`` with ``data``. With ``root``, ``path`` must lie under it, the
    directories between them are created as needed, and none of them nor ``path`` may be a
    symlink (UnsafePathError)."""
    if root is not None:
        _ensure_directories(root, path.parent)
        _refuse_symlink(root, path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def _ensure_directories(root: Path, directory: Path) -> None:
    """Creates ``directory`` and its parents up from ``root``, refusing any that is a symlink."""
    root.mkdir(parents=True, exist_ok=True)  # the trail's root itself may be a link
    _real_directories(root, directory, create=True)


def _real_directories(root: Path, directory: Path, *, create: bool) -> bool:
    """Whether every directory from ``root`` down to ``directory`` exists (made when
    ``create``); UnsafePathError for one that is a symlink or no directory."""
    current = root
    for part in _parts_below(root, directory):
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            if not create:
                return False
            try:
                os.mkdir(current)
                continue
            except FileExistsError:  # made meanwhile by another thread of this run
                mode = os.lstat(current).st_mode
        if stat.S_ISLNK(mode):
            raise _link_error(root, current)
        if not stat.S_ISDIR(mode):
            raise UnsafePathError(
                f"{current} is a file where syncer needs a directory; move it away (git mv) and run again"
            )
    return True


def _refuse_symlink(root: Path, path: Path) -> None:
    """UnsafePathError when ``path`` itself is a symlink (its parents are checked by
    ``_ensure_directories``)."""
    try:
        if stat.S_ISLNK(os.lstat(path).st_mode):
            raise _link_error(root, path)
    except FileNotFoundError:
        pass


def read_regular(root: Path, path: Path) -> bytes | None:
    """The bytes of ``path``, None when it does not exist; UnsafePathError for a symlink on
    the way or a ``path`` that is no regular file."""
    if not _real_directories(root, path.parent, create=False):
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise _link_error(root, path) from None
        raise
    with open(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise UnsafePathError(f"{path} is not a regular file; move it away and run again")
        return f.read()


def _link_error(root: Path, path: Path) -> UnsafePathError:
    return UnsafePathError(
        f"{path} is a symlink; syncer never writes or reads through links "
        f"under {root}: replace it with a real file or directory "
        "(git rm the link) and run again"
    )


def _parts_below(root: Path, path: Path) -> tuple[str, ...]:
    try:
        return Path(os.path.normpath(path)).relative_to(os.path.normpath(root)).parts
    except ValueError:
        raise UnsafePathError(f"{path} is outside {root}; syncer writes only under it") from None


def fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not every filesystem lets a directory be fsynced.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_temp_files(root: Path) -> list[Path]:
    """Deletes the temporary files interrupted writes left under ``root`` (never following a
    symlink); the caller must hold the run lock, so that none of them is a write in progress."""
    removed = []
    for directory, _, files in os.walk(root):
        for name in files:
            if is_temp_name(name):
                path = Path(directory) / name
                path.unlink(missing_ok=True)
                removed.append(path)
    return sorted(removed)
