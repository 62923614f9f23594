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
from jobyard.engine.package_runs import Refused, Waiting, package_argv, package_env
from jobyard.engine.preparing import Preparer
from jobyard.engine.specs import SpecCache
from jobyard.runners import containers
from jobyard.runners.base import SCRIPT_PATH, InstanceLaunch, Limits
from jobyard.runners.containers import ContainerEngine
from jobyard.spec import ImageDeployment, PackageDeployment, ScriptDeployment, TemplateSpec

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

    def __init__(self, specs: SpecCache, containers: ContainerEngine, preparer: Preparer) -> None:
        self._specs = specs
        self._containers = containers
        self._preparer = preparer

    def build(self, task: Task, instance: Instance) -> LaunchResult:
        spec = self._specs.get(task.template_id, task.template_version)
        if isinstance(spec.deployment, ScriptDeployment):
            return _script_launch(spec, spec.deployment, task, instance)
        if isinstance(spec.deployment, ImageDeployment):
            return _image_launch(spec, spec.deployment, task, instance, self._containers)
        if isinstance(spec.deployment, PackageDeployment):
            return self._package_launch(spec, spec.deployment, task, instance)
        return CannotLaunch(
            Reason.RUNTIME_MISSING, f"deployment type {spec.deployment.type!r} is not supported"
        )

    def _package_launch(
        self, spec: TemplateSpec, deployment: PackageDeployment, task: Task, instance: Instance
    ) -> LaunchResult:
        """Run the prepared package from its read-only directory, linked into the work dir."""
        prepared = self._preparer.prepare(task, instance, deployment)
        if isinstance(prepared, Waiting):
            return NotReady(Reason.PREPARING_PACKAGE, prepared.message)
        if isinstance(prepared, Refused):
            return CannotLaunch(prepared.reason, prepared.message)
        env = instance_env(spec, task, instance)
        argv = package_argv(deployment, prepared, env, task.overrides.get("command"))
        if isinstance(argv, Refused):
            return CannotLaunch(argv.reason, argv.message)
        env.update(package_env(prepared, env))
        return InstanceLaunch(
            task_id=task.id,
            instance_id=instance.id,
            argv=argv,
            env=env,
            payload=payload_of(task),
            limits=limits_of(spec),
            shared_dir=prepared.run_dir,
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


def _image_launch(
    spec: TemplateSpec,
    deployment: ImageDeployment,
    task: Task,
    instance: Instance,
    engine: ContainerEngine,
) -> LaunchResult:
    """The engine CLI runs the container in the foreground; it holds no limits
    itself (the container does), so the launch carries none."""
    if not engine.works:
        return CannotLaunch(Reason.NO_CONTAINER_RUNTIME, f"no container engine: {engine.detail}")
    env = instance_env(spec, task, instance)
    # SAE's ExecJob may replace the command; it then replaces the args too.
    command = task.overrides.get("command")
    run = containers.ContainerRun(
        name=engine.container_name(instance.id),
        image=deployment.image,
        command=tuple(command or deployment.command),
        args=() if command else tuple(deployment.args),
        pull_policy=deployment.pull_policy,
        env_names=tuple(sorted(env)),
        cpu=spec.resources.cpu,
        memory_bytes=spec.resources.memory_mb * MIB,
        labels={"jobyard.task": str(task.id), "jobyard.instance": str(instance.id)},
    )
    return InstanceLaunch(
        task_id=task.id,
        instance_id=instance.id,
        argv=("/bin/sh", SCRIPT_PATH),
        env=env,
        script=containers.run_script(engine, run),
        payload=payload_of(task),
        cleanup=containers.cleanup_argv(engine, run.name),
    )
