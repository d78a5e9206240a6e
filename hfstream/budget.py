"""The memory budget: bytes held by units in flight (fetched, decoded, encoded, waiting to be written).

A unit asks for its cost before it fetches and gives it back once written, first come first served,
so memory stays bounded whatever the number of tensors, connections or threads. A unit larger than
the whole budget (one row block of a huge tensor cannot be smaller) runs alone rather than never.
Tests read ``peak``: the most bytes really held at once, which shows that work was cut small enough,
not just that the gate held.
"""

from __future__ import annotations

import asyncio
from collections import deque

#: what ``acquire`` hands out and ``release``/``shrink`` take back: (bytes counted against the limit,
#: bytes really held), which differ only for a unit larger than the whole budget
Grant = tuple[int, int]


class Budget:
    """Bytes in flight, granted first come first served; a unit larger than the budget runs alone.

    ``used``: bytes counted against ``limit``; ``held``: bytes really held (more than ``used`` while
    a unit larger than the budget runs); ``peak``: the most ``held`` has been.
    """

    def __init__(self, limit: int):
        self.limit = max(1, limit)
        self.used = 0
        self.held = 0
        self.peak = 0
        self._waiters: deque[tuple[int, asyncio.Future]] = deque()

    async def acquire(self, n: int, *, beside: int = 0) -> Grant:
        """Wait until ``n`` bytes fit; returns the grant to pass to ``release``. ``beside``: a grant the
        caller holds meanwhile (a reserve), beside which a unit larger than the rest runs alone."""
        gate = min(n, max(1, self.limit - beside))
        if not self._waiters and self.used + gate <= self.limit:
            self._grant(gate, n)
            return gate, n
        fut = asyncio.get_running_loop().create_future()
        entry = (gate, fut)
        self._waiters.append(entry)
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled():
                self.used -= gate  # granted just as we were cancelled: give it back
                self._wake()
            elif entry in self._waiters:
                self._waiters.remove(entry)
                self._wake()
            raise
        self.held += n
        self.peak = max(self.peak, self.held)
        return gate, n

    def release(self, grant: Grant) -> None:
        gate, n = grant
        self.used -= gate
        self.held -= n
        self._wake()

    def shrink(self, grant: Grant, n: int) -> Grant:
        """Keep ``n`` of a grant's bytes (a unit that now holds only its encoded result); returns the new grant."""
        gate, held = grant
        n = min(n, held)
        new_gate = min(n, gate)
        self.used -= gate - new_gate
        self.held -= held - n
        self._wake()
        return new_gate, n

    def _grant(self, gate: int, n: int) -> None:
        self.used += gate
        self.held += n
        self.peak = max(self.peak, self.held)

    def _wake(self) -> None:
        while self._waiters and self.used + self._waiters[0][0] <= self.limit:
            gate, fut = self._waiters.popleft()
            if fut.done():
                continue
            self.used += gate
            fut.set_result(None)
