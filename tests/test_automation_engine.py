"""Automation engine: triggers, conditions, actions, loops, run logs and dry runs (both databases)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from formwork import db
from formwork.automation.worker import Worker
from tests import peers
from tests import test_automation_support as support
from tests.helpers import Api, db_snapshot
from tests.peers import SmtpSink, WebhookSink
from tests.test_automation_support import add_rule, create_user, outbox_rows, runs, token_for

# fixtures shared with the other automation test modules
sales = support.sales
worker = support.worker
smtp_sink = peers.smtp_sink
webhook_sink = peers.webhook_sink


def test_record_created_condition_and_update_record(sales: Api, worker: Worker) -> None:
    add_rule(sales, {"key": "big_deal", "trigger": {"type": "record_created", "table": "deals"},
                     "condition": {"field": "amount", "op": "gte", "value": 1000},
                     "actions": [{"type": "update_record", "fields": {"status": "big: {{ record.name }}"}},
                                 {"type": "create_record", "key": "task", "table": "tasks",
                                  "fields": {"title": "Call {{ record.name }} about {{ record.amount|money }}",
                                             "note": "after {{ actions['0'].fields.status }}"}}]})
    big = sales.ok("POST", "/data/sales/deals", {"fields": {"name": "Acme", "amount": 1500}})
    small = sales.ok("POST", "/data/sales/deals", {"fields": {"name": "Tiny", "amount": 10}})
    worker.drain()
    assert sales.ok("GET", f"/data/sales/deals/{big['id']}")["fields"]["status"] == "big: Acme"
    assert sales.ok("GET", f"/data/sales/deals/{small['id']}")["fields"].get("status") is None
    tasks = sales.records("sales", "tasks")
    assert [t["fields"] for t in tasks] == [{"title": "Call Acme about 1,500.00", "note": "after big: Acme"}]
    log = runs(sales, "big_deal")
    assert len(log) == 1 and log[0]["status"] == "succeeded" and log[0]["record_id"] == big["id"]
    assert [s["status"] for s in log[0]["steps"]] == ["ok", "ok"]
    # the rule's own update carries its origin and does not trigger it again; history shows the change
    hist = sales.ok("GET", f"/data/sales/deals/{big['id']}/history")["entries"]
    assert hist[0]["changes"]["status"]["new"] == "big: Acme"
    assert all(r.status == "done" for r in outbox_rows(sales.client.application))


def test_rolled_back_change_fires_nothing(sales: Api, worker: Worker) -> None:
    add_rule(sales, {"key": "any_deal", "trigger": {"type": "record_created", "table": "deals"},
                     "actions": [{"type": "create_record", "table": "tasks", "fields": {"title": "x"}}]})
    before = len(outbox_rows(sales.client.application))
    status, _ = sales.post("/data/sales/deals", {"records": [{"fields": {"name": "ok"}}, {"fields": {"amount": "x"}}]})
    assert status == 422
    assert len(outbox_rows(sales.client.application)) == before
    worker.drain()
    assert runs(sales, "any_deal") == [] and sales.records("sales", "tasks") == []


def test_record_updated_field_filters_changed_to_and_deleted(sales: Api, worker: Worker) -> None:
    add_rule(sales, {"key": "won", "trigger": {"type": "record_updated", "table": "deals",
                                               "changes": [{"field": "stage", "from": "lead", "to": "won"}]},
                     "actions": [{"type": "create_record", "table": "tasks",
                                  "fields": {"title": "won {{ record.name }} by {{ trigger.user.name }}"}}]})
    add_rule(sales, {"key": "amount_changed", "trigger": {"type": "record_updated", "table": "deals",
                                                          "fields": ["amount"]},
                     "condition": {"and": [{"field": "amount", "op": "changed"},
                                           {"field": "amount", "op": "gt", "value": 5}]},
                     "actions": [{"type": "create_record", "table": "tasks", "fields": {
                         "title": "amount {{ trigger.changes.amount.old|int }}→{{ record.amount|int }}"}}]})
    add_rule(sales, {"key": "gone", "trigger": {"type": "record_deleted", "table": "deals"},
                     "actions": [{"type": "create_record", "table": "tasks",
                                  "fields": {"title": "deleted {{ record.name }}"}}]})
    d = sales.ok("POST", "/data/sales/deals", {"fields": {"name": "Acme", "stage": "lead", "amount": 1}})
    url = f"/data/sales/deals/{d['id']}"
    # conditions are evaluated on the record as it is when the worker runs: drain after each change
    for change in ({"name": "Acme 2"},  # no rule
                   {"amount": 3},  # amount rule: its condition is false
                   {"stage": "won", "amount": 9},
                   {"stage": "lead"},
                   {"stage": "lost"}):  # from lead but not to won
        sales.ok("PATCH", url, {"fields": change})
        worker.drain()
    sales.ok("DELETE", url)
    worker.drain()
    titles = sorted(t["fields"]["title"] for t in sales.records("sales", "tasks"))
    assert titles == ["amount 3→9", "deleted Acme 2", "won Acme 2 by Admin"]


def test_email_and_webhook_delivered_once_with_keys(app: Any, sales: Api, worker: Worker, smtp_sink: SmtpSink,
                                                   webhook_sink: WebhookSink) -> None:
    worker.settings.smtp.port = smtp_sink.port
    owner = create_user(app, "lily", name="李莉")
    company = sales.ok("POST", "/data/sales/companies", {"fields": {"name": "华为", "level": "A"}})
    add_rule(sales, {"key": "notify_won", "trigger": {"type": "record_created", "table": "deals"},
                     "actions": [
                         {"type": "send_email", "to": ["{{ record.owner.email }}"],
                          "subject": "赢单：{{ record.name }}"
                                     "（{{ record.company.name }} / {{ record.company.level }}）",
                          "body": "金额 {{ record.amount|money('¥') }}"},
                         {"type": "call_webhook", "url": webhook_sink.url, "secret": "s3cret",
                          "payload": {"deal": "{{ record.name }}", "amount": "{{ record.amount }}",
                                      "company": "{{ record.company.name }}"}}]})
    deal = sales.ok("POST", "/data/sales/deals", {"fields": {"name": "大单", "amount": 12345.5, "owner": owner,
                                                            "company": company["id"]}})
    worker.drain()
    msgs = smtp_sink.wait_for(1)
    assert msgs[0]["Subject"] == "赢单：大单（华为 / A）"
    assert msgs[0].envelope_to == ["lily@example.com"]
    assert "¥12,345.50" in msgs[0].get_content()
    reqs = webhook_sink.wait_for(1)
    assert webhook_sink.verify("s3cret")
    assert reqs[0].json() == {"deal": "大单", "amount": 12345.5, "company": "华为"}
    run = runs(sales, "notify_won")[0]
    assert run["status"] == "succeeded", run
    keys = {msgs[0]["X-Formwork-Idempotency-Key"], reqs[0].headers["X-Formwork-Idempotency-Key"]}
    assert keys == {f"fw-{run['id']}-0", f"fw-{run['id']}-1"}
    assert [s["status"] for s in run["steps"]] == ["sent", "sent"]
    worker.drain()  # nothing is sent twice
    assert len(smtp_sink.messages) == 1 and len(webhook_sink.requests) == 1
    assert deal["id"] == run["record_id"]


def test_the_run_log_keeps_a_webhooks_status_not_its_response_body(sales: Api, worker: Worker,
                                                                    webhook_sink: WebhookSink) -> None:
    """A receiver's answer may echo secrets: the run log shows managers its status and size only."""
    webhook_sink.set_responses((200, "token=SECRET-FROM-RECEIVER"))
    add_rule(sales, {"key": "ping", "trigger": {"type": "record_created", "table": "deals"},
                     "actions": [{"type": "call_webhook", "url": webhook_sink.url}]})
    sales.ok("POST", "/data/sales/deals", {"fields": {"name": "x"}})
    worker.drain()
    webhook_sink.wait_for(1)
    run = runs(sales, "ping")[0]
    assert run["status"] == "succeeded", run
    assert "SECRET-FROM-RECEIVER" not in json.dumps(run)
    assert run["steps"][0]["output"] == {"status": 200, "body_chars": len("token=SECRET-FROM-RECEIVER")}


def test_webhook_retries_with_backoff_then_fails_and_notifies_owner(sales: Api, worker: Worker,
                                                                    webhook_sink: WebhookSink) -> None:
    webhook_sink.set_responses(503, 503, 200)
    add_rule(sales, {"key": "hook", "trigger": {"type": "record_created", "table": "tasks"},
                     "actions": [{"type": "call_webhook", "url": webhook_sink.url}]})
    sales.ok("POST", "/data/sales/tasks", {"fields": {"title": "a"}})
    _drain_until(worker, lambda: [r["status"] for r in runs(sales, "hook")][:1] not in ([], ["delivering"]))
    assert runs(sales, "hook")[0]["status"] == "succeeded"
    assert len(webhook_sink.requests) == 3
    assert len({r.headers["X-Formwork-Idempotency-Key"] for r in webhook_sink.requests}) == 1

    webhook_sink.set_responses(500)
    worker.settings.max_attempts = 3
    sales.ok("POST", "/data/sales/tasks", {"fields": {"title": "b"}})
    _drain_until(worker, lambda: [r["status"] for r in runs(sales, "hook")][:2] in (["failed", "succeeded"],))
    run = runs(sales, "hook")[0]
    assert run["status"] == "failed" and "500" in run["error"]
    assert run["steps"][0]["status"] == "failed"
    notes = sales.ok("GET", "/notifications?unread=true")["notifications"]
    assert notes and notes[0]["kind"] == "automation_failed" and notes[0]["link"]["run_id"] == run["id"]
    sales.ok("POST", f"/notifications/{notes[0]['id']}/read")
    assert sales.ok("GET", "/notifications?unread=true")["unread"] == len(notes) - 1


def _drain_until(worker: Worker, done: Any, timeout: float = 5.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out"
        worker.drain()
        time.sleep(0.01)


def test_loop_between_two_rules_stops_at_depth_and_is_logged(sales: Api, worker: Worker) -> None:
    add_rule(sales, {"key": "ping", "trigger": {"type": "record_updated", "table": "deals", "fields": ["status"]},
                     "actions": [{"type": "update_record", "fields": {"counter": "{{ (record.counter or 0) + 1 }}"}}]})
    add_rule(sales, {"key": "pong", "trigger": {"type": "record_updated", "table": "deals", "fields": ["counter"]},
                     "actions": [{"type": "update_record", "fields": {"status": "pong {{ record.counter }}"}}]})
    d = sales.ok("POST", "/data/sales/deals", {"fields": {"name": "loop"}})
    sales.ok("PATCH", f"/data/sales/deals/{d['id']}", {"fields": {"status": "go"}})
    worker.drain()
    worker.drain()
    rec = sales.ok("GET", f"/data/sales/deals/{d['id']}")["fields"]
    assert rec["counter"] == 3  # ping at depth 0, 2, 4; pong at depth 1, 3; the chain stops at depth 5
    failed = [r for r in runs(sales, "ping") + runs(sales, "pong") if r["status"] == "failed"]
    assert len(failed) == 1 and "chain of 5 automations" in failed[0]["error"]
    assert failed[0]["depth"] == 5


def test_failing_action_rolls_back_the_run_and_is_visible(sales: Api, worker: Worker) -> None:
    add_rule(sales, {"key": "bad", "trigger": {"type": "record_created", "table": "deals"},
                     "actions": [{"type": "create_record", "table": "tasks", "fields": {"title": "first"}},
                                 {"type": "update_record", "fields": {"amount": "{{ record.name }}"}}]})
    sales.ok("POST", "/data/sales/deals", {"fields": {"name": "not a number"}})
    worker.drain()
    run = runs(sales, "bad")[0]
    assert run["status"] == "failed" and "amount" in run["error"]
    assert [s["status"] for s in run["steps"]] == ["rolled_back", "failed"]
    assert sales.records("sales", "tasks") == []


def test_run_as_limits_what_a_rule_may_do(app: Any, sales: Api, worker: Worker) -> None:
    create_user(app, "viewer")
    with db.transaction(app.extensions["formwork"].engine) as conn:
        from sqlalchemy import insert

        rid = conn.execute(insert(db.roles).values(key="deal_reader", doc={
            "key": "deal_reader", "label": "R", "permissions": {"sales.deals": {"read": "all"}}})
            .returning(db.roles.c.id)).scalar_one()
        uid = conn.execute(select(db.users.c.id).where(db.users.c.username == "viewer")).scalar_one()
        conn.execute(insert(db.user_roles).values(user_id=uid, role_id=rid))
    add_rule(sales, {"key": "sneaky", "run_as": "viewer", "trigger": {"type": "record_created", "table": "deals"},
                     "actions": [{"type": "update_record", "fields": {"status": "changed"}}]})
    d = sales.ok("POST", "/data/sales/deals", {"fields": {"name": "x"}})
    worker.drain()
    run = runs(sales, "sneaky")[0]
    assert run["status"] == "failed" and "may not" in run["error"]
    assert sales.ok("GET", f"/data/sales/deals/{d['id']}")["fields"].get("status") is None


def test_sandbox_escape_and_bad_references_refused_at_save(sales: Api) -> None:
    app = sales.client.application
    before = db_snapshot(app)
    for template in ("{{ record.__class__ }}", "{{ record.name.__class__.__mro__ }}",
                     "{{ ''.format(record) }}", "{{ record|attr('__init__') }}", "{{ cycler }}",
                     "{% include 'x' %}", "{{ unknown_name }}", "{{ record.name "):
        status, err = sales.post("/meta/apps/sales/automations", {
            "key": "evil", "label": "e", "trigger": {"type": "record_created", "table": "deals"},
            "actions": [{"type": "update_record", "fields": {"status": template}}]})
        assert status == 422, template
        assert "/actions/0/fields/status" in err["error"]["details"], err
    for doc, pointer in (
        ({"type": "create_record", "table": "nope", "fields": {"x": 1}}, "/actions/0/table"),
        ({"type": "update_record", "fields": {"nope": 1}}, "/actions/0/fields/nope"),
        ({"type": "send_email", "to": ["a@b.c"]}, "/actions/0/subject"),
        ({"type": "branch", "condition": {"field": "nope", "op": "eq", "value": 1}}, "/actions/0/condition"),
        ({"type": "wait"}, "/actions/0"),
    ):
        status, err = sales.post("/meta/apps/sales/automations", {
            "key": "bad", "label": "b", "trigger": {"type": "record_created", "table": "deals"}, "actions": [doc]})
        assert status == 422 and pointer in err["error"]["details"], (doc, err)
    status, err = sales.post("/meta/apps/sales/automations", {
        "key": "sched", "label": "s", "trigger": {"type": "schedule", "schedule": {"every": "day"}},
        "actions": [{"type": "update_record", "fields": {"status": "x"}}]})
    assert status == 422 and "/actions/0/type" in err["error"]["details"]
    assert db_snapshot(app) == before


def test_dry_run_reports_matches_and_rendered_values_without_side_effects(sales: Api) -> None:
    a = sales.ok("POST", "/data/sales/deals", {"fields": {"name": "Acme", "amount": 5000}})
    b = sales.ok("POST", "/data/sales/deals", {"fields": {"name": "Tiny", "amount": 5}})
    add_rule(sales, {"key": "dry", "trigger": {"type": "record_updated", "table": "deals"},
                     "condition": {"field": "amount", "op": "gt", "value": 100},
                     "actions": [{"type": "update_record", "fields": {"status": "hot {{ record.name }}"}},
                                 {"type": "send_email", "to": ["x@example.com"], "subject": "Hi {{ record.name }}"},
                                 {"type": "call_webhook", "url": "https://example.com/h", "secret": "hidden"},
                                 {"type": "notify", "users": ["admin"], "title": "t {{ record.amount|money }}"}]})
    app = sales.client.application
    before = db_snapshot(app)
    res = sales.ok("POST", "/meta/apps/sales/automations/dry/test", {"record_ids": [a["id"], b["id"]]})
    assert res["matched"] == [a["id"]]
    first = res["results"][0]
    assert first["actions"][0]["output"] == {"id": a["id"], "would_set": {"status": "hot Acme"}}
    assert first["actions"][1]["output"]["would_send"]["subject"] == "Hi Acme"
    assert "secret" not in first["actions"][2]["output"]["would_send"]
    assert first["actions"][3]["output"]["title"] == "t 5,000.00"
    assert res["results"][1] == {"record_id": b["id"], "matched": False}
    res = sales.ok("POST", "/meta/apps/sales/automations/dry/test", {"limit": 5})
    assert res["checked"] == 2
    assert db_snapshot(app) == before
    status, _ = sales.post("/meta/apps/sales/automations/dry/test", {"record_ids": "x"})
    assert status == 400
    status, _ = sales.post("/meta/apps/sales/automations/nope/test", {})
    assert status == 404


def test_manual_trigger_and_branch(sales: Api, worker: Worker) -> None:
    add_rule(sales, {"key": "triage", "trigger": {"type": "manual", "table": "deals"},
                     "actions": [{"type": "branch", "condition": {"field": "amount", "op": "gte", "value": 100},
                                  "then": [{"type": "update_record", "fields": {"status": "big"}}],
                                  "else": [{"type": "update_record", "fields": {"status": "small"}}]}]})
    a = sales.ok("POST", "/data/sales/deals", {"fields": {"name": "a", "amount": 500}})
    b = sales.ok("POST", "/data/sales/deals", {"fields": {"name": "b", "amount": 5}})
    worker.drain()
    assert runs(sales, "triage") == []
    app = sales.client.application
    before = db_snapshot(app)
    status, _ = sales.post("/meta/apps/sales/automations/triage/run", {"record_ids": [a["id"], 99999]})
    assert status == 404
    assert db_snapshot(app) == before
    assert sales.ok("POST", "/meta/apps/sales/automations/triage/run", {"record_ids": [a["id"], b["id"]]}) == \
        {"queued": 2}
    worker.drain()
    assert sales.ok("GET", f"/data/sales/deals/{a['id']}")["fields"]["status"] == "big"
    assert sales.ok("GET", f"/data/sales/deals/{b['id']}")["fields"]["status"] == "small"
    steps = {r["record_id"]: [s["path"] for s in r["steps"]] for r in runs(sales, "triage")}
    assert steps == {a["id"]: ["0", "0.then.0"], b["id"]: ["0", "0.else.0"]}


def test_incoming_webhook_creates_and_updates_records(sales: Api, worker: Worker) -> None:
    add_rule(sales, {"key": "inbound", "trigger": {"type": "webhook", "table": "companies", "match_field": "name"},
                     "actions": [{"type": "update_record", "fields": {"note": "via hook {{ trigger.data.source }}"}}]})
    hook = sales.ok("POST", "/meta/apps/sales/automations/inbound/webhook-token")
    anonymous = Api(sales.client)
    status, body = anonymous.post(hook["url"][len("/api/v1"):], {"fields": {"name": "Acme", "level": "A"},
                                                                 "source": "erp"})
    assert status == 202 and body["created"] is True
    status, body2 = anonymous.post(hook["url"][len("/api/v1"):], {"fields": {"name": "Acme", "level": "B"},
                                                                  "source": "crm"})
    assert status == 202 and body2 == {"id": body["id"], "created": False}
    worker.drain()
    rec = sales.ok("GET", f"/data/sales/companies/{body['id']}")["fields"]
    assert rec["level"] == "B" and rec["note"] == "via hook crm"
    assert len(runs(sales, "inbound")) == 2
    status, _ = anonymous.post("/hooks/fwh_wrong", {"fields": {"name": "x"}})
    assert status == 404
    with sales.client.application.extensions["formwork"].engine.connect() as conn:
        stored = conn.execute(select(db.hook_tokens.c.token_hash)).scalar()
    assert stored != hook["token"] and hook["token"] not in stored


def test_form_submitted_helper(app: Any, sales: Api, worker: Worker) -> None:
    from formwork.automation.intake import emit_form_submitted

    add_rule(sales, {"key": "thanks", "trigger": {"type": "form_submitted", "table": "companies", "view": "signup"},
                     "actions": [{"type": "update_record", "fields": {"note": "form {{ trigger.form }}"}}]})
    c1 = sales.ok("POST", "/data/sales/companies", {"fields": {"name": "a"}})
    c2 = sales.ok("POST", "/data/sales/companies", {"fields": {"name": "b"}})
    p = app.extensions["formwork"]
    with db.transaction(p.engine) as conn:
        t = p.catalogs.get(conn).table("sales", "companies")
        emit_form_submitted(conn, t, c1["id"], form="signup")
        emit_form_submitted(conn, t, c2["id"], form="other")
    worker.drain()
    assert sales.ok("GET", f"/data/sales/companies/{c1['id']}")["fields"]["note"] == "form signup"
    assert sales.ok("GET", f"/data/sales/companies/{c2['id']}")["fields"].get("note") is None


def test_update_related_notify_and_rate_limit(app: Any, sales: Api, worker: Worker) -> None:
    bob = create_user(app, "bob")
    c = sales.ok("POST", "/data/sales/companies", {"fields": {"name": "Acme"}})
    add_rule(sales, {"key": "rel", "trigger": {"type": "record_created", "table": "deals"},
                     "rate_limit_per_minute": 2,
                     "actions": [{"type": "update_related", "link": "company",
                                  "fields": {"note": "{{ related.name }} has deal {{ record.name }}"}},
                                 {"type": "notify", "users": ["bob"], "owner": True,
                                  "title": "New deal {{ record.name }}"}]})
    for name in ("d1", "d2", "d3"):
        sales.ok("POST", "/data/sales/deals", {"fields": {"name": name, "company": c["id"], "owner": bob}})
    worker.drain()
    assert sales.ok("GET", f"/data/sales/companies/{c['id']}")["fields"]["note"] == "Acme has deal d2"
    statuses = sorted(r["status"] for r in runs(sales, "rel"))
    assert statuses == ["skipped", "succeeded", "succeeded"]
    bob_api = Api(sales.client, token_for(app, bob))
    notes = bob_api.ok("GET", "/notifications")["notifications"]
    assert sorted(n["title"] for n in notes) == ["New deal d1", "New deal d2"]  # deduplicated per user


def test_assign_owner_round_robin_and_least_loaded(app: Any, sales: Api, worker: Worker) -> None:
    with db.transaction(app.extensions["formwork"].engine) as conn:
        from sqlalchemy import insert

        rid = conn.execute(insert(db.roles).values(key="rep", doc={"key": "rep", "label": "Rep", "permissions": {}})
                           .returning(db.roles.c.id)).scalar_one()
    ids = [create_user(app, n) for n in ("ann", "ben", "cat")]
    with db.transaction(app.extensions["formwork"].engine) as conn:
        from sqlalchemy import insert

        conn.execute(insert(db.user_roles), [{"user_id": i, "role_id": rid} for i in ids])
    add_rule(sales, {"key": "rr", "trigger": {"type": "record_created", "table": "deals"},
                     "condition": {"field": "stage", "op": "eq", "value": "lead"},
                     "actions": [{"type": "assign_owner", "role": "rep", "strategy": "round_robin"}]})
    add_rule(sales, {"key": "ll", "trigger": {"type": "record_created", "table": "deals"},
                     "condition": {"field": "stage", "op": "eq", "value": "won"},
                     "actions": [{"type": "assign_owner", "field": "owner", "role": "rep",
                                  "strategy": "least_loaded"}]})
    for i in range(4):
        sales.ok("POST", "/data/sales/deals", {"fields": {"name": f"l{i}", "stage": "lead"}})
        worker.drain()
    owners = [r["fields"]["owner"]["id"] for r in sales.records("sales", "deals", sort="name")]
    assert owners == [ids[0], ids[1], ids[2], ids[0]]
    sales.ok("POST", "/data/sales/deals", {"fields": {"name": "w", "stage": "won"}})
    worker.drain()
    won = sales.records("sales", "deals", filter={"field": "stage", "op": "eq", "value": "won"})
    assert won[0]["fields"]["owner"]["id"] in (ids[1], ids[2])  # ann already has two
