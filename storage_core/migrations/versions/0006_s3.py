"""S3 door: access keys, multipart uploads and their parts, S3 ETags and representation headers of objects

Revision ID: 0006
Revises: 0007
Create Date: 2026-12-02 06:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('objects', schema=None) as batch_op:
        batch_op.add_column(sa.Column('s3_etag', sa.String(length=48), nullable=True))
        batch_op.add_column(sa.Column('content_encoding', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('content_disposition', sa.String(length=1024), nullable=True))
        batch_op.add_column(sa.Column('cache_control', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('user_metadata', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('checksums', sa.JSON(), nullable=True))

    op.create_table('access_keys',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('account', sa.String(length=255), nullable=False),
    sa.Column('roles', sa.JSON(), nullable=False),
    sa.Column('description', sa.String(length=255), nullable=True),
    sa.Column('sealed_secret', sa.String(length=255), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_access_keys'))
    )
    with op.batch_alter_table('access_keys', schema=None) as batch_op:
        batch_op.create_index('ix_access_keys_account', ['account'], unique=False)

    op.create_table('multipart_uploads',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('bucket_id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=1024), nullable=False),
    sa.Column('initiator', sa.String(length=255), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('object_metadata', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['bucket_id'], ['buckets.id'], name=op.f('fk_multipart_uploads_bucket_id_buckets'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_multipart_uploads'))
    )
    with op.batch_alter_table('multipart_uploads', schema=None) as batch_op:
        batch_op.create_index('ix_multipart_uploads_bucket_key', ['bucket_id', 'key', 'created_at'], unique=False)

    op.create_table('upload_parts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('upload_id', sa.String(length=32), nullable=False),
    sa.Column('part_number', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('md5', sa.String(length=32), nullable=False),
    sa.Column('piece_name', sa.String(length=64), nullable=False),
    sa.Column('piece_size', sa.BigInteger(), nullable=False),
    sa.Column('block_size', sa.Integer(), nullable=False),
    sa.Column('block_hash', sa.String(length=16), nullable=False),
    sa.Column('block_digests', sa.LargeBinary(), nullable=False),
    sa.Column('checksums', sa.JSON(), nullable=False),
    sa.Column('location_ids', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['upload_id'], ['multipart_uploads.id'],
                            name=op.f('fk_upload_parts_upload_id_multipart_uploads'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_upload_parts')),
    sa.UniqueConstraint('piece_name', name=op.f('uq_upload_parts_piece_name'))
    )
    with op.batch_alter_table('upload_parts', schema=None) as batch_op:
        batch_op.create_index('ix_upload_parts_upload_number', ['upload_id', 'part_number'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('upload_parts', schema=None) as batch_op:
        batch_op.drop_index('ix_upload_parts_upload_number')
    op.drop_table('upload_parts')
    with op.batch_alter_table('multipart_uploads', schema=None) as batch_op:
        batch_op.drop_index('ix_multipart_uploads_bucket_key')
    op.drop_table('multipart_uploads')
    with op.batch_alter_table('access_keys', schema=None) as batch_op:
        batch_op.drop_index('ix_access_keys_account')
    op.drop_table('access_keys')
    with op.batch_alter_table('objects', schema=None) as batch_op:
        for column in ('checksums', 'user_metadata', 'cache_control', 'content_disposition', 'content_encoding',
                       's3_etag'):
            batch_op.drop_column(column)
