"""The controller's read: the tasks in play with their instances, in one statement."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

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


def tasks_in_play(conn: Connection, pending_window: int) -> list[tuple[Task, list[Instance]]]:
    """``tasks_to_reconcile`` with each task's instances (by index, then attempt): one
    round trip instead of two, on the path of every start."""
    joined = tasks.join(templates, templates.c.id == tasks.c.template_id).outerjoin(
        instances, instances.c.task_id == tasks.c.id
    )
    query = (
        sa.select(*_TASK_COLUMNS, *instances.c)
        .select_from(joined)
        .where(in_play(pending_window))
        .order_by(tasks.c.id, instances.c.index, instances.c.attempt)
    )
    found: list[tuple[Task, list[Instance]]] = []
    for row in conn.execute(query):
        m = row._mapping
        if not found or found[-1][0].id != m[_PREFIX + "id"]:
            found.append((_task(m), []))
        if m["id"] is not None:  # a task none of whose instances exists yet
            found[-1][1].append(instance_of(m))
    return found


def _task(m: RowMapping) -> Task:
    return task_of({name[len(_PREFIX) :]: m[name] for name in m if name.startswith(_PREFIX)})
