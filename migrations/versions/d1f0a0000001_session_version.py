"""users.session_version: logout and deactivation revoke every copy of a session

Revision ID: d1f0a0000001
Revises: c1f0a0000001
"""
from alembic import op
import sqlalchemy as sa


revision = 'd1f0a0000001'
down_revision = 'c1f0a0000001'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('session_version', sa.Integer(), nullable=False,
                                      server_default='0'))


def downgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('session_version')
