"""The CRM template's version-2 daily work beyond stock (issue 16), through the API and pages as the demo
users: quotes with lines and a print page, sales targets against orders, campaign ROI from won revenue,
follow-up and plan reminders, the lead form, SLA from priority, assignment notices, record buttons and
texts in both languages."""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update

from formwork import db
from formwork.automation.worker import Worker
from formwork.metadata.portable import load_template
from tests.crm_support import Crm, installed_crm
from tests.test_crm_daily import login

CST = ZoneInfo("Asia/Shanghai")


@pytest.fixture(scope="module")
def crm(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Crm]:
    yield from installed_crm(database_url, tmp_path_factory)


@pytest.fixture
def worker(crm: Crm) -> Worker:
    return Worker(crm.app, worker_id="crm-v2-test")


@contextlib.contextmanager
def locale_of(crm: Crm, who: str, locale: str) -> Iterator[None]:
    """The user reads in ``locale`` for a while (pages and API messages follow the user's setting)."""
    users = db.users
    old = crm.sql(lambda conn, cat, app: conn.execute(select(users.c.locale).where(users.c.id == crm.users[who]))
                  .scalar())
    crm.sql(lambda conn, cat, app: conn.execute(update(users).where(users.c.id == crm.users[who])
                                                 .values(locale=locale)))
    try:
        yield
    finally:
        crm.sql(lambda conn, cat, app: conn.execute(update(users).where(users.c.id == crm.users[who])
                                                     .values(locale=old)))


def titles(crm: Crm, who: str) -> list[str]:
    return [n["title"] for n in crm.api(who).ok("GET", "/notifications?limit=200")["notifications"]]


def product(crm: Crm, name: str, price: float) -> int:
    rid: int = crm.admin.ok("POST", "/data/crm/products", {"fields": {"name": name, "price": price}})["id"]
    return rid


# --- quotes -------------------------------------------------------------------------------------------
def test_quote_lines_take_the_product_price_discount_and_add_up(crm: Crm) -> None:
    am1 = crm.api("am1")
    cust = am1.ok("POST", "/data/crm/customers", {"fields": {"name": "报价测试客户"}})
    q = am1.ok("POST", "/data/crm/quotes", {"fields": {"customer": cust["id"]}})
    pa, pb = product(crm, "报价产品A", 1000), product(crm, "报价产品B", 250)
    la = am1.ok("POST", "/data/crm/quote_lines", {"fields": {"quote": q["id"], "product": pa, "quantity": 3,
                                                             "discount": 10}})
    assert la["fields"]["unit_price"] == 1000 and la["fields"]["line_total"] == 2700
    am1.ok("POST", "/data/crm/quote_lines", {"fields": {"quote": q["id"], "product": pb, "quantity": 2,
                                                        "unit_price": 200}})
    got = am1.ok("GET", f"/data/crm/quotes/{q['id']}")["fields"]
    assert (got["list_total"], got["total"], got["discount_amount"]) == (3400, 3100, 300)
    # the total is computed: nobody types it
    st, _ = am1.patch(f"/data/crm/quotes/{q['id']}", {"fields": {"total": 1}})
    assert st in (400, 422)
    # lines follow their quote: another rep neither sees nor adds to them
    am2 = crm.api("am2")
    assert am2.get(f"/data/crm/quote_lines/{la['id']}")[0] == 404
    assert am2.post("/data/crm/quote_lines", {"fields": {"quote": q["id"], "product": pa, "quantity": 1}})[0] in (
        403, 404, 422)


def test_the_printable_quote_page_in_each_language(crm: Crm) -> None:
    am1 = crm.api("am1")
    cust = am1.ok("POST", "/data/crm/customers", {"fields": {"name": "打印测试客户 Print Co"}})
    q = am1.ok("POST", "/data/crm/quotes", {"fields": {"customer": cust["id"]}})
    am1.ok("POST", "/data/crm/quote_lines", {"fields": {"quote": q["id"], "product": product(crm, "打印产品", 880),
                                                        "quantity": 2}})
    with locale_of(crm, "am1", "en"):
        client, _csrf = login(crm, "am1")
        page = client.get(f"/apps/crm/quotes/{q['id']}/print")
        html = page.get_data(as_text=True)
    assert page.status_code == 200, html[:500]
    assert q["fields"]["number"] in html and "打印产品" in html and "打印测试客户 Print Co" in html
    assert "Print</button>" in html and "<h2>Lines</h2>" in html and "<script>" not in html
    assert "1,760" in html
    with locale_of(crm, "am1", "zh-CN"):
        client, _csrf = login(crm, "am1")
        zh = client.get(f"/apps/crm/quotes/{q['id']}/print").get_data(as_text=True)
    assert "打印</button>" in zh and "<h2>报价明细</h2>" in zh
    resp = client.get("/static/print.css")
    css = resp.get_data(as_text=True)
    resp.close()
    assert "@media print" in css
    # someone who can't read the quote gets no page
    other, _ = login(crm, "am3")
    assert other.get(f"/apps/crm/quotes/{q['id']}/print").status_code == 404
    # the record page links to it
    assert f"/apps/crm/quotes/{q['id']}/print" in client.get(f"/apps/crm/quotes/{q['id']}").get_data(as_text=True)


# --- sales targets --------------------------------------------------------------------------------------
def test_sales_targets_set_against_orders_on_the_dashboard(crm: Crm) -> None:
    m1 = crm.api("manager1")
    first = dt.date.today().replace(day=1)
    t = m1.ok("POST", "/data/crm/sales_targets", {"fields": {"name": "Q test", "owner": crm.users["am1"],
                                                             "period": "quarter", "start_date": "2031-01-01",
                                                             "amount": 300000}})
    assert t["fields"]["end_date"] == "2031-03-31"
    mt = m1.ok("POST", "/data/crm/sales_targets", {"fields": {"name": "M test", "owner": crm.users["am1"],
                                                              "start_date": "2031-02-01", "amount": 100000}})
    assert mt["fields"]["period"] == "month" and mt["fields"]["end_date"] == "2031-02-28"
    # a rep reads their own targets only, and can't set them
    am1, am3 = crm.api("am1"), crm.api("am3")
    assert am1.ok("GET", f"/data/crm/sales_targets/{t['id']}")["id"] == t["id"]
    assert am3.get(f"/data/crm/sales_targets/{t['id']}")[0] == 404
    assert am1.post("/data/crm/sales_targets", {"fields": {"name": "x", "owner": crm.users["am1"],
                                                           "start_date": "2031-01-01", "amount": 1}})[0] == 403
    # the dashboard: this month's orders per rep against their targets
    dash = m1.ok("GET", "/meta/apps/crm/dashboards/sales_performance/data?period=this_month")
    w = next(x for x in dash["widgets"] if x["key"] == "target_attainment")
    assert "by_owner" in w["targets"]
    own = crm.admin.ok("GET", "/data/crm/sales_targets?limit=500&filter="
                       f'{{"field":"start_date","op":"eq","value":"{first.isoformat()}"}}')["records"]
    expect = {str(r["fields"]["owner"]["id"]): float(r["fields"]["amount"]) for r in own
              if r["fields"]["owner"]["id"] in (crm.users["am1"], crm.users["am2"])}
    assert {k: float(v) for k, v in w["targets"]["by_owner"].items() if k in expect} == expect
    gauge = next(x for x in dash["widgets"] if x["key"] == "target_gauge")
    assert gauge["goal"] == pytest.approx(sum(expect.values()))


# --- campaign attribution -------------------------------------------------------------------------------
def test_campaign_roi_comes_from_its_won_opportunities(crm: Crm) -> None:
    m1 = crm.api("manager1")
    camp = m1.ok("POST", "/data/crm/campaigns", {"fields": {"name": "ROI 测试活动", "cost": 10000}})
    assert camp["fields"]["won_revenue"] in (None, 0) and camp["fields"]["roi"] in (None, -100)
    cust = m1.ok("POST", "/data/crm/customers", {"fields": {"name": "ROI 测试客户"}})
    for amount, stage in ((30000, "won"), (50000, "negotiation")):
        m1.ok("POST", "/data/crm/opportunities", {"fields": {
            "name": f"ROI {stage}", "customer": cust["id"], "campaign": camp["id"], "amount": amount,
            "expected_close": "2031-01-01", "stage": stage}})
    got = m1.ok("GET", f"/data/crm/campaigns/{camp['id']}")["fields"]
    assert got["won_revenue"] == 30000 and got["roi"] == 200
    st, _ = m1.patch(f"/data/crm/campaigns/{camp['id']}", {"fields": {"won_revenue": 1}})
    assert st in (400, 422)


# --- follow-up -----------------------------------------------------------------------------------------
def _only(crm: Crm, keys: set[str]) -> None:
    for a in load_template("crm")["automations"]:
        if a["trigger"]["type"] in ("schedule", "date_reached"):
            crm.admin.ok("PATCH", f"/meta/apps/crm/automations/{a['key']}", {"enabled": a["key"] in keys})


def test_follow_up_and_plan_reminders(crm: Crm, worker: Worker) -> None:
    with locale_of(crm, "am2", "en"):
        _follow_up(crm, worker)


def _follow_up(crm: Crm, worker: Worker) -> None:
    am2 = crm.api("am2")
    day = (dt.datetime.now(CST) + dt.timedelta(days=3)).date()
    cust = am2.ok("POST", "/data/crm/customers", {"fields": {"name": "跟进提醒客户",
                                                             "next_follow_up": day.isoformat()}})
    opp = am2.ok("POST", "/data/crm/opportunities", {"fields": {"name": "跟进提醒商机", "customer": cust["id"],
                                                                "next_follow_up": day.isoformat()}})
    plan = am2.ok("POST", "/data/crm/plans", {"fields": {"plan": "安排演示", "opportunity": opp["id"],
                                                         "date": (day + dt.timedelta(days=1)).isoformat()}})
    assert plan["fields"]["status"] == "planned"
    worker.drain()
    _only(crm, {"customer_follow_up_reminder", "opportunity_follow_up_reminder", "plan_due_reminder"})
    try:
        at = dt.datetime.combine(day, dt.time(9, 1), CST).astimezone(dt.UTC).replace(tzinfo=None)
        worker.tick(at)
        worker.drain()
    finally:
        _only(crm, {a["key"] for a in load_template("crm")["automations"]})
    got = titles(crm, "am2")
    assert "Follow up today: 跟进提醒客户" in got and "Follow up today: 跟进提醒商机" in got
    assert "Plan due tomorrow: 安排演示" in got
    # a plan is done with its result
    st, body = am2.patch(f"/data/crm/plans/{plan['id']}", {"fields": {"status": "done"}})
    assert st == 422
    am2.ok("PATCH", f"/data/crm/plans/{plan['id']}", {"fields": {"status": "done", "result": "客户认可方案"}})


# --- lead form --------------------------------------------------------------------------------------------
def test_the_lead_form_creates_customer_contact_and_opportunity_assigned_by_the_rules(crm: Crm,
                                                                                        worker: Worker) -> None:
    client = crm.app.test_client()
    page = client.get("/f/crm/opportunities/lead_form").get_data(as_text=True)
    for label in ("Company", "Contact name", "Phone", "Email"):
        assert label in page
    token = re.search(r'name="form_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    resp = client.post("/f/crm/opportunities/lead_form", data={
        "form_token": token, "lead_company": "表单线索科技有限公司", "lead_contact": "赵敏",
        "lead_phone": "+86 138 0000 1234", "lead_email": "zhao@example.com", "name": "询价：企业版 50 用户",
        "amount": "120000"})
    assert resp.status_code in (200, 303), resp.get_data(as_text=True)[:500]
    worker.drain()
    opp = crm.admin.ok("GET", '/data/crm/opportunities?filter={"field":"lead_company","op":"eq",'
                              '"value":"表单线索科技有限公司"}')["records"]
    assert len(opp) == 1
    f = opp[0]["fields"]
    owner = f["owner"]["id"]
    assert owner in {crm.users[f"am{i}"] for i in range(1, 5)} and f["account_manager"]["id"] == owner
    cust = crm.admin.ok("GET", f"/data/crm/customers/{f['customer']['id']}")["fields"]
    assert cust["name"] == "表单线索科技有限公司" and cust["owner"]["id"] == owner
    contacts = crm.admin.ok("GET", f'/data/crm/contacts?filter={{"field":"customer","op":"eq",'
                                   f'"value":{f["customer"]["id"]}}}')["records"]
    assert [(c["fields"]["name"], c["fields"]["email"]) for c in contacts] == [("赵敏", "zhao@example.com")]
    username = next(u for u, i in crm.users.items() if i == owner)
    assert any("表单线索科技有限公司" in t for t in titles(crm, username))
    # the rep it went to sees all three
    rep = crm.api(username)
    assert rep.ok("GET", f"/data/crm/opportunities/{opp[0]['id']}")["id"] == opp[0]["id"]
    assert rep.ok("GET", f"/data/crm/contacts/{contacts[0]['id']}")["id"] == contacts[0]["id"]


def _submit_lead(crm: Crm, company: str, contact: str, email: str) -> tuple[int, str]:
    client = crm.app.test_client()
    page = client.get("/f/crm/opportunities/lead_form").get_data(as_text=True)
    token = re.search(r'name="form_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    resp = client.post("/f/crm/opportunities/lead_form", data={
        "form_token": token, "lead_company": company, "lead_contact": contact, "lead_email": email,
        "name": f"询价：{contact}", "amount": "5000"})
    body = re.sub(r'name="form_token" value="[^"]+"', "", resp.get_data(as_text=True))
    return resp.status_code, body


def test_the_lead_form_attaches_a_known_company_to_its_customer_and_owner(crm: Crm, worker: Worker) -> None:
    am3 = crm.users["am3"]
    known = crm.admin.ok("POST", "/data/crm/customers", {"fields": {"name": "老朋友科技有限公司", "owner": am3}})["id"]
    pool = crm.admin.ok("POST", "/data/crm/customers", {"fields": {"name": "Pool Widgets Ltd.", "owner": None}})["id"]
    n_customers = len(crm.admin.ok("GET", "/data/crm/customers?limit=1000")["records"])
    # the visitor gets the same answer whether the company was known or not
    answers = [_submit_lead(crm, "老朋友科技", "钱七", "qian@laopengyou.cn"),
               _submit_lead(crm, "POOL WIDGETS", "Ann Lee", "ann@widgets.example"),
               _submit_lead(crm, "全新线索公司", "孙八", "sun@new.example"),
               _submit_lead(crm, "老朋友科技有限公司", "周九", "zhou@laopengyou.cn")]  # the very same name
    assert {a[0] for a in answers} == {200} and len({a[1] for a in answers}) == 1
    worker.drain()

    def opp(company: str) -> dict[str, Any]:
        recs = crm.admin.ok("GET", '/data/crm/opportunities?filter={"field":"lead_company","op":"eq",'
                                   f'"value":"{company}"}}')["records"]
        assert len(recs) == 1
        return dict(recs[0]["fields"])

    # a known company: the opportunity and the new contact join its customer and go to its owner
    f = opp("老朋友科技")
    assert f["customer"]["id"] == known and f["owner"]["id"] == am3 and f["account_manager"]["id"] == am3
    contacts = crm.admin.ok("GET", f'/data/crm/contacts?filter={{"field":"customer","op":"eq","value":{known}}}')
    assert sorted(c["fields"]["name"] for c in contacts["records"]) == ["周九", "钱七"]
    assert opp("老朋友科技有限公司")["customer"]["id"] == known
    assert crm.admin.ok("GET", f"/data/crm/customers/{known}")["fields"]["owner"]["id"] == am3
    # a known company without an owner (in the pool): assigned by the rules, the customer goes with it
    f = opp("POOL WIDGETS")
    assert f["customer"]["id"] == pool
    owner = f["owner"]["id"]
    assert owner in {crm.users[f"am{i}"] for i in range(1, 5)}
    assert crm.admin.ok("GET", f"/data/crm/customers/{pool}")["fields"]["owner"]["id"] == owner
    # a new company is a new customer: exactly one more
    f = opp("全新线索公司")
    assert f["customer"]["display"] == "全新线索公司"
    assert len(crm.admin.ok("GET", "/data/crm/customers?limit=1000")["records"]) == n_customers + 1
    assert any("老朋友科技" in t for t in titles(crm, "am3"))


# --- service ------------------------------------------------------------------------------------------------
def test_sla_due_follows_the_priority_and_every_assignment_is_announced(crm: Crm, worker: Worker) -> None:
    m1 = crm.api("manager1")
    before = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    made = {}
    for prio, hours in (("urgent", 4), ("high", 24), ("normal", 72), ("low", 120)):
        tk = m1.ok("POST", "/data/crm/tickets", {"fields": {"title": f"SLA {prio}", "priority": prio}})
        due = dt.datetime.fromisoformat(tk["fields"]["sla_due"].replace("Z", ""))
        assert before + dt.timedelta(hours=hours) - dt.timedelta(seconds=2) <= due <= \
            dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(hours=hours, seconds=2)
        made[prio] = tk
    low = made["low"]
    raised = m1.ok("PATCH", f"/data/crm/tickets/{low['id']}", {"fields": {"priority": "urgent"}})["fields"]
    created = dt.datetime.fromisoformat(low["created_at"].replace("Z", ""))
    assert abs(dt.datetime.fromisoformat(raised["sla_due"].replace("Z", "")) - (created + dt.timedelta(hours=4))) \
        < dt.timedelta(seconds=2)
    agreed = m1.ok("POST", "/data/crm/tickets", {"fields": {"title": "SLA agreed", "priority": "high",
                                                            "sla_due": "2031-05-01T08:00:00Z"}})
    assert agreed["fields"]["sla_due"].startswith("2031-05-01T08:00")
    # every assignment notifies the assignee
    tk = made["normal"]
    for who in ("am1", "am2"):
        m1.ok("PATCH", f"/data/crm/tickets/{tk['id']}", {"fields": {"assignee": crm.users[who],
                                                                    "status": "assigned"}})
        worker.drain()
        got = titles(crm, who)
        assert f"Ticket assigned to you: {tk['fields']['number']} SLA normal" in got or \
            f"分配给您的工单：{tk['fields']['number']} SLA normal" in got


def test_buttons_convert_a_lead_and_submit_a_contract(crm: Crm, worker: Worker) -> None:
    am1 = crm.api("am1")
    opp = am1.ok("POST", "/data/crm/opportunities", {"fields": {"name": "待转化线索"}})
    shown = am1.ok("GET", f"/data/crm/opportunities/{opp['id']}/buttons")["buttons"]
    assert [b["key"] for b in shown] == ["convert_lead"]
    am1.ok("POST", f"/data/crm/opportunities/{opp['id']}/buttons/convert_lead")
    worker.drain()
    assert am1.ok("GET", f"/data/crm/opportunities/{opp['id']}")["fields"]["stage"] == "qualified"
    assert am1.ok("GET", f"/data/crm/opportunities/{opp['id']}/buttons")["buttons"] == []
    contract = am1.ok("POST", "/data/crm/contracts", {"fields": {"title": "按钮提交合同", "amount": 80000}})
    assert [b["key"] for b in am1.ok("GET", f"/data/crm/contracts/{contract['id']}/buttons")["buttons"]] == \
        ["submit_for_approval"]
    am1.ok("POST", f"/data/crm/contracts/{contract['id']}/buttons/submit_for_approval")
    worker.drain()
    assert am1.ok("GET", f"/data/crm/contracts/{contract['id']}")["fields"]["approval_status"] == "pending"
    inbox = crm.api("manager1").ok("GET", "/approvals?status=pending")["approvals"]
    assert any(contract["fields"]["number"] in a["title"] for a in inbox)


# --- texts in both languages ---------------------------------------------------------------------------------
def test_descriptions_and_notices_in_the_readers_language(crm: Crm) -> None:
    doc = load_template("crm")
    assert doc["app"]["settings"]["template_version"] == 2
    assert isinstance(doc["app"]["description"], dict) and set(doc["app"]["description"]) == {"en", "zh-CN"}
    for a in doc["automations"]:
        for act in a["actions"]:
            if act["type"] == "notify":
                assert isinstance(act["title"], dict) and set(act["title"]) == {"en", "zh-CN"}, a["key"]
    with locale_of(crm, "am1", "en"):
        client, _ = login(crm, "am1")
        assert "Customers, sales, storage, marketing and service in one app" in client.get("/").get_data(as_text=True)
    with locale_of(crm, "am1", "zh-CN"):
        client, _ = login(crm, "am1")
        assert "客户、销售、库存、市场与服务一体化" in client.get("/").get_data(as_text=True)
        form = client.get("/apps/crm/stock_movements").get_data(as_text=True)
    assert "<h1>出入库记录</h1>" in form and "入库" in form
    # a plain string description stays valid
    crm.admin.ok("PATCH", "/meta/apps/crm/tables/warehouses", {"description": "Plain text"})
    crm.admin.ok("PATCH", "/meta/apps/crm/tables/warehouses", {"description": {"en": "Stores", "zh-CN": "仓库"}})
    st, _ = crm.admin.patch("/meta/apps/crm/tables/warehouses", {"description": {"en": 5}})
    assert st == 422
