"""When to try a request again, and how long to wait first: one policy for every request hfstream makes.

fetch.py's ranges, small files and ``/resolve/`` lookups, hub.py's API call and publish.py's uploads
and commits all go through ``RetryPolicy.call`` / ``acall``. What is retried is the ``NetworkError``
family only (connection failures, stalls, truncated bodies, 408, 429, 5xx: ``httperrors`` decides);
any other answer would be the same next time. The wait before the next attempt is what the server
asked for when it said (``NetworkError.retry_after``: ``Retry-After``, the Hub's ``RateLimit``),
else exponential backoff (``first_backoff`` doubling up to ``max_backoff``, times 0.5-1.5 so that
parallel connections do not retry in step); never more than ``max_wait``.

Each wait is said once, before it, as a warning on the ``hfstream`` logger (``retrying in 4 s (3/8):
<what failed>``): the CLI prints it above its progress line, ``-q`` silences it.

What counts as stalled is decided here too (``Progress``): a body must bring ``PROGRESS_BYTES`` (or
all that is left of it) within every ``timeout`` seconds. A per-read timeout alone (a socket silent
that long) is defeated by a server that sends a byte a second; this is not, and the stall is a
``NetworkError``, retried like a dropped connection.

The clocks and both sleeps are fields, so a test injects its own: a fault test that would spend 30 s
in backoff takes none, and can still read what was waited::

    waits = []
    policy = RetryPolicy(sleep=waits.append, async_sleep=record_async(waits))
    hfstream.convert(repo, retries=policy)
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from . import errors

T = TypeVar("T")

#: a body that brings less than this (and is not done) within the read timeout is stalled
PROGRESS_BYTES = 64 * 1024
#: where each wait is said (``RetryPolicy._announce``)
log = logging.getLogger("hfstream")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry; ``call``/``acall`` run one request under it."""

    #: attempts after the first
    retries: int = 8
    first_backoff: float = 0.5
    max_backoff: float = 30.0
    #: never wait longer than this between two attempts, whatever the server asks
    max_wait: float = 300.0
    sleep: Callable[[float], Any] = time.sleep
    #: None: ``asyncio.sleep`` (imported when first needed: hub.py runs before the event loop exists)
    async_sleep: Callable[[float], Awaitable[Any]] | None = None
    #: wall-clock time, to read a ``Retry-After`` given as a date
    clock: Callable[[], float] = time.time
    #: uniform in [0, 1): spreads the backoff of parallel requests
    jitter: Callable[[], float] = random.random
    #: elapsed time, for ``Progress`` (a test moves it by events instead)
    monotonic: Callable[[], float] = time.monotonic

    @classmethod
    def of(cls, retries: int | RetryPolicy) -> RetryPolicy:
        """``retries`` as a policy: a number of retries gets the default policy with that many."""
        return retries if isinstance(retries, RetryPolicy) else cls(retries=retries)

    def wait(self, attempt: int, asked: float | None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (0 = the first), the server having
        asked for ``asked`` (None: it did not say)."""
        if asked is not None:
            wait = asked * (1 + 0.1 * self.jitter())
        else:
            wait = min(self.first_backoff * 2 ** attempt, self.max_backoff) * (0.5 + self.jitter())
        return min(wait, self.max_wait)

    def call(self, attempt: Callable[[], T]) -> T:
        """``attempt()``, tried again after each ``NetworkError`` until the retries are spent."""
        for n in range(self.retries + 1):
            try:
                return attempt()
            except errors.NetworkError as e:
                if n == self.retries:
                    raise self._spent(e) from None
                self.sleep(self._announce(n, e))
        raise AssertionError("unreachable")

    async def acall(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """``call`` for a coroutine function; waits with ``async_sleep``."""
        if self.async_sleep is None:
            import asyncio

            sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep
        else:
            sleep = self.async_sleep
        for n in range(self.retries + 1):
            try:
                return await attempt()
            except errors.NetworkError as e:
                if n == self.retries:
                    raise self._spent(e) from None
                await sleep(self._announce(n, e))
        raise AssertionError("unreachable")

    def progress(self, what: str, timeout: float, expected: int | None = None) -> Progress:
        """A ``Progress`` for a body of ``expected`` bytes (None: unknown), read on this policy's clock."""
        return Progress(what, timeout, self.monotonic, expected)

    def _announce(self, attempt: int, e: errors.NetworkError) -> float:
        """The wait after failed attempt ``attempt``, said once on the ``hfstream`` logger first:
        ``retrying in 4 s (3/8): <what failed>`` (the CLI prints it above its progress line)."""
        wait = self.wait(attempt, e.retry_after)
        shown = f"{wait:.1f}" if wait < 10 else f"{wait:.0f}"
        log.warning("retrying in %s s (%d/%d): %s", shown, attempt + 1, self.retries, e.message)
        return wait

    def _spent(self, e: errors.NetworkError) -> errors.NetworkError:
        """The last failure, saying that it was the last."""
        if self.retries == 0:
            return e
        return type(e)(f"{e.message} (after {self.retries} retries)")


class Progress:
    """The deadline of one body: ``PROGRESS_BYTES``, or what is left of it, within every ``timeout``
    seconds from the start or from the last time that much arrived. ``arrived(n)`` after each chunk
    raises NetworkError once the deadline has passed; a socket silent for ``timeout`` is the HTTP
    client's read timeout. A trickle is cut within twice the timeout, however slow it is."""

    __slots__ = ("what", "timeout", "clock", "left", "since", "mark")

    def __init__(self, what: str, timeout: float, clock: Callable[[], float], expected: int | None = None):
        self.what, self.timeout, self.clock = what, timeout, clock
        #: bytes still to come (None: unknown)
        self.left = expected
        self.since = 0
        self.mark = clock()

    def arrived(self, n: int) -> None:
        self.since += n
        if self.left is not None:
            self.left -= n
        now = self.clock()
        if self.since >= PROGRESS_BYTES or (self.left is not None and self.left <= 0):
            self.since, self.mark = 0, now
        elif now - self.mark > self.timeout:
            raise errors.NetworkError(f"{self.what}: stalled ({self.since} bytes in {now - self.mark:.0f} s, "
                                      f"less than {PROGRESS_BYTES // 1024} KiB per {self.timeout:g} s)")
