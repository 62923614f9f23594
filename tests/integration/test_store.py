"""The store against real databases: migrations, constraints, concurrent writers."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection

from jobyard.domain import (
    InstanceStatus,
    NewEvent,
    Severity,
    SourceType,
    TaskStatus,
    Template,
    TriggerKind,
)
from jobyard.engine.launching import TaskRequest, launch_task
from jobyard.errors import AlreadyExists, ConcurrencyForbidden, StoreError
from jobyard.spec import parse_spec
from jobyard.store import Store
from jobyard.store import events as event_store
from jobyard.store import instances as instance_store
from jobyard.store import tasks as task_store
from jobyard.store import templates as template_store
from jobyard.store.db import CHECKPOINT_SECONDS, PING_AFTER_IDLE_SECONDS
from jobyard.store.events import EventQuery
from jobyard.store.instances import InstanceEnd, Usage
from jobyard.store.launched import ONE_STATEMENT_MAX
from jobyard.store.tables import events, instances, metadata
from jobyard.store.tasks import TaskEnd

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def make_template(store: Store, policy: str = "Allow") -> str:
    spec = parse_spec(
        {"name": "t", "deployment": {"type": "script", "script": "true"},
         "concurrency_policy": policy}
    )  # fmt: skip
    with store.write() as conn:
        return template_store.insert_template(conn, "default", spec, NOW, None)


def manual_tasks(conn: Connection, template: Template, count: int) -> list[int]:
    request = TaskRequest(trigger=TriggerKind.MANUAL)
    return [launch_task(conn, template, request, NOW).task.id for _ in range(count)]


def test_migrations_match_the_tables(store: Store) -> None:
    with store.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, metadata) == []


def test_migrate_twice_is_harmless(store: Store) -> None:
    store.migrate()
    with store.read() as conn:
        assert [n["name"] for n in template_store.list_namespaces(conn)] == ["default"]


def test_times_come_back_as_aware_utc(store: Store) -> None:
    template_id = make_template(store)
    with store.read() as conn:
        template = template_store.get_template_by_id(conn, template_id)
    assert template.created_at == NOW
    assert template.created_at.tzinfo is not None


def test_template_names_are_unique_per_namespace(store: Store) -> None:
    make_template(store)
    with pytest.raises(AlreadyExists), store.write() as conn:
        template_store.insert_template(
            conn,
            "default",
            parse_spec({"name": "t", "deployment": {"type": "script", "script": "x"}}),
            NOW,
            None,
        )
    with store.read() as conn:
        assert len(template_store.list_templates(conn, "default", 10, 0)) == 1


def _race(store: Store, template_id: str, request: TaskRequest, writers: int) -> list[object]:
    results: list[object] = []
    barrier = threading.Barrier(writers)

    def one() -> None:
        barrier.wait()
        try:
            with store.write() as conn:
                template = template_store.locked_template_by_id(conn, template_id)
                results.append(launch_task(conn, template, request, NOW).task.id)
        except ConcurrencyForbidden as err:
            results.append(err)

    threads = [threading.Thread(target=one) for _ in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_forbid_admits_one_task_among_concurrent_runs(store: Store) -> None:
    template_id = make_template(store, "Forbid")
    results = _race(store, template_id, TaskRequest(trigger=TriggerKind.MANUAL), 12)
    created = [r for r in results if isinstance(r, int)]
    assert len(created) == 1
    assert all(isinstance(r, ConcurrencyForbidden) for r in results if not isinstance(r, int))
    with store.read() as conn:
        assert len(task_store.active_tasks(conn, template_id)) == 1


def test_one_scheduled_time_makes_one_task_whoever_fires_it(store: Store) -> None:
    template_id = make_template(store)
    request = TaskRequest(trigger=TriggerKind.CRON, scheduled_time=NOW)
    results = _race(store, template_id, request, 12)
    assert len(set(results)) == 1
    with store.read() as conn:
        assert len(task_store.list_tasks(conn, template_id, None, 100, 0)) == 1


def test_deleting_a_template_deletes_its_rows(store: Store) -> None:
    template_id = make_template(store)
    with store.write() as conn:
        template = template_store.locked_template_by_id(conn, template_id)
        task = launch_task(conn, template, TaskRequest(trigger=TriggerKind.MANUAL), NOW).task
    with store.read() as conn:
        [instance] = instance_store.instances_of(conn, [task.id])  # launched with its instance
        assert (instance.index, instance.attempt, instance.status.value) == (0, 0, "pending")
    with store.write() as conn:
        template_store.delete_template(conn, template_id)
    with store.read() as conn:
        assert task_store.existing_task_ids(conn, [task.id]) == set()
        assert instance_store.instances_of(conn, [task.id]) == []


def test_ids_of_deleted_tasks_and_instances_are_never_reused(store: Store) -> None:
    """Files and logs are named by these ids; every migration must keep that true."""
    template_id = make_template(store)

    def task_and_instance() -> tuple[int, int]:
        with store.write() as conn:
            template = template_store.locked_template_by_id(conn, template_id)
            task = launch_task(conn, template, TaskRequest(trigger=TriggerKind.MANUAL), NOW).task
            [instance] = instance_store.instances_of(conn, [task.id])
        return task.id, instance.id

    first = task_and_instance()
    with store.write() as conn:
        task_store.delete_task(conn, first[0])
    second = task_and_instance()
    assert second[0] > first[0]
    assert second[1] > first[1]


def test_a_controller_turn_reads_running_ending_and_the_oldest_pending_tasks(
    store: Store,
) -> None:
    template_id = make_template(store)
    ids = []
    with store.write() as conn:
        template = template_store.locked_template_by_id(conn, template_id)
        for _ in range(6):
            request = TaskRequest(trigger=TriggerKind.MANUAL)
            ids.append(launch_task(conn, template, request, NOW).task.id)
        task_store.mark_task_running(conn, ids[4], NOW)  # running, beyond the window
        task_store.begin_ending(conn, ids[5], "Stopped", "stop")  # ending, beyond it
    with store.read() as conn:
        considered = [task.id for task in task_store.tasks_to_reconcile(conn, 2)]
    assert considered == [ids[0], ids[1], ids[4], ids[5]]


@pytest.mark.parametrize("replicas", [3, ONE_STATEMENT_MAX + 1])
def test_a_task_without_a_key_is_inserted_with_its_instances_and_its_event(
    store: Store, replicas: int
) -> None:
    """On PostgreSQL one statement (store/launched.py) up to ONE_STATEMENT_MAX
    instances, three beyond, and on SQLite: the same rows."""
    shards = [f"s{n}" for n in range(replicas + 1)]
    spec = parse_spec(
        {"name": "sharded", "deployment": {"type": "script", "script": "true"},
         "replicas": replicas, "instance_type": "best-effort",
         "sharding": {"enabled": True, "shards": shards}}
    )  # fmt: skip
    with store.write() as conn:
        template_id = template_store.insert_template(conn, "default", spec, NOW, None)
        template = template_store.locked_template_by_id(conn, template_id)
        request = TaskRequest(trigger=TriggerKind.HTTP, payload={"body": "x"})
        task = launch_task(conn, template, request, NOW).task
    with store.read() as conn:
        assert task_store.get_task(conn, task.id) == task
        instances = instance_store.instances_of(conn, [task.id])
        [event] = event_store.search_events(conn, EventQuery(task_id=task.id))
        event_template = conn.execute(
            sa.select(events.c.template_id).where(events.c.id == event.id)
        ).scalar()
    assert [(i.index, i.attempt, i.status.value, i.run_as.value) for i in instances] == [
        (index, 0, "pending", "best-effort") for index in range(replicas)
    ]
    assert sorted(shard for i in instances for shard in i.shards) == sorted(shards)
    assert all(i.created_at == NOW and i.not_before is None for i in instances)
    assert (event.reason, event.source_name, event.task_id) == (
        "TaskCreated",
        f"sharded/task-{task.id}",
        task.id,
    )
    assert (event_template, event.namespace, event.instance_id) == (template_id, "default", None)
    assert (event.severity.value, event.created_at) == ("normal", NOW)
    assert task.payload == {"body": "x"} and task.instance_count == replicas


def test_a_turn_ends_many_instances_and_tasks_with_one_statement_each(store: Store) -> None:
    """Live rows end as given; a row that had ended already stays as it was; an end
    that measured nothing keeps the usage measured before."""
    template_id = make_template(store)
    with store.write() as conn:
        template = template_store.locked_template_by_id(conn, template_id)
        ids = manual_tasks(conn, template, 3)
        first, second, ended = (instance_store.instances_of(conn, [i])[0] for i in ids)
        instance_store.finish_instance(
            conn, ended.id, InstanceStatus.FAILED, 1, None, "exited with code 1", NOW
        )
        task_store.finish_tasks(conn, [TaskEnd(ids[2], TaskStatus.FAILED, "R", "m")], NOW)
        conn.execute(instances.update().where(instances.c.id == second.id).values(cpu_seconds=0.5))
    later = NOW.replace(minute=1)
    ends = [
        InstanceEnd(first.id, InstanceStatus.SUCCEEDED, 0, None, "ok", Usage(2048, 0.25)),
        InstanceEnd(second.id, InstanceStatus.KILLED, None, "Stopped", "stopped"),
        InstanceEnd(ended.id, InstanceStatus.SUCCEEDED, 0, None, "a repeated report"),
    ]
    task_ends = [TaskEnd(i, TaskStatus.SUCCEEDED, "Completed", "done") for i in ids]
    with store.write() as conn:
        instance_store.finish_instances(conn, ends, later)
        task_store.finish_tasks(conn, task_ends, later)
    with store.read() as conn:
        got = instance_store.get_instances(conn, [first.id, second.id, ended.id])
        tasks = task_store.get_tasks(conn, ids)
    assert [
        (i.status.value, i.exit_code, i.reason, i.message, i.finished_at)
        for i in (got[first.id], got[second.id], got[ended.id])
    ] == [
        ("succeeded", 0, None, "ok", later),
        ("killed", None, "Stopped", "stopped", later),
        ("failed", 1, None, "exited with code 1", NOW),
    ]
    assert (got[first.id].peak_memory_bytes, got[first.id].cpu_seconds) == (2048, 0.25)
    assert (got[second.id].peak_memory_bytes, got[second.id].cpu_seconds) == (None, 0.5)
    assert [(tasks[i].status.value, tasks[i].reason, tasks[i].finished_at) for i in ids] == [
        ("succeeded", "Completed", later),
        ("succeeded", "Completed", later),
        ("failed", "R", NOW),
    ]


def test_writers_leave_the_log_to_the_checkpointer_and_it_stays_small(store: Store) -> None:
    if store.dialect != "sqlite":
        pytest.skip("the write-ahead log is SQLite's")
    log = Path(store.engine.url.database + "-wal")

    def write_and_wait() -> int:
        with store.write() as conn:  # ~2,000 pages of log: past SQLite's own checkpoint
            events = [_big_event(i) for i in range(4_000)]
            event_store.add_events(conn, events, NOW)
        size = log.stat().st_size
        time.sleep(CHECKPOINT_SECONDS * 4)  # the checkpointer's turn
        return size

    sizes = [write_and_wait() for _ in range(3)]

    # Writers do not checkpoint (that waits in their commit); had nobody, the log would
    # hold all three writes.
    with store.read() as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
    assert sizes[0] > 1_000 * 4096
    assert sizes[2] < 2 * sizes[0], sizes
    with store.read() as conn:
        assert len(event_store.search_events(conn, EventQuery(limit=20_000))) == 12_000


def _big_event(i: int) -> NewEvent:
    return NewEvent(
        source_type=SourceType.SCHEDULER,
        source_name="bench",
        reason="Filler",
        message=f"{i:06d} " + "x" * 1_900,
        severity=Severity.NORMAL,
        namespace="default",
    )


def _backend_pids(store: Store) -> set[int]:
    """The PostgreSQL backends of the store's pooled connections."""
    with store.engine.connect() as conn:
        database = conn.exec_driver_sql("SELECT current_database()").scalar_one()
        mine = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
    with psycopg.connect(store.url.replace("+psycopg", ""), autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        ).fetchall()
    return {row[0] for row in rows} | {mine}


def _terminate(store: Store, pids: set[int]) -> None:
    with psycopg.connect(store.url.replace("+psycopg", ""), autocommit=True) as admin:
        for pid in pids:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_a_postgresql_connection_cut_while_idle_is_replaced_unseen(store: Store) -> None:
    """A server restart while the pool sat idle costs no transaction an error."""
    if store.dialect != "postgresql":
        pytest.skip("SQLite has no connection to lose")
    with store.read() as conn:
        conn.exec_driver_sql("SELECT 1")
    _terminate(store, _backend_pids(store))
    time.sleep(PING_AFTER_IDLE_SECONDS + 0.2)
    with store.write() as conn:
        assert conn.exec_driver_sql("SELECT 1").scalar_one() == 1
    with store.read() as conn:
        assert conn.exec_driver_sql("SELECT 1").scalar_one() == 1


def test_a_postgresql_connection_cut_in_use_fails_one_transaction_only(store: Store) -> None:
    """A busy connection is not pinged: the transaction that finds it cut fails with a
    clear error, and the pool starts over, so the next one works."""
    if store.dialect != "postgresql":
        pytest.skip("SQLite has no connection to lose")
    with store.read() as conn:
        conn.exec_driver_sql("SELECT 1")
    _terminate(store, _backend_pids(store))
    with pytest.raises(StoreError, match="connection"), store.read() as conn:
        conn.exec_driver_sql("SELECT 1")
    with store.read() as conn:
        assert conn.exec_driver_sql("SELECT 1").scalar_one() == 1
    with store.write() as conn:
        assert conn.exec_driver_sql("SELECT 1").scalar_one() == 1


def test_a_postgresql_read_runs_outside_a_transaction(store: Store) -> None:
    """Under READ COMMITTED each statement reads its own snapshot anyway; a read
    without BEGIN and COMMIT saves their round trips."""
    if store.dialect != "postgresql":
        pytest.skip("SQLite reads take a snapshot for the whole read")
    with store.read() as conn:
        assert conn.exec_driver_sql("SELECT now() = statement_timestamp()").scalar_one()
    with store.write() as conn:
        assert not conn.exec_driver_sql("SELECT now() = statement_timestamp()").scalar_one()
