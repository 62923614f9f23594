"""Queries on tasks and their instances."""

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
    LIVE_INSTANCE_STATUSES,
    Instance,
    InstanceStatus,
    RunAs,
    Task,
    TaskStatus,
    TriggerKind,
)
from jobyard.errors import NotFound
from jobyard.store.bulk import insert_rows
from jobyard.store.tables import instances, tasks, templates

_TASK_COLUMNS = (tasks, templates.c.namespace, templates.c.name.label("template_name"))


def _task_select() -> sa.Select[Any]:
    joined = tasks.join(templates, templates.c.id == tasks.c.template_id)
    return sa.select(*_TASK_COLUMNS).select_from(joined)


def _task(row: Row[Any]) -> Task:
    return _task_of(row._mapping)


def _task_of(m: Mapping[Any, Any]) -> Task:
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


def _task_row(new: NewTask, now: datetime) -> dict[str, Any]:
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


def insert_task(
    conn: Connection, new: NewTask, now: datetime, namespace: str, template_name: str
) -> Task | None:
    """Insert a pending task of the template named so; None when its (template,
    scheduled time or event id) exists. Returns the row as inserted: no read back."""
    insert = tasks.insert().values(**_task_row(new, now)).returning(*tasks.c)
    names = {"namespace": namespace, "template_name": template_name}
    if new.scheduled_time is None and new.event_id is None:
        # No key that another writer could hold: no savepoint needed.
        return _task_of({**conn.execute(insert).one()._mapping, **names})
    try:
        with conn.begin_nested():
            row = conn.execute(insert).one()
    except IntegrityError:
        return None
    return _task_of({**row._mapping, **names})


def insert_tasks(
    conn: Connection, news: Sequence[NewTask], names: Sequence[tuple[str, str]], now: datetime
) -> list[Task]:
    """Insert many pending tasks without a key (no scheduled time, no event id) in one
    statement (store/bulk.py); the tasks in the order of ``news``, whose templates'
    (namespace, name) are ``names``."""
    if any(new.scheduled_time is not None or new.event_id is not None for new in news):
        raise ValueError("insert_tasks takes tasks without a scheduled time or event id")
    rows = [_task_row(new, now) for new in news]
    inserted = insert_rows(conn, tasks, rows, returning=list(tasks.c))
    ordered = sorted(inserted, key=lambda row: int(row.id))
    if [row.template_id for row in ordered] != [new.template_id for new in news]:
        raise RuntimeError("inserted tasks came back out of order")
    return [
        _task_of({**row._mapping, "namespace": namespace, "template_name": name})
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
    rows = [_task_row(new, now) for new in news]
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


MAX_ID = 2**63 - 1  # the largest integer key either database stores


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
    head = (
        sa.select(tasks.c.id)
        .where(tasks.c.status == TaskStatus.PENDING.value)
        .order_by(tasks.c.id)
        .limit(pending_window)
    )
    query = _task_select().where(
        sa.or_(
            tasks.c.status == TaskStatus.RUNNING.value,
            sa.and_(tasks.c.status == TaskStatus.PENDING.value, tasks.c.ending_reason.is_not(None)),
            tasks.c.id.in_(head.scalar_subquery()),
        )
    )
    return [_task(row) for row in conn.execute(query.order_by(tasks.c.id))]


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


def finish_task(
    conn: Connection, task_id: int, status: TaskStatus, reason: str, message: str, now: datetime
) -> None:
    conn.execute(
        tasks.update()
        .where(tasks.c.id == task_id, tasks.c.status.in_([s.value for s in ACTIVE_TASK_STATUSES]))
        .values(status=status.value, reason=reason, message=message, finished_at=now)
    )


def delete_task(conn: Connection, task_id: int) -> None:
    conn.execute(tasks.delete().where(tasks.c.id == task_id))


# -- instances ---------------------------------------------------------------


def _instance(row: Row[Any]) -> Instance:
    m = row._mapping
    return Instance(
        id=m["id"],
        task_id=m["task_id"],
        index=m["index"],
        attempt=m["attempt"],
        status=InstanceStatus(m["status"]),
        reason=m["reason"],
        message=m["message"],
        exit_code=m["exit_code"],
        pid=m["pid"],
        shards=list(m["shards"]),
        not_before=m["not_before"],
        created_at=m["created_at"],
        started_at=m["started_at"],
        finished_at=m["finished_at"],
        stop_requested=bool(m["stop_requested"]),
        run_as=RunAs(m["run_as"]),
        preempt_requested=bool(m["preempt_requested"]),
        waiting_reason=m["waiting_reason"],
        peak_memory_bytes=m["peak_memory_bytes"],
        cpu_seconds=m["cpu_seconds"],
    )


def insert_instance(
    conn: Connection,
    task_id: int,
    index: int,
    attempt: int,
    shards: list[str],
    not_before: datetime | None,
    now: datetime,
    run_as: RunAs = RunAs.DEFAULT,
) -> Instance:
    result = conn.execute(
        instances.insert()
        .values(
            run_as=run_as.value,
            task_id=task_id,
            index=index,
            attempt=attempt,
            status=InstanceStatus.PENDING.value,
            shards=shards,
            not_before=not_before,
            created_at=now,
        )
        .returning(instances)
    )
    return _instance(result.one())


@dataclass(frozen=True)
class NewInstance:
    task_id: int
    index: int
    attempt: int
    shards: list[str]
    not_before: datetime | None
    run_as: RunAs = RunAs.DEFAULT


def insert_instances(
    conn: Connection, news: Sequence[NewInstance], now: datetime
) -> dict[tuple[int, int, int], Instance]:
    """Insert pending instances in one statement (store/bulk.py); by (task id,
    index, attempt)."""
    inserted = insert_rows(conn, instances, _instance_rows(news, now), returning=list(instances.c))
    return {(i.task_id, i.index, i.attempt): i for i in map(_instance, inserted)}


def add_instances(conn: Connection, news: Sequence[NewInstance], now: datetime) -> None:
    """``insert_instances``, without reading them back."""
    insert_rows(conn, instances, _instance_rows(news, now))


def _instance_rows(news: Sequence[NewInstance], now: datetime) -> list[dict[str, Any]]:
    return [
        {
            "run_as": new.run_as.value,
            "task_id": new.task_id,
            "index": new.index,
            "attempt": new.attempt,
            "status": InstanceStatus.PENDING.value,
            "shards": new.shards,
            "not_before": new.not_before,
            "created_at": now,
        }
        for new in news
    ]


def instances_of(conn: Connection, task_ids: Sequence[int]) -> list[Instance]:
    if not task_ids:
        return []
    query = (
        sa.select(instances)
        .where(instances.c.task_id.in_(list(task_ids)))
        .order_by(instances.c.task_id, instances.c.index, instances.c.attempt)
    )
    return [_instance(row) for row in conn.execute(query)]


def get_instance(conn: Connection, instance_id: int) -> Instance:
    if not 0 < instance_id <= MAX_ID:
        raise NotFound(f"instance {instance_id} does not exist")
    row = conn.execute(sa.select(instances).where(instances.c.id == instance_id)).first()
    if row is None:
        raise NotFound(f"instance {instance_id} does not exist")
    return _instance(row)


def live_instances(conn: Connection) -> list[Instance]:
    query = sa.select(instances).where(
        instances.c.status.in_([s.value for s in LIVE_INSTANCE_STATUSES])
    )
    return [_instance(row) for row in conn.execute(query)]


def mark_instance_running(conn: Connection, instance_id: int, pid: int, now: datetime) -> None:
    conn.execute(
        instances.update()
        .where(instances.c.id == instance_id)
        .values(status=InstanceStatus.RUNNING.value, pid=pid, started_at=now, waiting_reason=None)
    )


def set_run_as(conn: Connection, instance_id: int, run_as: RunAs) -> None:
    conn.execute(
        instances.update().where(instances.c.id == instance_id).values(run_as=run_as.value)
    )


def request_instance_stop(conn: Connection, instance_id: int, preempt: bool = False) -> None:
    values: dict[str, Any] = {"stop_requested": True}
    if preempt:
        values["preempt_requested"] = True
    conn.execute(instances.update().where(instances.c.id == instance_id).values(**values))


def set_waiting_reason(conn: Connection, instance_id: int, reason: str | None) -> None:
    conn.execute(
        instances.update().where(instances.c.id == instance_id).values(waiting_reason=reason)
    )


@dataclass(frozen=True)
class Usage:
    """What an ended instance used, as its runner measured it (None: not measured)."""

    peak_memory_bytes: int | None = None
    cpu_seconds: float | None = None


def finish_instance(
    conn: Connection,
    instance_id: int,
    status: InstanceStatus,
    exit_code: int | None,
    reason: str | None,
    message: str | None,
    now: datetime,
    usage: Usage | None = None,
) -> bool:
    """End a live instance (with its usage, if measured); False when it had already
    ended (a repeated report)."""
    values: dict[str, Any] = {
        "status": status.value,
        "exit_code": exit_code,
        "reason": reason,
        "message": message,
        "finished_at": now,
    }
    if usage is not None:
        values.update(peak_memory_bytes=usage.peak_memory_bytes, cpu_seconds=usage.cpu_seconds)
    result = conn.execute(
        instances.update()
        .where(
            instances.c.id == instance_id,
            instances.c.status.in_([s.value for s in LIVE_INSTANCE_STATUSES]),
        )
        .values(**values)
    )
    return bool(result.rowcount)


def existing_task_ids(conn: Connection, task_ids: Sequence[int]) -> set[int]:
    query = sa.select(tasks.c.id).where(tasks.c.id.in_(list(task_ids)))
    return {row.id for row in conn.execute(query)}


# -- many at once (the controller's turns) -------------------------------------


def get_tasks(conn: Connection, task_ids: Sequence[int]) -> dict[int, Task]:
    if not task_ids:
        return {}
    rows = conn.execute(_task_select().where(tasks.c.id.in_(list(task_ids)))).all()
    return {row.id: _task(row) for row in rows}


def get_instances(conn: Connection, instance_ids: Sequence[int]) -> dict[int, Instance]:
    if not instance_ids:
        return {}
    query = sa.select(instances).where(instances.c.id.in_(list(instance_ids)))
    return {row.id: _instance(row) for row in conn.execute(query).all()}


_MARK_RUNNING = (
    instances.update()
    .where(
        instances.c.id == sa.bindparam("instance_id"),
        instances.c.status == InstanceStatus.PENDING.value,
    )
    .values(
        status=InstanceStatus.RUNNING.value,
        pid=sa.bindparam("pid"),
        started_at=sa.bindparam("now"),
        waiting_reason=None,
    )
)


def mark_instances_running(
    conn: Connection, started: Sequence[tuple[int, int]], now: datetime
) -> set[int]:
    """Record (instance id, pid) starts; the ids now running with that pid and
    no stop requested.

    An instance missing from the answer ended, was deleted or was asked to stop
    (preempted) while it was being spawned: its process must be stopped.
    """
    if not started:
        return set()
    params = [{"instance_id": i, "pid": pid, "now": now} for i, pid in started]
    conn.execute(_MARK_RUNNING, params)
    query = sa.select(instances.c.id, instances.c.pid).where(
        instances.c.id.in_([i for i, _ in started]),
        instances.c.status == InstanceStatus.RUNNING.value,
        instances.c.stop_requested.is_(False),
    )
    pids = dict(started)
    return {row.id for row in conn.execute(query).all() if row.pid == pids[row.id]}


def mark_tasks_running(conn: Connection, task_ids: Sequence[int], now: datetime) -> set[int]:
    """Pending tasks among ``task_ids`` become running; the ids that did."""
    if not task_ids:
        return set()
    result = conn.execute(
        tasks.update()
        .where(tasks.c.id.in_(list(task_ids)), tasks.c.status == TaskStatus.PENDING.value)
        .values(status=TaskStatus.RUNNING.value, started_at=now)
        .returning(tasks.c.id)
    )
    return {row.id for row in result.all()}
