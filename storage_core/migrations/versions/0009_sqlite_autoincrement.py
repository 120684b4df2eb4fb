"""SQLite: ids of objects, copies, read records and leases are never reused (AUTOINCREMENT)

SQLite gives a new row the largest rowid + 1, so an object replaced or deleted and made again took the id
of the one before: two objects shared one object_id in the read records, and a copy id held by a running
download could name another copy. PostgreSQL's sequences never go back: nothing changes there.

Revision ID: 0009
Revises: 0005
Create Date: 2026-12-02 06:00:00
"""

from alembic import op


revision = '0009'
down_revision = '0005'
branch_labels = None
depends_on = None

TABLES = ('objects', 'file_copies', 'read_records', 'download_leases')


def _recreate(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != 'sqlite':
        return
    for table in TABLES:
        # a copy of the table with the rows and their ids; sqlite_sequence starts at the largest id copied
        with op.batch_alter_table(table, recreate='always',
                                  table_kwargs={'sqlite_autoincrement': autoincrement}):
            pass


def upgrade() -> None:
    _recreate(True)


def downgrade() -> None:
    _recreate(False)
