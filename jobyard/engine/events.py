"""Helpers that phrase and store events in the caller's transaction."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.engine import Connection

from jobyard.domain import Instance, NewEvent, Severity, SourceType, Task, Template
from jobyard.store import events as event_store

logger = logging.getLogger(__name__)


def template_event(
    conn: Connection,
    template: Template,
    reason: str,
    message: str,
    now: datetime,
    severity: Severity = Severity.NORMAL,
    source_type: SourceType = SourceType.TEMPLATE,
) -> None:
    _add(conn, new_template_event(template, reason, message, severity, source_type), now)


def new_template_event(
    template: Template,
    reason: str,
    message: str,
    severity: Severity = Severity.NORMAL,
    source_type: SourceType = SourceType.TEMPLATE,
    source_name: str | None = None,
    task_id: int | None = None,
) -> NewEvent:
    """A template's event (or one of its tasks'), to be stored with others by
    ``add_events``; the source is named after the template unless named."""
    return NewEvent(
        source_type=source_type,
        source_name=template.name if source_name is None else source_name,
        reason=reason,
        message=message,
        severity=severity,
        namespace=template.namespace,
        template_name=template.name,
        template_id=template.id,
        task_id=task_id,
    )


def new_task_event(
    template: Template,
    task_id: int,
    reason: str,
    message: str,
    severity: Severity = Severity.NORMAL,
) -> NewEvent:
    """A task's event when only its template and id are at hand (a task just inserted).
    Made at once, not by ``of_task``: a firing makes one for each of its templates."""
    source_name = f"{task_source_prefix(template.name)}{task_id}"
    return new_template_event(
        template, reason, message, severity, SourceType.TASK, source_name, task_id
    )


def new_event_of_new_task(
    template: Template, reason: str, message: str, severity: Severity = Severity.NORMAL
) -> NewEvent:
    """A task's event before the task has an id (``store.launched``): ``of_task`` gives
    it the id, in its task id and at the end of its source name."""
    source_name = task_source_prefix(template.name)
    return new_template_event(template, reason, message, severity, SourceType.TASK, source_name)


def task_source_prefix(template_name: str) -> str:
    """A task event's source name is this followed by the task's id."""
    return f"{template_name}/task-"


def task_event(
    conn: Connection,
    task: Task,
    reason: str,
    message: str,
    now: datetime,
    severity: Severity = Severity.NORMAL,
) -> None:
    _add(conn, new_event_of_task(task, reason, message, severity), now)


def instance_event(
    conn: Connection,
    task: Task,
    instance: Instance,
    reason: str,
    message: str,
    now: datetime,
    severity: Severity = Severity.NORMAL,
) -> None:
    _add(conn, new_instance_event(task, instance, reason, message, severity), now)


def new_instance_event(
    task: Task,
    instance: Instance,
    reason: str,
    message: str,
    severity: Severity = Severity.NORMAL,
) -> NewEvent:
    """An instance's event, to be stored with others by ``add_events``."""
    source = f"{task.template_name}/task-{task.id}/instance-{instance.index}"
    return _of_task(task, SourceType.INSTANCE, source, reason, message, severity, instance.id)


def new_event_of_task(
    task: Task, reason: str, message: str, severity: Severity = Severity.NORMAL
) -> NewEvent:
    """A task's event, to be stored with others by ``add_events``."""
    source = f"{task_source_prefix(task.template_name)}{task.id}"
    return _of_task(task, SourceType.TASK, source, reason, message, severity)


def _of_task(
    task: Task,
    source_type: SourceType,
    source_name: str,
    reason: str,
    message: str,
    severity: Severity,
    instance_id: int | None = None,
) -> NewEvent:
    return NewEvent(
        source_type=source_type,
        source_name=source_name,
        reason=reason,
        message=message,
        severity=severity,
        namespace=task.namespace,
        template_name=task.template_name,
        template_id=task.template_id,
        task_id=task.id,
        instance_id=instance_id,
    )


def add_events(conn: Connection, events: Sequence[NewEvent], now: datetime) -> None:
    """Log and store many events with one statement."""
    for event in events:
        log_event(event)
    event_store.add_events(conn, events, now)


def _add(conn: Connection, event: NewEvent, now: datetime) -> None:
    log_event(event)
    event_store.add_event(conn, event, now)


def log_event(event: NewEvent) -> None:
    """Log an event as it is stored (the helpers here do it themselves)."""
    level = logging.INFO if event.severity is Severity.NORMAL else logging.WARNING
    logger.log(level, "%s %s: %s", event.reason, event.source_name, event.message)
