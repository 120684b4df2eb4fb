"""files.block_hash: the hash the block digests were made with

Files stored until now have SHA-256 block digests and keep them ('sha256', the column's server
default); new uploads record 'blake3' (storage_core/integrity.py).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 16:45:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('files', schema=None) as batch_op:
        batch_op.add_column(sa.Column('block_hash', sa.String(length=16), server_default='sha256', nullable=False))


def downgrade() -> None:
    # files whose blocks were hashed with BLAKE3 cannot be verified after this: refuse rather than
    # leave digests that every read would take for corruption
    files = sa.table('files', sa.column('block_hash', sa.String))
    count = op.get_bind().execute(sa.select(sa.func.count()).select_from(files)
                                  .where(files.c.block_hash != 'sha256')).scalar()
    if count:
        raise RuntimeError(f"{count} files have non-sha256 block digests; downgrading would make them unreadable")
    with op.batch_alter_table('files', schema=None) as batch_op:
        batch_op.drop_column('block_hash')
