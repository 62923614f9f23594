"""From a task's instance to what the runner starts, for each deployment method.

A launch can also be not ready yet (a package still being prepared: the
instance waits, pending) or impossible (a runtime that is not installed: the
instance fails at once with a reason that says so).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from jobyard.domain import Instance, Reason, Task
from jobyard.engine.environment import instance_env
from jobyard.engine.specs import SpecCache
from jobyard.runners.base import SCRIPT_PATH, InstanceLaunch, Limits
from jobyard.spec import ScriptDeployment, TemplateSpec

MIB = 1024 * 1024


@dataclass(frozen=True)
class NotReady:
    """The instance must wait, pending; ``reason`` is recorded as its waiting reason."""

    reason: Reason
    message: str


@dataclass(frozen=True)
class CannotLaunch:
    """The instance fails without starting."""

    reason: Reason
    message: str


LaunchResult = InstanceLaunch | NotReady | CannotLaunch


class Launcher:
    """Builds launches; one per engine."""

    def __init__(self, specs: SpecCache) -> None:
        self._specs = specs

    def build(self, task: Task, instance: Instance) -> LaunchResult:
        spec = self._specs.get(task.template_id, task.template_version)
        if isinstance(spec.deployment, ScriptDeployment):
            return _script_launch(spec, spec.deployment, task, instance)
        return CannotLaunch(
            Reason.RUNTIME_MISSING, f"deployment type {spec.deployment.type!r} is not supported"
        )


def limits_of(spec: TemplateSpec) -> Limits:
    return Limits(cpu=spec.resources.cpu, memory_bytes=spec.resources.memory_mb * MIB)


def payload_of(task: Task) -> bytes | None:
    return None if task.payload is None else json.dumps(task.payload).encode()


def _script_launch(
    spec: TemplateSpec, deployment: ScriptDeployment, task: Task, instance: Instance
) -> InstanceLaunch:
    # SAE's ExecJob may replace the script with a command of its own.
    command = task.overrides.get("command")
    return InstanceLaunch(
        task_id=task.id,
        instance_id=instance.id,
        argv=(deployment.shell, SCRIPT_PATH),
        env=instance_env(spec, task, instance),
        script=shlex.join(command) if command else deployment.script,
        payload=payload_of(task),
        limits=limits_of(spec),
    )
