"""Scheduled dashboard emails: the worker queues a due report once per recipient and period, each computed
as the recipient sees the dashboard, in their language, and the dispatcher delivers it to a real SMTP server."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import select, update

from formwork import db
from formwork.automation import reports
from formwork.automation.worker import Worker
from tests import peers
from tests import test_automation_support as support
from tests.helpers import Api
from tests.peers import SmtpSink
from tests.test_aggregate import build_sales

worker = support.worker
smtp_sink = peers.smtp_sink


@pytest.fixture
def sales(admin: Api, app: Any) -> dict[str, Any]:
    ids = build_sales(admin, app)
    with db.transaction(app.extensions["formwork"].engine) as conn:
        for name, locale in (("alice", "zh-CN"), ("bob", "en")):
            conn.execute(update(db.users).where(db.users.c.username == name).values(
                email=f"{name}@example.com", locale=locale))
        alice = conn.execute(select(db.users.c.id).where(db.users.c.username == "alice")).scalar_one()
    admin.ok("POST", "/meta/apps/sales/dashboards", {
        "key": "weekly", "label": {"en": "Weekly sales", "zh-CN": "每周销售"},
        "filters": [{"key": "period", "type": "period", "field": "close_date"}],
        "widgets": [
            {"key": "n", "label": {"en": "Deals", "zh-CN": "交易数"}, "type": "kpi", "table": "deals"},
            {"key": "amount", "label": {"en": "Amount", "zh-CN": "金额"}, "type": "kpi", "table": "deals",
             "metrics": ["sum:amount"], "format": "currency"},
            {"key": "stages", "label": {"en": "By stage", "zh-CN": "按阶段"}, "type": "bar", "table": "deals",
             "group_by": ["stage"]}],
        "schedules": [{"every": "daily", "hour": 9, "users": [alice], "roles": ["rep_bob"]}]})
    return ids


def test_due_stamps() -> None:
    tz = dt.timezone(dt.timedelta(hours=8))
    at = dt.datetime(2026, 12, 2, 9, 30, tzinfo=tz)  # a Wednesday
    assert reports.due_stamp({"every": "daily", "hour": 9}, at) == "2026-12-02"
    assert reports.due_stamp({"every": "daily", "hour": 10}, at) is None
    assert reports.due_stamp({"every": "weekly", "hour": 8, "weekday": 0}, at) == "2026-W49"
    assert reports.due_stamp({"every": "weekly", "hour": 8, "weekday": 4}, at) is None
    assert reports.due_stamp({"every": "monthly", "hour": 8, "day": 1}, at) == "2026-12"


def test_a_scheduled_dashboard_email_reaches_smtp_once_per_period(app: Any, sales: dict[str, Any], worker: Worker,
                                                                  smtp_sink: SmtpSink) -> None:
    worker.settings.smtp.port = smtp_sink.port
    # alice (Asia/Shanghai, zh-CN) is due at 09:00 her time = 01:00 UTC; bob (New York, en) at 14:00 UTC, and at
    # 00:30 UTC it is still the evening before in New York: his report of that day is due (a late worker catches up)
    assert worker.tick(dt.datetime(2026, 12, 2, 0, 30, tzinfo=dt.UTC)) == 1
    assert worker.tick(dt.datetime(2026, 12, 2, 1, 5, tzinfo=dt.UTC)) == 1
    assert worker.tick(dt.datetime(2026, 12, 2, 1, 20, tzinfo=dt.UTC)) == 0  # once per period
    worker.drain()
    msgs = {m.envelope_to[0]: m for m in smtp_sink.wait_for(2)}
    alice = msgs["alice@example.com"]
    assert alice["Subject"] == "每周销售：每日报表"
    text = alice.get_body(("plain",)).get_content().replace("\r\n", "\n")
    # alice reads her own deals only (d1, d2, d5): 3 deals, ¥1,543 in all
    assert "交易数\n3" in text and "金额\n¥1,543" in text and "won: 2" in text
    bob = msgs["bob@example.com"]
    assert bob["Subject"] == "Weekly sales: your daily report"
    body = bob.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert "Deals\n8" in body and "You may not see this data." in body  # bob may not see amounts
    assert "<h3>By stage</h3>" in bob.get_body(("html",)).get_content()
    assert worker.tick(dt.datetime(2026, 12, 2, 14, 5, tzinfo=dt.UTC)) == 1
    assert worker.tick(dt.datetime(2026, 12, 3, 1, 5, tzinfo=dt.UTC)) == 1  # the next day's report
    worker.drain()
    assert len(smtp_sink.wait_for(4)) == 4
    with app.extensions["formwork"].engine.connect() as conn:
        keys = [r[0] for r in conn.execute(select(db.deliveries.c.idempotency_key).order_by(db.deliveries.c.id))]
        statuses = {r[0] for r in conn.execute(select(db.deliveries.c.status))}
    assert [k.rsplit(":", 1)[1] for k in keys] == ["2026-12-01", "2026-12-02", "2026-12-02", "2026-12-03"]
    assert statuses == {"sent"}
