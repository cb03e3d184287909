"""automation engine tables: runs, steps, deliveries, firings, notifications, approvals, hook tokens

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _json() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _big() -> sa.types.TypeEngine:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "fw_automation_run",
        sa.Column("id", _big(), autoincrement=True, nullable=False),
        sa.Column("app_id", sa.Integer(), nullable=False),
        sa.Column("automation_id", sa.Integer(), nullable=False),
        sa.Column("automation_key", sa.String(length=63), nullable=False),
        sa.Column("trigger", sa.String(length=30), nullable=False),
        sa.Column("table_id", sa.Integer(), nullable=True),
        sa.Column("record_id", sa.Integer(), nullable=True),
        sa.Column("outbox_id", sa.BigInteger(), nullable=True),
        sa.Column("firing_key", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("depth", sa.Integer(), nullable=False),
        sa.Column("state", _json(), nullable=True),
        sa.Column("resume_at", sa.DateTime(), nullable=True),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_fw_automation_run_rule", "fw_automation_run", ["automation_id", "id"])
    op.create_index("ix_fw_automation_run_resume", "fw_automation_run", ["status", "resume_at"])

    op.create_table(
        "fw_automation_step",
        sa.Column("id", _big(), autoincrement=True, nullable=False),
        sa.Column("run_id", _big(), nullable=False),
        sa.Column("path", sa.String(length=100), nullable=False),
        sa.Column("action", sa.String(length=30), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("output", _json(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.Column("delivery_id", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["fw_automation_run.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_fw_automation_step_run_id", "fw_automation_step", ["run_id"])

    op.create_table(
        "fw_delivery",
        sa.Column("id", _big(), autoincrement=True, nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("request", _json(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("locked_by", sa.String(length=64), nullable=True),
        sa.Column("locked_until", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.Column("response", _json(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("idempotency_key"),
    )
    op.create_index("ix_fw_delivery_run_id", "fw_delivery", ["run_id"])
    op.create_index("ix_fw_delivery_pending", "fw_delivery", ["status", "next_attempt_at"])

    op.create_table(
        "fw_firing",
        sa.Column("id", _big(), autoincrement=True, nullable=False),
        sa.Column("automation_id", sa.Integer(), nullable=False),
        sa.Column("firing_key", sa.String(length=200), nullable=False),
        sa.Column("due_at", sa.DateTime(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("firing_key"),
    )
    op.create_table(
        "fw_automation_state",
        sa.Column("automation_id", sa.Integer(), nullable=False),
        sa.Column("last_tick", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("automation_id"),
    )
    op.create_table(
        "fw_assign_state",
        sa.Column("automation_id", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(length=100), nullable=False),
        sa.Column("last_user_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("automation_id", "path"),
    )
    op.create_table(
        "fw_notification",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=30), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("link", _json(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("read_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["fw_user.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_fw_notification_user", "fw_notification", ["user_id", "id"])

    op.create_table(
        "fw_approval",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.Column("automation_id", sa.Integer(), nullable=False),
        sa.Column("app_id", sa.Integer(), nullable=False),
        sa.Column("table_id", sa.Integer(), nullable=True),
        sa.Column("record_id", sa.Integer(), nullable=True),
        sa.Column("path", sa.String(length=100), nullable=False),
        sa.Column("mode", sa.String(length=4), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("approvers", _json(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("decided_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_fw_approval_run_id", "fw_approval", ["run_id"])
    op.create_index("ix_fw_approval_record", "fw_approval", ["table_id", "record_id"])

    op.create_table(
        "fw_approval_decision",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("approval_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("decision", sa.String(length=10), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["approval_id"], ["fw_approval.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("approval_id", "user_id", name="uq_fw_approval_decision"),
    )
    op.create_table(
        "fw_hook_token",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("automation_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=12), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("automation_id"),
        sa.UniqueConstraint("token_hash"),
    )


def downgrade() -> None:
    op.drop_table("fw_hook_token")
    op.drop_table("fw_approval_decision")
    op.drop_index("ix_fw_approval_record", table_name="fw_approval")
    op.drop_index("ix_fw_approval_run_id", table_name="fw_approval")
    op.drop_table("fw_approval")
    op.drop_index("ix_fw_notification_user", table_name="fw_notification")
    op.drop_table("fw_notification")
    op.drop_table("fw_assign_state")
    op.drop_table("fw_automation_state")
    op.drop_table("fw_firing")
    op.drop_index("ix_fw_delivery_pending", table_name="fw_delivery")
    op.drop_index("ix_fw_delivery_run_id", table_name="fw_delivery")
    op.drop_table("fw_delivery")
    op.drop_index("ix_fw_automation_step_run_id", table_name="fw_automation_step")
    op.drop_table("fw_automation_step")
    op.drop_index("ix_fw_automation_run_resume", table_name="fw_automation_run")
    op.drop_index("ix_fw_automation_run_rule", table_name="fw_automation_run")
    op.drop_table("fw_automation_run")
