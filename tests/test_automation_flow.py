"""Parked runs and time: approvals (any/all, approve/reject/return), waits, schedules, date_reached."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import insert, select, update

from formwork import db
from formwork.automation.worker import Worker
from tests import test_automation_support as support
from tests.helpers import Api, db_snapshot
from tests.test_automation_support import add_rule, create_user, runs, token_for

# fixtures shared with the other automation test modules
sales = support.sales
worker = support.worker


def _team(app: Any, key: str, manager: int, members: list[int]) -> None:
    with db.transaction(app.extensions["formwork"].engine) as conn:
        tid = conn.execute(insert(db.teams).values(key=key, name=key, manager_id=manager)
                           .returning(db.teams.c.id)).scalar_one()
        conn.execute(update(db.users).where(db.users.c.id.in_(members)).values(team_id=tid))


def test_approval_all_must_then_approve_branch(app: Any, sales: Api, worker: Worker) -> None:
    ann, ben = create_user(app, "ann"), create_user(app, "ben")
    add_rule(sales, {"key": "big_ok", "trigger": {"type": "record_created", "table": "deals"},
                     "actions": [
                         {"type": "request_approval", "key": "appr", "title": "批准 {{ record.name }}",
                          "approvers": {"users": ["ann", "ben"]}, "mode": "all",
                          "on_approve": [{"type": "update_record", "fields": {"status": "approved"}}],
                          "on_reject": [{"type": "update_record",
                                         "fields": {"status": "rejected: {{ actions.appr.decisions[-1].comment }}"}}]},
                         {"type": "create_record", "table": "tasks",
                          "fields": {"title": "after approval: {{ actions.appr.status }}"}}]})
    deal = sales.ok("POST", "/data/sales/deals", {"fields": {"name": "大单"}})
    worker.drain()
    assert runs(sales, "big_ok")[0]["status"] == "awaiting_approval"
    ann_api, ben_api = Api(sales.client, token_for(app, ann)), Api(sales.client, token_for(app, ben))
    mine = ann_api.ok("GET", "/approvals?mine=true")["approvals"]
    assert len(mine) == 1 and mine[0]["title"] == "批准 大单" and mine[0]["mode"] == "all"
    aid = mine[0]["id"]
    assert ann_api.ok("GET", "/notifications")["notifications"][0]["link"]["approval_id"] == aid

    eve_api = Api(sales.client, token_for(app, create_user(app, "eve")))
    before = db_snapshot(app)
    assert ann_api.post(f"/approvals/{aid}/decide", {"decision": "maybe"})[0] == 422
    assert ann_api.post(f"/approvals/{aid}/decide", {"decision": "reject"})[0] == 422  # needs a comment
    assert sales.post(f"/approvals/{aid}/decide", {"decision": "approve"})[0] == 403  # admin is no approver
    assert eve_api.post(f"/approvals/{aid}/decide", {"decision": "approve"})[0] == 404
    assert db_snapshot(app) == before

    assert ann_api.ok("POST", f"/approvals/{aid}/decide", {"decision": "approve", "comment": "好"}) == \
        {"id": aid, "status": "pending"}
    assert ann_api.post(f"/approvals/{aid}/decide", {"decision": "approve"})[0] == 409
    assert ann_api.ok("GET", "/approvals?mine=true")["approvals"] == []  # decided: no longer waiting on ann
    worker.drain()
    assert sales.ok("GET", f"/data/sales/deals/{deal['id']}")["fields"]["status"] is None
    assert ben_api.ok("POST", f"/approvals/{aid}/decide", {"decision": "approve"})["status"] == "approved"
    worker.drain()
    assert sales.ok("GET", f"/data/sales/deals/{deal['id']}")["fields"]["status"] == "approved"
    assert [t["fields"]["title"] for t in sales.records("sales", "tasks")] == ["after approval: approved"]
    run = runs(sales, "big_ok")[0]
    assert run["status"] == "succeeded"
    assert [s["path"] for s in run["steps"]] == ["0", "0.on_approve.0", "1"]
    trail = sales.ok("GET", f"/data/sales/deals/{deal['id']}/approvals")["approvals"]
    assert trail[0]["status"] == "approved"
    assert [(x["user"]["id"], x["decision"], x["comment"]) for x in trail[0]["decisions"]] == \
        [(ann, "approve", "好"), (ben, "approve", None)]


def test_approval_by_owners_manager_reject_and_return(app: Any, sales: Api, worker: Worker) -> None:
    boss, rep = create_user(app, "boss"), create_user(app, "rep")
    _team(app, "east", boss, [rep])
    add_rule(sales, {"key": "discount", "trigger": {"type": "record_created", "table": "deals"},
                     "actions": [{"type": "request_approval", "approvers": {"manager": True},
                                  "on_approve": [{"type": "update_record", "fields": {"status": "ok"}}],
                                  "on_reject": [{"type": "update_record", "fields": {"status": "no"}}],
                                  "on_return": [{"type": "update_record", "fields": {
                                      "status": "fix: {{ actions['0'].decisions[0].comment }}"}}]}]})
    d1 = sales.ok("POST", "/data/sales/deals", {"fields": {"name": "a", "owner": rep}})
    d2 = sales.ok("POST", "/data/sales/deals", {"fields": {"name": "b", "owner": rep}})
    worker.drain()
    boss_api = Api(sales.client, token_for(app, boss))
    pending = {a["record_id"]: a["id"] for a in boss_api.ok("GET", "/approvals?mine=true")["approvals"]}
    assert set(pending) == {d1["id"], d2["id"]}
    boss_api.ok("POST", f"/approvals/{pending[d1['id']]}/decide", {"decision": "reject", "comment": "太贵"})
    boss_api.ok("POST", f"/approvals/{pending[d2['id']]}/decide", {"decision": "return", "comment": "改价格"})
    assert boss_api.post(f"/approvals/{pending[d1['id']]}/decide", {"decision": "approve"})[0] == 409
    worker.drain()
    assert sales.ok("GET", f"/data/sales/deals/{d1['id']}")["fields"]["status"] == "no"
    assert sales.ok("GET", f"/data/sales/deals/{d2['id']}")["fields"]["status"] == "fix: 改价格"


def test_wait_parks_the_run_and_the_worker_resumes_it(sales: Api, worker: Worker) -> None:
    add_rule(sales, {"key": "later", "trigger": {"type": "record_created", "table": "tasks"},
                     "actions": [{"type": "update_record", "fields": {"note": "step 1"}},
                                 {"type": "wait", "seconds": 3},
                                 {"type": "update_record", "fields": {"note": "{{ record.note }} + step 2"}}]})
    t = sales.ok("POST", "/data/sales/tasks", {"fields": {"title": "x"}})
    worker.drain()
    run = runs(sales, "later")[0]
    assert run["status"] == "waiting" and run["resume_at"]
    assert sales.ok("GET", f"/data/sales/tasks/{t['id']}")["fields"]["note"] == "step 1"  # committed before the wait
    deadline = time.monotonic() + 30  # the wait is long enough that a slow drain can't pass it
    while runs(sales, "later")[0]["status"] == "waiting":
        assert time.monotonic() < deadline
        time.sleep(0.2)
        worker.drain()
    assert runs(sales, "later")[0]["status"] == "succeeded"
    assert sales.ok("GET", f"/data/sales/tasks/{t['id']}")["fields"]["note"] == "step 1 + step 2"


def _created_at(app: Any, automation_id: int) -> dt.datetime:
    with app.extensions["formwork"].engine.connect() as conn:
        at = conn.execute(select(db.meta_changes.c.at).where(db.meta_changes.c.kind == "automation",
                                                             db.meta_changes.c.object_id == automation_id)).scalar()
    return at.replace(tzinfo=dt.UTC)


def test_schedule_fires_once_per_firing_and_catches_up_once_after_downtime(app: Any, sales: Api,
                                                                           worker: Worker) -> None:
    rule = add_rule(sales, {"key": "every5",
                            "trigger": {"type": "schedule",
                                        "schedule": {"cron": "*/5 * * * *", "timezone": "Asia/Shanghai"}},
                            "actions": [{"type": "create_record", "table": "tasks",
                                         "fields": {"title": "tick {{ trigger.due_at }}"}}]})
    start = _created_at(app, rule["id"]).replace(second=0, microsecond=0)
    start = start - dt.timedelta(minutes=start.minute % 5)  # the last firing before the rule existed
    other = Worker(app, worker_id="other-worker")
    assert worker.tick(start + dt.timedelta(minutes=4)) == 0
    assert worker.tick(start + dt.timedelta(minutes=5, seconds=2)) == 1
    assert other.tick(start + dt.timedelta(minutes=5, seconds=3)) == 0  # the same firing, another worker
    assert worker.tick(start + dt.timedelta(minutes=9)) == 0
    # downtime of three hours: 35 firings were missed, one catch-up run (the latest, within the grace)
    assert other.tick(start + dt.timedelta(hours=3, minutes=1)) == 1
    assert worker.tick(start + dt.timedelta(hours=3, minutes=2)) == 0
    titles = [t["fields"]["title"] for t in sales.records("sales", "tasks", sort="title")]
    first = (start + dt.timedelta(minutes=5)).isoformat()
    late = (start + dt.timedelta(hours=3)).isoformat()
    assert titles == sorted([f"tick {first}", f"tick {late}"])
    assert [r["firing_key"] for r in runs(sales, "every5")] == [f"s:{rule['id']}:{late}", f"s:{rule['id']}:{first}"]
    # beyond the grace period nothing is caught up
    worker.settings.grace = dt.timedelta(minutes=2)
    assert worker.tick(start + dt.timedelta(hours=6, minutes=3)) == 0


def test_date_reached_fires_per_record_and_replans_when_the_date_changes(app: Any, sales: Api,
                                                                          worker: Worker) -> None:
    shanghai = ZoneInfo("Asia/Shanghai")
    rule = add_rule(sales, {"key": "renewal", "trigger": {"type": "date_reached", "table": "deals",
                                                          "date_field": "close_date", "offset_days": -7,
                                                          "at": "09:00", "timezone": "Asia/Shanghai"},
                            "condition": {"field": "stage", "op": "ne", "value": "lost"},
                            "actions": [{"type": "create_record", "table": "tasks",
                                         "fields": {"title": "renew {{ record.name }} {{ record.close_date }}"}}]})
    created = _created_at(app, rule["id"])
    day = created.astimezone(shanghai).date() + dt.timedelta(days=2)  # a firing day safely after creation
    fire = dt.datetime.combine(day, dt.time(9, 0), shanghai).astimezone(dt.UTC)
    close = (day + dt.timedelta(days=7)).isoformat()
    a = sales.ok("POST", "/data/sales/deals", {"fields": {"name": "a", "close_date": close}})
    sales.ok("POST", "/data/sales/deals", {"fields": {"name": "b", "close_date": close, "stage": "lost"}})
    later = (day + dt.timedelta(days=9)).isoformat()
    c = sales.ok("POST", "/data/sales/deals", {"fields": {"name": "c", "close_date": later}})
    worker.drain()
    assert worker.tick(fire - dt.timedelta(minutes=1)) == 0
    assert worker.tick(fire + dt.timedelta(minutes=1)) == 1
    assert worker.tick(fire + dt.timedelta(minutes=2)) == 0
    assert [t["fields"]["title"] for t in sales.records("sales", "tasks")] == [f"renew a {close}"]
    # the date moves: the reminder is planned again for the new date
    new_close = (day + dt.timedelta(days=10)).isoformat()
    sales.ok("PATCH", f"/data/sales/deals/{a['id']}", {"fields": {"close_date": new_close}})
    next_fire = fire + dt.timedelta(days=3)
    # no tick between: "c" was due on day+2 and is caught up once, with "a" on its new date
    assert worker.tick(next_fire + dt.timedelta(minutes=1)) == 2
    titles = sorted(t["fields"]["title"] for t in sales.records("sales", "tasks"))
    assert titles == sorted([f"renew a {close}", f"renew a {new_close}", f"renew c {later}"])
    assert sorted(r["record_id"] for r in runs(sales, "renewal")) == sorted([a["id"], a["id"], c["id"]])
