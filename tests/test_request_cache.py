"""The per-process auth and catalog caches stay correct across processes.

Two app instances on one database stand for two server processes (or a server and a worker): each caches
a token's or session's answer and the catalog, and a change made through the other one (or by plain SQL,
as the CLI or an operator would) must be seen on the very next request — a revoked token refused, a
removed role no longer opening its table, a deactivated user locked out, a new field shown.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, select, text, update

from formwork import create_app, db
from formwork.runtime import auth
from tests.helpers import Api

PASSWORD = "correct-horse-9"


@pytest.fixture
def other(app: Any, database_url: str) -> Iterator[Any]:
    """A second app instance on the same database: its own engine, catalog cache and auth cache."""
    second = create_app({"DATABASE_URL": database_url, "SECRET_KEY": "test-secret", "TESTING": True,
                         "SMTP_HOST": "127.0.0.1"})
    try:
        yield second
    finally:
        second.extensions["formwork"].engine.dispose()


def _setup(app: Any, admin: Api) -> tuple[int, str]:
    """An app with a table the role 'reader' may read, and a user 'ann' with that role and a token."""
    admin.ok("POST", "/meta/apps", {"key": "crm", "label": "CRM"})
    admin.ok("POST", "/meta/apps/crm/tables", {"key": "leads", "label": "Leads", "fields": [
        {"key": "name", "type": "text", "label": "Name"}]})
    admin.ok("POST", "/data/crm/leads", {"fields": {"name": "Acme"}})
    admin.ok("POST", "/admin/roles", {"key": "reader", "label": "Reader",
                                      "permissions": {"crm.leads": {"read": "all"}}})
    uid = admin.ok("POST", "/admin/users", {"username": "ann", "name": "Ann", "password": PASSWORD,
                                            "roles": ["reader"]})["id"]
    with db.transaction(app.extensions["formwork"].engine) as conn:
        token = auth.create_token(conn, uid, "tests", None)["token"]
    return uid, token


def _queries(app: Any) -> list[str]:
    seen: list[str] = []
    event.listen(app.extensions["formwork"].engine, "before_cursor_execute",
                 lambda _c, _cur, stmt, *_a: seen.append(stmt))
    return seen


def test_revoked_token_is_refused_by_the_other_process(app: Any, other: Any, admin: Api) -> None:
    _uid, token = _setup(app, admin)
    a, b = Api(app.test_client(), token), Api(other.test_client(), token)
    for _ in range(2):  # the second answer comes from each process's cache
        assert len(b.records("crm", "leads")) == 1
        assert len(a.records("crm", "leads")) == 1
    tid = a.ok("GET", "/auth/tokens")["tokens"][0]["id"]
    assert a.call("DELETE", f"/auth/tokens/{tid}")[0] == 204  # revoked through the first process
    assert b.get("/data/crm/leads")[0] == 401
    assert a.get("/data/crm/leads")[0] == 401


def test_removed_role_and_changed_permissions_are_seen_at_once(app: Any, other: Any, admin: Api) -> None:
    uid, token = _setup(app, admin)
    b = Api(other.test_client(), token)
    assert len(b.records("crm", "leads")) == 1
    assert len(b.records("crm", "leads")) == 1
    admin.ok("PATCH", f"/admin/users/{uid}", {"roles": []})  # through the first process
    assert b.get("/data/crm/leads")[0] in (403, 404)
    admin.ok("PATCH", f"/admin/users/{uid}", {"roles": ["reader"]})
    assert len(b.records("crm", "leads")) == 1
    # the role's own permissions change: read narrows to none
    admin.ok("PATCH", "/admin/roles/reader", {"permissions": {"crm.leads": {"read": "none"}}})
    assert b.get("/data/crm/leads")[0] in (403, 404)


def test_deactivated_user_and_admin_flag_changed_by_plain_sql(app: Any, other: Any, admin: Api) -> None:
    uid, token = _setup(app, admin)
    b = Api(other.test_client(), token)
    assert b.get("/admin/users")[0] == 403
    assert b.get("/admin/users")[0] == 403
    # an operator's SQL (or the CLI) in no process at all: the triggers bump the auth version
    with db.transaction(app.extensions["formwork"].engine) as conn:
        conn.execute(update(db.users).where(db.users.c.id == uid).values(is_admin=True))
    assert b.get("/admin/users")[0] == 200
    with db.transaction(app.extensions["formwork"].engine) as conn:
        conn.execute(update(db.users).where(db.users.c.id == uid).values(is_admin=False, active=False))
    assert b.get("/admin/users")[0] == 401


def test_logged_out_session_is_refused_by_the_other_process(app: Any, other: Any, admin: Api) -> None:
    _setup(app, admin)
    ca, cb = app.test_client(), other.test_client()
    resp = ca.post("/api/v1/auth/login", json={"username": "ann", "password": PASSWORD})
    assert resp.status_code == 200
    csrf = resp.get_json()["csrf_token"]
    cookie = ca.get_cookie("fw_session")
    assert cookie is not None
    cb.set_cookie("fw_session", cookie.value)
    assert cb.get("/api/v1/me").status_code == 200
    assert cb.get("/api/v1/me").status_code == 200
    # an unsafe request still needs the CSRF token when the session comes from the cache
    assert cb.post("/api/v1/data/crm/leads", json={"fields": {"name": "x"}}).status_code == 403
    assert ca.post("/api/v1/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 200
    assert cb.get("/api/v1/me").status_code == 401


def test_schema_change_is_seen_at_once(app: Any, other: Any, admin: Api) -> None:
    _setup(app, admin)
    b = Api(other.test_client(), admin.token)
    assert set(b.records("crm", "leads")[0]["fields"]) == {"name"}
    admin.ok("POST", "/meta/apps/crm/tables/leads/fields", {"key": "city", "type": "text", "label": "City"})
    assert b.ok("POST", "/data/crm/leads", {"fields": {"name": "B", "city": "Pune"}})["fields"]["city"] == "Pune"
    assert {"name", "city"} <= set(b.records("crm", "leads")[0]["fields"])


def test_team_change_reaches_the_other_process(app: Any, other: Any, admin: Api) -> None:
    """A manager's team members widen 'team' scopes: a user joining the team is seen at once."""
    admin.ok("POST", "/meta/apps", {"key": "crm", "label": "CRM"})
    admin.ok("POST", "/meta/apps/crm/tables", {"key": "leads", "label": "Leads", "fields": [
        {"key": "name", "type": "text", "label": "Name"}]})
    admin.ok("POST", "/admin/roles", {"key": "lead_team", "label": "Team", "permissions": {
        "crm.leads": {"read": "team", "create": True}}})
    boss = admin.ok("POST", "/admin/users", {"username": "boss", "name": "Boss", "password": PASSWORD,
                                             "roles": ["lead_team"]})["id"]
    rep = admin.ok("POST", "/admin/users", {"username": "rep", "name": "Rep", "password": PASSWORD,
                                            "roles": ["lead_team"]})["id"]
    admin.ok("POST", "/admin/teams", {"key": "east", "name": "East", "manager": "boss"})
    engine = app.extensions["formwork"].engine
    with db.transaction(engine) as conn:
        tboss = auth.create_token(conn, boss, "t", None)["token"]
        trep = auth.create_token(conn, rep, "t", None)["token"]
    Api(app.test_client(), trep).ok("POST", "/data/crm/leads", {"fields": {"name": "rep's"}})
    b = Api(other.test_client(), tboss)
    assert b.records("crm", "leads") == []
    assert b.records("crm", "leads") == []
    admin.ok("PATCH", f"/admin/users/{rep}", {"team": "east"})
    assert [r["fields"]["name"] for r in b.records("crm", "leads")] == ["rep's"]


def test_a_cached_request_is_one_transaction_and_one_version_query(app: Any, admin: Api) -> None:
    _setup(app, admin)
    client = app.test_client()
    headers = {"Authorization": f"Bearer {admin.token}"}
    assert client.get("/api/v1/meta/apps", headers=headers).status_code == 200
    seen = _queries(app)
    begins: list[int] = []
    event.listen(app.extensions["formwork"].engine, "begin", lambda _c: begins.append(1))
    assert client.get("/api/v1/meta/apps", headers=headers).status_code == 200
    auth_tables = ("fw_api_token", "fw_session", "fw_user_role", "fw_team", "fw_role")
    assert not [s for s in seen if any(t in s for t in auth_tables)], seen
    assert sum("fw_state" in s for s in seen) == 1, seen
    assert len(begins) == 1


def test_auth_version_moves_with_every_auth_write(app: Any, admin: Api) -> None:
    engine = app.extensions["formwork"].engine

    def version() -> int:
        with engine.connect() as c:
            return int(c.execute(select(db.state.c.value).where(db.state.c.name == db.AUTH_VERSION)).scalar_one())

    statements = [
        "UPDATE fw_user SET locale = 'zh-CN' WHERE username = 'admin'",
        "UPDATE fw_user SET password_hash = 'x' WHERE username = 'admin'",
        "INSERT INTO fw_team (key, name) VALUES ('t1', 'T1')",
        "UPDATE fw_user SET team_id = (SELECT id FROM fw_team WHERE key = 't1') WHERE username = 'admin'",
        "DELETE FROM fw_team WHERE key = 't1'",
        "UPDATE fw_api_token SET revoked_at = created_at",
        "DELETE FROM fw_api_token",
    ]
    for sql in statements:
        before = version()
        with db.transaction(engine) as conn:
            conn.execute(text(sql))
        assert version() > before, sql
    before = version()
    with db.transaction(engine) as conn:  # a failed login's counter is no change of rights
        conn.execute(text("UPDATE fw_user SET failed_logins = failed_logins + 1"))
    assert version() == before


def test_login_limit_is_shared_by_two_processes(app: Any, other: Any, admin: Api) -> None:
    """30 login attempts a minute per address, counted in the database: spreading them over two
    processes gains nothing, and the refusal holds in both."""
    from formwork.runtime.ratelimit import login_limiter

    clients = [app.test_client(), other.test_client()]
    statuses = [clients[i % 2].post("/api/v1/auth/login", json={"username": f"nobody{i}", "password": "wrong-pass"})
                .status_code for i in range(login_limiter.limit)]
    assert statuses == [401] * login_limiter.limit
    for client in clients:
        assert client.post("/api/v1/auth/login", json={"username": "admin", "password": "admin-pass-1"}) \
            .status_code == 429
    with db.transaction(app.extensions["formwork"].engine) as conn:
        assert conn.execute(select(db.login_attempts.c.id)).all()  # the hits live in the database
    login_limiter.reset(app.extensions["formwork"].engine)
    assert clients[1].post("/api/v1/auth/login", json={"username": "admin", "password": "admin-pass-1"}) \
        .status_code == 200


def test_a_rested_connection_that_died_is_replaced(database_url: str, backend: str) -> None:
    """Pooled PostgreSQL connections are pinged only after resting (not on every request); one that died
    meanwhile (a server restart) is replaced before use instead of failing the request."""
    if backend != "postgresql":
        pytest.skip("SQLite has no server connection to lose")
    engine = db.make_engine(database_url, ping_after=0.0)
    killer = db.make_engine(database_url)
    try:
        with engine.connect() as conn:
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        with killer.connect() as k:
            k.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
            k.commit()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar() != pid
    finally:
        engine.dispose()
        killer.dispose()


def test_renamed_user_shows_at_once_in_the_other_process(app: Any, other: Any, admin: Api) -> None:
    """User fields show the user's name from a per-process cache; a rename anywhere is seen at once."""
    admin.ok("POST", "/meta/apps", {"key": "crm", "label": "CRM"})
    admin.ok("POST", "/meta/apps/crm/tables", {"key": "leads", "label": "Leads", "fields": [
        {"key": "name", "type": "text", "label": "Name"}, {"key": "rep", "type": "user", "label": "Rep"}]})
    uid = admin.ok("POST", "/admin/users", {"username": "ann", "name": "Ann", "password": PASSWORD})["id"]
    admin.ok("POST", "/data/crm/leads", {"fields": {"name": "Acme", "rep": uid}})
    b = Api(other.test_client(), admin.token)
    for _ in range(2):
        assert b.records("crm", "leads")[0]["fields"]["rep"] == {"id": uid, "name": "Ann"}
    admin.ok("PATCH", f"/admin/users/{uid}", {"name": "Ann Lee"})
    assert b.records("crm", "leads")[0]["fields"]["rep"] == {"id": uid, "name": "Ann Lee"}
