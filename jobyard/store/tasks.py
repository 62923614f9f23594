"""Queries on tasks (their instances: store/instances.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import IntegrityError

from jobyard.domain import (
    ACTIVE_TASK_STATUSES,
    Task,
    TaskStatus,
    TriggerKind,
)
from jobyard.errors import NotFound
from jobyard.store.bulk import ending_update, insert_rows, typed_param
from jobyard.store.tables import MAX_ID, tasks, templates

_TASK_COLUMNS = (tasks, templates.c.namespace, templates.c.name.label("template_name"))


def _task_select() -> sa.Select[Any]:
    joined = tasks.join(templates, templates.c.id == tasks.c.template_id)
    return sa.select(*_TASK_COLUMNS).select_from(joined)


def _task(row: Row[Any]) -> Task:
    return task_of(row._mapping)


def task_of(m: Mapping[Any, Any]) -> Task:
    """A task from a row of the tasks table's columns with its template's namespace and
    ``template_name``, by their names."""
    return Task(
        id=m["id"],
        template_id=m["template_id"],
        namespace=m["namespace"],
        template_name=m["template_name"],
        template_version=m["template_version"],
        trigger=TriggerKind(m["trigger"]),
        status=TaskStatus(m["status"]),
        reason=m["reason"],
        message=m["message"],
        overrides=dict(m["overrides"]),
        instance_count=m["instance_count"],
        scheduled_time=m["scheduled_time"],
        event_id=m["event_id"],
        created_at=m["created_at"],
        started_at=m["started_at"],
        finished_at=m["finished_at"],
        ending_reason=m["ending_reason"],
        ending_message=m["ending_message"],
        payload=m["payload"],
    )


@dataclass(frozen=True)
class NewTask:
    template_id: str
    template_version: int
    trigger: TriggerKind
    overrides: dict[str, Any]
    instance_count: int
    scheduled_time: datetime | None = None
    event_id: str | None = None
    payload: dict[str, Any] | None = None


TASK_ROW_COLUMNS = (
    "template_id", "template_version", "trigger", "status", "overrides", "instance_count",
    "scheduled_time", "event_id", "payload", "created_at",
)  # fmt: skip


def task_row(new: NewTask, now: datetime) -> dict[str, Any]:
    """The values of a new task's row."""
    return {
        "template_id": new.template_id,
        "template_version": new.template_version,
        "trigger": new.trigger.value,
        "status": TaskStatus.PENDING.value,
        "overrides": new.overrides,
        "instance_count": new.instance_count,
        "scheduled_time": new.scheduled_time,
        "event_id": new.event_id,
        "payload": new.payload,
        "created_at": now,
    }


# Built once, the values as parameters: on the path of every trigger, building and
# keying the statement cost more than running it.
_INSERT = (
    tasks.insert()
    .values({name: typed_param(tasks, name, name) for name in TASK_ROW_COLUMNS})
    .returning(*tasks.c)
)


def insert_task(
    conn: Connection, new: NewTask, now: datetime, namespace: str, template_name: str
) -> Task | None:
    """Insert a pending task of the template named so; None when its (template,
    scheduled time or event id) exists. Returns the row as inserted: no read back."""
    row_values = task_row(new, now)
    names = {"namespace": namespace, "template_name": template_name}
    if new.scheduled_time is None and new.event_id is None:
        # No key that another writer could hold: no savepoint needed.
        return task_of({**conn.execute(_INSERT, row_values).one()._mapping, **names})
    try:
        with conn.begin_nested():
            row = conn.execute(_INSERT, row_values).one()
    except IntegrityError:
        return None
    return task_of({**row._mapping, **names})


def insert_tasks(
    conn: Connection, news: Sequence[NewTask], names: Sequence[tuple[str, str]], now: datetime
) -> list[Task]:
    """Insert many pending tasks without a key (no scheduled time, no event id) in one
    statement (store/bulk.py); the tasks in the order of ``news``, whose templates'
    (namespace, name) are ``names``."""
    if any(new.scheduled_time is not None or new.event_id is not None for new in news):
        raise ValueError("insert_tasks takes tasks without a scheduled time or event id")
    rows = [task_row(new, now) for new in news]
    inserted = insert_rows(conn, tasks, rows, returning=list(tasks.c))
    ordered = sorted(inserted, key=lambda row: int(row.id))
    if [row.template_id for row in ordered] != [new.template_id for new in news]:
        raise RuntimeError("inserted tasks came back out of order")
    return [
        task_of({**row._mapping, "namespace": namespace, "template_name": name})
        for row, (namespace, name) in zip(ordered, names, strict=True)
    ]


def insert_scheduled_tasks(
    conn: Connection, news: Sequence[NewTask], now: datetime
) -> dict[str, int]:
    """Insert many pending tasks with a scheduled time in one statement (store/bulk.py).

    A task whose (template, scheduled time) already exists is left out (``ON CONFLICT DO
    NOTHING``: another replica recorded it). Returns the new task ids by template id, so
    each template appears at most once in ``news``.
    """
    if not news:
        return {}
    if len({new.template_id for new in news}) != len(news):
        raise ValueError("insert_scheduled_tasks takes at most one task per template")
    rows = [task_row(new, now) for new in news]
    inserted = insert_rows(
        conn,
        tasks,
        rows,
        returning=[tasks.c.id, tasks.c.template_id],
        skip_conflicts_on=[tasks.c.template_id, tasks.c.scheduled_time],
    )
    return {row.template_id: int(row.id) for row in inserted}


def find_task_by_key(
    conn: Connection, template_id: str, scheduled_time: datetime | None, event_id: str | None
) -> Task | None:
    query = _task_select().where(tasks.c.template_id == template_id)
    if scheduled_time is not None:
        query = query.where(tasks.c.scheduled_time == scheduled_time)
    else:
        query = query.where(tasks.c.event_id == event_id)
    row = conn.execute(query).first()
    return None if row is None else _task(row)


def get_task(conn: Connection, task_id: int) -> Task:
    if not 0 < task_id <= MAX_ID:
        raise NotFound(f"task {task_id} does not exist")
    row = conn.execute(_task_select().where(tasks.c.id == task_id)).first()
    if row is None:
        raise NotFound(f"task {task_id} does not exist")
    return _task(row)


def list_tasks(
    conn: Connection,
    template_id: str | None,
    statuses: Sequence[str] | None,
    limit: int,
    offset: int,
) -> list[Task]:
    query = _task_select().order_by(tasks.c.id.desc()).limit(limit).offset(offset)
    if template_id is not None:
        query = query.where(tasks.c.template_id == template_id)
    if statuses:
        query = query.where(tasks.c.status.in_(list(statuses)))
    return [_task(row) for row in conn.execute(query)]


def active_tasks(conn: Connection, template_id: str | None = None) -> list[Task]:
    query = _task_select().where(tasks.c.status.in_([s.value for s in ACTIVE_TASK_STATUSES]))
    if template_id is not None:
        query = query.where(tasks.c.template_id == template_id)
    return [_task(row) for row in conn.execute(query.order_by(tasks.c.id))]


def tasks_to_reconcile(conn: Connection, pending_window: int) -> list[Task]:
    """Every running or ending task, and the oldest ``pending_window`` pending ones.

    Bounds a controller turn when a backlog of queued tasks builds up: the
    others wait their turn, in order (their timeouts are checked once they
    are in the window).
    """
    query = _task_select().where(in_play(pending_window))
    return [_task(row) for row in conn.execute(query.order_by(tasks.c.id))]


def in_play(pending_window: int) -> sa.ColumnElement[bool]:
    """The condition on ``tasks`` of ``tasks_to_reconcile``."""
    head = (
        sa.select(tasks.c.id)
        .where(tasks.c.status == TaskStatus.PENDING.value)
        .order_by(tasks.c.id)
        .limit(pending_window)
    )
    return sa.or_(
        tasks.c.status == TaskStatus.RUNNING.value,
        sa.and_(tasks.c.status == TaskStatus.PENDING.value, tasks.c.ending_reason.is_not(None)),
        tasks.c.id.in_(head.scalar_subquery()),
    )


def task_ids_of_template(conn: Connection, template_id: str) -> list[int]:
    query = sa.select(tasks.c.id).where(tasks.c.template_id == template_id)
    return [row.id for row in conn.execute(query)]


def begin_ending(conn: Connection, task_id: int, reason: str, message: str) -> bool:
    """Record the decision to end an active task; False if it was already ending or over."""
    result = conn.execute(
        tasks.update()
        .where(
            tasks.c.id == task_id,
            tasks.c.ending_reason.is_(None),
            tasks.c.status.in_([s.value for s in ACTIVE_TASK_STATUSES]),
        )
        .values(ending_reason=reason, ending_message=message)
    )
    return bool(result.rowcount)


def mark_task_running(conn: Connection, task_id: int, now: datetime) -> None:
    conn.execute(
        tasks.update()
        .where(tasks.c.id == task_id, tasks.c.status == TaskStatus.PENDING.value)
        .values(status=TaskStatus.RUNNING.value, started_at=now)
    )


@dataclass(frozen=True)
class TaskEnd:
    """How an active task ended: what ``finish_tasks`` records."""

    task_id: int
    status: TaskStatus
    reason: str
    message: str


_FINISH = ending_update(
    tasks,
    "task_id",
    [status.value for status in ACTIVE_TASK_STATUSES],
    {
        column: typed_param(tasks, "end_" + column, column)
        for column in ("status", "reason", "message")
    }
    | {"finished_at": typed_param(tasks, "now", "finished_at")},
)


def finish_tasks(conn: Connection, ends: Sequence[TaskEnd], now: datetime) -> None:
    """End many active tasks with one statement; one already ended stays as it was."""
    params = [
        {
            "task_id": end.task_id,
            "end_status": end.status.value,
            "end_reason": end.reason,
            "end_message": end.message,
            "now": now,
        }
        for end in ends
    ]
    if params:
        conn.execute(_FINISH, params)


def delete_task(conn: Connection, task_id: int) -> None:
    conn.execute(tasks.delete().where(tasks.c.id == task_id))


# -- instances ---------------------------------------------------------------


def existing_task_ids(conn: Connection, task_ids: Sequence[int]) -> set[int]:
    query = sa.select(tasks.c.id).where(tasks.c.id.in_(list(task_ids)))
    return {row.id for row in conn.execute(query)}


# -- many at once (the controller's turns) -------------------------------------


# The controller's statements are built once, with the ids as an expanding
# parameter: building and keying a statement per turn cost more than running it.
_BY_IDS = _task_select().where(tasks.c.id.in_(sa.bindparam("ids", expanding=True)))
_MARK_RUNNING = (
    tasks.update()
    .where(
        tasks.c.id.in_(sa.bindparam("ids", expanding=True)),
        tasks.c.status == TaskStatus.PENDING.value,
    )
    .values(
        status=TaskStatus.RUNNING.value,
        started_at=sa.bindparam("now", type_=tasks.c.started_at.type),
    )
    .returning(tasks.c.id)
)


def get_tasks(conn: Connection, task_ids: Sequence[int]) -> dict[int, Task]:
    if not task_ids:
        return {}
    rows = conn.execute(_BY_IDS, {"ids": list(task_ids)}).all()
    return {row.id: _task(row) for row in rows}


def mark_tasks_running(conn: Connection, task_ids: Sequence[int], now: datetime) -> set[int]:
    """Pending tasks among ``task_ids`` become running; the ids that did."""
    if not task_ids:
        return set()
    result = conn.execute(_MARK_RUNNING, {"ids": list(task_ids), "now": now})
    return {row.id for row in result.all()}
