"""Multi-level approvals (levels above a threshold, approvers by user, role or team manager, any / all),
deciding twice or someone else's approval (4xx, nothing changes), the cheap inbox count."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select, update

from formwork import db
from formwork.automation import approvals
from formwork.automation.worker import Worker
from formwork.runtime.permissions import Access
from tests import test_automation_support as support
from tests.helpers import Api, db_snapshot
from tests.test_automation_support import add_rule, create_user, runs, token_for

sales = support.sales
worker = support.worker


def _role(app: Any, key: str, users: list[int]) -> None:
    with db.transaction(app.extensions["formwork"].engine) as conn:
        rid = conn.execute(insert(db.roles).values(key=key, doc={"key": key, "label": key, "permissions": {}})
                           .returning(db.roles.c.id)).scalar_one()
        conn.execute(insert(db.user_roles), [{"user_id": u, "role_id": rid} for u in users])


def _team(app: Any, manager: int, members: list[int]) -> None:
    with db.transaction(app.extensions["formwork"].engine) as conn:
        tid = conn.execute(insert(db.teams).values(key="east", name="East", manager_id=manager)
                           .returning(db.teams.c.id)).scalar_one()
        conn.execute(update(db.users).where(db.users.c.id.in_(members)).values(team_id=tid))


LEVELS = [
    {"label": {"en": "Manager", "zh-CN": "主管"}, "approvers": {"manager": True}},
    {"label": {"en": "Finance", "zh-CN": "财务"}, "approvers": {"users": ["fin1", "fin2"]}, "mode": "all",
     "when": {"field": "amount", "op": "gte", "value": 100000}},
    {"label": {"en": "Executive", "zh-CN": "高管"}, "approvers": {"role": "exec"},
     "when": {"field": "amount", "op": "gte", "value": 500000}},
]


def _setup(app: Any, sales: Api) -> dict[str, Api]:
    ids = {n: create_user(app, n) for n in ("boss", "rep", "fin1", "fin2", "ceo", "cfo")}
    _team(app, ids["boss"], [ids["rep"]])
    _role(app, "exec", [ids["ceo"], ids["cfo"]])
    add_rule(sales, {"key": "big", "trigger": {"type": "record_created", "table": "deals"},
                     "actions": [{"type": "request_approval", "key": "appr", "levels": LEVELS,
                                  "title": "Deal {{ record.name }}",
                                  "on_approve": [{"type": "update_record", "fields": {"status": "ok"}}],
                                  "on_reject": [{"type": "update_record", "fields": {"status": "no"}}]}]})
    return {n: Api(sales.client, token_for(app, i)) for n, i in ids.items()}


def _waiting(api: Api) -> list[dict[str, Any]]:
    return api.ok("GET", "/approvals?mine=true")["approvals"]  # type: ignore[no-any-return]


def test_levels_apply_by_threshold_in_order(app: Any, sales: Api, worker: Worker) -> None:
    u = _setup(app, sales)
    small = sales.ok("POST", "/data/sales/deals", {"fields": {"name": "small", "amount": 5000, "owner": "rep"}})
    big = sales.ok("POST", "/data/sales/deals", {"fields": {"name": "big", "amount": 600000, "owner": "rep"}})
    worker.drain()
    boss = {a["record_id"]: a for a in _waiting(u["boss"])}
    assert set(boss) == {small["id"], big["id"]}
    assert boss[big["id"]]["level"] == 1 and boss[big["id"]]["levels"] == 3
    assert boss[small["id"]]["levels"] == 1  # below both thresholds: the manager alone
    u["boss"].ok("POST", f"/approvals/{boss[small['id']]['id']}/decide", {"decision": "approve"})
    worker.drain()
    assert sales.ok("GET", f"/data/sales/deals/{small['id']}")["fields"]["status"] == "ok"

    # 会签: finance needs both; the executive level (或签) after them
    assert u["boss"].ok("POST", f"/approvals/{boss[big['id']]['id']}/decide",
                        {"decision": "approve"})["status"] == "approved"
    [f1] = _waiting(u["fin1"])
    assert f1["level"] == 2 and f1["mode"] == "all" and f1["level_label"] == {"en": "Finance", "zh-CN": "财务"}
    assert u["fin1"].ok("POST", f"/approvals/{f1['id']}/decide", {"decision": "approve"})["status"] == "pending"
    assert _waiting(u["ceo"]) == []
    u["fin2"].ok("POST", f"/approvals/{f1['id']}/decide", {"decision": "approve"})
    [c] = _waiting(u["ceo"])
    assert [a["id"] for a in _waiting(u["cfo"])] == [c["id"]]
    u["cfo"].ok("POST", f"/approvals/{c['id']}/decide", {"decision": "approve", "comment": "同意"})
    assert _waiting(u["ceo"]) == []  # any one of the role settles the level
    worker.drain()
    assert sales.ok("GET", f"/data/sales/deals/{big['id']}")["fields"]["status"] == "ok"
    run = [r for r in runs(sales, "big") if r["record_id"] == big["id"]][0]
    assert run["status"] == "succeeded"
    trail = sales.ok("GET", f"/data/sales/deals/{big['id']}/approvals")["approvals"]
    assert [(a["level"], a["status"]) for a in trail] == [(1, "approved"), (2, "approved"), (3, "approved")]


def test_a_rejection_at_any_level_settles_the_step(app: Any, sales: Api, worker: Worker) -> None:
    u = _setup(app, sales)
    d = sales.ok("POST", "/data/sales/deals", {"fields": {"name": "mid", "amount": 200000, "owner": "rep"}})
    worker.drain()
    [b] = _waiting(u["boss"])
    assert b["levels"] == 2
    u["boss"].ok("POST", f"/approvals/{b['id']}/decide", {"decision": "approve"})
    [f] = _waiting(u["fin2"])
    u["fin2"].ok("POST", f"/approvals/{f['id']}/decide", {"decision": "reject", "comment": "预算不足"})
    assert _waiting(u["fin1"]) == []  # settled: nobody waits any more
    worker.drain()
    assert sales.ok("GET", f"/data/sales/deals/{d['id']}")["fields"]["status"] == "no"


def test_deciding_twice_or_someone_elses_approval_changes_nothing(app: Any, sales: Api, worker: Worker) -> None:
    u = _setup(app, sales)
    sales.ok("POST", "/data/sales/deals", {"fields": {"name": "x", "amount": 1, "owner": "rep"}})
    worker.drain()
    [a] = _waiting(u["boss"])
    before = db_snapshot(app)
    assert u["rep"].post(f"/approvals/{a['id']}/decide", {"decision": "approve"})[0] == 404
    assert sales.post(f"/approvals/{a['id']}/decide", {"decision": "approve"})[0] == 403  # admin, no approver
    assert u["boss"].post(f"/approvals/{a['id']}/decide", {"decision": "return"})[0] == 422  # no comment
    assert u["boss"].post("/approvals/999999/decide", {"decision": "approve"})[0] == 404
    assert db_snapshot(app) == before
    u["boss"].ok("POST", f"/approvals/{a['id']}/decide", {"decision": "approve"})
    before = db_snapshot(app)
    status, body = u["boss"].post(f"/approvals/{a['id']}/decide", {"decision": "reject", "comment": "changed mind"})
    assert status == 409 and "already approved" in body["error"]["message"]
    assert db_snapshot(app) == before


def test_the_inbox_count_is_one_indexed_count(app: Any, sales: Api, worker: Worker) -> None:
    u = _setup(app, sales)
    for i in range(3):
        sales.ok("POST", "/data/sales/deals", {"fields": {"name": f"d{i}", "amount": 1, "owner": "rep"}})
    worker.drain()
    engine = app.extensions["formwork"].engine
    with engine.connect() as conn:
        boss_id = conn.execute(select(db.users.c.id).where(db.users.c.username == "boss")).scalar_one()
        statements: list[str] = []
        from sqlalchemy import event

        def count(_c: Any, _cur: Any, stmt: str, *_a: Any) -> None:
            statements.append(stmt)

        event.listen(engine, "before_cursor_execute", count)
        try:
            assert approvals.pending_count(conn, Access.for_user(conn, boss_id)) == 3
            n = len(statements)
            approvals.pending_count(conn, Access(user_id=boss_id))
            assert len(statements) == n + 1 and "fw_approval_waiting" in statements[-1]
        finally:
            event.remove(engine, "before_cursor_execute", count)
    [first, *_] = _waiting(u["boss"])
    u["boss"].ok("POST", f"/approvals/{first['id']}/decide", {"decision": "approve"})
    with engine.connect() as conn:
        assert approvals.pending_count(conn, Access(user_id=boss_id)) == 2
