"""SQLite: ids of objects, copies, read records and leases are never reused (AUTOINCREMENT)

SQLite gives a new row the largest rowid + 1, so an object replaced or deleted and made again took the id
of the one before: two objects shared one object_id in the read records, and a copy id held by a running
download could name another copy. PostgreSQL's sequences never go back: nothing changes there.

Revision ID: 0009
Revises: 0010
Create Date: 2026-12-02 06:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0010'
branch_labels = None
depends_on = None

TABLES = ('objects', 'file_copies', 'read_records', 'download_leases')


def _recreate(autoincrement: bool) -> None:
    bind = op.get_bind()
    if bind.dialect.name != 'sqlite':
        return
    # Dropping the old file_copies (foreign keys on, and PRAGMA foreign_keys cannot change inside the
    # migration's transaction) deletes its rows first, and with them, by ON DELETE CASCADE, the damaged
    # pieces recorded against them: keep those and put them back.
    damaged = [dict(row._mapping) for row in bind.execute(sa.text('SELECT * FROM damaged_pieces'))]
    for table in TABLES:
        # a copy of the table with the rows and their ids; sqlite_sequence starts at the largest id copied
        with op.batch_alter_table(table, recreate='always',
                                  table_kwargs={'sqlite_autoincrement': autoincrement}):
            pass
    if damaged:
        columns = ', '.join(damaged[0])
        values = ', '.join(f':{name}' for name in damaged[0])
        bind.execute(sa.text(f'INSERT OR IGNORE INTO damaged_pieces ({columns}) VALUES ({values})'), damaged)


def upgrade() -> None:
    _recreate(True)


def downgrade() -> None:
    _recreate(False)
