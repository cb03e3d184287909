"""The CRM's contract approval: the sales manager, and an executive from ¥500,000; the status is set by the
approval only (a rep can neither create an approved contract nor mark one approved); changing an approved
contract's terms sends it back for approval."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from formwork.automation.worker import Worker
from tests.crm_support import Crm, installed_crm
from tests.helpers import db_snapshot


@pytest.fixture(scope="module")
def crm(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Crm]:
    yield from installed_crm(database_url, tmp_path_factory)


@pytest.fixture
def worker(crm: Crm) -> Worker:
    return Worker(crm.app, worker_id="crm-appr")


def _mine(crm: Crm, username: str, record_id: int) -> list[dict[str, Any]]:
    return [a for a in crm.api(username).ok("GET", "/approvals?mine=true")["approvals"] if a["record_id"] == record_id]


def test_a_rep_can_not_approve_a_contract_themselves(crm: Crm) -> None:
    am1 = crm.api("am1")
    before = db_snapshot(crm.app)
    status, body = am1.post("/data/crm/contracts", {"fields": {"title": "自批合同", "owner": crm.users["am1"],
                                                               "amount": 1000, "approval_status": "approved"}})
    assert status == 422 and "approval_status" in body["error"]["details"]
    assert db_snapshot(crm.app) == before
    c = am1.ok("POST", "/data/crm/contracts", {"fields": {"title": "合同", "owner": crm.users["am1"], "amount": 1000}})
    assert c["fields"]["approval_status"] == "draft"
    status, body = am1.call("PATCH", f"/data/crm/contracts/{c['id']}", {"fields": {"approval_status": "approved"}})
    assert status == 422 and "approval_status" in body["error"]["details"]


def test_big_contracts_also_need_an_executive_and_changes_go_back(crm: Crm, worker: Worker) -> None:
    am1 = crm.api("am1")
    c = am1.ok("POST", "/data/crm/contracts", {"fields": {
        "title": "大合同", "owner": crm.users["am1"], "amount": 800000,
        "start_date": "2027-01-01", "end_date": "2027-12-31"}})
    am1.ok("PATCH", f"/data/crm/contracts/{c['id']}", {"fields": {"approval_status": "pending"}})
    worker.drain()
    [m] = _mine(crm, "manager1", c["id"])
    assert m["levels"] == 2 and m["level_label"]["zh-CN"] == "销售主管"
    assert "合同审批" in m["titles"]["zh-CN"] and "Approve contract" in m["titles"]["en"]
    crm.api("manager1").ok("POST", f"/approvals/{m['id']}/decide", {"decision": "approve", "comment": "同意"})
    assert am1.ok("GET", f"/data/crm/contracts/{c['id']}")["fields"]["approval_status"] == "pending"
    [e] = _mine(crm, "exec1", c["id"])
    assert e["level"] == 2
    crm.api("exec1").ok("POST", f"/approvals/{e['id']}/decide", {"decision": "approve"})
    assert am1.ok("GET", f"/data/crm/contracts/{c['id']}")["fields"]["approval_status"] == "approved"
    worker.drain()
    titles = [n["title"] for n in am1.ok("GET", "/notifications")["notifications"]]
    assert any(t.startswith("已通过：合同审批") for t in titles), titles  # am1 reads Chinese
    # the terms change after approval: back to pending, the manager is asked again
    am1.ok("PATCH", f"/data/crm/contracts/{c['id']}", {"fields": {"amount": 900000}})
    assert am1.ok("GET", f"/data/crm/contracts/{c['id']}")["fields"]["approval_status"] == "pending"
    worker.drain()
    assert len(_mine(crm, "manager1", c["id"])) == 1
