"""The CRM's sales and service flows in a real browser as the demo users (issue 16): a rep logs an activity
from the customer page and moves an opportunity one stage at a time to won (the stage picker offers only
the allowed moves, a missing gate is asked for next to its field) and the draft order appears once; a
ticket goes through the whole service flow, its assignee is told, and a disallowed jump is refused in the
reader's language with nothing changed."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from formwork import db
from formwork.automation.worker import Worker
from tests.browser import test_crm_daily_browser as daily
from tests.browser.test_ui_browser import pytestmark  # noqa: F401 - same skip rules

# the daily tests' fixtures: one CRM server with demo data per module, chromium, the readers' language
crm_server, lang, _unique = daily.crm_server, daily.lang, daily._unique
WORDS = {
    "en": {"add_activity": "Add: Activities", "subject": "Subject", "create": "Create", "stage": "Stage",
           "save": "Save", "saved": "Saved.", "amount": "Amount", "close": "Expected close", "orders": "Orders",
           "stages": ["Lead", "Qualified", "Proposal", "Negotiation", "Won", "Lost"],
           "gate": "From the proposal stage on, amount and expected close date are required",
           "title": "Title", "status": "Status", "assignee": "Assignee", "handling": "Handling",
           "result": "Result", "satisfaction": "Satisfaction",
           "states": ["New", "Assigned", "In progress", "Feedback", "Archived"],
           "refused": "cannot move from “Assigned” to “Archived”", "required": "is required when"},
    "zh-CN": {"add_activity": "新增：交往记录", "subject": "主题", "create": "创建", "stage": "阶段",
              "save": "保存", "saved": "已保存。", "amount": "预计金额", "close": "预计成交日期", "orders": "订单",
              "stages": ["线索", "已确认", "方案报价", "谈判", "赢单", "输单"],
              "gate": "进入方案报价及之后的阶段，必须填写预计金额和预计成交日期",
              "title": "标题", "status": "状态", "assignee": "处理人", "handling": "处理过程",
              "result": "处理结果", "satisfaction": "满意度",
              "states": ["新建", "已分配", "处理中", "待反馈", "已归档"],
              "refused": "不能从“已分配”变更为“已归档”", "required": "时必填"},
}


@pytest.fixture
def open_as(browser: Any, crm_server: dict[str, Any]) -> Iterator[Any]:
    """A logged-in page per user; any page error fails the test, except the refused saves' own 422."""
    yield from daily.pages_as(browser, crm_server["url"], tolerated="status of 422")


def _label(text: str) -> re.Pattern[str]:
    return re.compile("^" + re.escape(text) + r"\*?$")


def _options(page: Any, label: str) -> list[str]:
    """The choices a select offers (its empty "choose…" entry aside)."""
    texts: list[str] = page.get_by_label(_label(label)).locator("option:not([value=''])").all_inner_texts()
    return [t.strip() for t in texts]


def _save(page: Any, w: dict[str, str]) -> None:
    page.get_by_role("button", name=w["save"], exact=True).click()


def _drain(crm_server: dict[str, Any]) -> None:
    Worker(crm_server["app"], worker_id="crm-flows-browser").drain()


def _count(crm_server: dict[str, Any], table: str, where: Any) -> int:
    p = crm_server["app"].extensions["formwork"]
    with db.transaction(p.engine) as conn:
        t = p.catalogs.get(conn).table("crm", table)
        return int(conn.execute(select(func.count()).select_from(t.sa).where(t.sa.c.deleted_at.is_(None),
                                                                           *where(t))).scalar() or 0)


@pytest.mark.parametrize("lang", ["zh-CN"], indirect=True)
def test_a_rep_logs_an_activity_and_wins_an_opportunity_once(open_as: Any, crm_server: dict[str, Any],
                                                              lang: str) -> None:
    from playwright.sync_api import expect

    w, url, api, am1 = WORDS[lang], crm_server["url"], crm_server["api"], crm_server["users"]["am1"]
    stages: list[str] = list(w["stages"])
    cust = api.ok("POST", "/data/crm/customers", {"fields": {"name": _unique("全流程客户"), "owner": am1}})["id"]
    opp = api.ok("POST", "/data/crm/opportunities", {"fields": {"name": _unique("全流程商机"), "customer": cust,
                                                                "owner": am1}})["id"]
    page = open_as("am1")
    # the customer page's "add activity" opens a new activity already linked to the customer
    page.goto(f"{url}/apps/crm/customers/{cust}")
    page.get_by_role("link", name=w["add_activity"], exact=True).first.click()
    subject = _unique("电话沟通")
    page.get_by_label(_label(w["subject"])).fill(subject)
    page.get_by_role("button", name=w["create"], exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(subject)
    acts = api.records("crm", "activities", search=subject.split()[-1])
    assert [(a["fields"]["customer"]["id"], a["fields"]["owner"]["id"]) for a in acts] == [(cust, am1)]

    # one stage at a time: the picker offers the current stage, the next one and lost
    page.goto(f"{url}/apps/crm/opportunities/{opp}")
    assert _options(page, w["stage"]) == [stages[0], stages[1], stages[5]]
    page.get_by_label(_label(w["stage"])).select_option(label=stages[1])
    _save(page, w)
    expect(page.get_by_role("status")).to_have_text(w["saved"])
    assert _options(page, w["stage"]) == [stages[1], stages[2], stages[5]]
    # the proposal's gate is asked for; what was chosen stays on the page
    page.get_by_label(_label(w["stage"])).select_option(label=stages[2])
    _save(page, w)
    expect(page.get_by_text(w["gate"]).first).to_be_visible()
    assert api.ok("GET", f"/data/crm/opportunities/{opp}")["fields"]["stage"] == "qualified"
    page.get_by_label(_label(w["stage"])).select_option(label=stages[2])
    page.get_by_label(_label(w["amount"])).fill("88000")
    page.get_by_label(_label(w["close"])).fill("2027-03-31")
    _save(page, w)
    expect(page.get_by_role("status")).to_have_text(w["saved"])
    for nxt in (3, 4):
        assert _options(page, w["stage"]) == [stages[nxt - 1], stages[nxt], stages[5]]
        page.get_by_label(_label(w["stage"])).select_option(label=stages[nxt])
        _save(page, w)
        expect(page.get_by_role("status")).to_have_text(w["saved"])
    assert api.ok("GET", f"/data/crm/opportunities/{opp}")["fields"]["stage"] == "won"
    _drain(crm_server)

    def orders_of_opp(t: Any) -> list[Any]:
        return [t.sa.c[t.field("opportunity").column_name] == opp]

    assert _count(crm_server, "orders", orders_of_opp) == 1
    # saving the won opportunity again (the page reloaded: the order's automation changed the record), and
    # winning it a second time, make no second order
    page.reload()
    _save(page, w)
    expect(page.get_by_role("status")).to_have_text(w["saved"])
    api.ok("PATCH", f"/data/crm/opportunities/{opp}", {"fields": {"stage": "negotiation"}})
    api.ok("PATCH", f"/data/crm/opportunities/{opp}", {"fields": {"stage": "won"}})
    _drain(crm_server)
    assert _count(crm_server, "orders", orders_of_opp) == 1
    page.reload()
    expect(page.locator("a[href^='/apps/crm/orders/']:not([href*='/new'])")).to_have_count(1)


@pytest.mark.parametrize("lang", ["zh-CN", "en"], indirect=True)
def test_a_ticket_goes_through_the_service_flow(open_as: Any, crm_server: dict[str, Any], lang: str) -> None:
    from playwright.sync_api import expect

    w, url, api = WORDS[lang], crm_server["url"], crm_server["api"]
    states: list[str] = list(w["states"])
    am1 = crm_server["users"]["am1"]
    cust = api.ok("POST", "/data/crm/customers", {"fields": {"name": _unique("工单客户"), "owner": am1}})["id"]
    # a rep records the request: a new ticket starts new or assigned, never further on
    rep = open_as("am1")
    rep.goto(f"{url}/apps/crm/tickets/new?customer={cust}")
    assert _options(rep, w["status"]) == states[:2]
    title = _unique("打印机故障")
    rep.get_by_label(_label(w["title"])).fill(title)
    rep.get_by_role("button", name=w["create"], exact=True).click()
    expect(rep.get_by_role("heading", level=1)).to_have_text(title)
    tid = int(rep.url.rstrip("/").rsplit("/", 1)[-1])

    def ticket() -> dict[str, Any]:
        fields: dict[str, Any] = api.ok("GET", f"/data/crm/tickets/{tid}")["fields"]
        return fields

    # the service desk assigns it: the assignee is asked for, then told
    desk = open_as("manager1")
    desk.goto(f"{url}/apps/crm/tickets/{tid}")
    desk.get_by_label(_label(w["status"])).select_option(label=states[1])
    _save(desk, w)
    expect(desk.get_by_text(re.compile(re.escape(w["required"]))).first).to_be_visible()
    assert ticket()["status"] == "new"
    desk.get_by_label(_label(w["status"])).select_option(label=states[1])
    desk.get_by_label(_label(w["assignee"])).select_option(str(am1))
    _save(desk, w)
    expect(desk.get_by_role("status")).to_have_text(w["saved"])
    _drain(crm_server)
    p = crm_server["app"].extensions["formwork"]
    with db.transaction(p.engine) as conn:
        n = db.notifications
        links = [r.link for r in conn.execute(select(n.c.link).where(n.c.user_id == am1))]
    assert any(isinstance(x, dict) and x.get("record_id") == tid for x in links)
    # the assignee may only take it on; a jump the flow does not allow (an old page, a crafted form) is
    # refused in the reader's language and changes nothing
    rep.goto(f"{url}/apps/crm/tickets/{tid}")
    assert _options(rep, w["status"]) == states[1:3]
    before = ticket()
    rep.get_by_label(_label(w["status"])).evaluate(
        "(s) => { s.add(new Option('x', 'archived')); s.value = 'archived'; }")
    _save(rep, w)
    expect(rep.get_by_text(re.compile(re.escape(w["refused"]))).first).to_be_visible()
    assert ticket() == before
    # handle; feedback needs the handling and the result, archiving the satisfaction
    rep.get_by_label(_label(w["status"])).select_option(label=states[2])
    _save(rep, w)
    expect(rep.get_by_role("status")).to_have_text(w["saved"])
    rep.get_by_label(_label(w["status"])).select_option(label=states[3])
    _save(rep, w)
    expect(rep.locator(".field.has-err")).to_have_count(2)
    assert ticket()["status"] == "in_progress"
    rep.get_by_label(_label(w["status"])).select_option(label=states[3])
    rep.get_by_label(_label(w["handling"])).fill("上门更换硒鼓")
    rep.get_by_label(_label(w["result"])).fill("已恢复打印")
    _save(rep, w)
    expect(rep.get_by_role("status")).to_have_text(w["saved"])
    rep.get_by_label(_label(w["status"])).select_option(label=states[4])
    _save(rep, w)
    expect(rep.locator(".field.has-err")).to_have_count(1)
    assert ticket()["status"] == "feedback"
    rep.get_by_label(_label(w["status"])).select_option(label=states[4])
    rep.get_by_label(_label(w["satisfaction"])).fill("5")
    _save(rep, w)
    expect(rep.get_by_role("status")).to_have_text(w["saved"])
    got = ticket()
    assert (got["status"], got["assignee"]["id"], got["satisfaction"], got["result"]) == (
        "archived", am1, 5, "已恢复打印")
