"""compare runs: message turns and votes

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 00:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.add_column(sa.Column("turn", sa.Integer(), nullable=False, server_default="0"))
    # Number the prompts of existing conversations: turn = how many user messages came before.
    op.execute(
        """
        UPDATE message SET turn = (
            SELECT COUNT(*) FROM message AS earlier
            WHERE earlier.conversation_id = message.conversation_id
              AND earlier.lane = message.lane
              AND earlier.role = 'user'
              AND earlier.id < message.id
        ) - CASE WHEN message.role = 'user' THEN 0 ELSE 1 END
        """
    )
    op.execute("UPDATE message SET turn = 0 WHERE turn < 0")
    op.create_table(
        "vote",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("conversation_id", sa.Integer(), nullable=False),
        sa.Column("turn", sa.Integer(), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("choice", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversation.id"],
            name=op.f("fk_vote_conversation_id_conversation"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["message.id"],
            name=op.f("fk_vote_message_id_message"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vote")),
    )
    with op.batch_alter_table("vote", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_vote_conversation_id"), ["conversation_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_vote_message_id"), ["message_id"], unique=False)


def downgrade() -> None:
    op.drop_table("vote")
    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.drop_column("turn")
