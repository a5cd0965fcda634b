"""Tables of the suggestion service: conversations, messages, suggestions, decisions, API keys.

They share the knowledge base's database; their migrations (suggest/migrations) keep their own
Alembic version table, so the two packages evolve independently.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Column, DateTime, Float, Integer, MetaData, String, Table, Text

metadata = MetaData()

conversations = Table(
    "conversations",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("channel", String(64)),
    Column("customer_id", String(128)),
    Column("customer_name", String(200)),
    Column("status", String(16), nullable=False),  # open, closed
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("last_customer_at", DateTime(timezone=True)),
    Column("last_agent_at", DateTime(timezone=True)),
    Column("agent_replies", Integer, nullable=False),
)

messages = Table(
    "messages",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("conversation_id", String(128), nullable=False, index=True),
    Column("role", String(16), nullable=False),  # customer, agent
    Column("text", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("suggestion_id", String(64)),
)

suggestions = Table(
    "suggestions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("conversation_id", String(128), nullable=False, index=True),
    Column("customer_message", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("intent", String(32), nullable=False),
    Column("intent_confidence", Float, nullable=False),
    Column("route", String(64)),
    Column("escalate", Boolean, nullable=False),
    Column("fallback", Boolean, nullable=False),
    Column("drafter", String(32), nullable=False),
    Column("kb_revision", Integer, nullable=False),
    Column("response", Text, nullable=False),  # the full JSON response, drafts included
)

decisions = Table(
    "decisions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("suggestion_id", String(64), nullable=False, unique=True),
    Column("conversation_id", String(128), nullable=False, index=True),
    Column("action", String(16), nullable=False),  # approve, edit, reject
    Column("draft_id", String(64)),
    Column("final_text", Text),
    Column("agent_id", String(128), nullable=False),
    Column("reason", Text),
    Column("violations", Text, nullable=False),  # JSON list of the final text's violations
    Column("created_at", DateTime(timezone=True), nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),  # the public prefix of the key
    Column("secret_hash", String(64), nullable=False),
    Column("role", String(16), nullable=False),
    Column("name", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
    Column("last_used_at", DateTime(timezone=True)),
)
