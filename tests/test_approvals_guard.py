"""The status an approval maintains is set by the approval flow only, on every write path; the fields an
approval covers are refused, or send the record back for approval, while pending and once approved."""

from __future__ import annotations

from typing import Any

import pytest

from formwork.automation.worker import Worker
from tests import test_automation_support as support
from tests.helpers import Api, db_snapshot
from tests.test_automation_support import add_rule, create_user, runs, token_for
from tests.test_transfer import upload

sales = support.sales
worker = support.worker

STATUS = {"field": "status", "pending": "pending", "approved": "approved", "rejected": "rejected",
          "returned": "draft"}


def _rule(sales: Api, on_change: str | None = None) -> dict[str, Any]:
    step: dict[str, Any] = {"type": "request_approval", "key": "appr", "approvers": {"users": ["ann"]},
                            "title": {"en": "Approve {{ record.name }}", "zh-CN": "审批 {{ record.name }}"},
                            "status": STATUS,
                            "on_approve": [{"type": "update_record", "fields": {"counter": 1}}]}
    if on_change:
        step["guard"] = {"fields": ["amount", "company"], "on_change": on_change}
    return add_rule(sales, {"key": "deal_ok", "trigger": {"type": "record_updated", "table": "deals",
                                                          "changes": [{"field": "status", "to": "pending"}]},
                            "actions": [step]})


def _ann(app: Any, sales: Api) -> Api:
    return Api(sales.client, token_for(app, create_user(app, "ann")))


def _pending(api: Api) -> list[dict[str, Any]]:
    return api.ok("GET", "/approvals?mine=true")["approvals"]  # type: ignore[no-any-return]


def _status(sales: Api, rid: int) -> Any:
    return sales.ok("GET", f"/data/sales/deals/{rid}")["fields"]["status"]


def test_people_never_set_the_status_on_any_write_path(app: Any, sales: Api, worker: Worker) -> None:
    _rule(sales)
    before = db_snapshot(app)
    # create (single, batch), already approved or pending: 422 naming the field, nothing written
    status, body = sales.post("/data/sales/deals", {"fields": {"name": "x", "status": "approved"}})
    assert status == 422 and "status" in body["error"]["details"]
    assert "approval flow" in body["error"]["details"]["status"][0]
    status, body = sales.post("/data/sales/deals", {"records": [{"fields": {"name": "a"}},
                                                                {"fields": {"name": "b", "status": "pending"}}]})
    assert status == 422 and list(body["error"]["details"]) == ["records/1/status"]
    # import
    status, report = upload(sales, "/data/sales/deals/import", b"name,status\nimp,approved\n")
    assert report.get("inserted", 0) == 0 and (status == 422 or report.get("errors")), report
    assert db_snapshot(app) == before

    d = sales.ok("POST", "/data/sales/deals", {"fields": {"name": "d", "status": "draft"}})
    plain = sales.ok("POST", "/data/sales/deals", {"fields": {"name": "plain"}})
    before = db_snapshot(app)
    for path, payload in [
        (f"/data/sales/deals/{d['id']}", {"fields": {"status": "approved"}}),
        ("/data/sales/deals", {"records": [{"id": plain["id"], "fields": {"name": "p2"}},
                                           {"id": d["id"], "fields": {"status": "approved"}}]}),
    ]:
        status, body = sales.call("PATCH", path, payload)
        assert status == 422, body
        assert any(k.endswith("status") for k in body["error"]["details"])
    status, body = sales.post("/data/sales/deals/bulk-update", {"filter": {"and": []},
                                                                "fields": {"status": "rejected"}})
    assert status == 422, body
    assert db_snapshot(app) == before

    # asking for approval is the one change people may make; the flow sets the rest
    ann = _ann(app, sales)
    sales.ok("PATCH", f"/data/sales/deals/{d['id']}", {"fields": {"status": "pending"}})
    worker.drain()
    [req] = _pending(ann)
    for value in ("approved", "draft", "rejected"):
        assert sales.call("PATCH", f"/data/sales/deals/{d['id']}", {"fields": {"status": value}})[0] == 422
    ann.ok("POST", f"/approvals/{req['id']}/decide", {"decision": "approve"})
    assert _status(sales, d["id"]) == "approved"  # at once, by the flow
    worker.drain()
    assert sales.ok("GET", f"/data/sales/deals/{d['id']}")["fields"]["counter"] == 1
    assert sales.call("PATCH", f"/data/sales/deals/{d['id']}", {"fields": {"status": "pending"}})[0] == 422
    # sending the same value back (a form re-posting every field) is no change
    sales.ok("PATCH", f"/data/sales/deals/{d['id']}", {"fields": {"status": "approved", "name": "d2"}})


def test_guarded_fields_are_refused_while_pending_and_once_approved(app: Any, sales: Api, worker: Worker) -> None:
    _rule(sales, "refuse")
    ann = _ann(app, sales)
    d = sales.ok("POST", "/data/sales/deals", {"fields": {"name": "d", "amount": 100}})
    sales.ok("PATCH", f"/data/sales/deals/{d['id']}", {"fields": {"amount": 120}})  # not asked yet: free
    sales.ok("PATCH", f"/data/sales/deals/{d['id']}", {"fields": {"status": "pending"}})
    worker.drain()
    before = db_snapshot(app)
    status, body = sales.call("PATCH", f"/data/sales/deals/{d['id']}", {"fields": {"amount": 999}})
    assert status == 422 and body["error"]["details"] == {
        "amount": ["can't be changed while the record is waiting for approval"]}
    assert db_snapshot(app) == before
    sales.ok("PATCH", f"/data/sales/deals/{d['id']}", {"fields": {"amount": 120, "name": "renamed"}})  # unchanged
    [req] = _pending(ann)
    ann.ok("POST", f"/approvals/{req['id']}/decide", {"decision": "approve"})
    worker.drain()
    status, body = sales.call("PATCH", f"/data/sales/deals/{d['id']}", {"fields": {"amount": 5}})
    assert status == 422 and body["error"]["details"]["amount"] == ["can't be changed after the record was approved"]
    # a rejected record is free to change, and can be asked again
    d2 = sales.ok("POST", "/data/sales/deals", {"fields": {"name": "d2", "amount": 1}})
    sales.ok("PATCH", f"/data/sales/deals/{d2['id']}", {"fields": {"status": "pending"}})
    worker.drain()
    [req2] = _pending(ann)
    ann.ok("POST", f"/approvals/{req2['id']}/decide", {"decision": "reject", "comment": "no"})
    assert _status(sales, d2["id"]) == "rejected"
    sales.ok("PATCH", f"/data/sales/deals/{d2['id']}", {"fields": {"amount": 2}})
    sales.ok("PATCH", f"/data/sales/deals/{d2['id']}", {"fields": {"status": "pending"}})


def test_guarded_fields_send_the_record_back_for_approval(app: Any, sales: Api, worker: Worker) -> None:
    _rule(sales, "resubmit")
    ann = _ann(app, sales)
    d = sales.ok("POST", "/data/sales/deals", {"fields": {"name": "d", "amount": 100}})
    sales.ok("PATCH", f"/data/sales/deals/{d['id']}", {"fields": {"status": "pending"}})
    worker.drain()
    [first] = _pending(ann)
    # while pending: the open request is withdrawn and a fresh one asked
    sales.ok("PATCH", f"/data/sales/deals/{d['id']}", {"fields": {"amount": 150}})
    worker.drain()
    [second] = _pending(ann)
    assert second["id"] != first["id"]
    trail = sales.ok("GET", f"/data/sales/deals/{d['id']}/approvals")["approvals"]
    assert [a["status"] for a in trail] == ["cancelled", "pending"]
    assert ann.post(f"/approvals/{first['id']}/decide", {"decision": "approve"})[0] == 409
    assert sorted(r["status"] for r in runs(sales, "deal_ok")) == ["awaiting_approval", "cancelled"]
    ann.ok("POST", f"/approvals/{second['id']}/decide", {"decision": "approve"})
    worker.drain()
    assert _status(sales, d["id"]) == "approved"
    # once approved: the change goes through and the record goes back to pending, asked again
    sales.ok("PATCH", f"/data/sales/deals/{d['id']}", {"fields": {"amount": 170}})
    assert _status(sales, d["id"]) == "pending"
    worker.drain()
    [third] = _pending(ann)
    assert third["id"] not in (first["id"], second["id"])
    assert sales.ok("GET", f"/data/sales/deals/{d['id']}")["fields"]["amount"] == 170


@pytest.mark.parametrize("step, pointer", [
    ({"approvers": {"users": ["admin"]}, "levels": [{"approvers": {"users": ["admin"]}}]}, "/actions/0/levels"),
    ({"approvers": {"users": ["admin"]}, "guard": {"fields": ["amount"], "on_change": "resubmit"}},
     "/actions/0/guard/on_change"),
    ({"approvers": {"users": ["admin"]}, "status": {"field": "nope"}}, "/actions/0/status/field"),
    ({"approvers": {"users": ["admin"]}, "guard": {"fields": ["nope"]}}, "/actions/0/guard/fields/0"),
    ({"levels": [{"approvers": {}}]}, "/actions/0/levels/0/approvers"),
    ({"levels": [{"approvers": {"users": ["admin"]}, "when": {"field": "nope", "op": "eq", "value": 1}}]},
     "/actions/0/levels/0/when"),
])
def test_bad_approval_steps_are_refused_at_save_time(app: Any, sales: Api, step: dict[str, Any],
                                                     pointer: str) -> None:
    before = db_snapshot(app)
    status, body = sales.post("/meta/apps/sales/automations", {
        "key": "bad", "label": "bad", "trigger": {"type": "record_created", "table": "deals"},
        "actions": [{"type": "request_approval", **step}]})
    assert status == 422, body
    assert any(k.startswith(pointer) for k in body["error"]["details"]), body
    assert db_snapshot(app) == before
