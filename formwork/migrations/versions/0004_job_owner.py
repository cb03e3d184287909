"""job owner: fw_job.owner names the process running a job (host:pid:token), so a restart can tell a job
whose process is gone from one still running

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 23:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("fw_job") as batch:
        batch.add_column(sa.Column("owner", sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("fw_job") as batch:
        batch.drop_column("owner")
