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


def rows_of(field: dict[str, Any]) -> dict[str, str]:
    """Form data that posts a select field's choices back unchanged, row i for choice i."""
    out: dict[str, str] = {}
    for i, c in enumerate(field["options"]["choices"]):
        label = c.get("label", c["value"])
        out |= {f"choice-{i}-value": c["value"], f"choice-{i}-color": c.get("color", ""),
                f"choice-{i}-label": label["en"] if isinstance(label, dict) else label,
                f"choice-{i}-other": label.get("zh-CN", "") if isinstance(label, dict) else ""}
    return out


def test_select_options_rename_recolour_reorder_merge_and_delete(app: Any, admin: Api) -> None:
    world = build(app, admin)
    c, csrf = login(app, "boss")
    base = "/apps/sales/deals"
    stage = admin.ok("GET", "/meta/apps/sales/tables/deals/fields/stage")
    page = html(c.get(f"{base}/fields/stage/edit"))
    # counts beside each option: one lead besides the xss one, one won, no lost
    assert page.count(">2 records<") == 1 and page.count(">1 records<") == 1 and ">0 records<" in page
    assert 'value="lead"' in page and "choice-template" in page
    # rename lead, recolour it, move lost first
    data = rows_of(stage)
    data |= {"choice-0-label": "Prospect", "choice-0-color": "purple"}
    order = ["choice-2", "choice-0", "choice-1"]
    form = {"csrf_token": csrf, "label_en": "Stage", "key": "stage", "type": "single_select"}
    for prefix in order:
        form |= {k: v for k, v in data.items() if k.startswith(prefix + "-")}
    assert c.post(f"{base}/fields/stage/edit", data=form).status_code == 302
    choices = admin.ok("GET", "/meta/apps/sales/tables/deals/fields/stage")["options"]["choices"]
    assert [x["value"] for x in choices] == ["lost", "lead", "won"]
    assert choices[1] == {"value": "lead", "label": {"en": "Prospect", "zh-CN": "线索"}, "color": "purple"}
    assert admin.ok("GET", f"/data/sales/deals/{world['mine']['id']}")["fields"]["stage"] == "lead"
    # merge lead into won: its records follow (with history); lead is gone
    stage = admin.ok("GET", "/meta/apps/sales/tables/deals/fields/stage")
    form = {"csrf_token": csrf, "label_en": "Stage", "type": "single_select", **rows_of(stage), "choice-1-merge": "won"}
    assert c.post(f"{base}/fields/stage/edit", data=form).status_code == 302
    assert [x["value"] for x in admin.ok("GET", "/meta/apps/sales/tables/deals/fields/stage")["options"]["choices"]] \
        == ["lost", "won"]
    assert {r["fields"]["stage"] for r in admin.records("sales", "deals")} == {"won"}
    hist = admin.ok("GET", f"/data/sales/deals/{world['mine']['id']}/history")
    assert any("stage" in (h.get("changes") or {}) for h in hist["entries"])
    # delete a used option: the count is asked about, the records are emptied
    stage = admin.ok("GET", "/meta/apps/sales/tables/deals/fields/stage")
    assert "3 records" in html(c.get(f"{base}/fields/stage/edit"))
    form = {"csrf_token": csrf, "label_en": "Stage", "type": "single_select", **rows_of(stage), "choice-1-delete": "1"}
    assert c.post(f"{base}/fields/stage/edit", data=form).status_code == 302
    assert {r["fields"]["stage"] for r in admin.records("sales", "deals")} == {None}
    # a merge into nothing, or an option without a name: said beside the row, nothing changes
    stage = admin.ok("GET", "/meta/apps/sales/tables/deals/fields/stage")
    bad = html(c.post(f"{base}/fields/stage/edit", data={"csrf_token": csrf, "label_en": "Stage",
                                                         "type": "single_select", **rows_of(stage),
                                                         "choice-0-label": "", "choice-9-label": "Fresh"}), 422)
    assert "Give the option a name" in bad and 'value="Fresh"' in bad
    assert admin.ok("GET", "/meta/apps/sales/tables/deals/fields/stage") == stage


def test_multi_select_merge_keeps_other_values(app: Any, admin: Api) -> None:
    world = build(app, admin)
    c, csrf = login(app, "boss")
    admin.ok("PATCH", f"/data/sales/deals/{world['other']['id']}", {"fields": {"tags": ["vip", "new"]}})
    tags = admin.ok("GET", "/meta/apps/sales/tables/deals/fields/tags")
    page = html(c.get("/apps/sales/deals/fields/tags/edit"))
    assert "2 records" in page
    form = {"csrf_token": csrf, "label_en": "Tags", "type": "multi_select", **rows_of(tags), "choice-1-merge": "vip"}
    assert c.post("/apps/sales/deals/fields/tags/edit", data=form).status_code == 302
    got = {r["id"]: r["fields"]["tags"] for r in admin.records("sales", "deals")}
    assert got[world["other"]["id"]] == ["vip"] and got[world["mine"]["id"]] == ["vip"]


def test_view_editor_takes_a_nested_condition_and_sort_pickers(app: Any, admin: Api) -> None:
    world = build(app, admin)
    c, csrf = login(app, "boss")
    base = "/apps/sales/deals"
    page = html(c.get(f"{base}/views/new"))
    assert 'name="filter.conj"' in page and 'name="sort_field"' in page and "filter_json" not in page
    assert "<textarea" not in page
    form = {"csrf_token": csrf, "label_en": "Hot or big leads", "type": "grid",
            "sort_field": ["amount", "name", ""], "sort_dir": ["desc", "asc", "asc"],
            "filter.conj": "and", "filter.a.field": "stage", "filter.a.op": "eq", "filter.a.value": "lead",
            "filter.g.conj": "or", "filter.g.b.field": "hot", "filter.g.b.op": "eq", "filter.g.b.value": "true",
            "filter.g.c.field": "amount", "filter.g.c.op": "gt", "filter.g.c.value": "1000"}
    resp = c.post(f"{base}/views/new", data=form)
    assert resp.status_code == 302, resp.get_data(as_text=True)[:2000]
    view = admin.ok("GET", "/meta/apps/sales/tables/deals/views/hot_or_big_leads")
    assert view["sort"] == ["-amount", "name"]
    assert view["filter"] == {"and": [{"field": "stage", "op": "eq", "value": "lead"}, {"or": [
        {"field": "hot", "op": "eq", "value": True}, {"field": "amount", "op": "gt", "value": 1000}]}]}
    ids = [r["id"] for r in admin.records("sales", "deals", view="hot_or_big_leads")]
    assert ids == [world["mine"]["id"]]
    # the editor shows the same tree again, and saving it unchanged keeps it
    edit = html(c.get(f"{base}/views/hot_or_big_leads/edit"))
    assert edit.count('name="filter.') > 8 and 'value="1000"' in edit
    from tests.test_ui_conditions import posted

    again = posted(edit.split('class="builder-form"', 1)[1].split("</form>", 1)[0])
    again["csrf_token"] = csrf
    assert c.post(f"{base}/views/hot_or_big_leads/edit", data=again).status_code == 302
    assert admin.ok("GET", "/meta/apps/sales/tables/deals/views/hot_or_big_leads")["filter"] == view["filter"]


def test_link_lookup_and_rollup_from_pickers(app: Any, admin: Api) -> None:
    world = build(app, admin)
    c, csrf = login(app, "boss")
    set_locale(c, csrf, "zh-CN")
    # a link to deals from accounts, named on the deals side in Chinese
    admin.ok("POST", "/meta/apps/sales/tables", {"key": "visits", "label": "Visits", "fields": [
        {"key": "title", "label": "Title", "type": "text"}]})
    resp = c.post("/apps/sales/visits/fields/new", data={"csrf_token": csrf, "label_zh": "客户", "type": "link",
                                                         "table": "accounts", "reverse_label": "拜访记录"})
    assert resp.status_code == 302, resp.get_data(as_text=True)[:1500]
    accounts = admin.ok("GET", "/meta/apps/sales/tables/accounts")
    reverse = next(f for f in accounts["fields"] if f["label"] == "拜访记录")
    assert re.fullmatch(r"f_[a-z2-9]{6}", reverse["key"])
    # the rollup's pickers: the link, then the linked table's fields, then the functions that fit
    base = "/apps/sales/accounts"
    frag = html(c.get(f"{base}/fields/options?type=rollup"))
    assert 'name="link"' in frag and 'hx-get' in frag and "关联记录本身" in frag and "求和" not in frag
    frag = html(c.get(f"{base}/fields/options", query_string={"type": "rollup", "link": "deals",
                                                               "lookup_field": "amount"}))
    assert "求和" in frag and "平均值" in frag and ">金额<" in frag
    frag = html(c.get(f"{base}/fields/options", query_string={"type": "rollup", "link": "deals",
                                                               "lookup_field": "close"}))
    assert "求和" not in frag and "最大值" in frag
    assert c.post(f"{base}/fields/new", data={"csrf_token": csrf, "label_zh": "商机总额", "type": "rollup",
                                              "link": "deals", "lookup_field": "amount",
                                              "function": "sum"}).status_code == 302
    assert c.post(f"{base}/fields/new", data={"csrf_token": csrf, "label_zh": "最近成交", "type": "lookup",
                                              "link": "deals", "lookup_field": "stage"}).status_code == 302
    acme = admin.ok("GET", f"/data/sales/accounts/{world['acme']}")["fields"]
    totals = [v for k, v in acme.items() if isinstance(v, int | float) and not isinstance(v, bool)]
    assert 1234.5 in totals
    # a sum of a text field is refused next to the field picker, nothing typed is lost
    bad = html(c.post(f"{base}/fields/new", data={"csrf_token": csrf, "label_zh": "错误", "type": "rollup",
                                                  "link": "deals", "lookup_field": "name", "function": "sum"}), 422)
    assert 'value="错误"' in bad and 'role="alert"' in bad
    # no link yet: the page says to add one instead of offering empty pickers
    admin.ok("POST", "/meta/apps/sales/tables", {"key": "notes", "label": "Notes", "fields": [
        {"key": "title", "label": "Title", "type": "text"}]})
    assert "请先在本表添加一个关联字段" in html(c.get("/apps/sales/notes/fields/options?type=lookup"))


def test_formula_editor_names_live_check_and_preview(app: Any, admin: Api) -> None:
    world = build(app, admin)
    c, csrf = login(app, "boss")
    set_locale(c, csrf, "zh-CN")
    base = "/apps/sales/deals"
    page = html(c.get(f"{base}/fields/new?type=formula"))
    assert 'data-insert="{金额}"' in page and "DATEDIF(start, end, unit)" in page and "两个日期相差" in page
    check = f"{base}/fields/formula-check"
    ok = html(c.get(check, query_string={"formula": "{金额} * 2"}))
    assert "公式正确" in ok and "数字" in ok and "2469" in ok  # 1234.5 * 2 on Rita's deal
    bad = html(c.get(check, query_string={"formula": "{金额} * * 2"}))
    assert "公式有误" in bad and "<mark>*</mark>" in bad and "{金额} * " in bad
    unknown = html(c.get(check, query_string={"formula": "{金额} + {不存在}"}))
    assert "没有名为“不存在”的字段" in unknown and "<mark>{</mark>不存在}" in unknown
    text = html(c.get(check, query_string={"formula": '"No. " & {名称}'}))
    assert "公式正确" in text and "文本" in text and "No. Rita&#39;s deal" in text
    # saved with keys; shown again with names
    resp = c.post(f"{base}/fields/new", data={"csrf_token": csrf, "label_zh": "双倍", "type": "formula",
                                              "formula": "{金额} * 2"})
    assert resp.status_code == 302
    f = next(x for x in admin.ok("GET", "/meta/apps/sales/tables/deals/fields")["fields"] if x["label"] == "双倍")
    assert f["options"]["formula"] == "{amount} * 2"
    assert admin.ok("GET", f"/data/sales/deals/{world['mine']['id']}")["fields"][f["key"]] == 2469
    edit = html(c.get(f"{base}/fields/{f['key']}/edit"))
    assert "{金额} * 2</textarea>" in edit
    self_ref = html(c.get(check, query_string={"formula": "{双倍} + 1", "formula_self": f["key"]}))
    assert "不能引用字段本身" in self_ref
    refused = html(c.post(f"{base}/fields/new", data={"csrf_token": csrf, "label_zh": "错", "type": "formula",
                                                      "formula": "{没有} + 1"}), 422)
    assert "没有名为“没有”的字段" in refused and "{没有} + 1" in refused


def test_grid_filter_panel_all_records_and_save_as_view(app: Any, admin: Api) -> None:
    world = build(app, admin)
    c, csrf = login(app, "boss")
    base = "/apps/sales/deals"
    page = html(c.get(f"{base}?view=all"))
    assert 'name="filter.conj"' in page and "?view=_all" in page and "All records" in page
    q = {"view": "all", "filter.conj": "or", "filter.a.field": "stage", "filter.a.op": "eq", "filter.a.value": "won",
         "filter.b.field": "amount", "filter.b.op": "gt", "filter.b.value": "1000"}
    grid = html(c.get(base, query_string=q, headers={"HX-Request": "true", "HX-Target": "grid"}))
    assert "Someone else" in grid and "Rita" in grid and "alert(1)" not in grid
    assert "filter.a.field=stage" in grid  # paging and counting keep the filter
    # the builder posts back what it shows; a bad value is said, not a 500
    bad = html(c.get(base, query_string={**q, "filter.b.value": "lots"}))
    assert 'value="lots"' in bad and 'role="alert"' in bad
    # the "All records" tab shows every record whatever the first view is
    admin.ok("PATCH", "/meta/apps/sales/tables/deals/views/all", {"filter": {"field": "stage", "op": "eq",
                                                                              "value": "won"}})
    assert "Rita" not in html(c.get(base)) and "Rita" in html(c.get(f"{base}?view=_all"))
    # "Save as view" from a view keeps its filter, narrowed by the page's, and its columns
    admin.ok("PATCH", "/meta/apps/sales/tables/deals/views/all", {"fields": ["name", "amount"]})
    new = html(c.get(f"{base}/views/new", query_string={"from_view": "all", "filter.conj": "and",
                                                         "filter.x.field": "amount", "filter.x.op": "gt",
                                                         "filter.x.value": "10", "sort": "-amount"}))
    from tests.test_ui_conditions import posted

    form = posted(new.split('class="builder-form"', 1)[1].split("</form>", 1)[0])
    form["csrf_token"] = csrf
    form["label_en"] = "Won and big"
    assert c.post(f"{base}/views/new", data=form).status_code == 302
    view = admin.ok("GET", "/meta/apps/sales/tables/deals/views/won_and_big")
    assert view["filter"] == {"and": [{"field": "stage", "op": "eq", "value": "won"},
                                      {"field": "amount", "op": "gt", "value": 10}]}
    assert view["sort"] == ["-amount"] and view["fields"] == ["name", "amount"]
    assert [r["id"] for r in admin.records("sales", "deals", view="won_and_big")] == [world["other"]["id"]]


def test_kanban_column_totals_and_add_a_card(app: Any, admin: Api) -> None:
    build(app, admin)
    c, csrf = login(app, "boss")
    base = "/apps/sales/deals"
    admin.ok("PATCH", "/meta/apps/sales/tables/deals/views/board", {"options": {
        "group_field": "stage", "sum_field": "amount", "hide_empty": False}})
    board = html(c.get(f"{base}?view=board"))
    assert "Σ" in board and "1,234.50" in board and "99.00" in board
    assert 'hx-post="/apps/sales/deals/kanban/add"' in board
    resp = c.post(f"{base}/kanban/add", data={"csrf_token": csrf, "view": "board", "value": "won", "title": "Big one"},
                  headers={"HX-Request": "true"})
    board = html(resp)
    created = [r for r in admin.records("sales", "deals") if r["fields"]["name"] == "Big one"]
    assert len(created) == 1 and created[0]["fields"]["stage"] == "won" and "Big one" in board
    # a view editor sets the total and hides empty columns
    form = {"csrf_token": csrf, "label_en": "Pipeline", "type": "kanban", "group_field": "stage",
            "sum_field": "amount", "hide_empty": "1"}
    assert c.post(f"{base}/views/board/edit", data=form).status_code == 302
    board = html(c.get(f"{base}?view=board"))
    assert ">Lost<" not in board and ">Won<" in board
    bad = html(c.post(f"{base}/views/board/edit", data={**form, "sum_field": "nope"}), 422)
    assert "nope" in bad and 'role="alert"' in bad


def test_calendar_modes_reschedule_and_add_on_a_day(app: Any, admin: Api) -> None:
    world = build(app, admin)
    c, csrf = login(app, "boss")
    base = "/apps/sales/deals"
    rid = world["mine"]["id"]
    month = html(c.get(f"{base}?view=cal&day=2026-05-04"))
    assert 'data-date="2026-05-04"' in month and 'draggable="true"' in month and "Rita" in month
    week = html(c.get(f"{base}?view=cal&mode=week&day=2026-05-06", headers={"HX-Request": "true",
                                                                              "HX-Target": "calendar"}))
    assert "2026-05-04 – 2026-05-10" in week and "Rita" in week and 'data-date="2026-05-11"' not in week
    day = html(c.get(f"{base}?view=cal&mode=day&day=2026-05-04"))
    assert 'data-date="2026-05-04"' in day and 'data-date="2026-05-05"' not in day
    version = admin.ok("GET", f"/data/sales/deals/{rid}")["version"]
    moved = html(c.post(f"{base}/{rid}/reschedule", data={"csrf_token": csrf, "view": "cal", "date": "2026-05-20",
                                                          "version": version, "day": "2026-05-01"}))
    assert 'data-date="2026-05-20"' in moved
    assert admin.ok("GET", f"/data/sales/deals/{rid}")["fields"]["close"] == "2026-05-20"
    stale = html(c.post(f"{base}/{rid}/reschedule", data={"csrf_token": csrf, "view": "cal", "date": "2026-05-21",
                                                          "version": version}))
    assert "Changed by someone else" in stale
    assert admin.ok("GET", f"/data/sales/deals/{rid}")["fields"]["close"] == "2026-05-20"
    added = html(c.post(f"{base}/calendar/add", data={"csrf_token": csrf, "view": "cal", "date": "2026-05-13",
                                                      "title": "Demo day", "day": "2026-05-01"}))
    assert "Demo day" in added
    assert [r["fields"]["close"] for r in admin.records("sales", "deals") if r["fields"]["name"] == "Demo day"] \
        == ["2026-05-13"]
    assert html(c.post(f"{base}/{rid}/reschedule", data={"csrf_token": csrf, "view": "cal", "date": "May"}), 400)


def test_switches_say_what_they_would_break_help_text_and_honeypot(app: Any, admin: Api) -> None:
    world = build(app, admin)
    c, csrf = login(app, "boss")
    base = "/apps/sales/deals"
    admin.ok("PATCH", f"/data/sales/deals/{world['other']['id']}", {"fields": {"secret": "TOPSECRET-1"}})
    page = html(c.get(f"{base}/fields/secret/edit"))
    assert "1 records have no value yet" in page and "2 records share a value" in page
    assert c.post(f"{base}/fields/name/edit", data={"csrf_token": csrf, "label_en": "Name", "type": "text",
                                                    "required": "1", "description": "Who is buying"}).status_code == 302
    form = html(c.get(f"{base}/forms/lead_form"))
    assert "Who is buying" in form
    # the public form: a robot filling the hidden field is thanked and nothing is stored
    anon = app.test_client()
    page = html(anon.get("/f/sales/deals/lead_form"))
    token = re.search(r'name="form_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    before = len(admin.records("sales", "deals"))
    done = html(anon.post("/f/sales/deals/lead_form", data={"form_token": token, "name": "Spam", "amount": "1",
                                                            "website": "http://spam.example"}))
    assert "Thanks, we will call you." in done and len(admin.records("sales", "deals")) == before


def test_forms_take_attachments_within_their_limits(app: Any, admin: Api) -> None:
    import io

    build(app, admin)
    admin.ok("POST", "/meta/apps/sales/tables/deals/fields", {"key": "docs", "label": "Documents",
                                                              "type": "attachment",
                                                              "options": {"max_files": 2, "max_size": 1000,
                                                                          "mime_types": ["image/*",
                                                                                         "application/pdf"]}})
    admin.ok("PATCH", "/meta/apps/sales/tables/deals/views/lead_form", {"fields": ["name", "amount", "docs"]})
    anon = app.test_client()
    page = html(anon.get("/f/sales/deals/lead_form"))
    assert 'type="file"' in page and 'enctype="multipart/form-data"' in page and "Up to 2 files" in page
    token = re.search(r'name="form_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]

    def post(files: list[tuple[bytes, str]], name: str = "With files") -> Any:
        data: dict[str, Any] = {"form_token": token, "name": name, "amount": "5",
                                "docs": [(io.BytesIO(b), n) for b, n in files]}
        return anon.post("/f/sales/deals/lead_form", data=data, content_type="multipart/form-data")

    before = len(admin.records("sales", "deals"))
    too_big = html(post([(b"x" * 2000, "big.png")]), 422)
    assert "“big.png” is larger than" in too_big and 'value="With files"' in too_big
    wrong = html(post([(b"hello", "notes.txt")]), 422)
    assert "“notes.txt” is not an allowed type" in wrong
    many = html(post([(b"a", "a.png"), (b"b", "b.png"), (b"c", "c.png")]), 422)
    assert "At most 2 files" in many
    assert len(admin.records("sales", "deals")) == before
    ok = html(post([(b"\x89PNG small", "photo.png"), (b"%PDF-1.4", "quote.pdf")]))
    assert "Thanks, we will call you." in ok
    rec = [r for r in admin.records("sales", "deals") if r["fields"]["name"] == "With files"][0]
    assert [d["name"] for d in rec["fields"]["docs"]] == ["photo.png", "quote.pdf"]


def test_grid_summary_row_over_every_matching_record(app: Any, admin: Api) -> None:
    build(app, admin)
    c, _csrf = login(app, "boss")
    base = "/apps/sales/deals"
    assert 'hx-get="/apps/sales/deals/summary?' in html(c.get(f"{base}?view=all"))
    row = html(c.get(f"{base}/summary?view=all"))
    assert ">3<" in row and "1,333.50" in row and 'name="fn_amount"' in row
    avg = html(c.get(f"{base}/summary", query_string={"view": "all", "fn_amount": "max"}))
    assert "1,234.50" in avg and '<option value="max" selected>' in avg
    won = html(c.get(f"{base}/summary", query_string={"view": "all", "filter.conj": "and", "filter.a.field": "stage",
                                                       "filter.a.op": "eq", "filter.a.value": "won"}))
    assert ">1<" in won and "99.00" in won


def test_bulk_edit_sets_a_field_on_selected_rows(app: Any, admin: Api) -> None:
    world = build(app, admin)
    c, csrf = login(app, "boss")
    base = "/apps/sales/deals"
    grid = html(c.get(f"{base}?view=all"))
    assert 'id="bulk-field"' in grid and ">Stage<" in grid
    frag = html(c.get(f"{base}/bulk-edit/input", query_string={"bulk_field": "stage"}))
    assert 'name="stage"' in frag and 'for="bulk-stage"' in frag
    ids = [world["mine"]["id"], world["xss"]["id"]]
    resp = c.post(f"{base}/bulk-edit", data={"csrf_token": csrf, "ids": [str(i) for i in ids], "bulk_field": "stage",
                                             "stage": "won"}, headers={"HX-Request": "true"})
    assert resp.status_code == 204 and resp.headers["HX-Refresh"] == "true"
    got = {r["id"]: r["fields"]["stage"] for r in admin.records("sales", "deals")}
    assert got[ids[0]] == got[ids[1]] == "won"
    hist = admin.ok("GET", f"/data/sales/deals/{ids[0]}/history")
    assert any("stage" in (h.get("changes") or {}) for h in hist["entries"])
    bad = c.post(f"{base}/bulk-edit", data={"csrf_token": csrf, "ids": [str(i) for i in ids], "bulk_field": "amount",
                                            "amount": "lots"}, headers={"HX-Request": "true"})
    assert bad.status_code == 422 and 'role="alert"' in bad.get_data(as_text=True)
    assert {r["fields"]["amount"] for r in admin.records("sales", "deals") if r["id"] in ids} != {None}
