"""announcements.updated_at, ended_at, retracted_at: admins edit, end and retract what they sent

Revision ID: f3b1a7c2d4e5
Revises: c2c4a7e10001
"""
from alembic import op
import sqlalchemy as sa


revision = 'f3b1a7c2d4e5'
down_revision = 'c2c4a7e10001'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('announcements', schema=None) as batch_op:
        batch_op.add_column(sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('retracted_at', sa.DateTime(timezone=True), nullable=True))


def downgrade():
    with op.batch_alter_table('announcements', schema=None) as batch_op:
        batch_op.drop_column('retracted_at')
        batch_op.drop_column('ended_at')
        batch_op.drop_column('updated_at')
