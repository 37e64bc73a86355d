"""usage statistics: usage_event indexes by model and by provider over time

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 00:00:00

The Usage page aggregates a time window per model or per provider. (model_id, created_at)
replaces the single-column model_id index (its leading column serves those lookups too);
(provider_id, created_at) is new (provider_id had no index at all).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("usage_event", schema=None) as batch_op:
        batch_op.create_index(
            "ix_usage_event_model_id_created_at", ["model_id", "created_at"], unique=False
        )
        batch_op.create_index(
            "ix_usage_event_provider_id_created_at", ["provider_id", "created_at"], unique=False
        )
        batch_op.drop_index("ix_usage_event_model_id")


def downgrade() -> None:
    with op.batch_alter_table("usage_event", schema=None) as batch_op:
        batch_op.create_index("ix_usage_event_model_id", ["model_id"], unique=False)
        batch_op.drop_index("ix_usage_event_provider_id_created_at")
        batch_op.drop_index("ix_usage_event_model_id_created_at")
