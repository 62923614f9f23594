"""The first schema: namespaces, templates, versions, tasks, instances, events.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from jobyard.store.tables import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _when(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, UTCDateTime(), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "namespaces",
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("description", sa.String(1024), nullable=False, server_default=""),
        _when("created_at"),
        sa.PrimaryKeyConstraint("name", name="pk_namespaces"),
    )
    op.create_table(
        "templates",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("namespace", sa.String(63), nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("suspended", sa.Boolean(), nullable=False, server_default=sa.false()),
        _when("next_fire_at", nullable=True),
        sa.Column("task_seq", sa.Integer(), nullable=False, server_default="0"),
        _when("created_at"),
        _when("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_templates"),
        sa.UniqueConstraint("namespace", "name", name="uq_templates_namespace_name"),
        sa.ForeignKeyConstraint(
            ["namespace"],
            ["namespaces.name"],
            name="fk_templates_namespace_namespaces",
            ondelete="RESTRICT",
        ),
    )
    op.create_index("ix_templates_next_fire_at", "templates", ["next_fire_at"])
    op.create_table(
        "template_versions",
        sa.Column("template_id", sa.String(36), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        _when("created_at"),
        sa.PrimaryKeyConstraint("template_id", "version", name="pk_template_versions"),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["templates.id"],
            name="fk_template_versions_template_id_templates",
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "tasks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("template_id", sa.String(36), nullable=False),
        sa.Column("template_version", sa.Integer(), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("overrides", sa.JSON(), nullable=False),
        sa.Column("instance_count", sa.Integer(), nullable=False),
        _when("scheduled_time", nullable=True),
        sa.Column("event_id", sa.String(128), nullable=True),
        _when("created_at"),
        _when("started_at", nullable=True),
        _when("finished_at", nullable=True),
        sa.Column("ending_reason", sa.String(64), nullable=True),
        sa.Column("ending_message", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_tasks"),
        sa.UniqueConstraint(
            "template_id", "scheduled_time", name="uq_tasks_template_id_scheduled_time"
        ),
        sa.UniqueConstraint("template_id", "event_id", name="uq_tasks_template_id_event_id"),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["templates.id"],
            name="fk_tasks_template_id_templates",
            ondelete="CASCADE",
        ),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_tasks_template_id_id", "tasks", ["template_id", "id"])
    op.create_index("ix_tasks_status", "tasks", ["status"])
    op.create_table(
        "instances",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("shards", sa.JSON(), nullable=False),
        _when("not_before", nullable=True),
        sa.Column("stop_requested", sa.Boolean(), nullable=False, server_default=sa.false()),
        _when("created_at"),
        _when("started_at", nullable=True),
        _when("finished_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_instances"),
        sa.UniqueConstraint(
            "task_id", "index", "attempt", name="uq_instances_task_id_index_attempt"
        ),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name="fk_instances_task_id_tasks", ondelete="CASCADE"
        ),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_instances_status", "instances", ["status"])
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("namespace", sa.String(63), nullable=True),
        sa.Column("template_id", sa.String(36), nullable=True),
        sa.Column("template_name", sa.String(63), nullable=True),
        sa.Column("task_id", sa.Integer(), nullable=True),
        sa.Column("instance_id", sa.Integer(), nullable=True),
        sa.Column("source_type", sa.String(16), nullable=False),
        sa.Column("source_name", sa.String(255), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        _when("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["templates.id"],
            name="fk_events_template_id_templates",
            ondelete="CASCADE",
        ),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_events_template_id_id", "events", ["template_id", "id"])
    op.create_index("ix_events_task_id", "events", ["task_id"])
    op.create_index("ix_events_reason", "events", ["reason"])


def downgrade() -> None:
    for table in ("events", "instances", "tasks", "template_versions", "templates", "namespaces"):
        op.drop_table(table)
