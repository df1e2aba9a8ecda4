"""How many requests one registry client has in flight, and how that shrinks when it says 429.

A registry that answers 429 Too Many Requests is counting our requests: sending as many again
after its Retry-After only earns the next 429. So the client halves the requests it lets into
flight (down to one), holds every request to that host until the Retry-After has passed, and
grows back by one request after each full window of answers without a 429, up to the
configured concurrency (the additive increase, multiplicative decrease that TCP uses for the
same problem). Once one request has given up on a 429 after its whole retry budget, every
later request to that host gives up at once: the limit is not lifting within this run, and
waiting out the budget again for every tag would keep a scheduled run going for hours.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

# A thread waiting for a slot re-checks this often: a slot is always handed on by release(),
# so this only bounds the damage of a bug, never the normal case.
_SLOT_RECHECK = 1.0


class Throttle:
    """Shared by the threads of one registry client."""

    def __init__(
        self,
        concurrency: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        self.concurrency = concurrency
        self.limit = concurrency  # requests allowed in flight now
        self._clock = clock
        self._sleep = sleep
        self._cond = threading.Condition()
        self._in_flight = 0
        self._answered = 0  # answers since the limit last changed
        self._resume_at = 0.0  # no request starts before this (clock), after a Retry-After
        # The pause this thread has slept through already: it goes on when that is still the
        # pause in force, whatever the clock says (the client's sleep may be a test's fake).
        self._local = threading.local()
        self.exhausted = False  # a request gave up on a 429: later ones give up at once

    def acquire(self, patience: float) -> float | None:
        """Waits for a slot and for any pause a 429 asked for; the seconds spent pausing.
        None, without a slot, when the pause would outlast ``patience`` seconds or the host
        is exhausted: the caller gives up on the request."""
        paused = 0.0
        while True:
            with self._cond:
                if self.exhausted:
                    return None
                pause = self._resume_at - self._clock()
                if pause <= 0 or getattr(self._local, "slept_to", None) == self._resume_at:
                    while self._in_flight >= self.limit:
                        self._cond.wait(_SLOT_RECHECK)
                        if self.exhausted:
                            return None
                    self._in_flight += 1
                    return paused
                resume_at = self._resume_at
            if paused + pause > patience:
                return None
            self._sleep(pause)
            self._local.slept_to = resume_at
            paused += pause

    def release(self, status: int | None) -> None:
        """Frees a slot; ``status`` is the answer's (None when there was none)."""
        with self._cond:
            self._in_flight -= 1
            if status == 429:
                self.limit = max(1, self.limit // 2)
                self._answered = 0
            elif status is not None:
                self._answered += 1
                if self.limit < self.concurrency and self._answered >= self.limit:
                    self.limit += 1
                    self._answered = 0
                    self._cond.notify()  # the new slot
            # One freed slot, one waiter woken: waking them all would cost every waiting
            # thread a wake-up per request, thousands of them in a no-op run.
            self._cond.notify()

    def pause(self, seconds: float) -> None:
        """No request to this host starts for ``seconds`` (a 429's Retry-After or backoff);
        the calling thread sleeps them itself."""
        with self._cond:
            until = self._clock() + seconds
            if until >= self._resume_at:
                self._resume_at = until
                self._local.slept_to = until

    def give_up(self) -> None:
        with self._cond:
            self.exhausted = True
            self._cond.notify_all()
