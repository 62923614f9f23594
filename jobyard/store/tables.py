"""The schema, as SQLAlchemy Core tables. Migrations must match it (tested)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

MAX_ID = 2**63 - 1  # the largest integer key either database stores

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC in Python, whatever the database keeps."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


namespaces = sa.Table(
    "namespaces",
    metadata,
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("description", sa.String(1024), nullable=False, server_default=""),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

templates = sa.Table(
    "templates",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column(
        "namespace",
        sa.String(63),
        sa.ForeignKey("namespaces.name", ondelete="RESTRICT"),
        nullable=False,
    ),
    sa.Column("name", sa.String(63), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("suspended", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("next_fire_at", UTCDateTime(), nullable=True),
    # Bumped by every task creation: the row lock that serialises policy checks.
    sa.Column("task_seq", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    # The secret part of the template's HTTP trigger URL (/hooks/<hook_token>).
    sa.Column("hook_token", sa.String(64), nullable=True),
    sa.UniqueConstraint("namespace", "name"),
    sa.UniqueConstraint("hook_token"),
    sa.Index(None, "next_fire_at"),
)

template_versions = sa.Table(
    "template_versions",
    metadata,
    sa.Column(
        "template_id",
        sa.String(36),
        sa.ForeignKey("templates.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("version", sa.Integer(), primary_key=True),
    sa.Column("spec", sa.JSON(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column(
        "template_id",
        sa.String(36),
        sa.ForeignKey("templates.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("template_version", sa.Integer(), nullable=False),
    sa.Column("trigger", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reason", sa.String(64), nullable=True),
    sa.Column("message", sa.Text(), nullable=True),
    sa.Column("overrides", sa.JSON(), nullable=False),
    sa.Column("instance_count", sa.Integer(), nullable=False),
    sa.Column("scheduled_time", UTCDateTime(), nullable=True),
    sa.Column("event_id", sa.String(128), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=True),
    sa.Column("finished_at", UTCDateTime(), nullable=True),
    # Set when the decision to end the task is made, before instances are stopped.
    sa.Column("ending_reason", sa.String(64), nullable=True),
    sa.Column("ending_message", sa.Text(), nullable=True),
    # The HTTP request that triggered the task, handed to its instances.
    sa.Column("payload", sa.JSON(), nullable=True),
    sa.UniqueConstraint("template_id", "scheduled_time"),
    sa.UniqueConstraint("template_id", "event_id"),
    sa.Index(None, "template_id", "id"),
    sa.Index(None, "status"),
    # Ids are never reused: files and logs are named by them.
    sqlite_autoincrement=True,
)

instances = sa.Table(
    "instances",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column(
        "task_id", sa.Integer(), sa.ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("index", sa.Integer(), nullable=False),
    sa.Column("attempt", sa.Integer(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reason", sa.String(64), nullable=True),
    sa.Column("message", sa.Text(), nullable=True),
    sa.Column("exit_code", sa.Integer(), nullable=True),
    sa.Column("pid", sa.Integer(), nullable=True),
    sa.Column("shards", sa.JSON(), nullable=False),
    sa.Column("not_before", UTCDateTime(), nullable=True),
    sa.Column("stop_requested", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=True),
    sa.Column("finished_at", UTCDateTime(), nullable=True),
    sa.Column("run_as", sa.String(16), nullable=False, server_default="default"),
    sa.Column("preempt_requested", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("waiting_reason", sa.String(64), nullable=True),
    sa.Column("peak_memory_bytes", sa.BigInteger(), nullable=True),
    sa.Column("cpu_seconds", sa.Float(), nullable=True),
    sa.UniqueConstraint("task_id", "index", "attempt"),
    sa.Index(None, "status"),
    sqlite_autoincrement=True,
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("namespace", sa.String(63), nullable=True),
    sa.Column(
        "template_id",
        sa.String(36),
        sa.ForeignKey("templates.id", ondelete="CASCADE"),
        nullable=True,
    ),
    sa.Column("template_name", sa.String(63), nullable=True),
    sa.Column("task_id", sa.Integer(), nullable=True),
    sa.Column("instance_id", sa.Integer(), nullable=True),
    sa.Column("source_type", sa.String(16), nullable=False),
    sa.Column("source_name", sa.String(255), nullable=False),
    sa.Column("reason", sa.String(64), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("message", sa.Text(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Index(None, "template_id", "id"),
    sa.Index(None, "task_id"),
    sa.Index(None, "reason"),
    sqlite_autoincrement=True,
)

packages = sa.Table(
    "packages",
    metadata,
    sa.Column(
        "namespace",
        sa.String(63),
        sa.ForeignKey("namespaces.name", ondelete="RESTRICT"),
        primary_key=True,
    ),
    sa.Column("digest", sa.String(71), primary_key=True),
    sa.Column("filename", sa.String(255), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("size", sa.BigInteger(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("token_hash", sa.String(64), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("namespace", sa.String(63), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("last_used_at", UTCDateTime(), nullable=True),
    sa.UniqueConstraint("token_hash"),
)
