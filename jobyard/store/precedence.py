"""Cron firing goes first: every other transaction of the process gives way to it.

The scheduler, the controller, the API's worker threads and the launch batcher are
threads of one process and share the GIL. A firing gives up the GIL at every database
call, and SQLite's driver does at every row of an ``executemany``; when other threads
are busy it then waits up to a switch interval to get it back, row after row. A batch
that takes 30 ms alone took over 100 ms beside a busy controller, and 300 to 700 ms
while eight API threads listed tasks: every task of the next batch is recorded that
much later, and templates' firings were missed. So while a firing is under way, the
store holds back every transaction but the scheduler's at its start (``Store.read``,
``Store.write``), and the controller also asks before it reads the clock for a turn.
A firing of 1,000 templates holds them back well under a tenth of a second, once a
second; a herd of 10,000 at most ``MAX_WAIT``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

MAX_WAIT = 1.0  # seconds anyone gives way to one firing, at most


class Precedence:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._firers: list[int] = []  # the threads firing now (a thread may fire twice)
        self._clear = threading.Event()
        self._clear.set()

    @contextmanager
    def firing(self) -> Iterator[None]:
        """Mark the scheduler's firing of one moment (its batches may overlap)."""
        with self._lock:
            self._firers.append(threading.get_ident())
            self._clear.clear()
        try:
            yield
        finally:
            with self._lock:
                self._firers.remove(threading.get_ident())
                if not self._firers:
                    self._clear.set()

    @property
    def under_way(self) -> bool:
        return not self._clear.is_set()

    def give_way(self) -> None:
        """Return at once unless a firing is under way on another thread; then once
        it is over."""
        if not self._clear.is_set() and threading.get_ident() not in self._firers:
            self._clear.wait(MAX_WAIT)
