"""Service workflow: waiting customers, offline messages, escalations, department queues, service records.

Revision ID: s0002
Revises: s0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "s0002"
down_revision = "s0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("conversations") as b:
        b.add_column(sa.Column("waiting_since", sa.DateTime(timezone=True)))
    with op.batch_alter_table("suggestions") as b:
        b.add_column(sa.Column("offline", sa.Boolean, nullable=False, server_default=sa.false()))
        b.add_column(sa.Column("customer_at", sa.DateTime(timezone=True)))
    op.create_index("ix_suggestions_offline", "suggestions", ["offline"])
    op.create_table(
        "escalations",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("conversation_id", sa.String(128), nullable=False),
        sa.Column("suggestion_id", sa.String(64)),
        sa.Column("question", sa.Text, nullable=False),
        sa.Column("responsible", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True)),
        sa.Column("resolved_by", sa.String(200)),
        sa.Column("answer", sa.Text),
        sa.Column("snippet_id", sa.String(128)),
    )
    op.create_index("ix_escalations_status", "escalations", ["status"])
    op.create_table(
        "queue_items",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("department", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("conversation_id", sa.String(128), nullable=False),
        sa.Column("suggestion_id", sa.String(64)),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True)),
        sa.Column("done_by", sa.String(200)),
        sa.Column("note", sa.Text),
    )
    op.create_index("ix_queue_items_department", "queue_items", ["department", "status"])
    op.create_table(
        "service_records",
        sa.Column("conversation_id", sa.String(128), primary_key=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("customer_id", sa.String(128)),
        sa.Column("customer_name", sa.String(200)),
        sa.Column("channel", sa.String(64)),
        sa.Column("intent", sa.String(32)),
        sa.Column("summary", sa.Text),
        sa.Column("final_reply", sa.Text),
        sa.Column("agent_id", sa.String(128)),
        sa.Column("routed_to", sa.String(200)),
        sa.Column("escalated", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("first_response_s", sa.Float),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("satisfaction", sa.Integer),
        sa.Column("satisfaction_comment", sa.Text),
        sa.Column("notes", sa.Text),
        sa.Column("edited_fields", sa.Text, nullable=False, server_default="[]"),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    )
    op.create_index("ix_service_records_started_at", "service_records", ["started_at"])


def downgrade() -> None:
    op.drop_table("service_records")
    op.drop_table("queue_items")
    op.drop_table("escalations")
    op.drop_index("ix_suggestions_offline", "suggestions")
    with op.batch_alter_table("suggestions") as b:
        b.drop_column("customer_at")
        b.drop_column("offline")
    with op.batch_alter_table("conversations") as b:
        b.drop_column("waiting_since")
