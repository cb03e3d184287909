"""The builder for business users: definitions from names alone, select options, link/lookup/rollup
pickers, the formula editor (through Flask's test client; browser tests live in tests/browser/)."""

from __future__ import annotations

import re
from typing import Any

from tests.helpers import Api
from tests.test_ui_pages import build, html, login


def set_locale(c: Any, csrf: str, locale: str) -> None:
    assert c.post("/locale", data={"csrf_token": csrf, "locale": locale}).status_code in (302, 303)


def test_an_app_table_field_and_view_from_chinese_names_alone(app: Any, admin: Api) -> None:
    build(app, admin)
    c, csrf = login(app, "boss")
    set_locale(c, csrf, "zh-CN")
    home = html(c.get("/"))
    assert "名称" in home and "高级设置" in home and 'name="label_zh"' in home
    resp = c.post("/apps/new", data={"csrf_token": csrf, "label_zh": "客户管理"})
    assert resp.status_code == 302
    app_key = resp.headers["Location"].rstrip("/").split("/")[-1]
    assert re.fullmatch(r"a_[a-z2-9]{6}", app_key)
    resp = c.post(f"/apps/{app_key}/tables/new", data={"csrf_token": csrf, "label_zh": "客户", "first_field": "公司"})
    assert resp.status_code == 302
    table_key = resp.headers["Location"].split("/")[-1].split("?")[0]
    t = admin.ok("GET", f"/meta/apps/{app_key}/tables/{table_key}")
    assert t["label"] == "客户" and t["fields"][0]["label"] == "公司"
    base = f"/apps/{app_key}/{table_key}"
    for typ in ("phone", "text"):
        resp = c.post(f"{base}/fields/new", data={"csrf_token": csrf, "label_zh": "电话", "type": typ})
        assert resp.status_code == 302
    fields = admin.ok("GET", f"/meta/apps/{app_key}/tables/{table_key}/fields")["fields"]
    assert [f["label"] for f in fields] == ["公司", "电话", "电话"] and len({f["key"] for f in fields}) == 3
    resp = c.post(f"{base}/views/new", data={"csrf_token": csrf, "label_zh": "全部客户", "type": "grid"})
    assert resp.status_code == 302
    views = admin.ok("GET", f"/meta/apps/{app_key}/tables/{table_key}")["views"]
    assert views[0]["label"] == "全部客户"
    # no name: said in Chinese beside the input, nothing made, what was typed kept
    again = html(c.post(f"{base}/fields/new", data={"csrf_token": csrf, "label_zh": "", "type": "text",
                                                    "description": "说明文字"}), 422)
    assert "请填写名称" in again and "说明文字" in again
    bad_app = html(c.post("/apps/new", data={"csrf_token": csrf, "label_zh": "再来", "key": "Bad Key"}), 422)
    assert 'value="再来"' in bad_app and 'role="alert"' in bad_app
    # a key typed under "advanced" is kept; editing without one keeps the current key
    assert c.post(f"{base}/fields/new", data={"csrf_token": csrf, "label_zh": "邮箱", "key": "email",
                                              "type": "email"}).status_code == 302
    assert c.post(f"{base}/fields/email/edit", data={"csrf_token": csrf, "label_zh": "电子邮箱", "key": "",
                                                     "type": "email"}).status_code == 302
    f = admin.ok("GET", f"/meta/apps/{app_key}/tables/{table_key}/fields/email")
    assert f["label"] == "电子邮箱"


def test_english_names_give_readable_keys(app: Any, admin: Api) -> None:
    build(app, admin)
    c, csrf = login(app, "boss")
    resp = c.post("/apps/new", data={"csrf_token": csrf, "label_en": "Field Service"})
    assert resp.headers["Location"].endswith("/apps/field_service")
    resp = c.post("/apps/field_service/tables/new", data={"csrf_token": csrf, "label_en": "Work orders"})
    assert resp.headers["Location"].endswith("/apps/field_service/work_orders")
    t = admin.ok("GET", "/meta/apps/field_service/tables/work_orders")
    assert [f["key"] for f in t["fields"]] == ["name"]
