"""The admin API: users, teams, roles, the audit log, "explain", view-as and privilege escalation."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from formwork import db
from formwork.runtime import auth
from tests.helpers import Api, db_snapshot

PASSWORD = "correct-horse-9"


def token_for(app: Any, username: str) -> Api:
    with db.transaction(app.extensions["formwork"].engine) as conn:
        uid = conn.execute(select(db.users.c.id).where(db.users.c.username == username)).scalar_one()
        return Api(app.test_client(), auth.create_token(conn, uid, "tests", None)["token"])


def setup_app(admin: Api) -> None:
    admin.ok("POST", "/meta/apps", {"key": "crm", "label": "CRM"})
    admin.ok("POST", "/meta/apps/crm/tables", {"key": "customers", "label": "Customers", "fields": [
        {"key": "name", "label": "Name", "type": "text"},
        {"key": "owner", "label": "Owner", "type": "user"},
        {"key": "credit_limit", "label": "Credit limit", "type": "currency"},
    ]})


def role(key: str, **perms: Any) -> dict[str, Any]:
    return {"key": key, "label": {"en": key, "zh-CN": key}, "permissions": perms}


def test_users_crud_filters_and_validation(app: Any, admin: Api) -> None:
    setup_app(admin)
    admin.ok("POST", "/admin/roles", role("reader", **{"crm.customers": {"read": "all"}}))
    admin.ok("POST", "/admin/teams", {"key": "east", "name": "East"})
    u = admin.ok("POST", "/admin/users", {"username": "li.lei", "name": "李雷", "email": "li@example.com",
                                          "password": PASSWORD, "roles": ["reader"], "team": "east",
                                          "locale": "zh-CN", "timezone": "Asia/Shanghai"})
    assert u["roles"] == ["reader"] and u["team"] == "east" and u["locale"] == "zh-CN" and u["active"]
    assert "password" not in u and "password_hash" not in u
    admin.ok("POST", "/admin/users", {"username": "han", "name": "Han Meimei", "password": PASSWORD, "roles": []})
    assert [x["username"] for x in admin.ok("GET", "/admin/users?q=李")["users"]] == ["li.lei"]
    assert [x["username"] for x in admin.ok("GET", "/admin/users?team=east")["users"]] == ["li.lei"]
    assert [x["username"] for x in admin.ok("GET", "/admin/users?role=reader")["users"]] == ["li.lei"]
    assert admin.ok("GET", "/admin/users?limit=1")["total"] == 3
    assert admin.get("/admin/users?colour=red")[0] == 400
    assert admin.get("/admin/users?active=maybe")[0] == 400

    before = db_snapshot(app)
    bad = [
        ({"username": "li.lei", "name": "x", "password": PASSWORD}, 409),
        ({"username": "has space", "password": PASSWORD}, 422),
        ({"username": "short", "password": "123"}, 422),
        ({"username": "x1", "password": PASSWORD, "roles": ["no_such_role"]}, 422),
        ({"username": "x2", "password": PASSWORD, "team": "nowhere"}, 422),
        ({"username": "x3", "password": PASSWORD, "timezone": "Mars/Base"}, 422),
        ({"username": "x4", "password": PASSWORD, "locale": "fr"}, 422),
        ({"username": "x5", "password": PASSWORD, "superpower": True}, 422),
        ({"username": "x6", "password": PASSWORD, "email": "not-an-email"}, 422),
    ]
    for body, status in bad:
        code, err = admin.post("/admin/users", body)
        assert code == status, (body, err)
    assert admin.post("/admin/users", raw=b"{nope")[0] == 400
    assert db_snapshot(app) == before
    with app.extensions["formwork"].engine.connect() as conn:
        assert conn.execute(select(db.users.c.id).where(db.users.c.username.like("x%"))).first() is None

    changed = admin.ok("PATCH", f"/admin/users/{u['id']}", {"name": "Li Lei", "roles": [], "team": None})
    assert changed["name"] == "Li Lei" and changed["roles"] == [] and changed["team"] is None
    assert admin.patch(f"/admin/users/{u['id']}", {"username": "other"})[0] == 422
    assert admin.patch(f"/admin/users/{u['id']}", {"password": "newpassword1"})[0] == 422
    assert admin.get("/admin/users/99999")[0] == 404
    assert admin.get("/admin/users/abc")[0] == 404
    assert admin.ok("GET", f"/admin/users/{u['id']}")["username"] == "li.lei"

    # a password reset ends the user's sessions and clears a lockout
    client = app.test_client()
    assert client.post("/api/v1/auth/login", json={"username": "li.lei", "password": PASSWORD}).status_code == 200
    assert admin.post(f"/admin/users/{u['id']}/password", {"password": "x"})[0] == 422
    assert admin.post(f"/admin/users/{u['id']}/password", {"password": "new-secret-42"})[0] == 204
    assert client.get("/api/v1/me").status_code == 401
    login = client.post("/api/v1/auth/login", json={"username": "li.lei", "password": "new-secret-42"})
    assert login.status_code == 200


def test_teams(app: Any, admin: Api) -> None:
    for name in ("mgr", "a1", "a2"):
        admin.ok("POST", "/admin/users", {"username": name, "password": PASSWORD})
    t = admin.ok("POST", "/admin/teams", {"key": "east", "name": "华东", "manager": "mgr", "members": ["a1", "a2"]})
    assert t["manager"]["username"] == "mgr" and [m["username"] for m in t["members"]] == ["a1", "a2"]
    assert admin.post("/admin/teams", {"key": "east", "name": "dup"})[0] == 409
    before = db_snapshot(app)
    assert admin.post("/admin/teams", {"key": "Bad Key", "name": "x"})[0] == 422
    assert admin.post("/admin/teams", {"key": "west", "name": "x", "members": ["ghost"]})[0] == 422
    assert admin.post("/admin/teams", {"key": "west", "name": "x", "manager": "ghost"})[0] == 422
    assert db_snapshot(app) == before
    west = admin.ok("POST", "/admin/teams", {"key": "west", "name": "West", "members": ["a2"]})
    assert [m["username"] for m in west["members"]] == ["a2"]  # a user is in one team: a2 moved
    assert [m["username"] for m in admin.ok("GET", "/admin/teams/east")["members"]] == ["a1"]
    east = admin.ok("PATCH", "/admin/teams/east", {"members": [], "manager": None})
    assert east["members"] == [] and east["manager"] is None
    assert admin.delete("/admin/teams/west")[0] == 204
    assert admin.get("/admin/teams/west")[0] == 404
    users = {x["username"]: x for x in admin.ok("GET", "/admin/users")["users"]}
    assert users["a2"]["team"] is None
    assert {x["key"] for x in admin.ok("GET", "/admin/teams")["teams"]} == {"east"}


def test_role_documents_are_validated(app: Any, admin: Api) -> None:
    setup_app(admin)
    good = role("account_manager", **{"crm.customers": {
        "read": "own", "create": True, "update": {"field": "owner", "op": "eq", "value": {"var": "me"}},
        "delete": "none", "import": False, "export": False, "fields": {"credit_limit": "hidden"}}})
    created = admin.ok("POST", "/admin/roles", good)
    assert created["key"] == "account_manager" and created["user_count"] == 0
    assert admin.post("/admin/roles", good)[0] == 409
    before = db_snapshot(app)
    cases = [
        (role("r1", **{"crm.customers": {"read": "everyone"}}), "/permissions/crm.customers/read"),
        (role("r2", **{"crm.customers": {"read": "all", "fly": True}}), "/permissions/crm.customers"),
        (role("r3", **{"crm.nope": {"read": "all"}}), "/permissions/crm.nope"),
        (role("r4", **{"shop.customers": {"read": "all"}}), "/permissions/shop.customers"),
        (role("r5", **{"crm.customers": {"read": {"field": "ghost", "op": "eq", "value": 1}}}),
         "/permissions/crm.customers/read"),
        (role("r6", **{"crm.customers": {"read": "all", "fields": {"ghost": "hidden"}}}),
         "/permissions/crm.customers/fields/ghost"),
        (role("r7", **{"crm.customers": {"read": "all", "fields": {"name": "invisible"}}}),
         "/permissions/crm.customers/fields/name"),
        ({**role("r8"), "build": "yes"}, "/build"),
        ({"label": "no key"}, ""),
        (role("r9", **{"crm.*": {"read": {"field": "name", "op": "eq", "value": "x"}}}),
         "/permissions/crm.*/read"),
    ]
    for doc, pointer in cases:
        status, err = admin.post("/admin/roles", doc)
        assert status == 422, (doc, err)
        assert any(k.startswith(pointer) for k in err["error"]["details"]), (pointer, err)
    assert db_snapshot(app) == before
    patched = admin.ok("PATCH", "/admin/roles/account_manager", {"manage_users": True})
    assert patched["manage_users"] is True and patched["permissions"]["crm.customers"]["read"] == "own"
    assert admin.patch("/admin/roles/account_manager", {"key": "renamed"})[0] == 422
    assert admin.patch("/admin/roles/account_manager", {"permissions": {"crm.x": {}}})[0] == 422
    assert admin.get("/admin/roles/nope")[0] == 404
    assert [r["key"] for r in admin.ok("GET", "/admin/roles")["roles"]] == ["account_manager"]
    admin.ok("POST", "/admin/users", {"username": "am", "password": PASSWORD, "roles": ["account_manager"]})
    assert admin.delete("/admin/roles/account_manager")[0] == 204
    users = admin.ok("GET", "/admin/users?q=am")["users"]
    assert users[0]["roles"] == []


def test_privilege_escalation_is_refused(app: Any, admin: Api) -> None:
    setup_app(admin)
    admin.ok("POST", "/admin/roles", role("reader", **{"crm.customers": {"read": "own"}}))
    admin.ok("POST", "/admin/roles", role("writer", **{"crm.customers": {"read": "all", "update": "all"}}))
    admin.ok("POST", "/admin/roles", {**role("hr"), "manage_users": True})
    plain = admin.ok("POST", "/admin/users", {"username": "plain", "password": PASSWORD, "roles": ["reader"]})
    hr = admin.ok("POST", "/admin/users", {"username": "hr", "password": PASSWORD, "roles": ["hr", "reader"]})
    other = admin.ok("POST", "/admin/users", {"username": "other", "password": PASSWORD, "roles": []})
    admin_id = admin.ok("GET", "/me")["id"]
    admin.ok("POST", "/admin/teams", {"key": "hr_team", "name": "HR", "members": ["hr"]})
    admin.ok("POST", "/admin/teams", {"key": "sales", "name": "Sales", "members": ["other"]})
    p, h = token_for(app, "plain"), token_for(app, "hr")
    before = db_snapshot(app)
    n_users = len(admin.ok("GET", "/admin/users")["users"])

    # a user without manage_users: every admin route is 403, their own record included
    for method, path, body in [
        ("GET", "/admin/users", None), ("POST", "/admin/users", {"username": "z", "password": PASSWORD}),
        ("PATCH", f"/admin/users/{plain['id']}", {"roles": ["writer"]}),
        ("PATCH", f"/admin/users/{other['id']}", {"roles": ["writer"]}),
        ("DELETE", f"/admin/users/{other['id']}", None),
        ("POST", f"/admin/users/{other['id']}/password", {"password": "hijacked-pass"}),
        ("PATCH", "/admin/roles/reader", {"permissions": {"crm.customers": {"read": "all"}}}),
        ("POST", "/admin/roles", role("mine", **{"crm.customers": {"read": "all"}})),
        ("DELETE", "/admin/roles/reader", None),
        ("POST", "/admin/teams", {"key": "t", "name": "t"}), ("GET", "/admin/audit", None),
        ("GET", "/admin/explain?user=plain&app=crm&table=customers", None),
    ]:
        status, err = p.call(method, path, body)
        assert status == 403, (method, path, status, err)

    # a user manager cannot raise themselves or anyone above what they hold
    refused = [
        ("PATCH", f"/admin/users/{hr['id']}", {"roles": ["hr", "reader", "writer"]}),  # own roles
        ("PATCH", f"/admin/users/{hr['id']}", {"is_admin": True}),
        ("PATCH", f"/admin/users/{hr['id']}", {"team": "sales"}),
        ("PATCH", f"/admin/users/{other['id']}", {"roles": ["writer"]}),  # a role hr does not hold
        ("PATCH", f"/admin/users/{other['id']}", {"is_admin": True}),
        ("POST", "/admin/users", {"username": "puppet", "password": PASSWORD, "roles": ["writer"]}),
        ("POST", "/admin/users", {"username": "puppet", "password": PASSWORD, "is_admin": True}),
        ("PATCH", f"/admin/users/{admin_id}", {"name": "pwned"}),
        ("POST", f"/admin/users/{admin_id}/password", {"password": "hijacked-pass"}),
        ("DELETE", f"/admin/users/{admin_id}", None),
        ("PATCH", "/admin/roles/reader", {"permissions": {"crm.customers": {"read": "all"}}}),
        ("PATCH", "/admin/roles/hr", {"build": True}),
        ("POST", "/admin/roles", role("mine", **{"crm.customers": {"read": "all"}})),
        ("PATCH", "/admin/teams/sales", {"members": ["other", "hr"]}),  # join a team: widen own team scope
        ("PATCH", "/admin/teams/hr_team", {"members": ["hr", "other"]}),  # pull others into own team
        ("PATCH", "/admin/teams/sales", {"manager": "hr"}),
        ("PATCH", f"/admin/users/{other['id']}", {"team": "hr_team"}),
        ("DELETE", "/admin/teams/hr_team", None),
    ]
    for method, path, body in refused:
        status, err = h.call(method, path, body)
        assert status == 403, (method, path, status, err)
    assert db_snapshot(app) == before
    assert len(admin.ok("GET", "/admin/users")["users"]) == n_users
    assert admin.ok("GET", f"/admin/users/{hr['id']}")["roles"] == ["hr", "reader"]

    # a user manager may not take over an account holding a role they don't hold (issue 10: a password
    # reset as a takeover): no password, profile, status or team change on it
    admin.ok("POST", "/admin/roles", role("finance", **{"crm.customers": {"read": "all"}}))
    cfo = admin.ok("POST", "/admin/users", {"username": "cfo", "password": PASSWORD, "roles": ["finance"]})
    before = db_snapshot(app)
    for method, path, body in [
        ("POST", f"/admin/users/{cfo['id']}/password", {"password": "hijacked-pass-1"}),
        ("PATCH", f"/admin/users/{cfo['id']}", {"email": "attacker@example.com"}),
        ("PATCH", f"/admin/users/{cfo['id']}", {"roles": []}),
        ("PATCH", f"/admin/users/{cfo['id']}", {"active": False}),
        ("DELETE", f"/admin/users/{cfo['id']}", None),
    ]:
        status, err = h.call(method, path, body)
        assert status == 403 and "finance" in err["error"]["message"], (method, path, status, err)
    assert db_snapshot(app) == before
    assert Api(app.test_client()).post("/auth/login", {"username": "cfo", "password": "hijacked-pass-1"})[0] == 401

    # what a user manager may do: manage others within the roles they hold
    h.ok("PATCH", f"/admin/users/{other['id']}", {"roles": ["reader"], "name": "Other"})
    made = h.ok("POST", "/admin/users", {"username": "newbie", "password": PASSWORD, "roles": ["reader"]})
    assert made["roles"] == ["reader"]
    assert h.ok("GET", "/admin/roles")["roles"]
    # even an administrator cannot change their own roles, admin flag or status
    assert admin.patch(f"/admin/users/{admin_id}", {"is_admin": False})[0] == 403
    assert admin.delete(f"/admin/users/{admin_id}")[0] == 403
    assert admin.ok("PATCH", f"/admin/users/{admin_id}", {"name": "Root"})["name"] == "Root"


def test_audit_log_records_changes_and_is_read_only(app: Any, admin: Api) -> None:
    setup_app(admin)
    admin.ok("POST", "/admin/roles", role("reader", **{"crm.customers": {"read": "all"}}))
    u = admin.ok("POST", "/admin/users", {"username": "alice", "password": PASSWORD, "roles": ["reader"]})
    admin.ok("PATCH", f"/admin/users/{u['id']}", {"roles": []})
    admin.ok("POST", "/admin/teams", {"key": "east", "name": "East", "members": ["alice"]})
    client = app.test_client()
    client.post("/api/v1/auth/login", json={"username": "alice", "password": "wrong-password"},
                environ_base={"REMOTE_ADDR": "203.0.113.7"})
    admin.ok("PATCH", "/meta/apps/crm/tables/customers", {"label": "Clients"})
    admin.ok("POST", "/meta/apps/crm/tables/customers/fields", {"key": "city", "label": "City", "type": "text"})
    admin.patch("/meta/apps/crm/tables/customers", {"key": "Not A Key"})  # refused: no audit row

    entries = admin.ok("GET", "/admin/audit")["entries"]
    actions = [e["action"] for e in entries]
    for needed in ("role_created", "user_created", "user_updated", "team_created", "login_failed",
                   "schema_changed"):
        assert needed in actions, needed
    assert actions.count("schema_changed") >= 3  # app, table, field and table patch; not the refused one
    failed = next(e for e in entries if e["action"] == "login_failed")
    assert failed["ip"] == "203.0.113.7" and failed["user"]["username"] == "alice"
    upd = next(e for e in entries if e["action"] == "user_updated")
    assert upd["user"]["username"] == "admin" and upd["target"] == "user:alice" and upd["details"]["roles"] == []
    assert entries == sorted(entries, key=lambda e: -e["id"])

    only = admin.ok("GET", "/admin/audit?action=login_failed")["entries"]
    assert [e["action"] for e in only] == ["login_failed"]
    by_user = admin.ok("GET", "/admin/audit?user=alice")["entries"]
    assert {e["user"]["username"] for e in by_user} == {"alice"}
    assert admin.ok("GET", "/admin/audit?since=2999-01-01")["entries"] == []
    assert admin.ok("GET", "/admin/audit?until=2000-01-01T00:00:00Z")["entries"] == []
    page = admin.ok("GET", "/admin/audit?limit=2")
    assert len(page["entries"]) == 2 and page["next_before"]
    rest = admin.ok("GET", f"/admin/audit?before={page['next_before']}")["entries"]
    assert rest and all(e["id"] < page["next_before"] for e in rest)
    assert admin.get("/admin/audit?since=yesterday")[0] == 400
    assert admin.get("/admin/audit?delete=1")[0] == 400
    first = entries[-1]["id"]
    for method in ("POST", "PATCH", "DELETE", "PUT"):
        assert admin.call(method, "/admin/audit", {"id": first})[0] in (404, 405)
        assert admin.call(method, f"/admin/audit/{first}", {})[0] in (404, 405)
    assert admin.ok("GET", "/admin/audit")["entries"][-1]["id"] == first


def test_explain_and_view_as(app: Any, admin: Api) -> None:
    setup_app(admin)
    admin.ok("POST", "/admin/roles", role("account_manager", **{"crm.customers": {
        "read": "own", "create": True, "update": "own", "delete": "none", "fields": {"credit_limit": "hidden"}}}))
    admin.ok("POST", "/admin/roles", role("auditor", **{"crm.customers": {"read": "all"}}))
    am = admin.ok("POST", "/admin/users", {"username": "am", "password": PASSWORD, "roles": ["account_manager"]})
    admin.ok("POST", "/admin/users", {"username": "am2", "password": PASSWORD, "roles": ["account_manager"]})
    mine = admin.ok("POST", "/data/crm/customers", {"fields": {"name": "Mine", "owner": "am", "credit_limit": 5}})
    theirs = admin.ok("POST", "/data/crm/customers", {"fields": {"name": "Theirs", "owner": "am2"}})

    why = admin.ok("GET", f"/admin/explain?user=am&app=crm&table=customers&record={mine['id']}&field=credit_limit")
    assert why["read"] == {"allowed": True, "by": [{"role": "account_manager", "scope": "own"}], "denied_by": []}
    assert why["update"]["allowed"] is True and why["delete"]["allowed"] is False
    assert why["delete"]["denied_by"][0]["role"] == "account_manager"
    assert why["field"]["visible"] is False and why["field"]["hidden_by"] == ["account_manager"]
    assert why["field"]["writable"] is False
    no = admin.ok("GET", f"/admin/explain?user={am['id']}&app=crm&table=customers&record={theirs['id']}&field=name")
    assert no["read"]["allowed"] is False
    assert no["read"]["denied_by"] == [{"role": "account_manager", "scope": "own",
                                        "reason": "the record is outside this scope"}]
    assert no["field"]["visible"] is False
    general = admin.ok("GET", "/admin/explain?user=am&app=crm&table=customers&field=name")
    assert general["create"]["allowed"] is True and general["export"]["allowed"] is False
    assert general["field"]["visible"] is True
    root = admin.ok("GET", "/admin/explain?user=admin&app=crm&table=customers")
    assert root["read"]["by"] == [{"rule": "administrator"}]
    for bad, status in [("user=ghost&app=crm&table=customers", 404), ("user=am&app=crm&table=nope", 404),
                        ("user=am&app=crm&table=customers&record=99999", 404),
                        ("user=am&app=crm&table=customers&field=nope", 404), ("user=am&app=crm", 400),
                        ("user=am&app=crm&table=customers&extra=1", 400)]:
        assert admin.get(f"/admin/explain?{bad}")[0] == status, bad

    # multi-role union seen through explain: auditor opens every row but shows credit_limit only there
    admin.ok("PATCH", f"/admin/users/{am['id']}", {"roles": ["account_manager", "auditor"]})
    both = admin.ok("GET", f"/admin/explain?user=am&app=crm&table=customers&record={mine['id']}&field=credit_limit")
    assert both["field"]["visible"] is True and both["field"]["shown_by"] == ["auditor"]
    admin.ok("PATCH", f"/admin/users/{am['id']}", {"roles": ["account_manager"]})

    # view as: the admin's GET answers are exactly what am would get
    view = {"X-Formwork-View-As": str(am["id"])}
    status, seen = admin.get("/data/crm/customers", headers=view)
    assert status == 200 and [r["id"] for r in seen["records"]] == [mine["id"]]
    assert "credit_limit" not in seen["records"][0]["fields"]
    assert admin.get(f"/data/crm/customers/{theirs['id']}", headers=view)[0] == 404
    assert admin.ok("GET", "/me", headers=view)["username"] == "am"
    assert len(admin.records("crm", "customers")) == 2  # without the header: the admin again
    before = db_snapshot(app)
    assert admin.post("/data/crm/customers", {"fields": {"name": "x"}}, headers=view)[0] == 400
    assert db_snapshot(app) == before
    assert admin.get("/data/crm/customers", headers={"X-Formwork-View-As": "99999"})[0] == 404
    assert admin.get("/data/crm/customers", headers={"X-Formwork-View-As": "me"})[0] == 400
    am_client = token_for(app, "am")
    admin_id = admin.ok("GET", "/me")["id"]
    assert am_client.get("/data/crm/customers", headers={"X-Formwork-View-As": str(admin_id)})[0] == 403
