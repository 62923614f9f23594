"""The controller's read: the tasks in play with their instances, in one statement.

Every turn reads every row in play: the database stays the truth, and the read is
level-triggered. What a turn need not repeat is turning a row into a ``Task`` or an
``Instance`` (parsing its times, decoding its JSON, building the record), which cost
more than the query itself: rows are fetched as the database gives them, and a row
whose values are the same as in the last read gives back the same record.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, CursorResult, Dialect

from jobyard.domain import Instance, Task
from jobyard.store.instances import instance_of
from jobyard.store.tables import instances, tasks, templates
from jobyard.store.tasks import in_play, task_of

InPlay = list[tuple[Task, list[Instance]]]
RawRow = tuple[Any, ...]
Decoder = Callable[[Any], Any]
Record = TypeVar("Record", Task, Instance)

_TASK_COLUMNS = [*tasks.c, templates.c.namespace, templates.c.name]
_TASK_NAMES = [*(column.name for column in tasks.c), "namespace", "template_name"]
_INSTANCE_NAMES = [column.name for column in instances.c]


def _raw(column: sa.ColumnElement[Any], label: str) -> sa.ColumnElement[Any]:
    """The column as the database gives it: JSON as its text (PostgreSQL would
    decode it), everything else with no processing by SQLAlchemy."""
    if isinstance(column.type, sa.JSON):
        return sa.cast(column, sa.Text).label(label)
    return sa.type_coerce(column, sa.types.NullType()).label(label)


@functools.cache
def _in_play_query(pending_window: int) -> sa.Select[Any]:
    """Built once: building and keying this statement cost more than running it."""
    joined = tasks.join(templates, templates.c.id == tasks.c.template_id).outerjoin(
        instances, instances.c.task_id == tasks.c.id
    )
    task_columns = [_raw(c, f"task_{n}") for c, n in zip(_TASK_COLUMNS, _TASK_NAMES, strict=True)]
    return (
        sa.select(*task_columns, *(_raw(c, f"instance_{c.name}") for c in instances.c))
        .select_from(joined)
        .where(in_play(pending_window))
        .order_by(tasks.c.id, instances.c.index, instances.c.attempt)
    )


def _decoder(column: sa.ColumnElement[Any], dialect: Dialect, type_code: Any) -> Decoder | None:
    if isinstance(column.type, sa.JSON):
        return _json
    type_ = column.type.dialect_impl(dialect)
    processor: Decoder | None = type_.result_processor(dialect, type_code)
    return processor


def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


Decoders = tuple[list[Decoder | None], list[Decoder | None]]
_DECODERS: dict[tuple[str, str], Decoders] = {}


def _decoders(result: CursorResult[Any]) -> Decoders:
    """Per column, what SQLAlchemy would have done to the raw value (which may
    depend on the type the driver reports, as a float on PostgreSQL does)."""
    dialect = result.context.dialect
    key = (dialect.name, dialect.driver)
    if key not in _DECODERS:
        type_codes = [column[1] for column in result.cursor.description]
        columns = [*_TASK_COLUMNS, *instances.c]
        decoders = [_decoder(c, dialect, t) for c, t in zip(columns, type_codes, strict=True)]
        _DECODERS[key] = decoders[: len(_TASK_COLUMNS)], decoders[len(_TASK_COLUMNS) :]
    return _DECODERS[key]


def _decoded(raw: RawRow, decoders: Sequence[Decoder | None], names: list[str]) -> dict[str, Any]:
    values = [v if d is None else d(v) for v, d in zip(raw, decoders, strict=True)]
    return dict(zip(names, values, strict=True))


class InPlayReader:
    """Reads the tasks in play; decodes only the rows that changed since its last read.

    The records it gives back may be the ones it gave before: their dicts and lists
    are not to be changed (no caller does).
    """

    def __init__(self) -> None:
        self._tasks: dict[int, tuple[RawRow, Task]] = {}
        self._instances: dict[int, tuple[RawRow, Instance]] = {}

    def read(self, conn: Connection, pending_window: int) -> InPlay:
        """Every running or ending task and the oldest ``pending_window`` pending
        ones (``tasks.tasks_to_reconcile``), each with its instances by index, then
        attempt: one round trip instead of two, on the path of every start."""
        result = conn.execute(_in_play_query(pending_window))
        task_decoders, instance_decoders = _decoders(result)
        seen_tasks: dict[int, tuple[RawRow, Task]] = {}
        seen_instances: dict[int, tuple[RawRow, Instance]] = {}
        found: InPlay = []
        width = len(_TASK_COLUMNS)
        for row in result:
            if not found or found[-1][0].id != row[0]:
                raw_task = row[:width]
                task = _reused(self._tasks, raw_task) or task_of(
                    _decoded(raw_task, task_decoders, _TASK_NAMES)
                )
                seen_tasks[task.id] = (raw_task, task)
                found.append((task, []))
            if row[width] is not None:  # a task none of whose instances exists yet
                raw_instance = row[width:]
                instance = _reused(self._instances, raw_instance) or instance_of(
                    _decoded(raw_instance, instance_decoders, _INSTANCE_NAMES)
                )
                seen_instances[instance.id] = (raw_instance, instance)
                found[-1][1].append(instance)
        self._tasks, self._instances = seen_tasks, seen_instances
        return found


def _reused(known: dict[int, tuple[RawRow, Record]], raw: RawRow) -> Record | None:
    """The record last read from this very row (its id first), if no value changed."""
    last = known.get(raw[0])
    return last[1] if last is not None and last[0] == raw else None
