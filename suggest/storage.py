"""Storage of conversations, suggestions, decisions and API keys (same database as the KB)."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, case, func, select
from sqlalchemy.exc import IntegrityError

from knowledge.candidates import record_candidate
from knowledge.direct import DirectStatement
from knowledge.errors import NotFoundError, ValidationError
from knowledge.gaps import record_gap_question
from knowledge.store import WRITE_FLAG, migrate, writer_turn, writing
from suggest import schema as t
from suggest.conversations import (
    answer_as,
    lock_conversation,
    newer_customer_messages,
    refuse_if_held,
    refuse_if_stale,
)
from suggest.errors import AlreadyDecided

ROLES = ("agent", "editor", "evaluator", "admin")
KEY_PREFIX = "kefu_"


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(dt: datetime | None) -> datetime | None:
    return dt.replace(tzinfo=UTC) if dt is not None and dt.tzinfo is None else dt


@dataclass(frozen=True)
class ConversationState:
    id: str
    agent_replies: int
    last_customer_at: datetime | None
    last_agent_at: datetime | None
    status: str
    created_at: datetime | None = None
    #: The customer's first message that no agent reply has answered yet (None: not waiting).
    waiting_since: datetime | None = None
    owner: str | None = None  # the agent who claimed it


#: Actions that send text to the customer (a reject sends nothing).
SENDING = ("approve", "edit", "write")


@dataclass(frozen=True)
class ApiKey:
    id: str
    role: str
    name: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "role": self.role,
            "name": self.name,
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "last_used_at": self.last_used_at.isoformat() if self.last_used_at else None,
        }


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


#: SQLite ``synchronous`` level of the transaction that records a suggestion (``KEFU_SQLITE_RECORD_SYNC``).
#: In WAL mode NORMAL skips the fsync at each commit (the WAL is synced at checkpoints): a recorded
#: suggestion survives a crash of the service, but the last ones before a power loss or an OS crash
#: may be lost; the database is never corrupted. Knowledge-base edits, decisions and keys keep the
#: connection's level (FULL). FULL here costs one fsync per suggestion while holding SQLite's write
#: lock (docs/benchmarks.md, "Suggestion service"). PostgreSQL ignores the setting.
RECORD_SYNC_LEVELS = ("OFF", "NORMAL", "FULL", "EXTRA")


def _record_sync_level(value: str | None) -> str:
    level = (value or os.environ.get("KEFU_SQLITE_RECORD_SYNC") or "NORMAL").strip().upper()
    if level not in RECORD_SYNC_LEVELS:
        raise ValidationError(
            f"KEFU_SQLITE_RECORD_SYNC 必须是 {', '.join(RECORD_SYNC_LEVELS)} 之一",
            f"KEFU_SQLITE_RECORD_SYNC must be one of {', '.join(RECORD_SYNC_LEVELS)}",
        )
    return level


# The statements of every suggestion (knowledge.direct: compiled once, run on the DBAPI cursor).
_CONVERSATION = DirectStatement.select_by(t.conversations, "id")
_CONVERSATION_EXISTS = DirectStatement.select_by(t.conversations, "id", ["id"])
_INSERT_CONVERSATION = DirectStatement.insert(t.conversations)
_CUSTOMER_WROTE = DirectStatement(
    t.conversations.update()
    .where(t.conversations.c.id == bindparam("id"))
    .values(
        updated_at=bindparam("at"),
        last_customer_at=bindparam("at"),
        # a closed conversation opens again, unclaimed, when the customer writes; a claimed one stays so
        status=case((t.conversations.c.status == "closed", "open"), else_=t.conversations.c.status),
        owner=case((t.conversations.c.status == "closed", None), else_=t.conversations.c.owner),
        waiting_since=func.coalesce(t.conversations.c.waiting_since, bindparam("at")),
    )
)
_INSERT_MESSAGE = DirectStatement.insert(t.messages)
_INSERT_SUGGESTION = DirectStatement.insert(t.suggestions)


def _add_message(
    conn: Connection, conversation_id: str, role: str, text: str, at: datetime, suggestion_id: str
) -> None:
    _INSERT_MESSAGE.execute(
        conn,
        dict(conversation_id=conversation_id, role=role, text=text, at=at, suggestion_id=suggestion_id),
    )


# -- what the knowledge base learns from suggestions and decisions (knowledge/candidates, gaps) ------

#: Intents whose low retrieval confidence is no knowledge gap (they are not questions about the KB).
NOT_KB_QUESTIONS = ("chit_chat", "closing", "complaint", "suggestion", "restricted")


def note_knowledge_gap(
    conn: Connection,
    suggestion_id: str,
    conversation_id: str,
    message: str,
    intent: str,
    escalate: bool,
    response: dict[str, Any],
    at: datetime,
) -> None:
    """An escalated question, or one whose best snippet had low confidence, is a knowledge gap."""
    retrieval = response.get("retrieval") or {}
    if escalate:
        reason = "escalated"
    elif retrieval.get("confidence") == "low" and intent not in NOT_KB_QUESTIONS:
        reason = "low_confidence"
    else:
        return
    top = (retrieval.get("hits") or [{}])[0]
    record_gap_question(
        conn,
        text=message,
        reason=reason,
        conversation_id=conversation_id,
        suggestion_id=suggestion_id,
        at=at,
        confidence_score=top.get("confidence_score"),
        top_snippet_id=top.get("snippet_id"),
    )


def note_candidate_question(conn: Connection, suggestion_id: str, draft_id: str | None, at: datetime) -> None:
    """An approved or edited answer draft that cited a snippet: the customer's message becomes a
    candidate similar question of that snippet (the first cited one, which the answer is built on)."""
    if draft_id is None:
        return
    row = conn.execute(
        select(
            t.suggestions.c.response, t.suggestions.c.customer_message, t.suggestions.c.conversation_id
        ).where(t.suggestions.c.id == suggestion_id)
    ).first()
    if row is None:
        return
    draft = next((d for d in json.loads(row.response).get("drafts", []) if d.get("id") == draft_id), None)
    if draft is None or draft.get("kind") != "answer" or not draft.get("citations"):
        return
    record_candidate(
        conn,
        snippet_id=draft["citations"][0]["snippet_id"],
        text=row.customer_message,
        suggestion_id=suggestion_id,
        conversation_id=row.conversation_id,
        at=at,
    )


class SuggestStore:
    def __init__(self, engine: Engine, *, record_sync: str | None = None) -> None:
        self.engine = engine
        self.record_sync = _record_sync_level(record_sync)
        migrate(engine, Path(__file__).parent / "migrations")

    @contextmanager
    def _record_transaction(self) -> Iterator[Connection]:
        """``writing()`` whose commit uses ``record_sync`` on SQLite (see RECORD_SYNC_LEVELS)."""
        with writer_turn(self.engine), self.engine.connect() as conn:
            raw: Any = conn.connection.dbapi_connection if conn.dialect.name == "sqlite" else None
            previous = None
            if raw is not None:
                # The level cannot change inside a transaction: set it before BEGIN, restore it after.
                previous = int(raw.execute("PRAGMA synchronous").fetchone()[0])
                raw.execute(f"PRAGMA synchronous={self.record_sync}")
            conn.info[WRITE_FLAG] = True
            try:
                with conn.begin():
                    yield conn
            finally:
                conn.info.pop(WRITE_FLAG, None)
                if raw is not None and previous is not None:
                    raw.execute(f"PRAGMA synchronous={previous}")

    # -- conversations and suggestions ----------------------------------------------------------

    def conversation(self, conversation_id: str) -> ConversationState | None:
        with self.engine.connect() as conn:
            row = _CONVERSATION.first(conn, {"id": conversation_id})
        if row is None:
            return None
        return ConversationState(
            row["id"],
            row["agent_replies"],
            _aware(row["last_customer_at"]),
            _aware(row["last_agent_at"]),
            row["status"],
            _aware(row["created_at"]),
            _aware(row["waiting_since"]),
            row["owner"],
        )

    def record_suggestion(
        self,
        *,
        suggestion_id: str,
        conversation_id: str,
        customer_message: str,
        channel: str | None,
        customer: dict[str, Any] | None,
        response: dict[str, Any],
        intent: str,
        intent_confidence: float,
        route: str | None,
        escalate: bool,
        fallback: bool,
        drafter: str,
        kb_revision: int,
        at: datetime | None = None,
        offline: bool = False,
        store_message: bool = True,
        also: Callable[[Connection], None] | None = None,
    ) -> None:
        """Store the customer's message and the suggestion, creating the conversation if new; ``also``
        runs in the same transaction (the workflow's queue items, escalation and record)."""
        at = at or _now()
        body = json.dumps(response, ensure_ascii=False, default=str)  # before the write lock is taken
        with self._record_transaction() as conn:
            if _CONVERSATION_EXISTS.first(conn, {"id": conversation_id}) is None:
                _INSERT_CONVERSATION.execute(
                    conn,
                    dict(
                        id=conversation_id,
                        channel=channel,
                        customer_id=(customer or {}).get("id"),
                        customer_name=(customer or {}).get("name"),
                        status="open",
                        created_at=at,
                        updated_at=at,
                        last_customer_at=at,
                        agent_replies=0,
                        waiting_since=at,
                    ),
                )
            else:
                _CUSTOMER_WROTE.execute(conn, {"id": conversation_id, "at": at})
            if store_message:
                _add_message(conn, conversation_id, "customer", customer_message, at, suggestion_id)
            _INSERT_SUGGESTION.execute(
                conn,
                dict(
                    id=suggestion_id,
                    conversation_id=conversation_id,
                    customer_message=customer_message,
                    created_at=at,
                    intent=intent,
                    intent_confidence=intent_confidence,
                    route=route,
                    escalate=escalate,
                    fallback=fallback,
                    drafter=drafter,
                    kb_revision=kb_revision,
                    response=body,
                    offline=offline,
                    customer_at=at,
                ),
            )
            if also is not None:
                also(conn)
            if store_message:
                note_knowledge_gap(
                    conn, suggestion_id, conversation_id, customer_message, intent, escalate, response, at
                )

    def suggestion(self, suggestion_id: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.suggestions).where(t.suggestions.c.id == suggestion_id)).first()
        if row is None:
            raise NotFoundError(
                f"建议 {suggestion_id} 不存在", f"suggestion {suggestion_id!r} does not exist"
            )
        out: dict[str, Any] = json.loads(row.response)
        out["conversation_id"] = row.conversation_id
        out["customer_message"] = row.customer_message
        return out

    def record_decision(
        self,
        *,
        suggestion_id: str,
        conversation_id: str,
        action: str,
        draft_id: str | None,
        final_text: str | None,
        agent_id: str,
        reason: str | None,
        violations: list[dict[str, Any]],
        at: datetime | None = None,
        suggestion_at: datetime | None = None,
        confirm_stale: bool = False,
        take_over: bool = False,
        also: Callable[[Connection, bool], None] | None = None,
    ) -> dict[str, Any]:
        """Store the agent's decision on a suggestion, in one transaction with what it changes.

        Refused: a second approve/edit/reject of one suggestion (an own reply, ``write``, may follow a
        reject); a reply to a suggestion the customer has written after (unless ``confirm_stale``); a
        reply to a conversation another agent claimed (unless ``take_over``). ``also(conn, settles)``
        runs in the same transaction; ``settles`` says whether this decision settled the drafts."""
        at = at or _now()
        try:
            with writing(self.engine) as conn:
                holder = lock_conversation(conn, conversation_id)
                decided = conn.execute(
                    select(t.decisions.c.action).where(t.decisions.c.suggestion_id == suggestion_id)
                ).first()
                if decided is not None and action != "write":
                    raise AlreadyDecided(
                        f"建议 {suggestion_id} 已经处理过了（{decided.action}）",
                        f"suggestion {suggestion_id!r} was already decided ({decided.action})",
                    )
                settles = decided is None
                newer: list[dict[str, Any]] = []
                if action in SENDING:
                    newer = newer_customer_messages(conn, conversation_id, suggestion_id, suggestion_at)
                    if not confirm_stale:
                        refuse_if_stale(newer, suggestion_id)
                    new_owner = answer_as(conn, conversation_id, holder, agent_id, at, take_over=take_over)
                else:  # a reject settles the drafts: not of a conversation a colleague holds
                    refuse_if_held(holder, conversation_id, agent_id, take_over=take_over)
                conn.execute(
                    t.decisions.insert().values(
                        suggestion_id=suggestion_id if settles else None,
                        reply_to=suggestion_id,
                        conversation_id=conversation_id,
                        action=action,
                        draft_id=draft_id,
                        final_text=final_text,
                        agent_id=agent_id,
                        reason=reason,
                        violations=json.dumps(violations, ensure_ascii=False),
                        created_at=at,
                    )
                )
                if action in SENDING and final_text:
                    _add_message(conn, conversation_id, "agent", final_text, at, suggestion_id)
                    owner = {"owner": new_owner, "status": "claimed", "claimed_at": at} if new_owner else {}
                    conn.execute(
                        t.conversations.update()
                        .where(t.conversations.c.id == conversation_id)
                        .values(
                            agent_replies=t.conversations.c.agent_replies + 1,
                            last_agent_at=at,
                            updated_at=at,
                            # answered: the customer no longer waits (unless a newer message, sent anyway)
                            waiting_since=datetime.fromisoformat(newer[0]["at"]) if newer else None,
                            **owner,
                        )
                    )
                if also is not None:
                    also(conn, settles)
                if action in ("approve", "edit"):
                    note_candidate_question(conn, suggestion_id, draft_id, at)
        except IntegrityError as e:  # another decision on the same suggestion committed first
            raise AlreadyDecided(
                f"建议 {suggestion_id} 刚被别人处理了",
                f"suggestion {suggestion_id!r} was just decided by someone else",
            ) from e
        return {
            "suggestion_id": suggestion_id,
            "action": action,
            "recorded_at": at.isoformat(),
            "settled_drafts": settles,
        }

    def last_customer_message(self, conversation_id: str) -> str:
        with self.engine.connect() as conn:
            text = conn.execute(
                select(t.messages.c.text)
                .where(t.messages.c.conversation_id == conversation_id, t.messages.c.role == "customer")
                .order_by(t.messages.c.id.desc())
                .limit(1)
            ).scalar_one_or_none()
        if text is None:
            raise NotFoundError(
                f"对话 {conversation_id} 没有客户消息",
                f"conversation {conversation_id!r} has no customer message",
            )
        return str(text)

    def offline_suggestions(self, *, include_decided: bool = False) -> list[dict[str, Any]]:
        """Suggestions for messages left while the service was closed, oldest first."""
        stmt = (
            select(t.suggestions.c.response, t.suggestions.c.customer_message, t.decisions.c.action)
            .select_from(
                t.suggestions.outerjoin(t.decisions, t.decisions.c.suggestion_id == t.suggestions.c.id)
            )
            .where(t.suggestions.c.offline.is_(True))
            .order_by(t.suggestions.c.customer_at, t.suggestions.c.created_at)
        )
        if not include_decided:
            stmt = stmt.where(t.decisions.c.id.is_(None))
        out = []
        with self.engine.connect() as conn:
            for response, message, action in conn.execute(stmt):
                item: dict[str, Any] = json.loads(response)
                item["customer_message"] = message
                item["decision"] = action
                out.append(item)
        return out

    def decision_counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.decisions.c.action, func.count()).group_by(t.decisions.c.action)
            ).all()
        return {a: int(n) for a, n in rows}

    # -- API keys ----------------------------------------------------------------------------------

    def create_key(self, role: str, name: str = "") -> tuple[str, ApiKey]:
        """A new key; the secret is returned once and only its hash is stored."""
        if role not in ROLES:
            raise ValidationError(
                f"角色必须是 {', '.join(ROLES)} 之一", f"role must be one of {', '.join(ROLES)}"
            )
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(24)
        at = _now()
        with writing(self.engine) as conn:
            conn.execute(
                t.api_keys.insert().values(
                    id=key_id, secret_hash=_hash(secret), role=role, name=name or role, created_at=at
                )
            )
        return f"{KEY_PREFIX}{key_id}_{secret}", ApiKey(key_id, role, name or role, at, None, None)

    def verify_key(self, key: str) -> ApiKey | None:
        if not key.startswith(KEY_PREFIX) or key.count("_") < 2:
            return None
        key_id, _, secret = key[len(KEY_PREFIX) :].partition("_")
        with self.engine.connect() as conn:
            row = conn.execute(select(t.api_keys).where(t.api_keys.c.id == key_id)).first()
        if (
            row is None
            or row.revoked_at is not None
            or not hmac.compare_digest(row.secret_hash, _hash(secret))
        ):
            return None
        return ApiKey(
            row.id, row.role, row.name, _aware(row.created_at) or _now(), None, _aware(row.last_used_at)
        )

    def revoke_key(self, key_id: str) -> None:
        with writing(self.engine) as conn:
            n = conn.execute(
                t.api_keys.update()
                .where(t.api_keys.c.id == key_id, t.api_keys.c.revoked_at.is_(None))
                .values(revoked_at=_now())
            ).rowcount
        if not n:
            raise NotFoundError(f"没有有效的密钥 {key_id}", f"no active key {key_id!r}")

    def list_keys(self) -> list[ApiKey]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.api_keys).order_by(t.api_keys.c.created_at)).all()
        return [
            ApiKey(
                r.id,
                r.role,
                r.name,
                _aware(r.created_at) or _now(),
                _aware(r.revoked_at),
                _aware(r.last_used_at),
            )
            for r in rows
        ]
