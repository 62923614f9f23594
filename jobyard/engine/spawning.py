"""Writing a task plan's decisions, then starting the instances it asked for."""

from __future__ import annotations

import json
import logging
import shlex
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.engine import Connection

from jobyard import planning
from jobyard.domain import Instance, InstanceStatus, Reason, Severity, Task, TaskStatus
from jobyard.engine.clock import Clock
from jobyard.engine.environment import instance_env
from jobyard.engine.events import instance_event, task_event
from jobyard.engine.specs import SpecCache
from jobyard.errors import JobyardError
from jobyard.runners.base import InstanceLaunch, Runner
from jobyard.spec import TemplateSpec
from jobyard.store import Store
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
    wake_at: datetime | None = None
    changed: bool = False


class Spawner:
    def __init__(self, store: Store, runner: Runner, clock: Clock, specs: SpecCache) -> None:
        self._store = store
        self._runner = runner
        self._clock = clock
        self._specs = specs

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
            self._create_attempt(conn, task, action, now, turn)
        elif isinstance(action, planning.StopInstance):
            task_store.request_instance_stop(conn, action.instance_id)
            turn.to_stop.append((action.instance_id, float(spec.termination_grace_period)))
        elif isinstance(action, planning.AbandonInstance):
            turn.changed = True  # the task can finish on the next pass
            reason = task.ending_reason or Reason.STOPPED
            task_store.finish_instance(
                conn, action.instance_id, InstanceStatus.KILLED, None, reason, "never started", now
            )
        elif isinstance(action, planning.BeginEnding):
            if task_store.begin_ending(conn, task.id, action.reason, action.message):
                severity = Severity.WARNING
                task_event(conn, task, action.reason, f"stopping: {action.message}", now, severity)
        else:
            self._finish(conn, task, action, now)

    def _create_attempt(
        self,
        conn: Connection,
        task: Task,
        action: planning.CreateAttempt,
        now: datetime,
        turn: Turn,
    ) -> None:
        instance = task_store.insert_instance(
            conn, task.id, action.index, action.attempt, action.shards, action.not_before, now
        )
        if action.attempt > 0:
            delay = (action.not_before or now) - now
            text = (
                f"instance {action.index} starts attempt {action.attempt} "
                f"in {max(0.0, delay.total_seconds()):.0f} s"
            )
            instance_event(conn, task, instance, Reason.RETRYING, text, now, Severity.WARNING)
        if action.not_before is None or action.not_before <= now:
            turn.to_spawn.append((task, instance))

    def _finish(
        self, conn: Connection, task: Task, action: planning.FinishTask, now: datetime
    ) -> None:
        task_store.finish_task(conn, task.id, action.status, action.reason, action.message, now)
        severity = Severity.NORMAL if action.status is TaskStatus.SUCCEEDED else Severity.WARNING
        reason = _FINISH_REASON[action.status]
        task_event(conn, task, reason, f"{action.reason}: {action.message}", now, severity)

    # -- acting ---------------------------------------------------------------

    def spawn_all(self, to_spawn: list[tuple[Task, Instance]]) -> None:
        started: list[tuple[Task, Instance, int]] = []
        failed: list[tuple[Task, Instance, str]] = []
        for task, instance in to_spawn:
            try:
                pid = self._runner.start(self._launch(task, instance))
            except (OSError, JobyardError) as err:
                logger.warning("instance %s failed to start: %s", instance.id, err)
                failed.append((task, instance, str(err)))
            else:
                started.append((task, instance, pid))
        self._record_starts(started, failed)

    def _launch(self, task: Task, instance: Instance) -> InstanceLaunch:
        spec = self._specs.get(task.template_id, task.template_version)
        deployment = spec.deployment
        command = task.overrides.get("command")
        payload = None if task.payload is None else json.dumps(task.payload).encode()
        return InstanceLaunch(
            task_id=task.id,
            instance_id=instance.id,
            shell=deployment.shell,
            script=shlex.join(command) if command else deployment.script,
            env=instance_env(spec, task, instance),
            payload=payload,
        )

    def _record_starts(
        self,
        started: list[tuple[Task, Instance, int]],
        failed: list[tuple[Task, Instance, str]],
    ) -> None:
        now = self._clock.now()
        newly_running: set[int] = set()
        with self._store.write() as conn:
            for task, instance, pid in started:
                task_store.mark_instance_running(conn, instance.id, pid, now)
                if task.status is TaskStatus.PENDING and task.id not in newly_running:
                    newly_running.add(task.id)
                    task_store.mark_task_running(conn, task.id, now)
                    task_event(conn, task, Reason.TASK_STARTED, "first instance started", now)
                text = f"instance {instance.index} attempt {instance.attempt} started, pid {pid}"
                instance_event(conn, task, instance, Reason.INSTANCE_STARTED, text, now)
            for task, instance, error in failed:
                task_store.finish_instance(
                    conn, instance.id, InstanceStatus.FAILED, None, Reason.START_FAILED, error, now
                )
                text = f"instance {instance.index} could not start: {error}"
                instance_event(conn, task, instance, Reason.START_FAILED, text, now, Severity.ERROR)
