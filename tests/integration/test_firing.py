"""Batched cron firing against real databases: every template due at one moment is
fired in one transaction, exactly once each, whoever else fires the same batch."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from jobyard.domain import Reason, Task, TaskStatus, TriggerKind
from jobyard.engine import scheduler as scheduler_module
from jobyard.engine.firing import Fired, ParsedSpecs, fire_due, read_ahead
from jobyard.engine.launching import TaskRequest, launch_task
from jobyard.engine.scheduler import BATCH_SIZE, Scheduler
from jobyard.spec import parse_spec
from jobyard.store import Store
from jobyard.store import events as event_store
from jobyard.store import precedence as precedence_module
from jobyard.store import tasks as task_store
from jobyard.store import templates as template_store
from jobyard.store.tables import template_versions
from tests.support import wait_for

DUE = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
NOW = DUE + timedelta(milliseconds=3)
TOMORROW = DUE + timedelta(days=1)
DAILY_AT_NOON = "0 0 12 * * *"


class FixedClock:
    """Reads ``moment`` until a test moves it."""

    def __init__(self, moment: datetime = NOW) -> None:
        self.moment = moment

    def now(self) -> datetime:
        return self.moment


class MeetingClock(FixedClock):
    """A fixed clock whose first reading in each thread waits for every party's first
    reading: schedulers that read it pop the same due templates at the same moment."""

    def __init__(self, parties: int) -> None:
        super().__init__()
        self._barrier = threading.Barrier(parties)
        self._seen: set[int] = set()
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            first = threading.get_ident() not in self._seen
            self._seen.add(threading.get_ident())
        if first:
            self._barrier.wait(timeout=30)
        return super().now()


def make_cron_templates(
    store: Store,
    count: int,
    prefix: str = "t",
    schedule: str = DAILY_AT_NOON,
    policy: str = "Allow",
    timezone: str = "UTC",
    due: datetime = DUE,
) -> list[str]:
    """Templates whose stored next fire time is ``due``; their ids, in creation order."""
    ids = []
    with store.write() as conn:
        for i in range(count):
            spec = parse_spec(
                {
                    "name": f"{prefix}-{i:04d}",
                    "deployment": {"type": "script", "script": "true"},
                    "trigger": {"type": "cron", "schedule": schedule, "timezone": timezone},
                    "concurrency_policy": policy,
                }
            )
            ids.append(template_store.insert_template(conn, "default", spec, DUE, due))
    return ids


def tasks_of(store: Store, template_id: str) -> list[Task]:
    with store.read() as conn:
        return task_store.list_tasks(conn, template_id, None, 100, 0)


def all_tasks(store: Store) -> list[Task]:
    with store.read() as conn:
        return task_store.list_tasks(conn, None, None, 100_000, 0)


def events_of(store: Store, reason: str) -> list[Any]:
    with store.read() as conn:
        return event_store.search_events(conn, event_store.EventQuery(reason=reason, limit=10_000))


def next_fire_at(store: Store, template_id: str) -> datetime | None:
    with store.read() as conn:
        return template_store.get_template_by_id(conn, template_id).next_fire_at


def run_now(store: Store, template_id: str) -> Task:
    with store.write() as conn:
        template = template_store.locked_template_by_id(conn, template_id)
        return launch_task(conn, template, TaskRequest(trigger=TriggerKind.MANUAL), NOW).task


class StatementCounter:
    """Counts the statements a Store sends to its database (every driver execute)."""

    def __init__(self, store: Store) -> None:
        self.statements: list[str] = []
        self._engine = store.engine
        event.listen(self._engine, "before_cursor_execute", self._seen)

    @property
    def count(self) -> int:
        return len(self.statements)

    def _seen(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        self.statements.append(statement)

    def close(self) -> None:
        event.remove(self._engine, "before_cursor_execute", self._seen)


def test_a_batch_of_300_due_templates_gets_one_task_each(store: Store) -> None:
    ids = make_cron_templates(store, 300)
    counter = StatementCounter(store)
    try:
        fired = fire_due(store, FixedClock(), [(i, DUE) for i in ids])
    finally:
        counter.close()

    assert fired == Fired(next_fire={i: TOMORROW for i in ids}, created=300)
    tasks = all_tasks(store)
    assert sorted(task.template_id for task in tasks) == sorted(ids)
    assert {(t.trigger, t.status, t.scheduled_time, t.instance_count) for t in tasks} == {
        (TriggerKind.CRON, TaskStatus.PENDING, DUE, 1)
    }
    # created_at is the scheduler's clock reading when it recorded them, not the due time.
    assert {task.created_at for task in tasks} == {NOW}
    created = events_of(store, Reason.TASK_CREATED)
    assert sorted(e.task_id for e in created) == sorted(t.id for t in tasks)
    named = {t.id: f"{t.template_name}/task-{t.id}" for t in tasks}
    assert all(e.source_type == "task" and e.source_name == named[e.task_id] for e in created)
    assert all(e.message.endswith(f"scheduled for {DUE.isoformat()}") for e in created)
    assert {next_fire_at(store, i) for i in ids} == {TOMORROW}
    # Batched: a few statements for the whole batch (lock and read, tasks, events,
    # next fire times), not a few per template.
    assert counter.count <= 10, counter.count


def test_two_replicas_firing_the_same_batch_make_each_task_once(
    store: Store, database_url: str
) -> None:
    ids = make_cron_templates(store, 300)
    other = Store(database_url)
    results: list[Fired] = []
    barrier = threading.Barrier(2)

    def replica(replica_store: Store) -> None:
        barrier.wait(timeout=30)
        results.append(fire_due(replica_store, FixedClock(), [(i, DUE) for i in ids]))

    threads = [threading.Thread(target=replica, args=(s,)) for s in (store, other)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    other.close()

    assert len(results) == 2
    assert sum(fired.created for fired in results) == 300
    assert all(fired.next_fire == {i: TOMORROW for i in ids} for fired in results)
    per_template = Counter(task.template_id for task in all_tasks(store))
    assert per_template == Counter(ids)
    assert len(events_of(store, Reason.TASK_CREATED)) == 300


def test_two_scheduler_replicas_started_together_fire_each_template_once(
    store: Store, database_url: str
) -> None:
    ids = make_cron_templates(store, 2 * BATCH_SIZE + 7)  # three batches
    clock = MeetingClock(parties=2)
    woken = threading.Semaphore(0)
    replicas = [Store(database_url), Store(database_url)]
    schedulers = [Scheduler(s, clock, woken.release) for s in replicas]
    for scheduler in schedulers:
        scheduler.start()
    try:
        wait_for(lambda: len(all_tasks(store)) >= len(ids), timeout=60)
    finally:
        for scheduler in schedulers:
            scheduler.stop()  # waits for a batch in flight
        for replica in replicas:
            replica.close()

    assert Counter(task.template_id for task in all_tasks(store)) == Counter(ids)
    assert {task.scheduled_time for task in all_tasks(store)} == {DUE}
    assert woken.acquire(timeout=0), "the controller was not woken for the new tasks"


def test_a_task_recorded_already_is_not_made_again(store: Store) -> None:
    """The unique (template, scheduled time) key decides, even when the stored next fire
    time still says due (an edit raced with a firing, say)."""
    ids = make_cron_templates(store, 20)
    first = fire_due(store, FixedClock(), [(i, DUE) for i in ids[:10]])
    assert first.created == 10
    with store.write() as conn:
        template_store.set_next_fires(conn, [(i, DUE) for i in ids[:10]])

    again = fire_due(store, FixedClock(), [(i, DUE) for i in ids])

    assert again.created == 10
    assert again.next_fire == {i: TOMORROW for i in ids}
    assert Counter(task.template_id for task in all_tasks(store)) == Counter(ids)
    created = events_of(store, Reason.TASK_CREATED)
    # Each event names the task its firing inserted, not one it skipped or another's.
    assert sorted(event.task_id for event in created) == sorted(t.id for t in all_tasks(store))


def test_forbid_and_replace_templates_in_a_batch_keep_their_policy(store: Store) -> None:
    allow = make_cron_templates(store, 50, prefix="allow")
    forbid_busy = make_cron_templates(store, 5, prefix="forbid-busy", policy="Forbid")
    forbid_idle = make_cron_templates(store, 5, prefix="forbid-idle", policy="Forbid")
    replace_busy = make_cron_templates(store, 5, prefix="replace-busy", policy="Replace")
    running = {template_id: run_now(store, template_id) for template_id in forbid_busy}
    replaced = {template_id: run_now(store, template_id) for template_id in replace_busy}
    everything = allow + forbid_busy + forbid_idle + replace_busy

    fired = fire_due(store, FixedClock(), [(i, DUE) for i in everything])

    assert fired.created == 50 + 5 + 5
    assert fired.next_fire == {i: TOMORROW for i in everything}
    for template_id in allow + forbid_idle:
        [task] = tasks_of(store, template_id)
        assert task.scheduled_time == DUE
    for template_id in forbid_busy:
        assert [t.id for t in tasks_of(store, template_id)] == [running[template_id].id]
    for template_id in replace_busy:
        newest, old = tasks_of(store, template_id)  # newest first
        assert newest.scheduled_time == DUE
        assert (old.id, old.ending_reason) == (replaced[template_id].id, Reason.REPLACED)
    forbidden = events_of(store, Reason.CONCURRENCY_FORBIDDEN)
    assert sorted(e.template_name for e in forbidden) == [f"forbid-busy-{i:04d}" for i in range(5)]
    assert all("forbids concurrent tasks" in e.message for e in forbidden)
    assert len(events_of(store, Reason.TASK_CREATED)) == 10 + 60  # the manual runs', the cron's


def test_each_template_in_a_batch_is_planned_by_its_own_schedule(store: Store) -> None:
    daily = make_cron_templates(store, 3, prefix="daily")
    five_minutes = make_cron_templates(store, 3, prefix="five", schedule="0 */5 * * * *")
    # 20:00 in Shanghai is 12:00 UTC: the same due time, another time zone.
    shanghai = make_cron_templates(
        store, 3, prefix="shanghai", schedule="0 0 20 * * *", timezone="Asia/Shanghai"
    )
    # Due ten seconds ago, every second: the nine seconds after it were missed.
    late = make_cron_templates(
        store, 3, prefix="late", schedule="* * * * * *", due=DUE - timedelta(seconds=10)
    )
    due = [(i, DUE) for i in daily + five_minutes + shanghai]
    due += [(i, DUE - timedelta(seconds=10)) for i in late]

    fired = fire_due(store, FixedClock(), due)

    assert fired.created == 12
    expected_next = {i: TOMORROW for i in daily + shanghai}
    expected_next |= {i: DUE + timedelta(minutes=5) for i in five_minutes}
    expected_next |= {i: DUE + timedelta(seconds=1) for i in late}
    assert fired.next_fire == expected_next
    assert {i: next_fire_at(store, i) for i in expected_next} == expected_next
    for template_id in late:
        [task] = tasks_of(store, template_id)
        assert task.scheduled_time == DUE  # the latest due second, not the oldest
    missed = events_of(store, Reason.MISSED_SCHEDULE)
    assert sorted(e.template_name for e in missed) == [f"late-{i:04d}" for i in range(3)]
    first_missed = (DUE - timedelta(seconds=10)).isoformat()
    last_missed = (DUE - timedelta(seconds=1)).isoformat()
    assert all(f"missed firings at {first_missed} .. {last_missed}" in e.message for e in missed)


def test_suspended_edited_and_deleted_templates_in_a_batch_make_no_task(store: Store) -> None:
    fire = make_cron_templates(store, 3, prefix="fire")
    suspended = make_cron_templates(store, 2, prefix="suspended")
    edited = make_cron_templates(store, 2, prefix="edited")
    deleted = make_cron_templates(store, 2, prefix="deleted")
    later = DUE + timedelta(hours=1)
    with store.write() as conn:
        for template_id in suspended:
            template_store.set_suspended(conn, template_id, True, NOW)
        template_store.set_next_fires(conn, [(i, later) for i in edited])
        for template_id in deleted:
            template_store.delete_template(conn, template_id)

    everything = fire + suspended + edited + deleted
    fired = fire_due(store, FixedClock(), [(i, DUE) for i in everything])

    assert fired.created == 3
    # Edited ones go back to the scheduler with their stored time; the rest drop out.
    assert fired.next_fire == {i: TOMORROW for i in fire} | {i: later for i in edited}
    assert sorted(task.template_id for task in all_tasks(store)) == sorted(fire)
    assert {i: next_fire_at(store, i) for i in edited} == {i: later for i in edited}


def test_a_template_that_cannot_be_read_does_not_hold_up_its_batch(
    store: Store, database_url: str
) -> None:
    ids = make_cron_templates(store, 30)
    broken = ids[7]
    with store.write() as conn:  # a stored spec this version cannot read
        conn.execute(
            sa.update(template_versions)
            .where(template_versions.c.template_id == broken)
            .values(spec={"name": "broken"})
        )
    scheduler = Scheduler(store, FixedClock(), lambda: None)
    scheduler.start()
    try:
        wait_for(lambda: len(all_tasks(store)) >= 29, timeout=60)
    finally:
        scheduler.stop()

    assert sorted(task.template_id for task in all_tasks(store)) == sorted(set(ids) - {broken})
    with store.read() as conn:
        stored = {i: when for i, when, _ in template_store.list_cron_schedule(conn)}
    assert stored[broken] == DUE  # left to be retried
    assert {stored[i] for i in ids if i != broken} == {TOMORROW}


def test_a_new_version_is_fired_by_its_own_spec_not_a_remembered_one(store: Store) -> None:
    [template_id] = make_cron_templates(store, 1)
    specs = ParsedSpecs()
    assert fire_due(store, FixedClock(), [(template_id, DUE)], specs).created == 1
    with store.write() as conn:
        template = template_store.get_template_by_id(conn, template_id)
        forbid = template.spec.model_copy(update={"concurrency_policy": "Forbid"})
        template_store.add_version(conn, template, forbid, NOW, TOMORROW)

    # The first task is still pending: under Forbid the next firing makes none.
    later = FixedClock(TOMORROW + timedelta(milliseconds=3))
    fired = fire_due(store, later, [(template_id, TOMORROW)], specs)

    assert fired.created == 0
    assert len(tasks_of(store, template_id)) == 1
    assert len(events_of(store, Reason.CONCURRENCY_FORBIDDEN)) == 1


def test_specs_read_ahead_are_not_read_again_when_the_batch_fires(store: Store) -> None:
    ids = make_cron_templates(store, 30)
    specs = ParsedSpecs()
    assert read_ahead(store, specs, ids) == 30
    assert read_ahead(store, specs, ids) == 0  # known now

    counter = StatementCounter(store)
    try:
        fired = fire_due(store, FixedClock(), [(i, DUE) for i in ids], specs)
    finally:
        counter.close()

    assert fired.created == 30
    assert not [s for s in counter.statements if "template_versions" in s], counter.statements


def test_the_scheduler_reads_specs_ahead_of_the_second_they_fire(store: Store) -> None:
    ids = make_cron_templates(store, 40)
    clock = FixedClock(DUE - timedelta(seconds=3))  # the batch is due in three seconds
    counter = StatementCounter(store)
    scheduler = Scheduler(store, clock, lambda: None)
    scheduler.start()
    try:
        specs_read = wait_for(lambda: [s for s in counter.statements if "template_versions" in s])
        assert all_tasks(store) == []  # read ahead, not fired
        clock.moment = NOW
        scheduler.update(ids[0], DUE)  # wakes it: the second has come
        wait_for(lambda: len(all_tasks(store)) == 40)
    finally:
        scheduler.stop()
        counter.close()

    read_since = [s for s in counter.statements if "template_versions" in s]
    assert read_since == specs_read, "the firing read specs it had read ahead"


class RunningClock:
    """Starts at ``start`` and runs as the real clock does."""

    def __init__(self, start: datetime) -> None:
        self._offset = start - datetime.now(UTC)

    def now(self) -> datetime:
        return datetime.now(UTC) + self._offset


def test_others_are_held_back_from_a_little_before_the_second_until_it_is_fired(
    store: Store, monkeypatch: Any
) -> None:
    """A read that begins in the moments before a firing finds the firing's tasks: the
    scheduler holds the others back from CLEAR_AHEAD before the fire time to its end."""
    monkeypatch.setattr(scheduler_module, "CLEAR_AHEAD", timedelta(seconds=3))
    monkeypatch.setattr(precedence_module, "MAX_WAIT", 30.0)  # the read waits it out
    ids = make_cron_templates(store, 40)
    clock = RunningClock(DUE - timedelta(seconds=2))
    scheduler = Scheduler(store, clock, lambda: None)
    scheduler.start()
    try:
        wait_for(lambda: store.precedence.under_way)
        assert clock.now() < DUE, "the others were held back only once the second came"
        assert len(all_tasks(store)) == len(ids)  # this read waited for the firing
    finally:
        scheduler.stop()
