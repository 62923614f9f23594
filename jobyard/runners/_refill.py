"""Topping up a stock of things made ahead (starters, spare run directories) on a
thread of its own, only while no start is being made."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

# Seconds without a take before the stock is topped up: not while an instance is
# starting, nor in a burst (making starters beside 2,000 cold starts made them take
# twice as long).
REFILL_AFTER = 0.01


class Refill:
    """Calls ``add_one`` while ``needed()``, once nothing was taken for REFILL_AFTER.

    ``add_one`` returns False when it failed: the next take tries again.
    """

    def __init__(self, name: str, needed: Callable[[], bool], add_one: Callable[[], bool]) -> None:
        self._needed = needed
        self._add_one = add_one
        self._lock = threading.Lock()
        self._last_take = 0.0
        self._closed = False
        self._wanted = threading.Event()
        self._wanted.set()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def taken(self) -> None:
        """Something was taken from the stock (any thread)."""
        with self._lock:
            self._last_take = time.monotonic()
        self._wanted.set()

    def close(self) -> None:
        """Stop topping up; returns once the thread has ended."""
        with self._lock:
            self._closed = True
        self._wanted.set()
        self._thread.join()

    def _run(self) -> None:
        while self._wanted.wait() and not self._is_closed():
            self._wanted.clear()
            while self._quiet() and self._needed():
                if not self._add_one():
                    break

    def _is_closed(self) -> bool:
        with self._lock:
            return self._closed

    def _quiet(self) -> bool:
        """Wait until nothing has been taken for REFILL_AFTER; False once closed."""
        while True:
            with self._lock:
                since = time.monotonic() - self._last_take
                if self._closed:
                    return False
            if since >= REFILL_AFTER:
                return True
            time.sleep(REFILL_AFTER - since)
