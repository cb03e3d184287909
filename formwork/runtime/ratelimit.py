"""Sliding-window limiters (per key): login attempts shared by every process, public forms per process.

The login limiter keeps its attempts where every process sees them, so two ``formwork serve`` processes —
or two servers behind a balancer — share one limit: an attacker gains nothing by spreading guesses over
processes. With ``REDIS_URL`` (``FORMWORK_REDIS_URL``) configured they live in Redis (one sorted set per
key, checked and added by one Lua script, so the check is atomic across processes); otherwise, or while
Redis can't be reached, in the database the app runs on (``fw_login_attempt``, migration 0008). Outside
a request (no app) it falls back to the in-process window.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import random
import threading
import time
import uuid
from collections import deque
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.engine import Connection, Engine

from formwork.errors import RateLimited

MESSAGE = "too many requests; wait a minute and try again"
log = logging.getLogger(__name__)

# One hit in one key's window, atomically: drop the hits older than the window, refuse when ``limit`` are
# left (a refused attempt is not recorded, as in the database), else add this one and let the key expire
# with its window. Times come from the Redis server (TIME), so processes with skewed clocks agree.
_CHECK_SCRIPT = """
local now = redis.call('TIME')
local t = tonumber(now[1]) * 1000000 + tonumber(now[2])
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', t - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], t, ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000))
return 1
"""


class RedisWindow:
    """``limit`` hits per key within ``seconds``, counted in Redis under ``<prefix>:limit:<name>:<key>``."""

    def __init__(self, client: Any, prefix: str, name: str, limit: int, seconds: float) -> None:
        self.client = client
        self.prefix = prefix
        self.name = name
        self.limit = limit
        self.seconds = seconds
        self._script = client.register_script(_CHECK_SCRIPT)

    def key(self, key: str) -> str:
        return f"{self.prefix}:limit:{self.name}:{key}"[:300]

    def check(self, key: str) -> None:
        """Raises RateLimited when the key is over its limit; redis.RedisError when Redis can't answer."""
        window_us = int(self.seconds * 1_000_000)
        ok = self._script(keys=[self.key(key)], args=[window_us, self.limit, uuid.uuid4().hex])
        if not int(ok):
            raise RateLimited(MESSAGE)

    def reset(self) -> None:
        """Forget this limiter's hits under its prefix (tests)."""
        for k in self.client.scan_iter(match=f"{self.prefix}:limit:{self.name}:*", count=500):
            self.client.delete(k)


_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()


def redis_client(url: str) -> Any:
    """One client (with its connection pool) per Redis URL in this process; short timeouts, so a Redis
    that stopped answering costs a login half a second before the database takes over."""
    with _clients_lock:
        client = _clients.get(url)
        if client is None:
            import redis

            client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
            _clients[url] = client
        return client


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
        self._redis: dict[tuple[str, str], RedisWindow] = {}
        self._warned = float("-inf")

    def check(self, key: str) -> None:
        redis_window = self.redis_window()
        if redis_window is not None:
            import redis

            try:
                redis_window.check(key)
                return
            except redis.RedisError as e:  # Redis is down: the database still holds the limit
                self._warn(e)
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

    def redis_window(self) -> RedisWindow | None:
        """The app's Redis window for this limiter, when the app names a Redis (``REDIS_URL``)."""
        from flask import current_app, has_app_context

        if not has_app_context():
            return None
        url = current_app.config.get("REDIS_URL")
        if not url:
            return None
        prefix = str(current_app.config.get("REDIS_PREFIX") or "formwork")
        cache_key = (url, prefix)
        window = self._redis.get(cache_key)
        if window is None:
            window = RedisWindow(redis_client(url), prefix, self.name, self.limit, self.seconds)
            self._redis[cache_key] = window
        return window

    def _warn(self, error: Exception) -> None:
        now = time.monotonic()
        if now - self._warned > 60:  # once a minute, not once per login
            self._warned = now
            log.warning("Redis unreachable for the %s limiter (%s); counting in the database", self.name, error)

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
