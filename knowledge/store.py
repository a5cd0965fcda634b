"""The knowledge store: snippets with versions and revisions, on SQLite or PostgreSQL.

Every write runs in one transaction, bumps the KB revision (which indexes follow) and writes a
revision row (who, when, what changed). Writes carry the version the writer read; a stale write is
refused with :class:`ConflictError` and changes nothing.
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, Table, create_engine, event, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

try:
    import fcntl
except ImportError:  # not on Windows: SQLite's own locking alone
    fcntl = None  # type: ignore[assignment]

from knowledge import schema as t
from knowledge.errors import ConflictError, NotFoundError, ValidationError
from knowledge.model import CONTENT_FIELDS, KINDS, STATUSES, Snippet
from knowledge.validate import clean_snippet

DEFAULT_DATABASE_URL = "sqlite:///var/kefu.db"
#: Set in ``Connection.info`` for a transaction that will write (SQLite: BEGIN IMMEDIATE).
WRITE_FLAG = "kefu_write"
_MIGRATIONS = Path(__file__).parent / "migrations"


@dataclass(frozen=True)
class Revision:
    id: int
    snippet_id: str
    version: int
    kb_revision: int
    action: str
    actor: str
    at: datetime
    data: dict[str, Any] | None
    changes: dict[str, list[Any]]


@dataclass
class ImportReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    kb_revision: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "created": len(self.created),
            "updated": len(self.updated),
            "unchanged": len(self.unchanged),
            "kb_revision": self.kb_revision,
        }


@dataclass(frozen=True)
class Changes:
    """What changed between two KB revisions: ids to (re)index and ids to drop."""

    since: int
    until: int
    changed: frozenset[str]
    deleted: frozenset[str]


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(dt: datetime | None) -> datetime | None:
    # SQLite returns naive datetimes; everything is stored in UTC.
    if dt is not None and dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt


def _row_to_snippet(row: Any) -> Snippet:
    return Snippet(
        id=row.id,
        kind=row.kind,
        question=row.question,
        similar_questions=tuple(json.loads(row.similar_questions)),
        answer=row.answer,
        tags=tuple(json.loads(row.tags)),
        product=row.product,
        status=row.status,
        valid_from=row.valid_from,
        valid_to=row.valid_to,
        version=row.version,
        updated_at=_aware(row.updated_at),
        updated_by=row.updated_by,
    )


def _row_values(s: Snippet) -> dict[str, Any]:
    return {
        "kind": s.kind,
        "question": s.question,
        "similar_questions": json.dumps(list(s.similar_questions), ensure_ascii=False),
        "answer": s.answer,
        "tags": json.dumps(list(s.tags), ensure_ascii=False),
        "product": s.product,
        "status": s.status,
        "valid_from": s.valid_from,
        "valid_to": s.valid_to,
        "content_hash": s.content_hash(),
    }


def _diff(old: Snippet | None, new: Snippet | None) -> dict[str, list[Any]]:
    a = old.content() if old else {}
    b = new.content() if new else {}
    return {k: [a.get(k), b.get(k)] for k in ("id", *CONTENT_FIELDS) if a.get(k) != b.get(k)}


def create_db_engine(url: str) -> Engine:
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:":
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: the driver leaves transactions to the "begin" event below.
        engine = create_engine(url, connect_args={"timeout": 30, "isolation_level": None})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Connection) -> None:
            # A write transaction takes the write lock at its start, so two writers serialise instead
            # of failing midway; reads begin deferred and never wait for a writer (WAL).
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.get(WRITE_FLAG) else "BEGIN")

        engine.__dict__[_TURNS_KEY] = _WriterTurns(u.database)
        return engine
    if u.get_backend_name() == "postgresql" and u.get_driver_name() in ("", "psycopg2"):
        url = str(u.set(drivername="postgresql+psycopg"))
    return create_engine(url, pool_pre_ping=True)


class _WriterTurns:
    """Whose turn it is to write a SQLite database, among this process's threads (a lock) and the
    processes on this machine (``flock`` on ``<database>-writer.lock``).

    SQLite lets one writer in at a time and makes the others poll: a connection that finds the
    database locked sleeps 1, 2, 5, 10... ms and tries again, so under load (several web workers and
    their threads) writers wait for milliseconds after the lock is free and requests line up behind
    the sleeps. Taking turns here first hands the database over the moment the writer before
    commits; SQLite's own lock still guards everything (other programs, other machines' NFS).
    """

    def __init__(self, database: str | None) -> None:
        self.lock = threading.RLock()
        self.path = f"{database}-writer.lock" if database and database != ":memory:" else None
        self.fd: int | None = None
        self.depth = 0

    @contextmanager
    def turn(self) -> Iterator[None]:
        with self.lock:
            if self.path is None:
                yield
                return
            if self.fd is None:
                self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            if self.depth == 0:
                fcntl.flock(self.fd, fcntl.LOCK_EX)  # waits without polling; released on close or exit
            self.depth += 1
            try:
                yield
            finally:
                self.depth -= 1
                if self.depth == 0:
                    fcntl.flock(self.fd, fcntl.LOCK_UN)


_TURNS_KEY = "kefu_writer_turns"


@contextmanager
def writer_turn(engine: Engine) -> Iterator[None]:
    """Wait for this process's and machine's turn to write (SQLite; nothing to wait for elsewhere)."""
    turns = engine.dialect.name == "sqlite" and fcntl is not None and engine.__dict__.get(_TURNS_KEY)
    if not turns:
        yield
        return
    with turns.turn():
        yield


@contextmanager
def writing(engine: Engine) -> Iterator[Connection]:
    """``engine.begin()`` for a transaction that writes (on SQLite it takes the write lock first)."""
    with writer_turn(engine), engine.connect() as conn:
        conn.info[WRITE_FLAG] = True
        try:
            with conn.begin():
                yield conn
        finally:
            conn.info.pop(WRITE_FLAG, None)


def migrate(engine: Engine, script_location: Path = _MIGRATIONS) -> None:
    """Bring the database to the newest schema (Alembic ``upgrade head`` of ``script_location``)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    with writing(engine) as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


class Store:
    """Snippets, revisions, KB metadata and cached embeddings in one database."""

    def __init__(self, url: str = DEFAULT_DATABASE_URL, *, engine: Engine | None = None) -> None:
        self.url = url
        self.engine = engine or create_db_engine(url)
        migrate(self.engine)
        self._listeners: list[Callable[[int], None]] = []
        self._lock = threading.Lock()

    def close(self) -> None:
        self.engine.dispose()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    # -- listeners: in-process indexes update at once; other replicas poll the revision ------------

    def on_change(self, fn: Callable[[int], None]) -> None:
        self._listeners.append(fn)

    def _notify(self, revision: int) -> None:
        for fn in list(self._listeners):
            fn(revision)

    # -- reading ------------------------------------------------------------------------------

    def revision(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(t.kb_state.c.revision).where(t.kb_state.c.id == 1)).scalar_one())

    def get(self, snippet_id: str) -> Snippet:
        with self.engine.connect() as conn:
            s = self._get(conn, snippet_id)
        if s is None:
            raise NotFoundError(f"知识条目 {snippet_id} 不存在", f"snippet {snippet_id!r} does not exist")
        return s

    def find(self, snippet_id: str) -> Snippet | None:
        with self.engine.connect() as conn:
            return self._get(conn, snippet_id)

    def _get(self, conn: Connection, snippet_id: str) -> Snippet | None:
        row = conn.execute(select(t.snippets).where(t.snippets.c.id == snippet_id)).first()
        return _row_to_snippet(row) if row else None

    def list_snippets(
        self,
        *,
        kind: str | None = None,
        status: str | None = None,
        product: str | None = None,
        tag: str | None = None,
        query: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Snippet]:
        stmt = select(t.snippets).order_by(t.snippets.c.id)
        if kind:
            stmt = stmt.where(t.snippets.c.kind == kind)
        if status:
            stmt = stmt.where(t.snippets.c.status == status)
        if product:
            stmt = stmt.where(t.snippets.c.product == product)
        with self.engine.connect() as conn:
            rows = [_row_to_snippet(r) for r in conn.execute(stmt)]
        if tag:
            rows = [s for s in rows if tag in s.tags]
        if query:
            q = query.lower()
            rows = [s for s in rows if q in s.question.lower() or q in s.answer.lower() or q in s.id.lower()]
        return rows[offset : offset + limit if limit is not None else None]

    def all(self) -> list[Snippet]:
        return self.list_snippets()

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(t.snippets)).scalar_one())

    def history(self, snippet_id: str) -> list[Revision]:
        stmt = (
            select(t.snippet_revisions)
            .where(t.snippet_revisions.c.snippet_id == snippet_id)
            .order_by(t.snippet_revisions.c.id)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        if not rows:
            raise NotFoundError(
                f"知识条目 {snippet_id} 没有任何修订记录", f"snippet {snippet_id!r} has no history"
            )
        return [
            Revision(
                id=r.id,
                snippet_id=r.snippet_id,
                version=r.version,
                kb_revision=r.kb_revision,
                action=r.action,
                actor=r.actor,
                at=_aware(r.at) or _now(),
                data=json.loads(r.data) if r.data else None,
                changes=json.loads(r.changes),
            )
            for r in rows
        ]

    def changes_since(self, revision: int) -> Changes:
        """Ids touched after ``revision``: the deleted ones and the rest (to re-index)."""
        with self.engine.connect() as conn:
            until = int(conn.execute(select(t.kb_state.c.revision)).scalar_one())
            ids = {
                r[0]
                for r in conn.execute(
                    select(t.snippet_revisions.c.snippet_id).where(
                        t.snippet_revisions.c.kb_revision > revision
                    )
                )
            }
            present = (
                {r[0] for r in conn.execute(select(t.snippets.c.id).where(t.snippets.c.id.in_(ids)))}
                if ids
                else set()
            )
        return Changes(revision, until, frozenset(present), frozenset(ids - present))

    # -- writing ------------------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[tuple[Connection, int]]:
        """A write transaction with the next KB revision number, committed as one."""
        with writing(self.engine) as conn:
            # The UPDATE takes the row lock (PostgreSQL) / the write lock (SQLite), so revisions
            # are handed out one at a time and never reused.
            conn.execute(
                t.kb_state.update().where(t.kb_state.c.id == 1).values(revision=t.kb_state.c.revision + 1)
            )
            rev = int(conn.execute(select(t.kb_state.c.revision).where(t.kb_state.c.id == 1)).scalar_one())
            yield conn, rev
        self._notify(rev)

    def _record(
        self,
        conn: Connection,
        rev: int,
        action: str,
        actor: str,
        old: Snippet | None,
        new: Snippet | None,
        at: datetime,
    ) -> None:
        conn.execute(
            t.snippet_revisions.insert().values(
                snippet_id=(new or old).id,  # type: ignore[union-attr]
                version=new.version if new else (old.version + 1 if old else 0),
                kb_revision=rev,
                action=action,
                actor=actor,
                at=at,
                data=json.dumps(new.content(), ensure_ascii=False) if new else None,
                changes=json.dumps(_diff(old, new), ensure_ascii=False),
            )
        )

    def add(self, snippet: Snippet, *, actor: str) -> Snippet:
        snippet = clean_snippet(snippet)
        with self._write() as (conn, rev):
            if self._get(conn, snippet.id) is not None:
                raise ConflictError(
                    f"知识条目 {snippet.id} 已存在；请用 edit 修改它或换一个编号",
                    f"snippet {snippet.id!r} already exists; edit it or choose another id",
                )
            new = self._insert(conn, rev, snippet, actor)
        return new

    def _insert(
        self, conn: Connection, rev: int, snippet: Snippet, actor: str, action: str = "create"
    ) -> Snippet:
        at = _now()
        new = snippet.with_changes(version=1, updated_at=at, updated_by=actor)
        conn.execute(
            t.snippets.insert().values(
                id=new.id,
                version=1,
                kb_revision=rev,
                created_at=at,
                updated_at=at,
                updated_by=actor,
                **_row_values(new),
            )
        )
        self._record(conn, rev, action, actor, None, new, at)
        return new

    def update(
        self, snippet_id: str, changes: dict[str, Any], *, expected_version: int, actor: str
    ) -> Snippet:
        """Apply ``changes`` (content fields only) if the stored version is still ``expected_version``."""
        unknown = set(changes) - set(CONTENT_FIELDS)
        if unknown:
            raise ValidationError(
                f"不能修改这些字段: {', '.join(sorted(unknown))}",
                f"these fields cannot be edited: {sorted(unknown)}",
            )
        with self._write() as (conn, rev):
            old = self._require_version(conn, snippet_id, expected_version)
            new = clean_snippet(old.with_changes(**_coerce(changes)))
            if new.content_hash() == old.content_hash():
                return old
            return self._update(conn, rev, old, new, actor, "update")

    def _require_version(self, conn: Connection, snippet_id: str, expected_version: int) -> Snippet:
        old = self._get(conn, snippet_id)
        if old is None:
            raise NotFoundError(f"知识条目 {snippet_id} 不存在", f"snippet {snippet_id!r} does not exist")
        if old.version != expected_version:
            raise ConflictError(
                f"知识条目 {snippet_id} 已被 {old.updated_by} 修改（当前版本 {old.version}，你读取的是 {expected_version}）；"
                "请重新读取后再修改",
                f"snippet {snippet_id!r} was changed by {old.updated_by} (now version {old.version}, you read "
                f"{expected_version}); reload it and apply your change again",
                details={"current_version": old.version, "expected_version": expected_version},
            )
        return old

    def _update(
        self, conn: Connection, rev: int, old: Snippet, new: Snippet, actor: str, action: str
    ) -> Snippet:
        at = _now()
        new = new.with_changes(version=old.version + 1, updated_at=at, updated_by=actor)
        result = conn.execute(
            t.snippets.update()
            .where(t.snippets.c.id == old.id, t.snippets.c.version == old.version)
            .values(version=new.version, kb_revision=rev, updated_at=at, updated_by=actor, **_row_values(new))
        )
        if result.rowcount != 1:  # someone else committed between our read and this write
            raise ConflictError(
                f"知识条目 {old.id} 刚被别人修改；请重新读取后再修改",
                f"snippet {old.id!r} was changed concurrently; reload it and try again",
            )
        self._record(conn, rev, action, actor, old, new, at)
        return new

    def set_status(self, snippet_id: str, status: str, *, expected_version: int, actor: str) -> Snippet:
        return self.update(snippet_id, {"status": status}, expected_version=expected_version, actor=actor)

    def delete(self, snippet_id: str, *, expected_version: int, actor: str) -> None:
        with self._write() as (conn, rev):
            old = self._require_version(conn, snippet_id, expected_version)
            conn.execute(
                t.snippets.delete().where(t.snippets.c.id == snippet_id, t.snippets.c.version == old.version)
            )
            self._record(conn, rev, "delete", actor, old, None, _now())

    def import_snippets(
        self, items: Sequence[Snippet], *, actor: str, progress: Callable[[int], None] | None = None
    ) -> ImportReport:
        """Create or update every snippet in one transaction; unchanged ones (same content hash) are skipped."""
        items = [clean_snippet(s) for s in items]
        dupes = sorted(i for i, n in Counter(s.id for s in items).items() if n > 1)
        if dupes:
            raise ValidationError(f"编号重复：{', '.join(dupes)}", f"duplicate ids: {', '.join(dupes)}")
        report = ImportReport()
        if not items:
            return report
        ids = [s.id for s in items]
        with self.engine.connect() as conn:
            existing_hashes = dict(
                conn.execute(
                    select(t.snippets.c.id, t.snippets.c.content_hash).where(t.snippets.c.id.in_(ids))
                ).all()
            )
        if all(existing_hashes.get(s.id) == s.content_hash() for s in items):
            report.unchanged = ids
            report.kb_revision = self.revision()
            if progress:
                progress(len(items))
            return report
        with self._write() as (conn, rev):
            for s in items:
                old = self._get(conn, s.id)
                if old is None:
                    self._insert(conn, rev, s, actor, action="import")
                    report.created.append(s.id)
                elif old.content_hash() == s.content_hash():
                    report.unchanged.append(s.id)
                else:
                    self._update(conn, rev, old, s, actor, "import")
                    report.updated.append(s.id)
                if progress:
                    progress(1)
            report.kb_revision = rev
        return report

    # -- metadata and cached embeddings ----------------------------------------------------------

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        with self.engine.connect() as conn:
            v = conn.execute(select(t.kb_meta.c.value).where(t.kb_meta.c.key == key)).scalar_one_or_none()
        return default if v is None else str(v)

    def set_meta(self, key: str, value: str) -> None:
        with writing(self.engine) as conn:
            updated = conn.execute(
                t.kb_meta.update().where(t.kb_meta.c.key == key).values(value=value)
            ).rowcount
            if not updated:
                conn.execute(t.kb_meta.insert().values(key=key, value=value))

    def set_meta_many(self, values: dict[str, str], *, bump_revision: bool = False) -> int:
        """Set several keys in one transaction; ``bump_revision`` also advances the KB revision, so
        that every replica (which follows the revision) notices, e.g. a switch of the active model."""
        if not bump_revision:
            with writing(self.engine) as conn:
                for key, value in values.items():
                    self._put_meta(conn, key, value)
            return self.revision()
        with self._write() as (conn, rev):
            for key, value in values.items():
                self._put_meta(conn, key, value)
        return rev

    @staticmethod
    def _put_meta(conn: Connection, key: str, value: str) -> None:
        if not conn.execute(t.kb_meta.update().where(t.kb_meta.c.key == key).values(value=value)).rowcount:
            conn.execute(t.kb_meta.insert().values(key=key, value=value))

    def compare_and_set_meta(self, key: str, expected: str | None, value: str) -> bool:
        """Set ``key`` only if it still holds ``expected`` (None: absent); True if this call set it.
        Replicas use it to claim a job (automatic re-tuning) exactly once."""
        if expected is None:
            try:
                with writing(self.engine) as conn:
                    if conn.execute(select(t.kb_meta.c.key).where(t.kb_meta.c.key == key)).first():
                        return False
                    conn.execute(t.kb_meta.insert().values(key=key, value=value))
                return True
            except IntegrityError:  # another replica inserted it first
                return False
        with writing(self.engine) as conn:
            n = conn.execute(
                t.kb_meta.update()
                .where(t.kb_meta.c.key == key, t.kb_meta.c.value == expected)
                .values(value=value)
            ).rowcount
            return bool(n)

    def cached_vectors(self, model_id: str, hashes: Iterable[str]) -> dict[str, np.ndarray]:
        wanted = list(set(hashes))
        out: dict[str, np.ndarray] = {}
        with self.engine.connect() as conn:
            for i in range(0, len(wanted), 500):
                chunk = wanted[i : i + 500]
                stmt = select(t.embeddings.c.text_hash, t.embeddings.c.vector).where(
                    t.embeddings.c.model_id == model_id, t.embeddings.c.text_hash.in_(chunk)
                )
                for h, blob in conn.execute(stmt):
                    out[h] = np.frombuffer(blob, dtype=np.float32)
        return out

    def store_vectors(self, model_id: str, vectors: dict[str, np.ndarray]) -> None:
        if not vectors:
            return
        have = set(self.cached_vectors(model_id, vectors))
        rows = [
            {
                "model_id": model_id,
                "text_hash": h,
                "dim": int(v.shape[0]),
                "vector": v.astype(np.float32).tobytes(),
            }
            for h, v in sorted(vectors.items())
            if h not in have
        ]
        if rows:
            # Replicas that start together on a new database embed the same texts at the same time:
            # a row another one stored since the check above is the same vector, so it is skipped.
            # Rows go in key order, so that two such inserts on PostgreSQL wait for each other
            # instead of deadlocking (each holding a key the other needs).
            with writing(self.engine) as conn:
                conn.execute(_insert_skipping_existing(conn, t.embeddings), rows)


def _insert_skipping_existing(conn: Connection, table: Table) -> Any:
    """INSERT that leaves rows whose primary key exists alone (ON CONFLICT DO NOTHING)."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if conn.dialect.name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    return table.insert()  # other databases: a concurrent duplicate fails as before


def _coerce(changes: dict[str, Any]) -> dict[str, Any]:
    """Accept the JSONL interchange types for an update (lists, ISO dates) and make Snippet values."""
    out = dict(changes)
    for k in ("similar_questions", "tags"):
        if k in out and out[k] is not None:
            if isinstance(out[k], str) or not isinstance(out[k], list | tuple):
                raise ValidationError(f"字段 {k} 必须是字符串列表", f"field {k!r} must be a list of strings")
            out[k] = tuple(out[k])
    for k in ("valid_from", "valid_to"):
        if isinstance(out.get(k), str):
            try:
                out[k] = date.fromisoformat(out[k])
            except ValueError as e:
                raise ValidationError(
                    f"字段 {k} 不是有效日期（应为 YYYY-MM-DD）", f"field {k!r} is not a date (YYYY-MM-DD)"
                ) from e
    if "kind" in out and out["kind"] not in KINDS:
        raise ValidationError(f"类型必须是 {', '.join(KINDS)} 之一", f"kind must be one of {KINDS}")
    if "status" in out and out["status"] not in STATUSES:
        raise ValidationError(f"状态必须是 {', '.join(STATUSES)} 之一", f"status must be one of {STATUSES}")
    return out
