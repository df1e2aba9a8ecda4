"""Progress on stderr: a live status line on a terminal, one plain line per step otherwise.

Thread-safe, because tags are processed by a pool of workers.
"""

from __future__ import annotations

import shutil
import sys
import threading
from typing import TextIO


class Progress:
    def __init__(self, stream: TextIO | None = None, *, total: int = 0, quiet: bool = False):
        self.stream = stream or sys.stderr
        self.live = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.total = total
        self.done = 0
        self.quiet = quiet
        self._lock = threading.Lock()
        self._status = ""

    def _clear(self) -> None:
        if self.live and self._status:
            self.stream.write("\r\x1b[K")
            self._status = ""

    def step(self, subject: str, message: str) -> None:
        """A step in progress: live status on a terminal, a plain line in CI logs."""
        if self.quiet:
            return
        with self._lock:
            counter = f"[{self.done}/{self.total}] " if self.total else ""
            if self.live:
                width = shutil.get_terminal_size((100, 20)).columns - 1
                self._clear()
                self._status = f"{counter}{subject}: {message}"[:width]
                self.stream.write(self._status)
            else:
                self.stream.write(f"{counter}{subject}: {message}\n")
            self.stream.flush()

    def result(self, subject: str, message: str) -> None:
        """A finished item: always a permanent line."""
        if self.quiet:
            return
        with self._lock:
            self.done += 1
            self._clear()
            counter = f"[{self.done}/{self.total}] " if self.total else ""
            self.stream.write(f"{counter}{subject}: {message}\n")
            self.stream.flush()

    def tick(self) -> None:
        """A finished item with nothing to report (an unchanged tag): counted, not printed, so
        that a scheduled run over thousands of tags logs what happened, not what did not."""
        with self._lock:
            self.done += 1

    def note(self, message: str) -> None:
        if self.quiet:
            return
        with self._lock:
            self._clear()
            self.stream.write(message + "\n")
            self.stream.flush()

    def close(self) -> None:
        with self._lock:
            self._clear()
            self.stream.flush()
