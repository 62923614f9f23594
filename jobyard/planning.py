"""Pure decisions: given a task, its template spec, its instances and ``now``,
what must happen next. The engine carries the answer out; nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from jobyard import cron
from jobyard.domain import (
    FATAL_INSTANCE_REASONS,
    STOP_REASON_STATUS,
    Instance,
    InstanceStatus,
    Reason,
    RunAs,
    Task,
    TaskStatus,
)
from jobyard.spec import TemplateSpec

MAX_RETRY_DELAY = 600  # seconds: the exponential backoff stops doubling here
_TICK = timedelta(microseconds=1)


def instance_count(spec: TemplateSpec, replicas_override: int | None) -> int:
    """How many instances a task runs: replicas, but no more than there are shards."""
    replicas = replicas_override or spec.replicas
    if spec.sharding.enabled:
        return min(replicas, len(spec.sharding.shards))
    return replicas


def shards_of(spec: TemplateSpec, index: int, count: int) -> list[str]:
    """Shard i goes to instance i mod count."""
    if not spec.sharding.enabled:
        return []
    return [shard for i, shard in enumerate(spec.sharding.shards) if i % count == index]


def retry_delay(spec: TemplateSpec, failed_attempt: int) -> float:
    """Seconds to wait before the attempt after ``failed_attempt`` (0-based)."""
    if spec.retry_backoff == 0:
        return 0.0
    cap = max(MAX_RETRY_DELAY, spec.retry_backoff)
    return float(min(spec.retry_backoff * 2**failed_attempt, cap))


@dataclass(frozen=True)
class CreateAttempt:
    index: int
    attempt: int
    shards: list[str]
    not_before: datetime | None
    run_as: RunAs = RunAs.DEFAULT
    # The attempt replaces a preempted one: it does not count as a retry.
    after_preemption: bool = False


@dataclass(frozen=True)
class SpawnInstance:
    instance_id: int


@dataclass(frozen=True)
class StopInstance:
    instance_id: int


@dataclass(frozen=True)
class AbandonInstance:
    """A pending instance with no process yet: end it without starting it."""

    instance_id: int


@dataclass(frozen=True)
class BeginEnding:
    reason: Reason
    message: str


@dataclass(frozen=True)
class FinishTask:
    status: TaskStatus
    reason: str
    message: str


Action = CreateAttempt | SpawnInstance | StopInstance | AbandonInstance | BeginEnding | FinishTask


@dataclass
class TaskPlan:
    actions: list[Action] = field(default_factory=list)
    wake_at: datetime | None = None

    def wake_no_later_than(self, when: datetime) -> None:
        if self.wake_at is None or when < self.wake_at:
            self.wake_at = when


def first_run_as(spec: TemplateSpec) -> RunAs:
    """The class a fresh attempt asks for: best-effort-first tries best-effort."""
    return RunAs.DEFAULT if spec.instance_type == "default" else RunAs.BEST_EFFORT


def first_attempt(spec: TemplateSpec, index: int, count: int) -> CreateAttempt:
    """Instance ``index`` of ``count``: its first attempt, due now."""
    return CreateAttempt(index, 0, shards_of(spec, index, count), None, first_run_as(spec))


def run_as_after_preemption(spec: TemplateSpec) -> RunAs:
    """best-effort stays best-effort; best-effort-first falls back to default."""
    return RunAs.BEST_EFFORT if spec.instance_type == "best-effort" else RunAs.DEFAULT


def failures_by_index(instances: Sequence[Instance]) -> dict[int, int]:
    """Failed attempts per instance index: what retries are counted against."""
    failures: dict[int, int] = {}
    for instance in instances:
        if _is_failure(instance):
            failures[instance.index] = failures.get(instance.index, 0) + 1
    return failures


def latest_attempts(instances: Sequence[Instance]) -> dict[int, Instance]:
    latest: dict[int, Instance] = {}
    for instance in instances:
        current = latest.get(instance.index)
        if current is None or instance.attempt > current.attempt:
            latest[instance.index] = instance
    return latest


def plan_task(
    task: Task, spec: TemplateSpec, instances: Sequence[Instance], now: datetime
) -> TaskPlan:
    plan = TaskPlan()
    latest = latest_attempts(instances)
    failures = failures_by_index(instances)
    ending = task.ending_reason
    if ending is None:
        decision = _ending_decision(task, spec, latest, failures, now, plan)
        if decision is not None:
            plan.actions.append(decision)
            ending = decision.reason
    if ending is not None:
        message = task.ending_message or _message_of(plan) or ending
        _plan_ending(instances, ending, message, plan)
    else:
        _plan_progress(task, spec, latest, failures, now, plan)
    return plan


def _message_of(plan: TaskPlan) -> str | None:
    for action in plan.actions:
        if isinstance(action, BeginEnding):
            return action.message
    return None


def _ending_decision(
    task: Task,
    spec: TemplateSpec,
    latest: dict[int, Instance],
    failures: dict[int, int],
    now: datetime,
    plan: TaskPlan,
) -> BeginEnding | None:
    if spec.timeout > 0:
        deadline = (task.started_at or task.created_at) + timedelta(seconds=spec.timeout)
        if now >= deadline:
            return BeginEnding(
                Reason.DEADLINE_EXCEEDED, f"task ran past its timeout of {spec.timeout} s"
            )
        plan.wake_no_later_than(deadline)
    for index, instance in sorted(latest.items()):
        if _is_failure(instance) and instance.reason in FATAL_INSTANCE_REASONS:
            return BeginEnding(Reason(instance.reason), f"instance {index}: {instance.message}")
        if _is_failure(instance) and failures[index] > spec.retries:
            return BeginEnding(
                Reason.BACKOFF_LIMIT_EXCEEDED, _exhausted(index, instance, failures[index])
            )
    return None


def _exhausted(index: int, instance: Instance, tries: int) -> str:
    how = instance.reason or "failed"
    if instance.exit_code is not None:
        how = f"exit code {instance.exit_code}"
    return f"instance {index} failed {tries} time{'s' if tries > 1 else ''} (last: {how})"


def _is_failure(instance: Instance) -> bool:
    return instance.status in (InstanceStatus.FAILED, InstanceStatus.LOST, InstanceStatus.KILLED)


def _plan_ending(instances: Sequence[Instance], reason: str, message: str, plan: TaskPlan) -> None:
    live = [instance for instance in instances if instance.is_live]
    for instance in live:
        if instance.status is InstanceStatus.PENDING and instance.pid is None:
            plan.actions.append(AbandonInstance(instance.id))
        elif not instance.stop_requested:
            plan.actions.append(StopInstance(instance.id))
    if not live:
        status = STOP_REASON_STATUS.get(Reason(reason), TaskStatus.STOPPED)
        plan.actions.append(FinishTask(status, reason, message))


def _plan_progress(
    task: Task,
    spec: TemplateSpec,
    latest: dict[int, Instance],
    failures: dict[int, int],
    now: datetime,
    plan: TaskPlan,
) -> None:
    for index in range(task.instance_count):
        instance = latest.get(index)
        if instance is None:
            plan.actions.append(first_attempt(spec, index, task.instance_count))
        elif instance.status is InstanceStatus.PREEMPTED:
            run_as = run_as_after_preemption(spec)
            attempt = CreateAttempt(
                index, instance.attempt + 1, instance.shards, None, run_as, after_preemption=True
            )
            plan.actions.append(attempt)
        elif _is_failure(instance):
            delay = timedelta(seconds=retry_delay(spec, failures[index] - 1))
            not_before = (instance.finished_at or now) + delay
            plan.actions.append(
                CreateAttempt(
                    index, instance.attempt + 1, instance.shards, not_before, instance.run_as
                )
            )
            plan.wake_no_later_than(not_before)
        elif instance.status is InstanceStatus.PENDING and instance.pid is None:
            if instance.not_before is None or instance.not_before <= now:
                plan.actions.append(SpawnInstance(instance.id))
            else:
                plan.wake_no_later_than(instance.not_before)
    done = [i for i in latest.values() if i.status is InstanceStatus.SUCCEEDED]
    if len(done) == task.instance_count:
        count = task.instance_count
        plan.actions.append(
            FinishTask(
                TaskStatus.SUCCEEDED,
                Reason.COMPLETED,
                f"{count} instance{'s' if count > 1 else ''} succeeded",
            )
        )


@dataclass(frozen=True)
class Firing:
    """What a cron template does when its stored fire time ``due`` has come.

    fire_at: the scheduled time to start a task for now, or None when the
    latest due time is past the starting deadline. missed_from/missed_to
    bound the due times that are skipped (None when none are).
    """

    fire_at: datetime | None
    missed_from: datetime | None
    missed_to: datetime | None
    next_fire_at: datetime


def plan_firing(
    schedule: cron.CronSchedule, due: datetime, now: datetime, starting_deadline: int
) -> Firing:
    """At most one firing, the latest, and only within the starting deadline."""
    latest = cron.latest_fire_at_or_before(schedule, due - timedelta(microseconds=1), now)
    next_fire_at = cron.next_fire_after(schedule, now)
    if latest is None:
        return Firing(None, None, None, next_fire_at)
    in_time = (now - latest).total_seconds() <= starting_deadline
    fire_at = latest if in_time else None
    if fire_at is None:
        return Firing(None, due, latest, next_fire_at)
    if latest > due:
        last_missed = cron.latest_fire_at_or_before(schedule, due - _TICK, latest - _TICK)
        return Firing(fire_at, due, last_missed, next_fire_at)
    return Firing(fire_at, None, None, next_fire_at)
