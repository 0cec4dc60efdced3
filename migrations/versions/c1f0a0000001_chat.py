"""chat rooms, members and messages

Revision ID: c1f0a0000001
Revises: b1f0a0000001
"""
from alembic import op
import sqlalchemy as sa


revision = 'c1f0a0000001'
down_revision = 'b1f0a0000001'
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
