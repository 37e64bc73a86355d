"""model templates, and the template a card was made from

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "model_template",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("fixed", sa.JSON(), nullable=False),
        sa.Column("creation_schema", sa.JSON(), nullable=False),
        sa.Column("request_schema", sa.JSON(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_template")),
        sa.UniqueConstraint("name", name=op.f("uq_model_template_name")),
    )
    with op.batch_alter_table("model_card", schema=None) as batch_op:
        batch_op.add_column(sa.Column("template_id", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column(
                "template_name",
                sqlmodel.sql.sqltypes.AutoString(length=200),
                nullable=False,
                server_default="",
            )
        )
        batch_op.create_index(
            batch_op.f("ix_model_card_template_id"), ["template_id"], unique=False
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_model_card_template_id_model_template"),
            "model_template",
            ["template_id"],
            ["id"],
            ondelete="SET NULL",
        )


def downgrade() -> None:
    with op.batch_alter_table("model_card", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_model_card_template_id_model_template"), type_="foreignkey"
        )
        batch_op.drop_index(batch_op.f("ix_model_card_template_id"))
        batch_op.drop_column("template_name")
        batch_op.drop_column("template_id")
    op.drop_table("model_template")
