"""Code packages; instance capacity class, preemption, waiting reason and usage.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from jobyard.store.tables import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


# SQLite may rebuild the table to add these columns; the rebuilt table must keep
# AUTOINCREMENT, or a deleted instance's id (which names its files) is reused.
_KEEP_AUTOINCREMENT = {"sqlite_autoincrement": True}


def upgrade() -> None:
    with op.batch_alter_table("instances", table_kwargs=_KEEP_AUTOINCREMENT) as batch:
        batch.add_column(
            sa.Column("run_as", sa.String(16), nullable=False, server_default="default")
        )
        batch.add_column(
            sa.Column("preempt_requested", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("waiting_reason", sa.String(64), nullable=True))
        batch.add_column(sa.Column("peak_memory_bytes", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("cpu_seconds", sa.Float(), nullable=True))
    op.create_table(
        "packages",
        sa.Column("namespace", sa.String(63), nullable=False),
        sa.Column("digest", sa.String(71), nullable=False),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["namespace"],
            ["namespaces.name"],
            name="fk_packages_namespace_namespaces",
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("namespace", "digest", name="pk_packages"),
    )


def downgrade() -> None:
    op.drop_table("packages")
    with op.batch_alter_table("instances", table_kwargs=_KEEP_AUTOINCREMENT) as batch:
        for column in ("cpu_seconds", "peak_memory_bytes", "waiting_reason"):
            batch.drop_column(column)
        batch.drop_column("preempt_requested")
        batch.drop_column("run_as")
