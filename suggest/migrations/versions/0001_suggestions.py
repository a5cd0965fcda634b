"""Suggestion service: conversations, messages, suggestions, decisions, API keys.

Revision ID: s0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "s0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "conversations",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("channel", sa.String(64)),
        sa.Column("customer_id", sa.String(128)),
        sa.Column("customer_name", sa.String(200)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_customer_at", sa.DateTime(timezone=True)),
        sa.Column("last_agent_at", sa.DateTime(timezone=True)),
        sa.Column("agent_replies", sa.Integer, nullable=False),
    )
    op.create_table(
        "messages",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("conversation_id", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("suggestion_id", sa.String(64)),
    )
    op.create_index("ix_messages_conversation_id", "messages", ["conversation_id"])
    op.create_table(
        "suggestions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("conversation_id", sa.String(128), nullable=False),
        sa.Column("customer_message", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("intent", sa.String(32), nullable=False),
        sa.Column("intent_confidence", sa.Float, nullable=False),
        sa.Column("route", sa.String(64)),
        sa.Column("escalate", sa.Boolean, nullable=False),
        sa.Column("fallback", sa.Boolean, nullable=False),
        sa.Column("drafter", sa.String(32), nullable=False),
        sa.Column("kb_revision", sa.Integer, nullable=False),
        sa.Column("response", sa.Text, nullable=False),
    )
    op.create_index("ix_suggestions_conversation_id", "suggestions", ["conversation_id"])
    op.create_table(
        "decisions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("suggestion_id", sa.String(64), nullable=False, unique=True),
        sa.Column("conversation_id", sa.String(128), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("draft_id", sa.String(64)),
        sa.Column("final_text", sa.Text),
        sa.Column("agent_id", sa.String(128), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("violations", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_decisions_conversation_id", "decisions", ["conversation_id"])
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.Column("last_used_at", sa.DateTime(timezone=True)),
    )


def downgrade() -> None:
    for name in ("api_keys", "decisions", "suggestions", "messages", "conversations"):
        op.drop_table(name)
