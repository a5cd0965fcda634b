"""Learning retrieval: tuned models in the database, candidate similar questions, knowledge gaps.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kb_models",
        sa.Column("id", sa.String(100), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("meta", sa.Text, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("archive", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "snippet_candidates",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("snippet_id", sa.String(128), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("norm_text", sa.Text, nullable=False),
        sa.Column("suggestion_id", sa.String(64)),
        sa.Column("conversation_id", sa.String(128)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True)),
        sa.Column("decided_by", sa.String(200)),
        sa.Column("reason", sa.Text),
    )
    op.create_index("ix_snippet_candidates_snippet_id", "snippet_candidates", ["snippet_id"])
    op.create_index("ix_snippet_candidates_status", "snippet_candidates", ["status"])
    op.create_table(
        "gap_questions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column("conversation_id", sa.String(128)),
        sa.Column("suggestion_id", sa.String(64)),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("confidence_score", sa.Float),
        sa.Column("top_snippet_id", sa.String(128)),
        sa.Column("resolved_snippet_id", sa.String(128)),
    )
    op.create_index("ix_gap_questions_at", "gap_questions", ["at"])


def downgrade() -> None:
    for name in ("gap_questions", "snippet_candidates", "kb_models"):
        op.drop_table(name)
