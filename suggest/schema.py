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
    Column("status", String(16), nullable=False),  # open, claimed, closed
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("last_customer_at", DateTime(timezone=True)),
    Column("last_agent_at", DateTime(timezone=True)),
    Column("agent_replies", Integer, nullable=False),
    # the customer's first message that no agent reply has answered yet (None: not waiting)
    Column("waiting_since", DateTime(timezone=True)),
    Column("owner", String(200)),  # the agent who claimed it (None: anyone may answer)
    Column("claimed_at", DateTime(timezone=True)),
    Column("closed_at", DateTime(timezone=True)),
    Column("closed_by", String(200)),
)

#: Who claimed, transferred, closed or reopened a conversation, and when (its lifecycle, visible to all).
conversation_events = Table(
    "conversation_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("conversation_id", String(128), nullable=False, index=True),
    Column("action", String(16), nullable=False),  # claim, transfer, close, reopen
    Column("actor", String(200), nullable=False),
    Column("target", String(200)),  # transfer: to whom
    Column("note", Text),
    Column("at", DateTime(timezone=True), nullable=False),
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
    Column("offline", Boolean, nullable=False, default=False),  # asked outside working hours
    Column("customer_at", DateTime(timezone=True)),  # when the customer wrote (the service clock)
)

decisions = Table(
    "decisions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # the suggestion whose drafts this decision settles (unique: one decision per suggestion); None for
    # an agent's own reply written after the drafts were settled (rejected, or a second message)
    Column("suggestion_id", String(64), unique=True),
    Column("conversation_id", String(128), nullable=False, index=True),
    Column("action", String(16), nullable=False),  # approve, edit, reject, write (the agent's own text)
    Column("reply_to", String(64)),  # the suggestion (customer message) the reply answers
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

escalations = Table(
    "escalations",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("conversation_id", String(128), nullable=False),
    Column("suggestion_id", String(64)),
    Column("question", Text, nullable=False),
    Column("responsible", String(200), nullable=False),
    Column("status", String(16), nullable=False),  # open, resolved
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("resolved_at", DateTime(timezone=True)),
    Column("resolved_by", String(200)),
    Column("answer", Text),
    Column("snippet_id", String(128)),  # the draft snippet offered to content staff
)

queue_items = Table(
    "queue_items",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("department", String(200), nullable=False),
    Column("kind", String(32), nullable=False),  # complaint, suggestion, customer_info
    Column("conversation_id", String(128), nullable=False),
    Column("suggestion_id", String(64)),
    Column("message", Text, nullable=False),
    Column("status", String(16), nullable=False),  # open, done
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("done_at", DateTime(timezone=True)),
    Column("done_by", String(200)),
    Column("note", Text),
)

service_records = Table(
    "service_records",
    metadata,
    Column("conversation_id", String(128), primary_key=True),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("customer_id", String(128)),
    Column("customer_name", String(200)),
    Column("channel", String(64)),
    Column("intent", String(32)),
    Column("summary", Text),
    Column("final_reply", Text),
    Column("agent_id", String(128)),
    Column("routed_to", String(200)),
    Column("escalated", Boolean, nullable=False, default=False),
    Column("first_response_s", Float),
    Column("status", String(16), nullable=False),  # open, waiting, answer_ready, answered, closed
    Column("satisfaction", Integer),
    Column("satisfaction_comment", Text),
    Column("notes", Text),
    Column("edited_fields", Text, nullable=False, default="[]"),  # fields an agent set by hand
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("version", Integer, nullable=False, default=1),
    # every customer message with its intent and the final answer sent to it (JSON list, see RecordTurn)
    Column("turns", Text, nullable=False, default="[]"),
    Column("closed_at", DateTime(timezone=True)),
)
