"""The browser pages through Flask's test client: login, every page for an admin and a restricted user,
escaping of user text, CSRF, inline editing with versions, public forms, the builder."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import select

from formwork import db
from tests.helpers import Api, db_snapshot

PASSWORD = "correct-horse-9"
XSS = "<script>alert(1)</script>"


def login(app: Any, username: str, password: str = PASSWORD) -> tuple[Any, str]:
    """A test client logged in through the login page; returns it and the page's CSRF token."""
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="form_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    resp = client.post("/login", data={"username": username, "password": password, "form_token": token,
                                       "next": "/"})
    assert resp.status_code == 302, resp.get_data(as_text=True)[:500]
    home = client.get("/").get_data(as_text=True)
    csrf = re.search(r'<meta name="csrf-token" content="([^"]*)"', home).group(1)  # type: ignore[union-attr]
    assert csrf
    return client, csrf


def html(resp: Any, status: int = 200) -> str:
    text = resp.get_data(as_text=True)
    assert resp.status_code == status, (resp.status_code, text[:800])
    return str(text)


def build(app: Any, admin: Api) -> dict[str, Any]:
    """A sales app: deals with many field types, views of every kind, two users."""
    admin.ok("POST", "/meta/apps", {"key": "sales", "label": {"en": "Sales", "zh-CN": "销售"}})
    admin.ok("POST", "/meta/apps/sales/tables", {"key": "accounts", "label": {"en": "Accounts", "zh-CN": "客户"},
                                                 "fields": [{"key": "name", "label": "Name", "type": "text"}]})
    admin.ok("POST", "/meta/apps/sales/tables", {"key": "deals", "label": {"en": "Deals", "zh-CN": "商机"}, "fields": [
        {"key": "name", "label": {"en": "Name", "zh-CN": "名称"}, "type": "text", "required": True},
        {"key": "amount", "label": {"en": "Amount", "zh-CN": "金额"}, "type": "currency",
         "options": {"currency": "CNY", "precision": 2}},
        {"key": "stage", "label": {"en": "Stage", "zh-CN": "阶段"}, "type": "single_select", "options": {"choices": [
            {"value": "lead", "label": {"en": "Lead", "zh-CN": "线索"}, "color": "blue"},
            {"value": "won", "label": {"en": "Won", "zh-CN": "赢单"}, "color": "green"},
            {"value": "lost", "label": "Lost", "color": "red"}]}},
        {"key": "tags", "label": "Tags", "type": "multi_select", "options": {"choices": [{"value": "vip"},
                                                                                       {"value": "new"}]}},
        {"key": "close", "label": "Close date", "type": "date"},
        {"key": "hot", "label": "Hot", "type": "checkbox"},
        {"key": "owner", "label": "Owner", "type": "user"},
        {"key": "account", "label": "Account", "type": "link",
         "options": {"table": "accounts", "reverse_key": "deals", "reverse_label": "Deals"}},
        {"key": "secret", "label": "Secret note", "type": "text"},
    ], "views": [
        {"key": "all", "label": "All deals", "type": "grid"},
        {"key": "board", "label": "Pipeline", "type": "kanban", "options": {"group_field": "stage"}},
        {"key": "cal", "label": "Calendar", "type": "calendar", "options": {"date_field": "close"}},
        {"key": "cards", "label": "Cards", "type": "gallery", "options": {"title_field": "name"}},
        {"key": "lead_form", "label": "Contact us", "type": "form", "fields": ["name", "amount", "account"],
         "options": {"public": True, "success_message": {"en": "Thanks, we will call you.", "zh-CN": "谢谢"}}},
        {"key": "inner_form", "label": "Inner", "type": "form", "fields": ["name", "stage"]},
    ]})
    admin.ok("POST", "/meta/apps/sales/dashboards", {"key": "overview", "label": "Overview", "widgets": [
        {"key": "n", "type": "kpi", "table": "deals", "label": "Deals"},
        {"key": "by_stage", "type": "bar", "table": "deals", "group_by": ["stage"], "metrics": ["sum:amount"]},
        {"key": "funnel", "type": "funnel", "table": "deals", "group_by": ["stage"]},
        {"key": "trend", "type": "line", "table": "deals", "group_by": ["close:month"]},
        {"key": "tbl", "type": "table", "table": "deals", "group_by": ["stage"], "metrics": ["count"]}]})
    admin.ok("POST", "/admin/roles", {"key": "rep", "label": "Rep", "permissions": {
        "sales.deals": {"read": "own", "create": True, "update": "own", "delete": "own",
                        "fields": {"secret": "hidden"}},
        "sales.accounts": {"read": "all"}}})
    rep = admin.ok("POST", "/admin/users", {"username": "rep", "name": "Rita Rep", "password": PASSWORD,
                                            "roles": ["rep"]})
    admin.ok("POST", "/admin/users", {"username": "boss", "name": "Bo Boss", "password": PASSWORD,
                                      "is_admin": True})
    acme = admin.ok("POST", "/data/sales/accounts", {"fields": {"name": "Acme"}})
    mine = admin.ok("POST", "/data/sales/deals", {"fields": {
        "name": "Rita's deal", "amount": "1234.5", "stage": "lead", "tags": ["vip"], "close": "2026-05-04",
        "hot": True, "owner": rep["id"], "account": acme["id"], "secret": "TOPSECRET-1"}})
    other = admin.ok("POST", "/data/sales/deals", {"fields": {
        "name": "Someone else's deal", "amount": 99, "stage": "won", "secret": "TOPSECRET-2"}})
    xss = admin.ok("POST", "/data/sales/deals", {"fields": {"name": XSS, "stage": "lead", "owner": rep["id"],
                                                            "close": "2026-05-10"}})
    return {"rep": rep["id"], "acme": acme["id"], "mine": mine, "other": other, "xss": xss}


@pytest.fixture
def world(app: Any, admin: Api) -> dict[str, Any]:
    return build(app, admin)


def test_login_flow_lockout_and_logout(app: Any, world: dict[str, Any]) -> None:
    anon = app.test_client()
    resp = anon.get("/apps/sales/deals")
    assert resp.status_code == 302 and resp.headers["Location"].startswith("/login?next=")
    page = html(anon.get("/login"))
    token = re.search(r'name="form_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    bad = html(anon.post("/login", data={"username": "rep", "password": "nope-nope", "form_token": token}), 401)
    assert "Wrong username or password" in bad
    assert html(anon.post("/login", data={"username": "rep", "password": PASSWORD}), 400)  # no form token
    ok = anon.post("/login", data={"username": "rep", "password": PASSWORD, "form_token": token,
                                   "next": "/apps/sales/deals"})
    assert ok.status_code == 302 and ok.headers["Location"] == "/apps/sales/deals"
    page = html(anon.get("/apps/sales/deals"))
    csrf = re.search(r'<meta name="csrf-token" content="([^"]*)"', page).group(1)  # type: ignore[union-attr]
    assert "Rita Rep" in page
    assert anon.post("/logout").status_code == 403  # CSRF token missing
    out = anon.post("/logout", data={"csrf_token": csrf})
    assert out.status_code == 302 and out.headers["Location"] == "/login"
    assert anon.get("/").status_code == 302
    # an open redirect through ?next= is refused
    tok = re.search(r'name="form_token" value="([^"]+)"', html(anon.get("/login"))).group(1)  # type: ignore[union-attr]
    again = anon.post("/login", data={"username": "rep", "password": PASSWORD, "form_token": tok,
                                      "next": "//evil.example.com/"})
    assert again.headers["Location"] == "/"
    # five wrong passwords lock the account from this address, answered like a wrong password (401) so a
    # lock doesn't reveal that the username exists
    for _ in range(5):
        anon.post("/login", data={"username": "boss", "password": "wrong-wrong", "form_token": tok})
    locked = html(anon.post("/login", data={"username": "boss", "password": PASSWORD, "form_token": tok}), 401)
    assert "Wrong username or password" in locked


def test_every_page_renders_for_an_admin(app: Any, world: dict[str, Any]) -> None:
    c, _csrf = login(app, "boss")
    home = html(c.get("/"))
    assert "Sales" in home and 'href="/apps/sales"' in home
    page = html(c.get("/apps/sales"))
    assert "Accounts" in page and "Deals" in page
    grid = html(c.get("/apps/sales/deals"))
    assert "Rita&#39;s deal" in grid and "¥1,234.50" in grid and "TOPSECRET-2" in grid
    assert 'class="chip c-blue">Lead<' in grid and "Rita Rep" in grid and ">Acme</a>" in grid
    assert 'hx-get="/apps/sales/deals/count?view=all"' in grid
    assert html(c.get("/apps/sales/deals/count?view=all")) == "3 records"
    rows = html(c.get("/apps/sales/deals/rows?view=all&sort=-amount"))
    assert rows.index("Rita&#39;s deal") < rows.index("Someone else")
    board = html(c.get("/apps/sales/deals?view=board"))
    assert 'data-value="won"' in board and "Someone else&#39;s deal" in board and 'name="value"' in board
    cal = html(c.get("/apps/sales/deals?view=cal&month=2026-05"))
    assert "Rita&#39;s deal" in cal and "2026" in cal
    gallery = html(c.get("/apps/sales/deals?view=cards"))
    assert "gcard" in gallery and "Someone else" in gallery
    rid = world["mine"]["id"]
    rec = html(c.get(f"/apps/sales/deals/{rid}"))
    assert 'name="amount"' in rec and "TOPSECRET-1" in rec and "Timeline" in rec and "Rita Rep" in rec
    acc = html(c.get(f"/apps/sales/accounts/{world['acme']}"))
    assert "Linked records" in acc and f'/apps/sales/deals/{rid}"' in acc
    assert 'name="stage"' in html(c.get("/apps/sales/deals/new"))
    assert 'name="stage"' in html(c.get("/apps/sales/deals/forms/inner_form"))
    assert html(c.get("/apps/sales/deals?view=lead_form"), 302) is not None
    dash = html(c.get("/apps/sales/dashboards/overview"))
    assert '">3</a>' in dash and 'data-chart=' in dash and "Lead" in dash and "<svg class=\"chart" not in dash
    assert "New field" in html(c.get("/apps/sales/deals/fields"))
    assert 'id="choice-template"' in html(c.get("/apps/sales/deals/fields/options?type=single_select"))
    assert 'name="formula"' in html(c.get("/apps/sales/deals/fields/new?type=formula"))
    assert 'name="group_field"' in html(c.get("/apps/sales/deals/views/new"))
    assert 'name="key" value="board"' in html(c.get("/apps/sales/deals/views/board/edit"))
    assert html(c.get("/trash"))
    assert "No notifications" in html(c.get("/notifications"))
    results = html(c.get("/apps/sales/deals/link-search/account?_q=ac"))
    assert f'data-id="{world["acme"]}"' in results
    assert html(c.get("/apps/sales/nope"), 404)
    assert html(c.get("/apps/sales/deals/999999"), 404)


def test_restricted_user_sees_only_their_rows_and_fields(app: Any, world: dict[str, Any]) -> None:
    c, _csrf = login(app, "rep")
    for url in ("/apps/sales/deals", "/apps/sales/deals?view=board", "/apps/sales/deals?view=cards",
                "/apps/sales/deals?view=cal&month=2026-05", "/apps/sales/deals/rows?view=all"):
        page = html(c.get(url))
        assert "Someone else" not in page, url
        assert "TOPSECRET" not in page and "Secret note" not in page, url
    grid = html(c.get("/apps/sales/deals"))
    assert "Rita&#39;s deal" in grid
    rec = html(c.get(f"/apps/sales/deals/{world['mine']['id']}"))
    assert "TOPSECRET" not in rec and 'name="secret"' not in rec and "Secret note" not in rec
    assert html(c.get(f"/apps/sales/deals/{world['other']['id']}"), 404)
    assert "secret" not in html(c.get("/apps/sales/deals/new"))
    assert html(c.get("/apps/sales/deals/count"), 200) == "2 records"
    # filtering on a hidden field is refused like an unknown field, and shows as a message
    page = html(c.get("/apps/sales/deals?ff=secret&fo=eq&fv=TOPSECRET-1", headers={"HX-Request": "true",
                                                                                "HX-Target": "grid"}))
    assert "no field" in page and "Rita" not in page
    # builder pages are not for this user
    assert html(c.get("/apps/sales/deals/fields"), 403)
    assert html(c.get("/trash"), 403)
    assert "Build" not in html(c.get("/apps/sales/deals"))


def test_user_text_is_escaped_everywhere(app: Any, world: dict[str, Any]) -> None:
    c, csrf = login(app, "boss")
    rid = world["xss"]["id"]
    pages = [html(c.get("/apps/sales/deals")), html(c.get(f"/apps/sales/deals/{rid}")),
             html(c.get("/apps/sales/deals?view=board")), html(c.get("/apps/sales/deals?view=cal&month=2026-05")),
             html(c.get("/apps/sales/deals?view=cards")), html(c.get(f"/apps/sales/deals/{rid}/row?edit=name")),
             html(c.get("/apps/sales/deals/link-search/account?_q=x"))]
    # the form re-shows a submitted value after a validation error (amount is not a number)
    pages.append(html(c.post("/apps/sales/deals/forms/inner_form",
                             data={"csrf_token": csrf, "name": XSS, "stage": "nope"}), 422))
    pages.append(html(c.post("/f/sales/deals/lead_form", data={"name": XSS, "amount": "x"}), 400))
    for page in pages:
        assert XSS not in page
    assert any("&lt;script&gt;alert(1)&lt;/script&gt;" in p for p in pages[:6])
    assert "&lt;script&gt;" in pages[7]


def test_csrf_is_required_for_every_change(app: Any, world: dict[str, Any]) -> None:
    c, csrf = login(app, "boss")
    rid = world["mine"]["id"]
    before = db_snapshot(app)
    for url, data in ((f"/apps/sales/deals/{rid}/cell/name", {"name": "x", "version": "1"}),
                      (f"/apps/sales/deals/{rid}", {"_fields": "name", "name": "x"}),
                      (f"/apps/sales/deals/{rid}/delete", {}), ("/apps/sales/deals/bulk-delete", {"ids": str(rid)}),
                      ("/apps/sales/deals/quick-add", {"value": "x"}), ("/apps/sales/deals/fields/new",
                                                                       {"key": "x", "label_en": "X", "type": "text"})):
        assert c.post(url, data=data).status_code == 403, url
        assert c.post(url, data={**data, "csrf_token": "wrong"}).status_code == 403, url
    assert db_snapshot(app) == before
    assert c.post(f"/apps/sales/deals/{rid}/cell/name", data={"name": "Renamed", "version": "1"},
                  headers={"X-CSRF-Token": csrf}).status_code == 200


def test_inline_edit_uses_the_version_and_reports_conflicts(app: Any, admin: Api, world: dict[str, Any]) -> None:
    c, csrf = login(app, "boss")
    rid = world["mine"]["id"]
    h = {"X-CSRF-Token": csrf, "HX-Request": "true"}
    editor = html(c.get(f"/apps/sales/deals/{rid}/row?edit=stage&v=1&view=all", headers=h))
    assert 'class="editing"' in editor and 'name="version" value="1"' in editor and "<option" in editor
    row = html(c.post(f"/apps/sales/deals/{rid}/cell/stage", data={"stage": "won", "version": "1", "view": "all"},
                      headers=h))
    assert 'class="chip c-green">Won<' in row and 'data-v="2"' in row
    assert admin.ok("GET", f"/data/sales/deals/{rid}")["fields"]["stage"] == "won"
    # a second edit from the stale version: nothing changes and the row says why
    before = db_snapshot(app)
    stale = html(c.post(f"/apps/sales/deals/{rid}/cell/stage", data={"stage": "lost", "version": "1"}, headers=h))
    assert "by someone else" in stale
    assert admin.ok("GET", f"/data/sales/deals/{rid}")["fields"]["stage"] == "won"
    # opening an editor on a stale row says so too
    assert "by someone else" in html(c.get(f"/apps/sales/deals/{rid}/row?edit=stage&v=1", headers=h))
    # a bad value keeps the editor open with the message next to the input
    bad = html(c.post(f"/apps/sales/deals/{rid}/cell/amount", data={"amount": "lots", "version": "2"}, headers=h))
    assert 'class="editing"' in bad and 'class="err"' in bad
    assert db_snapshot(app) == before
    # the record page: a stale save is refused with 412 and the current values
    page = html(c.post(f"/apps/sales/deals/{rid}", data={"csrf_token": csrf, "_fields": "name", "name": "Late",
                                                         "version": "1"}), 412)
    assert "by someone else" in page
    bad = html(c.post(f"/apps/sales/deals/{rid}", data={"csrf_token": csrf, "_fields": ["name", "amount"],
                                                        "name": "", "amount": "abc", "version": "2"}), 422)
    assert bad.count('class="err"') == 2
    assert db_snapshot(app) == before
    ok = c.post(f"/apps/sales/deals/{rid}", data={"csrf_token": csrf, "_fields": ["name", "tags", "hot", "close"],
                                                 "name": "Renamed", "tags": ["vip", "new"], "close": "2026-06-01",
                                                 "version": "2"})
    assert ok.status_code == 302
    rec = admin.ok("GET", f"/data/sales/deals/{rid}")["fields"]
    assert rec["name"] == "Renamed" and rec["tags"] == ["vip", "new"] and rec["hot"] is False
    assert "Renamed" in html(c.get(f"/apps/sales/deals/{rid}"))


def test_grid_search_filter_sort_paging_quick_add_and_bulk_delete(app: Any, admin: Api,
                                                                   world: dict[str, Any]) -> None:
    admin.ok("POST", "/data/sales/deals", {"records": [{"fields": {"name": f"Bulk {i:03}", "amount": i}}
                                                       for i in range(60)]})
    c, csrf = login(app, "boss")
    hx = {"HX-Request": "true", "HX-Target": "grid", "X-CSRF-Token": csrf}
    page = html(c.get("/apps/sales/deals?view=all&search=Bulk+00", headers=hx))
    assert page.startswith('\n<div id="grid"') or '<div id="grid"' in page[:200]
    assert "Bulk 001" in page and "Rita" not in page
    assert html(c.get("/apps/sales/deals?view=all&ff=stage&fo=eq&fv=won", headers=hx)).count("data-id=") == 1
    assert html(c.get("/apps/sales/deals?view=all&ff=amount&fo=between&fv=10,12", headers=hx)).count("data-id=") == 3
    assert html(c.get("/apps/sales/deals?view=all&ff=hot&fo=eq&fv=true", headers=hx)).count("data-id=") == 1
    first = html(c.get("/apps/sales/deals?view=all&sort=amount", headers=hx))
    assert first.count("data-id=") == 50 and "Load more" in first
    cursor = re.search(r'rows\?([^"]*cursor=[^"]+)"', first).group(1)  # type: ignore[union-attr]
    more = html(c.get("/apps/sales/deals/rows?" + cursor.replace("&amp;", "&")))
    assert more.count("data-id=") == 13 and "Load more" not in more
    assert "Bulk 059" in more or "Bulk 059" in first
    assert html(c.get("/apps/sales/deals?view=all&ff=amount&fo=gt&fv=abc", headers=hx)).count('class="flash error"')
    row = html(c.post("/apps/sales/deals/quick-add", data={"value": "Quick one", "view": "all"}, headers=hx))
    assert "Quick one" in row and "<tr" in row
    ids = [r["id"] for r in admin.records("sales", "deals", search="Bulk", limit=5)]
    resp = c.post("/apps/sales/deals/bulk-delete", data={"ids": [str(i) for i in ids]}, headers=hx)
    assert resp.status_code == 204 and resp.headers["HX-Refresh"] == "true"
    assert len(admin.records("sales", "deals", search="Bulk", limit=100)) == 55
    assert c.post("/apps/sales/deals/bulk-delete", data={"ids": ["x"]}, headers=hx).status_code == 400


def test_kanban_move_and_restricted_move(app: Any, admin: Api, world: dict[str, Any]) -> None:
    c, csrf = login(app, "rep")
    rid = world["mine"]["id"]
    h = {"X-CSRF-Token": csrf, "HX-Request": "true"}
    board = html(c.post(f"/apps/sales/deals/{rid}/move", data={"value": "won", "version": "1", "view": "board"},
                        headers=h))
    assert admin.ok("GET", f"/data/sales/deals/{rid}")["fields"]["stage"] == "won"
    assert '<div id="board"' in board and "Someone else" not in board
    stale = html(c.post(f"/apps/sales/deals/{rid}/move", data={"value": "lost", "version": "1", "view": "board"},
                        headers=h))
    assert "by someone else" in stale
    assert admin.ok("GET", f"/data/sales/deals/{rid}")["fields"]["stage"] == "won"
    # a card outside the user's scope cannot be moved
    other = world["other"]["id"]
    resp = c.post(f"/apps/sales/deals/{other}/move", data={"value": "lead", "view": "board"}, headers=h)
    assert resp.status_code == 404
    assert admin.ok("GET", f"/data/sales/deals/{other}")["fields"]["stage"] == "won"


def test_public_form_creates_as_system_and_is_rate_limited(app: Any, admin: Api, world: dict[str, Any]) -> None:
    anon = app.test_client()
    page = html(anon.get("/f/sales/deals/lead_form"))
    assert 'name="name"' in page and 'name="amount"' in page
    assert 'name="account"' not in page and "Acme" not in page  # no browsing of records from a public form
    token = re.search(r'name="form_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    done = html(anon.post("/f/sales/deals/lead_form", data={"form_token": token, "name": "Web lead",
                                                            "amount": "500", "secret": "smuggled",
                                                            "account": str(world["acme"])}))
    assert "Thanks, we will call you." in done
    engine = app.extensions["formwork"].engine
    rec = admin.records("sales", "deals", search="Web lead")[0]
    assert rec["fields"]["amount"] == 500 and rec["fields"].get("secret") is None
    assert rec["fields"].get("account") is None
    with engine.connect() as conn:
        t = app.extensions["formwork"].catalogs.get(conn).table("sales", "deals")
        assert conn.execute(select(t.sa.c.created_by).where(t.sa.c.id == rec["id"])).scalar() is None
        events = conn.execute(select(db.outbox.c.event).where(db.outbox.c.record_id == rec["id"])).scalars().all()
    assert "form_submitted" in events
    # invalid input: message next to the field, nothing stored
    before = db_snapshot(app)
    bad = html(anon.post("/f/sales/deals/lead_form", data={"form_token": token, "name": "", "amount": "x"}), 422)
    assert 'class="err"' in bad
    assert html(anon.post("/f/sales/deals/lead_form", data={"form_token": "forged", "name": "X"}), 400)
    assert db_snapshot(app) == before
    # forms that are not public are not served without login
    assert html(anon.get("/f/sales/deals/inner_form"), 404)
    assert html(anon.get("/f/sales/deals/all"), 404)
    statuses = [anon.post("/f/sales/deals/lead_form", data={"form_token": token, "name": f"Lead {i}"}).status_code
                for i in range(22)]
    assert statuses[-1] == 429 and 429 in statuses


def test_builder_creates_fields_tables_views_with_type_change_preview(app: Any, admin: Api,
                                                                       world: dict[str, Any]) -> None:
    c, csrf = login(app, "boss")
    base = "/apps/sales/deals"
    resp = c.post(f"{base}/fields/new", data={"csrf_token": csrf, "key": "code", "label_en": "Code",
                                              "label_zh": "编号", "type": "text"})
    assert resp.status_code == 302
    bad = html(c.post(f"{base}/fields/new", data={"csrf_token": csrf, "key": "calc", "label_en": "Calc",
                                                  "type": "formula", "formula": "{nope} + 1"}), 422)
    assert 'class="err"' in bad and "nope" in bad
    dupe = html(c.post(f"{base}/fields/new", data={"csrf_token": csrf, "key": "code", "label_en": "Again",
                                                   "type": "text"}), 422)
    assert "already used" in dupe
    ok = c.post(f"{base}/fields/new", data={"csrf_token": csrf, "key": "level", "label_en": "Level",
                                            "type": "single_select", "choice-0-label": "A", "choice-0-other": "甲",
                                            "choice-0-color": "green", "choice-1-label": "b"})
    assert ok.status_code == 302
    level = admin.ok("GET", "/meta/apps/sales/tables/deals/fields/level")
    assert level["options"]["choices"] == [{"value": "A", "label": {"en": "A", "zh-CN": "甲"}, "color": "green"},
                                           {"value": "b"}]
    rid = world["mine"]["id"]
    admin.ok("PATCH", f"/data/sales/deals/{rid}", {"fields": {"code": "12"}})
    admin.ok("PATCH", f"/data/sales/deals/{world['other']['id']}", {"fields": {"code": "abc"}})
    before = db_snapshot(app)
    preview = html(c.post(f"{base}/fields/code/edit", data={"csrf_token": csrf, "key": "code", "label_en": "Code",
                                                            "type": "number"}))
    assert 'name="confirm_data_loss"' in preview and "<b>1</b>" in preview
    assert db_snapshot(app) == before
    refused = html(c.post(f"{base}/fields/code/edit", data={"csrf_token": csrf, "key": "code", "label_en": "Code",
                                                            "type": "number", "step": "confirm"}), 422)
    assert "emptied" in refused
    assert db_snapshot(app) == before
    done = c.post(f"{base}/fields/code/edit", data={"csrf_token": csrf, "key": "code", "label_en": "Code",
                                                    "type": "number", "step": "confirm", "confirm_data_loss": "1"})
    assert done.status_code == 302
    assert admin.ok("GET", f"/data/sales/deals/{rid}")["fields"]["code"] == 12
    assert c.post(f"{base}/fields/code/delete", data={"csrf_token": csrf}).status_code == 302
    trash = html(c.get("/trash"))
    assert "code" in trash
    entry = re.search(r'/trash/(field-\d+)/restore', trash).group(1)  # type: ignore[union-attr]
    assert c.post(f"/trash/{entry}/restore", data={"csrf_token": csrf}).status_code == 302
    assert "code" in [f["key"] for f in admin.ok("GET", "/meta/apps/sales/tables/deals/fields")["fields"]]
    # tables and views
    assert c.post("/apps/sales/tables/new", data={"csrf_token": csrf, "key": "tasks", "label_en": "Tasks",
                                                  "first_field": "Title"}).status_code == 302
    assert html(c.post("/apps/sales/tables/new", data={"csrf_token": csrf, "key": "Bad Key",
                                                       "label_en": "x"}), 422)
    assert "Title" in html(c.get("/apps/sales/tasks"))
    resp = c.post(f"{base}/views/new", data={"csrf_token": csrf, "key": "hot_board", "label_en": "Hot",
                                             "type": "kanban", "group_field": "stage", "sort_field": "amount",
                                             "sort_dir": "desc", "filter.conj": "and", "filter.a1.field": "hot",
                                             "filter.a1.op": "eq", "filter.a1.value": "true",
                                             "fields": ["name", "amount", "stage"]})
    assert resp.status_code == 302
    view = admin.ok("GET", "/meta/apps/sales/tables/deals/views/hot_board")
    assert view["options"] == {"group_field": "stage"} and view["sort"] == ["-amount"]
    bad = html(c.post(f"{base}/views/new", data={"csrf_token": csrf, "key": "cal2", "label_en": "C",
                                                 "type": "calendar", "filter.conj": "and", "filter.b1.field": "amount",
                                                 "filter.b1.op": "gt", "filter.b1.value": "lots"}), 422)
    assert 'value="lots"' in bad and 'role="alert"' in bad
    missing = html(c.post(f"{base}/views/new", data={"csrf_token": csrf, "key": "cal2", "label_en": "C",
                                                     "type": "calendar"}), 422)
    assert "date_field" in missing
    assert c.post(f"{base}/views/hot_board/edit", data={"csrf_token": csrf, "key": "hot_board", "label_en": "Hot",
                                                        "type": "grid"}).status_code == 302
    assert "filter" not in admin.ok("GET", "/meta/apps/sales/tables/deals/views/hot_board")


def test_locale_switch_shows_chinese_labels(app: Any, world: dict[str, Any]) -> None:
    c, csrf = login(app, "rep")
    assert c.post("/locale", data={"locale": "zh-CN", "csrf_token": csrf, "next": "/apps/sales/deals"}
                  ).status_code == 302
    page = html(c.get("/apps/sales/deals"))
    assert "商机" in page and "名称" in page and "线索" in page and "退出" in page and 'lang="zh-CN"' in page
    engine = app.extensions["formwork"].engine
    with engine.connect() as conn:
        assert conn.execute(select(db.users.c.locale).where(db.users.c.username == "rep")).scalar() == "zh-CN"
    anon = app.test_client()
    anon.post("/locale", data={"locale": "zh-CN"})
    assert "登录" in html(anon.get("/login"))


def test_notifications_bell_and_unauthenticated_fragments(app: Any, world: dict[str, Any]) -> None:
    from formwork.runtime.notifications import notify

    engine = app.extensions["formwork"].engine
    with db.transaction(engine) as conn:
        notify(conn, [world["rep"]], "approval", "Approve <b>deal</b>", "Please look")
    c, csrf = login(app, "rep")
    page = html(c.get("/apps/sales/deals"))
    assert 'id="unread">1<' in page
    panel = html(c.get("/notifications", headers={"HX-Request": "true"}))
    assert "Approve &lt;b&gt;deal&lt;/b&gt;" in panel and "<html" not in panel
    nid = int(re.search(r"/notifications/(\d+)/read", panel).group(1))  # type: ignore[union-attr]
    assert c.post(f"/notifications/{nid}/read", data={"csrf_token": csrf}).status_code == 302
    assert 'id="unread"' not in html(c.get("/apps/sales/deals"))
    boss, boss_csrf = login(app, "boss")
    assert boss.post(f"/notifications/{nid}/read", data={"csrf_token": boss_csrf}).status_code == 404
    # htmx requests without a session are sent to the login page by header, not by a redirect
    anon = app.test_client()
    resp = anon.get("/apps/sales/deals/rows", headers={"HX-Request": "true"})
    assert resp.status_code == 204 and resp.headers["HX-Redirect"].startswith("/login")
