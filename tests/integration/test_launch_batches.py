"""Group commit of task launches against real databases: launches asked for at
once are written together, each caller gets its own task, and one that fails
fails alone."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from sqlalchemy.engine import Connection

from jobyard.domain import Event, Template, TriggerKind
from jobyard.engine.batching import LaunchBatcher
from jobyard.engine.launching import Launched, TaskRequest, launch_many
from jobyard.errors import ConcurrencyForbidden, NotFound
from jobyard.spec import RunOverrides
from jobyard.store import Store
from jobyard.store import events as event_store
from jobyard.store import instances as instance_store
from jobyard.store import tasks as task_store
from jobyard.store import templates as template_store
from jobyard.store.events import EventQuery
from tests.integration.test_firing import FixedClock, make_cron_templates, tasks_of


class Wakes:
    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            self.count += 1


def _by_id(template_id: str, conn: Connection) -> Template:
    return template_store.locked_template_by_id(conn, template_id)


def _launch_many(batcher: LaunchBatcher, template_ids: list[str]) -> list[Launched | Exception]:
    """Launch from as many threads at once, so that launches queue together."""
    start = threading.Barrier(len(template_ids))

    def one(template_id: str) -> Launched | Exception:
        start.wait(timeout=30)
        request = TaskRequest(trigger=TriggerKind.HTTP)
        try:
            return batcher.launch(partial(_by_id, template_id), request)
        except Exception as err:
            return err

    with ThreadPoolExecutor(len(template_ids)) as pool:
        return list(pool.map(one, template_ids))


def test_concurrent_launches_each_get_their_own_committed_task(store: Store) -> None:
    template_ids = make_cron_templates(store, 8)
    wakes = Wakes()
    batcher = LaunchBatcher(store, FixedClock(), wakes)
    try:
        results = _launch_many(batcher, template_ids * 5)
    finally:
        batcher.close()
    assert all(isinstance(r, Launched) and r.created for r in results)
    ids = [r.task.id for r in results if isinstance(r, Launched)]
    assert len(set(ids)) == 40
    for template_id in template_ids:
        assert len(tasks_of(store, template_id)) == 5  # committed, each once
    assert 1 <= wakes.count <= 40


def test_a_failing_launch_fails_alone(store: Store) -> None:
    allowed = make_cron_templates(store, 3)
    [forbid] = make_cron_templates(store, 1, prefix="forbid", policy="Forbid")
    batcher = LaunchBatcher(store, FixedClock(), Wakes())
    try:
        results = _launch_many(batcher, [*allowed, forbid, forbid, "no-such-template", *allowed])
    finally:
        batcher.close()
    errors = [r for r in results if isinstance(r, Exception)]
    assert sorted(type(e).__name__ for e in errors) == ["ConcurrencyForbidden", "NotFound"]
    assert any(isinstance(e, ConcurrencyForbidden) for e in errors)
    assert any(isinstance(e, NotFound) for e in errors)
    assert len(tasks_of(store, forbid)) == 1
    for template_id in allowed:
        assert len(tasks_of(store, template_id)) == 2


def test_launches_written_together_keep_their_order_overrides_and_instances(
    store: Store,
) -> None:
    """One transaction of mixed launches: plain ones (Allow, no key) are inserted
    together, the others one by one; each answer is its own request's task."""
    allowed, other = make_cron_templates(store, 2)
    [forbid] = make_cron_templates(store, 1, prefix="forbid", policy="Forbid")

    def request(n: int, event_id: str | None = None) -> TaskRequest:
        overrides = RunOverrides.model_validate(
            {"envs": [{"name": "N", "value": str(n)}], "replicas": 1 + n % 3}
        )
        return TaskRequest(trigger=TriggerKind.HTTP, overrides=overrides, event_id=event_id)

    asked = [
        (allowed, request(0)),
        (forbid, request(1)),
        (other, request(2)),
        (allowed, request(3, event_id="once")),
        (allowed, request(4)),
        (other, request(5)),
    ]
    with store.write() as conn:
        templates = {
            t: template_store.locked_template_by_id(conn, t) for t in {a for a, _ in asked}
        }
        launched = launch_many(conn, [(templates[t], r) for t, r in asked], FixedClock().now())
    assert all(one.created for one in launched)
    for n, ((template_id, _), one) in enumerate(zip(asked, launched, strict=True)):
        assert one.task.template_id == template_id
        assert one.task.overrides["envs"] == [{"name": "N", "value": str(n)}]
        assert one.task.instance_count == 1 + n % 3
    with store.read() as conn:
        for one in launched:
            stored = task_store.get_task(conn, one.task.id)
            assert stored == one.task  # the answer is the committed row
            instances = instance_store.instances_of(conn, [one.task.id])
            assert [(i.index, i.attempt) for i in instances] == [
                (index, 0) for index in range(one.task.instance_count)
            ]
    created = [e for e in _events(store) if e.reason == "TaskCreated"]
    assert sorted(e.task_id for e in created) == sorted(one.task.id for one in launched)


def _events(store: Store) -> list[Event]:
    with store.read() as conn:
        return event_store.search_events(conn, EventQuery(limit=100))


def test_a_launch_given_up_before_it_is_taken_is_not_written(store: Store) -> None:
    [template_id] = make_cron_templates(store, 1)
    entered, release = threading.Event(), threading.Event()

    def slow(conn: Connection) -> Template:
        entered.set()
        release.wait(timeout=30)
        return _by_id(template_id, conn)

    batcher = LaunchBatcher(store, FixedClock(), Wakes())
    request = TaskRequest(trigger=TriggerKind.HTTP)
    try:
        first = batcher.submit(slow, request)
        assert entered.wait(timeout=30)  # the first batch is being written
        given_up = batcher.submit(partial(_by_id, template_id), request)
        assert given_up.cancel()  # as a cancelled request's awaiting does
        release.set()
        third = batcher.submit(partial(_by_id, template_id), request).result(timeout=30)
        assert first.result(timeout=30).created and third.created
    finally:
        release.set()
        batcher.close()
    ids = sorted(task.id for task in tasks_of(store, template_id))
    assert ids == sorted([first.result().task.id, third.task.id])


def test_launches_of_one_template_as_seen_lock_it_once_per_batch(store: Store) -> None:
    [template_id] = make_cron_templates(store, 1)
    entered, release = threading.Event(), threading.Event()
    locates = Wakes()

    def slow(conn: Connection) -> Template:
        entered.set()
        release.wait(timeout=30)
        return _by_id(template_id, conn)

    def counted(conn: Connection) -> Template:
        locates()
        return _by_id(template_id, conn)

    batcher = LaunchBatcher(store, FixedClock(), Wakes())
    request = TaskRequest(trigger=TriggerKind.HTTP)
    try:
        first = batcher.submit(slow, request)
        assert entered.wait(timeout=30)  # the next ones queue up meanwhile: one batch
        together = [batcher.submit(counted, request, same_as="seen") for _ in range(5)]
        alone = batcher.submit(counted, request)
        release.set()
        launched = [future.result(timeout=30) for future in [first, *together, alone]]
    finally:
        release.set()
        batcher.close()
    assert all(one.created for one in launched)
    assert len({one.task.id for one in launched}) == 7
    assert locates.count == 2  # once for the five, once for the one without same_as
