"""The controller's read of the tasks in play, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Connection

from jobyard.domain import Template, TriggerKind
from jobyard.engine.launching import TaskRequest, launch_task
from jobyard.spec import EnvVar, RunOverrides, parse_spec
from jobyard.store import Store
from jobyard.store import instances as instance_store
from jobyard.store import tasks as task_store
from jobyard.store import templates as template_store
from jobyard.store.in_play import InPlayReader

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(seconds=3)


def make_template(store: Store) -> Template:
    spec = parse_spec({"name": "t", "deployment": {"type": "script", "script": "true"}})
    with store.write() as conn:
        template_id = template_store.insert_template(conn, "default", spec, NOW, None)
        return template_store.locked_template_by_id(conn, template_id)


def http_tasks(conn: Connection, template: Template, count: int) -> list[int]:
    """Tasks with every JSON column filled: overrides, and the request as payload."""
    request = TaskRequest(
        trigger=TriggerKind.HTTP,
        overrides=RunOverrides(envs=[EnvVar(name="A", value="ä")], replicas=2),
        payload={"method": "POST", "body": {"n": 1, "list": [1.5, None, "x"]}},
    )
    return [launch_task(conn, template, request, NOW).task.id for _ in range(count)]


def expected_in_play(conn: Connection, window: int) -> list[object]:
    """The same read as two typed queries: tasks, then their instances."""
    return [
        (task, instance_store.instances_of(conn, [task.id]))
        for task in task_store.tasks_to_reconcile(conn, window)
    ]


def test_the_controllers_one_statement_read_matches_tasks_then_instances(store: Store) -> None:
    template = make_template(store)
    with store.write() as conn:
        ids = http_tasks(conn, template, 3)
        instance_store.insert_instance(conn, ids[0], 0, 1, [], None, NOW)  # a retry
        new = task_store.NewTask(template.id, template.version, TriggerKind.CRON, {}, 2, NOW)
        [cron_id] = task_store.insert_scheduled_tasks(conn, [new], NOW).values()
        task_store.mark_task_running(conn, ids[2], NOW)
    with store.read() as conn:
        in_play = InPlayReader().read(conn, 3)  # nothing read before
        expected = expected_in_play(conn, 3)
    assert in_play == expected
    assert [task.id for task, _ in in_play] == [*ids, cron_id]
    assert [(i.index, i.attempt) for i in in_play[0][1]] == [(0, 0), (0, 1), (1, 0)]
    assert in_play[0][0].payload == {"method": "POST", "body": {"n": 1, "list": [1.5, None, "x"]}}
    assert in_play[0][0].created_at == NOW and in_play[0][0].created_at.tzinfo is UTC
    assert in_play[3][1] == []  # the controller makes a cron task's instances


def test_a_read_again_decodes_what_changed_and_reuses_the_rest(store: Store) -> None:
    template = make_template(store)
    with store.write() as conn:
        ids = http_tasks(conn, template, 3)
    reader = InPlayReader()
    with store.read() as conn:
        first = reader.read(conn, 10)
    (same, same_instances), (started, [started_one, _]), (stopped, stopping) = first
    with store.write() as conn:
        task_store.mark_task_running(conn, started.id, LATER)
        instance_store.mark_instance_running(conn, started_one.id, 4242, LATER)
        instance_store.request_instance_stop(conn, stopping[1].id)
        task_store.begin_ending(conn, stopped.id, "Stopped", "stopped by a user")
    with store.read() as conn:
        second = reader.read(conn, 10)
        assert second == expected_in_play(conn, 10)
    assert second[0][0] is same  # unchanged: the same records, not decoded again
    assert all(a is b for a, b in zip(second[0][1], same_instances, strict=True))
    assert second[1][0].status.value == "running" and second[1][0].started_at == LATER
    assert (second[1][1][0].status.value, second[1][1][0].pid) == ("running", 4242)
    assert second[2][0].ending_reason == "Stopped" and second[2][1][1].stop_requested
    assert second[2][1][0] is stopping[0]
    with store.write() as conn:
        task_store.delete_task(conn, ids[0])
    with store.read() as conn:
        assert [task.id for task, _ in reader.read(conn, 10)] == ids[1:]
