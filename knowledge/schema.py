"""Database tables of the knowledge base (SQLAlchemy Core). Migrations live in knowledge/migrations."""

from __future__ import annotations

from sqlalchemy import (
    Column,
    Date,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

snippets = Table(
    "snippets",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("question", Text, nullable=False),
    Column("similar_questions", Text, nullable=False),  # JSON list
    Column("answer", Text, nullable=False),
    Column("tags", Text, nullable=False),  # JSON list
    Column("product", String(200)),
    Column("status", String(16), nullable=False),
    Column("valid_from", Date),
    Column("valid_to", Date),
    Column("version", Integer, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("kb_revision", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("updated_by", String(200), nullable=False),
)

snippet_revisions = Table(
    "snippet_revisions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("snippet_id", String(128), nullable=False, index=True),
    Column("version", Integer, nullable=False),
    Column("kb_revision", Integer, nullable=False, index=True),
    Column("action", String(16), nullable=False),  # create, update, delete, import
    Column("actor", String(200), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("data", Text),  # JSON of the snippet content after the change (null after delete)
    Column("changes", Text, nullable=False),  # JSON {field: [old, new]}
)

kb_state = Table(
    "kb_state",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("revision", Integer, nullable=False),
)

kb_meta = Table(
    "kb_meta",
    metadata,
    Column("key", String(100), primary_key=True),
    Column("value", Text, nullable=False),
)

embeddings = Table(
    "embeddings",
    metadata,
    Column("model_id", String(300), primary_key=True),
    Column("text_hash", String(64), primary_key=True),
    Column("dim", Integer, nullable=False),
    Column("vector", LargeBinary, nullable=False),
)

__all__ = ["embeddings", "kb_meta", "kb_state", "metadata", "snippet_revisions", "snippets"]
