"""approvals and notifications: fw_approval_waiting (who a pending approval waits on), approval levels,
per-language notification messages, per-user settings (fw_user_setting)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 01:15:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _json() -> sa.types.TypeEngine:
    from sqlalchemy.dialects.postgresql import JSONB
    return sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    op.create_table(
        "fw_approval_waiting",
        sa.Column("approval_id", sa.Integer(), sa.ForeignKey("fw_approval.id", ondelete="CASCADE"), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("approval_id", "user_id"),
    )
    op.create_index("ix_fw_approval_waiting_user", "fw_approval_waiting", ["user_id"])
    op.create_table(
        "fw_user_setting",
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("fw_user.id", ondelete="CASCADE"), nullable=False),
        sa.Column("key", sa.String(length=63), nullable=False),
        sa.Column("value", _json(), nullable=True),
        sa.PrimaryKeyConstraint("user_id", "key"),
    )
    with op.batch_alter_table("fw_approval") as batch:
        batch.add_column(sa.Column("level", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("levels", _json(), nullable=True))
        batch.add_column(sa.Column("titles", _json(), nullable=True))
        batch.add_column(sa.Column("requested_by", sa.Integer(), nullable=True))
        batch.create_index("ix_fw_approval_requested_by", ["requested_by"])
    with op.batch_alter_table("fw_notification") as batch:
        batch.add_column(sa.Column("message", _json(), nullable=True))
    # the approvers still to decide on approvals pending before this migration
    conn = op.get_bind()
    a = sa.table("fw_approval", sa.column("id", sa.Integer()), sa.column("status", sa.String()),
                 sa.column("approvers", _json()))
    d = sa.table("fw_approval_decision", sa.column("approval_id", sa.Integer()), sa.column("user_id", sa.Integer()))
    w = sa.table("fw_approval_waiting", sa.column("approval_id", sa.Integer()), sa.column("user_id", sa.Integer()))
    decided = {(r[0], r[1]) for r in conn.execute(sa.select(d.c.approval_id, d.c.user_id))}
    rows = [{"approval_id": r.id, "user_id": int(u)}
            for r in conn.execute(sa.select(a.c.id, a.c.approvers).where(a.c.status == "pending"))
            for u in sorted(set(r.approvers or [])) if (r.id, u) not in decided]
    if rows:
        conn.execute(sa.insert(w), rows)


def downgrade() -> None:
    with op.batch_alter_table("fw_notification") as batch:
        batch.drop_column("message")
    with op.batch_alter_table("fw_approval") as batch:
        batch.drop_index("ix_fw_approval_requested_by")
        batch.drop_column("requested_by")
        batch.drop_column("titles")
        batch.drop_column("levels")
        batch.drop_column("level")
    op.drop_table("fw_user_setting")
    op.drop_index("ix_fw_approval_waiting_user", table_name="fw_approval_waiting")
    op.drop_table("fw_approval_waiting")
