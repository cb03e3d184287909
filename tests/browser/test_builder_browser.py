"""The builder for business users in a real browser, in both languages: an app from Chinese names only,
a view with a nested condition, a formula with a picked field and a rollup with picked targets, kanban
column totals and the board's card-fields panel, a calendar drag that reschedules. Screenshots for the
user guide go to /tmp/shots-build/ (``python -m tests.browser.screenshots`` puts the guide's into docs/img)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from tests.browser.test_ui_browser import browser, log_in, page, server, settled  # noqa: F401 - fixtures and marks

pytestmark = pytest.mark.browser
SHOTS = Path(os.environ.get("FORMWORK_SHOTS") or "/tmp/shots-build")

TEXT = {
    "en": {"name": "Name", "create": "Create", "save": "Save", "add_option": "Add option",
           "option": "Option name", "colour": "Colour", "add_condition": "Add condition", "add_group": "Add group",
           "field": "Field", "comparison": "Comparison", "value": "Value", "match": "Records that match",
           "valid": "Valid formula", "insert": "Insert a field", "add_card": "Add a card",
           "no_tables": "This app has no tables yet.", "new_table": "New table", "first_field": "First field label",
           "type": "Type", "single_select": "Single select", "move_up": "Move up", "card_fields": "Card fields",
           "hide_empty": "Hide empty columns", "to_view": "Save to the view for everyone", "amount": "Amount",
           "close": "Close date", "hot": "Hot", "account": "Account"},
    "zh-CN": {"name": "名称", "create": "创建", "save": "保存", "add_option": "添加选项", "option": "选项名称",
              "colour": "颜色", "add_condition": "添加条件", "add_group": "添加条件组", "field": "字段",
              "comparison": "比较方式", "value": "值", "match": "符合条件的记录", "valid": "公式正确",
              "insert": "插入字段", "add_card": "添加卡片", "no_tables": "该应用还没有数据表。",
              "new_table": "新建数据表", "first_field": "第一个字段的名称", "type": "类型", "single_select": "单选",
              "move_up": "上移", "card_fields": "卡片字段", "hide_empty": "隐藏空列",
              "to_view": "保存到视图，所有人可见", "amount": "金额", "close": "成交日期", "hot": "重点",
              "account": "所属客户"},
}


def shot(pg: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def use_locale(pg: Any, url: str, locale: str) -> None:
    log_in(pg, url)
    if pg.locator("html").get_attribute("lang") != locale:  # the language is kept on the account
        with pg.expect_navigation():
            pg.select_option("select[name=locale]", locale)
    assert pg.locator("html").get_attribute("lang") == locale


def sales_app(api: Any, key: str) -> None:
    """Accounts and deals with a link, a select, a date and records, through the API."""
    api.ok("POST", "/meta/apps", {"key": key, "label": {"en": "Pipeline", "zh-CN": "销售管道"}})
    api.ok("POST", f"/meta/apps/{key}/tables", {"key": "accounts", "label": {"en": "Accounts", "zh-CN": "客户"},
                                                "fields": [{"key": "name", "label": {"en": "Name", "zh-CN": "名称"},
                                                            "type": "text"}]})
    api.ok("POST", f"/meta/apps/{key}/tables", {"key": "deals", "label": {"en": "Deals", "zh-CN": "商机"}, "fields": [
        {"key": "name", "label": {"en": "Title", "zh-CN": "标题"}, "type": "text"},
        {"key": "amount", "label": {"en": "Amount", "zh-CN": "金额"}, "type": "number"},
        {"key": "stage", "label": {"en": "Stage", "zh-CN": "阶段"}, "type": "single_select", "options": {"choices": [
            {"value": "lead", "label": {"en": "Lead", "zh-CN": "线索"}, "color": "blue"},
            {"value": "won", "label": {"en": "Won", "zh-CN": "赢单"}, "color": "green"}]}},
        {"key": "close", "label": {"en": "Close date", "zh-CN": "成交日期"}, "type": "date"},
        {"key": "hot", "label": {"en": "Hot", "zh-CN": "重点"}, "type": "checkbox"},
        {"key": "account", "label": {"en": "Account", "zh-CN": "所属客户"}, "type": "link",
         "options": {"table": "accounts", "reverse_key": "deals",
                     "reverse_label": {"en": "Deals", "zh-CN": "商机"}}}]})
    acme = api.ok("POST", f"/data/{key}/accounts", {"fields": {"name": "Acme"}})["id"]
    for name, amount, stage, close, hot in (("Alpha", 100, "lead", "2026-05-04", True),
                                            ("Beta", 2500, "lead", "2026-05-06", False),
                                            ("Gamma", 40, "won", "2026-05-06", False),
                                            ("Delta", 900, "won", "2026-05-12", True)):
        api.ok("POST", f"/data/{key}/deals", {"fields": {"name": name, "amount": amount, "stage": stage,
                                                         "close": close, "hot": hot, "account": acme}})


@pytest.mark.parametrize("locale", ["en", "zh-CN"])
def test_a_new_app_from_chinese_names_only(page: Any, server: dict[str, Any], locale: str) -> None:  # noqa: F811
    """Chinese labels only, no key typed, whichever language the builder's pages are in."""
    from playwright.sync_api import expect

    url, api = server["url"], server["api"]
    t = TEXT[locale]
    app_name = "客户管理" if locale == "zh-CN" else "客户档案"
    use_locale(page, url, locale)
    page.get_by_role("textbox", name=t["name"], exact=True).fill(app_name)
    page.get_by_role("button", name=t["create"]).click()
    expect(page.locator("body")).to_contain_text(t["no_tables"])
    page.get_by_role("link", name="+ " + t["new_table"]).first.click()
    page.get_by_role("textbox", name=t["name"], exact=True).fill("客户")
    page.get_by_label(t["first_field"]).fill("公司")
    page.get_by_role("button", name=t["create"]).click()
    expect(page.locator("h1")).to_have_text("客户")
    page.goto(page.url.split("?")[0] + "/fields/new")
    page.get_by_role("textbox", name=t["name"], exact=True).fill("级别")
    with settled(page):
        page.get_by_label(t["type"]).select_option(label=t["single_select"])
    page.get_by_role("button", name=t["add_option"]).click()
    page.get_by_label(t["option"]).last.fill("重要")
    page.get_by_label(t["option"]).last.press("Enter")
    page.get_by_label(t["option"]).last.fill("普通")
    page.get_by_label(t["colour"]).last.select_option("gray")
    page.get_by_role("button", name=t["move_up"]).last.click()  # 普通 before 重要
    shot(page, "builder-options-zh" if locale == "zh-CN" else "builder-options-en")
    page.get_by_role("button", name=t["save"]).click()
    expect(page.locator("table.plain")).to_contain_text("级别")
    app = next(a for a in api.ok("GET", "/meta/apps")["apps"] if a["label"] == app_name)
    assert re.fullmatch(r"a_[a-z2-9]{6}", app["key"])
    table = api.ok("GET", f"/meta/apps/{app['key']}/tables")["tables"][0]
    assert table["label"] == "客户" and [f["label"] for f in table["fields"]] == ["公司", "级别"]
    level = table["fields"][1]
    assert [c["value"] for c in level["options"]["choices"]] == ["普通", "重要"]
    assert level["options"]["choices"][0]["color"] == "gray"


@pytest.mark.parametrize("locale", ["en", "zh-CN"])
def test_a_view_with_a_nested_condition(page: Any, server: dict[str, Any], locale: str) -> None:  # noqa: F811
    from playwright.sync_api import expect

    url, api = server["url"], server["api"]
    key = "pv_" + locale.replace("-", "").lower()
    sales_app(api, key)
    t = TEXT[locale]
    use_locale(page, url, locale)
    page.goto(f"{url}/apps/{key}/deals/views/new")
    view_name = "Hot or big leads" if locale == "en" else "重点或大额线索"
    page.get_by_role("textbox", name=t["name"], exact=True).fill(view_name)
    builder = page.locator(".view-filter")
    with settled(page):
        builder.get_by_role("button", name="+ " + t["add_condition"], exact=True).first.click()
    with settled(page):
        builder.get_by_label(t["field"], exact=True).last.select_option("stage")
    builder.get_by_label(t["value"], exact=True).last.select_option("lead")
    with settled(page):
        builder.get_by_role("button", name="+ " + t["add_group"], exact=True).first.click()
    group = builder.locator(".cb-nested").last
    group.locator("select[name$='.conj']").select_option("or")
    with settled(page):
        group.get_by_label(t["field"], exact=True).last.select_option("hot")
    with settled(page):
        group.get_by_role("button", name="+ " + t["add_condition"], exact=True).click()
    with settled(page):
        group.get_by_label(t["field"], exact=True).last.select_option("amount")
    with settled(page):  # a new comparison re-fits the value input
        group.get_by_label(t["comparison"]).last.select_option("gt")
    group.get_by_label(t["value"], exact=True).last.fill("1000")
    page.locator("#sort-field-1").select_option("amount")
    page.locator("#sort-dir-1").select_option("desc")
    shot(page, f"builder-view-condition-{locale}")
    page.get_by_role("button", name=t["save"]).click()
    expect(page.locator("#rows tr[data-id]")).to_have_count(2)
    expect(page.locator("#rows tr[data-id]").first).to_contain_text("Beta")
    views = api.ok("GET", f"/meta/apps/{key}/tables/{'deals'}")["views"]
    assert views[-1]["filter"] == {"and": [{"field": "stage", "op": "eq", "value": "lead"}, {"or": [
        {"field": "hot", "op": "eq", "value": True}, {"field": "amount", "op": "gt", "value": 1000}]}]}
    assert views[-1]["sort"] == ["-amount"]


@pytest.mark.parametrize("locale", ["en", "zh-CN"])
def test_a_formula_with_a_picked_field_and_a_rollup_with_picked_targets(page: Any, server: dict[str, Any],  # noqa: F811
                                                                        locale: str) -> None:
    from playwright.sync_api import expect

    url, api = server["url"], server["api"]
    key = "pf_" + locale.replace("-", "").lower()
    sales_app(api, key)
    t = TEXT[locale]
    use_locale(page, url, locale)
    page.goto(f"{url}/apps/{key}/deals/fields/new")
    page.get_by_role("textbox", name=t["name"], exact=True).fill("Double" if locale == "en" else "双倍金额")
    with settled(page):
        page.locator("select[name=type]").select_option("formula")
    with settled(page):
        page.locator(".fx-fields").get_by_role("button", name="Amount" if locale == "en" else "金额").click()
    with settled(page):
        page.locator("#opt-formula").press_sequentially(" * * 2")
    expect(page.locator("#formula-check mark")).to_have_text("*")
    page.locator("#opt-formula").fill("")
    with settled(page):
        page.locator(".fx-fields").get_by_role("button", name="Amount" if locale == "en" else "金额").click()
    with settled(page):
        page.locator("#opt-formula").press_sequentially(" * 2")
    expect(page.locator("#formula-check")).to_contain_text(t["valid"])
    expect(page.locator("#formula-check")).to_contain_text("1800")  # Delta, the latest record: 900 * 2
    shot(page, f"builder-formula-{locale}")
    page.get_by_role("button", name=t["save"]).click()
    expect(page.locator("table.plain")).to_contain_text("Double" if locale == "en" else "双倍金额")
    double = [f for f in api.ok("GET", f"/meta/apps/{key}/tables/deals/fields")["fields"] if f["type"] == "formula"]
    assert double[0]["options"]["formula"] == "{amount} * 2"
    # a rollup on accounts: the link, then the linked table's field, then the function
    page.goto(f"{url}/apps/{key}/accounts/fields/new")
    page.get_by_role("textbox", name=t["name"], exact=True).fill("Pipeline total" if locale == "en" else "商机总额")
    with settled(page):
        page.locator("select[name=type]").select_option("rollup")
    with settled(page):
        page.locator("#opt-lookup-field").select_option("amount")
    page.locator("#opt-function").select_option("sum")
    shot(page, f"builder-rollup-{locale}")
    page.get_by_role("button", name=t["save"]).click()
    expect(page.locator("table.plain")).to_contain_text("Pipeline total" if locale == "en" else "商机总额")
    acme = api.records(key, "accounts")[0]["fields"]
    assert 3540 in acme.values()


@pytest.mark.parametrize("locale", ["en", "zh-CN"])
def test_kanban_with_column_totals(page: Any, server: dict[str, Any], locale: str) -> None:  # noqa: F811
    from playwright.sync_api import expect

    url, api = server["url"], server["api"]
    key = "pk_" + locale.replace("-", "").lower()
    sales_app(api, key)
    api.ok("POST", f"/meta/apps/{key}/tables/deals/views", {"key": "board", "label": "Board", "type": "kanban",
                                                             "options": {"group_field": "stage",
                                                                         "sum_field": "amount"}})
    t = TEXT[locale]
    use_locale(page, url, locale)
    page.goto(f"{url}/apps/{key}/deals?view=board")
    won, lead = page.locator(".column[data-value=won]"), page.locator(".column[data-value=lead]")
    expect(won.locator(".col-sum")).to_contain_text("940")
    expect(lead.locator(".col-sum")).to_contain_text("2,600")
    won.get_by_text(t["add_card"]).click()
    won.locator("input[name=title]").fill("Omega")
    with settled(page):
        won.get_by_role("button", name="Add" if locale == "en" else "添加").click()
    expect(page.locator(".column[data-value=won]")).to_contain_text("Omega")
    expect(page.locator(".column[data-value=won] .col-count")).to_have_text("3")
    with settled(page):
        page.locator(".card", has_text="Beta").drag_to(page.locator(".column[data-value=won]"))
    expect(page.locator(".column[data-value=won] .col-sum")).to_contain_text("3,440")
    expect(page.locator(".column[data-value=lead] .col-sum")).to_contain_text("100")
    shot(page, f"kanban-totals-{locale}")
    assert [r["fields"]["stage"] for r in api.records(key, "deals", search="Beta")] == ["won"]

    # the board's own settings: the fields cards show (ticked, in the list's order) and "hide empty
    # columns", first for this user only, then saved into the view for everyone
    beta = page.locator(".card", has_text="Beta").locator(".kv .k")
    expect(beta).to_have_text([t["amount"], t["close"], t["hot"], t["account"]])
    page.get_by_text(t["card_fields"], exact=True).click()
    panel = page.locator("#board-settings")
    with settled(page):
        panel.get_by_label(t["amount"], exact=True).uncheck()
    expect(beta).to_have_text([t["close"], t["hot"], t["account"]])
    with settled(page):  # Alt+Up on a field's box moves it up the list (as the grid's columns panel)
        panel.get_by_label(t["hot"], exact=True).press("Alt+ArrowUp")
    expect(beta).to_have_text([t["hot"], t["close"], t["account"]])
    expect(page.locator(".column[data-value='']")).to_have_count(1)
    with settled(page):
        panel.get_by_role("switch", name=t["hide_empty"]).check()
    expect(page.locator(".column[data-value='']")).to_have_count(0)
    expect(panel).to_be_visible()  # the panel stays open while its changes apply
    board = api.ok("GET", f"/meta/apps/{key}/tables/deals/views/board")
    assert "fields" not in board and "hide_empty" not in board["options"]  # the user's own, so far
    shot(page, f"kanban-card-fields-{locale}")
    with settled(page):
        panel.get_by_role("button", name=t["to_view"]).click()
    board = api.ok("GET", f"/meta/apps/{key}/tables/deals/views/board")
    assert board["fields"] == ["hot", "close", "account"] and board["options"]["hide_empty"] is True


@pytest.mark.parametrize("locale", ["en", "zh-CN"])
def test_a_calendar_drag_reschedules(page: Any, server: dict[str, Any], locale: str) -> None:  # noqa: F811
    from playwright.sync_api import expect

    url, api = server["url"], server["api"]
    key = "pc_" + locale.replace("-", "").lower()
    sales_app(api, key)
    api.ok("POST", f"/meta/apps/{key}/tables/deals/views", {"key": "cal", "label": "Closing", "type": "calendar",
                                                             "options": {"date_field": "close",
                                                                         "color_field": "stage"}})
    use_locale(page, url, locale)
    page.goto(f"{url}/apps/{key}/deals?view=cal&day=2026-05-01")
    event = page.locator(".cal-ev", has_text="Alpha")
    expect(event).to_be_visible()
    with settled(page):
        event.drag_to(page.locator(".cal-day[data-date='2026-05-21']"))
    expect(page.locator(".cal-day[data-date='2026-05-21']")).to_contain_text("Alpha")
    assert [r["fields"]["close"] for r in api.records(key, "deals", search="Alpha")] == ["2026-05-21"]
    # click a day to add; then the week view shows it
    day = page.locator(".cal-day[data-date='2026-05-14']")
    day.locator("summary").click()
    day.locator("input[name=title]").fill("Kickoff")
    with settled(page):
        day.locator("button").click()
    expect(page.locator(".cal-day[data-date='2026-05-14']")).to_contain_text("Kickoff")
    shot(page, f"calendar-{locale}")
    with settled(page):
        page.get_by_role("button", name="Week" if locale == "en" else "周").click()
    expect(page.locator(".cal-day")).to_have_count(7)
