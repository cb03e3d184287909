"""The public pool (公海) as a generic platform feature, on a small app of its own (not the CRM):
claim within the role limit, limit reached, cooldown, release, recycle after N days with a reminder first,
and the automation pieces it rests on (recycle_to_pool action, aggregate conditions, email to roles)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import insert, select, update

from formwork import db
from formwork.automation.worker import Worker
from formwork.runtime import pool
from formwork.runtime.permissions import Access
from tests import test_automation_support as support
from tests.helpers import Api, db_snapshot
from tests.peers import SmtpSink
from tests.peers import smtp_sink as _smtp_sink
from tests.test_automation_support import create_user, token_for

worker = support.worker
smtp_sink = _smtp_sink

POOL = {"owner_field": "owner", "previous_owner_field": "previous_owner", "released_at_field": "released_at",
        "claimed_at_field": "claimed_at", "cooldown_days": 2, "last_activity_field": "last_call",
        "recycle_after_days": 10, "warn_days_before": 3}


def _role(app: Any, key: str, doc: dict[str, Any], users: list[int]) -> None:
    with db.transaction(app.extensions["formwork"].engine) as conn:
        rid = conn.execute(insert(db.roles).values(key=key, doc={"key": key, "label": key, **doc})
                           .returning(db.roles.c.id)).scalar_one()
        conn.execute(insert(db.user_roles), [{"user_id": u, "role_id": rid} for u in users])


@pytest.fixture
def leads(app: Any, admin: Api) -> dict[str, Any]:
    """App 'leads': accounts in a pool, calls rolled up as the last follow-up; reps may claim 2."""
    admin.ok("POST", "/meta/apps", {"key": "leads", "label": "Leads"})
    admin.ok("POST", "/meta/apps/leads/tables", {"key": "accounts", "label": "Accounts", "fields": [
        {"key": "name", "label": "Name", "type": "text", "required": True},
        {"key": "owner", "label": "Owner", "type": "user"},
        {"key": "previous_owner", "label": "Previous owner", "type": "user"},
        {"key": "released_at", "label": "Released", "type": "datetime"},
        {"key": "claimed_at", "label": "Claimed", "type": "datetime"}]})
    admin.ok("POST", "/meta/apps/leads/tables", {"key": "calls", "label": "Calls", "fields": [
        {"key": "note", "label": "Note", "type": "text"},
        {"key": "at", "label": "At", "type": "datetime"},
        {"key": "account", "label": "Account", "type": "link",
         "options": {"table": "accounts", "reverse_key": "calls", "reverse_label": "Calls"}}]})
    admin.ok("POST", "/meta/apps/leads/tables/accounts/fields", {
        "key": "last_call", "label": "Last call", "type": "rollup",
        "options": {"link": "calls", "field": "at", "function": "max"}})
    admin.ok("PATCH", "/meta/apps/leads/tables/accounts", {"owner_field": "owner", "pool": POOL})
    rep1, rep2, viewer = create_user(app, "rep1"), create_user(app, "rep2"), create_user(app, "viewer")
    mine_or_pool = {"or": [{"field": "owner", "op": "eq", "value": {"var": "me"}},
                           {"field": "owner", "op": "is_empty"}]}
    _role(app, "rep", {"claim_limit": 2, "permissions": {
        "leads.accounts": {"read": mine_or_pool, "create": True, "update": "own", "delete": "none"},
        "leads.calls": {"read": "all", "create": True, "update": "all"}}}, [rep1, rep2])
    _role(app, "viewer", {"permissions": {"leads.accounts": {"read": "all"}}}, [viewer])
    ids = [admin.ok("POST", "/data/leads/accounts", {"fields": {"name": n}})["id"] for n in ("甲公司", "Beta", "Gamma")]
    c = admin.client
    return {"ids": ids, "rep1": rep1, "rep2": rep2, "viewer": viewer,
            "api1": Api(c, token_for(app, rep1)), "api2": Api(c, token_for(app, rep2)),
            "viewer_api": Api(c, token_for(app, viewer))}


def _sql(app: Any, fn: Any) -> Any:
    with db.transaction(app.extensions["formwork"].engine) as conn:
        cat = app.extensions["formwork"].catalogs.get(conn)
        return fn(conn, cat, cat.table("leads", "accounts"))


def test_claim_within_limit_then_limit_reached(app: Any, admin: Api, leads: dict[str, Any]) -> None:
    a, b, c = leads["ids"]
    api1, api2 = leads["api1"], leads["api2"]
    assert api1.ok("GET", "/data/leads/accounts/pool") == {
        "settings": POOL, "owner_field": "owner", "owned": 0, "claim_limit": 2}
    rec = api1.ok("POST", f"/data/leads/accounts/{a}/claim")
    assert rec["fields"]["owner"]["id"] == leads["rep1"] and rec["fields"]["claimed_at"]
    api1.ok("POST", f"/data/leads/accounts/{b}/claim")
    before = db_snapshot(app)
    status, err = api1.post(f"/data/leads/accounts/{c}/claim")
    assert status == 403 and "claim limit of your roles is 2" in err["error"]["message"]
    assert api1.post(f"/data/leads/accounts/{a}/claim")[0] == 409  # already mine
    assert api2.post(f"/data/leads/accounts/{a}/claim")[0] == 404  # rep2 can't see rep1's accounts
    status, err = admin.post(f"/data/leads/accounts/{a}/claim")
    assert status == 409 and "belongs to Rep1" in err["error"]["message"]
    status, err = leads["viewer_api"].post(f"/data/leads/accounts/{c}/claim")
    assert status == 403 and "claim_limit" in err["error"]["message"]
    assert api1.post("/data/leads/calls/1/claim")[0] == 400  # calls have no pool
    assert api1.post(f"/data/leads/accounts/{c + 100}/claim")[0] == 404
    assert db_snapshot(app) == before
    assert api1.ok("GET", "/data/leads/accounts/pool")["owned"] == 2
    hist = admin.ok("GET", f"/data/leads/accounts/{a}/history")["entries"]
    assert hist[0]["user"]["id"] == leads["rep1"] and "owner" in hist[0]["changes"]


def test_release_cooldown_and_reclaim(app: Any, admin: Api, leads: dict[str, Any]) -> None:
    a, b, _c = leads["ids"]
    api1, api2 = leads["api1"], leads["api2"]
    api1.ok("POST", f"/data/leads/accounts/{a}/claim")
    api2.ok("POST", f"/data/leads/accounts/{b}/claim")
    assert api1.post(f"/data/leads/accounts/{b}/release")[0] == 404  # not visible to rep1
    rec = api1.ok("POST", f"/data/leads/accounts/{a}/release")
    assert rec["fields"]["owner"] is None and rec["fields"]["previous_owner"]["id"] == leads["rep1"]
    assert rec["fields"]["released_at"] and rec["fields"]["claimed_at"] is None
    assert api1.post(f"/data/leads/accounts/{a}/release")[0] == 409  # already in the pool
    before = db_snapshot(app)
    status, err = api1.post(f"/data/leads/accounts/{a}/claim")
    assert status == 409 and "cooldown of 2 days" in err["error"]["message"]
    assert db_snapshot(app) == before
    # two days later the cooldown is over
    _sql(app, lambda conn, cat, t: conn.execute(update(t.sa).values(
        {t.field("released_at").column_name: db.utcnow() - dt.timedelta(days=2, minutes=1)})))
    assert api1.ok("POST", f"/data/leads/accounts/{a}/claim")["fields"]["owner"]["id"] == leads["rep1"]
    # someone whose update scope covers the record (an admin) may release it too
    assert admin.ok("POST", f"/data/leads/accounts/{b}/release")["fields"]["previous_owner"]["id"] == leads["rep2"]


def _age(app: Any, rid: int, days: float) -> None:
    """Pretend the account was created and claimed ``days`` ago."""
    at = db.utcnow() - dt.timedelta(days=days)
    _sql(app, lambda conn, cat, t: conn.execute(update(t.sa).where(t.sa.c.id == rid).values(
        {"created_at": at, t.field("claimed_at").column_name: at})))


def test_recycle_after_n_days_with_a_reminder_first(app: Any, admin: Api, leads: dict[str, Any]) -> None:
    x, y, z = leads["ids"]
    admin.ok("PATCH", "/data/leads/accounts", {"records": [{"id": i, "fields": {"owner": leads["rep1"]}}
                                                           for i in (x, y, z)]})
    _age(app, x, 8)  # 2 days before recycling: within the 3-day warning
    _age(app, y, 12)  # past 10 days: back to the pool
    _age(app, z, 12)
    admin.ok("POST", "/data/leads/calls", {"fields": {"note": "跟进", "at": db.utcnow().isoformat() + "Z",
                                                      "account": z}})  # z was followed up today
    now = db.utcnow()
    dry = _sql(app, lambda conn, cat, t: pool.recycle(conn, cat, t, now=now, dry=True))
    assert (dry["released_ids"], dry["reminded_ids"]) == ([y], [x])
    assert admin.ok("GET", f"/data/leads/accounts/{y}")["fields"]["owner"] is not None  # dry run changed nothing
    out = _sql(app, lambda conn, cat, t: pool.recycle(conn, cat, t, now=now))
    assert (out["released"], out["reminded"]) == (1, 1)
    recs = {r["id"]: r["fields"] for r in admin.records("leads", "accounts")}
    assert recs[y]["owner"] is None and recs[y]["previous_owner"]["id"] == leads["rep1"] and recs[y]["released_at"]
    assert recs[x]["owner"]["id"] == leads["rep1"] and recs[z]["owner"]["id"] == leads["rep1"]
    notes = leads["api1"].ok("GET", "/notifications")["notifications"]
    reminders = [n for n in notes if n["kind"] == "pool_reminder"]
    assert len(reminders) == 1 and reminders[0]["link"]["record_id"] == x and "甲公司" in reminders[0]["title"]
    assert any(n["kind"] == "pool_released" for n in notes)
    # next day: no second reminder for the same stale spell; three days on x goes back too
    again = _sql(app, lambda conn, cat, t: pool.recycle(conn, cat, t, now=now + dt.timedelta(days=1)))
    assert (again["released"], again["reminded"]) == (0, 0)
    later = _sql(app, lambda conn, cat, t: pool.recycle(conn, cat, t, now=now + dt.timedelta(days=2, hours=1)))
    assert later["released_ids"] == [x]


def _next(hour: int, minute: int = 0) -> dt.datetime:
    now = dt.datetime.now(dt.UTC)
    due = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    return due if due > now else due + dt.timedelta(days=1)


def test_recycle_action_runs_from_a_schedule(app: Any, admin: Api, leads: dict[str, Any], worker: Worker) -> None:
    x = leads["ids"][0]
    admin.ok("PATCH", f"/data/leads/accounts/{x}", {"fields": {"owner": leads["rep2"]}})
    _age(app, x, 30)
    bad = {"key": "r", "label": "r", "trigger": {"type": "schedule", "schedule": {"every": "day", "at": "03:00"}},
           "actions": [{"type": "recycle_to_pool", "table": "calls"}]}
    status, err = admin.post("/meta/apps/leads/automations", bad)
    assert status == 422 and "no public pool" in str(err["error"]["details"])
    bad["actions"][0]["table"] = "accounts"
    admin.ok("POST", "/meta/apps/leads/automations", bad)
    assert worker.tick(_next(3, 1)) == 1
    run = admin.ok("GET", "/meta/apps/leads/automations/r/runs")["runs"][0]
    assert run["status"] == "succeeded" and run["steps"][0]["output"]["released_ids"] == [x]
    assert admin.ok("GET", f"/data/leads/accounts/{x}")["fields"]["owner"] is None


def test_pool_settings_are_checked(app: Any, admin: Api, leads: dict[str, Any]) -> None:
    before = db_snapshot(app)
    status, err = admin.patch("/meta/apps/leads/tables/accounts", {"pool": {"recycle_after_days": 0}})
    assert status == 422 and "/pool/recycle_after_days" in err["error"]["details"]
    status, _err = admin.patch("/meta/apps/leads/tables/accounts", {"pool": {"owner": "owner"}})
    assert status == 422
    assert db_snapshot(app) == before
    admin.ok("PATCH", "/meta/apps/leads/tables/accounts", {"pool": {**POOL, "last_activity_field": "name"}})
    status, err = leads["api1"].post(f"/data/leads/accounts/{leads['ids'][0]}/claim")
    assert status == 400 and "last_activity_field" in err["error"]["message"]


def test_aggregate_condition_and_email_to_roles(app: Any, admin: Api, leads: dict[str, Any], worker: Worker,
                                                smtp_sink: SmtpSink) -> None:
    worker.settings.smtp.port = smtp_sink.port
    rule = {"key": "share", "label": "share", "trigger": {
        "type": "schedule", "schedule": {"every": "day", "at": "04:00"},
        "aggregate_condition": {"table": "accounts", "filter": {"field": "owner", "op": "is_empty"},
                                "divide_by": {"table": "accounts"}, "op": "gte", "value": 0.5}},
        "actions": [{"type": "send_email", "roles": ["rep"],
                     "subject": "pool share {{ (trigger.aggregate.value * 100) | round(0) | int }}%",
                     "body": "{{ trigger.aggregate.numerator }}/{{ trigger.aggregate.denominator }}"}]}
    for bad, where in ((dict(rule["trigger"], type="manual"), "/trigger/aggregate_condition"),
                       ({**rule["trigger"], "aggregate_condition": {**rule["trigger"]["aggregate_condition"],
                                                                     "divide_by": {"table": "nope"}}},
                        "/trigger/aggregate_condition/divide_by/table")):
        status, err = admin.post("/meta/apps/leads/automations", {**rule, "trigger": bad})
        assert status == 422 and where in err["error"]["details"], err
    admin.ok("POST", "/meta/apps/leads/automations", rule)
    # 2 of 3 accounts owned: a third in the pool is below the threshold, so nothing runs
    admin.ok("PATCH", "/data/leads/accounts", {"records": [{"id": i, "fields": {"owner": leads["rep1"]}}
                                                           for i in leads["ids"][:2]]})
    due = _next(4, 1)
    assert worker.tick(due) == 0
    admin.ok("PATCH", f"/data/leads/accounts/{leads['ids'][0]}", {"fields": {"owner": None}})
    assert worker.tick(due + dt.timedelta(days=1)) == 1
    worker.drain()
    msg = smtp_sink.wait_for(1)[0]
    assert msg["Subject"] == "pool share 67%" and sorted(msg.envelope_to) == ["rep1@example.com", "rep2@example.com"]
    assert msg.get_content().strip() == "2/3"


def test_claim_limit_is_the_largest_over_roles() -> None:
    access = Access(user_id=5, roles=[{"key": "a", "claim_limit": 3}, {"key": "b", "claim_limit": 10},
                                      {"key": "c"}])
    assert pool.claim_limit(access, "claim_limit") == 10
    assert pool.claim_limit(Access(user_id=5, roles=[{"key": "c"}]), "claim_limit") == 0
    assert pool.claim_limit(Access(user_id=5, is_admin=True), "claim_limit") is None


def test_notification_link_names_the_app(app: Any, admin: Api, leads: dict[str, Any]) -> None:
    x = leads["ids"][0]
    admin.ok("PATCH", f"/data/leads/accounts/{x}", {"fields": {"owner": leads["rep1"]}})
    _age(app, x, 9)
    _sql(app, lambda conn, cat, t: pool.recycle(conn, cat, t))
    with app.extensions["formwork"].engine.connect() as conn:
        link = conn.execute(select(db.notifications.c.link).where(
            db.notifications.c.kind == "pool_reminder")).scalar_one()
    assert link["app"] == "leads" and link["table"] == "accounts" and link["record_id"] == x
