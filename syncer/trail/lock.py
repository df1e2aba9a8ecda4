"""One run at a time per checkout: an exclusive, non-blocking lock file beside reports/."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from syncer.errors import UsageError


@contextmanager
def run_lock(reports_dir: str) -> Iterator[None]:
    # Beside reports/, not inside it: the lock file must never be committed with the trail.
    path = Path(reports_dir).resolve().parent / ".syncer-run.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            raise UsageError(
                f"another syncer run (pid {holder}) holds {path}; wait for it to finish "
                "(CI: use one concurrency group for sync runs)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)
