"""Hot statements run on the DBAPI cursor: compiled by SQLAlchemy once per dialect, then executed
without its per-call machinery.

SQLAlchemy Core spends 20 to 70 µs of Python on every execution (cache key, execution context, result
set-up), and recording one suggestion takes about eight statements: most of the time a suggestion
spends in storage (docs/benchmarks.md, "Suggestion service"). A :class:`DirectStatement` is compiled
once per dialect and executed on the raw cursor of a SQLAlchemy connection, inside that connection's
transaction, with SQLAlchemy's own bind and result processors for each column: what it stores is what
Core would store (SQLite keeps datetimes as text and booleans as 0/1) and what it reads comes back as
Core would return it. Everything else keeps using Core.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Connection, Table, bindparam, select
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement, ColumnElement, Select
from sqlalchemy.sql.compiler import SQLCompiler

_Processor = Callable[[Any], Any] | None


@dataclass
class _Compiled:
    sql: str
    positional: bool
    binds: tuple[str, ...]  # the bind names, in the order of the positional parameters
    fixed: dict[str, Any]  # the values of binds the statement itself holds (``.values(status="open")``)
    bind_processors: tuple[_Processor, ...]
    columns: tuple[ColumnElement[Any], ...]  # the result columns (selects)
    #: Made at the first fetch: some drivers' processors depend on the column type the cursor reports.
    result_processors: tuple[_Processor, ...] | None = None


def _scalar_default(col: Column[Any]) -> Any:
    d = col.default
    if d is None:
        return None
    if not getattr(d, "is_scalar", False):
        raise ValueError(f"{col.table.name}.{col.name}: only scalar column defaults can be applied here")
    return d.arg  # type: ignore[attr-defined]


class DirectStatement:
    """One statement with named parameters; see the module's docstring."""

    def __init__(self, stmt: ClauseElement, *, defaults: Mapping[str, Any] | None = None) -> None:
        self.stmt = stmt
        self.defaults = dict(defaults or {})
        self._by_dialect: dict[str, _Compiled] = {}

    @classmethod
    def insert(cls, table: Table) -> DirectStatement:
        """INSERT of every column but an autoincrementing key; a column left out of the values gets its
        scalar default, else NULL (as Core's insert would)."""
        cols = [c for c in table.columns if not (c.primary_key and c.autoincrement is True)]
        defaults = {c.name: _scalar_default(c) for c in cols}
        return cls(
            table.insert().values({c.name: bindparam(c.name, type_=c.type) for c in cols}), defaults=defaults
        )

    @classmethod
    def select_by(cls, table: Table, key: str, columns: Sequence[str] | None = None) -> DirectStatement:
        """SELECT ``columns`` (default: all) of the row whose ``key`` column equals the parameter ``key``."""
        cols = [table.c[n] for n in columns] if columns else list(table.columns)
        return cls(select(*cols).where(table.c[key] == bindparam(key, type_=table.c[key].type)))

    def _compiled(self, dialect: Dialect) -> _Compiled:
        c = self._by_dialect.get(dialect.name)
        if c is not None:
            return c
        compiled = self.stmt.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)
        binds = tuple(compiled.positiontup or ()) if dialect.positional else tuple(compiled.binds)
        bind_processors = tuple(
            compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in binds
        )
        fixed = {name: bp.effective_value for name, bp in compiled.binds.items() if not bp.required}
        columns = tuple(self.stmt.selected_columns) if isinstance(self.stmt, Select) else ()
        c = _Compiled(compiled.string, dialect.positional, binds, fixed, bind_processors, columns)
        self._by_dialect[dialect.name] = c
        return c

    def _run(self, conn: Connection, values: Mapping[str, Any]) -> tuple[_Compiled, Any]:
        c = self._compiled(conn.dialect)
        # a parameter the caller leaves out: the column's default (inserts), else the statement's own
        # value; a required one raises KeyError
        raw = [
            values[n] if n in values else self.defaults[n] if n in self.defaults else c.fixed[n]
            for n in c.binds
        ]
        processed = [
            p(v) if p is not None and v is not None else v
            for p, v in zip(c.bind_processors, raw, strict=True)
        ]
        params: Any = tuple(processed) if c.positional else dict(zip(c.binds, processed, strict=True))
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        cursor.execute(c.sql, params)
        return c, cursor

    def execute(self, conn: Connection, values: Mapping[str, Any]) -> int:
        """Run the statement in ``conn``'s transaction; the number of rows it changed."""
        _, cursor = self._run(conn, values)
        try:
            return int(cursor.rowcount)
        finally:
            cursor.close()

    def first(self, conn: Connection, values: Mapping[str, Any]) -> dict[str, Any] | None:
        """The first row of a select, as column name -> value (None: no row)."""
        c, cursor = self._run(conn, values)
        try:
            row = cursor.fetchone()
            if c.result_processors is None:
                dialect = conn.dialect
                c.result_processors = tuple(
                    col.type.dialect_impl(dialect).result_processor(dialect, desc[1])
                    for col, desc in zip(c.columns, cursor.description, strict=True)
                )
        finally:
            cursor.close()
        if row is None:
            return None
        return {
            str(col.key): p(v) if p is not None else v
            for col, p, v in zip(c.columns, c.result_processors, row, strict=True)
        }
