"""A task without a key inserted with its first instances and its creation event.

On PostgreSQL one statement writes all three: the instances and the event take the
new task's id from the task's ``INSERT ... RETURNING`` as a CTE. That is one round
trip instead of three on the path of every HTTP trigger's start. SQLite, in the
server's own process, runs the three statements.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from jobyard.domain import InstanceStatus, NewEvent, Task
from jobyard.planning import CreateAttempt
from jobyard.store import events as event_store
from jobyard.store import instances as instance_store
from jobyard.store.tables import UTCDateTime, events, instances, tasks
from jobyard.store.tasks import NewTask, insert_task, task_of, task_row

_INSTANCE_COLUMNS = (
    "task_id", "index", "attempt", "status", "shards", "not_before", "run_as", "created_at"
)  # fmt: skip


def insert_with_instances(
    conn: Connection,
    new: NewTask,
    names: tuple[str, str],
    now: datetime,
    attempts: Sequence[CreateAttempt],
    event: NewEvent,
) -> Task:
    """Insert a pending task without a scheduled time or event id (none can conflict),
    one pending instance per attempt, and ``event``; the task as inserted.

    ``names``: the template's (namespace, name). ``event`` is the task's with no task
    id yet: it gets the new task's, and its source name is ``event.source_name``
    followed by that id.
    """
    if new.scheduled_time is not None or new.event_id is not None:
        raise ValueError("insert_with_instances takes tasks without a scheduled time or event id")
    if conn.dialect.name == "postgresql":
        return _in_one_statement(conn, new, names, now, attempts, event)
    namespace, template_name = names
    task = insert_task(conn, new, now, namespace, template_name)
    assert task is not None  # no key: nothing to conflict with
    news = [instance_store.NewInstance.of(task.id, attempt) for attempt in attempts]
    instance_store.add_instances(conn, news, now)
    source_name = f"{event.source_name}{task.id}"
    event_store.add_event(
        conn, dataclasses.replace(event, task_id=task.id, source_name=source_name), now
    )
    return task


def _in_one_statement(
    conn: Connection,
    new: NewTask,
    names: tuple[str, str],
    now: datetime,
    attempts: Sequence[CreateAttempt],
    event: NewEvent,
) -> Task:
    new_task = tasks.insert().values(task_row(new, now)).returning(*tasks.c).cte("new_task")
    statement = sa.select(new_task).add_cte(
        _instances_of(new_task, attempts, now), _event_of(new_task, event, now)
    )
    row = conn.execute(statement).one()
    namespace, template_name = names
    return task_of({**row._mapping, "namespace": namespace, "template_name": template_name})


def _instances_of(new_task: sa.CTE, attempts: Sequence[CreateAttempt], now: datetime) -> sa.CTE:
    rows = [
        sa.select(
            new_task.c.id,
            sa.literal(attempt.index, sa.Integer()),
            sa.literal(attempt.attempt, sa.Integer()),
            sa.literal(InstanceStatus.PENDING.value, sa.String()),
            sa.literal(attempt.shards, sa.JSON()),
            sa.literal(attempt.not_before, UTCDateTime()),
            sa.literal(attempt.run_as.value, sa.String()),
            sa.literal(now, UTCDateTime()),
        )
        for attempt in attempts
    ]
    names = [
        "task_id",
        "index",
        "attempt",
        "status",
        "shards",
        "not_before",
        "run_as",
        "created_at",
    ]
    selected = rows[0] if len(rows) == 1 else sa.union_all(*rows)
    return instances.insert().from_select(names, selected).cte("new_instances")


def _event_of(new_task: sa.CTE, event: NewEvent, now: datetime) -> sa.CTE:
    values: dict[str, Any] = {
        "namespace": sa.literal(event.namespace, sa.String()),
        "template_id": sa.literal(event.template_id, sa.String()),
        "template_name": sa.literal(event.template_name, sa.String()),
        "task_id": new_task.c.id,
        "source_type": sa.literal(event.source_type.value, sa.String()),
        "source_name": sa.literal(event.source_name, sa.String())
        + sa.cast(new_task.c.id, sa.String()),
        "reason": sa.literal(event.reason, sa.String()),
        "severity": sa.literal(event.severity.value, sa.String()),
        "message": sa.literal(event.message, sa.String()),
        "created_at": sa.literal(now, UTCDateTime()),
    }
    selected = sa.select(*values.values())
    return events.insert().from_select(list(values), selected).cte("new_event")
