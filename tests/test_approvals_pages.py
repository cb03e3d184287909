"""The approvals inbox and the record page's approval panel through the pages (Flask's test client):
the reader's summary, Approve / Reject / Return, the comment required next to its box with nothing lost,
deciding twice or someone else's approval (4xx, nothing changes), both languages."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import update

from formwork import db
from formwork.automation.worker import Worker
from tests import test_automation_support as support
from tests.helpers import Api, db_snapshot
from tests.test_automation_support import add_rule
from tests.test_ui_pages import html, login

sales = support.sales
worker = support.worker
PASSWORD = "pass-word-1!x"


def _user(sales: Api, username: str) -> int:
    user = sales.ok("POST", "/admin/users", {"username": username, "name": username.title(), "password": PASSWORD,
                                             "email": f"{username}@example.com", "roles": ["deal_reader"]})
    return int(user["id"])


def _setup(app: Any, sales: Api, worker: Worker) -> dict[str, Any]:
    sales.ok("POST", "/admin/roles", {"key": "deal_reader", "label": "Deal reader", "permissions": {
        "sales.deals": {"read": "all", "create": False, "update": "none", "delete": "none",
                        "fields": {"counter": "hidden"}}}})
    ids = {n: _user(sales, n) for n in ("ann", "zoe", "eve")}
    with db.transaction(app.extensions["formwork"].engine) as conn:
        conn.execute(update(db.users).where(db.users.c.id == ids["zoe"]).values(locale="zh-CN",
                                                                                 timezone="Asia/Shanghai"))
    add_rule(sales, {"key": "ok_deal", "trigger": {"type": "record_created", "table": "deals"},
                     "actions": [{"type": "request_approval", "approvers": {"users": ["ann", "zoe"]},
                                  "title": {"en": "Approve deal {{ record.name }}",
                                            "zh-CN": "审批商机 {{ record.name }}"},
                                  "on_approve": [{"type": "update_record", "fields": {"status": "ok"}}],
                                  "on_reject": [{"type": "update_record", "fields": {"status": "no"}}]}]})
    deals = [sales.ok("POST", "/data/sales/deals", {"fields": {"name": n, "amount": 120000, "counter": 7}})
             for n in ("Alpha", "Beta")]
    worker.drain()
    return {"ids": ids, "deals": deals}


def _approval_id(page: str, title: str) -> int:
    m = re.search(r'id="approval-(\d+)" aria-label="' + re.escape(title) + '"', page)
    assert m, page[:3000]
    return int(m.group(1))


def test_inbox_shows_the_readers_summary_and_decides(app: Any, sales: Api, worker: Worker) -> None:
    s = _setup(app, sales, worker)
    client, csrf = login(app, "ann", PASSWORD)
    page = html(client.get("/approvals"))
    assert "Approve deal Alpha" in page and "Approve deal Beta" in page
    assert "审批商机" not in page  # the reader's language only
    assert "120,000" in page or "120000" in page
    assert "Counter" not in page  # a field hidden from the reader is not in the summary
    assert '<span class="badge">2</span>' in page
    for name in ("Approve", "Reject", "Return"):
        assert f'value="{name.lower()}">{name}</button>' in page
    alpha = _approval_id(page, "Approve deal Alpha")

    # reject without a comment: the error next to the comment box, nothing changes, nothing typed lost
    before = db_snapshot(app)
    resp = client.post(f"/approvals/{alpha}/decide", data={"decision": "reject", "comment": "  ", "csrf_token": csrf,
                                                          "where": "inbox"}, headers={"HX-Request": "true"})
    frag = html(resp, 422)
    assert 'aria-invalid="true"' in frag and "a comment is required" in frag
    assert db_snapshot(app) == before
    resp = client.post(f"/approvals/{alpha}/decide", data={"decision": "return", "comment": "",
                                                          "csrf_token": csrf})  # a plain form: the page again
    assert "a comment is required" in html(resp, 422)
    # approve from the inbox (htmx): the card comes back decided, without buttons
    frag = html(client.post(f"/approvals/{alpha}/decide", data={"decision": "approve", "comment": "好",
                                                               "csrf_token": csrf, "where": "inbox"},
                            headers={"HX-Request": "true"}))
    assert "approved" in frag and 'value="approve"' not in frag
    # deciding twice: refused in words, nothing changes
    before = db_snapshot(app)
    frag = html(client.post(f"/approvals/{alpha}/decide", data={"decision": "approve", "csrf_token": csrf},
                            headers={"HX-Request": "true"}), 409)
    assert "already decided" in frag
    assert db_snapshot(app) == before
    worker.drain()
    assert sales.ok("GET", f"/data/sales/deals/{s['deals'][0]['id']}")["fields"]["status"] == "ok"
    decided = html(client.get("/approvals?view=decided"))
    assert "Approve deal Alpha" in decided and "好" in decided
    # without a CSRF token: refused
    assert client.post(f"/approvals/{alpha}/decide", data={"decision": "approve"}).status_code in (400, 403)


def test_someone_elses_approval_is_not_found(app: Any, sales: Api, worker: Worker) -> None:
    _setup(app, sales, worker)
    client, _ = login(app, "ann", PASSWORD)
    aid = _approval_id(html(client.get("/approvals")), "Approve deal Beta")
    eve, csrf = login(app, "eve", PASSWORD)
    assert "Approve deal Beta" not in html(eve.get("/approvals"))
    before = db_snapshot(app)
    assert eve.post(f"/approvals/{aid}/decide", data={"decision": "approve", "csrf_token": csrf}).status_code == 404
    assert db_snapshot(app) == before


def test_chinese_inbox_and_the_record_panel(app: Any, sales: Api, worker: Worker) -> None:
    s = _setup(app, sales, worker)
    client, csrf = login(app, "zoe", PASSWORD)
    page = html(client.get("/approvals"))
    assert "待我审批" in page and "审批商机 Beta" in page and "Approve deal" not in page
    assert "同意" in page and "驳回" in page and "退回" in page
    beta = s["deals"][1]["id"]
    rec = html(client.get(f"/apps/sales/deals/{beta}"))
    assert "审批商机 Beta" in rec and 'value="reject"' in rec
    aid = _approval_id(rec, "审批商机 Beta")
    resp = client.post(f"/approvals/{aid}/decide", data={
        "decision": "reject", "comment": "价格太高", "csrf_token": csrf, "where": "record",
        "next": f"/apps/sales/deals/{beta}"})
    assert resp.status_code == 302 and resp.headers["Location"].endswith(f"/apps/sales/deals/{beta}")
    rec = html(client.get(f"/apps/sales/deals/{beta}"))
    assert "已驳回" in rec and "价格太高" in rec and 'value="reject"' not in rec
    ann, _ = login(app, "ann", PASSWORD)
    assert "Approve deal Beta" not in html(ann.get("/approvals"))  # settled: no longer waiting on ann
    assert "Approve deal Beta" in html(ann.get(f"/apps/sales/deals/{beta}"))  # the history stays
