"""Sessions, CSRF, session fixation, lockout, API tokens and deactivation, against a real database."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select, update

from formwork import db
from formwork.runtime import auth
from tests.helpers import Api, db_snapshot

PASSWORD = "correct-horse-9"


def make_user(admin: Api, username: str = "alice", **extra: Any) -> dict[str, Any]:
    return admin.ok("POST", "/admin/users", {"username": username, "name": username.title(),
                                             "password": PASSWORD, "roles": [], **extra})


def engine(app: Any) -> Any:
    return app.extensions["formwork"].engine


def login(client: Any, username: str = "alice", password: str = PASSWORD, **kw: Any) -> Any:
    return client.post("/api/v1/auth/login", json={"username": username, "password": password}, **kw)


def audit_actions(app: Any, username: str) -> list[str]:
    with engine(app).connect() as conn:
        return [r.action for r in conn.execute(select(db.audit).where(db.audit.c.username == username)
                                               .order_by(db.audit.c.id))]


def test_login_sets_hardened_cookie_and_me_works(app: Any, admin: Api) -> None:
    make_user(admin)
    client = app.test_client()
    resp = login(client)
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["user"]["username"] == "alice" and body["csrf_token"]
    cookie = resp.headers["Set-Cookie"]
    assert "fw_session=" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # plain HTTP in tests: a Secure cookie would never come back
    me = client.get("/api/v1/me")
    assert me.status_code == 200 and me.get_json()["username"] == "alice"
    # only a hash of the session secret is stored
    secret = cookie.split("fw_session=", 1)[1].split(";", 1)[0]
    with engine(app).connect() as conn:
        ids = [r.id for r in conn.execute(select(db.sessions))]
    assert secret not in ids and auth.sha256(secret) in ids
    assert audit_actions(app, "alice")[-1] == "login"


def test_cookie_is_secure_over_https(app: Any, admin: Api) -> None:
    make_user(admin)
    resp = login(app.test_client(), base_url="https://crm.example.com")
    assert resp.status_code == 200
    assert "Secure" in resp.headers["Set-Cookie"]


def test_wrong_password_is_401_and_audited_without_leaking_which_part_was_wrong(app: Any, admin: Api) -> None:
    make_user(admin)
    client = app.test_client()
    a = login(client, password="wrong-password")
    b = login(client, username="nobody-here")
    assert a.status_code == b.status_code == 401
    assert a.get_json()["error"]["message"] == b.get_json()["error"]["message"]
    assert "login_failed" in audit_actions(app, "alice")
    assert "login_failed" in audit_actions(app, "nobody-here")
    assert client.get("/api/v1/me").status_code == 401


def test_lockout_after_repeated_failures_then_unlock(app: Any, admin: Api) -> None:
    make_user(admin)
    client = app.test_client()
    for _ in range(auth.MAX_FAILURES):
        assert login(client, password="wrong-password").status_code == 401
    locked = login(client)  # even the right password is refused while locked, answered like a wrong one
    assert locked.status_code == 401
    assert locked.get_json()["error"]["message"] == login(client, password="wrong-password").get_json()[
        "error"]["message"]
    assert "fw_session" not in locked.headers.get("Set-Cookie", "")
    assert audit_actions(app, "alice")[-1] == "login_locked"
    # the lock holds for this address only: nobody can lock a colleague out from elsewhere
    elsewhere = login(app.test_client(), environ_base={"REMOTE_ADDR": "10.9.8.7"})
    assert elsewhere.status_code == 200
    with db.transaction(engine(app)) as conn:  # the lockout window passes
        conn.execute(update(db.audit).where(db.audit.c.username == "alice")
                     .values(at=db.utcnow() - auth.LOCKOUT - dt.timedelta(seconds=1)))
    assert login(client).status_code == 200


def test_lockout_does_not_reveal_which_usernames_exist(app: Any, admin: Api) -> None:
    make_user(admin)
    answers = {}
    for name in ("alice", "nobody-here"):
        client = app.test_client()
        got = [login(client, username=name, password="wrong-password") for _ in range(auth.MAX_FAILURES + 2)]
        answers[name] = [(r.status_code, r.get_json()["error"]["message"]) for r in got]
    assert answers["alice"] == answers["nobody-here"]
    assert {s for s, _ in answers["alice"]} == {401}
    assert audit_actions(app, "nobody-here")[-1] == "login_locked"


def test_password_is_hashed_with_a_modern_algorithm(app: Any, admin: Api) -> None:
    make_user(admin)
    with engine(app).connect() as conn:
        h = conn.execute(select(db.users.c.password_hash).where(db.users.c.username == "alice")).scalar()
    assert PASSWORD not in h and h.startswith("scrypt:")


def test_csrf_required_for_cookie_writes(app: Any, admin: Api) -> None:
    make_user(admin)
    client = app.test_client()
    csrf = login(client).get_json()["csrf_token"]
    before = db_snapshot(app)
    no_token = client.post("/api/v1/auth/tokens", json={"name": "x"})
    wrong = client.post("/api/v1/auth/tokens", json={"name": "x"}, headers={"X-CSRF-Token": csrf + "x"})
    assert no_token.status_code == wrong.status_code == 403
    assert no_token.get_json()["error"]["code"] == "forbidden"
    # a cross-site HTML form post carries the cookie but cannot know the token
    form = client.post("/api/v1/auth/tokens", data={"name": "x"})
    assert form.status_code == 403
    assert db_snapshot(app) == before
    ok = client.post("/api/v1/auth/tokens", json={"name": "x"}, headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 201
    # GETs need no token; bearer tokens need none either (a browser never adds them by itself)
    assert client.get("/api/v1/auth/tokens").status_code == 200
    bearer = Api(app.test_client(), ok.get_json()["token"])
    assert bearer.post("/auth/tokens", {"name": "y"})[0] == 201


def test_form_post_with_csrf_field_is_accepted(app: Any, admin: Api) -> None:
    make_user(admin)
    client = app.test_client()
    csrf = login(client).get_json()["csrf_token"]
    assert client.post("/api/v1/auth/logout", data={}).status_code == 403
    assert client.get("/api/v1/me").status_code == 200  # the refused logout did nothing
    resp = client.post("/api/v1/auth/logout", data={"csrf_token": csrf})
    assert resp.status_code == 200
    assert client.get("/api/v1/me").status_code == 401


def test_logout_invalidates_the_session_server_side(app: Any, admin: Api) -> None:
    make_user(admin)
    client = app.test_client()
    resp = login(client)
    csrf = resp.get_json()["csrf_token"]
    secret = resp.headers["Set-Cookie"].split("fw_session=", 1)[1].split(";", 1)[0]
    assert client.post("/api/v1/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 200
    replay = app.test_client()  # an attacker who kept a copy of the cookie
    replay.set_cookie("fw_session", secret)
    assert replay.get("/api/v1/me").status_code == 401
    with engine(app).connect() as conn:
        assert conn.execute(select(db.sessions)).first() is None
    assert "logout" in audit_actions(app, "alice")


def test_session_fixation(app: Any, admin: Api) -> None:
    make_user(admin)
    client = app.test_client()
    planted = "attacker-chosen-session-id"
    client.set_cookie("fw_session", planted)
    assert client.get("/api/v1/me").status_code == 401  # never a session by itself
    first = login(client)
    new_id = first.headers["Set-Cookie"].split("fw_session=", 1)[1].split(";", 1)[0]
    assert new_id != planted
    attacker = app.test_client()
    attacker.set_cookie("fw_session", planted)
    assert attacker.get("/api/v1/me").status_code == 401
    # logging in again (e.g. a shared browser) gives yet another id and kills the one sent with the request
    second = login(client)
    newer = second.headers["Set-Cookie"].split("fw_session=", 1)[1].split(";", 1)[0]
    assert newer != new_id
    stale = app.test_client()
    stale.set_cookie("fw_session", new_id)
    assert stale.get("/api/v1/me").status_code == 401
    assert client.get("/api/v1/me").status_code == 200


def test_token_revocation_and_ownership(app: Any, admin: Api) -> None:
    make_user(admin)
    make_user(admin, "bob")
    with db.transaction(engine(app)) as conn:
        alice_id = conn.execute(select(db.users.c.id).where(db.users.c.username == "alice")).scalar()
        bob_id = conn.execute(select(db.users.c.id).where(db.users.c.username == "bob")).scalar()
        a_tok = auth.create_token(conn, alice_id, "setup", None)["token"]
        b_tok = auth.create_token(conn, bob_id, "setup", None)["token"]
    alice = Api(app.test_client(), a_tok)
    created = alice.ok("POST", "/auth/tokens", {"name": "script", "expires_in_days": 30})
    assert created["token"].startswith("fw_") and created["expires_at"]
    with engine(app).connect() as conn:
        stored = conn.execute(select(db.api_tokens.c.token_hash).where(db.api_tokens.c.id == created["id"])).scalar()
    assert stored == auth.sha256(created["token"])
    listed = alice.ok("GET", "/auth/tokens")["tokens"]
    assert all("token" not in t for t in listed) and created["id"] in [t["id"] for t in listed]
    script = Api(app.test_client(), created["token"])
    assert script.ok("GET", "/me")["username"] == "alice"
    bob = Api(app.test_client(), b_tok)
    assert bob.delete(f"/auth/tokens/{created['id']}")[0] == 404  # not bob's to revoke
    assert script.get("/me")[0] == 200
    assert alice.delete(f"/auth/tokens/{created['id']}")[0] == 204
    status, err = script.get("/me")
    assert status == 401 and err["error"]["code"] == "unauthorized"
    assert alice.delete(f"/auth/tokens/{created['id']}")[0] == 404
    assert alice.delete("/auth/tokens/abc")[0] == 404
    assert {"token_created", "token_revoked"} <= set(audit_actions(app, "alice"))


def test_token_expiry_and_bad_expiry(app: Any, admin: Api) -> None:
    created = admin.ok("POST", "/auth/tokens", {"name": "short", "expires_in_days": 1})
    client = Api(app.test_client(), created["token"])
    assert client.get("/me")[0] == 200
    with db.transaction(engine(app)) as conn:
        conn.execute(update(db.api_tokens).where(db.api_tokens.c.id == created["id"])
                     .values(expires_at=db.utcnow() - dt.timedelta(seconds=1)))
    assert client.get("/me")[0] == 401
    for bad in (0, -1, 4000, "7", True, 1.5):
        status, err = admin.post("/auth/tokens", {"name": "x", "expires_in_days": bad})
        assert status == 422 and "expires_in_days" in err["error"]["details"], bad
    assert Api(app.test_client(), "fw_nope_nope").get("/me")[0] == 401
    assert Api(app.test_client()).get("/me")[0] == 401


def test_deactivated_user_is_locked_out_at_once(app: Any, admin: Api) -> None:
    user = make_user(admin)
    client = app.test_client()
    csrf = login(client).get_json()["csrf_token"]
    token = client.post("/api/v1/auth/tokens", json={"name": "t"}, headers={"X-CSRF-Token": csrf}).get_json()["token"]
    bearer = Api(app.test_client(), token)
    assert bearer.get("/me")[0] == 200 and client.get("/api/v1/me").status_code == 200
    assert admin.delete(f"/admin/users/{user['id']}")[0] == 204
    assert client.get("/api/v1/me").status_code == 401
    assert bearer.get("/me")[0] == 401
    assert login(app.test_client()).status_code == 401
    # reactivation lets the user log in again, but the old token stays dead
    admin.ok("PATCH", f"/admin/users/{user['id']}", {"active": True})
    assert login(app.test_client()).status_code == 200
    assert bearer.get("/me")[0] == 401


def test_login_rejects_malformed_bodies(app: Any) -> None:
    client = app.test_client()
    for body in ([], {"username": 1, "password": "x"}, {"username": "a"}, {"username": "a", "password": "x" * 2000}):
        resp = client.post("/api/v1/auth/login", json=body)
        assert resp.status_code == 400, body
    assert client.post("/api/v1/auth/login", data="{not json", content_type="application/json").status_code == 400


def test_admin_password_reset_lifts_a_lockout_and_ends_tokens_and_sessions(app: Any, admin: Api) -> None:
    user = make_user(admin)
    with db.transaction(engine(app)) as conn:
        token = auth.create_token(conn, user["id"], "laptop", None)["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    session = app.test_client()
    assert login(session).status_code == 200
    client = app.test_client()
    for _ in range(auth.MAX_FAILURES):
        assert login(client, password="wrong-password").status_code == 401
    assert login(client).status_code == 401  # locked
    assert app.test_client().get("/api/v1/me", headers=bearer).status_code == 200
    assert admin.call("POST", f"/admin/users/{user['id']}/password", {"password": "fresh-secret-42"})[0] == 204
    assert app.test_client().get("/api/v1/me", headers=bearer).status_code == 401
    assert session.get("/api/v1/me").status_code == 401
    assert login(client, password="fresh-secret-42").status_code == 200  # the lockout is lifted
    assert login(client).status_code == 401  # the old password is gone
