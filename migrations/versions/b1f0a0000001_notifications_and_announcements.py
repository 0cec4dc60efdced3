"""notifications and announcements

Revision ID: b1f0a0000001
Revises: e715eb63202c
"""
from alembic import op
import sqlalchemy as sa


revision = 'b1f0a0000001'
down_revision = 'e715eb63202c'
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
