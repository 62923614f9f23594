"""Writing a task plan's decisions, then handing the instances it asked for to
the spawn threads."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.engine import Connection

from jobyard import planning
from jobyard.domain import (
    Instance,
    InstanceStatus,
    NewEvent,
    Reason,
    RunAs,
    Severity,
    Task,
    TaskStatus,
)
from jobyard.engine.clock import Clock
from jobyard.engine.events import add_events, instance_event, new_event_of_task, task_event
from jobyard.engine.launches import CannotLaunch, Launcher, NotReady
from jobyard.engine.starts import Started, record_unstarted
from jobyard.errors import JobyardError
from jobyard.runners.base import InstanceLaunch, Runner
from jobyard.spec import TemplateSpec
from jobyard.store import Store
from jobyard.store import instances as instance_store
from jobyard.store import tasks as task_store

logger = logging.getLogger(__name__)

_FINISH_REASON = {
    TaskStatus.SUCCEEDED: Reason.TASK_SUCCEEDED,
    TaskStatus.FAILED: Reason.TASK_FAILED,
    TaskStatus.STOPPED: Reason.TASK_STOPPED,
}


@dataclass
class Turn:
    """What one reconcile turn decided to do once its transaction commits."""

    to_spawn: list[tuple[Task, Instance]] = field(default_factory=list)
    to_stop: list[tuple[int, float]] = field(default_factory=list)
    attempts: list[tuple[Task, planning.CreateAttempt]] = field(default_factory=list)
    finishes: list[tuple[Task, planning.FinishTask]] = field(default_factory=list)
    wake_at: datetime | None = None
    changed: bool = False


# Processes are spawned by a few threads at once: preparing a run directory and
# posix_spawn spend most of their time outside the GIL, in the kernel.
SPAWN_THREADS = 4


class Spawner:
    def __init__(self, store: Store, runner: Runner, clock: Clock, launcher: Launcher) -> None:
        self._store = store
        self._runner = runner
        self._clock = clock
        self._launcher = launcher
        self._pool = ThreadPoolExecutor(SPAWN_THREADS, thread_name_prefix="jobyard-spawn")

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def write_action(
        self,
        conn: Connection,
        task: Task,
        spec: TemplateSpec,
        by_id: dict[int, Instance],
        action: planning.Action,
        now: datetime,
        turn: Turn,
    ) -> None:
        if isinstance(action, planning.SpawnInstance):
            turn.to_spawn.append((task, by_id[action.instance_id]))
            return
        if isinstance(action, planning.CreateAttempt):
            turn.attempts.append((task, action))  # inserted together: create_attempts
        elif isinstance(action, planning.StopInstance):
            instance_store.request_instance_stop(conn, action.instance_id)
            turn.to_stop.append((action.instance_id, float(spec.termination_grace_period)))
        elif isinstance(action, planning.AbandonInstance):
            turn.changed = True  # the task can finish on the next pass
            reason = task.ending_reason or Reason.STOPPED
            instance_store.finish_instance(
                conn, action.instance_id, InstanceStatus.KILLED, None, reason, "never started", now
            )
        elif isinstance(action, planning.BeginEnding):
            if task_store.begin_ending(conn, task.id, action.reason, action.message):
                severity = Severity.WARNING
                task_event(conn, task, action.reason, f"stopping: {action.message}", now, severity)
        else:
            turn.finishes.append((task, action))  # ended together: finish_tasks

    def create_attempts(self, conn: Connection, turn: Turn, now: datetime) -> None:
        """Insert the turn's new attempts in one statement; those due now join
        ``turn.to_spawn``, which stays in task order (admission's order)."""
        news = [instance_store.NewInstance.of(task.id, a) for task, a in turn.attempts]
        created = instance_store.insert_instances(conn, news, now)
        for task, action in turn.attempts:
            instance = created[(task.id, action.index, action.attempt)]
            _announce(conn, task, instance, action, now)
            if action.not_before is None or action.not_before <= now:
                turn.to_spawn.append((task, instance))
        turn.to_spawn.sort(key=lambda item: item[0].id)
        turn.attempts = []

    def finish_tasks(self, conn: Connection, turn: Turn, now: datetime) -> None:
        """End the turn's finished tasks with one statement, their events with another."""
        ends = [
            task_store.TaskEnd(task.id, action.status, action.reason, action.message)
            for task, action in turn.finishes
        ]
        task_store.finish_tasks(conn, ends, now)
        add_events(conn, [_finish_event(task, action) for task, action in turn.finishes], now)
        turn.finishes = []

    # -- acting ---------------------------------------------------------------

    def spawn_all(
        self, to_spawn: list[tuple[Task, Instance]], report: Callable[[Started], None]
    ) -> Unstarted:
        """Hand what can start to the spawn threads, which ``report`` each outcome;
        return what could not be handed over, and what was."""
        unstarted = Unstarted()
        for task, instance in to_spawn:
            try:
                launch = self._launcher.build(task, instance)
            except (OSError, JobyardError) as err:
                launch = CannotLaunch(Reason.START_FAILED, str(err))
            if isinstance(launch, NotReady):
                unstarted.waiting.append((task, instance, launch))
            elif isinstance(launch, CannotLaunch):
                unstarted.failed.append((task, instance, launch))
            else:
                self._pool.submit(self._start, task, instance, launch, report)
                unstarted.submitted.append(instance)
        return unstarted

    def _start(
        self,
        task: Task,
        instance: Instance,
        launch: InstanceLaunch,
        report: Callable[[Started], None],
    ) -> None:
        """Start one instance (a spawn thread)."""
        try:
            pid = self._runner.start(launch)
        except (OSError, JobyardError) as err:
            logger.warning("instance %s failed to start: %s", instance.id, err)
            report(Started(task, instance, failure=CannotLaunch(Reason.START_FAILED, str(err))))
        except Exception as err:  # reported, or the instance would wait for its spawn forever
            logger.exception("instance %s failed to start", instance.id)
            report(Started(task, instance, failure=CannotLaunch(Reason.START_FAILED, repr(err))))
        else:
            report(Started(task, instance, pid=pid))

    def record_unstarted(self, unstarted: Unstarted) -> None:
        if unstarted.failed or unstarted.waiting:
            with self._store.write() as conn:
                record_unstarted(conn, unstarted.failed, unstarted.waiting, self._clock.now())


def _finish_event(task: Task, action: planning.FinishTask) -> NewEvent:
    severity = Severity.NORMAL if action.status is TaskStatus.SUCCEEDED else Severity.WARNING
    text = f"{action.reason}: {action.message}"
    return new_event_of_task(task, _FINISH_REASON[action.status], text, severity)


def _announce(
    conn: Connection, task: Task, instance: Instance, action: planning.CreateAttempt, now: datetime
) -> None:
    """A retry or a restart after preemption gets an event; a first attempt does not."""
    if action.after_preemption:
        _record_restart(conn, task, instance, now)
    elif action.attempt > 0:
        delay = (action.not_before or now) - now
        text = (
            f"instance {instance.index} starts attempt {action.attempt} "
            f"in {max(0.0, delay.total_seconds()):.0f} s"
        )
        instance_event(conn, task, instance, Reason.RETRYING, text, now, Severity.WARNING)


def _record_restart(conn: Connection, task: Task, instance: Instance, now: datetime) -> None:
    """A preempted instance comes back as a new attempt; it is not a retry."""
    if instance.run_as is RunAs.DEFAULT:
        reason = Reason.FELL_BACK_TO_DEFAULT
        text = (
            f"instance {instance.index} was preempted; attempt {instance.attempt} runs as default"
        )
    else:
        reason = Reason.RETRYING
        text = (
            f"instance {instance.index} was preempted; attempt {instance.attempt} "
            "waits for best-effort room (not counted as a retry)"
        )
    instance_event(conn, task, instance, reason, text, now)


@dataclass
class Unstarted:
    """What one spawn pass could not hand to the spawn threads, and what it did."""

    failed: list[tuple[Task, Instance, CannotLaunch]] = field(default_factory=list)
    waiting: list[tuple[Task, Instance, NotReady]] = field(default_factory=list)
    submitted: list[Instance] = field(default_factory=list)
