"""Recording what the runner reports when instances end."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.engine import Connection

from jobyard.domain import Instance, InstanceStatus, Reason, Severity, Task
from jobyard.engine.events import instance_event
from jobyard.errors import NotFound
from jobyard.runners.base import InstanceExit
from jobyard.store import Store
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


def record_exits(store: Store, now: datetime, exits: list[InstanceExit]) -> None:
    with store.write() as conn:
        for exit in exits:
            record_exit(conn, exit, now)


def record_exit(conn: Connection, exit: InstanceExit, now: datetime) -> None:
    try:
        instance = task_store.get_instance(conn, exit.instance_id)
        task = task_store.get_task(conn, instance.task_id)
    except NotFound:
        return  # deleted with its task while it ran
    status, reason, message = outcome(exit, task, instance)
    end_instance(conn, task, instance, status, exit.exit_code, reason, message, now)
    if exit.peak_memory_bytes is not None or exit.cpu_seconds is not None:
        task_store.record_usage(conn, instance.id, exit.peak_memory_bytes, exit.cpu_seconds)


def end_instance(
    conn: Connection,
    task: Task,
    instance: Instance,
    status: InstanceStatus,
    exit_code: int | None,
    reason: str | None,
    message: str,
    now: datetime,
) -> None:
    if not task_store.finish_instance(conn, instance.id, status, exit_code, reason, message, now):
        return  # already recorded
    event_reason, severity = _EVENT_OF.get(status, (Reason.INSTANCE_FAILED, Severity.WARNING))
    if reason == Reason.OOM_KILLED:
        event_reason = Reason.OOM_KILLED
    text = f"instance {instance.index} attempt {instance.attempt} {message}"
    instance_event(conn, task, instance, event_reason, text, now, severity)
