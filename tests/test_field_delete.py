"""Deleting a field: views and table settings stop naming it (they keep working and can still be saved);
what cannot do without it (a board's columns, a calendar's dates, an owner field, a role's row access) makes
the delete a 409 that names each user, and the builder page says so in words next to the field."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import update

from formwork import db
from tests.helpers import Api, db_snapshot
from tests.test_ui_pages import login

STAGES = {"choices": [{"value": "a", "label": "A"}, {"value": "b", "label": "B"}]}


def _world(admin: Api) -> None:
    admin.ok("POST", "/meta/apps", {"key": "s", "label": "Sales"})
    admin.ok("POST", "/meta/apps/s/tables", {"key": "acc", "label": {"en": "Accounts", "zh-CN": "客户"}, "fields": [
        {"key": "name", "label": "Name", "type": "text"},
        {"key": "tier", "label": {"en": "Tier", "zh-CN": "等级"}, "type": "text"},
        {"key": "stage", "label": "Stage", "type": "single_select", "options": STAGES},
        {"key": "amt", "label": {"en": "Amount", "zh-CN": "金额"}, "type": "number"}]})
    admin.ok("POST", "/meta/apps/s/tables", {"key": "deal", "label": "Deals", "fields": [
        {"key": "title", "label": "Title", "type": "text"},
        {"key": "acc", "label": "Account", "type": "link", "options": {"table": "acc"}}]})
    admin.ok("POST", "/meta/apps/s/tables/acc/views", {
        "key": "big", "label": "Big", "type": "grid", "fields": ["name", "amt", "tier"], "sort": ["-amt", "name"],
        "group_by": ["amt"], "filter": {"and": [{"field": "amt", "op": "gt", "value": 1},
                                                {"field": "name", "op": "is_not_empty"}]},
        "options": {"column_widths": {"amt": 120, "name": 200}}})
    admin.ok("POST", "/meta/apps/s/tables/acc/views", {"key": "only_amt", "label": "Only amount", "type": "grid",
                                                       "filter": {"not": {"field": "amt", "op": "gt", "value": 1}}})
    admin.ok("POST", "/meta/apps/s/tables/acc/views", {"key": "board", "label": "Board", "type": "kanban",
                                                       "options": {"group_field": "stage", "sum_field": "amt"}})
    admin.ok("POST", "/meta/apps/s/tables/deal/views", {"key": "via", "label": "Via", "type": "grid", "filter": {
        "or": [{"field": "acc.amt", "op": "gt", "value": 1}, {"field": "acc.name", "op": "eq", "value": "X"}]}})
    admin.ok("POST", "/data/s/acc", {"fields": {"name": "X", "amt": 5, "stage": "a", "tier": "gold"}})


def test_views_forget_a_deleted_field_and_keep_working(admin: Api) -> None:
    _world(admin)
    assert admin.call("DELETE", "/meta/apps/s/tables/acc/fields/amt")[0] == 204
    big = admin.ok("GET", "/meta/apps/s/tables/acc/views/big")
    assert big["fields"] == ["name", "tier"] and big["sort"] == ["name"] and big["group_by"] == []
    assert big["filter"] == {"and": [{"field": "name", "op": "is_not_empty"}]}
    assert big["options"]["column_widths"] == {"name": 200}
    assert "filter" not in admin.ok("GET", "/meta/apps/s/tables/acc/views/only_amt")
    assert admin.ok("GET", "/meta/apps/s/tables/acc/views/board")["options"] == {"group_field": "stage"}
    assert admin.ok("GET", "/meta/apps/s/tables/deal/views/via")["filter"] == {
        "or": [{"field": "acc.name", "op": "eq", "value": "X"}]}
    assert [r["fields"]["name"] for r in admin.records("s", "acc", view="big")] == ["X"]
    admin.ok("PATCH", "/meta/apps/s/tables/acc/views/big", {"label": "Big ones"})  # saves again


def test_what_cannot_do_without_the_field_refuses_and_changes_nothing(app: Any, admin: Api) -> None:
    _world(admin)
    admin.ok("POST", "/admin/roles", {"key": "rep", "label": "Rep", "permissions": {
        "s.acc": {"read": {"field": "tier", "op": "ne", "value": "gold"}},
        "s.deal": {"read": {"field": "acc.name", "op": "ne", "value": "Y"}}}})
    before = db_snapshot(app)
    status, body = admin.call("DELETE", "/meta/apps/s/tables/acc/fields/stage")
    assert status == 409 and body["error"]["details"]["used_by"] == [
        {"kind": "view", "label": "Board", "table": {"en": "Accounts", "zh-CN": "客户"}}]
    status, body = admin.call("DELETE", "/meta/apps/s/tables/acc/fields/tier")
    assert status == 409 and [u["kind"] for u in body["error"]["details"]["used_by"]] == ["role"]
    status, body = admin.call("DELETE", "/meta/apps/s/tables/acc/fields/name")  # through the deals' link
    assert status == 409 and [u["label"] for u in body["error"]["details"]["used_by"]] == ["Rep"]
    assert db_snapshot(app) == before


def test_an_owner_field_is_not_deleted_from_under_the_row_access(app: Any, admin: Api) -> None:
    admin.ok("POST", "/meta/apps", {"key": "s", "label": "Sales"})
    admin.ok("POST", "/meta/apps/s/tables", {"key": "acc", "label": "Accounts", "owner_field": "rep", "fields": [
        {"key": "name", "label": "Name", "type": "text"}, {"key": "rep", "label": "Rep", "type": "user"}]})
    status, body = admin.call("DELETE", "/meta/apps/s/tables/acc/fields/rep")
    assert status == 409 and body["error"]["details"]["used_by"][0]["kind"] == "owner_field"
    assert admin.ok("GET", "/meta/apps/s/tables/acc/fields/rep")["key"] == "rep"


def test_the_builder_page_says_what_uses_the_field_in_the_readers_language(app: Any, admin: Api) -> None:
    _world(admin)
    admin.ok("POST", "/meta/apps/s/tables/acc/fields", {"key": "double", "label": {"en": "Double", "zh-CN": "双倍"},
                                                       "type": "formula", "options": {"formula": "{amt} * 2"}})
    from formwork.runtime import auth

    with db.transaction(app.extensions["formwork"].engine) as conn:
        auth.create_user(conn, {"username": "wang", "name": "王芳", "password": "correct-horse-9"}, is_admin=True)
        conn.execute(update(db.users).where(db.users.c.username == "wang").values(locale="zh-CN"))
    client, csrf = login(app, "wang", "correct-horse-9")
    before = db_snapshot(app)
    resp = client.post("/apps/s/acc/fields/amt/delete", data={"csrf_token": csrf})
    page = resp.get_data(as_text=True)
    assert resp.status_code == 409 and resp.content_type.startswith("text/html")
    alert = re.search(r'role="alert">([^<]*)<', page)
    assert alert is not None
    assert alert.group(1) == "暂时不能删除“金额”：字段“双倍”（客户）正在使用它。请先修改这些设置，再删除。"
    assert db_snapshot(app) == before
    resp = client.post("/apps/s/acc/fields/stage/delete", data={"csrf_token": csrf})
    assert "视图“Board”" in resp.get_data(as_text=True)
