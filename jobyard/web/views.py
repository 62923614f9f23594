"""What the pages show, gathered from the engine's use cases and put in words."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

import yaml

from jobyard import cron_words
from jobyard.domain import (
    ACTIVE_TASK_STATUSES,
    InstanceStatus,
    Task,
    Template,
    TemplateVersion,
)
from jobyard.engine.core import Engine
from jobyard.errors import InvalidSpec
from jobyard.spec import CronTrigger, HttpTrigger, TemplateSpec
from jobyard.web.package_views import size_words

ACTIVE = [status.value for status in ACTIVE_TASK_STATUSES]
MIB = 1024 * 1024
COUNT_LIMIT = 1000

INSTANCE_TYPES = {
    "default": "Holds its CPU and memory and is never preempted; waits while the node is full.",
    "best-effort": (
        "Uses room no default instance holds; preempted when default work needs it, "
        "then queued again as best-effort."
    ),
    "best-effort-first": (
        "Best-effort while there is free room; when preempted, it restarts as a default "
        "instance so the task is not held up."
    ),
}
STACKS = {"python": "Python", "java": "Java", "node": "Node.js", "binary": "Binary (executable)"}
PULL_POLICIES = {
    "IfNotPresent": "pull only when the image is not on this host",
    "Always": "pull before every run",
    "Never": "use the image on this host only",
}
# Why a pending instance has not started, in words (the event has the details).
WAITING_WORDS = {
    "InsufficientCapacity": "not enough free CPU or memory on this node",
    "PreparingPackage": "its code package is being prepared",
}
CONCURRENCY_POLICIES = {
    "Allow": "Tasks may run side by side; every trigger starts a new task.",
    "Forbid": "No new task while one is active; the new trigger is skipped.",
    "Replace": "A new task stops the active one and takes its place.",
}


@dataclass
class RunForm:
    """What "Run job manually" was given: env overrides and an instance count."""

    env: list[tuple[str, str]] = field(default_factory=list)
    replicas: str = ""
    errors: dict[str, str] = field(default_factory=dict)


def trigger_kind(spec: TemplateSpec) -> str:
    if isinstance(spec.trigger, CronTrigger):
        return "cron"
    if isinstance(spec.trigger, HttpTrigger):
        return "http"
    return "manual"


def trigger_words(spec: TemplateSpec) -> str:
    trigger = spec.trigger
    if isinstance(trigger, CronTrigger):
        try:
            return cron_words.describe(trigger.schedule, trigger.timezone)
        except InvalidSpec:
            return f"cron '{trigger.schedule}' in {trigger.timezone}"
    if isinstance(trigger, HttpTrigger):
        protocols = " & ".join(p.upper() for p in trigger.protocols)
        return f"{protocols} request ({', '.join(trigger.methods)})"
    return "manual runs only"


@dataclass(frozen=True)
class TemplateRow:
    template: Template
    kind: str
    trigger: str
    last_task: Task | None
    running_instances: int


def template_row(engine: Engine, template: Template) -> TemplateRow:
    latest = engine.tasks.list_for_template(template.namespace, template.name, None, 1, 0)
    return TemplateRow(
        template=template,
        kind=trigger_kind(template.spec),
        trigger=trigger_words(template.spec),
        last_task=latest[0] if latest else None,
        running_instances=running_instances(engine, template),
    )


def active_tasks(engine: Engine, template: Template) -> list[Task]:
    return engine.tasks.list_for_template(template.namespace, template.name, ACTIVE, COUNT_LIMIT, 0)


def running_instances(engine: Engine, template: Template) -> int:
    """Instances running now (a pending one may be waiting for room on the node)."""
    tasks = active_tasks(engine, template)
    return sum(
        1
        for task in tasks
        for i in engine.tasks.instances(task.id)
        if i.status is InstanceStatus.RUNNING
    )


@dataclass(frozen=True)
class Impact:
    """What deleting a template takes with it."""

    versions: int
    tasks: int
    tasks_capped: bool
    running_instances: int


def delete_impact(engine: Engine, template: Template) -> Impact:
    tasks = engine.tasks.list_for_template(template.namespace, template.name, None, COUNT_LIMIT, 0)
    return Impact(
        versions=len(engine.templates.versions(template.namespace, template.name)),
        tasks=len(tasks),
        tasks_capped=len(tasks) >= COUNT_LIMIT,
        running_instances=running_instances(engine, template),
    )


def spec_text(spec: TemplateSpec) -> str:
    data = spec.model_dump(mode="json")
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


@dataclass(frozen=True)
class DiffLine:
    kind: str  # "add", "remove", "hunk", "same"
    text: str


@dataclass(frozen=True)
class VersionView:
    version: TemplateVersion
    is_current: bool
    diff: list[DiffLine]


def version_views(versions: list[TemplateVersion], current: Template) -> list[VersionView]:
    """Newest first, each with its diff against the current spec."""
    now = spec_text(current.spec).splitlines()
    views = []
    for version in sorted(versions, key=lambda v: v.version, reverse=True):
        lines = difflib.unified_diff(
            now,
            spec_text(version.spec).splitlines(),
            f"current (version {current.version})",
            f"version {version.version}",
            lineterm="",
            n=2,
        )
        diff = [_diff_line(line) for line in lines][2:]
        views.append(VersionView(version, version.version == current.version, diff))
    return views


def _diff_line(line: str) -> DiffLine:
    kinds = {"+": "add", "-": "remove", "@": "hunk"}
    return DiffLine(kinds.get(line[:1], "same"), line)


def curl_example(url: str, methods: list[str]) -> str:
    method = "POST" if "POST" in methods else methods[0]
    if method in ("POST", "PUT", "PATCH"):
        return (
            f"curl -X {method} -H 'Content-Type: application/json' \\\n"
            f'  -d \'{{"Envs":[{{"name":"aaa","value":"bbb"}}],"Replicas":"1"}}\' \\\n'
            f"  '{url}'"
        )
    return f"curl -X {method} '{url}'"


@dataclass(frozen=True)
class Usage:
    """One resource of the node: its capacity and what each class holds of it."""

    label: str
    capacity: float
    default: float
    best_effort: float
    is_memory: bool = False

    def text(self, value: float) -> str:
        """An amount in words: cores, or memory in binary units."""
        if self.is_memory:
            return size_words(round(value * MIB)) if value else "0 MiB"
        return f"{value:g} {'core' if value == 1 else 'cores'}"

    @property
    def held(self) -> float:
        return self.default + self.best_effort

    @property
    def free(self) -> float:
        return max(self.capacity - self.held, 0.0)


@dataclass(frozen=True)
class NodeCapacity:
    cpu: Usage
    memory: Usage
    default_instances: int
    best_effort_instances: int


def node_capacity(engine: Engine) -> NodeCapacity | None:
    """Capacity and what running instances hold, by class (None if not known here)."""
    admitter = getattr(engine, "admitter", None)
    if admitter is None:
        return None
    report = admitter.report(engine.store, engine.specs)
    node, held = report["capacity"], report["held"]
    default, best = held["default"], held["best-effort"]
    return NodeCapacity(
        cpu=Usage("CPU", node["cpu"], default["cpu"], best["cpu"]),
        memory=Usage(
            "Memory", node["memory_mb"], default["memory_mb"], best["memory_mb"], is_memory=True
        ),
        default_instances=int(default["instances"]),
        best_effort_instances=int(best["instances"]),
    )
