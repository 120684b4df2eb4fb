"""Query plans of the statements a service issues: what keeps a listing page flat however deep its cursor.

``statements`` records what the engine sends while a block runs: the exact SQL and parameters the service
built (SQLAlchemy compiles them; nothing is copied by hand). ``explain`` asks the same database for the
plan of one of them, and what executing it cost:

- PostgreSQL: ``EXPLAIN (ANALYZE, BUFFERS)`` with sequential scans and bitmap scans off for that transaction
  (a test table of a few thousand rows would otherwise be read whole or through a bitmap, which says
  nothing about the index bounds production uses); the cost is the buffers the plan touched;
- SQLite: ``EXPLAIN QUERY PLAN`` (``SEARCH t USING INDEX i (a=? AND b>?)``: the constraints in the
  parentheses bound the index range; anything else is checked row by row and does not show); the cost is
  the virtual machine instructions executing the statement took (a progress handler counts them), since
  SQLite shows no filter.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Engine, event

PROGRESS_STEP = 50  # SQLite: virtual machine instructions per progress callback


@dataclasses.dataclass(frozen=True)
class Statement:
    sql: str
    parameters: Any


@dataclasses.dataclass(frozen=True)
class Plan:
    dialect: str
    text: str
    cost: int  # PostgreSQL: shared buffers hit or read; SQLite: VM instructions (to PROGRESS_STEP)

    def index_scans(self, index: str) -> list[str]:
        """The conditions bounding each scan of ``index``: PostgreSQL's Index Cond lines of the scans of it,
        SQLite's constraints of ``SEARCH ... USING [COVERING] INDEX index (...)``."""
        if self.dialect == "sqlite":
            return re.findall(rf"USING (?:COVERING )?INDEX {re.escape(index)} \((.*)\)", self.text)
        lines = self.text.splitlines()
        conditions = []
        for at, line in enumerate(lines):
            if re.search(rf"Index (?:Only )?Scan(?: Backward)? using {re.escape(index)} on", line):
                for detail in lines[at + 1:]:
                    if "->" in detail:  # the next node: this scan had no Index Cond
                        break
                    if "Index Cond:" in detail:
                        conditions.append(detail.split("Index Cond:", 1)[1].strip())
                        break
        return conditions

    def filters(self) -> list[str]:
        """Conditions checked row by row after the scan (PostgreSQL's Filter lines; SQLite shows none)."""
        return [line.split("Filter:", 1)[1].strip() for line in self.text.splitlines() if "Filter:" in line]


@contextlib.contextmanager
def statements(engine: Engine | type[Engine], table: str) -> Iterator[list[Statement]]:
    """The statements reading ``table`` (``FROM table``) that the engine executes inside the block (every
    engine's, given the ``Engine`` class: a service may read on its autocommit engine)."""
    seen: list[Statement] = []
    pattern = re.compile(rf"\bFROM {re.escape(table)}\b")

    def record(_conn: Any, _cursor: Any, sql: str, parameters: Any, _context: Any, _many: bool) -> None:
        if pattern.search(sql):
            seen.append(Statement(sql, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def index_on(engine: Engine, table: str, *columns: str) -> str:
    """The name of the index of ``table`` on exactly ``columns`` (in order): a unique constraint's index is
    named after the constraint on PostgreSQL, ``sqlite_autoindex_<table>_<n>`` on SQLite."""
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            found = {name: re.search(r"\((.*)\)", definition).group(1).split(", ") for name, definition in
                     connection.exec_driver_sql("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s",
                                                (table,))}
        else:
            found = {row[1]: [info[2] for info in connection.exec_driver_sql(f"PRAGMA index_info('{row[1]}')")]
                     for row in connection.exec_driver_sql(f"PRAGMA index_list('{table}')")}
    names = [name for name, indexed in found.items() if indexed == list(columns)]
    if len(names) != 1:
        raise LookupError(f"no single index on {table} ({', '.join(columns)}): {found}")
    return names[0]


def explain(engine: Engine, statement: Statement) -> Plan:
    """The plan of ``statement`` on ``engine``'s database, and what running it cost."""
    with engine.connect() as connection:
        raw = connection.connection.dbapi_connection
        cursor = raw.cursor()
        try:
            if engine.dialect.name == "postgresql":
                cursor.execute("SET LOCAL enable_seqscan = off")
                cursor.execute("SET LOCAL enable_bitmapscan = off")
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + statement.sql, statement.parameters)
                text = "\n".join(row[0] for row in cursor.fetchall())
                first = re.search(r"Buffers: shared(?: hit=(\d+))?(?: read=(\d+))?", text)
                cost = sum(int(n) for n in first.groups() if n) if first else 0
                raw.rollback()
                return Plan("postgresql", text, cost)
            cursor.execute("EXPLAIN QUERY PLAN " + statement.sql, statement.parameters)
            text = "\n".join(str(row[-1]) for row in cursor.fetchall())
            steps = [0]

            def count() -> int:
                steps[0] += 1
                return 0

            raw.set_progress_handler(count, PROGRESS_STEP)
            try:
                cursor.execute(statement.sql, statement.parameters).fetchall()
            finally:
                raw.set_progress_handler(None, PROGRESS_STEP)
            return Plan("sqlite", text, steps[0] * PROGRESS_STEP)
        finally:
            cursor.close()
