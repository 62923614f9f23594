"""A task without a key inserted with its first instances and its creation event.

On PostgreSQL one statement writes all three: the instances and the event take the
new task's id from the task's ``INSERT ... RETURNING`` as a CTE. That is one round
trip instead of three on the path of every HTTP trigger's start. SQLite, in the
server's own process, runs the three statements, as PostgreSQL does for a task of
more than ``ONE_STATEMENT_MAX`` instances.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from jobyard.domain import NewEvent, Task
from jobyard.planning import CreateAttempt
from jobyard.store import events as event_store
from jobyard.store import instances as instance_store
from jobyard.store.bulk import typed_param
from jobyard.store.tables import events, instances, tasks
from jobyard.store.tasks import TASK_ROW_COLUMNS, NewTask, insert_task, task_of, task_row

# Instances one statement takes at most (a row of parameters each); a task of more
# replicas is written as on SQLite, its instances by one bulk insert (store/bulk.py).
ONE_STATEMENT_MAX = 16
_INSTANCE_COLUMNS = ("index", "attempt", "status", "shards", "not_before", "run_as", "created_at")
_EVENT_COLUMNS = (
    "namespace", "template_id", "template_name", "source_type", "source_name", "reason",
    "severity", "message", "created_at",
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
    id yet: it is stored as ``event.of_task(<the new id>)``.
    """
    if new.scheduled_time is not None or new.event_id is not None:
        raise ValueError("insert_with_instances takes tasks without a scheduled time or event id")
    if conn.dialect.name == "postgresql" and len(attempts) <= ONE_STATEMENT_MAX:
        return _in_one_statement(conn, new, names, now, attempts, event)
    namespace, template_name = names
    task = insert_task(conn, new, now, namespace, template_name)
    assert task is not None  # no key: nothing to conflict with
    news = [instance_store.NewInstance.of(task.id, attempt) for attempt in attempts]
    instance_store.add_instances(conn, news, now)
    event_store.add_event(conn, event.of_task(task.id), now)
    return task


def _in_one_statement(
    conn: Connection,
    new: NewTask,
    names: tuple[str, str],
    now: datetime,
    attempts: Sequence[CreateAttempt],
    event: NewEvent,
) -> Task:
    params = {f"task_{name}": value for name, value in task_row(new, now).items()}
    for n, attempt in enumerate(attempts):
        params.update(_attempt_params(n, attempt, now))
    params.update(_event_params(event, now))
    row = conn.execute(_statement(len(attempts)), params).one()
    namespace, template_name = names
    return task_of({**row._mapping, "namespace": namespace, "template_name": template_name})


@functools.cache
def _statement(attempts: int) -> sa.Select[Any]:
    """The statement for a task of ``attempts`` instances, with bound parameters: built
    and keyed for SQLAlchemy's statement cache once, not at every launch (~1 ms)."""
    values = {name: typed_param(tasks, f"task_{name}", name) for name in TASK_ROW_COLUMNS}
    new_task = tasks.insert().values(values).returning(*tasks.c).cte("new_task")
    return sa.select(new_task).add_cte(_instances_of(new_task, attempts), _event_of(new_task))


def _instances_of(new_task: sa.CTE, attempts: int) -> sa.CTE:
    rows = [
        sa.select(
            new_task.c.id,
            *(typed_param(instances, f"attempt_{n}_{name}", name) for name in _INSTANCE_COLUMNS),
        )
        for n in range(attempts)
    ]
    selected = rows[0] if len(rows) == 1 else sa.union_all(*rows)
    columns = ["task_id", *_INSTANCE_COLUMNS]
    return instances.insert().from_select(columns, selected).cte("new_instances")


def _event_of(new_task: sa.CTE) -> sa.CTE:
    values: dict[str, Any] = {
        name: typed_param(events, f"event_{name}", name) for name in _EVENT_COLUMNS
    }
    values["task_id"] = new_task.c.id
    values["source_name"] = values["source_name"] + sa.cast(new_task.c.id, sa.String())
    selected = sa.select(*values.values())
    return events.insert().from_select(list(values), selected).cte("new_event")


def _attempt_params(n: int, attempt: CreateAttempt, now: datetime) -> dict[str, Any]:
    row = instance_store.instance_row(instance_store.NewInstance.of(0, attempt), now)
    return {f"attempt_{n}_{name}": row[name] for name in _INSTANCE_COLUMNS}  # the id: the CTE's


def _event_params(event: NewEvent, now: datetime) -> dict[str, Any]:
    row = event_store.event_row(event, now)
    return {f"event_{name}": row[name] for name in _EVENT_COLUMNS}
