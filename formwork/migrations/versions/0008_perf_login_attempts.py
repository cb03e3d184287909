"""login attempts shared by every process (fw_login_attempt) and the auth version every auth write bumps

``fw_login_attempt`` holds one row per login-type attempt (key = the client address) for the sliding-window
limiter in ``formwork.runtime.ratelimit``, so two servers share one limit.

``fw_state.auth_version`` is bumped by database triggers on every write that can change who a request is
or what it may do: users (identity, activity, admin flag, team, password), teams, roles (the permission
documents), role membership, API tokens (revoked, expired, re-pointed, deleted) and sessions (deleted or
re-pointed); a user's display name too (pages show it for user fields from a per-process cache). Each
process caches a token's or session's answer in memory next to the auth version it was computed at and
reads the version once per request, so a change made by any process, the CLI or plain SQL is seen by
every other process on its next request. Triggers rather than application code: no write path can forget
the bump.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 04:15:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# (table, event, columns an UPDATE must touch to count); INSERT of tokens and sessions is left out on
# purpose: a new secret has nothing cached yet
TRIGGERS: list[tuple[str, str, tuple[str, ...]]] = [
    ("fw_user", "INSERT", ()),
    ("fw_user", "UPDATE", ("id", "username", "name", "active", "is_admin", "timezone", "locale", "team_id",
                           "password_hash")),
    ("fw_user", "DELETE", ()),
    ("fw_team", "INSERT", ()),
    ("fw_team", "UPDATE", ()),
    ("fw_team", "DELETE", ()),
    ("fw_role", "INSERT", ()),
    ("fw_role", "UPDATE", ()),
    ("fw_role", "DELETE", ()),
    ("fw_user_role", "INSERT", ()),
    ("fw_user_role", "UPDATE", ()),
    ("fw_user_role", "DELETE", ()),
    ("fw_api_token", "UPDATE", ("user_id", "token_hash", "expires_at", "revoked_at")),
    ("fw_api_token", "DELETE", ()),
    ("fw_session", "UPDATE", ("id", "user_id", "csrf_token")),
    ("fw_session", "DELETE", ()),
]

_BUMP = ("INSERT INTO fw_state (name, value) VALUES ('auth_version', 1) "
         "ON CONFLICT (name) DO UPDATE SET value = fw_state.value + 1")


def trigger_name(table: str, event: str) -> str:
    return f"{table}_auth_{event.lower()}"


def upgrade() -> None:
    op.create_table(
        "fw_login_attempt",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_fw_login_attempt_key", "fw_login_attempt", ["key", "at"])
    op.create_index("ix_fw_login_attempt_at", "fw_login_attempt", ["at"])
    sqlite = op.get_bind().dialect.name == "sqlite"
    if not sqlite:
        op.execute(f"CREATE OR REPLACE FUNCTION fw_bump_auth_version() RETURNS trigger LANGUAGE plpgsql AS $$ "
                   f"BEGIN {_BUMP}; RETURN NULL; END $$")
    for table, event, columns in TRIGGERS:
        what = f"UPDATE OF {', '.join(columns)}" if columns else event
        name = trigger_name(table, event)
        if sqlite:
            op.execute(f"CREATE TRIGGER {name} AFTER {what} ON {table} FOR EACH ROW BEGIN {_BUMP}; END")
        else:
            op.execute(f"CREATE TRIGGER {name} AFTER {what} ON {table} FOR EACH ROW "
                       f"EXECUTE FUNCTION fw_bump_auth_version()")
    op.execute(f"{_BUMP}")


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for table, event, _columns in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {trigger_name(table, event)}" + ("" if sqlite else f" ON {table}"))
    if not sqlite:
        op.execute("DROP FUNCTION IF EXISTS fw_bump_auth_version()")
    op.execute("DELETE FROM fw_state WHERE name = 'auth_version'")
    op.drop_index("ix_fw_login_attempt_at", table_name="fw_login_attempt")
    op.drop_index("ix_fw_login_attempt_key", table_name="fw_login_attempt")
    op.drop_table("fw_login_attempt")
