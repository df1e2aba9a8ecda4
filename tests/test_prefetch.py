"""``syncer.prefetch``: the ledger read by a forked child gives exactly what ``Ledger.all()``
gives, errors included, and no child outlives it."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from syncer.ledger import Ledger, LedgerError
from syncer.prefetch import LedgerPrefetch
from tests.test_ledger import full_record


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    ledger = Ledger(tmp_path / "reports")
    for name, tag in (("bitnami/redis", "7.2"), ("bitnami/redis", "7.4"), ("alpine", "3.20")):
        ledger.save(full_record(name, tag))
    return ledger


def assert_gone(pid: int) -> None:
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaped already: not our child any more


def test_the_child_reads_what_the_ledger_reads(ledger: Ledger) -> None:
    prefetch = LedgerPrefetch(ledger)
    pid = prefetch._pid
    assert pid is not None, "pytest runs one thread here, so the ledger is read by a child"
    assert prefetch.records() == ledger.all()
    assert_gone(pid)


def test_a_corrupt_record_raises_the_ledgers_own_error(ledger: Ledger) -> None:
    path = ledger.path_for("alpine", "3.20")
    path.write_text("name: alpine\ntag: [unclosed\n")
    with pytest.raises(LedgerError) as direct:
        ledger.all()
    with LedgerPrefetch(ledger) as prefetch:
        assert prefetch._pid is not None
        with pytest.raises(LedgerError) as fetched:
            prefetch.records()
    assert str(fetched.value) == str(direct.value) and str(path) in str(fetched.value)


def test_a_child_that_died_is_replaced_by_a_read_here(ledger: Ledger) -> None:
    prefetch = LedgerPrefetch(ledger)
    os.kill(prefetch._pid, signal.SIGKILL)
    assert prefetch.records() == ledger.all()


def test_closing_unread_stops_and_reaps_the_child(ledger: Ledger) -> None:
    prefetch = LedgerPrefetch(ledger)
    pid = prefetch._pid
    prefetch.close()
    assert_gone(pid)


def test_no_fork_while_other_threads_run(ledger: Ledger) -> None:
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, daemon=True)
    other.start()
    try:
        prefetch = LedgerPrefetch(ledger)
        assert prefetch._pid is None
        assert prefetch.records() == ledger.all()
    finally:
        stop.set()
        other.join(timeout=5)
