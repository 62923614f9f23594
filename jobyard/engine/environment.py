"""The environment an instance sees: template env, run overrides, JOBYARD_* facts."""

from __future__ import annotations

from jobyard.domain import Instance, Task
from jobyard.spec import TemplateSpec


def instance_env(spec: TemplateSpec, task: Task, instance: Instance) -> dict[str, str]:
    env = {var.name: var.value for var in spec.env}
    for var in task.overrides.get("envs", []):
        env[var["name"]] = var.get("value", "")
    env.update(
        JOBYARD_NAMESPACE=task.namespace,
        JOBYARD_TEMPLATE=task.template_name,
        JOBYARD_TEMPLATE_VERSION=str(task.template_version),
        JOBYARD_TASK_ID=str(task.id),
        JOBYARD_INSTANCE_INDEX=str(instance.index),
        JOBYARD_INSTANCE_COUNT=str(task.instance_count),
        JOBYARD_ATTEMPT=str(instance.attempt),
        JOBYARD_TRIGGER=task.trigger.value,
    )
    if task.scheduled_time is not None:
        env["JOBYARD_SCHEDULED_TIME"] = task.scheduled_time.strftime("%Y-%m-%dT%H:%M:%SZ")
    if spec.sharding.enabled:
        env["JOBYARD_SHARDS"] = ",".join(instance.shards)
    return env
