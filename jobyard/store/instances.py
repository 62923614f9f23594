"""Queries on instances: the processes (or pods) of tasks, one row per attempt."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from jobyard.domain import LIVE_INSTANCE_STATUSES, Instance, InstanceStatus, RunAs
from jobyard.errors import NotFound
from jobyard.planning import CreateAttempt
from jobyard.store.bulk import ending_update, insert_rows, typed_param
from jobyard.store.tables import MAX_ID, instances


def _instance(row: Row[Any]) -> Instance:
    return instance_of(row._mapping)


def instance_of(m: Mapping[Any, Any]) -> Instance:
    """An instance from a row of the instances table's columns, by their names."""
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

    @classmethod
    def of(cls, task_id: int, attempt: CreateAttempt) -> NewInstance:
        """The row of an attempt a plan asks for."""
        return cls(
            task_id, attempt.index, attempt.attempt, attempt.shards, attempt.not_before,
            attempt.run_as,
        )  # fmt: skip


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
    return [instance_row(new, now) for new in news]


def instance_row(new: NewInstance, now: datetime) -> dict[str, Any]:
    """The values of a new, pending instance's row."""
    return {
        "run_as": new.run_as.value,
        "task_id": new.task_id,
        "index": new.index,
        "attempt": new.attempt,
        "status": InstanceStatus.PENDING.value,
        "shards": new.shards,
        "not_before": new.not_before,
        "created_at": now,
    }


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


_SET_WAITING_REASON = (
    instances.update()
    .where(instances.c.id == sa.bindparam("instance_id"))
    .values(waiting_reason=sa.bindparam("waiting"))
)


def set_waiting_reasons(conn: Connection, reasons: Sequence[tuple[int, str | None]]) -> None:
    """Record (instance id, why it waits) for many pending instances, in one statement."""
    if reasons:
        params = [{"instance_id": i, "waiting": reason} for i, reason in reasons]
        conn.execute(_SET_WAITING_REASON, params)


@dataclass(frozen=True)
class Usage:
    """What an ended instance used, as its runner measured it (None: not measured)."""

    peak_memory_bytes: int | None = None
    cpu_seconds: float | None = None


@dataclass(frozen=True)
class InstanceEnd:
    """How a live instance ended: what ``finish_instances`` records."""

    instance_id: int
    status: InstanceStatus
    exit_code: int | None
    reason: str | None
    message: str | None
    usage: Usage | None = None

    def params(self, now: datetime) -> dict[str, Any]:
        usage = self.usage or Usage()
        return {
            "instance_id": self.instance_id,
            "end_status": self.status.value,
            "end_exit_code": self.exit_code,
            "end_reason": self.reason,
            "end_message": self.message,
            "now": now,
            "end_peak_memory_bytes": usage.peak_memory_bytes,
            "end_cpu_seconds": usage.cpu_seconds,
        }


def _param(name: str, column: str) -> sa.BindParameter[Any]:
    return typed_param(instances, name, column)


_FINISH = ending_update(
    instances,
    "instance_id",
    [status.value for status in LIVE_INSTANCE_STATUSES],
    {
        "status": _param("end_status", "status"),
        "exit_code": _param("end_exit_code", "exit_code"),
        "reason": _param("end_reason", "reason"),
        "message": _param("end_message", "message"),
        "finished_at": _param("now", "finished_at"),
        # An end that measured nothing keeps what was measured before.
        "peak_memory_bytes": sa.func.coalesce(
            _param("end_peak_memory_bytes", "peak_memory_bytes"),
            instances.c.peak_memory_bytes,
        ),
        "cpu_seconds": sa.func.coalesce(
            _param("end_cpu_seconds", "cpu_seconds"), instances.c.cpu_seconds
        ),
    },
)


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
    end = InstanceEnd(instance_id, status, exit_code, reason, message, usage)
    return bool(conn.execute(_FINISH, end.params(now)).rowcount)


def finish_instances(conn: Connection, ends: Sequence[InstanceEnd], now: datetime) -> None:
    """End many live instances with one statement; one already ended stays as it was."""
    if ends:
        conn.execute(_FINISH, [end.params(now) for end in ends])


# The controller's statements are built once, with the ids as an expanding
# parameter: building and keying a statement per turn cost more than running it.
_BY_IDS = sa.select(instances).where(instances.c.id.in_(sa.bindparam("ids", expanding=True)))


def get_instances(conn: Connection, instance_ids: Sequence[int]) -> dict[int, Instance]:
    if not instance_ids:
        return {}
    rows = conn.execute(_BY_IDS, {"ids": list(instance_ids)}).all()
    return {row.id: _instance(row) for row in rows}


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


_RUNNING_PIDS = sa.select(instances.c.id, instances.c.pid).where(
    instances.c.id.in_(sa.bindparam("ids", expanding=True)),
    instances.c.status == InstanceStatus.RUNNING.value,
    instances.c.stop_requested.is_(False),
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
    rows = conn.execute(_RUNNING_PIDS, {"ids": [i for i, _ in started]}).all()
    pids = dict(started)
    return {row.id for row in rows if row.pid == pids[row.id]}
