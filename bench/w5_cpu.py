"""W5 in CPU time: one record created / updated over the API vs a Core insert / update + commit.

Like ``bench.w0_floor``: on a loaded machine the wall time of a few-millisecond request measures the
scheduler, while this process's CPU time compares code paths fairly (SQLite: all of the work; PostgreSQL:
the client side only). Same table, fields and three record_created automations as ``bench.run``'s W5.
Run it against two checkouts to compare:

    PYTHONPATH=. .venv/bin/python -m bench.w5_cpu --label after
    PYTHONPATH=/tmp/old-checkout .venv/bin/python /path/to/bench/w5_cpu.py --label before
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--label", default="")
    p.add_argument("--url", default="", help="database URL (default: a new SQLite file)")
    p.add_argument("--requests", type=int, default=1000)
    a = p.parse_args()
    from bench import dataset
    from formwork import create_app

    url = a.url or f"sqlite:///{tempfile.mkdtemp()}/w5.db"
    app = create_app({"DATABASE_URL": url, "SECRET_KEY": "w5", "TESTING": True})
    engine = app.extensions["formwork"].engine
    info = dataset.define(engine)
    dataset.load(engine, deals=2000, companies=200, owners=info["owners"])
    cat = app.extensions["formwork"].catalogs.get()
    deals = cat.table("bench", "deals")
    t = deals.sa
    c = {f.key: t.c[f.column_name] for f in deals.fields if f.stored}
    client = app.test_client()
    headers = {"Authorization": f"Bearer {info['token']}"}
    for i, (cond, fields) in enumerate([({"field": "amount", "op": "gte", "value": 1000}, {"closed": True}),
                                        ({"field": "stage", "op": "eq", "value": "lead"}, {"quantity": 1}),
                                        ({"field": "title", "op": "contains", "value": "new"}, {"notes": "n"})]):
        r = client.post("/api/v1/meta/apps/bench/automations", headers=headers, json={
            "key": f"w5_{i}", "label": f"W5 {i}", "trigger": {"type": "record_created", "table": "deals"},
            "condition": cond, "actions": [{"type": "update_record", "fields": fields}]})
        assert r.status_code == 201, r.data[:300]
    now = dt.datetime(2026, 11, 23)

    def create(k: int) -> None:
        r = client.post("/api/v1/data/bench/deals", headers=headers, json={"fields": {
            "title": f"new {k}", "stage": "lead", "amount": 1200.5, "quantity": 3, "company": 1,
            "close_date": "2026-12-01", "owner": info["user_id"]}})
        assert r.status_code == 201, r.data[:300]

    def core_create(k: int) -> None:
        with engine.begin() as conn:
            conn.execute(t.insert().values({"version": 1, "created_at": now, "updated_at": now,
                                            c["title"].name: "raw", c["stage"].name: "lead",
                                            c["amount"].name: 1200.5, c["quantity"].name: 3, c["company"].name: 1,
                                            c["close_date"].name: dt.date(2026, 12, 1),
                                            c["owner"].name: info["user_id"]}))

    def update(k: int) -> None:
        r = client.patch(f"/api/v1/data/bench/deals/{1 + k % 50}", headers=headers, json={"fields": {
            "stage": "qualified" if k % 2 else "proposal", "amount": 1000 + k, "title": f"changed {k}"}})
        assert r.status_code == 200, r.data[:300]

    def core_update(k: int) -> None:
        with engine.begin() as conn:
            conn.execute(t.update().where(t.c.id == 51 + k % 50).values(
                {"version": t.c.version + 1, "updated_at": now, c["stage"].name: "lead",
                 c["amount"].name: 1000 + k, c["title"].name: f"raw {k}"}))

    def measure(fn: Callable[[int], Any], base: Callable[[int], Any]) -> str:
        cpu_p: list[float] = []
        cpu_b: list[float] = []
        wall_p: list[float] = []
        for k in range(a.requests):
            w0, c0 = time.perf_counter(), time.process_time()
            fn(k)
            c1, w1 = time.process_time(), time.perf_counter()
            base(k)
            c2 = time.process_time()
            if k >= a.requests // 10:  # warm-up
                cpu_p.append(c1 - c0)
                cpu_b.append(c2 - c1)
                wall_p.append(w1 - w0)
        mp, mb = statistics.mean(cpu_p) * 1e3, statistics.mean(cpu_b) * 1e3
        return (f"CPU mean {mp:.3f} ms vs Core {mb:.3f} ms (ratio {mp / mb:.2f}); "
                f"wall p50 {statistics.median(wall_p) * 1e3:.2f} ms")

    kind = url.split(":")[0].split("+")[0]
    print(f"{a.label} {kind} create: {measure(create, core_create)}")
    print(f"{a.label} {kind} update: {measure(update, core_update)}")
    engine.dispose()


if __name__ == "__main__":
    main()
