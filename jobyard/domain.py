"""Domain records: what the store returns and the engine reasons about."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from jobyard.spec import TemplateSpec


class TaskStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"


ACTIVE_TASK_STATUSES = (TaskStatus.PENDING, TaskStatus.RUNNING)


class InstanceStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    KILLED = "killed"
    PREEMPTED = "preempted"
    LOST = "lost"


LIVE_INSTANCE_STATUSES = (InstanceStatus.PENDING, InstanceStatus.RUNNING)


class TriggerKind(StrEnum):
    CRON = "cron"
    HTTP = "http"
    MANUAL = "manual"


class Severity(StrEnum):
    NORMAL = "normal"
    WARNING = "warning"
    ERROR = "error"


class SourceType(StrEnum):
    TEMPLATE = "template"
    TASK = "task"
    INSTANCE = "instance"
    TRIGGER = "trigger"
    SCHEDULER = "scheduler"
    PACKAGE = "package"


class Reason(StrEnum):
    """Machine-readable reasons carried by tasks, instances and events."""

    DEADLINE_EXCEEDED = "DeadlineExceeded"
    BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"
    STOPPED = "Stopped"
    REPLACED = "Replaced"
    TEMPLATE_DELETED = "TemplateDeleted"
    COMPLETED = "Completed"
    LOST = "Lost"
    START_FAILED = "StartFailed"
    CREATED = "Created"
    UPDATED = "Updated"
    ROLLED_BACK = "RolledBack"
    SUSPENDED = "Suspended"
    RESUMED = "Resumed"
    TASK_CREATED = "TaskCreated"
    TASK_STARTED = "TaskStarted"
    TASK_SUCCEEDED = "TaskSucceeded"
    TASK_FAILED = "TaskFailed"
    TASK_STOPPED = "TaskStopped"
    INSTANCE_STARTED = "InstanceStarted"
    INSTANCE_SUCCEEDED = "InstanceSucceeded"
    INSTANCE_FAILED = "InstanceFailed"
    INSTANCE_KILLED = "InstanceKilled"
    INSTANCE_LOST = "InstanceLost"
    INSTANCE_ADOPTED = "InstanceAdopted"
    RETRYING = "Retrying"
    STOPPING = "Stopping"
    CONCURRENCY_FORBIDDEN = "ConcurrencyForbidden"
    MISSED_SCHEDULE = "MissedSchedule"
    RECOVERED = "Recovered"
    TRIGGER_REJECTED = "TriggerRejected"
    TRIGGER_ROTATED = "TriggerRotated"
    # Deployment methods and resources (issue 4).
    OOM_KILLED = "OOMKilled"
    RUNTIME_MISSING = "RuntimeMissing"
    NO_CONTAINER_RUNTIME = "NoContainerRuntime"
    PREPARING_PACKAGE = "PreparingPackage"
    PACKAGE_PREPARED = "PackagePrepared"
    PREPARE_FAILED = "PrepareFailed"
    PACKAGE_UPLOADED = "PackageUploaded"
    PACKAGE_DELETED = "PackageDeleted"
    INSUFFICIENT_CAPACITY = "InsufficientCapacity"
    PREEMPTED = "Preempted"
    FELL_BACK_TO_DEFAULT = "FellBackToDefault"


# Instance failures that another attempt cannot cure: the task fails at once.
FATAL_INSTANCE_REASONS = frozenset({Reason.RUNTIME_MISSING, Reason.NO_CONTAINER_RUNTIME})


class RunAs(StrEnum):
    """The capacity class an instance runs in (best-effort-first picks per attempt)."""

    DEFAULT = "default"
    BEST_EFFORT = "best-effort"


# The end a stop reason leads to: a deadline is a failure, the rest a stop.
STOP_REASON_STATUS = {
    Reason.DEADLINE_EXCEEDED: TaskStatus.FAILED,
    Reason.BACKOFF_LIMIT_EXCEEDED: TaskStatus.FAILED,
    Reason.STOPPED: TaskStatus.STOPPED,
    Reason.REPLACED: TaskStatus.STOPPED,
    Reason.TEMPLATE_DELETED: TaskStatus.STOPPED,
    Reason.RUNTIME_MISSING: TaskStatus.FAILED,
    Reason.NO_CONTAINER_RUNTIME: TaskStatus.FAILED,
}


@dataclass(frozen=True)
class Template:
    id: str
    namespace: str
    name: str
    version: int
    spec: TemplateSpec
    suspended: bool
    created_at: datetime
    updated_at: datetime
    next_fire_at: datetime | None
    hook_token: str | None = None


@dataclass(frozen=True)
class TemplateVersion:
    template_id: str
    version: int
    spec: TemplateSpec
    created_at: datetime


@dataclass(frozen=True)
class Task:
    id: int
    template_id: str
    namespace: str
    template_name: str
    template_version: int
    trigger: TriggerKind
    status: TaskStatus
    reason: str | None
    message: str | None
    overrides: dict[str, Any]
    instance_count: int
    scheduled_time: datetime | None
    event_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    ending_reason: str | None
    ending_message: str | None
    payload: dict[str, Any] | None = None

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_TASK_STATUSES


@dataclass(frozen=True)
class Instance:
    id: int
    task_id: int
    index: int
    attempt: int
    status: InstanceStatus
    reason: str | None
    message: str | None
    exit_code: int | None
    pid: int | None
    shards: list[str]
    not_before: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    stop_requested: bool
    run_as: RunAs = RunAs.DEFAULT
    # Set when the instance is stopped to make room for a default instance.
    preempt_requested: bool = False
    # Why a pending instance has not started yet (InsufficientCapacity, PreparingPackage).
    waiting_reason: str | None = None
    peak_memory_bytes: int | None = None
    cpu_seconds: float | None = None

    @property
    def is_live(self) -> bool:
        return self.status in LIVE_INSTANCE_STATUSES


@dataclass(frozen=True)
class Package:
    """An uploaded code package, content-addressed within its namespace."""

    namespace: str
    digest: str  # "sha256:<hex>"
    filename: str
    kind: str  # zip, tar.gz, jar or executable
    size: int
    created_at: datetime


@dataclass(frozen=True)
class Event:
    id: int
    namespace: str | None
    template_name: str | None
    task_id: int | None
    instance_id: int | None
    source_type: SourceType
    source_name: str
    reason: str
    severity: Severity
    message: str
    created_at: datetime


@dataclass(frozen=True)
class NewEvent:
    """An event before it is stored."""

    source_type: SourceType
    source_name: str
    reason: str
    message: str
    severity: Severity = Severity.NORMAL
    namespace: str | None = None
    template_name: str | None = None
    template_id: str | None = None
    task_id: int | None = None
    instance_id: int | None = None

    def of_task(self, task_id: int) -> NewEvent:
        """This event of a task just inserted (``engine.events.new_event_of_new_task``):
        the task's id, also at the end of the source name."""
        return replace(self, task_id=task_id, source_name=f"{self.source_name}{task_id}")
