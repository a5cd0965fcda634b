"""Database tables of the knowledge base (SQLAlchemy Core). Migrations live in knowledge/migrations."""

from __future__ import annotations

from sqlalchemy import (
    Column,
    Date,
    DateTime,
    Float,
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

#: Tuned embedding models, stored whole (a gzipped tar of the sentence-transformers directory), so
#: that every worker and replica loads the same active model from the shared database.
kb_models = Table(
    "kb_models",
    metadata,
    Column("id", String(100), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("meta", Text, nullable=False),  # JSON: training parameters, held-out figures, retrieval settings
    Column("sha256", String(64), nullable=False),
    Column("size", Integer, nullable=False),
    Column("archive", LargeBinary, nullable=False),
)

#: Candidate similar questions: customer messages whose approved reply cited a snippet.
snippet_candidates = Table(
    "snippet_candidates",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("snippet_id", String(128), nullable=False, index=True),
    Column("text", Text, nullable=False),
    Column("norm_text", Text, nullable=False),
    Column("suggestion_id", String(64)),
    Column("conversation_id", String(128)),
    Column("status", String(16), nullable=False, index=True),  # pending, accepted, rejected
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("decided_at", DateTime(timezone=True)),
    Column("decided_by", String(200)),
    Column("reason", Text),
)

#: Questions the knowledge base could not answer well (escalated or low retrieval confidence).
gap_questions = Table(
    "gap_questions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("text", Text, nullable=False),
    Column("reason", String(16), nullable=False),  # escalated, low_confidence
    Column("conversation_id", String(128)),
    Column("suggestion_id", String(64)),
    Column("at", DateTime(timezone=True), nullable=False, index=True),
    Column("confidence_score", Float),
    Column("top_snippet_id", String(128)),
    Column("resolved_snippet_id", String(128)),  # the snippet an editor made from its gap
)

__all__ = [
    "embeddings",
    "gap_questions",
    "kb_meta",
    "kb_models",
    "kb_state",
    "metadata",
    "snippet_candidates",
    "snippet_revisions",
    "snippets",
]
