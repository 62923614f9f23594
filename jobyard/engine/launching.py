"""Turning a task creation request into a task row, under the concurrency policy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from jobyard.domain import Reason, Severity, Task, Template, TriggerKind
from jobyard.engine.events import (
    add_events,
    log_event,
    new_event_of_new_task,
    new_event_of_task,
    new_task_event,
    task_event,
    template_event,
)
from jobyard.errors import ConcurrencyForbidden
from jobyard.planning import CreateAttempt, first_attempt, instance_count
from jobyard.spec import RunOverrides
from jobyard.store import instances as instance_store
from jobyard.store import tasks as task_store
from jobyard.store.launched import insert_with_instances


@dataclass(frozen=True)
class TaskRequest:
    """One trigger firing: what started it and what it overrides."""

    trigger: TriggerKind
    overrides: RunOverrides = field(default_factory=RunOverrides)
    scheduled_time: datetime | None = None
    event_id: str | None = None
    payload: dict[str, Any] | None = None  # the HTTP request, for http tasks
    command: list[str] | None = None  # replaces the template's command for this task


@dataclass(frozen=True)
class Launched:
    task: Task
    created: bool  # False when an idempotency key matched an existing task


def launch_task(
    conn: Connection, template: Template, request: TaskRequest, now: datetime
) -> Launched:
    """Create the task with its instances in the caller's transaction, applying the
    concurrency policy.

    The caller read ``template`` under its row lock (``template_store.locked_template``),
    which serialises the policy check with every other launch of the template.
    Raises ConcurrencyForbidden for a Forbid template with an active task.
    """
    existing = _existing(conn, template, request)
    if existing is not None:
        return Launched(existing, created=False)
    _apply_policy(conn, template, now)
    new = _new_task(template, request)
    if request.scheduled_time is None and request.event_id is None:
        return Launched(_insert_keyless(conn, template, new, now), created=True)
    task = task_store.insert_task(conn, new, now, template.namespace, template.name)
    if task is None:  # lost a race on the same key with another writer
        found = _existing(conn, template, request)
        assert found is not None
        return Launched(found, created=False)
    _insert_first_attempts(conn, template, task, now)
    message = _created_message(task.trigger, task.instance_count, task.scheduled_time)
    task_event(conn, task, Reason.TASK_CREATED, message, now)
    return Launched(task, created=True)


def _insert_keyless(
    conn: Connection, template: Template, new: task_store.NewTask, now: datetime
) -> Task:
    """A task no other writer can hold a key of, with its first attempts and its event:
    one statement on PostgreSQL (``store.launched``)."""
    attempts = _first_attempt_plans(template, new.instance_count)
    message = _created_message(new.trigger, new.instance_count, None)
    event = new_event_of_new_task(template, Reason.TASK_CREATED, message)
    names = (template.namespace, template.name)
    task = insert_with_instances(conn, new, names, now, attempts, event)
    log_event(new_event_of_task(task, Reason.TASK_CREATED, message))
    return task


def _new_task(template: Template, request: TaskRequest) -> task_store.NewTask:
    return task_store.NewTask(
        template_id=template.id,
        template_version=template.version,
        trigger=request.trigger,
        overrides=_overrides(request),
        instance_count=instance_count(template.spec, request.overrides.replicas),
        scheduled_time=request.scheduled_time,
        event_id=request.event_id,
        payload=request.payload,
    )


def _insert_first_attempts(conn: Connection, template: Template, task: Task, now: datetime) -> None:
    """The task's first attempts, pending, in the task's transaction: the controller's
    turn that starts them then has nothing to write (a trigger's start is a transaction
    shorter). Cron tasks of Allow templates, inserted hundreds at a time
    (``launch_scheduled``), leave this to the controller."""
    instance_store.add_instances(conn, _first_attempts(template, task), now)


def _first_attempts(template: Template, task: Task) -> list[instance_store.NewInstance]:
    plans = _first_attempt_plans(template, task.instance_count)
    return [instance_store.NewInstance.of(task.id, attempt) for attempt in plans]


def _first_attempt_plans(template: Template, count: int) -> list[CreateAttempt]:
    return [first_attempt(template.spec, index, count) for index in range(count)]


def launch_many(
    conn: Connection, launches: Sequence[tuple[Template, TaskRequest]], now: datetime
) -> list[Launched]:
    """``launch_task`` for each (template, request), in the caller's transaction; the
    results in order.

    A launch of an Allow template without an idempotency key looks at no other task:
    those are written together, their tasks, instances and events one statement each
    (HTTP triggers of one template arriving together, say). The others go one by one.
    """
    results: dict[int, Launched] = {}
    plain: list[int] = []
    for position, (template, request) in enumerate(launches):
        if _looks_at_no_task(template, request):
            plain.append(position)
        else:
            results[position] = launch_task(conn, template, request, now)
    together = _launch_together(conn, [launches[position] for position in plain], now)
    results.update(zip(plain, together, strict=True))
    return [results[position] for position in range(len(launches))]


def _looks_at_no_task(template: Template, request: TaskRequest) -> bool:
    keyless = request.scheduled_time is None and request.event_id is None
    return keyless and template.spec.concurrency_policy == "Allow"


def _launch_together(
    conn: Connection, launches: Sequence[tuple[Template, TaskRequest]], now: datetime
) -> list[Launched]:
    if len(launches) < 2:  # alone, one INSERT ... RETURNING costs least
        return [launch_task(conn, template, request, now) for template, request in launches]
    news = [_new_task(template, request) for template, request in launches]
    names = [(template.namespace, template.name) for template, _ in launches]
    tasks = task_store.insert_tasks(conn, news, names, now)
    pairs = list(zip((template for template, _ in launches), tasks, strict=True))
    instances = [new for template, task in pairs for new in _first_attempts(template, task)]
    instance_store.add_instances(conn, instances, now)
    events = [
        new_event_of_task(
            task, Reason.TASK_CREATED, _created_message(task.trigger, task.instance_count, None)
        )
        for task in tasks
    ]
    add_events(conn, events, now)
    return [Launched(task, created=True) for task in tasks]


def launch_scheduled(
    conn: Connection, firings: Sequence[tuple[Template, datetime]], now: datetime
) -> int:
    """Create the cron tasks of many templates in the caller's transaction; return how many.

    ``firings`` pairs each template (read under its row lock) with the scheduled time to
    fire. Templates whose concurrency policy is Allow need no look at their active tasks:
    they are inserted together, one statement for the tasks and one for their events. The
    others go one by one through ``launch_task``, which applies Forbid or Replace. A
    (template, scheduled time) that already has a task makes none: another replica or an
    earlier run recorded it.
    """
    created = 0
    allowed = []
    for template, fire_at in firings:
        if template.spec.concurrency_policy == "Allow":
            allowed.append((template, fire_at))
        else:
            created += _launch_scheduled_one(conn, template, fire_at, now)
    return created + _launch_scheduled_together(conn, allowed, now)


def _launch_scheduled_one(
    conn: Connection, template: Template, fire_at: datetime, now: datetime
) -> int:
    request = TaskRequest(trigger=TriggerKind.CRON, scheduled_time=fire_at)
    try:
        with conn.begin_nested():
            return int(launch_task(conn, template, request, now).created)
    except ConcurrencyForbidden as err:
        record_forbidden(conn, template, err, now)
        return 0


def _launch_scheduled_together(
    conn: Connection, firings: Sequence[tuple[Template, datetime]], now: datetime
) -> int:
    if not firings:
        return 0
    overrides = _overrides(TaskRequest(trigger=TriggerKind.CRON))
    news = [
        task_store.NewTask(
            template_id=template.id,
            template_version=template.version,
            trigger=TriggerKind.CRON,
            overrides=overrides,
            instance_count=instance_count(template.spec, None),
            scheduled_time=fire_at,
        )
        for template, fire_at in firings
    ]
    task_ids = task_store.insert_scheduled_tasks(conn, news, now)
    events = [
        new_task_event(
            template,
            task_ids[template.id],
            Reason.TASK_CREATED,
            _created_message(TriggerKind.CRON, new.instance_count, new.scheduled_time),
        )
        for (template, _), new in zip(firings, news, strict=True)
        if template.id in task_ids
    ]
    add_events(conn, events, now)
    return len(task_ids)


def _overrides(request: TaskRequest) -> dict[str, Any]:
    overrides = request.overrides.model_dump(mode="json", exclude_defaults=True)
    if request.command:
        overrides["command"] = request.command
    return overrides


def _existing(conn: Connection, template: Template, request: TaskRequest) -> Task | None:
    if request.scheduled_time is None and request.event_id is None:
        return None
    return task_store.find_task_by_key(conn, template.id, request.scheduled_time, request.event_id)


def _apply_policy(conn: Connection, template: Template, now: datetime) -> None:
    policy = template.spec.concurrency_policy
    if policy == "Allow":
        return
    active = task_store.active_tasks(conn, template.id)
    if not active:
        return
    if policy == "Forbid":
        raise ConcurrencyForbidden(
            f"template {template.name!r} forbids concurrent tasks and task {active[0].id} "
            "is still active",
            active_task_id=active[0].id,
        )
    for task in active:
        if task_store.begin_ending(conn, task.id, Reason.REPLACED, "replaced by a newer task"):
            task_event(conn, task, Reason.REPLACED, "replaced by a newer task", now)


def _created_message(trigger: TriggerKind, count: int, scheduled_time: datetime | None) -> str:
    text = f"{trigger.value} task with {count} instance(s)"
    if scheduled_time is not None:
        text += f", scheduled for {scheduled_time.isoformat()}"
    return text


def record_forbidden(
    conn: Connection, template: Template, err: ConcurrencyForbidden, now: datetime
) -> None:
    template_event(
        conn,
        template,
        Reason.CONCURRENCY_FORBIDDEN,
        f"skipped a new task: {err}",
        now,
        severity=Severity.WARNING,
    )
