"""Helpers that phrase and store events in the caller's transaction."""

from __future__ import annotations

import logging
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
    event = NewEvent(
        source_type=source_type,
        source_name=template.name,
        reason=reason,
        message=message,
        severity=severity,
        namespace=template.namespace,
        template_name=template.name,
        template_id=template.id,
    )
    _add(conn, event, now)


def task_event(
    conn: Connection,
    task: Task,
    reason: str,
    message: str,
    now: datetime,
    severity: Severity = Severity.NORMAL,
) -> None:
    source = f"{task.template_name}/task-{task.id}"
    _add(conn, _of_task(task, SourceType.TASK, source, reason, message, severity), now)


def instance_event(
    conn: Connection,
    task: Task,
    instance: Instance,
    reason: str,
    message: str,
    now: datetime,
    severity: Severity = Severity.NORMAL,
) -> None:
    source = f"{task.template_name}/task-{task.id}/instance-{instance.index}"
    event = _of_task(task, SourceType.INSTANCE, source, reason, message, severity, instance.id)
    _add(conn, event, now)


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


def _add(conn: Connection, event: NewEvent, now: datetime) -> None:
    level = logging.INFO if event.severity is Severity.NORMAL else logging.WARNING
    logger.log(level, "%s %s: %s", event.reason, event.source_name, event.message)
    event_store.add_event(conn, event, now)
