"""Database engine set-up and the platform's own tables.

User tables are not declared here: they are derived from metadata at run time (see metadata.catalog).
The platform tables below are versioned by Alembic migrations in ``formwork/migrations``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import StaticPool

# SQL NULL (not JSON null) for None: "is empty" and the JSON array functions must see no value
JsonType = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")

platform_md = MetaData()


def utcnow() -> dt.datetime:
    """Naive UTC timestamp; every stored datetime is UTC."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _id() -> Column[int]:
    return Column("id", Integer, primary_key=True, autoincrement=True)


users = Table(
    "fw_user", platform_md, _id(),
    Column("username", String(150), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("email", String(320)),
    Column("password_hash", String(300)),
    Column("locale", String(20), nullable=False, default="en"),
    Column("timezone", String(64), nullable=False, default="UTC"),
    Column("active", Boolean, nullable=False, default=True),
    Column("is_admin", Boolean, nullable=False, default=False),
    Column("team_id", Integer, ForeignKey("fw_team.id", ondelete="SET NULL"), index=True),
    Column("failed_logins", Integer, nullable=False, default=0),
    Column("locked_until", DateTime),
    Column("created_at", DateTime, nullable=False, default=utcnow),
)

teams = Table(
    "fw_team", platform_md, _id(),
    Column("key", String(63), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("manager_id", Integer, ForeignKey("fw_user.id", ondelete="SET NULL", use_alter=True)),
)

roles = Table(
    "fw_role", platform_md, _id(),
    Column("app_id", Integer, ForeignKey("fw_app.id", ondelete="CASCADE"), index=True),
    Column("key", String(63), nullable=False, unique=True),
    Column("doc", JsonType, nullable=False),
)

user_roles = Table(
    "fw_user_role", platform_md,
    Column("user_id", Integer, ForeignKey("fw_user.id", ondelete="CASCADE"), primary_key=True),
    Column("role_id", Integer, ForeignKey("fw_role.id", ondelete="CASCADE"), primary_key=True),
)

sessions = Table(
    "fw_session", platform_md,
    Column("id", String(64), primary_key=True),  # sha256 of the cookie secret
    Column("user_id", Integer, ForeignKey("fw_user.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", DateTime, nullable=False, default=utcnow),
    Column("last_seen", DateTime, nullable=False, default=utcnow),
    Column("ip", String(64)),
)

api_tokens = Table(
    "fw_api_token", platform_md, _id(),
    Column("user_id", Integer, ForeignKey("fw_user.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(12), nullable=False),
    Column("created_at", DateTime, nullable=False, default=utcnow),
    Column("expires_at", DateTime),
    Column("revoked_at", DateTime),
    Column("last_used_at", DateTime),
)

password_links = Table(
    # one-time set-password / reset links an administrator hands to a user (migration 0005): only the
    # sha256 of the secret is kept; a link works once, until it expires, and a newer link replaces it
    "fw_password_link", platform_md, _id(),
    Column("user_id", Integer, ForeignKey("fw_user.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_by", Integer),
    Column("created_at", DateTime, nullable=False, default=utcnow),
    Column("expires_at", DateTime, nullable=False),
    Column("used_at", DateTime),
)

apps = Table(
    "fw_app", platform_md, _id(),
    Column("key", String(63), nullable=False),
    Column("doc", JsonType, nullable=False),
    Column("position", Integer, nullable=False, default=0),
    Column("deleted_at", DateTime),
    Column("created_at", DateTime, nullable=False, default=utcnow),
)

tables = Table(
    "fw_table", platform_md, _id(),
    Column("app_id", Integer, ForeignKey("fw_app.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("key", String(63), nullable=False),
    Column("doc", JsonType, nullable=False),
    Column("position", Integer, nullable=False, default=0),
    Column("deleted_at", DateTime),
)

fields = Table(
    "fw_field", platform_md, _id(),
    Column("table_id", Integer, ForeignKey("fw_table.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("key", String(63), nullable=False),
    Column("type", String(40), nullable=False),
    Column("doc", JsonType, nullable=False),
    Column("position", Integer, nullable=False, default=0),
    Column("deleted_at", DateTime),
    # set when the field was deleted together with its table or as a link's reverse: restored with it
    Column("deleted_with", String(40)),
)


def _child_doc_table(name: str, parent: str) -> Table:
    return Table(
        name, platform_md, _id(),
        Column(f"{parent}_id", Integer, ForeignKey(f"fw_{parent}.id", ondelete="CASCADE"), nullable=False,
               index=True),
        Column("key", String(63), nullable=False),
        Column("doc", JsonType, nullable=False),
        Column("position", Integer, nullable=False, default=0),
        Column("deleted_at", DateTime),
    )


views = _child_doc_table("fw_view", "table")
automations = _child_doc_table("fw_automation", "app")
dashboards = _child_doc_table("fw_dashboard", "app")

state = Table(
    "fw_state", platform_md,
    Column("name", String(40), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

meta_changes = Table(
    "fw_meta_change", platform_md, _id(),
    Column("at", DateTime, nullable=False, default=utcnow),
    Column("user_id", Integer),
    Column("kind", String(20), nullable=False),
    Column("object_id", Integer),
    Column("action", String(20), nullable=False),
    Column("before", JsonType),
    Column("after", JsonType),
    Column("schema_version", BigInteger, nullable=False),
)

counters = Table(
    "fw_counter", platform_md,
    Column("field_id", Integer, primary_key=True),
    Column("value", BigInteger, nullable=False),
)

history = Table(
    "fw_history", platform_md, _id(),
    Column("table_id", Integer, nullable=False),
    Column("record_id", Integer, nullable=False),
    Column("at", DateTime, nullable=False, default=utcnow),
    Column("user_id", Integer),
    Column("action", String(20), nullable=False),
    Column("changes", JsonType),
    Index("ix_fw_history_record", "table_id", "record_id", "id"),
)

comments = Table(
    "fw_comment", platform_md, _id(),
    Column("table_id", Integer, nullable=False),
    Column("record_id", Integer, nullable=False),
    Column("user_id", Integer),
    Column("body", Text, nullable=False),
    Column("mentions", JsonType),
    Column("created_at", DateTime, nullable=False, default=utcnow),
    Column("edited_at", DateTime),
    Column("deleted_at", DateTime),
    Index("ix_fw_comment_record", "table_id", "record_id", "id"),
)

outbox = Table(
    "fw_outbox", platform_md,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("at", DateTime, nullable=False, default=utcnow),
    Column("app_id", Integer, nullable=False),
    Column("table_id", Integer),
    Column("record_id", Integer),
    Column("event", String(30), nullable=False),
    Column("user_id", Integer),
    Column("payload", JsonType),
    Column("depth", Integer, nullable=False, default=0),
    Column("origin", String(100)),  # automation key that caused this change (loop protection)
    Column("status", String(12), nullable=False, default="pending"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", DateTime, nullable=False, default=utcnow),
    Column("locked_by", String(64)),
    Column("locked_until", DateTime),
    Column("processed_at", DateTime),
    Column("error", Text),
    Index("ix_fw_outbox_pending", "status", "next_attempt_at"),
)

files = Table(
    "fw_file", platform_md, _id(),
    Column("token", String(64), nullable=False, unique=True),
    Column("name", String(255), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("mime", String(120), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("user_id", Integer),
    Column("created_at", DateTime, nullable=False, default=utcnow),
)

jobs = Table(
    "fw_job", platform_md, _id(),
    Column("kind", String(40), nullable=False),
    Column("user_id", Integer),
    Column("status", String(12), nullable=False, default="queued"),
    Column("progress", Integer, nullable=False, default=0),
    Column("total", Integer),
    Column("params", JsonType),
    Column("result", JsonType),
    Column("error", Text),
    Column("created_at", DateTime, nullable=False, default=utcnow),
    Column("finished_at", DateTime),
    Column("owner", String(200)),  # host:pid:token of the process running it (migration 0004)
)

audit = Table(
    "fw_audit", platform_md, _id(),
    Column("at", DateTime, nullable=False, default=utcnow, index=True),
    Column("user_id", Integer),
    Column("username", String(150)),
    Column("action", String(60), nullable=False, index=True),
    Column("target", String(200)),
    Column("details", JsonType),
    Column("ip", String(64)),
)

# --- automation (migration 0002) ---------------------------------------------------------------------
_BigId = BigInteger().with_variant(Integer, "sqlite")

automation_runs = Table(
    "fw_automation_run", platform_md,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("app_id", Integer, nullable=False),
    Column("automation_id", Integer, nullable=False),
    Column("automation_key", String(63), nullable=False),
    Column("trigger", String(30), nullable=False),
    Column("table_id", Integer),
    Column("record_id", Integer),
    Column("outbox_id", BigInteger),
    Column("firing_key", String(200)),
    # running, waiting, awaiting_approval, delivering, succeeded, failed, skipped
    Column("status", String(20), nullable=False),
    Column("depth", Integer, nullable=False, default=0),
    Column("state", JsonType),  # where a parked run resumes, outputs of earlier actions, trigger data
    Column("resume_at", DateTime),
    Column("started_at", DateTime, nullable=False, default=utcnow),
    Column("finished_at", DateTime),
    Column("duration_ms", Integer),
    Column("error", Text),
    Index("ix_fw_automation_run_rule", "automation_id", "id"),
    Index("ix_fw_automation_run_resume", "status", "resume_at"),
)

automation_steps = Table(
    "fw_automation_step", platform_md,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("run_id", BigInteger().with_variant(Integer, "sqlite"),
           ForeignKey("fw_automation_run.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("path", String(100), nullable=False),
    Column("action", String(30), nullable=False),
    Column("status", String(20), nullable=False),
    Column("output", JsonType),
    Column("error", Text),
    Column("started_at", DateTime, nullable=False, default=utcnow),
    Column("duration_ms", Integer),
    Column("delivery_id", BigInteger),
)

deliveries = Table(
    "fw_delivery", platform_md,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("idempotency_key", String(200), nullable=False, unique=True),
    Column("run_id", BigInteger, nullable=False, index=True),
    Column("kind", String(10), nullable=False),  # email | webhook
    Column("request", JsonType, nullable=False),
    # pending -> written (bytes handed to the peer, no answer yet) -> sent | failed | unconfirmed
    Column("status", String(12), nullable=False, default="pending"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", DateTime, nullable=False, default=utcnow),
    Column("locked_by", String(64)),
    Column("locked_until", DateTime),
    Column("created_at", DateTime, nullable=False, default=utcnow),
    Column("sent_at", DateTime),
    Column("response", JsonType),
    Column("error", Text),
    Index("ix_fw_delivery_pending", "status", "next_attempt_at"),
)

firings = Table(
    "fw_firing", platform_md,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("automation_id", Integer, nullable=False),
    Column("firing_key", String(200), nullable=False, unique=True),
    Column("due_at", DateTime, nullable=False),
    Column("created_at", DateTime, nullable=False, default=utcnow),
)

automation_state = Table(
    "fw_automation_state", platform_md,
    Column("automation_id", Integer, primary_key=True),
    Column("last_tick", DateTime, nullable=False),
)

assign_state = Table(
    "fw_assign_state", platform_md,
    Column("automation_id", Integer, primary_key=True),
    Column("path", String(100), primary_key=True),
    Column("last_user_id", Integer),
)

notifications = Table(
    "fw_notification", platform_md, _id(),
    Column("user_id", Integer, ForeignKey("fw_user.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(30), nullable=False),
    Column("title", Text, nullable=False),
    Column("body", Text),
    Column("link", JsonType),
    Column("created_at", DateTime, nullable=False, default=utcnow),
    Column("read_at", DateTime),
    # what renders the text in the reader's language (migration 0006): {"key", "params"} of a platform
    # message, or {"texts": {"en": {"title", "body"}, "zh-CN": {...}}}; NULL on older rows (title/body)
    Column("message", JsonType),
    Index("ix_fw_notification_user", "user_id", "id"),
)

user_settings = Table(
    # one user's preferences kept on the server (migration 0006), e.g. "notify_email"
    "fw_user_setting", platform_md,
    Column("user_id", Integer, ForeignKey("fw_user.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(63), primary_key=True),
    Column("value", JsonType),
)

approvals = Table(
    "fw_approval", platform_md, _id(),
    Column("run_id", BigInteger, nullable=False, index=True),
    Column("automation_id", Integer, nullable=False),
    Column("app_id", Integer, nullable=False),
    Column("table_id", Integer),
    Column("record_id", Integer),
    Column("path", String(100), nullable=False),
    Column("mode", String(4), nullable=False),  # any | all
    Column("title", Text, nullable=False),
    Column("approvers", JsonType, nullable=False),  # user ids
    Column("status", String(12), nullable=False, default="pending"),  # pending approved rejected returned cancelled
    Column("created_at", DateTime, nullable=False, default=utcnow),
    Column("decided_at", DateTime),
    # multi-level approvals (migration 0006): the levels planned when the step was reached
    # ([{"label", "mode", "approvers"}]), which of them this request is, and the title in each language
    Column("level", Integer, nullable=False, default=0, server_default="0"),
    Column("levels", JsonType),
    Column("titles", JsonType),
    Column("requested_by", Integer),  # who asked: the user whose change started the run, else the owner
    Index("ix_fw_approval_record", "table_id", "record_id"),
    Index("ix_fw_approval_requested_by", "requested_by"),
)

approval_waiting = Table(
    # who a pending approval still waits on (migration 0006): one row per approver who has not decided,
    # removed when they decide or the approval settles, so "how many wait on me" is one index look-up
    "fw_approval_waiting", platform_md,
    Column("approval_id", Integer, ForeignKey("fw_approval.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", Integer, primary_key=True),
    Index("ix_fw_approval_waiting_user", "user_id"),
)

approval_decisions = Table(
    "fw_approval_decision", platform_md, _id(),
    Column("approval_id", Integer, ForeignKey("fw_approval.id", ondelete="CASCADE"), nullable=False),
    Column("user_id", Integer, nullable=False),
    Column("decision", String(10), nullable=False),
    Column("comment", Text),
    Column("at", DateTime, nullable=False, default=utcnow),
    UniqueConstraint("approval_id", "user_id", name="uq_fw_approval_decision"),
)

hook_tokens = Table(
    "fw_hook_token", platform_md, _id(),
    Column("automation_id", Integer, nullable=False, unique=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(12), nullable=False),
    Column("created_at", DateTime, nullable=False, default=utcnow),
)

# --- worker heartbeat (migration 0003) ----------------------------------------------------------------
workers = Table(
    "fw_worker", platform_md,
    Column("id", String(100), primary_key=True),  # the worker id: host:pid:random
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", DateTime, nullable=False, default=utcnow),
    Column("seen_at", DateTime, nullable=False, default=utcnow),
    Column("stopped_at", DateTime),
    Index("ix_fw_worker_seen", "seen_at"),
)

login_attempts = Table(
    # one row per login-type attempt, by client address (migration 0008): the login limiter's sliding
    # window, shared by every process (formwork.runtime.ratelimit)
    "fw_login_attempt", platform_md, _id(),
    Column("key", String(200), nullable=False),
    Column("at", DateTime, nullable=False),
    Index("ix_fw_login_attempt_key", "key", "at"),
    Index("ix_fw_login_attempt_at", "at"),
)

SCHEMA_VERSION = "schema_version"
# bumped by database triggers (migration 0008) on every write to users, teams, roles, role membership,
# tokens and sessions: the per-process auth cache (formwork.web) is valid only while it stays the same
AUTH_VERSION = "auth_version"


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine with the settings each backend needs.

    SQLite: WAL, foreign keys, a busy timeout, and transactional DDL: pysqlite's own transaction
    handling is switched off so that BEGIN is emitted by us and DDL joins the transaction (a failed
    schema change then rolls back with its data changes).
    """
    if url.startswith("sqlite"):
        connect_args = kwargs.pop("connect_args", {})
        connect_args.setdefault("timeout", 30)
        connect_args.setdefault("check_same_thread", False)
        if url in ("sqlite://", "sqlite:///:memory:"):
            kwargs.setdefault("poolclass", StaticPool)
        engine = create_engine(url, connect_args=connect_args, **kwargs)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _rec: Any) -> None:
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            # IMMEDIATE takes the write lock up front: two writers queue on busy_timeout instead of one
            # failing with "database is locked" when it upgrades a read lock mid-transaction.
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.get("write") else "BEGIN")

        return engine
    kwargs.setdefault("pool_size", 10)
    ping_after = kwargs.pop("ping_after", PING_AFTER)
    engine = create_engine(url, **kwargs)
    if not kwargs.get("pool_pre_ping"):
        _ping_when_idle(engine, ping_after)
    return engine


PING_AFTER = 10.0  # seconds a pooled connection may rest before its next use checks that it is still alive


def _ping_when_idle(engine: Engine, seconds: float) -> None:
    """Check a pooled connection before use when it has rested longer than ``seconds`` (a restarted or
    failed-over server is noticed and the connection replaced, as with ``pool_pre_ping``), but not on
    every checkout: a ping is a round trip, a quarter of a short request's time on PostgreSQL."""
    import time

    from sqlalchemy import exc

    @event.listens_for(engine, "checkin")
    def _rested(_dbapi_conn: Any, record: Any) -> None:
        record.info["rested_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _check(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("rested_at")
        if since is None or time.monotonic() - since < seconds:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_conn)
        except Exception as e:  # noqa: BLE001 - any failure: the pool replaces the connection
            raise exc.DisconnectionError(str(e)) from e
        if not alive:
            raise exc.DisconnectionError("the database connection is gone")


_AFTER_COMMIT = "fw_after_commit"


def after_commit(conn: Connection, fn: Callable[[], None]) -> None:
    """Run ``fn`` once the transaction of ``conn`` has committed (never after a rollback).

    Only work that may be lost is queued here (``transaction`` and the web request's unit run it; other
    code paths drop it): e.g. a search index built in the background, which the worker repairs anyway.
    """
    conn.info.setdefault(_AFTER_COMMIT, []).append(fn)


def run_after_commit(conn: Connection, committed: bool) -> None:
    """Called by whoever committed (or rolled back) ``conn``'s transaction: runs or drops its hooks."""
    hooks = conn.info.pop(_AFTER_COMMIT, None) or []
    if committed:
        for fn in hooks:
            fn()


@contextmanager
def transaction(engine: Engine, write: bool = True) -> Iterator[Connection]:
    """One unit of work: commits when the block ends, rolls back (DDL included) when it raises."""
    with engine.connect() as conn:
        conn.info["write"] = write
        committed = False
        try:
            with conn.begin():
                yield conn
            committed = True
        finally:
            conn.info["write"] = False
            run_after_commit(conn, committed)
