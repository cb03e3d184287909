"""Reminders never silently lost: a date rule already due when a record is created or changed fires once at
once; a record that matches the condition only later still fires once; reminders missed while no worker ran
fire once when one returns (within the catch-up window); schedules keep one coalesced catch-up."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from formwork.automation.worker import Worker
from tests import test_automation_support as support
from tests.helpers import Api
from tests.test_automation_support import add_rule, runs

sales = support.sales
worker = support.worker
CST = ZoneInfo("Asia/Shanghai")


def _rule(sales: Api, condition: dict[str, Any] | None = None, key: str = "remind") -> dict[str, Any]:
    doc: dict[str, Any] = {"key": key, "trigger": {"type": "date_reached", "table": "deals", "date_field": "close_date",
                                                   "offset_days": -30, "at": "09:00", "timezone": "Asia/Shanghai"},
                           "actions": [{"type": "create_record", "table": "tasks",
                                        "fields": {"title": "{{ record.name }} {{ trigger.late }}"}}]}
    if condition:
        doc["condition"] = condition
    return add_rule(sales, doc)


def _today() -> dt.date:
    return dt.datetime.now(CST).date()


def _titles(sales: Api) -> list[str]:
    return sorted(t["fields"]["title"] for t in sales.records("sales", "tasks"))


def test_a_reminder_already_due_fires_once_at_once(sales: Api, worker: Worker) -> None:
    _rule(sales)
    soon = (_today() + dt.timedelta(days=20)).isoformat()  # 30 days before it was 10 days ago
    d = sales.ok("POST", "/data/sales/deals", {"fields": {"name": "soon", "close_date": soon}})
    ended = (_today() - dt.timedelta(days=3)).isoformat()  # the date itself is past: nothing to remind of
    sales.ok("POST", "/data/sales/deals", {"fields": {"name": "ended", "close_date": ended}})
    later = (_today() + dt.timedelta(days=45)).isoformat()  # due in 15 days: the scheduler's job
    sales.ok("POST", "/data/sales/deals", {"fields": {"name": "later", "close_date": later}})
    worker.drain()
    assert _titles(sales) == ["soon True"]
    [run] = runs(sales, "remind")
    assert run["record_id"] == d["id"] and run["trigger"] == "date_reached"
    sales.ok("PATCH", f"/data/sales/deals/{d['id']}", {"fields": {"name": "soon"}})
    sales.ok("PATCH", f"/data/sales/deals/{d['id']}", {"fields": {"counter": 2}})
    worker.drain()
    assert worker.tick() == 0
    assert len(runs(sales, "remind")) == 1  # once
    # the date moves to another already-due day: that is a new reminder, once again
    sales.ok("PATCH", f"/data/sales/deals/{d['id']}", {"fields": {"close_date": (_today() + dt.timedelta(days=25))
                                                                  .isoformat()}})
    worker.drain()
    assert len(runs(sales, "remind")) == 2


def test_a_record_matching_only_later_still_fires_once(sales: Api, worker: Worker) -> None:
    _rule(sales, {"field": "stage", "op": "eq", "value": "won"})
    soon = (_today() + dt.timedelta(days=10)).isoformat()
    d = sales.ok("POST", "/data/sales/deals", {"fields": {"name": "deal", "close_date": soon, "stage": "lead"}})
    worker.drain()
    assert runs(sales, "remind") == []
    assert worker.tick() == 0
    sales.ok("PATCH", f"/data/sales/deals/{d['id']}", {"fields": {"stage": "won"}})  # e.g. approved later
    worker.drain()
    assert _titles(sales) == ["deal True"]
    sales.ok("PATCH", f"/data/sales/deals/{d['id']}", {"fields": {"stage": "won", "counter": 1}})
    worker.drain()
    assert len(runs(sales, "remind")) == 1


def test_reminders_missed_while_the_worker_was_down_fire_once(sales: Api, worker: Worker) -> None:
    _rule(sales)
    close = _today() + dt.timedelta(days=40)  # due in 10 days at 09:00 China time
    sales.ok("POST", "/data/sales/deals", {"fields": {"name": "a", "close_date": close.isoformat()}})
    worker.drain()
    assert runs(sales, "remind") == []
    due = dt.datetime.combine(close - dt.timedelta(days=30), dt.time(9, 0), CST).astimezone(dt.UTC)
    # the worker was down from now until five days after the due time: it fires once when it returns
    assert worker.tick(due + dt.timedelta(days=5)) == 1
    assert worker.tick(due + dt.timedelta(days=5, minutes=1)) == 0
    assert _titles(sales) == ["a False"]


def test_reminders_beyond_the_catch_up_window_are_not_replayed(sales: Api, worker: Worker) -> None:
    _rule(sales)
    close = _today() + dt.timedelta(days=40)
    sales.ok("POST", "/data/sales/deals", {"fields": {"name": "a", "close_date": close.isoformat()}})
    worker.drain()
    due = dt.datetime.combine(close - dt.timedelta(days=30), dt.time(9, 0), CST).astimezone(dt.UTC)
    assert worker.tick(due + dt.timedelta(days=40)) == 0  # 40 days late: older than the 31-day window
    assert runs(sales, "remind") == []
