"""chat: archived rooms, edited messages, client message ids, send and room budgets

Revision ID: c2c4a7e10001
Revises: d1f0a0000001
"""
import sqlalchemy as sa
from alembic import op

revision = 'c2c4a7e10001'
down_revision = 'd1f0a0000001'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('chat_rooms') as batch:
        batch.add_column(sa.Column('archived_at', sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('archived_by', sa.Integer(), nullable=True))
        batch.create_foreign_key('fk_chat_rooms_archived_by_users', 'users', ['archived_by'],
                                 ['id'], ondelete='SET NULL')
    with op.batch_alter_table('chat_messages') as batch:
        batch.add_column(sa.Column('client_id', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('edited_at', sa.DateTime(timezone=True), nullable=True))
        batch.create_unique_constraint('uq_chat_messages_user_client', ['user_id', 'client_id'])
    op.create_table(
        'chat_budgets',
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('action', sa.String(length=16), nullable=False),
        sa.Column('tokens', sa.Float(), nullable=False),
        sa.Column('updated_at', sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('user_id', 'action'),
    )


def downgrade():
    op.drop_table('chat_budgets')
    with op.batch_alter_table('chat_messages') as batch:
        batch.drop_constraint('uq_chat_messages_user_client', type_='unique')
        batch.drop_column('edited_at')
        batch.drop_column('client_id')
    with op.batch_alter_table('chat_rooms') as batch:
        batch.drop_constraint('fk_chat_rooms_archived_by_users', type_='foreignkey')
        batch.drop_column('archived_by')
        batch.drop_column('archived_at')
