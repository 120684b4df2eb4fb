"""presign_revocations, damaged_pieces

An account can revoke every presigned URL it signed; damage is recorded per piece of a copy instead of
marking the whole copy corrupt. Copies marked corrupt before keep that state until
`storage-admin verify` checks them piece by piece.

Revision ID: 0010
Revises: 0005
Create Date: 2026-12-02 06:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'presign_revocations',
        sa.Column('account', sa.String(length=255), nullable=False),
        sa.Column('revoked_before_us', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('account', name=op.f('pk_presign_revocations')),
    )
    op.create_table(
        'damaged_pieces',
        sa.Column('copy_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('piece_index', sa.Integer(), nullable=False),
        sa.Column('reason', sa.String(length=16), nullable=False),
        sa.Column('detected_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['copy_id'], ['file_copies.id'], name=op.f('fk_damaged_pieces_copy_id_file_copies'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('copy_id', 'piece_index', name=op.f('pk_damaged_pieces')),
    )


def downgrade() -> None:
    op.drop_table('damaged_pieces')
    op.drop_table('presign_revocations')
