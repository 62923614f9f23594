"""Recording what the runner reports when instances end."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.engine import Connection

from jobyard.domain import Instance, InstanceStatus, NewEvent, Reason, Severity, Task
from jobyard.engine.events import add_events, new_instance_event
from jobyard.runners.base import InstanceExit
from jobyard.store import instances as instance_store
from jobyard.store import tasks as task_store

MIB = 1024 * 1024


def outcome(
    exit: InstanceExit, task: Task, instance: Instance
) -> tuple[InstanceStatus, str | None, str]:
    """The status, reason and message an ended instance gets."""
    if exit.stopped and instance.preempt_requested and task.ending_reason is None:
        return InstanceStatus.PREEMPTED, Reason.PREEMPTED, "preempted for a default instance"
    if exit.stopped:
        reason = task.ending_reason or Reason.STOPPED
        return InstanceStatus.KILLED, reason, f"stopped ({reason})"
    if exit.oom_killed:
        return InstanceStatus.FAILED, Reason.OOM_KILLED, _oom_message(exit)
    if exit.exit_code is None:
        return InstanceStatus.LOST, Reason.LOST, "the process ended without an exit code"
    if exit.exit_code == 0:
        return InstanceStatus.SUCCEEDED, None, "exited with code 0"
    return InstanceStatus.FAILED, None, f"exited with code {exit.exit_code}"


def _oom_message(exit: InstanceExit) -> str:
    limit = exit.memory_limit_bytes
    what = "its memory limit" if limit is None else f"its memory limit of {limit / MIB:g} MiB"
    code = "" if exit.exit_code is None else f" (exit code {exit.exit_code})"
    return f"passed {what} and was killed{code}"


_EVENT_OF = {
    InstanceStatus.SUCCEEDED: (Reason.INSTANCE_SUCCEEDED, Severity.NORMAL),
    InstanceStatus.FAILED: (Reason.INSTANCE_FAILED, Severity.WARNING),
    InstanceStatus.KILLED: (Reason.INSTANCE_KILLED, Severity.NORMAL),
    InstanceStatus.LOST: (Reason.INSTANCE_LOST, Severity.WARNING),
    InstanceStatus.PREEMPTED: (Reason.PREEMPTED, Severity.WARNING),
}


def record_exits(conn: Connection, exits: Sequence[InstanceExit], now: datetime) -> None:
    """Record many exits in the caller's transaction: two reads, one update for
    every instance, and their events in one statement."""
    found = instance_store.get_instances(conn, [exit.instance_id for exit in exits])
    tasks = task_store.get_tasks(conn, list({i.task_id for i in found.values()}))
    ends: list[instance_store.InstanceEnd] = []
    events: list[NewEvent] = []
    for exit in exits:
        instance = found.get(exit.instance_id)
        task = None if instance is None else tasks.get(instance.task_id)
        if instance is None or task is None:
            continue  # deleted with its task while it ran
        if not instance.is_live:
            continue  # it had ended already: a repeated report
        end, event = _end(exit, task, instance)
        ends.append(end)
        events.append(event)
        # The same instance reported twice in one batch ends once.
        found[instance.id] = dataclasses.replace(instance, status=end.status)
    instance_store.finish_instances(conn, ends, now)
    add_events(conn, events, now)


def _end(
    exit: InstanceExit, task: Task, instance: Instance
) -> tuple[instance_store.InstanceEnd, NewEvent]:
    """How the instance ended, as its exit says, and its event."""
    status, reason, message = outcome(exit, task, instance)
    measured = exit.peak_memory_bytes is not None or exit.cpu_seconds is not None
    usage = instance_store.Usage(exit.peak_memory_bytes, exit.cpu_seconds) if measured else None
    end = instance_store.InstanceEnd(instance.id, status, exit.exit_code, reason, message, usage)
    event_reason, severity = _EVENT_OF.get(status, (Reason.INSTANCE_FAILED, Severity.WARNING))
    if reason == Reason.OOM_KILLED:
        event_reason = Reason.OOM_KILLED
    text = f"instance {instance.index} attempt {instance.attempt} {message}"
    return end, new_instance_event(task, instance, event_reason, text, severity)
