"""comments on records: fw_comment (who, what, the users it mentions, edited and deleted times)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 01:35:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _json() -> sa.types.TypeEngine:
    from sqlalchemy.dialects.postgresql import JSONB
    return sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    op.create_table(
        "fw_comment",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("table_id", sa.Integer(), nullable=False),
        sa.Column("record_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer()),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("mentions", _json()),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("edited_at", sa.DateTime()),
        sa.Column("deleted_at", sa.DateTime()),
    )
    op.create_index("ix_fw_comment_record", "fw_comment", ["table_id", "record_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_fw_comment_record", table_name="fw_comment")
    op.drop_table("fw_comment")
