"""W7: automation throughput beside its raw baselines, plus commit → action delay.

    python -m bench.w7_automation --backend sqlite --events 10000 --rows 100000 --iterations 3
    python -m bench.w7_automation --backend postgresql --pg postgresql+psycopg://root@127.0.0.1:5432/test

Each iteration queues ``--events`` record_updated events in the outbox (set-up, not timed), then times
the worker draining them (platform) against the raw baseline doing the same work by hand:

* condition only: a rule with a condition and no actions vs. a plain Python loop that reads the events,
  evaluates the same predicate and marks them done;
* condition + update: the rule also updates the record (through RecordService: permissions, validation,
  history, a new outbox row) vs. raw Core UPDATEs of the matching records.

The delay is measured with a worker thread polling like `formwork worker`: records are written one
commit at a time and the delay is run start − outbox row time (both taken from the same clock).

Scaling (``--workers-scaling``, PostgreSQL): the same queue drained by one worker process, then by two
(separate processes, as `formwork worker` runs); the ratio of their throughputs.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, insert, select, update

from bench.harness import HEADER, Result
from bench.run import database
from formwork import create_app, db
from formwork.automation.worker import Worker
from formwork.metadata.service import Actor, MetadataService
from formwork.runtime import auth
from formwork.runtime.permissions import Access
from formwork.runtime.records import RecordService

THRESHOLD = 900


def setup(url: str, rows: int) -> tuple[Any, dict[str, Any]]:
    app = create_app({"DATABASE_URL": url, "SECRET_KEY": "bench", "TESTING": True})
    engine = app.extensions["formwork"].engine
    with db.transaction(engine) as conn:
        uid = auth.create_user(conn, {"username": "bench", "name": "Bench", "password": "bench-password"},
                               is_admin=True)
        svc = MetadataService(conn, Actor(uid, True))
        svc.create_app({"key": "bench", "label": "Bench"})
        svc.create_table("bench", {"key": "deals", "label": "Deals", "fields": [
            {"key": "name", "label": "Name", "type": "text"},
            {"key": "amount", "label": "Amount", "type": "number"},
            {"key": "status", "label": "Status", "type": "text"}]})
    cat = app.extensions["formwork"].catalogs.get()
    t = cat.table("bench", "deals")
    col = {f.key: t.sa.c[f.column_name] for f in t.fields}
    rnd = random.Random(7)
    amounts = [rnd.randrange(1000) for _ in range(rows)]
    now = db.utcnow()
    with db.transaction(engine) as conn:
        conn.execute(insert(t.sa), [{"version": 1, "created_at": now, "updated_at": now, col["name"].name: f"d{i}",
                                     col["amount"].name: amounts[i]} for i in range(rows)])
        ids = [r[0] for r in conn.execute(select(t.sa.c.id).order_by(t.sa.c.id))]
    return app, {"uid": uid, "table": t, "col": col, "ids": ids, "amounts": amounts}


def set_rule(app: Any, info: dict[str, Any], with_update: bool) -> None:
    engine = app.extensions["formwork"].engine
    p = app.extensions["formwork"]
    with db.transaction(engine) as conn:
        cat = p.catalogs.get(conn)
        svc = MetadataService(conn, Actor(info["uid"], True), cat)
        for rule in cat.app("bench").automations:
            svc.delete_doc("automation", "bench", rule["key"])
    with db.transaction(engine) as conn:
        svc = MetadataService(conn, Actor(info["uid"], True), p.catalogs.get(conn))
        actions = [{"type": "update_record", "fields": {"status": "hot"}}] if with_update else []
        svc.create_doc("automation", "bench", {
            "key": "w7", "label": "W7", "trigger": {"type": "record_updated", "table": "deals"},
            "condition": {"field": "amount", "op": "gte", "value": THRESHOLD}, "actions": actions})


def queue_events(app: Any, info: dict[str, Any], n: int) -> None:
    engine = app.extensions["formwork"].engine
    t = info["table"]
    now = db.utcnow()
    with db.transaction(engine) as conn:
        conn.execute(delete(db.outbox))
        conn.execute(delete(db.automation_steps))
        conn.execute(delete(db.automation_runs))
        conn.execute(insert(db.outbox), [{
            "at": now, "app_id": t.app_id, "table_id": t.id, "record_id": info["ids"][i % len(info["ids"])],
            "event": "record_updated", "user_id": info["uid"], "depth": 0, "status": "pending", "attempts": 0,
            "next_attempt_at": now,
            "payload": {"changes": {"amount": {"old": 0, "new": info["amounts"][i % len(info["ids"])]}},
                        "fields": {"amount": info["amounts"][i % len(info["ids"])]}}} for i in range(n)])


def platform_drain(worker: Worker) -> Callable[[], None]:
    def run() -> None:
        while worker.engine.process_events(500):
            pass
    return run


def baseline(app: Any, info: dict[str, Any], with_update: bool) -> Callable[[], None]:
    engine = app.extensions["formwork"].engine
    ob, t, col = db.outbox, info["table"], info["col"]

    def run() -> None:
        with db.transaction(engine) as conn:
            rows = conn.execute(select(ob.c.id, ob.c.record_id, ob.c.payload).where(ob.c.status == "pending")
                                .order_by(ob.c.id)).all()
            hits = [r.record_id for r in rows if (r.payload["fields"].get("amount") or 0) >= THRESHOLD]
            if with_update and hits:
                conn.execute(update(t.sa).where(t.sa.c.id.in_(hits)).values(
                    {col["status"].name: "hot", "version": t.sa.c.version + 1, "updated_at": db.utcnow()}))
            conn.execute(update(ob).where(ob.c.id.in_([r.id for r in rows])).values(status="done"))
    return run


def measure(app: Any, info: dict[str, Any], name: str, backend: str, events: int, iterations: int,
            with_update: bool) -> Result:
    set_rule(app, info, with_update)
    worker = Worker(app, worker_id="bench")
    res = Result(name, backend, len(info["ids"]),
                 target="≤ 3×; ≥ 2,000 events/s" if with_update else "≤ 3×; ≥ 5,000 events/s")
    base, plat = baseline(app, info, with_update), platform_drain(worker)
    for i in range(iterations + 1):
        queue_events(app, info, events)
        t0 = time.perf_counter()
        base()
        t1 = time.perf_counter()
        queue_events(app, info, events)
        t2 = time.perf_counter()
        plat()
        t3 = time.perf_counter()
        if i:  # the first round warms up
            res.baseline.append(t1 - t0)
            res.platform.append(t3 - t2)
    res.note = f"{events:,} events: {events / statistics.median(res.platform):,.0f} events/s platform, " \
               f"{events / statistics.median(res.baseline):,.0f} baseline"
    return res


def delay(app: Any, info: dict[str, Any], n: int) -> str:
    """Commit → action: p50/p95 of run start − event time with a polling worker thread."""
    set_rule(app, info, True)
    engine = app.extensions["formwork"].engine
    with db.transaction(engine) as conn:
        conn.execute(delete(db.outbox))
        conn.execute(delete(db.automation_runs))
    worker = Worker(app, worker_id="bench-delay", poll=0.01, tick=3600)
    thread = threading.Thread(target=worker.serve, daemon=True)
    thread.start()
    p = app.extensions["formwork"]
    t = info["table"]
    try:
        for i in range(n):
            with db.transaction(engine) as conn:
                access = Access.for_user(conn, info["uid"])
                RecordService(p.catalogs.get(conn), conn, access).update(t, info["ids"][i], {"amount": 950})
            time.sleep(0.01)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                if conn.execute(select(db.outbox.c.id).where(db.outbox.c.status == "pending").limit(1)).first() is None:
                    break
            time.sleep(0.05)
    finally:
        worker.stop_event.set()
        thread.join(10)
    with engine.connect() as conn:
        rows = conn.execute(select(db.automation_runs.c.started_at, db.outbox.c.at).join(
            db.outbox, db.outbox.c.id == db.automation_runs.c.outbox_id)).all()
    delays = sorted((r.started_at - r.at).total_seconds() * 1000 for r in rows)
    return (f"commit → action delay over {len(delays)} single-record commits: p50 {Result.pct(delays, 50):.1f} ms, "
            f"p95 {Result.pct(delays, 95):.1f} ms (worker poll 10 ms)")


def _drain_process(url: str, ready: Any, go: Any, out: Any) -> None:
    """One `formwork worker`-like process: its own app and engine, draining the queue when told to."""
    app = create_app({"DATABASE_URL": url, "SECRET_KEY": "bench", "TESTING": True, "AUTO_MIGRATE": False})
    worker = Worker(app, worker_id=f"bench-{mp.current_process().pid}", batch=500)
    worker.engine.process_events(1)  # connect and load the catalog before the clock starts
    ready.set()
    go.wait()
    t0 = time.perf_counter()
    n = 0
    while True:
        done = worker.engine.process_events(500)
        if done == 0:  # the rest is locked by the other worker: wait like `formwork worker` (poll 10 ms)
            with app.extensions["formwork"].engine.connect() as conn:
                if conn.execute(select(db.outbox.c.id).where(db.outbox.c.status == "pending").limit(1)).first() is None:
                    break
            time.sleep(0.01)
            continue
        n += done
    out.put((n, time.perf_counter() - t0))
    app.extensions["formwork"].engine.dispose()


def scaling(app: Any, info: dict[str, Any], url: str, events: int, with_update: bool, rounds: int) -> str:
    """Throughput of one worker process vs two on the same queue (median of ``rounds``)."""
    set_rule(app, info, with_update)
    ctx = mp.get_context("spawn")
    rates: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(rounds):
        for k in (1, 2):
            queue_events(app, info, events)
            ready = [ctx.Event() for _ in range(k)]
            go, out = ctx.Event(), ctx.Queue()
            procs = [ctx.Process(target=_drain_process, args=(url, ready[i], go, out)) for i in range(k)]
            for p in procs:
                p.start()
            for r in ready:
                r.wait(120)
            queue_events(app, info, events)  # the warm-up call may have taken a few: a full queue again
            t0 = time.perf_counter()
            go.set()
            for p in procs:
                p.join(600)
            wall = time.perf_counter() - t0
            counts = [out.get()[0] for _ in procs]
            # the update rule's own changes queue one more event each (no rule matches them): counted too
            assert sum(counts) >= events, counts
            rates[k].append(events / wall)
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    kind = "condition + update" if with_update else "condition only"
    return (f"two workers ({kind}, {events:,} events, median of {rounds}): one process {one:,.0f} events/s, "
            f"two processes {two:,.0f} events/s = {two / one:.2f}× (target ≥ 1.7×)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("--pg", default="postgresql+psycopg://root@127.0.0.1:5432/test")
    ap.add_argument("--events", type=int, default=10_000)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--delay-samples", type=int, default=100)
    ap.add_argument("--rows", type=int, default=0, help="records in the table (default: one per event)")
    ap.add_argument("--workers-scaling", type=int, default=0, metavar="ROUNDS",
                    help="also compare one worker process with two, ROUNDS times (0: skip)")
    ap.add_argument("--only-scaling", action="store_true", help="skip the alternated runs and the delay")
    ap.add_argument("--scaling-kinds", default="condition,update", help="which rules the scaling runs use")
    args = ap.parse_args()
    notes: list[str] = []
    with database(args.backend, args.pg) as url:
        app, info = setup(url, args.rows or args.events)
        try:
            rows = [] if args.only_scaling else [
                measure(app, info, "W7 condition only", args.backend, args.events, args.iterations, False),
                measure(app, info, "W7 condition + update", args.backend, args.events, args.iterations, True)]
            if not args.only_scaling:
                notes.append(delay(app, info, args.delay_samples))
            if args.workers_scaling:
                kinds = args.scaling_kinds.split(",")
                for with_update in [k == "update" for k in ("condition", "update") if k in kinds]:
                    notes.append(scaling(app, info, url, args.events, with_update, args.workers_scaling))
                    print(notes[-1], flush=True)
        finally:
            app.extensions["formwork"].engine.dispose()
    print(HEADER)
    for r in rows:
        print(r.row())
    print()
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
