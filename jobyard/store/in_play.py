"""The controller's read: the tasks in play with their instances, in one statement."""

from __future__ import annotations

import functools
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from jobyard.domain import Instance, Task
from jobyard.store.instances import instance_of
from jobyard.store.tables import instances, tasks, templates
from jobyard.store.tasks import in_play, task_of

_PREFIX = "task__"  # no instance column starts so
_TASK_COLUMNS = [
    *(column.label(_PREFIX + column.name) for column in tasks.c),
    templates.c.namespace.label(_PREFIX + "namespace"),
    templates.c.name.label(_PREFIX + "template_name"),
]


@functools.cache
def _in_play_query(pending_window: int) -> sa.Select[Any]:
    """Built once: building and keying this statement cost more than running it."""
    joined = tasks.join(templates, templates.c.id == tasks.c.template_id).outerjoin(
        instances, instances.c.task_id == tasks.c.id
    )
    return (
        sa.select(*_TASK_COLUMNS, *instances.c)
        .select_from(joined)
        .where(in_play(pending_window))
        .order_by(tasks.c.id, instances.c.index, instances.c.attempt)
    )


_TASK_NAMES = [column.name[len(_PREFIX) :] for column in _TASK_COLUMNS]
_INSTANCE_NAMES = [column.name for column in instances.c]


def tasks_in_play(conn: Connection, pending_window: int) -> list[tuple[Task, list[Instance]]]:
    """``tasks_to_reconcile`` with each task's instances (by index, then attempt): one
    round trip instead of two, on the path of every start."""
    found: list[tuple[Task, list[Instance]]] = []
    width = len(_TASK_NAMES)
    # Rows are read by position: a mapping per row cost as much as the query.
    for row in conn.execute(_in_play_query(pending_window)):
        if not found or found[-1][0].id != row[0]:
            found.append((task_of(dict(zip(_TASK_NAMES, row[:width], strict=True))), []))
        if row[width] is not None:  # a task none of whose instances exists yet
            values = dict(zip(_INSTANCE_NAMES, row[width:], strict=True))
            found[-1][1].append(instance_of(values))
    return found
