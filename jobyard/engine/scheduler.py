"""The cron scheduler: one thread, a heap of next fire times, due templates fired together.

Each template row stores its next fire time. When that time comes the scheduler pops
every template due by then and fires them in batches of up to BATCH_SIZE, one
transaction each (engine/firing.py): the tasks are keyed by template and scheduled
time, so a second replica or a restart cannot create one twice, and each template's
next fire time is stored with its task. Work per firing is a heap pop and push,
O(log n) in templates, plus its share of the batch's statements.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from jobyard.engine.clock import Clock
from jobyard.engine.firing import ParsedSpecs, fire_due, read_ahead
from jobyard.errors import StoreError
from jobyard.store import Store
from jobyard.store import templates as template_store

logger = logging.getLogger(__name__)

IDLE_WAIT = 3600.0  # seconds to sleep with nothing scheduled; any change wakes us
RETRY_SECONDS = 5.0  # after a failed firing (the database was away, say)
# Templates fired per transaction: a herd of 10,000 due at one second is 20 transactions,
# and none holds the (SQLite) write lock for long.
BATCH_SIZE = 500
PARALLEL_BATCHES = 2  # on PostgreSQL
# Specs of templates due this soon are read and parsed before their second comes, so
# that a herd's firing transactions do not parse them (~40 us a template).
READ_AHEAD = timedelta(seconds=5)
# From this long before a fire time the others give way (store/precedence.py): a
# transaction they began (the controller's take up to tens of milliseconds) is over
# by the time comes, rather than keeping the firing's first batch waiting for it.
CLEAR_AHEAD = timedelta(milliseconds=30)


class Scheduler:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        on_task_created: Callable[[], None],
    ) -> None:
        self._store = store
        self._clock = clock
        self._on_task_created = on_task_created
        self._precedence = store.precedence  # the store holds the others back
        self._specs = ParsedSpecs()  # only the scheduler thread uses it
        self._read_until = datetime.min.replace(tzinfo=UTC)  # specs read ahead up to here
        self._heap: list[tuple[datetime, str]] = []
        self._due: dict[str, datetime] = {}  # template id -> the heap entry that counts
        self._lock = threading.Lock()
        self._wakeup = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="jobyard-scheduler", daemon=True)
        self._batch_pool = (
            ThreadPoolExecutor(PARALLEL_BATCHES, thread_name_prefix="jobyard-firing")
            if store.dialect == "postgresql"
            else None
        )

    def start(self) -> None:
        with self._store.read() as conn:
            rows = template_store.list_cron_schedule(conn)
        for template_id, next_fire_at, suspended in rows:
            self.update(template_id, None if suspended else next_fire_at)
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._wakeup.set()
        self._thread.join(timeout=30)
        if self._batch_pool is not None:
            self._batch_pool.shutdown(wait=True)

    def update(self, template_id: str, next_fire_at: datetime | None) -> None:
        """Tell the scheduler a template's next fire time (None: not scheduled)."""
        with self._lock:
            if next_fire_at is None:
                self._due.pop(template_id, None)
            else:
                self._due[template_id] = next_fire_at
                heapq.heappush(self._heap, (next_fire_at, template_id))
        self._wakeup.set()

    def _run(self) -> None:
        while not self._stopping:
            self._wakeup.clear()
            fire_at = self._next_fire_at()
            if fire_at is not None and fire_at - CLEAR_AHEAD <= self._clock.now():
                self._fire_when_due(self._seconds_to(fire_at))
            self._read_ahead(self._clock.now())
            self._wakeup.wait(self._seconds_to_wake())

    def _fire_when_due(self, fire_in: float) -> None:
        """Hold the others back from a little before the fire time, so that what they
        began is over and the firing finds the writer and the GIL free; then fire
        everything due together."""
        with self._precedence.firing():
            time.sleep(fire_in)
            due = self._pop_due(self._clock.now())
            if due:
                logger.debug("%d template(s) due", len(due))
            batches = [due[first : first + BATCH_SIZE] for first in range(0, len(due), BATCH_SIZE)]
            created = sum(self._fire_all(batches))
        if created:
            self._on_task_created()

    def _fire_all(self, batches: list[list[tuple[str, datetime]]]) -> Iterable[int]:
        """Fire the batches of one moment; on PostgreSQL, which locks rows rather than
        the database, two at a time, so that the second is not stamped after the
        first's whole transaction (their templates differ: they cannot deadlock)."""
        if self._batch_pool is None or len(batches) == 1:
            return map(self._fire_safely, batches)
        return self._batch_pool.map(self._fire_safely, batches)

    def _pop_due(self, now: datetime) -> list[tuple[str, datetime]]:
        due = []
        with self._lock:
            while self._heap and self._heap[0][0] <= now:
                fire_at, template_id = heapq.heappop(self._heap)
                if self._due.get(template_id) == fire_at:
                    del self._due[template_id]
                    due.append((template_id, fire_at))
        return due

    def _next_fire_at(self) -> datetime | None:
        with self._lock:
            while self._heap and self._due.get(self._heap[0][1]) != self._heap[0][0]:
                heapq.heappop(self._heap)  # stale entry
            return self._heap[0][0] if self._heap else None

    def _seconds_to(self, moment: datetime) -> float:
        return max(0.0, (moment - self._clock.now()).total_seconds())

    def _seconds_to_wake(self) -> float:
        """Until CLEAR_AHEAD before the first fire time, or until it is READ_AHEAD away
        if not yet read ahead."""
        fire_at = self._next_fire_at()
        if fire_at is None:
            return IDLE_WAIT
        return self._seconds_to(
            fire_at - (READ_AHEAD if fire_at > self._read_until else CLEAR_AHEAD)
        )

    def _read_ahead(self, now: datetime) -> None:
        """Parse the specs of what is due in the next READ_AHEAD, at most once a second."""
        horizon = now.replace(microsecond=0) + timedelta(seconds=1) + READ_AHEAD
        if horizon <= self._read_until:
            return
        self._read_until = horizon
        try:
            read_ahead(self._store, self._specs, self._due_by(horizon))
        except Exception:  # they are read when they fire instead
            logger.warning("could not read ahead the specs of templates soon due", exc_info=True)

    def _due_by(self, horizon: datetime) -> list[str]:
        """Templates due at or before ``horizon``: the top of the heap, O(their number)."""
        found = []
        with self._lock:
            heap, stack = self._heap, [0]
            while stack:
                index = stack.pop()
                if index < len(heap) and heap[index][0] <= horizon:
                    fire_at, template_id = heap[index]
                    if self._due.get(template_id) == fire_at:
                        found.append(template_id)
                    stack += (2 * index + 1, 2 * index + 2)
        return found

    def _fire_safely(self, batch: list[tuple[str, datetime]]) -> int:
        """Fire a batch together; return how many tasks were created."""
        began = time.perf_counter()
        try:
            fired = fire_due(self._store, self._clock, batch, self._specs)
        except StoreError:
            logger.exception("firing %d template(s) failed; retrying in a few seconds", len(batch))
            self._retry_later(batch)
            return 0
        except Exception:
            logger.exception("firing %d template(s) failed", len(batch))
            fired = None
        if fired is not None:
            took = (time.perf_counter() - began) * 1000
            logger.debug(
                "fired %d template(s), %d task(s), in %.1f ms", len(batch), fired.created, took
            )
            self._reschedule(fired.next_fire.items())
            return fired.created
        if len(batch) == 1:
            self._retry_later(batch)
            return 0
        # Something about one template, not the database: fire each alone, so that only
        # that one waits for a retry.
        return sum(self._fire_safely([one]) for one in batch)

    def _reschedule(self, next_fires: Iterable[tuple[str, datetime]]) -> None:
        with self._lock:
            for template_id, next_fire_at in next_fires:
                self._due[template_id] = next_fire_at
                heapq.heappush(self._heap, (next_fire_at, template_id))
        self._wakeup.set()

    def _retry_later(self, batch: list[tuple[str, datetime]]) -> None:
        retry = threading.Timer(RETRY_SECONDS, self._reschedule, args=(batch,))
        retry.daemon = True
        retry.start()
