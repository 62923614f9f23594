"""Cron firing goes first: the controller gives way while the scheduler fires.

The scheduler and the controller are threads of one process and share the GIL. A
firing gives up the GIL at every database call; with a busy controller (a backlog of
queued tasks re-planned at every exit) it then waits up to a switch interval to get
it back, call after call: a batch that takes 30 ms alone took over 100 ms beside a
busy controller, and every task of the next batch is recorded that much later. So
the controller asks, before each step of a turn, whether a firing is under way, and
if so waits for its end (at most ``MAX_WAIT``): a firing of 1,000 templates costs the
controller well under a tenth of a second, once a second.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

MAX_WAIT = 1.0  # seconds the controller gives way to one firing, at most


class Precedence:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._firing = 0
        self._clear = threading.Event()
        self._clear.set()

    @contextmanager
    def firing(self) -> Iterator[None]:
        """Mark the scheduler's firing of one moment (its batches may overlap)."""
        with self._lock:
            self._firing += 1
            self._clear.clear()
        try:
            yield
        finally:
            with self._lock:
                self._firing -= 1
                if not self._firing:
                    self._clear.set()

    def give_way(self) -> None:
        """Return at once unless a firing is under way; then once it is over."""
        self._clear.wait(MAX_WAIT)
