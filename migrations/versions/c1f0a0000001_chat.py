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
    op.create_table(
        'chat_rooms',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('created_by', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('dm_key', sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(['created_by'], ['users.id'], ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('dm_key'),
    )
    op.create_table(
        'chat_room_members',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('room_id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('joined_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('last_read_message_id', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['room_id'], ['chat_rooms.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('room_id', 'user_id', name='uq_chat_room_members_room_user'),
    )
    op.create_index('ix_chat_room_members_room_id', 'chat_room_members', ['room_id'])
    op.create_index('ix_chat_room_members_user_id', 'chat_room_members', ['user_id'])
    op.create_table(
        'chat_messages',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('room_id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=True),
        sa.Column('body', sa.Text(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('deleted_by', sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(['room_id'], ['chat_rooms.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['deleted_by'], ['users.id'], ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_chat_messages_room_id_id', 'chat_messages', ['room_id', 'id'])
    op.create_index('ix_chat_messages_user_created', 'chat_messages', ['user_id', 'created_at'])
    op.create_table(
        'chat_presence',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('room_id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('conn_id', sa.String(length=128), nullable=False),
        sa.Column('expires_at', sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('room_id', 'conn_id', name='uq_chat_presence_room_conn'),
    )
    op.create_index('ix_chat_presence_conn_id', 'chat_presence', ['conn_id'])
    op.create_index('ix_chat_presence_room_expires', 'chat_presence', ['room_id', 'expires_at'])


def downgrade():
    op.drop_index('ix_chat_presence_room_expires', table_name='chat_presence')
    op.drop_index('ix_chat_presence_conn_id', table_name='chat_presence')
    op.drop_table('chat_presence')
    op.drop_index('ix_chat_messages_user_created', table_name='chat_messages')
    op.drop_index('ix_chat_messages_room_id_id', table_name='chat_messages')
    op.drop_table('chat_messages')
    op.drop_index('ix_chat_room_members_user_id', table_name='chat_room_members')
    op.drop_index('ix_chat_room_members_room_id', table_name='chat_room_members')
    op.drop_table('chat_room_members')
    op.drop_table('chat_rooms')
