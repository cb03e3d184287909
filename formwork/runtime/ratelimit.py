"""Sliding-window limiters (per key): login attempts shared by every process, public forms per process.

The login limiter keeps its attempts in the database the app runs on (``fw_login_attempt``, migration
0008), so two ``formwork serve`` processes — or two servers behind a balancer — share one limit: an
attacker gains nothing by spreading guesses over processes. Outside a request (no app) it falls back to
the in-process window.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
import threading
import time
from collections import deque
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.engine import Connection, Engine

from formwork.errors import RateLimited

MESSAGE = "too many requests; wait a minute and try again"


class SlidingWindow:
    """In-process: ``limit`` hits per key within ``seconds``."""

    def __init__(self, limit: int, seconds: float) -> None:
        self.limit = limit
        self.seconds = seconds
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, key: str) -> None:
        now = time.monotonic()
        with self._lock:
            q = self._hits.setdefault(key, deque())
            while q and q[0] <= now - self.seconds:
                q.popleft()
            if len(q) >= self.limit:
                raise RateLimited(MESSAGE)
            q.append(now)
            if len(self._hits) > 100_000:  # bound memory under a flood of distinct keys
                self._hits = {k: v for k, v in self._hits.items() if v and v[-1] > now - self.seconds}

    def reset(self) -> None:
        with self._lock:
            self._hits.clear()


class SharedWindow:
    """``limit`` hits per key within ``seconds``, counted in the app's database (every process sees them).

    A hit is a row in ``fw_login_attempt``; the check counts the key's rows in the window and adds one
    in the same transaction. On PostgreSQL a transaction-scoped advisory lock on the key makes concurrent
    checks of one key queue, so the limit is exact; SQLite serialises writers anyway. A refused attempt is
    not recorded (the window empties on its own). Old rows are pruned as checks go.
    """

    def __init__(self, limit: int, seconds: float, name: str) -> None:
        self.limit = limit
        self.seconds = seconds
        self.name = name
        self.local = SlidingWindow(limit, seconds)

    def check(self, key: str) -> None:
        engine, conn = _request_database()
        if engine is None:
            self.local.check(key)
            return
        if conn is not None:
            self.check_in(conn, key)
            return
        from formwork import db

        with db.transaction(engine) as c:
            self.check_in(c, key)

    def check_in(self, conn: Connection, key: str) -> None:
        """Count and record one hit for ``key`` inside ``conn``'s (writable) transaction."""
        from formwork import db

        t = db.login_attempts
        full = f"{self.name}:{key}"[:200]
        now = db.utcnow()
        since = now - dt.timedelta(seconds=self.seconds)
        if conn.dialect.name == "postgresql":
            lock = int.from_bytes(hashlib.sha256(full.encode()).digest()[:8], "big", signed=True)
            conn.execute(select(func.pg_advisory_xact_lock(lock)))
        if random.random() < 0.01:  # noqa: S311 - pruning now and then, not a secret
            conn.execute(delete(t).where(t.c.at < since))
        n = conn.execute(select(func.count()).select_from(t).where(t.c.key == full, t.c.at > since)).scalar()
        if int(n or 0) >= self.limit:
            raise RateLimited(MESSAGE)
        conn.execute(delete(t).where(t.c.key == full, t.c.at <= since))
        conn.execute(insert(t).values(key=full, at=now))

    def reset(self, engine: Engine | None = None) -> None:
        """Forget every hit (tests): in this process, and in ``engine``'s database when one is given (a
        fresh or emptied database has none to forget)."""
        from formwork import db

        self.local.reset()
        if engine is not None:
            with db.transaction(engine) as conn:
                conn.execute(delete(db.login_attempts).where(db.login_attempts.c.key.like(f"{self.name}:%")))


def _request_database() -> tuple[Engine | None, Connection | None]:
    """The app's engine, and the request's open writable unit of work if a check runs inside one."""
    from flask import current_app, has_app_context

    if not has_app_context():
        return None, None
    plat: Any = current_app.extensions.get("formwork")
    if plat is None:
        return None, None
    return plat.engine, _active_unit()


def _active_unit() -> Connection | None:
    """The innermost unit of work of this request that may write, if one is open (else None): the units
    ``formwork.web.unit`` opens are listed on ``flask.g`` (read here so the runtime needs nothing of web)."""
    from flask import g

    for conn in reversed(g.get("_fw_units") or []):
        if conn.info.get("write") or conn.dialect.name != "sqlite":
            return conn
        return None
    return None


login_limiter = SharedWindow(limit=30, seconds=60, name="login")
form_limiter = SlidingWindow(limit=20, seconds=60)
