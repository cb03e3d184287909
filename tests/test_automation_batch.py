"""The worker's batch path: runs logged in one insert per batch, and what it must still guarantee — each
event handled once by two racing workers, a record's events in order whichever worker runs them, and one
failing event undoing only its own runs."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from formwork import create_app, db
from formwork.automation.intake import emit_event
from formwork.automation.steps import Executor
from formwork.automation.worker import Worker
from tests import test_automation_support as support
from tests.helpers import Api
from tests.test_automation_support import add_rule

sales = support.sales
worker = support.worker


def _deals(app: Any, sales: Api, n: int) -> list[int]:
    created = sales.ok("POST", "/data/sales/deals", {"records": [
        {"fields": {"name": f"d{i}", "amount": 100 * i}} for i in range(n)]})
    ids = [r["id"] for r in created["records"]]
    Worker(app, worker_id="settle").drain()  # the creations' own events
    return ids


def _queue_updates(app: Any, ids: list[int], per_record: int) -> None:
    """``per_record`` update events for each record, one record's events next to each other."""
    engine = app.extensions["formwork"].engine
    with db.transaction(engine) as conn:
        t = app.extensions["formwork"].catalogs.get(conn).table("sales", "deals")
        for rid in ids:
            for k in range(per_record):
                emit_event(conn, t, rid, "record_updated", payload={
                    "changes": {"counter": {"old": k, "new": k + 1}}, "fields": {"counter": k + 1}})


def _runs(app: Any, rule_id: int) -> list[Any]:
    r = db.automation_runs
    with app.extensions["formwork"].engine.connect() as conn:
        return conn.execute(select(r.c.id, r.c.record_id, r.c.outbox_id, r.c.status)
                            .where(r.c.automation_id == rule_id).order_by(r.c.id)).all()


def test_two_workers_run_each_event_once_and_each_record_in_order(app: Any, sales: Api, database_url: str,
                                                                   tmp_path: Path) -> None:
    ids = _deals(app, sales, 30)
    rule = add_rule(sales, {"key": "seen", "trigger": {"type": "record_updated", "table": "deals"},
                            "condition": {"field": "amount", "op": "gte", "value": 0}, "actions": []})
    _queue_updates(app, ids, 4)
    apps = [create_app({"DATABASE_URL": database_url, "SECRET_KEY": "test-secret", "TESTING": True,
                        "FILES_DIR": str(tmp_path / "files"), "AUTO_MIGRATE": False}) for _ in range(2)]
    workers = [Worker(a, worker_id=f"racer-{i}", batch=3) for i, a in enumerate(apps)]
    errors = support.race(workers, lambda w: w.drain(max_rounds=500), 120)
    for a in apps:
        a.extensions["formwork"].engine.dispose()
    assert not errors, errors
    rows = _runs(app, rule["id"])
    assert len(rows) == 30 * 4
    assert len({r.outbox_id for r in rows}) == 30 * 4  # no event ran twice
    assert {r.status for r in rows} == {"succeeded"}
    by_record: dict[int, list[int]] = defaultdict(list)
    for r in rows:  # run ids grow with the order runs were logged in
        by_record[r.record_id].append(r.outbox_id)
    assert all(events == sorted(events) for events in by_record.values()), by_record
    pending = [e for e in support.outbox_rows(app) if e.status != "done"]
    assert pending == []


def test_a_record_whose_earlier_event_another_worker_holds_waits(app: Any, sales: Api, worker: Worker,
                                                                   backend: str) -> None:
    """Worker A holds the first event of record 1 (row-locked, not committed); worker B skips it and must
    leave record 1's later event for later, while it runs record 2's."""
    if backend != "postgresql":
        pytest.skip("SQLite runs one worker's batch at a time (one writer): nothing can run beside it")
    ids = _deals(app, sales, 2)
    rule = add_rule(sales, {"key": "order", "trigger": {"type": "record_updated", "table": "deals"},
                            "actions": []})
    _queue_updates(app, [ids[0]], 2)
    _queue_updates(app, [ids[1]], 1)
    ob = db.outbox
    engine = app.extensions["formwork"].engine
    with engine.connect() as holder:
        with holder.begin():
            first = holder.execute(select(ob.c.id).where(ob.c.status == "pending").order_by(ob.c.id).limit(1)
                                   .with_for_update()).scalar_one()
            assert worker.engine.process_events(10) == 1  # only record 2's event
            done = {r.record_id for r in _runs(app, rule["id"])}
            assert done == {ids[1]}
    worker.drain()
    rows = _runs(app, rule["id"])
    assert [r.outbox_id for r in rows if r.record_id == ids[0]] == sorted(
        r.outbox_id for r in rows if r.record_id == ids[0])
    assert rows[1].outbox_id == first and len(rows) == 3


def test_a_failing_event_takes_only_its_own_runs_back(app: Any, sales: Api, worker: Worker,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs are logged for the whole batch before any event runs; an event that then fails unexpectedly
    loses its runs again (and is retried), the batch's other events keep theirs."""
    ids = _deals(app, sales, 3)
    rule = add_rule(sales, {"key": "mark", "trigger": {"type": "record_updated", "table": "deals"},
                            "condition": {"field": "amount", "op": "gte", "value": 0},
                            "actions": [{"type": "update_record", "fields": {"status": "seen"}}]})
    bad = ids[1]
    real = Executor.run_list

    def run_list(self: Executor, items: Any, base: Any, resume: Any) -> Any:
        if self.rid == bad:
            raise RuntimeError("boom")  # not a StepFailed: the event itself fails
        return real(self, items, base, resume)

    monkeypatch.setattr(Executor, "run_list", run_list)
    _queue_updates(app, ids, 1)
    assert worker.engine.process_events(10) == 3
    rows = _runs(app, rule["id"])
    assert sorted(r.record_id for r in rows) == [ids[0], ids[2]]
    assert {r.status for r in rows} == {"succeeded"}
    failed = [e for e in support.outbox_rows(app) if e.record_id == bad and e.event == "record_updated"
              and e.status != "done"]
    assert len(failed) == 1 and failed[0].attempts == 1 and "boom" in failed[0].error
    statuses = {r["id"]: r["fields"].get("status") for r in sales.records("sales", "deals")}
    assert statuses == {ids[0]: "seen", ids[1]: None, ids[2]: "seen"}
