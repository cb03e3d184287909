"""Administration in the browser (issue 12) through Flask's test client: users, teams, roles, the audit log,
my account, set-password links, the password policy, delegated administration (the CRM's system
administrator onboards an account manager) and 403 for those without the right."""

from __future__ import annotations

import csv
import io
import re
from typing import Any

import pytest
from sqlalchemy import select

from formwork import db
from formwork.runtime import passwords
from tests.helpers import Api, db_snapshot
from tests.test_ui_pages import PASSWORD, html, login


def setup_app(admin: Api) -> None:
    admin.ok("POST", "/meta/apps", {"key": "sales", "label": {"en": "Sales", "zh-CN": "销售"}})
    admin.ok("POST", "/meta/apps/sales/tables", {"key": "deals", "label": {"en": "Deals", "zh-CN": "商机"}, "fields": [
        {"key": "name", "label": {"en": "Name", "zh-CN": "名称"}, "type": "text"},
        {"key": "owner", "label": "Owner", "type": "user"},
        {"key": "secret", "label": {"en": "Secret note", "zh-CN": "机密"}, "type": "text"}]})


def csrf_of(page: str) -> str:
    return re.search(r'<meta name="csrf-token" content="([^"]*)"', page).group(1)  # type: ignore[union-attr]


# --- the password policy --------------------------------------------------------------------------------
def test_password_policy() -> None:
    assert passwords.problem("short") == "too_short"
    assert passwords.problem("x" * 2000) == "too_long"
    assert passwords.problem("password123") == "common"
    assert passwords.problem("12345678") == "common"
    assert passwords.problem("aaaaaaaaaa") == "common"
    assert passwords.problem("MaryJones", "maryjones") == "username"
    assert passwords.problem("maryjones2024", "MaryJones") == "username"
    assert passwords.problem("correct-horse-9", "mary") is None


def test_policy_holds_in_api_and_cli(app: Any, admin: Api) -> None:
    for pw, why in (("password1", "common"), ("bob-the-user", "username"), ("short", "at least")):
        status, err = admin.post("/admin/users", {"username": "bob-the-user", "password": pw})
        assert status == 422 and why in str(err["error"]["details"]["password"]), (pw, err)
    from click.testing import CliRunner

    from formwork.cli import main

    runner = CliRunner(env={"FORMWORK_DATABASE_URL": app.config["DATABASE_URL"]})
    res = runner.invoke(main, ["user", "create", "carol", "--password", "qwerty123"])
    assert res.exit_code != 0 and "common" in res.output


# --- users in the pages -----------------------------------------------------------------------------------
def test_admin_creates_user_with_password_and_link(app: Any, admin: Api) -> None:
    setup_app(admin)
    admin.ok("POST", "/admin/roles", {"key": "rep", "label": {"en": "Rep", "zh-CN": "销售代表"},
                                      "permissions": {"sales.deals": {"read": "own"}}})
    admin.ok("POST", "/admin/teams", {"key": "east", "name": "East"})
    client, csrf = login(app, "admin", "admin-pass-1")
    page = html(client.get("/admin/users/new"))
    assert 'name="roles" value="rep"' in page and "East" in page
    # errors come back next to their inputs, nothing typed is lost, nothing is created
    before = db_snapshot(app)
    bad = html(client.post("/admin/users/new", data={"csrf_token": csrf, "name": "Rita", "username": "rita",
                                                     "email": "nope", "password": "password1", "roles": ["rep"],
                                                     "password_mode": "password"}), 422)
    assert "Not an email address." in bad and "most common passwords" in bad
    assert 'value="Rita"' in bad and 'value="rita"' in bad
    assert db_snapshot(app) == before
    # without the CSRF token: refused
    assert client.post("/admin/users/new", data={"name": "X", "username": "x"}).status_code == 403
    ok = client.post("/admin/users/new", data={"csrf_token": csrf, "name": "Rita Rep", "username": "rita",
                                               "email": "rita@example.com", "password": PASSWORD, "roles": ["rep"],
                                               "team": "east", "password_mode": "password", "locale": "zh-CN",
                                               "timezone": "Asia/Shanghai"})
    assert ok.status_code == 302
    rita = admin.ok("GET", "/admin/users?q=rita")["users"][0]
    assert rita["roles"] == ["rep"] and rita["team"] == "east" and rita["locale"] == "zh-CN"
    login(app, "rita")
    # a one-time link instead of a password: shown to the admin once, works once, stored hashed
    made = html(client.post("/admin/users/new", data={"csrf_token": csrf, "name": "Li Lei", "username": "lilei",
                                                      "password_mode": "link"}))
    url = re.search(r'id="link-url" readonly value="([^"]+)"', made).group(1)  # type: ignore[union-attr]
    token = url.rsplit("/", 1)[1]
    with app.extensions["formwork"].engine.connect() as conn:
        stored = conn.execute(select(db.password_links.c.token_hash)).scalars().all()
    assert token not in stored and len(stored) == 1
    anon = app.test_client()
    form = html(anon.get(f"/set-password/{token}"))
    assert "Li Lei" in form
    weak = html(anon.post(f"/set-password/{token}", data={"new_password": "lilei", "repeat_password": "lilei"}),
                422)
    assert "At least 8 characters" in weak
    done = html(anon.post(f"/set-password/{token}", data={"new_password": PASSWORD, "repeat_password": PASSWORD}))
    assert "Log in with it now" in done
    login(app, "lilei")
    again = html(anon.post(f"/set-password/{token}", data={"new_password": "other-pass-77",
                                                           "repeat_password": "other-pass-77"}), 404)
    assert "can&#39;t be used" in again
    assert anon.get("/set-password/" + "x" * 43).status_code == 404


def test_deactivate_reset_and_sign_out(app: Any, admin: Api) -> None:
    setup_app(admin)
    admin.ok("POST", "/admin/users", {"username": "sam", "name": "Sam", "password": PASSWORD})
    sam_id = admin.ok("GET", "/admin/users?q=sam")["users"][0]["id"]
    client, csrf = login(app, "admin", "admin-pass-1")
    sam, _ = login(app, "sam")
    token = admin.ok("POST", "/auth/tokens", {"name": "t"})  # the admin's own, to prove theirs stays
    assert sam.get("/").status_code == 200
    # sign out everywhere
    assert client.post(f"/admin/users/{sam_id}/signout", data={"csrf_token": csrf}).status_code == 302
    assert sam.get("/").status_code == 302
    # deactivate: can't log in; reactivate
    sam, _ = login(app, "sam")
    assert client.post(f"/admin/users/{sam_id}/active", data={"csrf_token": csrf, "active": "false"}).status_code \
        == 302
    assert sam.get("/").status_code == 302
    assert Api(app.test_client()).post("/auth/login", {"username": "sam", "password": PASSWORD})[0] == 401
    client.post(f"/admin/users/{sam_id}/active", data={"csrf_token": csrf, "active": "true"})
    # reset: policy in the user's language, then the old password stops working
    bad = html(client.post(f"/admin/users/{sam_id}/password", data={"csrf_token": csrf, "mode": "password",
                                                                   "new_password": "sam"}), 422)
    assert "At least 8 characters" in bad
    client.post(f"/admin/users/{sam_id}/password", data={"csrf_token": csrf, "mode": "password",
                                                       "new_password": "brand-new-77"})
    assert Api(app.test_client()).post("/auth/login", {"username": "sam", "password": PASSWORD})[0] == 401
    login(app, "sam", "brand-new-77")
    assert token["token"]
    actions = [e["action"] for e in admin.ok("GET", "/admin/audit?limit=50")["entries"]]
    for a in ("user_signed_out", "user_deactivated", "password_reset"):
        assert a in actions


def test_pages_are_403_without_the_right(app: Any, admin: Api) -> None:
    setup_app(admin)
    admin.ok("POST", "/admin/users", {"username": "plain", "name": "Plain", "password": PASSWORD})
    client, csrf = login(app, "plain")
    home = html(client.get("/"))
    assert "/admin/users" not in home and "/account" in home
    for path in ("/admin/users", "/admin/users/new", "/admin/teams", "/admin/roles", "/admin/audit",
                 "/admin/audit.csv", "/admin/explain", "/admin/users/1"):
        assert client.get(path).status_code == 403, path
    for path in ("/admin/users/new", "/admin/teams", "/admin/users/1/signout", "/admin/users/1/password"):
        assert client.post(path, data={"csrf_token": csrf, "name": "x"}).status_code == 403, path
    # my account is everyone's
    assert "Change password" in html(client.get("/account"))


def test_team_and_role_editor_then_the_member_sees_only_what_the_role_allows(app: Any, admin: Api) -> None:
    setup_app(admin)
    admin.ok("POST", "/admin/users", {"username": "una", "name": "Una", "password": PASSWORD})
    una = admin.ok("GET", "/admin/users?q=una")["users"][0]
    admin.ok("POST", "/data/sales/deals", {"fields": {"name": "Una's deal", "owner": una["id"],
                                                      "secret": "SECRET-1"}})
    admin.ok("POST", "/data/sales/deals", {"fields": {"name": "Not hers", "secret": "SECRET-2"}})
    client, csrf = login(app, "admin", "admin-pass-1")
    # a team with a manager and a member
    made = client.post("/admin/teams", data={"csrf_token": csrf, "name": "North 北区"})
    assert made.status_code == 302
    key = made.headers["Location"].split("/admin/teams/")[1].split("?")[0]
    client.post(f"/admin/teams/{key}", data={"csrf_token": csrf, "name": "North 北区", "manager": str(una["id"]),
                                             "members": [str(una["id"])], "members_sent": "1"})
    team = admin.ok("GET", f"/admin/teams/{key}")
    assert team["manager"]["username"] == "una" and [m["username"] for m in team["members"]] == ["una"]
    # a role made in the editor: deals read own, the secret hidden, dashboards off
    made = client.post("/admin/roles", data={"csrf_token": csrf, "label_en": "Field rep", "label_zh": "外勤"})
    rkey = made.headers["Location"].split("/admin/roles/")[1].split("?")[0]
    editor = html(client.get(f"/admin/roles/{rkey}"))
    assert 'name="sales.deals:read"' in editor and 'name="sales.deals:field:secret"' in editor
    bad = html(client.post(f"/admin/roles/{rkey}", data={"csrf_token": csrf, "label_en": "", "label_zh": ""}), 422)
    assert "Required." in bad
    client.post(f"/admin/roles/{rkey}", data={
        "csrf_token": csrf, "label_en": "Field rep", "label_zh": "外勤", "sales.deals:read": "own",
        "sales.deals:update": "own", "sales.deals:delete": "none", "sales.deals:create": "on",
        "sales.deals:field:secret": "hidden", "sales.*:read": "none", "sales.*:update": "none",
        "sales.*:delete": "none"})
    doc = admin.ok("GET", f"/admin/roles/{rkey}")
    assert doc["permissions"] == {"sales.deals": {"read": "own", "update": "own", "delete": "none", "create": True,
                                                  "fields": {"secret": "hidden"}}}
    assert not doc.get("view_dashboards")
    admin.ok("PATCH", f"/admin/users/{una['id']}", {"roles": [rkey]})
    # preview as this role, as Una
    prev = html(client.get(f"/admin/roles/{rkey}/preview?table=sales.deals&as={una['id']}"))
    assert "Una&#39;s deal" in prev and "Not hers" not in prev and "SECRET" not in prev
    assert "Hidden columns: Secret note" in prev
    # why can Una see it
    ex = html(client.get(f"/admin/explain?user={una['id']}&table=sales.deals&field=secret"))
    assert "may see it: role “Field rep” (their own records)" in ex
    assert "The field Secret note is hidden from Una" in ex
    # Una herself
    una_client, _ = login(app, "una")
    grid = html(una_client.get("/apps/sales/deals"))
    assert "Una&#39;s deal" in grid and "Not hers" not in grid and "SECRET" not in grid
    assert una_client.get("/apps/sales").status_code in (200, 302)


def test_audit_page_filters_opens_and_exports(app: Any, admin: Api) -> None:
    setup_app(admin)
    admin.ok("POST", "/admin/users", {"username": "zed", "name": "Zed", "password": PASSWORD})
    client, _ = login(app, "admin", "admin-pass-1")
    page = html(client.get("/admin/audit?action=user_created"))
    assert "User created" in page and 'href="/admin/users/' in page
    assert "Logged in" not in page.split("<tbody>")[1]
    today = html(client.get("/admin/audit?since=2000-01-01&until=2999-12-31&user=admin"))
    assert "Logged in" in today
    assert "Nothing was logged" in html(client.get("/admin/audit?until=2000-01-01"))
    resp = client.get("/admin/audit.csv?action=user_created")
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    rows = list(csv.reader(io.StringIO(resp.get_data(as_text=True).lstrip("\ufeff"))))
    assert rows[0][3] == "Action" and any(r[4] == "user:zed" for r in rows[1:])
    schema = html(client.get("/admin/audit?action=schema_changed"))
    assert 'href="/apps/sales"' in schema and ">Sales<" in schema  # the app a design change was made in


# --- my account ------------------------------------------------------------------------------------------
def test_my_account_password_ends_other_sessions_and_tokens(app: Any, admin: Api) -> None:
    admin.ok("POST", "/admin/users", {"username": "mia", "name": "Mia", "password": PASSWORD})
    first, csrf = login(app, "mia")
    second, _ = login(app, "mia")
    wrong = html(first.post("/account/password", data={"csrf_token": csrf, "current_password": "nope-nope-1",
                                                       "new_password": "fresh-secret-42",
                                                       "repeat_password": "fresh-secret-42"}), 422)
    assert "This is not your current password." in wrong
    weak = html(first.post("/account/password", data={"csrf_token": csrf, "current_password": PASSWORD,
                                                      "new_password": "mia", "repeat_password": "mia"}), 422)
    assert "At least 8 characters" in weak
    ok = html(first.post("/account/password", data={"csrf_token": csrf, "current_password": PASSWORD,
                                                    "new_password": "fresh-secret-42",
                                                    "repeat_password": "fresh-secret-42"}))
    assert "Your other sessions (1) have ended" in ok
    assert first.get("/account").status_code == 200  # this session stays
    assert second.get("/account").status_code == 302  # the other one ended
    login(app, "mia", "fresh-secret-42")
    # profile: language and time zone
    first.post("/account/profile", data={"csrf_token": csrf, "name": "Mia M", "email": "", "locale": "zh-CN",
                                         "timezone": "Asia/Shanghai"})
    page = html(first.get("/account"))
    assert "我的账号" in page and "修改密码" in page
    # the email copy of notifications: off by default, switched on and off from the page
    from formwork import db
    from formwork.runtime import notifications

    def copy_on() -> bool:
        with db.transaction(app.extensions["formwork"].engine) as conn:
            uid = conn.execute(db.users.select().where(db.users.c.username == "mia")).first().id
            return notifications.email_copy(conn, uid)

    assert 'name="email_copy"' in page and not copy_on()
    first.post("/account/profile", data={"csrf_token": csrf, "name": "Mia M", "locale": "zh-CN",
                                         "timezone": "Asia/Shanghai", "email_copy_sent": "1", "email_copy": "on"})
    assert copy_on() and 'name="email_copy" checked' in html(first.get("/account"))
    first.post("/account/profile", data={"csrf_token": csrf, "name": "Mia M", "locale": "zh-CN",
                                         "timezone": "Asia/Shanghai", "email_copy_sent": "1"})
    assert not copy_on()
    bad = html(first.post("/account/profile", data={"csrf_token": csrf, "name": "Mia M", "locale": "zh-CN",
                                                    "timezone": "Mars/Olympus"}), 422)
    assert "请检查此项" in bad
    # tokens: created, shown once, revoked
    made = html(first.post("/account/tokens", data={"csrf_token": csrf, "token_name": "script", "expires": "30"}))
    token = re.search(r'id="new-token" class="token-once" readonly value="([^"]+)"', made).group(1)  # type: ignore[union-attr]
    assert Api(app.test_client(), token).get("/me")[0] == 200
    assert token not in html(first.get("/account"))
    tid = admin.ok("GET", "/admin/audit?action=token_created")["entries"][0]["target"].split(":")[1]
    first.post(f"/account/tokens/{tid}/revoke", data={"csrf_token": csrf})
    assert Api(app.test_client(), token).get("/me")[0] == 401


def test_api_change_password_and_me(app: Any, admin: Api) -> None:
    admin.ok("POST", "/admin/users", {"username": "ned", "name": "Ned", "password": PASSWORD})
    c = app.test_client()
    body = Api(c).ok("POST", "/auth/login", {"username": "ned", "password": PASSWORD})
    api = Api(c, csrf=body["csrf_token"])
    status, err = api.post("/auth/password", {"current_password": "wrong-one-1", "password": "fresh-secret-42"})
    assert status == 422 and "current_password" in err["error"]["details"]
    assert api.post("/auth/password", {"current_password": PASSWORD, "password": "ned"})[0] == 422
    assert api.ok("POST", "/auth/password", {"current_password": PASSWORD, "password": "fresh-secret-42"})
    assert api.ok("PATCH", "/me", {"timezone": "Asia/Shanghai"})["timezone"] == "Asia/Shanghai"
    assert api.patch("/me", {"roles": ["x"]})[0] == 422
    # password links over the API
    ned = admin.ok("GET", "/admin/users?q=ned")["users"][0]
    link = admin.ok("POST", f"/admin/users/{ned['id']}/password-link")
    assert link["url"].endswith(link["token"])
    anon = Api(app.test_client())
    assert anon.post("/auth/password-link", {"token": link["token"], "password": "123"})[0] == 422
    assert anon.call("POST", "/auth/password-link", {"token": link["token"], "password": "link-set-pass-9"})[0] \
        == 204
    assert anon.post("/auth/password-link", {"token": link["token"], "password": "link-set-pass-9"})[0] == 404
    assert anon.ok("POST", "/auth/login", {"username": "ned", "password": "link-set-pass-9"})


# --- delegated administration ------------------------------------------------------------------------------
@pytest.fixture
def crm(app: Any, admin: Api) -> Api:
    """The CRM template's roles and a system administrator (not a Formwork administrator)."""
    admin.ok("POST", "/meta/templates/crm/install", {"demo_data": False})
    admin.ok("POST", "/admin/users", {"username": "sysadmin", "name": "Sys Admin", "password": PASSWORD,
                                      "roles": ["system_admin"]})
    return admin


def test_system_administrator_onboards_an_account_manager(app: Any, crm: Api) -> None:
    client, csrf = login(app, "sysadmin")
    home = html(client.get("/"))
    assert "/admin/users" in home
    form = html(client.get("/admin/users/new"))
    assert 'value="account_manager"' in form and "is_admin" not in form  # only admins make admins
    resp = client.post("/admin/users/new", data={"csrf_token": csrf, "name": "Amy AM", "username": "amy",
                                                 "roles": ["account_manager"], "password_mode": "password",
                                                 "password": "amy-secret-77"})
    assert resp.status_code == 302, resp.get_data(as_text=True)[:500]
    amy = crm.ok("GET", "/admin/users?q=amy")["users"][0]
    assert amy["roles"] == ["account_manager"]
    # and manages her account afterwards (reset, sign out), all in the audit log
    assert client.post(f"/admin/users/{amy['id']}/signout", data={"csrf_token": csrf}).status_code == 302
    entries = crm.ok("GET", "/admin/audit?user=sysadmin")["entries"]
    assert {"user_created", "user_signed_out"} <= {e["action"] for e in entries}
    # a system administrator doesn't make administrators nor changes roles
    sys_api = Api(app.test_client(), csrf=None)
    body = sys_api.ok("POST", "/auth/login", {"username": "sysadmin", "password": PASSWORD})
    sys_api.csrf = body["csrf_token"]
    assert sys_api.post("/admin/users", {"username": "boss2", "password": "boss-secret-77", "is_admin": True})[0] \
        == 403
    assert sys_api.patch("/admin/roles/account_manager", {"build": True})[0] == 403
    assert client.post("/admin/roles/account_manager", data={"csrf_token": csrf, "label_en": "x"}).status_code \
        == 403


def test_a_manager_grants_no_role_with_more_power(app: Any, admin: Api) -> None:
    setup_app(admin)
    admin.ok("POST", "/admin/roles", {"key": "hr", "label": "HR", "manage_users": True,
                                      "permissions": {"sales.deals": {"read": "own"}}})
    admin.ok("POST", "/admin/roles", {"key": "builder", "label": "Builder", "build": True})
    admin.ok("POST", "/admin/roles", {"key": "all_deals", "label": "All deals",
                                      "permissions": {"sales.deals": {"read": "all"}}})
    admin.ok("POST", "/admin/roles", {"key": "own_deals", "label": "Own deals",
                                      "permissions": {"sales.deals": {"read": "own"}}})
    admin.ok("POST", "/admin/users", {"username": "hank", "name": "Hank", "password": PASSWORD, "roles": ["hr"]})
    admin.ok("POST", "/admin/users", {"username": "bea", "name": "Bea", "password": PASSWORD,
                                      "roles": ["all_deals"]})
    client, csrf = login(app, "hank")
    form = html(client.get("/admin/users/new"))
    assert re.search(r'value="builder"[^>]* disabled', form) and re.search(r'value="all_deals"[^>]* disabled', form)
    assert not re.search(r'value="own_deals"[^>]* disabled', form)
    bad = html(client.post("/admin/users/new", data={"csrf_token": csrf, "name": "P", "username": "puppet",
                                                     "roles": ["builder"], "password_mode": "password",
                                                     "password": "puppet-pass-7"}), 422)
    assert "You may not grant Builder" in bad
    ok = client.post("/admin/users/new", data={"csrf_token": csrf, "name": "Olly", "username": "olly",
                                               "roles": ["own_deals"], "password_mode": "password",
                                               "password": "olly-pass-77"})
    assert ok.status_code == 302
    # no takeover of someone with more power: Bea reads every deal, Hank only his own
    bea = admin.ok("GET", "/admin/users?q=bea")["users"][0]
    assert client.post(f"/admin/users/{bea['id']}/password", data={"csrf_token": csrf, "mode": "password",
                                                                  "new_password": "hijack-pass-9"}).status_code == 422
    assert client.post(f"/admin/users/{bea['id']}/password", data={"csrf_token": csrf, "mode": "link"}) \
        .status_code == 403
    assert Api(app.test_client()).post("/auth/login", {"username": "bea", "password": "hijack-pass-9"})[0] == 401


def test_role_scope_with_a_custom_condition(app: Any, admin: Api) -> None:
    setup_app(admin)
    admin.ok("POST", "/admin/roles", {"key": "picky", "label": "Picky", "permissions": {}})
    admin.ok("POST", "/data/sales/deals", {"fields": {"name": "Big one"}})
    admin.ok("POST", "/data/sales/deals", {"fields": {"name": "Small one"}})
    client, csrf = login(app, "admin", "admin-pass-1")
    # picking "Custom condition" brings the condition builder for that table and operation
    frag = html(client.get("/admin/roles/picky/scope?row=sales.deals&op=read&sales.deals:read=custom"))
    assert 'name="cs-sales-deals-read.conj"' in frag
    assert html(client.get("/admin/roles/picky/scope?row=sales.deals&op=read&sales.deals:read=own")) == ""
    base = {"csrf_token": csrf, "label_en": "Picky", "sales.deals:read": "custom", "sales.deals:update": "none",
            "sales.deals:delete": "none", "sales.*:read": "none", "sales.*:update": "none", "sales.*:delete": "none"}
    # an empty builder: the error is shown next to it, nothing changes
    empty = html(client.post("/admin/roles/picky", data={**base, "cs-sales-deals-read.conj": "and"}), 422)
    assert "Add at least one condition" in empty
    assert admin.ok("GET", "/admin/roles/picky")["permissions"] == {}
    client.post("/admin/roles/picky", data={**base, "cs-sales-deals-read.conj": "and",
                                            "cs-sales-deals-read.c1.field": "name",
                                            "cs-sales-deals-read.c1.op": "contains",
                                            "cs-sales-deals-read.c1.value": "Big"})
    read = admin.ok("GET", "/admin/roles/picky")["permissions"]["sales.deals"]["read"]
    assert read["and"][0] == {"field": "name", "op": "contains", "value": "Big"}, read
    page = html(client.get("/admin/roles/picky"))
    assert 'name="cs-sales-deals-read.conj"' in page and "Big" in page
    prev = html(client.get("/admin/roles/picky/preview?table=sales.deals"))
    assert "Big one" in prev and "Small one" not in prev


def test_a_user_manager_previews_and_explains_only_within_their_power(app: Any, admin: Api) -> None:
    setup_app(admin)
    admin.ok("POST", "/admin/roles", {"key": "hr", "label": "HR", "manage_users": True,
                                      "permissions": {"sales.deals": {"read": "own"}}})
    admin.ok("POST", "/admin/roles", {"key": "all_deals", "label": "All deals",
                                      "permissions": {"sales.deals": {"read": "all"}}})
    admin.ok("POST", "/admin/users", {"username": "hank", "name": "Hank", "password": PASSWORD, "roles": ["hr"]})
    admin.ok("POST", "/data/sales/deals", {"fields": {"name": "Nobody's deal TOPSECRET"}})
    client, _ = login(app, "hank")
    assert client.get("/admin/roles/all_deals/preview?table=sales.deals").status_code == 403
    assert "Preview as this role" not in html(client.get("/admin/roles/all_deals"))
    assert "Preview as this role" in html(client.get("/admin/roles/hr"))
    assert "TOPSECRET" not in html(client.get("/admin/roles/hr/preview?table=sales.deals"))
    assert "TOPSECRET" not in html(client.get("/admin/explain?table=sales.deals"))
