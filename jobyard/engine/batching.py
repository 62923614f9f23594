"""Group commit of task launches: the launches asked for at about the same
time are written in one transaction.

HTTP triggers arrive from many clients at once, and on SQLite every write
waits for the one writer: a transaction of its own per trigger spends most of
its time beginning, committing and handing the writer over. One thread takes
every launch waiting in its queue and writes them together; each caller waits
for its own answer, given only once the transaction has committed (the
database is the truth before anyone is told). A launch that fails for itself
(an unknown template, Forbid with a task active) fails alone: its neighbours
are written in a transaction of their own.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field

from sqlalchemy.engine import Connection

from jobyard.domain import Template
from jobyard.engine.clock import Clock
from jobyard.engine.launching import Launched, TaskRequest, launch_many
from jobyard.store import Store

logger = logging.getLogger(__name__)

# Launches written by one transaction at most: bounds how long it holds the writer.
MAX_BATCH = 64

Locate = Callable[[Connection], Template]  # reads the template under its row lock


@dataclass
class _Launch:
    locate: Locate
    request: TaskRequest
    same_as: Hashable | None = None
    answer: Future[Launched] = field(default_factory=Future)


class LaunchBatcher:
    def __init__(self, store: Store, clock: Clock, on_created: Callable[[], None]) -> None:
        self._store = store
        self._clock = clock
        self._on_created = on_created
        self._queue: queue.SimpleQueue[_Launch | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="jobyard-launches", daemon=True)
        self._thread.start()

    def launch(self, locate: Locate, request: TaskRequest) -> Launched:
        """Write a task (any thread); its answer, or the error its launch raised."""
        return self.submit(locate, request).result()

    def submit(
        self, locate: Locate, request: TaskRequest, same_as: Hashable | None = None
    ) -> Future[Launched]:
        """Ask for a task to be written, without waiting: the future is answered once
        the transaction has committed (an event loop awaits it, no thread blocked).

        Launches given the same ``same_as`` locate the same template the same way: a
        transaction locates it once for them all (triggers of one template arriving
        together lock its row once, not once each).
        """
        launch = _Launch(locate, request, same_as)
        self._queue.put(launch)
        return launch.answer

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while batch := self._take():
            # A launch whose caller gave up (its awaiting request cancelled) before it
            # was taken is not written; once running, it can no longer be cancelled.
            wanted = [launch for launch in batch if launch.answer.set_running_or_notify_cancel()]
            if wanted:
                self._write(wanted)

    def _take(self) -> list[_Launch]:
        first = self._queue.get()
        if first is None:
            return []
        batch = [first]
        while len(batch) < MAX_BATCH:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)  # close once this batch is written
                break
            batch.append(item)
        return batch

    def _write(self, batch: list[_Launch]) -> None:
        try:
            launched = self._write_together(batch)
        except Exception as err:
            if len(batch) == 1:  # the caller's to report (NotFound, ConcurrencyForbidden...)
                batch[0].answer.set_exception(err)
                return
            # One of them failed the transaction: write each alone, so that
            # only that one gets the error.
            for launch in batch:
                self._write([launch])
            return
        if any(result.created for result in launched):
            self._on_created()
        for launch, result in zip(batch, launched, strict=True):
            launch.answer.set_result(result)

    def _write_together(self, batch: list[_Launch]) -> list[Launched]:
        with self._store.write() as conn:
            now = self._clock.now()
            templates: dict[Hashable, Template] = {}
            located = [(_locate(one, conn, templates), one.request) for one in batch]
            return launch_many(conn, located, now)


def _locate(launch: _Launch, conn: Connection, templates: dict[Hashable, Template]) -> Template:
    if launch.same_as is None:
        return launch.locate(conn)
    if launch.same_as not in templates:
        templates[launch.same_as] = launch.locate(conn)
    return templates[launch.same_as]
