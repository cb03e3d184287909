"""Notifications people can act on: each reader's language only, their time zone, the bell's unread count,
opening a notification's record, marking one or all read, an optional email copy per user setting."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from sqlalchemy import insert, update

from formwork import db
from formwork.automation.worker import Worker
from formwork.runtime import notifications
from tests import test_automation_support as support
from tests.helpers import Api
from tests.peers import SmtpSink
from tests.peers import smtp_sink as _smtp_sink
from tests.test_automation_support import add_rule, create_user, token_for
from tests.test_ui_pages import html, login

sales = support.sales
worker = support.worker
smtp_sink = _smtp_sink
PASSWORD = "pass-word-1"


def _users(app: Any) -> dict[str, int]:
    return {"ann": create_user(app, "ann"), "zoe": create_user(app, "zoe", locale="zh-CN", timezone="Asia/Shanghai")}


def _won_rule(sales: Api) -> None:
    add_rule(sales, {"key": "won", "trigger": {"type": "record_created", "table": "deals"},
                     "actions": [{"type": "notify", "users": ["ann", "zoe"],
                                  "title": {"en": "Won: {{ record.name }}", "zh-CN": "赢单！{{ record.name }}"},
                                  "body": {"en": "Deal {{ record.name }}", "zh-CN": "商机 {{ record.name }}"}}]})


def test_each_reader_sees_their_language_only(app: Any, sales: Api, worker: Worker) -> None:
    ids = _users(app)
    _won_rule(sales)
    sales.ok("POST", "/data/sales/deals", {"fields": {"name": "大单", "amount": 5}})
    worker.drain()
    ann = Api(sales.client, token_for(app, ids["ann"]))
    zoe = Api(sales.client, token_for(app, ids["zoe"]))
    [a] = ann.ok("GET", "/notifications")["notifications"]
    [z] = zoe.ok("GET", "/notifications")["notifications"]
    assert (a["title"], a["body"]) == ("Won: 大单", "Deal 大单")
    assert (z["title"], z["body"]) == ("赢单！大单", "商机 大单")
    # rows written before per-language messages keep reading as they were
    with db.transaction(app.extensions["formwork"].engine) as conn:
        conn.execute(insert(db.notifications).values(user_id=ids["zoe"], kind="automation", title="old text",
                                                     body="old body", created_at=db.utcnow()))
    titles = [n["title"] for n in zoe.ok("GET", "/notifications")["notifications"]]
    assert titles == ["old text", "赢单！大单"]
    # a platform message (an approval request) renders per reader too
    add_rule(sales, {"key": "ask", "trigger": {"type": "record_created", "table": "tasks"},
                     "actions": [{"type": "create_record", "table": "deals", "fields": {"name": "x"}}]})
    add_rule(sales, {"key": "appr", "trigger": {"type": "record_created", "table": "companies"},
                     "actions": [{"type": "request_approval", "approvers": {"users": ["ann", "zoe"]},
                                  "title": {"en": "Approve {{ record.name }}", "zh-CN": "审批 {{ record.name }}"}}]})
    sales.ok("POST", "/data/sales/companies", {"fields": {"name": "ACME"}})
    worker.drain()
    assert ann.ok("GET", "/notifications")["notifications"][0]["title"] == "Waiting for your approval: Approve ACME"
    assert zoe.ok("GET", "/notifications")["notifications"][0]["title"] == "待你审批：审批 ACME"


def test_bell_open_and_mark_read_in_the_pages(app: Any, sales: Api, worker: Worker) -> None:
    _users(app)
    _won_rule(sales)
    deal = sales.ok("POST", "/data/sales/deals", {"fields": {"name": "Alpha", "amount": 1}})
    sales.ok("POST", "/data/sales/deals", {"fields": {"name": "Beta", "amount": 2}})
    worker.drain()
    with db.transaction(app.extensions["formwork"].engine) as conn:  # a known moment, to check the time zone
        conn.execute(update(db.notifications).values(created_at=dt.datetime(2026, 3, 1, 1, 30)))
    client, csrf = login(app, "zoe", PASSWORD)
    home = html(client.get("/"))
    assert '<span class="badge" id="unread">2</span>' in home
    drop = html(client.get("/notifications", headers={"HX-Request": "true"}))
    assert "赢单！Alpha" in drop and "Won:" not in drop
    assert "2026-03-01 09:30" in drop  # Asia/Shanghai
    link = re.search(r'href="(/notifications/(\d+)/open)">赢单！Alpha', drop)
    assert link, drop
    resp = client.get(link.group(1))
    assert resp.status_code == 302 and resp.headers["Location"].endswith(f"/apps/sales/deals/{deal['id']}")
    assert '<span class="badge" id="unread">1</span>' in html(client.get("/"))
    # someone else's notification: not found, nothing read
    ann, ann_csrf = login(app, "ann", PASSWORD)
    assert ann.get(link.group(1)).status_code == 404
    assert ann.post(f"/notifications/{link.group(2)}/read", data={"csrf_token": ann_csrf}).status_code == 404
    page = html(client.get("/notifications"))
    assert "全部标为已读" in page
    assert client.post("/notifications/read-all", data={"csrf_token": csrf}).status_code == 302
    assert 'id="unread"' not in html(client.get("/"))
    en = html(ann.get("/notifications"))
    assert "Won: Alpha" in en and "2026-03-01 01:30" in en and "Mark all as read" in en


def test_email_copy_per_user_setting(app: Any, sales: Api, worker: Worker, smtp_sink: SmtpSink) -> None:
    ids = _users(app)
    worker.settings.smtp.port = smtp_sink.port
    engine = app.extensions["formwork"].engine
    with db.transaction(engine) as conn:
        assert notifications.email_copy(conn, ids["zoe"]) is False
        notifications.set_email_copy(conn, ids["zoe"], True)
    with engine.connect() as conn:
        assert notifications.email_copy(conn, ids["zoe"]) is True
        assert notifications.email_copy(conn, ids["ann"]) is False
    _won_rule(sales)
    sales.ok("POST", "/data/sales/deals", {"fields": {"name": "Gamma", "amount": 3}})
    worker.drain()
    smtp_sink.wait_for(1)
    [mail] = smtp_sink.messages
    assert mail.envelope_to == ["zoe@example.com"]
    assert mail["Subject"] == "赢单！Gamma" and "商机 Gamma" in mail.get_payload(decode=True).decode()
    with db.transaction(engine) as conn:
        notifications.set_email_copy(conn, ids["zoe"], False)
    sales.ok("POST", "/data/sales/deals", {"fields": {"name": "Delta", "amount": 4}})
    worker.drain()
    assert len(smtp_sink.messages) == 1
