"""DirectStatement stores and reads exactly what SQLAlchemy Core does (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from knowledge.direct import DirectStatement
from knowledge.store import Store, writing
from suggest import schema as t
from suggest.storage import SuggestStore

AT = datetime(2026, 11, 26, 10, 0, 0, 123456, tzinfo=UTC)


def _suggestion(sid: str, **over: object) -> dict[str, object]:
    row: dict[str, object] = dict(
        id=sid,
        conversation_id="c-1",
        customer_message="請問怎麼退貨？",
        created_at=AT,
        intent="after_sales",
        intent_confidence=0.875,
        route=None,
        escalate=True,
        fallback=False,
        drafter="template",
        kb_revision=7,
        response='{"drafts": []}',
        offline=False,
        customer_at=AT,
    )
    row.update(over)
    return row


def test_direct_insert_and_select_match_core(store: Store) -> None:
    SuggestStore(store.engine)  # the suggestion tables
    insert = DirectStatement.insert(t.suggestions)
    by_id = DirectStatement.select_by(t.suggestions, "id")
    with writing(store.engine) as conn:
        conn.execute(t.suggestions.insert(), _suggestion("core"))
        assert insert.execute(conn, _suggestion("direct")) == 1
        no_offline = _suggestion("defaults", route="销售部")
        del no_offline["offline"]  # left out: the column's default (False), as Core applies it
        insert.execute(conn, no_offline)
    with store.engine.connect() as conn:
        rows = {r.id: r._asdict() for r in conn.execute(select(t.suggestions))}
        direct = by_id.first(conn, {"id": "direct"})
        assert by_id.first(conn, {"id": "missing"}) is None
    core = rows.pop("core")
    assert {**rows.pop("direct"), "id": "core"} == core
    assert direct is not None and {**direct, "id": "core"} == core  # read back as Core reads it
    assert rows["defaults"]["route"] == "销售部" and rows["defaults"]["offline"] is False


def test_direct_insert_applies_column_defaults_and_skips_autoincrement(store: Store) -> None:
    SuggestStore(store.engine)
    records = DirectStatement.insert(t.service_records)
    messages = DirectStatement.insert(t.messages)
    assert (
        "id" not in messages._compiled(store.engine.dialect).binds
    )  # autoincrement key left to the database
    with writing(store.engine) as conn:
        records.execute(conn, dict(conversation_id="c-1", started_at=AT, status="waiting", updated_at=AT))
        for text in ("一", "二"):
            messages.execute(
                conn, dict(conversation_id="c-1", role="customer", text=text, at=AT, suggestion_id="s")
            )
    with store.engine.connect() as conn:
        rec = conn.execute(select(t.service_records)).one()
        ids = [r.id for r in conn.execute(select(t.messages.c.id).order_by(t.messages.c.id))]
    assert rec.escalated is False and rec.edited_fields == "[]" and rec.version == 1
    assert len(ids) == 2 and ids[0] < ids[1]


def test_direct_statement_rolls_back_with_its_transaction(store: Store) -> None:
    SuggestStore(store.engine)
    insert = DirectStatement.insert(t.suggestions)
    with pytest.raises(RuntimeError), writing(store.engine) as conn:
        insert.execute(conn, _suggestion("gone"))
        raise RuntimeError("crash before commit")
    with store.engine.connect() as conn:
        assert conn.execute(select(t.suggestions)).first() is None


def test_direct_update_takes_the_statements_own_values_and_refuses_a_missing_parameter(store: Store) -> None:
    from sqlalchemy import bindparam

    SuggestStore(store.engine)
    update = DirectStatement(
        t.conversations.update()
        .where(t.conversations.c.id == bindparam("id"))
        .values(status="closed", updated_at=bindparam("at"))
    )
    with writing(store.engine) as conn:
        DirectStatement.insert(t.conversations).execute(
            conn, dict(id="c-1", status="open", created_at=AT, updated_at=AT, agent_replies=0)
        )
        with pytest.raises(KeyError):
            update.execute(conn, {"id": "c-1"})  # "at" is required: never silently NULL
        assert update.execute(conn, {"id": "c-1", "at": AT.replace(hour=12)}) == 1
        assert update.execute(conn, {"id": "nobody", "at": AT}) == 0
    with store.engine.connect() as conn:
        row = conn.execute(select(t.conversations)).one()
    assert row.status == "closed" and row.updated_at.replace(tzinfo=UTC) == AT.replace(hour=12)
