"""Every automation shipped with the CRM, run by the worker's own processing functions on the demo data;
emails go to a real SMTP server on loopback (tests.peers)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from formwork import db
from formwork.automation.worker import Worker
from formwork.metadata.portable import load_template
from formwork.runtime import pool
from tests.crm_support import Crm, installed_crm
from tests.peers import SmtpSink
from tests.peers import smtp_sink as _smtp_sink
from tests.test_crm_template import rows

smtp_sink = _smtp_sink
CST = ZoneInfo("Asia/Shanghai")
TIMED = [a["key"] for a in load_template("crm")["automations"]
         if a["trigger"]["type"] in ("schedule", "date_reached")]


@pytest.fixture(scope="module")
def crm(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Crm]:
    yield from installed_crm(database_url, tmp_path_factory)


@pytest.fixture
def worker(crm: Crm, smtp_sink: SmtpSink) -> Worker:
    crm.app.config["AUTOMATION_RETRY_BASE"] = 0.01
    w = Worker(crm.app, worker_id="crm-test")
    w.settings.smtp.port = smtp_sink.port
    return w


def runs(crm: Crm, key: str) -> list[dict[str, Any]]:
    return crm.admin.ok("GET", f"/meta/apps/crm/automations/{key}/runs?limit=500")["runs"]  # type: ignore[no-any-return]


def mails_to(sink: SmtpSink, address: str) -> list[Any]:
    return [m for m in sink.messages if address in m.envelope_to]


# --- record triggers ------------------------------------------------------------------------------------
def test_new_opportunities_go_round_robin_and_start_the_stage_clock(crm: Crm, worker: Worker) -> None:
    ams = sorted(crm.users[f"am{i}"] for i in range(1, 5))
    made = [crm.admin.ok("POST", "/data/crm/opportunities", {"fields": {"name": f"官网询价 {i}", "stage": "lead",
                                                                        "owner": None}})
            for i in range(4)]
    worker.drain()
    got = [crm.admin.ok("GET", f"/data/crm/opportunities/{o['id']}")["fields"] for o in made]
    assert sorted(f["owner"]["id"] for f in got) == ams  # each account manager once
    assert all(f["account_manager"]["id"] == f["owner"]["id"] and f["stage_changed_at"] for f in got)
    assert runs(crm, "opportunity_round_robin")[0]["status"] == "succeeded"
    # moving the stage restarts the clock
    oid, first = made[0]["id"], got[0]["stage_changed_at"]
    crm.admin.ok("PATCH", f"/data/crm/opportunities/{oid}", {"fields": {"stage": "qualified"}})
    worker.drain()
    assert crm.admin.ok("GET", f"/data/crm/opportunities/{oid}")["fields"]["stage_changed_at"] >= first
    assert runs(crm, "stage_clock")[0]["status"] == "succeeded"


def test_won_opportunity_activates_the_customer_and_drafts_an_order(crm: Crm, worker: Worker) -> None:
    am1 = crm.users["am1"]
    api = crm.api("am1")
    cust = api.ok("POST", "/data/crm/customers",
                  {"fields": {"name": "赢单测试客户", "owner": am1, "status": "prospect"}})
    opp = crm.admin.ok("POST", "/data/crm/opportunities", {"fields": {  # a manager may start it late
        "name": "大单", "customer": cust["id"], "owner": am1, "stage": "negotiation", "amount": 880000,
        "expected_close": "2027-02-01"}})
    worker.drain()
    api.ok("PATCH", f"/data/crm/opportunities/{opp['id']}", {"fields": {"stage": "won"}})
    worker.drain()
    assert api.ok("GET", f"/data/crm/customers/{cust['id']}")["fields"]["status"] == "active"
    orders = api.records("crm", "orders", filter={"field": "opportunity", "op": "eq", "value": opp["id"]})
    assert len(orders) == 1
    o = orders[0]["fields"]
    assert o["status"] == "draft" and o["customer"]["id"] == cust["id"] and o["owner"]["id"] == am1
    assert o["order_date"] == dt.datetime.now(dt.UTC).date().isoformat()


def test_ticket_assignee_is_told_and_managers_hear_of_low_satisfaction(crm: Crm, worker: Worker,
                                                                      smtp_sink: SmtpSink) -> None:
    cust = rows(crm, "customers")[0]["id"]
    t = crm.admin.ok("POST", "/data/crm/tickets", {"fields": {
        "title": "设备无法开机", "type": "repair", "customer": cust, "assignee": crm.users["am3"],
        "status": "assigned", "sla_due": "2030-01-01T00:00:00Z"}})
    worker.drain()
    mail = smtp_sink.wait_for(1)[0]
    assert mail.envelope_to == ["am3@example.com"] and t["fields"]["number"] in mail["Subject"]
    assert any(n["link"]["record_id"] == t["id"] for n in crm.api("am3").ok("GET", "/notifications")["notifications"])
    crm.admin.ok("PATCH", f"/data/crm/tickets/{t['id']}", {"fields": {"satisfaction": 4, "status": "feedback",
                                                                       "handling": "上门维修", "result": "已解决"}})
    worker.drain()
    assert not runs(crm, "low_satisfaction")  # 4 of 5 is fine
    crm.admin.ok("PATCH", f"/data/crm/tickets/{t['id']}", {"fields": {"satisfaction": 1}})
    worker.drain()
    smtp_sink.wait_for(2)
    low = smtp_sink.messages[1]
    assert sorted(low.envelope_to) == ["manager1@example.com", "manager2@example.com"]
    assert "1/5" in low["Subject"]


def test_contract_approval_by_the_owners_sales_manager(crm: Crm, worker: Worker) -> None:
    am1 = crm.api("am1")
    c = am1.ok("POST", "/data/crm/contracts", {"fields": {
        "title": "年度服务合同", "owner": crm.users["am1"], "amount": 120000, "approval_status": "draft",
        "start_date": "2027-01-01", "end_date": "2027-12-31"}})
    am1.ok("PATCH", f"/data/crm/contracts/{c['id']}", {"fields": {"approval_status": "pending"}})
    worker.drain()
    assert crm.api("manager2").ok("GET", "/approvals?mine=true")["approvals"] == []  # the other team's manager
    boss = crm.api("manager1")
    mine = [a for a in boss.ok("GET", "/approvals?mine=true")["approvals"] if a["record_id"] == c["id"]]
    assert len(mine) == 1 and c["fields"]["number"] in mine[0]["title"]
    boss.ok("POST", f"/approvals/{mine[0]['id']}/decide", {"decision": "approve", "comment": "同意"})
    worker.drain()
    assert am1.ok("GET", f"/data/crm/contracts/{c['id']}")["fields"]["approval_status"] == "approved"


# --- time triggers, one rule at a time --------------------------------------------------------------------
def _only(crm: Crm, *keys: str) -> None:
    for k in TIMED:
        crm.admin.ok("PATCH", f"/meta/apps/crm/automations/{k}", {"enabled": k in keys})


def _next_local(hour: int, minute: int, day: int | None = None) -> dt.datetime:
    """The next hour:minute in China time (on ``day`` of a month if given), as UTC."""
    now = dt.datetime.now(CST)
    at = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if day is not None:
        at = at.replace(day=day)
        while at <= now:
            at = (at.replace(day=1) + dt.timedelta(days=32)).replace(day=day)
    while at <= now:
        at += dt.timedelta(days=1)
    return at.astimezone(dt.UTC)


def test_sla_escalation(crm: Crm, worker: Worker, smtp_sink: SmtpSink) -> None:
    """Late tickets go to the manager of the customer's owner's team; tickets of unowned customers (or of no
    customer) to every sales manager."""
    late = crm.admin.ok("POST", "/data/crm/tickets", {"fields": {
        "title": "Invoice is wrong", "type": "complaint", "status": "new", "sla_due": "2024-01-01T00:00:00Z"}})
    owned_customer = next(c for c in rows(crm, "customers") if c["owner"] == crm.users["am1"])
    crm.admin.ok("POST", "/data/crm/tickets", {"fields": {
        "title": "Printer jammed", "type": "complaint", "status": "new", "sla_due": "2024-01-02T00:00:00Z",
        "customer": owned_customer["id"]}})
    worker.drain()
    due = {r["id"]: r for r in rows(crm, "tickets") if r["sla_due"] < db.utcnow() and not r["escalated"]
           and r["status"] not in ("feedback", "archived")}
    assert late["id"] in due
    owners = {c["id"]: c["owner"] for c in rows(crm, "customers")}
    owned = [r for r in due.values() if owners.get(r["customer"])]
    assert owned
    _only(crm, "ticket_sla_escalation", "ticket_sla_escalation_pool")
    now = dt.datetime.now(dt.UTC)
    assert worker.tick(now.replace(minute=5, second=0, microsecond=0) + dt.timedelta(hours=1, minutes=1)) == len(due)
    worker.drain()
    assert {r["id"] for r in rows(crm, "tickets") if r["escalated"]} >= set(due)
    mails = smtp_sink.wait_for(len(due))
    by_number = {m["Subject"].split(": ", 1)[1].split()[0]: sorted(m.envelope_to) for m in mails
                 if ": " in m["Subject"]}
    assert by_number[late["fields"]["number"]] == ["manager1@example.com", "manager2@example.com"]

    def team_manager_email(conn: Any, _cat: Any, _app: Any) -> dict[int, str]:
        q = select(db.users.c.id, db.users.c.team_id).where(db.users.c.team_id.is_not(None))
        teams = dict(conn.execute(q).all())
        mgr = {t.id: t.manager_id for t in conn.execute(select(db.teams.c.id, db.teams.c.manager_id))}
        emails = dict(conn.execute(select(db.users.c.id, db.users.c.email)).all())
        return {uid: emails[mgr[team]] for uid, team in teams.items() if mgr.get(team)}
    manager_of = crm.sql(team_manager_email)
    for r in owned:
        number = crm.admin.ok("GET", f"/data/crm/tickets/{r['id']}")["fields"]["number"]
        assert by_number[number] == [manager_of[owners[r["customer"]]]], number


def test_churn_risk_flags_customers_and_records_the_loss(crm: Crm, worker: Worker) -> None:
    cutoff = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=180)
    last: dict[int, dt.date] = {}
    for o in rows(crm, "orders"):
        last[o["customer"]] = max(last.get(o["customer"], o["order_date"]), o["order_date"])
    expected = {c["id"] for c in rows(crm, "customers") if c["status"] == "active" and c["id"] in last
                and last[c["id"]] < cutoff}
    assert expected, "the demo has active customers without recent orders"
    before = {r["id"] for r in rows(crm, "lost_customers")}
    _only(crm, "churn_risk")
    assert worker.tick(_next_local(2, 31)) == len(expected)
    worker.drain()
    assert {c["id"] for c in rows(crm, "customers") if c["status"] == "churn_risk"} >= expected
    new = [r for r in rows(crm, "lost_customers") if r["id"] not in before]
    assert {r["customer"] for r in new} == expected
    assert all(r["status"] == "open" and r["last_order_date"] == last[r["customer"]] for r in new)


def test_pool_recycle_reminds_then_returns_customers(crm: Crm, worker: Worker) -> None:
    _only(crm, "pool_recycle")
    due = _next_local(1, 0)
    expect = crm.sql(lambda conn, cat, app: pool.recycle(conn, cat, app.table("customers"),
                                                        now=due.replace(tzinfo=None), dry=True))
    assert expect["released"] > 0 and expect["reminded"] > 0  # the demo has both kinds
    owners = {r["id"]: r["owner"] for r in rows(crm, "customers")}
    assert worker.tick(due + dt.timedelta(minutes=1)) == 1
    out = runs(crm, "pool_recycle")[0]["steps"][0]["output"]
    assert (out["released"], out["reminded"]) == (expect["released"], expect["reminded"])
    after = {r["id"]: r for r in rows(crm, "customers")}
    for rid in out["released_ids"]:
        assert after[rid]["owner"] is None and after[rid]["previous_owner"] == owners[rid]
    with crm.app.extensions["formwork"].engine.connect() as conn:
        n = conn.execute(select(func.count()).select_from(db.notifications).where(
            db.notifications.c.kind == "pool_reminder")).scalar()
    assert n == expect["reminded"]


def _approved_contract(crm: Crm, fields: dict[str, Any]) -> dict[str, Any]:
    """An approved contract as the system writes it (people can't: only the approval flow sets the status)."""
    from formwork.runtime.permissions import Access
    from formwork.runtime.records import RecordService

    fw = crm.app.extensions["formwork"]
    with db.transaction(fw.engine) as conn:
        cat = fw.catalogs.get(conn)
        return RecordService(cat, conn, Access.system()).create(cat.table("crm", "contracts"),
                                                                {**fields, "approval_status": "approved"})


def test_contract_expiry_reminder(crm: Crm, worker: Worker, smtp_sink: SmtpSink) -> None:
    due = _next_local(9, 0)
    end = due.astimezone(CST).date() + dt.timedelta(days=30)
    c = _approved_contract(crm, {"title": "续约提醒测试", "owner": crm.users["am2"],
                                 "start_date": (end - dt.timedelta(days=365)).isoformat(), "end_date": end.isoformat()})
    worker.drain()
    expected = [r for r in rows(crm, "contracts") if r["end_date"] == end and r["approval_status"] == "approved"]
    _only(crm, "contract_expiry_reminder")
    assert worker.tick(due + dt.timedelta(minutes=1)) == len(expected)
    worker.drain()
    smtp_sink.wait_for(len(expected))
    mine = mails_to(smtp_sink, "am2@example.com")
    assert any(c["fields"]["number"] in m["Subject"] and end.isoformat() in m["Subject"] for m in mine)


def test_churn_rate_alert_reaches_executives(crm: Crm, worker: Worker, smtp_sink: SmtpSink) -> None:
    due = _next_local(9, 0, day=1)
    month_end = due.astimezone(dt.UTC).date().replace(day=1) - dt.timedelta(days=1)
    in_month = [r for r in rows(crm, "lost_customers")
                if r["detected_at"] and r["status"] == "confirmed"  # paused or open churn is not counted
                and (r["detected_at"].year, r["detected_at"].month) == (month_end.year, month_end.month)]
    total = len(rows(crm, "customers"))
    need = max(0, -(-total * 5 // 100) - len(in_month))
    custs = rows(crm, "customers")
    for i in range(need):
        crm.admin.ok("POST", "/data/crm/lost_customers", {"fields": {
            "customer": custs[i]["id"], "detected_at": month_end.isoformat(), "reason": "price", "status": "confirmed",
            "measures": "回访挽留"}})
    worker.drain()
    _only(crm, "churn_rate_alert")
    assert worker.tick(due + dt.timedelta(minutes=1)) == 1
    worker.drain()
    mail = smtp_sink.wait_for(1)[-1]
    assert mail.envelope_to == ["exec1@example.com"]
    rate = round((len(in_month) + need) * 100 / total, 1)
    assert f"{rate}%" in mail["Subject"]
    assert runs(crm, "churn_rate_alert")[0]["status"] == "succeeded"
