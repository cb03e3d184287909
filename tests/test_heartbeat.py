"""The worker heartbeat and what it tells: worker_status (running, stale, stopped, not needed), the health
endpoint, and the banner admins see when automations have no worker."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

from sqlalchemy import select, update

from formwork import create_app, db
from formwork.automation import heartbeat
from formwork.automation.worker import Worker
from tests import test_automation_support as support
from tests.helpers import Api
from tests.peers import wait_until
from tests.test_automation_support import add_rule
from tests.test_ui_pages import PASSWORD, html, login

sales = support.sales

RULE = {"key": "mark", "trigger": {"type": "record_created", "table": "tasks"},
        "actions": [{"type": "update_record", "fields": {"note": "seen"}}]}


def _engine(app: Any) -> Any:
    return app.extensions["formwork"].engine


def _status(app: Any, now: dt.datetime | None = None) -> heartbeat.WorkerStatus:
    p = app.extensions["formwork"]
    with db.transaction(p.engine, write=False) as conn:
        return heartbeat.worker_status(conn, p.catalogs.get(conn), now)


def _register(app: Any, worker_id: str, at: dt.datetime) -> None:
    with db.transaction(_engine(app)) as conn:
        heartbeat.register(conn, worker_id, at)


def _rows(app: Any) -> list[Any]:
    with _engine(app).connect() as conn:
        return conn.execute(select(db.workers).order_by(db.workers.c.id)).all()


# --- worker_status ----------------------------------------------------------------------------------
def test_no_worker_is_needed_without_enabled_automations(app: Any, sales: Api) -> None:
    assert _status(app) == heartbeat.WorkerStatus("not_needed", None)
    add_rule(sales, {**RULE, "enabled": False})
    assert _status(app).status == "not_needed"
    _register(app, "w1", db.utcnow() - dt.timedelta(hours=1))
    assert _status(app).status == "not_needed"  # an old worker row changes nothing


def test_missing_until_a_worker_beats_then_running(app: Any, sales: Api) -> None:
    add_rule(sales, RULE)
    assert _status(app) == heartbeat.WorkerStatus("missing", None)
    now = db.utcnow().replace(microsecond=0)
    _register(app, "w1", now - dt.timedelta(seconds=30))
    assert _status(app, now) == heartbeat.WorkerStatus("running", now - dt.timedelta(seconds=30))
    with db.transaction(_engine(app)) as conn:
        heartbeat.beat(conn, "w1", now)
    assert _status(app, now) == heartbeat.WorkerStatus("running", now)


def test_a_worker_not_seen_for_a_minute_is_missing(app: Any, sales: Api) -> None:
    add_rule(sales, RULE)
    now = db.utcnow().replace(microsecond=0)
    _register(app, "w1", now - dt.timedelta(seconds=61))
    assert _status(app, now) == heartbeat.WorkerStatus("missing", now - dt.timedelta(seconds=61))
    assert _status(app, now - dt.timedelta(seconds=2)).status == "running"  # 59 s earlier it was fine
    _register(app, "w2", now - dt.timedelta(seconds=5))  # a second, live worker is enough
    assert _status(app, now) == heartbeat.WorkerStatus("running", now - dt.timedelta(seconds=5))


def test_a_stopped_worker_is_missing_at_once(app: Any, sales: Api) -> None:
    add_rule(sales, RULE)
    now = db.utcnow().replace(microsecond=0)
    _register(app, "w1", now - dt.timedelta(seconds=10))
    with db.transaction(_engine(app)) as conn:
        heartbeat.mark_stopped(conn, "w1", now - dt.timedelta(seconds=1))
    assert _status(app, now) == heartbeat.WorkerStatus("missing", now - dt.timedelta(seconds=1))


def test_register_prunes_old_rows_and_beat_restores_a_lost_row(app: Any) -> None:
    now = db.utcnow()
    _register(app, "old", now - dt.timedelta(days=8))
    _register(app, "recent", now - dt.timedelta(days=1))
    _register(app, "new", now)
    assert [r.id for r in _rows(app)] == ["new", "recent"]
    _register(app, "new", now)  # the same id again (a restarted worker with a fixed id) replaces its row
    with db.transaction(_engine(app)) as conn:
        conn.execute(db.workers.delete().where(db.workers.c.id == "new"))
        heartbeat.beat(conn, "new", now)
    assert [r.id for r in _rows(app)] == ["new", "recent"]


def test_a_serving_worker_beats_and_marks_its_clean_stop(app: Any, sales: Api) -> None:
    add_rule(sales, RULE)
    w = Worker(app, worker_id="beating", poll=0.02, tick=60, heartbeat=0.05)
    thread = threading.Thread(target=w.serve)
    thread.start()
    try:
        wait_until(lambda: any(r.seen_at > r.started_at for r in _rows(app)), timeout=20)
        assert _status(app).status == "running"
        row = _rows(app)[0]
        assert (row.id, row.stopped_at) == ("beating", None) and row.pid > 0 and row.host
    finally:
        w.stop_event.set()
        thread.join(20)
    assert not thread.is_alive()
    assert _rows(app)[0].stopped_at is not None
    assert _status(app).status == "missing"


# --- GET /api/v1/health -----------------------------------------------------------------------------
def test_health_needs_no_login_and_reports_the_worker(app: Any, sales: Api) -> None:
    anonymous = Api(app.test_client())
    status, body = anonymous.get("/health")
    assert status == 200
    assert body == {"status": "ok", "database": {"ok": True}, "worker": {"status": "not_needed", "last_seen": None}}
    assert anonymous.last.headers["Cache-Control"] == "no-store"
    add_rule(sales, RULE)
    assert anonymous.get("/health") == (200, {"status": "degraded", "database": {"ok": True},
                                              "worker": {"status": "missing", "last_seen": None}})
    seen = db.utcnow().replace(microsecond=0)
    _register(app, "w1", seen)
    status, body = anonymous.get("/health")
    assert (status, body["status"], body["worker"]) == (200, "ok", {"status": "running",
                                                                    "last_seen": seen.isoformat() + "Z"})
    with db.transaction(_engine(app)) as conn:
        conn.execute(update(db.workers).values(seen_at=seen - dt.timedelta(minutes=5)))
    status, body = anonymous.get("/health")
    assert (status, body["status"], body["worker"]["status"]) == (200, "degraded", "missing")
    assert body["worker"]["last_seen"] == (seen - dt.timedelta(minutes=5)).isoformat() + "Z"


def test_health_is_503_when_the_database_is_unreachable(backend: str, tmp_path: Any) -> None:
    url = (f"sqlite:///{tmp_path}/no/such/dir/x.db" if backend == "sqlite"
           else "postgresql+psycopg://nobody@127.0.0.1:1/nothing?connect_timeout=2")
    broken = create_app({"DATABASE_URL": url, "SECRET_KEY": "s", "AUTO_MIGRATE": False, "TESTING": True})
    resp = broken.test_client().get("/api/v1/health")
    assert resp.status_code == 503
    assert resp.get_json() == {"status": "unavailable", "database": {"ok": False},
                               "worker": {"status": "unknown", "last_seen": None}}


def test_health_is_in_the_openapi_document_without_security(admin: Api) -> None:
    op = admin.ok("GET", "/openapi.json")["paths"]["/health"]["get"]
    assert op["security"] == []


# --- the admins' banner -----------------------------------------------------------------------------
def _set_user(app: Any, username: str, **values: Any) -> None:
    with db.transaction(_engine(app)) as conn:
        conn.execute(update(db.users).where(db.users.c.username == username).values(**values))


def _banner(page: str) -> str | None:
    start = page.find('id="worker-banner"')
    return None if start < 0 else page[start:page.index("</div>", start)]


def test_admins_see_the_banner_in_their_language_others_never(app: Any, sales: Api) -> None:
    sales.ok("POST", "/admin/roles", {"key": "rep", "label": "Rep",
                                      "permissions": {"sales.tasks": {"read": "all", "create": True}}})
    sales.ok("POST", "/admin/users", {"username": "rep", "name": "Rita Rep", "password": PASSWORD,
                                      "roles": ["rep"]})
    sales.ok("POST", "/admin/users", {"username": "boss", "name": "Bo Boss", "password": PASSWORD,
                                      "is_admin": True})
    boss, _ = login(app, "boss")
    rep, _ = login(app, "rep")
    assert _banner(html(boss.get("/"))) is None  # no automation: no worker needed

    add_rule(sales, RULE)
    text = _banner(html(boss.get("/")))
    assert text is not None and "Automations are not running: no worker has been seen yet." in text
    assert "<code>formwork worker</code>" in text and "<code>formwork run</code>" in text
    assert _banner(html(boss.get("/apps/sales"))) is not None  # every page of the app layout
    assert _banner(html(rep.get("/"))) is None
    assert _banner(html(rep.get("/apps/sales"))) is None

    _set_user(app, "boss", locale="zh-CN", timezone="Asia/Shanghai")
    _register(app, "w1", dt.datetime(2026, 3, 1, 1, 30))  # 09:30 in Shanghai
    text = _banner(html(boss.get("/")))
    assert text is not None
    assert ("自动化未在运行：自 2026-03-01 09:30 起没有看到后台任务进程。"
            "请用 <code>formwork worker</code> 启动一个") in text
    _set_user(app, "boss", locale="en", timezone="UTC")
    text = _banner(html(boss.get("/")))
    assert text is not None and "no worker has been seen since 2026-03-01 01:30." in text

    _register(app, "w2", db.utcnow())  # a live worker: the banner goes
    assert _banner(html(boss.get("/"))) is None
