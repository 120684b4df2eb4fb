"""nearline tier and restore cache: location access and purpose, cached copies, restore jobs, cache leases, events

Additive only: existing locations become online storage locations, existing copies keep their states.

Revision ID: 0007
Revises: 0010
Create Date: 2026-12-03 09:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0010'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    with op.batch_alter_table('storage_locations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('access', sa.String(length=8), server_default='online', nullable=False))
        batch_op.add_column(sa.Column('purpose', sa.String(length=8), server_default='storage', nullable=False))
        batch_op.create_check_constraint(op.f('ck_storage_locations_access'), "access IN ('online', 'nearline')")
        batch_op.create_check_constraint(op.f('ck_storage_locations_purpose'), "purpose IN ('storage', 'cache')")
        batch_op.create_check_constraint(op.f('ck_storage_locations_cache_online'),
                                         "purpose <> 'cache' OR access = 'online'")

    with op.batch_alter_table('file_copies', schema=None) as batch_op:
        batch_op.add_column(sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('last_read_at', sa.DateTime(timezone=True), nullable=True))

    op.create_table('restore_jobs',
    sa.Column('id', BigId, nullable=False),
    sa.Column('checksum', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=8), nullable=False),
    sa.Column('hours', sa.Integer(), nullable=False),
    sa.Column('requested_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('eta', sa.DateTime(timezone=True), nullable=True),
    sa.Column('waiting_since', sa.DateTime(timezone=True), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('cache_copy_id', BigId, nullable=True),
    sa.Column('lease_owner', sa.String(length=128), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('error', sa.String(length=1000), nullable=True),
    sa.CheckConstraint("state IN ('queued', 'running', 'done', 'failed')", name=op.f('ck_restore_jobs_state')),
    sa.ForeignKeyConstraint(['cache_copy_id'], ['file_copies.id'],
                            name=op.f('fk_restore_jobs_cache_copy_id_file_copies'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['checksum'], ['files.checksum'],
                            name=op.f('fk_restore_jobs_checksum_files'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_restore_jobs')),
    sa.UniqueConstraint('checksum', name=op.f('uq_restore_jobs_checksum'))
    )
    with op.batch_alter_table('restore_jobs', schema=None) as batch_op:
        batch_op.create_index('ix_restore_jobs_due', ['state', 'next_attempt_at'], unique=False)

    op.create_table('cache_leases',
    sa.Column('id', BigId, nullable=False),
    sa.Column('copy_id', BigId, nullable=False),
    sa.Column('acquired_us', sa.BigInteger(), nullable=False),
    sa.Column('expires_us', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['copy_id'], ['file_copies.id'],
                            name=op.f('fk_cache_leases_copy_id_file_copies'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_cache_leases'))
    )
    with op.batch_alter_table('cache_leases', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_cache_leases_copy_id'), ['copy_id'], unique=False)

    op.create_table('events',
    sa.Column('id', BigId, nullable=False),
    sa.Column('type', sa.String(length=32), nullable=False),
    sa.Column('checksum', sa.String(length=64), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('lease_owner', sa.String(length=128), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.String(length=1000), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_events'))
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index('ix_events_due', ['delivered_at', 'next_attempt_at'], unique=False)


def downgrade() -> None:
    # cached copies are restored copies of nearline files: without the tier they would pass for stored ones
    op.execute("DELETE FROM file_copies WHERE state = 'cached'")
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index('ix_events_due')
    op.drop_table('events')
    with op.batch_alter_table('cache_leases', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_cache_leases_copy_id'))
    op.drop_table('cache_leases')
    with op.batch_alter_table('restore_jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_restore_jobs_due')
    op.drop_table('restore_jobs')
    with op.batch_alter_table('file_copies', schema=None) as batch_op:
        batch_op.drop_column('last_read_at')
        batch_op.drop_column('expires_at')
    with op.batch_alter_table('storage_locations', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_storage_locations_cache_online'), type_='check')
        batch_op.drop_constraint(op.f('ck_storage_locations_purpose'), type_='check')
        batch_op.drop_constraint(op.f('ck_storage_locations_access'), type_='check')
        batch_op.drop_column('purpose')
        batch_op.drop_column('access')
