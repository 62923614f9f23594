"""Shapes of API answers (requests reuse the spec models)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from jobyard import cron_words
from jobyard.domain import Event, Instance, Task, Template, TemplateVersion
from jobyard.spec import CronTrigger, HttpTrigger, TemplateSpec


class ScheduleOut(BaseModel):
    description: str
    timezone: str
    next_fire_times: list[datetime]


class HttpTriggerOut(BaseModel):
    url: str = Field(description="POST (or another allowed method) here to start a task")
    methods: list[str]
    protocols: list[str]


class TemplateOut(BaseModel):
    id: str
    namespace: str
    name: str
    version: int
    suspended: bool
    created_at: datetime
    updated_at: datetime
    spec: TemplateSpec
    schedule: ScheduleOut | None = Field(
        default=None, description="for cron templates: the next fire times, to check the expression"
    )
    trigger: HttpTriggerOut | None = Field(
        default=None, description="for HTTP-triggered templates: the URL that starts a task"
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="what keeps the template from running on this server (it is stored anyway), "
        "such as an image template without a container engine",
    )

    @classmethod
    def of(
        cls,
        template: Template,
        upcoming: list[datetime],
        base_url: str,
        warnings: list[str] | None = None,
    ) -> TemplateOut:
        schedule = None
        trigger = template.spec.trigger
        if isinstance(trigger, CronTrigger):
            schedule = ScheduleOut(
                description=cron_words.describe(trigger.schedule, trigger.timezone),
                timezone=trigger.timezone,
                next_fire_times=[] if template.suspended else upcoming,
            )
        return cls(
            id=template.id,
            namespace=template.namespace,
            name=template.name,
            version=template.version,
            suspended=template.suspended,
            created_at=template.created_at,
            updated_at=template.updated_at,
            spec=template.spec,
            schedule=schedule,
            trigger=_http_trigger(template, base_url),
            warnings=warnings or [],
        )


def _http_trigger(template: Template, base_url: str) -> HttpTriggerOut | None:
    trigger = template.spec.trigger
    if not isinstance(trigger, HttpTrigger) or template.hook_token is None:
        return None
    return HttpTriggerOut(
        url=f"{base_url}/hooks/{template.hook_token}",
        methods=list(trigger.methods),
        protocols=list(trigger.protocols),
    )


class VersionOut(BaseModel):
    version: int
    created_at: datetime
    spec: TemplateSpec

    @classmethod
    def of(cls, version: TemplateVersion) -> VersionOut:
        return cls(version=version.version, created_at=version.created_at, spec=version.spec)


class TaskOut(BaseModel):
    id: int
    namespace: str
    template: str
    template_id: str
    template_version: int
    trigger: str
    status: str
    reason: str | None
    message: str | None
    stopping: str | None = Field(description="why the task is being ended, while it ends")
    overrides: dict[str, Any]
    instance_count: int
    scheduled_time: datetime | None
    event_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None

    @classmethod
    def of(cls, task: Task) -> TaskOut:
        duration = None
        if task.started_at is not None and task.finished_at is not None:
            duration = (task.finished_at - task.started_at).total_seconds()
        return cls(
            id=task.id,
            namespace=task.namespace,
            template=task.template_name,
            template_id=task.template_id,
            template_version=task.template_version,
            trigger=task.trigger.value,
            status=task.status.value,
            reason=task.reason,
            message=task.message,
            stopping=task.ending_reason if task.is_active else None,
            overrides=task.overrides,
            instance_count=task.instance_count,
            scheduled_time=task.scheduled_time,
            event_id=task.event_id,
            created_at=task.created_at,
            started_at=task.started_at,
            finished_at=task.finished_at,
            duration_seconds=duration,
        )


class InstanceOut(BaseModel):
    id: int
    task_id: int
    index: int
    attempt: int
    status: str
    reason: str | None
    message: str | None
    exit_code: int | None
    pid: int | None
    shards: list[str]
    not_before: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    run_as: str = Field(description="the capacity class it runs in: default or best-effort")
    waiting_reason: str | None = Field(description="why a pending instance has not started")
    peak_memory_bytes: int | None = Field(description="highest memory use of its process tree")
    cpu_seconds: float | None = Field(description="CPU time its process tree used")

    @classmethod
    def of(cls, instance: Instance) -> InstanceOut:
        return cls(
            id=instance.id,
            task_id=instance.task_id,
            index=instance.index,
            attempt=instance.attempt,
            status=instance.status.value,
            reason=instance.reason,
            message=instance.message,
            exit_code=instance.exit_code,
            pid=instance.pid,
            shards=instance.shards,
            not_before=instance.not_before,
            created_at=instance.created_at,
            started_at=instance.started_at,
            finished_at=instance.finished_at,
            run_as=instance.run_as.value,
            waiting_reason=instance.waiting_reason if instance.is_live else None,
            peak_memory_bytes=instance.peak_memory_bytes,
            cpu_seconds=instance.cpu_seconds,
        )


class EventOut(BaseModel):
    id: int
    namespace: str | None
    template: str | None
    task_id: int | None
    instance_id: int | None
    source_type: str
    source_name: str
    reason: str
    severity: str
    message: str
    created_at: datetime

    @classmethod
    def of(cls, event: Event) -> EventOut:
        return cls(
            id=event.id,
            namespace=event.namespace,
            template=event.template_name,
            task_id=event.task_id,
            instance_id=event.instance_id,
            source_type=event.source_type.value,
            source_name=event.source_name,
            reason=event.reason,
            severity=event.severity.value,
            message=event.message,
            created_at=event.created_at,
        )


class NamespaceIn(BaseModel):
    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    description: str = Field(default="", max_length=1024)


class NamespaceOut(BaseModel):
    name: str
    description: str
    created_at: datetime
    template_count: int


class RollbackIn(BaseModel):
    version: int = Field(ge=1)


class Page(BaseModel):
    limit: int
    offset: int
