"""The ledger, read by a forked process while ``syncer run`` starts up.

Every run reads every record: a thousand records are a fifth of a second of CPU in the YAML
parser, and a run that finds nothing to do takes about a second in all. Started before the
run imports its modules and loads the catalog, a child process parses the records on another
core meanwhile, and hands them back pickled (about 10 ms to unpickle a thousand), instead of
competing for the CPU that discovery then needs (``benchmarks/noop_discovery.py``).

Forking is done only while this is the process's one thread: another thread's locks (the
import lock, a logging lock) would stay held in the child. Wherever the child cannot help
(no fork, threads running, the child died), ``contents()`` reads the ledger itself, so the
result is always what ``Ledger.contents()`` returns. The caller must hold the run lock from
before the fork until ``contents()`` or ``close()``, so no other run writes records meanwhile.
"""

from __future__ import annotations

import os
import pickle
import signal
import threading

from syncer.errors import SyncerError
from syncer.ledger import Ledger, LedgerContents


class LedgerPrefetch:
    def __init__(self, ledger: Ledger):
        self._ledger = ledger
        self._pid: int | None = None
        self._fd: int | None = None
        if not hasattr(os, "fork") or threading.active_count() != 1:
            return
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            _child(ledger, read_end, write_end)  # never returns
        os.close(write_end)
        self._pid, self._fd = pid, read_end

    def contents(self) -> LedgerContents:
        """What ``Ledger.contents()`` returns (and raising what it raises)."""
        if self._fd is None:
            return self._ledger.contents()
        with os.fdopen(self._fd, "rb") as pipe:
            self._fd = None
            data = pipe.read()
        if self._reap() != 0:  # the child died (killed, out of memory): read here instead
            return self._ledger.contents()
        kind, value = pickle.loads(data)
        if kind == "error":
            raise value
        return value

    def close(self) -> None:
        """Stops a child whose records are no longer wanted (the run failed before needing them)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            if self._pid is not None:
                os.kill(self._pid, signal.SIGKILL)
        self._reap()

    def __enter__(self) -> "LedgerPrefetch":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _reap(self) -> int:
        if self._pid is None:
            return 0
        _, status = os.waitpid(self._pid, 0)
        self._pid = None
        return status


def _child(ledger: Ledger, read_end: int, write_end: int) -> None:
    status = 1
    try:
        os.close(read_end)
        try:
            payload = pickle.dumps(("ok", ledger.contents()), protocol=pickle.HIGHEST_PROTOCOL)
        except SyncerError as err:
            payload = pickle.dumps(("error", err), protocol=pickle.HIGHEST_PROTOCOL)
        with os.fdopen(write_end, "wb") as out:
            out.write(payload)
        status = 0
    finally:
        # Never back into the caller's code: that would run the rest of the command twice.
        os._exit(status)
