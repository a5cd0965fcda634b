"""The store on SQLite and PostgreSQL: versions, revisions, conflicts, imports, concurrency."""

from __future__ import annotations

import threading
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from knowledge.errors import ConflictError, NotFoundError, ValidationError
from knowledge.model import Snippet
from knowledge.store import Store
from tests.conftest import snippet


def test_migrates_blank_database_and_starts_at_revision_zero(store: Store) -> None:
    assert store.revision() == 0
    assert store.count() == 0


def test_add_get_and_history(store: Store) -> None:
    s = store.add(
        snippet("faq-a", "怎么退货", similar_questions=("如何退货",), tags=("退货",)), actor="alice"
    )
    assert s.version == 1 and s.updated_by == "alice"
    got = store.get("faq-a")
    assert got.similar_questions == ("如何退货",) and got.tags == ("退货",)
    store.update("faq-a", {"answer": "7天无理由退货"}, expected_version=1, actor="bob")
    hist = store.history("faq-a")
    assert [(r.action, r.actor, r.version) for r in hist] == [("create", "alice", 1), ("update", "bob", 2)]
    assert hist[1].changes == {"answer": ["答案", "7天无理由退货"]}
    assert store.revision() == 2


def test_stale_write_is_refused_and_nothing_is_lost(store: Store) -> None:
    store.add(snippet("faq-a", "怎么退货"), actor="alice")
    store.update("faq-a", {"answer": "bob's answer"}, expected_version=1, actor="bob")
    rev = store.revision()
    with pytest.raises(ConflictError) as err:
        store.update("faq-a", {"answer": "carol's answer"}, expected_version=1, actor="carol")
    assert err.value.details == {"current_version": 2, "expected_version": 1}
    assert store.get("faq-a").answer == "bob's answer"  # bob's write survives
    assert store.revision() == rev  # the refused write left no trace
    assert len(store.history("faq-a")) == 2


def test_concurrent_edits_of_one_version_let_exactly_one_win(store: Store) -> None:
    store.add(snippet("faq-a", "怎么退货"), actor="x")
    results: list[str] = []
    barrier = threading.Barrier(4)

    def edit(who: str) -> None:
        barrier.wait()
        try:
            store.update("faq-a", {"answer": f"by {who}"}, expected_version=1, actor=who)
            results.append(who)
        except ConflictError:
            results.append("conflict")

    threads = [threading.Thread(target=edit, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if r != "conflict"]
    assert len(winners) == 1, results
    assert store.get("faq-a").answer == f"by {winners[0]}"
    assert store.get("faq-a").version == 2


def test_invalid_edit_changes_nothing(store: Store) -> None:
    store.add(snippet("faq-a", "怎么退货"), actor="x")
    with pytest.raises(ValidationError):
        store.update("faq-a", {"kind": "nonsense"}, expected_version=1, actor="x")
    with pytest.raises(ValidationError):
        store.update(
            "faq-a", {"valid_from": "2026-12-01", "valid_to": "2026-01-01"}, expected_version=1, actor="x"
        )
    with pytest.raises(ValidationError):
        store.update("faq-a", {"version": 7}, expected_version=1, actor="x")
    assert store.get("faq-a").version == 1


def test_add_duplicate_and_missing(store: Store) -> None:
    store.add(snippet("faq-a", "怎么退货"), actor="x")
    with pytest.raises(ConflictError):
        store.add(snippet("faq-a", "别的"), actor="x")
    with pytest.raises(NotFoundError):
        store.get("nope")
    with pytest.raises(NotFoundError):
        store.update("nope", {"answer": "x"}, expected_version=1, actor="x")


def test_delete_keeps_history_and_reports_change(store: Store) -> None:
    store.add(snippet("faq-a", "怎么退货"), actor="x")
    before = store.revision()
    with pytest.raises(ConflictError):
        store.delete("faq-a", expected_version=5, actor="y")
    store.delete("faq-a", expected_version=1, actor="y")
    assert store.find("faq-a") is None
    assert [r.action for r in store.history("faq-a")] == ["create", "delete"]
    ch = store.changes_since(before)
    assert ch.deleted == {"faq-a"} and not ch.changed


def test_import_is_one_transaction_and_idempotent(store: Store) -> None:
    items = [snippet(f"faq-{i}", f"问题{i}", valid_from=date(2026, 1, 1)) for i in range(5)]
    r1 = store.import_snippets(items, actor="staff")
    assert len(r1.created) == 5
    rev = store.revision()
    r2 = store.import_snippets(items, actor="staff")
    assert len(r2.unchanged) == 5 and not r2.created and not r2.updated
    assert store.revision() == rev  # nothing changed, no new revision
    changed = [*items[:4], items[4].with_changes(answer="新答案")]
    r3 = store.import_snippets(changed, actor="staff")
    assert r3.updated == ["faq-4"] and len(r3.unchanged) == 4
    assert store.changes_since(rev).changed == {"faq-4"}


def test_import_with_one_invalid_snippet_imports_nothing(store: Store) -> None:
    items = [snippet("faq-1", "问题1"), snippet("bad id!", "问题2")]
    with pytest.raises(ValidationError):
        store.import_snippets(items, actor="staff")
    assert store.count() == 0 and store.revision() == 0


def test_meta_and_vector_cache(store: Store) -> None:
    import numpy as np

    assert store.get_meta("k") is None
    store.set_meta("k", "v1")
    store.set_meta("k", "v2")
    assert store.get_meta("k") == "v2"
    v = np.arange(4, dtype=np.float32)
    store.store_vectors("m@1", {"h1": v})
    store.store_vectors("m@1", {"h1": v})  # storing twice is harmless
    got = store.cached_vectors("m@1", ["h1", "h2"])
    assert list(got) == ["h1"] and np.array_equal(got["h1"], v)
    assert store.cached_vectors("other", ["h1"]) == {}


def test_vectors_another_replica_stored_meanwhile_are_skipped(store: Store) -> None:
    """Two replicas starting on a new database embed the same texts: the second one's insert meets
    rows the first stored after the second checked (this crashed a replica's start-up on PostgreSQL)."""
    import numpy as np

    class Late(Store):
        def cached_vectors(self, model_id: str, hashes: Any) -> dict[str, Any]:
            return {}  # what the check saw before the other replica's rows landed

    other = Late(store.url)
    try:
        v, w = np.arange(4, dtype=np.float32), np.ones(4, dtype=np.float32)
        store.store_vectors("m@1", {"h1": v})
        other.store_vectors("m@1", {"h1": v * 2, "h2": w})  # h1 exists: left alone; h2 is new
        got = store.cached_vectors("m@1", ["h1", "h2"])
        assert np.array_equal(got["h1"], v) and np.array_equal(got["h2"], w)
    finally:
        other.close()


def _add_many(url: str, prefix: str, n: int) -> None:
    """Worker of the test below: ``n`` snippets from 4 threads of one process."""
    import threading

    s = Store(url)

    def add(k: int) -> None:
        for i in range(k, n, 4):
            s.add(Snippet(id=f"{prefix}-{i}", question=f"问题{prefix}{i}", answer="答案"), actor=prefix)

    threads = [threading.Thread(target=add, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    s.close()


def test_sqlite_writers_of_several_processes_and_threads_take_turns(tmp_path: Path) -> None:
    """Two processes of four threads each write one SQLite file at once: every write lands, each
    with its own revision, and the writers took turns through the lock file beside the database."""
    import multiprocessing

    url = f"sqlite:///{tmp_path / 'kb.db'}"
    Store(url).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_add_many, args=(url, p, 60)) for p in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    store = Store(url)
    assert store.count() == 120 and store.revision() == 120
    assert (tmp_path / "kb.db-writer.lock").exists()
    store.close()
