"""realtime_events.idempotency_key: a retried publish finds its first event

A publisher may give a key (a form's one-time token, an Idempotency-Key header); the unique
index on (stream, idempotency_key) makes a second publish with it store nothing. NULL keys,
which most events have, never collide.

Revision ID: a2b0c0000001
Revises: f1a0a0000001
"""
from alembic import op
import sqlalchemy as sa


revision = 'a2b0c0000001'
down_revision = 'f1a0a0000001'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('realtime_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('idempotency_key', sa.String(length=128), nullable=True))
        batch_op.create_index('uq_realtime_events_stream_key', ['stream', 'idempotency_key'],
                              unique=True)


def downgrade():
    with op.batch_alter_table('realtime_events', schema=None) as batch_op:
        batch_op.drop_index('uq_realtime_events_stream_key')
        batch_op.drop_column('idempotency_key')
