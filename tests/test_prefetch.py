"""``syncer.prefetch``: the ledger read by a forked child gives exactly what
``Ledger.contents()`` gives, unreadable records included, and no child outlives it."""

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
    assert prefetch.contents() == ledger.contents()
    assert_gone(pid)


def test_a_corrupt_record_comes_back_named_as_the_ledger_names_it(ledger: Ledger) -> None:
    path = ledger.path_for("alpine", "3.20")
    path.write_text("name: alpine\ntag: [unclosed\n")
    direct = ledger.contents()
    with LedgerPrefetch(ledger) as prefetch:
        assert prefetch._pid is not None
        fetched = prefetch.contents()
    assert fetched == direct and [u.path for u in fetched.unreadable] == [str(path)]
    assert len(fetched.records) == 2


def test_a_ledger_error_in_the_child_is_raised_in_the_parent(ledger: Ledger) -> None:
    ledger.records_dir.chmod(0o000)
    try:
        if os.access(ledger.records_dir, os.R_OK):
            pytest.skip("running as a user whom permissions do not stop")
        with LedgerPrefetch(ledger) as prefetch, pytest.raises(LedgerError, match="cannot list"):
            prefetch.contents()
    finally:
        ledger.records_dir.chmod(0o755)


def test_a_child_that_died_is_replaced_by_a_read_here(ledger: Ledger) -> None:
    prefetch = LedgerPrefetch(ledger)
    os.kill(prefetch._pid, signal.SIGKILL)
    assert prefetch.contents() == ledger.contents()


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
        assert prefetch.contents() == ledger.contents()
    finally:
        stop.set()
        other.join(timeout=5)
