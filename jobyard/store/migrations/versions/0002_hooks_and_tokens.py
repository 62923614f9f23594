"""HTTP trigger tokens, saved trigger requests, and API tokens.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from jobyard.store.tables import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("templates") as batch:
        batch.add_column(sa.Column("hook_token", sa.String(64), nullable=True))
        batch.create_unique_constraint("uq_templates_hook_token", ["hook_token"])
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("payload", sa.JSON(), nullable=True))
    op.create_table(
        "api_tokens",
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("namespace", sa.String(63), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_used_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("name", name="pk_api_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
    )


def downgrade() -> None:
    op.drop_table("api_tokens")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("payload")
    with op.batch_alter_table("templates") as batch:
        batch.drop_constraint("uq_templates_hook_token", type_="unique")
        batch.drop_column("hook_token")
