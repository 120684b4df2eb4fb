"""SQLite: ids of objects, copies, read records and leases are never reused (AUTOINCREMENT)

SQLite gives a new row the largest rowid + 1, so an object replaced or deleted and made again took the id
of the one before: two objects shared one object_id in the read records, and a copy id held by a running
download could name another copy. PostgreSQL's sequences never go back: nothing changes there.

Revision ID: 0009
Revises: 0006
Create Date: 2026-12-02 06:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0006'
branch_labels = None
depends_on = None

TABLES = ('objects', 'file_copies', 'read_records', 'download_leases')


def _children(bind: sa.engine.Connection) -> list[tuple[str, str, list[str], list[dict]]]:
    """(table, column, primary key, rows) of every table with a foreign key into one of TABLES."""
    children = []
    for (table,) in bind.execute(sa.text("SELECT name FROM sqlite_master WHERE type = 'table'")).all():
        for fk in bind.execute(sa.text(f"PRAGMA foreign_key_list('{table}')")).mappings().all():
            if fk['table'] in TABLES:
                info = bind.execute(sa.text(f"PRAGMA table_info('{table}')")).mappings().all()
                key = [column['name'] for column in sorted(info, key=lambda c: c['pk']) if column['pk']]
                rows = [dict(row) for row in bind.execute(sa.text(f'SELECT * FROM "{table}"')).mappings().all()]
                children.append((table, fk['from'], key, rows))
    return children


def _recreate(autoincrement: bool) -> None:
    bind = op.get_bind()
    if bind.dialect.name != 'sqlite':
        return
    # Dropping an old table (foreign keys on, and PRAGMA foreign_keys cannot change inside the migration's
    # transaction) deletes its rows first, and with them, by ON DELETE CASCADE / SET NULL, what refers to
    # them (damaged pieces, cache leases, restore jobs' cached copies): keep those and put them back.
    children = _children(bind)
    for table in TABLES:
        # a copy of the table with the rows and their ids; sqlite_sequence starts at the largest id copied
        with op.batch_alter_table(table, recreate='always',
                                  table_kwargs={'sqlite_autoincrement': autoincrement}):
            pass
    for table, column, key, rows in children:
        for row in rows:
            where = ' AND '.join(f'"{k}" = :{k}' for k in key)
            updated = bind.execute(sa.text(f'UPDATE "{table}" SET "{column}" = :{column} WHERE {where}'), row)
            if updated.rowcount == 0:
                names = ', '.join(f'"{name}"' for name in row)
                bind.execute(sa.text(f'INSERT INTO "{table}" ({names}) VALUES ({", ".join(":" + n for n in row)})'),
                             row)


def upgrade() -> None:
    _recreate(True)


def downgrade() -> None:
    _recreate(False)
