"""Conversation lifecycle (claim, transfer, close), the agent's own replies, records by customer turn.

Revision ID: s0003
Revises: s0002
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "s0003"
down_revision = "s0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("conversations") as b:
        b.add_column(sa.Column("owner", sa.String(200)))
        b.add_column(sa.Column("claimed_at", sa.DateTime(timezone=True)))
        b.add_column(sa.Column("closed_at", sa.DateTime(timezone=True)))
        b.add_column(sa.Column("closed_by", sa.String(200)))
    op.create_table(
        "conversation_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("conversation_id", sa.String(128), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("target", sa.String(200)),
        sa.Column("note", sa.Text),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_conversation_events_conversation_id", "conversation_events", ["conversation_id"])
    # An own reply written after the drafts were settled belongs to no suggestion: suggestion_id may be
    # NULL (NULLs never collide in the unique index, so one decision per suggestion still holds).
    with op.batch_alter_table("decisions") as b:
        b.alter_column("suggestion_id", existing_type=sa.String(64), nullable=True)
        b.add_column(sa.Column("reply_to", sa.String(64)))
    op.execute("UPDATE decisions SET reply_to = suggestion_id")
    with op.batch_alter_table("service_records") as b:
        b.add_column(sa.Column("turns", sa.Text, nullable=False, server_default="[]"))
        b.add_column(sa.Column("closed_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    with op.batch_alter_table("service_records") as b:
        b.drop_column("closed_at")
        b.drop_column("turns")
    op.execute("DELETE FROM decisions WHERE suggestion_id IS NULL")
    with op.batch_alter_table("decisions") as b:
        b.drop_column("reply_to")
        b.alter_column("suggestion_id", existing_type=sa.String(64), nullable=False)
    op.drop_table("conversation_events")
    with op.batch_alter_table("conversations") as b:
        b.drop_column("closed_by")
        b.drop_column("closed_at")
        b.drop_column("claimed_at")
        b.drop_column("owner")
