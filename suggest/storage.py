"""Storage of conversations, suggestions, decisions and API keys (same database as the KB)."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select

from knowledge.errors import NotFoundError, ValidationError
from knowledge.store import migrate, writing
from suggest import schema as t
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


class SuggestStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        migrate(engine, Path(__file__).parent / "migrations")

    # -- conversations and suggestions ----------------------------------------------------------

    def conversation(self, conversation_id: str) -> ConversationState | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.conversations).where(t.conversations.c.id == conversation_id)).first()
        if row is None:
            return None
        return ConversationState(
            row.id, row.agent_replies, _aware(row.last_customer_at), _aware(row.last_agent_at), row.status
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
    ) -> None:
        """Store the customer's message and the suggestion, creating the conversation if new (one transaction)."""
        at = _now()
        with writing(self.engine) as conn:
            exists = conn.execute(
                select(t.conversations.c.id).where(t.conversations.c.id == conversation_id)
            ).first()
            if exists is None:
                conn.execute(
                    t.conversations.insert().values(
                        id=conversation_id,
                        channel=channel,
                        customer_id=(customer or {}).get("id"),
                        customer_name=(customer or {}).get("name"),
                        status="open",
                        created_at=at,
                        updated_at=at,
                        last_customer_at=at,
                        agent_replies=0,
                    )
                )
            else:
                conn.execute(
                    t.conversations.update()
                    .where(t.conversations.c.id == conversation_id)
                    .values(updated_at=at, last_customer_at=at, status="open")
                )
            conn.execute(
                t.messages.insert().values(
                    conversation_id=conversation_id,
                    role="customer",
                    text=customer_message,
                    at=at,
                    suggestion_id=suggestion_id,
                )
            )
            conn.execute(
                t.suggestions.insert().values(
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
                    response=json.dumps(response, ensure_ascii=False, default=str),
                )
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
    ) -> dict[str, Any]:
        at = _now()
        with writing(self.engine) as conn:
            if conn.execute(
                select(t.decisions.c.id).where(t.decisions.c.suggestion_id == suggestion_id)
            ).first():
                raise AlreadyDecided(
                    f"建议 {suggestion_id} 已经处理过了", f"suggestion {suggestion_id!r} was already decided"
                )
            conn.execute(
                t.decisions.insert().values(
                    suggestion_id=suggestion_id,
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
            if action in ("approve", "edit") and final_text:
                conn.execute(
                    t.messages.insert().values(
                        conversation_id=conversation_id,
                        role="agent",
                        text=final_text,
                        at=at,
                        suggestion_id=suggestion_id,
                    )
                )
                conn.execute(
                    t.conversations.update()
                    .where(t.conversations.c.id == conversation_id)
                    .values(
                        agent_replies=t.conversations.c.agent_replies + 1, last_agent_at=at, updated_at=at
                    )
                )
        return {"suggestion_id": suggestion_id, "action": action, "recorded_at": at.isoformat()}

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
