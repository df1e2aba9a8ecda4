"""``syncer.tools.throttle``: requests in flight per host, halved by a 429, paused by Retry-After."""

from __future__ import annotations

import threading

import pytest

from syncer.tools.throttle import Throttle


class Clock:
    """A clock that only the fake sleep moves."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def throttle(concurrency: int, clock: Clock) -> Throttle:
    return Throttle(concurrency, clock=clock, sleep=clock.sleep)


def test_a_429_halves_the_requests_in_flight_and_answers_grow_them_back() -> None:
    t = throttle(16, Clock())
    assert t.acquire(10) == 0.0
    t.release(429)
    assert t.limit == 8
    t.acquire(10)
    t.release(429)
    assert t.limit == 4
    for _ in range(4):  # one window of answers without a 429: one more in flight
        t.acquire(10)
        t.release(200)
    assert t.limit == 5
    for _ in range(200):
        t.acquire(10)
        t.release(200)
    assert t.limit == 16, "never above the configured concurrency"


def test_the_limit_never_drops_below_one() -> None:
    t = throttle(2, Clock())
    for _ in range(5):
        t.acquire(10)
        t.release(429)
    assert t.limit == 1


def test_a_pause_holds_other_requests_but_not_the_thread_that_slept_it() -> None:
    clock = Clock()
    t = throttle(4, clock)
    t.pause(7.0)  # this thread got the 429 and sleeps the 7 s itself
    assert t.acquire(60) == 0.0 and clock.slept == []
    t.release(200)
    other: list[float | None] = []
    thread = threading.Thread(target=lambda: other.append(t.acquire(60)))
    thread.start()
    thread.join(timeout=10)
    assert other == [7.0] and clock.slept == [7.0]


def test_a_pause_longer_than_the_patience_gives_up_without_a_slot() -> None:
    clock = Clock()
    t = throttle(1, clock)
    t.pause(30.0)
    result: list[float | None] = []
    thread = threading.Thread(target=lambda: result.append(t.acquire(10)))
    thread.start()
    thread.join(timeout=10)
    assert result == [None] and clock.slept == []
    assert t.acquire(60) == 0.0, "the slot was not taken by the request that gave up"


def test_once_exhausted_every_request_gives_up_at_once() -> None:
    t = throttle(4, Clock())
    t.give_up()
    assert t.acquire(1000) is None


def test_waiting_for_a_slot_ends_when_the_host_is_exhausted() -> None:
    t = throttle(1, Clock())
    t.acquire(10)
    result: list[float | None] = []
    thread = threading.Thread(target=lambda: result.append(t.acquire(10)))
    thread.start()
    t.give_up()
    thread.join(timeout=10)
    assert result == [None]


def test_no_more_in_flight_than_the_limit() -> None:
    t = throttle(3, Clock())
    in_flight, peak, lock = 0, 0, threading.Lock()
    gate = threading.Event()

    def work() -> None:
        nonlocal in_flight, peak
        t.acquire(10)
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        gate.wait(timeout=0.05)
        with lock:
            in_flight -= 1
        t.release(200)

    threads = [threading.Thread(target=work) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert peak == 3


def test_concurrency_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Throttle(0)
