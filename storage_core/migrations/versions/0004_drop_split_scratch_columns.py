"""bucket_traffic: drop the scratch columns of the SQL quota split

The split of a charge is computed by storage_core.accounting from the locked month row, on every
database, so the conditional UPDATE no longer returns it through last_*_part columns.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 04:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

COLUMNS = ('last_charged_part', 'last_monthly_free_part', 'last_free_part')


def upgrade() -> None:
    with op.batch_alter_table('bucket_traffic', schema=None) as batch_op:
        for name in COLUMNS:
            batch_op.drop_column(name)


def downgrade() -> None:
    with op.batch_alter_table('bucket_traffic', schema=None) as batch_op:
        for name in COLUMNS:
            batch_op.add_column(sa.Column(name, sa.BigInteger(), server_default='0', nullable=False))
