"""Pure decisions of the task controller and the cron scheduler, at a fixed now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from jobyard import cron, planning
from jobyard.domain import Instance, InstanceStatus, Reason, RunAs, Task, TaskStatus, TriggerKind
from jobyard.spec import parse_spec

NOW = datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)


def make_spec(**extra: Any) -> Any:
    base: dict[str, Any] = {"name": "t", "deployment": {"type": "script", "script": "true"}}
    base.update(extra)
    return parse_spec(base)


def make_task(count: int = 1, **extra: Any) -> Task:
    fields: dict[str, Any] = dict(
        id=1, template_id="x", namespace="default", template_name="t", template_version=1,
        trigger=TriggerKind.MANUAL, status=TaskStatus.RUNNING, reason=None, message=None,
        overrides={}, instance_count=count, scheduled_time=None, event_id=None,
        created_at=NOW - timedelta(seconds=5), started_at=NOW - timedelta(seconds=5),
        finished_at=None, ending_reason=None, ending_message=None,
    )  # fmt: skip
    fields.update(extra)
    return Task(**fields)


def make_instance(index: int, attempt: int, status: InstanceStatus, **extra: Any) -> Instance:
    fields: dict[str, Any] = dict(
        id=100 + index * 10 + attempt, task_id=1, index=index, attempt=attempt, status=status,
        reason=None, message=None, exit_code=None, pid=None, shards=[], not_before=None,
        created_at=NOW, started_at=None, finished_at=NOW - timedelta(seconds=1),
        stop_requested=False,
    )  # fmt: skip
    fields.update(extra)
    return Instance(**fields)


def kinds(plan: planning.TaskPlan) -> list[str]:
    return [type(action).__name__ for action in plan.actions]


def test_new_task_creates_one_attempt_per_instance() -> None:
    plan = planning.plan_task(make_task(3), make_spec(replicas=3), [], NOW)
    assert kinds(plan) == ["CreateAttempt"] * 3
    assert [a.index for a in plan.actions if isinstance(a, planning.CreateAttempt)] == [0, 1, 2]


def test_sharding_spreads_shards_evenly() -> None:
    spec = make_spec(replicas=3, sharding={"enabled": True, "shards": list("abcdefg")})
    assert planning.instance_count(spec, None) == 3
    assert [planning.shards_of(spec, i, 3) for i in range(3)] == [
        ["a", "d", "g"],
        ["b", "e"],
        ["c", "f"],
    ]
    few = make_spec(replicas=5, sharding={"enabled": True, "shards": ["a", "b"]})
    assert planning.instance_count(few, None) == 2
    assert planning.instance_count(few, 1) == 1


def test_failed_instance_is_retried_after_doubling_backoff() -> None:
    spec = make_spec(retries=3, retry_backoff=10)
    first = make_instance(0, 0, InstanceStatus.FAILED, exit_code=1)
    failed = make_instance(0, 1, InstanceStatus.FAILED, exit_code=1)
    plan = planning.plan_task(make_task(), spec, [first, failed], NOW)
    (action,) = plan.actions
    assert isinstance(action, planning.CreateAttempt)
    assert action.attempt == 2
    assert action.not_before == failed.finished_at + timedelta(seconds=20)
    assert plan.wake_at == action.not_before


def test_backoff_is_capped() -> None:
    spec = make_spec(retry_backoff=100)
    assert planning.retry_delay(spec, 0) == 100
    assert planning.retry_delay(spec, 9) == planning.MAX_RETRY_DELAY
    assert planning.retry_delay(make_spec(retry_backoff=0), 5) == 0


def test_exhausted_retries_fail_the_task_and_stop_the_others() -> None:
    spec = make_spec(retries=1, replicas=2)
    first = make_instance(0, 0, InstanceStatus.FAILED, exit_code=1)
    failed = make_instance(0, 1, InstanceStatus.FAILED, exit_code=2)
    running = make_instance(1, 0, InstanceStatus.RUNNING, pid=42)
    plan = planning.plan_task(make_task(2), spec, [first, failed, running], NOW)
    assert kinds(plan) == ["BeginEnding", "StopInstance"]
    ending = plan.actions[0]
    assert isinstance(ending, planning.BeginEnding)
    assert ending.reason is Reason.BACKOFF_LIMIT_EXCEEDED
    assert ending.message == "instance 0 failed 2 times (last: exit code 2)"


def test_preemption_makes_a_new_attempt_at_once_without_using_a_retry() -> None:
    spec = make_spec(retries=0, retry_backoff=10, instance_type="best-effort")
    preempted = make_instance(0, 0, InstanceStatus.PREEMPTED, run_as=RunAs.BEST_EFFORT)
    plan = planning.plan_task(make_task(), spec, [preempted], NOW)
    (action,) = plan.actions
    assert action == planning.CreateAttempt(
        0, 1, [], None, RunAs.BEST_EFFORT, after_preemption=True
    )
    # Its failure afterwards is the first failure: with retries=0 the task ends.
    failed = make_instance(0, 1, InstanceStatus.FAILED, exit_code=1, run_as=RunAs.BEST_EFFORT)
    plan = planning.plan_task(make_task(), spec, [preempted, failed], NOW)
    assert kinds(plan) == ["BeginEnding", "FinishTask"]


def test_preempted_best_effort_first_falls_back_to_default() -> None:
    spec = make_spec(instance_type="best-effort-first")
    assert planning.first_run_as(spec) is RunAs.BEST_EFFORT
    preempted = make_instance(0, 0, InstanceStatus.PREEMPTED, run_as=RunAs.BEST_EFFORT)
    (action,) = planning.plan_task(make_task(), spec, [preempted], NOW).actions
    assert isinstance(action, planning.CreateAttempt)
    assert action.run_as is RunAs.DEFAULT and action.after_preemption


def test_retries_after_a_preemption_count_only_failures() -> None:
    spec = make_spec(retries=1, retry_backoff=10)
    history = [
        make_instance(0, 0, InstanceStatus.PREEMPTED),
        make_instance(0, 1, InstanceStatus.FAILED, exit_code=1),
    ]
    (action,) = planning.plan_task(make_task(), spec, history, NOW).actions
    assert isinstance(action, planning.CreateAttempt)
    assert action.attempt == 2
    assert action.not_before == history[1].finished_at + timedelta(seconds=10)


def test_a_missing_runtime_fails_the_task_without_retries() -> None:
    spec = make_spec(retries=3)
    missing = make_instance(
        0, 0, InstanceStatus.FAILED, reason=Reason.RUNTIME_MISSING, message="java is missing"
    )
    plan = planning.plan_task(make_task(), spec, [missing], NOW)
    ending = plan.actions[0]
    assert isinstance(ending, planning.BeginEnding)
    assert ending.reason is Reason.RUNTIME_MISSING
    assert kinds(plan) == ["BeginEnding", "FinishTask"]
    finish = plan.actions[1]
    assert isinstance(finish, planning.FinishTask) and finish.status is TaskStatus.FAILED


def test_ended_task_finishes_with_the_reasons_status() -> None:
    task = make_task(ending_reason=Reason.BACKOFF_LIMIT_EXCEEDED, ending_message="gave up")
    done = make_instance(0, 0, InstanceStatus.FAILED, exit_code=1)
    plan = planning.plan_task(task, make_spec(retries=0), [done], NOW)
    (finish,) = plan.actions
    assert finish == planning.FinishTask(TaskStatus.FAILED, "BackoffLimitExceeded", "gave up")


def test_timeout_begins_deadline_exceeded() -> None:
    task = make_task(started_at=NOW - timedelta(seconds=61))
    running = make_instance(0, 0, InstanceStatus.RUNNING, pid=7)
    plan = planning.plan_task(task, make_spec(timeout=60), [running], NOW)
    assert kinds(plan) == ["BeginEnding", "StopInstance"]
    assert plan.actions[0] == planning.BeginEnding(
        Reason.DEADLINE_EXCEEDED, "task ran past its timeout of 60 s"
    )


def test_timeout_zero_means_no_limit_and_deadline_sets_wake() -> None:
    running = make_instance(0, 0, InstanceStatus.RUNNING, pid=7)
    old = make_task(started_at=NOW - timedelta(days=30))
    assert planning.plan_task(old, make_spec(timeout=0), [running], NOW).actions == []
    plan = planning.plan_task(make_task(), make_spec(timeout=60), [running], NOW)
    assert plan.wake_at == NOW + timedelta(seconds=55)


def test_stop_abandons_unstarted_and_stops_running_once() -> None:
    task = make_task(2, ending_reason=Reason.STOPPED, ending_message="by request")
    waiting = make_instance(0, 1, InstanceStatus.PENDING, not_before=NOW + timedelta(seconds=9))
    running = make_instance(1, 0, InstanceStatus.RUNNING, pid=7)
    assert kinds(planning.plan_task(task, make_spec(), [waiting, running], NOW)) == [
        "AbandonInstance",
        "StopInstance",
    ]
    asked = make_instance(1, 0, InstanceStatus.RUNNING, pid=7, stop_requested=True)
    assert planning.plan_task(task, make_spec(), [asked], NOW).actions == []


def test_all_succeeded_finishes_the_task() -> None:
    done = [make_instance(i, 0, InstanceStatus.SUCCEEDED, exit_code=0) for i in range(2)]
    plan = planning.plan_task(make_task(2), make_spec(replicas=2), done, NOW)
    assert plan.actions == [
        planning.FinishTask(TaskStatus.SUCCEEDED, Reason.COMPLETED, "2 instances succeeded")
    ]


def test_pending_instance_spawns_when_its_backoff_is_over() -> None:
    ready = make_instance(0, 1, InstanceStatus.PENDING, not_before=NOW)
    assert kinds(planning.plan_task(make_task(), make_spec(), [ready], NOW)) == ["SpawnInstance"]


def test_firing_on_time() -> None:
    schedule = cron.parse_schedule("*/5 * * * *")
    due = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    firing = planning.plan_firing(schedule, due, due + timedelta(milliseconds=3), 60)
    assert firing == planning.Firing(due, None, None, due + timedelta(minutes=5))


def test_after_downtime_only_the_latest_missed_firing_runs() -> None:
    schedule = cron.parse_schedule("* * * * *")
    due = datetime(2026, 12, 4, 11, 0, tzinfo=UTC)
    now = datetime(2026, 12, 4, 12, 0, 30, tzinfo=UTC)
    firing = planning.plan_firing(schedule, due, now, 60)
    assert firing.fire_at == datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    assert firing.missed_from == due
    assert firing.missed_to == datetime(2026, 12, 4, 11, 59, tzinfo=UTC)
    assert firing.next_fire_at == datetime(2026, 12, 4, 12, 1, tzinfo=UTC)


def test_beyond_the_starting_deadline_nothing_runs_but_it_is_reported() -> None:
    schedule = cron.parse_schedule("0 * * * *")
    due = datetime(2026, 12, 4, 11, 0, tzinfo=UTC)
    now = datetime(2026, 12, 4, 11, 5, tzinfo=UTC)
    firing = planning.plan_firing(schedule, due, now, 60)
    assert firing.fire_at is None
    assert firing.missed_from == due
    assert firing.next_fire_at == datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
