"""The cron scheduler: one thread, a heap of next fire times, one firing at a time.

Each template row stores its next fire time. At that time the scheduler, in
one transaction, creates the task (keyed by template and scheduled time, so a
second replica or a restart cannot create it twice) and stores the next fire
time. Work per firing is a heap pop and push: O(log n) in templates.
"""

from __future__ import annotations

import heapq
import logging
import threading
from collections.abc import Callable
from datetime import datetime

from sqlalchemy.engine import Connection

from jobyard import cron, planning
from jobyard.domain import Reason, Severity, Template, TriggerKind
from jobyard.engine.clock import Clock
from jobyard.engine.events import template_event
from jobyard.engine.launching import TaskRequest, launch_task, record_forbidden
from jobyard.errors import ConcurrencyForbidden, NotFound
from jobyard.spec import CronTrigger
from jobyard.store import Store
from jobyard.store import templates as template_store

logger = logging.getLogger(__name__)

IDLE_WAIT = 3600.0  # seconds to sleep with nothing scheduled; any change wakes us
RETRY_SECONDS = 5.0  # after a failed firing (the database was away, say)


class Scheduler:
    def __init__(self, store: Store, clock: Clock, on_task_created: Callable[[], None]) -> None:
        self._store = store
        self._clock = clock
        self._on_task_created = on_task_created
        self._heap: list[tuple[datetime, str]] = []
        self._due: dict[str, datetime] = {}  # template id -> the heap entry that counts
        self._lock = threading.Lock()
        self._wakeup = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="jobyard-scheduler", daemon=True)

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
            due = self._pop_due(self._clock.now())
            for template_id, fire_at in due:
                self._fire_safely(template_id, fire_at)
            if due:
                self._on_task_created()
            self._wakeup.wait(self._seconds_to_next())

    def _pop_due(self, now: datetime) -> list[tuple[str, datetime]]:
        due = []
        with self._lock:
            while self._heap and self._heap[0][0] <= now:
                fire_at, template_id = heapq.heappop(self._heap)
                if self._due.get(template_id) == fire_at:
                    del self._due[template_id]
                    due.append((template_id, fire_at))
        return due

    def _seconds_to_next(self) -> float:
        with self._lock:
            while self._heap and self._due.get(self._heap[0][1]) != self._heap[0][0]:
                heapq.heappop(self._heap)  # stale entry
            if not self._heap:
                return IDLE_WAIT
            first = self._heap[0][0]
        return max(0.0, (first - self._clock.now()).total_seconds())

    def _fire_safely(self, template_id: str, due: datetime) -> None:
        try:
            next_fire_at = self._fire(template_id, due)
        except NotFound:
            return  # deleted meanwhile
        except Exception:
            logger.exception("firing template %s failed; retrying in a few seconds", template_id)
            retry = threading.Timer(RETRY_SECONDS, self.update, args=(template_id, due))
            retry.daemon = True
            retry.start()
            return
        if next_fire_at is not None:
            self.update(template_id, next_fire_at)

    def _fire(self, template_id: str, due: datetime) -> datetime | None:
        now = self._clock.now()
        with self._store.write() as conn:
            template = template_store.locked_template_by_id(conn, template_id)
            trigger = template.spec.trigger
            if template.suspended or not isinstance(trigger, CronTrigger):
                return None
            if template.next_fire_at != due:
                return template.next_fire_at  # changed by an edit or another replica
            schedule = cron.parse_schedule(trigger.schedule, trigger.timezone)
            firing = planning.plan_firing(schedule, due, now, trigger.starting_deadline)
            _report_missed(conn, template, firing, trigger, now)
            if firing.fire_at is not None:
                _launch(conn, template, firing.fire_at, now)
            template_store.set_next_fire(conn, template_id, firing.next_fire_at)
        return firing.next_fire_at


def _launch(conn: Connection, template: Template, fire_at: datetime, now: datetime) -> None:
    request = TaskRequest(trigger=TriggerKind.CRON, scheduled_time=fire_at)
    try:
        with conn.begin_nested():
            launch_task(conn, template, request, now)
    except ConcurrencyForbidden as err:
        record_forbidden(conn, template, err, now)


def _report_missed(
    conn: Connection,
    template: Template,
    firing: planning.Firing,
    trigger: CronTrigger,
    now: datetime,
) -> None:
    if firing.missed_from is None:
        return
    span = firing.missed_from.isoformat()
    if firing.missed_to is not None and firing.missed_to != firing.missed_from:
        span += f" .. {firing.missed_to.isoformat()}"
    ran = (
        f"; ran the latest, {firing.fire_at.isoformat()}, instead"
        if firing.fire_at is not None
        else f"; none is within the starting deadline of {trigger.starting_deadline} s"
    )
    text = f"missed firings at {span} (the server was not running or was late){ran}"
    template_event(conn, template, Reason.MISSED_SCHEDULE, text, now, Severity.WARNING)
