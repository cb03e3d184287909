"""Duplicates, merging and option lists in the pages, through Flask's test client (SQLite and PostgreSQL)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from formwork import db
from formwork.runtime import auth
from tests.helpers import Api
from tests.test_ui_pages import html, login
from tests.test_ui_transfer import PASSWORD, run, wizard


@pytest.fixture
def shop(app: Any, admin: Api) -> dict[str, Any]:
    admin.ok("POST", "/meta/apps", {"key": "shop", "label": {"en": "Shop", "zh-CN": "商店"}})
    admin.ok("POST", "/meta/apps/shop/option-lists", {"key": "source", "label": {"en": "Source", "zh-CN": "来源"},
                                                      "choices": [{"value": "web", "label": {"zh-CN": "官网"}},
                                                                  {"value": "fair", "label": {"zh-CN": "展会"}}]})
    admin.ok("POST", "/meta/apps/shop/tables", {"key": "customers", "label": {"en": "Customers", "zh-CN": "客户"},
                                                "fields": [
        {"key": "name", "label": {"en": "Name", "zh-CN": "名称"}, "type": "text", "required": True},
        {"key": "phone", "label": {"en": "Phone", "zh-CN": "电话"}, "type": "phone"},
        {"key": "source", "label": {"en": "Source", "zh-CN": "来源"}, "type": "single_select",
         "options": {"list": "source"}}],
        "views": [{"key": "all", "label": "All", "type": "grid"}]})
    admin.ok("PATCH", "/meta/apps/shop/tables/customers", {"duplicate_rules": [
        {"key": "same_name", "fields": [{"field": "name", "match": "name"}]},
        {"key": "same_phone", "fields": [{"field": "phone", "match": "phone"}]}]})
    first = admin.ok("POST", "/data/shop/customers", {"fields": {"name": "海纳科技有限公司", "phone": "13800138000"}})
    with db.transaction(app.extensions["formwork"].engine) as conn:
        auth.create_user(conn, {"username": "ada", "name": "Ada", "password": PASSWORD, "locale": "zh-CN"},
                         is_admin=True)
    client, csrf = login(app, "ada")
    return {"client": client, "csrf": csrf, "api": admin, "first": first["id"]}


def test_the_new_record_page_warns_then_creates_anyway(shop: dict[str, Any]) -> None:
    c, csrf = shop["client"], shop["csrf"]
    form = {"csrf_token": csrf, "name": "海纳科技", "phone": "+86 138 0013 8000"}
    resp = c.post("/apps/shop/customers/new", data=form)
    page = html(resp)
    assert resp.status_code == 200 and "可能已存在相同记录" in page
    assert f'href="/apps/shop/customers/{shop["first"]}"' in page and "海纳科技有限公司" in page
    assert "名称相同" in page and "仍然创建" in page and 'value="海纳科技"' in page  # nothing typed is lost
    assert len(shop["api"].records("shop", "customers")) == 1
    resp = c.post("/apps/shop/customers/new", data={**form, "_allow_duplicates": "1"})
    assert resp.status_code == 302 and len(shop["api"].records("shop", "customers")) == 2


def test_the_merge_page_lists_candidates_and_merges(shop: dict[str, Any]) -> None:
    c, csrf, api = shop["client"], shop["csrf"], shop["api"]
    dup = api.ok("POST", "/data/shop/customers", {"fields": {"name": "海纳科技", "phone": "021-555",
                                                             "source": "fair"}, "allow_duplicates": True})["id"]
    page = html(c.get(f"/apps/shop/customers/{dup}"))
    assert f'href="/apps/shop/customers/{dup}/merge"' in page
    page = html(c.get(f"/apps/shop/customers/{dup}/merge"))
    assert "海纳科技有限公司" in page and f"merge?other={shop['first']}" in page
    page = html(c.get(f"/apps/shop/customers/{dup}/merge?other={shop['first']}&keep=b"))
    assert re.search(r'name="f_source" value="a" checked', page)  # the kept record has none: the other's
    assert re.search(r'name="f_phone" value="b" checked', page)
    resp = c.post(f"/apps/shop/customers/{dup}/merge", data={"csrf_token": csrf, "other": shop["first"],
                                                              "keep": "b", "f_phone": "b", "f_source": "a"})
    assert resp.status_code == 302 and resp.headers["Location"].endswith(f"/customers/{shop['first']}?merged=1")
    kept = api.ok("GET", f"/data/shop/customers/{shop['first']}")["fields"]
    assert kept["source"] == "fair" and kept["phone"] == "13800138000"
    assert api.get(f"/data/shop/customers/{dup}")[0] == 404
    page = html(c.get(f"/apps/shop/customers/{shop['first']}?merged=1"))
    assert "记录已合并。" in page and "合并自" in page


def test_the_import_wizard_lists_duplicate_rows_and_skips_them(shop: dict[str, Any]) -> None:
    data = "名称,电话\n海纳科技,\n新客户,\n新客户有限公司,\n".encode()
    check_url, _upload = wizard(shop, data, duplicates="skip")
    page = html(shop["client"].get(check_url))
    assert "与已有记录相似的行" in page and "海纳科技有限公司" in page and "与第 3 行相似" in page
    _job, text = run(shop, check_url)
    assert "已跳过" in text
    names = sorted(r["fields"]["name"] for r in shop["api"].records("shop", "customers"))
    assert names == ["新客户", "海纳科技有限公司"]


def test_the_option_list_pages(shop: dict[str, Any]) -> None:
    c, csrf, api = shop["client"], shop["csrf"], shop["api"]
    page = html(c.get("/apps/shop/option-lists"))
    assert "数据字典" in page and "来源" in page and "客户 · 来源" in page
    page = html(c.get("/apps/shop/option-lists/source"))
    rows = re.findall(r'name="choice-(\d+)-value" value="([^"]*)"', page)
    assert [v for _i, v in rows] == ["web", "fair"]
    form = {"csrf_token": csrf, "label_zh": "线索来源", "label_en": "Lead source",
            "choice-0-value": "web", "choice-0-label": "官方网站", "choice-0-color": "blue",
            "choice-1-value": "fair", "choice-1-label": "展会", "choice-1-color": "green",
            "choice-N1-value": "", "choice-N1-label": "转介绍", "choice-N1-color": "red"}
    resp = c.post("/apps/shop/option-lists/source", data=form)
    assert resp.status_code == 302, html(resp)[:2000]
    choices = api.ok("GET", "/meta/apps/shop/tables/customers/fields/source")["options"]["choices"]
    assert [c_["value"] for c_ in choices] == ["web", "fair", "转介绍"]
    assert choices[0]["label"] == "官方网站"
    page = html(c.get("/apps/shop/customers/fields/source/edit"))
    assert re.search(r'<option value="source" selected>', page) and "使用数据字典" in page
    resp = c.post("/apps/shop/option-lists", data={"csrf_token": csrf, "label_zh": "", "label_en": ""})
    assert resp.status_code == 422


def test_the_builder_edits_duplicate_rules_with_pickers(shop: dict[str, Any]) -> None:
    c, csrf, api = shop["client"], shop["csrf"], shop["api"]
    url = "/apps/shop/customers/duplicate-rules"
    assert url in html(c.get("/apps/shop/customers/fields"))
    page = html(c.get(url))
    assert "查重规则" in page and "规则 1" in page and "规则 2" in page and 'value="same_name"' in page
    assert "电话号码（只比较数字，忽略国家区号）" in page and "Duplicate" not in page
    # what the builder has on the page: rule 1 (name), rule 2 (phone); a third rule is added, nothing lost
    form = {"csrf_token": csrf, "r0_present": "1", "r0_key": "same_name", "r0_label_zh": "名称相同",
            "r0_f0_present": "1", "r0_f0_field": "name", "r0_f0_match": "name",
            "r1_present": "1", "r1_key": "same_phone", "r1_label_zh": "电话相同",
            "r1_f0_present": "1", "r1_f0_field": "phone", "r1_f0_match": "phone"}
    resp = c.post(url, data={**form, "r1_label_zh": "电话一样", "action": "add_rule"})
    page = html(resp)
    assert resp.status_code == 200 and "规则 3" in page and 'value="电话一样"' in page
    # saving the new rule without a name, with the same field twice: errors next to the inputs, nothing saved
    bad = {**form, "r2_present": "1", "r2_key": "", "r2_f0_present": "1", "r2_f0_field": "name", "r2_f0_match": "exact",
           "r2_f1_present": "1", "r2_f1_field": "name", "r2_f1_match": "exact", "action": "save"}
    resp = c.post(url, data=bad)
    page = html(resp, 422)
    assert 'id="err-r2_label"' in page and "请填写规则名称。" in page
    assert 'id="err-r2_f1_field"' in page and "该字段已在此规则中。" in page
    assert len(api.ok("GET", "/meta/apps/shop/tables/customers")["duplicate_rules"]) == 2
    # fixed: the name and phone together; rule 2 removed on the way
    good = {**bad, "r2_label_zh": "名称和电话都相同", "r2_label_en": "Same name and phone", "r2_f1_field": "phone",
            "r2_f1_match": "phone"}
    page = html(c.post(url, data={**good, "action": "remove_rule:1"}))
    assert "规则 3" not in page and 'value="名称和电话都相同"' in page
    kept = {k: v for k, v in good.items() if not k.startswith("r1_")}
    resp = c.post(url, data={**kept, "action": "save"})
    assert resp.status_code == 302 and "saved=1" in resp.headers["Location"]
    rules = api.ok("GET", "/meta/apps/shop/tables/customers")["duplicate_rules"]
    assert rules == [
        {"key": "same_name", "label": "名称相同", "fields": [{"field": "name", "match": "name"}]},
        {"key": "same_name_and_phone", "label": {"en": "Same name and phone", "zh-CN": "名称和电话都相同"},
         "fields": [{"field": "name", "match": "exact"}, {"field": "phone", "match": "phone"}]}]
    # a field removed from a rule, a field added, and an unknown field refused next to its picker
    page = html(c.post(url, data={**kept, "action": "remove_field:1:0"}))
    assert 'name="r1_f1_field"' not in page and 'name="r1_f0_field"' in page
    page = html(c.post(url, data={**kept, "action": "add_field:0"}))
    assert 'name="r0_f1_field"' in page
    resp = c.post(url, data={**kept, "r0_f0_field": "nope", "action": "save"})
    page = html(resp, 422)
    assert 'id="err-r0_f0_field"' in page and "请选择要比较的字段。" in page
