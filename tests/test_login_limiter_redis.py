"""The shared login limiter in Redis (``REDIS_URL``): one limit across processes, atomic, and the database
taking over while Redis is unreachable. Runs against a real Redis (``FORMWORK_TEST_REDIS_URL``, by default
the local one); skipped when none answers."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from formwork import create_app, db
from formwork.errors import RateLimited
from formwork.runtime.ratelimit import RedisWindow, login_limiter, redis_client

REDIS_URL = os.environ.get("FORMWORK_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _reachable() -> bool:
    try:
        import redis
    except ImportError:
        return False
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5, socket_timeout=0.5).ping())
    except redis.RedisError:
        return False


pytestmark = pytest.mark.skipif(not _reachable(), reason=f"no Redis answers at {REDIS_URL}")


@pytest.fixture(scope="module")
def prefix() -> Iterator[str]:
    """A namespace of this run's own, so parallel runs on one Redis never count each other's attempts."""
    name = f"fwtest-{uuid.uuid4().hex[:10]}"
    yield name
    client = redis_client(REDIS_URL)
    for k in client.scan_iter(match=f"{name}:*", count=500):
        client.delete(k)


def _app(path: Path, prefix: str, url: str = REDIS_URL) -> Any:
    return create_app({"DATABASE_URL": f"sqlite:///{path}", "SECRET_KEY": "limiter-test", "TESTING": True,
                       "REDIS_URL": url, "REDIS_PREFIX": prefix})


def _attempts(app: Any) -> int:
    with db.transaction(app.extensions["formwork"].engine) as conn:
        return int(conn.execute(select(func.count()).select_from(db.login_attempts)).scalar() or 0)


def _login(client: Any, i: int) -> int:
    return int(client.post("/api/v1/auth/login", json={"username": f"nobody{i}", "password": "wrong-pass"})
               .status_code)


def test_two_app_instances_share_one_limit_through_redis(tmp_path: Path, prefix: str) -> None:
    """Two instances on separate databases: only Redis is shared, and the 31st attempt from one address is
    refused by both, wherever the first 30 went. Nothing is written to either database."""
    apps = [_app(tmp_path / "a.db", prefix), _app(tmp_path / "b.db", prefix)]
    clients = [a.test_client() for a in apps]
    try:
        statuses = [_login(clients[i % 2], i) for i in range(login_limiter.limit)]
        assert statuses == [401] * login_limiter.limit
        assert [_login(c, 99) for c in clients] == [429, 429]
        assert [_attempts(a) for a in apps] == [0, 0]
        with apps[0].app_context():
            window = login_limiter.redis_window()
            assert window is not None
            window.reset()
        assert _login(clients[1], 100) == 401  # the window is in Redis: emptied there, open again
    finally:
        for a in apps:
            a.extensions["formwork"].engine.dispose()


def test_the_check_is_atomic_across_concurrent_callers(prefix: str) -> None:
    """Many threads (each as good as a process: the script runs in Redis) race on one key: exactly
    ``limit`` get through, and the key expires with its window."""
    client = redis_client(REDIS_URL)
    window = RedisWindow(client, prefix, "race", limit=25, seconds=60)
    passed: list[int] = []
    refused: list[int] = []
    lock = threading.Lock()

    def hammer() -> None:
        for _ in range(10):
            try:
                window.check("203.0.113.7")
                ok = True
            except RateLimited:
                ok = False
            with lock:
                (passed if ok else refused).append(1)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (len(passed), len(refused)) == (25, 55)
    ttl = client.pttl(window.key("203.0.113.7"))
    assert 0 < ttl <= 60_000
    with pytest.raises(RateLimited):
        window.check("203.0.113.7")
    window.check("198.51.100.1")  # another address has its own window


def test_an_unreachable_redis_leaves_the_limit_to_the_database(tmp_path: Path, prefix: str) -> None:
    """A configured Redis that does not answer: attempts are counted in the database, the limit holds."""
    app = _app(tmp_path / "c.db", prefix, url="redis://127.0.0.1:1/0")
    client = app.test_client()
    try:
        login_limiter.reset(app.extensions["formwork"].engine)
        statuses = [_login(client, i) for i in range(login_limiter.limit)]
        assert statuses == [401] * login_limiter.limit
        assert _login(client, 99) == 429
        assert _attempts(app) == login_limiter.limit
    finally:
        login_limiter.reset(app.extensions["formwork"].engine)
        app.extensions["formwork"].engine.dispose()
