"""Applying capacity admission to one controller turn.

The controller hands over the instances it means to start; the pure
``capacity.admit`` says which start now (and in which class), which wait,
and which best-effort instances are preempted to make room. Decisions are
written in the turn's transaction before anything is started or stopped.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence, Set
from datetime import datetime
from typing import Any

import psutil
from sqlalchemy.engine import Connection

from jobyard import capacity
from jobyard.config import Settings
from jobyard.domain import Instance, Reason, RunAs, Severity, Task
from jobyard.engine.events import instance_event
from jobyard.engine.launches import MIB
from jobyard.engine.spawning import Turn
from jobyard.engine.specs import SpecCache
from jobyard.engine.starts import Waiting, record_waiting
from jobyard.spec import TemplateSpec
from jobyard.store import Store
from jobyard.store import instances as instance_store
from jobyard.store import tasks as task_store

ActiveTask = tuple[Task, TemplateSpec]


def node_capacity(settings: Settings) -> capacity.Capacity:
    """The configured capacity; by default the machine's cores and memory."""
    cpu = settings.capacity_cpu or float(os.cpu_count() or 1)
    memory_mb = settings.capacity_memory_mb or psutil.virtual_memory().total // MIB
    return capacity.Capacity(cpu=cpu, memory_mb=memory_mb)


class Admitter:
    def __init__(self, node: capacity.Capacity) -> None:
        self.node = node

    def report(self, store: Store, specs: SpecCache) -> dict[str, Any]:
        """The node's capacity and what running instances hold of it, per class."""
        held = {run_as.value: {"cpu": 0.0, "memory_mb": 0, "instances": 0} for run_as in RunAs}
        with store.read() as conn:
            active = {task.id: task for task in task_store.active_tasks(conn)}
            instances = instance_store.instances_of(conn, list(active))
        for instance in instances:
            if instance.is_live and instance.pid is not None:
                task = active[instance.task_id]
                resources = specs.get(task.template_id, task.template_version).resources
                counts = held[instance.run_as.value]
                counts["cpu"] += resources.cpu
                counts["memory_mb"] += resources.memory_mb
                counts["instances"] += 1
        node = {"cpu": self.node.cpu, "memory_mb": self.node.memory_mb}
        return {"capacity": node, "held": held}

    def decide(
        self,
        active: Mapping[int, ActiveTask],
        instances: Sequence[Instance],
        spawning: Set[int],
        to_spawn: Sequence[tuple[Task, Instance]],
    ) -> capacity.Admission:
        """Which of ``to_spawn`` start now, and how; which wait; whom they preempt.

        ``spawning``: ids of instances handed to the spawn threads, not yet reported.
        """
        holders = [
            _holder(i, active[i.task_id][1]) for i in instances if _holds(i, active, spawning)
        ]
        candidates = [_candidate(i, active[t.id][1]) for t, i in to_spawn]
        return capacity.admit(self.node, holders, candidates)

    def admit(
        self,
        conn: Connection,
        active: Mapping[int, ActiveTask],
        instances: Sequence[Instance],
        spawning: Set[int],
        turn: Turn,
        now: datetime,
    ) -> None:
        """Filter ``turn.to_spawn`` down to what fits; write waits and preemptions."""
        admission = self.decide(active, instances, spawning, turn.to_spawn)
        by_id = {instance.id: instance for instance in instances}
        for victim_id in admission.preempt:
            self._preempt(conn, active, by_id[victim_id], turn, now)
        starting = dict(admission.start)
        admitted: list[tuple[Task, Instance]] = []
        waiting: list[Waiting] = []
        for task, instance in turn.to_spawn:
            run_as = starting.get(instance.id)
            if run_as is None:
                message = admission.waiting[instance.id]
                waiting.append(Waiting(task, instance, Reason.INSUFFICIENT_CAPACITY, message))
                continue
            if run_as is not instance.run_as:
                instance_store.set_run_as(conn, instance.id, run_as)
                instance = dataclasses.replace(instance, run_as=run_as)
            admitted.append((task, instance))
        record_waiting(conn, waiting, now)
        turn.to_spawn = admitted

    def _preempt(
        self,
        conn: Connection,
        active: Mapping[int, ActiveTask],
        victim: Instance,
        turn: Turn,
        now: datetime,
    ) -> None:
        task, spec = active[victim.task_id]
        instance_store.request_instance_stop(conn, victim.id, preempt=True)
        turn.to_stop.append((victim.id, float(spec.termination_grace_period)))
        text = (
            f"instance {victim.index} attempt {victim.attempt} is preempted: "
            "a default instance needs its room"
        )
        instance_event(conn, task, victim, Reason.PREEMPTED, text, now, Severity.WARNING)


def starts_as_they_are(
    admission: capacity.Admission, to_spawn: Sequence[tuple[Task, Instance]]
) -> bool:
    """Every candidate starts, in the class it has, preempting no one: nothing to write."""
    starting = dict(admission.start)
    return not admission.preempt and all(
        starting.get(instance.id) is instance.run_as for _, instance in to_spawn
    )


def _holds(instance: Instance, active: Mapping[int, ActiveTask], spawning: Set[int]) -> bool:
    """A live instance with a process (or being spawned) holds its room until it has ended."""
    started = instance.pid is not None or instance.id in spawning
    return instance.is_live and started and instance.task_id in active


def _holder(instance: Instance, spec: TemplateSpec) -> capacity.Holder:
    return capacity.Holder(
        instance_id=instance.id,
        run_as=instance.run_as,
        cpu=spec.resources.cpu,
        memory_mb=spec.resources.memory_mb,
        order=(instance.task_id, instance.id),
        preempting=instance.preempt_requested,
    )


def _candidate(instance: Instance, spec: TemplateSpec) -> capacity.Candidate:
    flexible = spec.instance_type == "best-effort-first" and instance.run_as is RunAs.BEST_EFFORT
    return capacity.Candidate(
        instance_id=instance.id,
        run_as=instance.run_as,
        cpu=spec.resources.cpu,
        memory_mb=spec.resources.memory_mb,
        flexible=flexible,
    )
