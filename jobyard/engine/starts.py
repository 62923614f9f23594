"""Recording what the spawn threads report: instances started, or not.

Spawning runs on the spawn threads while the controller goes on with its
turns; each spawn reports back a ``Started`` through the controller's inbox,
and a turn records every report that arrived since the last one in bulk.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.engine import Connection

from jobyard.domain import Instance, InstanceStatus, NewEvent, Reason, Severity, Task
from jobyard.engine.events import add_events, new_event_of_task, new_instance_event
from jobyard.engine.launches import CannotLaunch, NotReady
from jobyard.store import instances as instance_store
from jobyard.store import tasks as task_store


@dataclass(frozen=True)
class Started:
    """A spawn thread's report: the instance runs as ``pid``, or ``failure`` says why not."""

    task: Task
    instance: Instance
    pid: int | None = None
    failure: CannotLaunch | None = None


def record_started(conn: Connection, reports: Sequence[Started], now: datetime) -> list[int]:
    """Record spawn reports; the ids of instances that run but must be stopped
    (they ended, were deleted or preempted while they were being spawned)."""
    ran = [(r.task, r.instance, r.pid) for r in reports if r.pid is not None]
    running = instance_store.mark_instances_running(conn, [(i.id, pid) for _, i, pid in ran], now)
    # The ones not running were stopped while being spawned: no "started" for them.
    started = [(task, instance, pid) for task, instance, pid in ran if instance.id in running]
    first = task_store.mark_tasks_running(conn, list({task.id for task, _, _ in started}), now)
    events: list[NewEvent] = []
    for task, instance, pid in started:
        if task.id in first:
            first.discard(task.id)
            events.append(new_event_of_task(task, Reason.TASK_STARTED, "first instance started"))
        text = f"instance {instance.index} attempt {instance.attempt} started, pid {pid}"
        events.append(new_instance_event(task, instance, Reason.INSTANCE_STARTED, text))
    for report in reports:
        if report.failure is not None:
            events.append(_failed(conn, report.task, report.instance, report.failure, now))
    add_events(conn, events, now)
    return [instance.id for _, instance, _ in ran if instance.id not in running]


def _failed(
    conn: Connection, task: Task, instance: Instance, failure: CannotLaunch, now: datetime
) -> NewEvent:
    instance_store.finish_instance(
        conn, instance.id, InstanceStatus.FAILED, None, failure.reason, failure.message, now
    )
    text = f"instance {instance.index} could not start: {failure.message}"
    return new_instance_event(task, instance, failure.reason, text, Severity.ERROR)


def record_unstarted(
    conn: Connection,
    failed: Sequence[tuple[Task, Instance, CannotLaunch]],
    waiting: Sequence[tuple[Task, Instance, NotReady]],
    now: datetime,
) -> None:
    """Instances that could not be handed to a spawn thread: failed, or waiting."""
    add_events(conn, [_failed(conn, task, i, failure, now) for task, i, failure in failed], now)
    waits = [Waiting(task, instance, wait.reason, wait.message) for task, instance, wait in waiting]
    record_waiting(conn, waits, now)


@dataclass(frozen=True)
class Waiting:
    """A pending instance that cannot start yet, and why."""

    task: Task
    instance: Instance
    reason: str
    message: str


def record_waiting(conn: Connection, waiting: Sequence[Waiting], now: datetime) -> None:
    """Mark why pending instances wait, all in two statements; an instance's event is
    written once per new reason."""
    new = [wait for wait in waiting if wait.instance.waiting_reason != wait.reason]
    instance_store.set_waiting_reasons(conn, [(w.instance.id, w.reason) for w in new])
    add_events(conn, [_waits(w) for w in new], now)


def _waits(wait: Waiting) -> NewEvent:
    text = f"instance {wait.instance.index} waits: {wait.message}"
    return new_instance_event(wait.task, wait.instance, wait.reason, text, Severity.WARNING)
