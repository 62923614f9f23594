"""The task controller: one thread that makes actual instances match desired tasks.

Level-triggered: each turn reads the active tasks with their instances, asks
``planning.plan_task`` what to do, writes the decisions, then acts on them.
Wake-ups (a new task, a stop request, a spawn's report, a process exit) start
a turn early; a periodic resync catches anything missed. Spawning runs on the
spawn threads while turns go on; a task with an instance being spawned is
left out of planning until the spawn reports back.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from jobyard import planning
from jobyard.domain import Instance, Task
from jobyard.engine.admission import ActiveTask, Admitter, starts_as_they_are
from jobyard.engine.clock import Clock
from jobyard.engine.exits import record_exits
from jobyard.engine.launches import Launcher
from jobyard.engine.spawning import Spawner, Turn
from jobyard.engine.specs import SpecCache
from jobyard.engine.starts import Started, record_started
from jobyard.errors import NotFound
from jobyard.runners.base import InstanceExit, Runner
from jobyard.spec import TemplateSpec
from jobyard.store import Store
from jobyard.store.in_play import InPlayReader

logger = logging.getLogger(__name__)

_STOP = object()
_WAKE = object()
ORPHAN_FILE_GRACE = 5.0  # seconds after the kill grace before files go regardless
# Queued tasks one turn considers beyond every running one: a backlog of
# thousands must not make each turn (one per exit) read them all.
PENDING_WINDOW = 256


@dataclass(frozen=True)
class Orphans:
    """Instances whose rows were deleted (with their task or template) while live."""

    instances: list[tuple[int, int, float]]  # (task id, instance id, grace seconds)
    task_ids: list[int]  # every deleted task, whose files must go


class Controller:
    def __init__(
        self,
        store: Store,
        runner: Runner,
        clock: Clock,
        specs: SpecCache,
        launcher: Launcher,
        admitter: Admitter,
        resync_seconds: float,
    ) -> None:
        self._admitter = admitter
        self._precedence = store.precedence  # cron firing goes first
        self._store = store
        self._runner = runner
        self._clock = clock
        self._specs = specs
        self._resync = resync_seconds
        self._spawner = Spawner(store, runner, clock, launcher)
        self._inbox: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._orphans: dict[int, int] = {}  # instance id -> task id
        self._orphan_files: dict[int, datetime] = {}  # task id -> remove-by time
        self._in_flight: dict[int, int] = {}  # instance id -> task id, while being spawned
        self._held_exits: list[InstanceExit] = []
        self._deferred: set[int] = set()  # tasks a turn left out while spawning
        self._in_play = InPlayReader()
        self._thread = threading.Thread(target=self._run, name="jobyard-controller", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._inbox.put(_STOP)
        self._thread.join(timeout=30)
        self._spawner.close()

    def wake(self) -> None:
        self._inbox.put(_WAKE)

    def on_exit(self, exit: InstanceExit) -> None:
        """Runner callback (any thread)."""
        self._inbox.put(exit)

    def discard(self, orphans: Orphans) -> None:
        self._inbox.put(orphans)

    # -- the loop -------------------------------------------------------------

    def _run(self) -> None:
        wake_at: datetime | None = None
        while True:
            messages = self._receive(self._timeout(wake_at))
            if _STOP in messages:
                return
            try:
                wake_at = self._turn(messages, wake_at)
            except Exception:
                logger.exception("controller turn failed; trying again in a second")
                wake_at = self._clock.now() + timedelta(seconds=1)

    def _timeout(self, wake_at: datetime | None) -> float:
        if wake_at is None:
            return self._resync
        seconds = (wake_at - self._clock.now()).total_seconds()
        return max(0.0, min(self._resync, seconds))

    def _receive(self, timeout: float) -> list[object]:
        try:
            messages = [self._inbox.get(timeout=timeout)]
        except queue.Empty:
            return []
        while True:
            try:
                messages.append(self._inbox.get_nowait())
            except queue.Empty:
                return messages

    def _turn(self, messages: list[object], wake_at: datetime | None) -> datetime | None:
        """Record what the messages report, then reconcile unless nothing can
        have changed a plan; return when the next turn is due."""
        for orphans in (m for m in messages if isinstance(m, Orphans)):
            self._adopt_orphans(orphans)
        reports = [m for m in messages if isinstance(m, Started)]
        for report in reports:
            self._in_flight.pop(report.instance.id, None)
        exits = self._held_exits + [m for m in messages if isinstance(m, InstanceExit)]
        # An instance can end before its spawn is reported: its exit waits for that.
        self._held_exits = [e for e in exits if e.instance_id in self._in_flight]
        known = self._forget_orphans([e for e in exits if e.instance_id not in self._in_flight])
        if reports or known:
            self._record(reports, known)
        self._remove_orphan_files()
        if messages and not known and all(self._only_started(m) for m in messages):
            return wake_at  # the spawns were planned and their room held already
        self._deferred.clear()
        return self.reconcile()

    def _only_started(self, message: object) -> bool:
        """A report of a start whose task no turn has left out meanwhile."""
        if not isinstance(message, Started) or message.failure is not None:
            return False
        return message.task.id not in self._deferred

    def _record(self, reports: list[Started], exits: list[InstanceExit]) -> None:
        self._precedence.give_way()
        now = self._clock.now()
        with self._store.write() as conn:
            to_stop = record_started(conn, reports, now)
            record_exits(conn, exits, now)
        for instance_id in to_stop:
            self._runner.stop(instance_id, 0.0)

    # -- reconcile ------------------------------------------------------------

    def reconcile(self) -> datetime | None:
        """Run turns until nothing changes; return when the next one is due."""
        for _ in range(10):
            turn = self._plan_and_write()
            self._act(turn)
            if not turn.changed:
                return self._earliest(turn.wake_at)
        return self._clock.now()

    def _earliest(self, wake_at: datetime | None) -> datetime | None:
        for deadline in self._orphan_files.values():
            if wake_at is None or deadline < wake_at:
                wake_at = deadline
        return wake_at

    def _plan_and_write(self) -> Turn:
        self._precedence.give_way()
        now = self._clock.now()
        with self._store.read() as conn:
            in_play = self._in_play.read(conn, PENDING_WINDOW)
        active = [task for task, _ in in_play]
        by_task = defaultdict(list, {task.id: instances for task, instances in in_play})
        turn = Turn(to_spawn=[], to_stop=[])
        # A task with an instance being spawned waits for the spawn's report.
        spawning = set(self._in_flight.values())
        plans = [
            self._plan_one(task, by_task[task.id], now, turn, task.id in spawning)
            for task in active
        ]
        planned = [plan for plan in plans if plan is not None]
        work = [(task, spec, plan) for task, spec, plan in planned if plan and plan.actions]
        if not work:
            return turn  # nothing to write: no transaction at all
        specs = {task.id: (task, spec) for task, spec, _ in planned}
        every = [i for task, _, _ in planned for i in by_task[task.id]]
        if self._start_without_writing(work, by_task, specs, every, turn):
            return turn
        with self._store.write() as conn:  # gives way to a firing, too
            for task, spec, plan in work:
                by_id = {instance.id: instance for instance in by_task[task.id]}
                for action in plan.actions:
                    self._spawner.write_action(conn, task, spec, by_id, action, now, turn)
            self._spawner.create_attempts(conn, turn, now)
            self._spawner.finish_tasks(conn, turn, now)
            if turn.to_spawn:
                self._admitter.admit(conn, specs, every, set(self._in_flight), turn, now)
        return turn

    def _start_without_writing(
        self,
        work: list[tuple[Task, TemplateSpec, planning.TaskPlan]],
        by_task: defaultdict[int, list[Instance]],
        specs: dict[int, ActiveTask],
        every: list[Instance],
        turn: Turn,
    ) -> bool:
        """A turn that only starts pending instances, each fitting in the class it has
        (a task launched with its instances, say), writes nothing: no transaction."""
        actions = [(task, action) for task, _, plan in work for action in plan.actions]
        spawns = [(t, a) for t, a in actions if isinstance(a, planning.SpawnInstance)]
        if len(spawns) != len(actions):
            return False
        by_id = {i.id: i for task, _, _ in work for i in by_task[task.id]}
        to_spawn = sorted(
            ((task, by_id[action.instance_id]) for task, action in spawns),
            key=lambda item: item[0].id,
        )
        admission = self._admitter.decide(specs, every, set(self._in_flight), to_spawn)
        if not starts_as_they_are(admission, to_spawn):
            return False
        turn.to_spawn = to_spawn
        return True

    def _plan_one(
        self, task: Task, instances: list[Instance], now: datetime, turn: Turn, spawning: bool
    ) -> tuple[Task, TemplateSpec, planning.TaskPlan | None] | None:
        try:
            spec = self._specs.get(task.template_id, task.template_version)
        except NotFound:
            return None  # deleted since we read it
        if spawning:
            self._deferred.add(task.id)  # planned once its spawns have reported
            return task, spec, None  # its instances still hold their room
        plan = planning.plan_task(task, spec, instances, now)
        if plan.wake_at is not None and (turn.wake_at is None or plan.wake_at < turn.wake_at):
            turn.wake_at = plan.wake_at
        return task, spec, plan

    def _act(self, turn: Turn) -> None:
        for instance_id, grace in turn.to_stop:
            self._runner.stop(instance_id, grace)
        if not turn.to_spawn:
            return
        unstarted = self._spawner.spawn_all(turn.to_spawn, self._inbox.put)
        for instance in unstarted.submitted:
            self._in_flight[instance.id] = instance.task_id
        self._spawner.record_unstarted(unstarted)
        if unstarted.failed:
            turn.changed = True  # their tasks decide at once: retry or end

    # -- deleted tasks --------------------------------------------------------

    def _adopt_orphans(self, orphans: Orphans) -> None:
        remove_by = self._clock.now() + timedelta(seconds=ORPHAN_FILE_GRACE)
        for task_id, instance_id, grace in orphans.instances:
            self._orphans[instance_id] = task_id
            self._runner.stop(instance_id, grace)
            self._orphan_files[task_id] = remove_by + timedelta(seconds=grace)
        for task_id in orphans.task_ids:
            self._orphan_files.setdefault(task_id, self._clock.now())

    def _forget_orphans(self, exits: list[InstanceExit]) -> list[InstanceExit]:
        known = []
        for exit in exits:
            task_id = self._orphans.pop(exit.instance_id, None)
            if task_id is None:
                known.append(exit)
            elif task_id not in self._orphans.values():
                self._orphan_files[task_id] = self._clock.now()
        return known

    def _remove_orphan_files(self) -> None:
        now = self._clock.now()
        for task_id, remove_by in list(self._orphan_files.items()):
            if remove_by <= now:
                self._runner.remove_task_files(task_id)
                del self._orphan_files[task_id]
