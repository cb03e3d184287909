"""Run the benchmark workloads beside their raw baselines; print a Markdown table.

    python -m bench.run --backend sqlite --rows 100000 --workloads W2,W2b,W3,W4,W5,W9
    python -m bench.run --backend postgresql --pg postgresql+psycopg://root@127.0.0.1:5432/test

Each run creates its own database (a SQLite file under bench/out/, or a fresh PostgreSQL database that
is dropped afterwards) so results never depend on earlier runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform as pyplatform
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from flask import Flask
from sqlalchemy import create_engine, func, select, text

from bench import dataset
from bench.harness import HEADER, Result, alternate
from bench.w12_pages import PagesWorkloads
from bench.workloads import MoreWorkloads
from formwork import create_app

OUT = Path(__file__).parent / "out"


@contextmanager
def database(backend: str, pg_url: str) -> Iterator[str]:
    if backend == "sqlite":
        OUT.mkdir(exist_ok=True)
        d = tempfile.mkdtemp(dir=OUT)
        try:
            yield f"sqlite:///{d}/bench.db"
        finally:
            shutil.rmtree(d, ignore_errors=True)
        return
    name = f"fw_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield pg_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as c:
            c.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name})
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


class Bench(MoreWorkloads, PagesWorkloads):
    def __init__(self, app: Flask, info: dict[str, Any], backend: str, rows: int, iterations: int,
                 options: dict[str, Any] | None = None) -> None:
        self.app = app
        self.client = app.test_client()
        self.headers = {"Authorization": f"Bearer {info['token']}"}
        self.info = info
        self.backend = backend
        self.rows = rows
        self.iterations = iterations
        self.options = options or {}
        self.engine = app.extensions["formwork"].engine
        self.cat = app.extensions["formwork"].catalogs.get()
        self.deals = self.cat.table("bench", "deals")
        self.c = {f.key: self.deals.sa.c[f.column_name] for f in self.deals.fields if f.stored}

        @app.get("/__empty")
        def _empty() -> Any:
            return {"ok": True}

        @app.get("/__one_query")
        def _one_query() -> Any:
            with self.engine.begin() as conn:
                conn.exec_driver_sql("SELECT 1").all()
            return {"ok": True}

        @app.get("/__authed")
        def _authed() -> Any:
            """W0: an authenticated request that does nothing (the caller, the catalog, one transaction)."""
            from formwork.web import current_access, unit

            current_access()
            with unit():
                pass
            return {"ok": True}

    def get(self, path: str) -> Any:
        r = self.client.get(path, headers=self.headers)
        assert r.status_code == 200, (r.status_code, r.data[:300])
        return r.get_json()

    def empty(self) -> None:
        self.client.get("/__empty")

    def raw(self, stmt: Any) -> Callable[[], Any]:
        sql = str(stmt.compile(self.engine, compile_kwargs={"literal_binds": True}))

        def run() -> Any:
            with self.engine.connect() as conn:
                return conn.exec_driver_sql(sql).fetchall()

        return run

    def result(self, name: str, target: str, note: str = "") -> Result:
        return Result(name, self.backend, self.rows, target=target, note=note)

    # W0: the per-request floor
    def w0(self) -> list[Result]:
        def authed() -> None:
            r = self.client.get("/__authed", headers=self.headers)
            assert r.status_code == 200, (r.status_code, r.data[:300])

        n = max(self.iterations, 20) if self.iterations > 1 else 1
        r = alternate(self.result("W0 authenticated no-op request (token)", "≤ 2×; p50 ≤ 0.5 ms",
                                  note="baseline = empty Flask endpoint"), authed, self.empty, iterations=n)

        def one_query() -> None:  # the unavoidable part: one statement in one transaction through the pool
            self.client.get("/__one_query")

        r2 = alternate(self.result("W0 (ref) same vs empty Flask + 1 raw query", "—",
                                   note="baseline = empty endpoint running SELECT 1 in a transaction"),
                       authed, one_query, iterations=n)
        return [r, r2]

    # W2: first page, filter + sort
    def page_stmt(self, extra_cols: tuple[Any, ...] = ()) -> Any:
        c = self.c
        t = self.deals.sa
        cols = [t.c.id, t.c.version, t.c.created_at, t.c.updated_at, c["title"], c["stage"], c["amount"],
                c["close_date"], c["owner"], c["company"], *extra_cols]
        # the platform's own ORDER BY (NULLS LAST), so both can read the saved view's index in order
        return (select(*cols).where(t.c.deleted_at.is_(None), c["stage"].in_(["proposal", "negotiation"]))
                .order_by(c["amount"].desc().nulls_last(), t.c.id).limit(51))

    def w2(self) -> list[Result]:
        flt = quote(json.dumps({"field": "stage", "op": "in", "value": ["proposal", "negotiation"]}))
        url = (f"/api/v1/data/bench/deals?filter={flt}&sort=-amount&limit=50"
               "&fields=title,stage,amount,close_date,owner,company")
        core = self.raw(self.page_stmt())

        def baseline() -> None:
            core()
            self.empty()

        r = alternate(self.result("W2 grid page API", "≤ 3×"), lambda: self.get(url), baseline,
                      iterations=self.iterations)
        url_b = url + ",industry,company_size"
        r2 = alternate(self.result("W2b + lookup & rollup", "≤ 1.5× W2"), lambda: self.get(url_b),
                       lambda: self.get(url), iterations=self.iterations)
        html = "/apps/bench/deals/rows?view=open_by_amount"

        def fragment() -> None:
            r = self.client.get(html, headers=self.headers)
            assert r.status_code == 200 and b"<tr" in r.data, (r.status_code, r.data[:300])

        r3 = alternate(self.result("W2 grid rows HTML fragment", "≤ 3×", note="saved view, same filter + sort"),
                       fragment, baseline, iterations=self.iterations)
        return [r, r2, r3]

    def w3(self) -> list[Result]:
        """Deep page by cursor (row ≈ 150k or 3/4 of the table) vs the first page."""
        depth = min(150_000, self.rows * 3 // 4)
        t = self.deals.sa
        c = self.c
        with self.engine.connect() as conn:
            row = conn.execute(select(c["amount"], t.c.id).where(t.c.deleted_at.is_(None))
                               .order_by(c["amount"].desc().nulls_last(), t.c.id).offset(depth).limit(1)).first()
        from formwork.metadata.query import make_cursor
        from formwork.runtime.records import query_signature

        sig = query_signature(self.deals, self.cat.version, [("amount", True)], None, None, None)
        cursor = make_cursor(b"bench-secret", sig, [row[0], row[1]])
        base = "/api/v1/data/bench/deals?sort=-amount&limit=50&fields=title,stage,amount"
        deep = base + "&cursor=" + quote(cursor)
        off_stmt = (select(t.c.id, c["title"], c["stage"], c["amount"]).where(t.c.deleted_at.is_(None))
                    .order_by(c["amount"].desc().nulls_last(), t.c.id).offset(depth).limit(51))
        r = alternate(self.result("W3 deep page by cursor", "≤ 1.5× first page",
                                  note=f"row {depth:,}"), lambda: self.get(deep), lambda: self.get(base),
                      iterations=self.iterations)
        r2 = alternate(self.result("W3 (ref) raw OFFSET vs cursor page", "—", note="baseline = cursor page"),
                       self.raw(off_stmt), lambda: self.get(deep), iterations=max(5, self.iterations // 4))
        return [r, r2]

    def w4(self) -> list[Result]:
        """Capped counts: the platform's capped count vs a raw capped count."""
        from formwork.runtime.records import RecordReader

        t = self.deals.sa
        c = self.c
        cap = 10_000
        raw_stmt = select(func.count()).select_from(
            select(t.c.id).where(t.c.deleted_at.is_(None), c["stage"] == "won").limit(cap).subquery())

        def platform() -> int:
            with self.engine.connect() as conn:
                reader = RecordReader(self.cat, conn)
                conds = reader.where(self.deals, {"field": "stage", "op": "eq", "value": "won"})
                return reader.count(self.deals, conds, cap=cap)

        r = alternate(self.result("W4 capped count", "≤ 1.5×", note=f"cap {cap:,}"), platform, self.raw(raw_stmt),
                      iterations=self.iterations)
        return [r]

    def w5(self) -> list[Result]:
        """Create one record over the API (in-process) vs a Core insert + commit."""
        t = self.deals.sa
        c = self.c
        n = [0]

        cpu: dict[str, list[float]] = {"create": [], "update": []}

        def platform() -> None:
            n[0] += 1
            c0 = time.process_time()
            r = self.client.post("/api/v1/data/bench/deals", headers=self.headers, json={"fields": {
                "title": f"new {n[0]}", "stage": "lead", "amount": 1200.5, "quantity": 3, "company": 1,
                "close_date": "2026-12-01", "owner": self.info["user_id"]}})
            cpu["create"].append(time.process_time() - c0)
            assert r.status_code == 201, r.data[:300]

        now = dt.datetime(2026, 11, 23)
        for i, (cond, fields) in enumerate([({"field": "amount", "op": "gte", "value": 1000}, {"closed": True}),
                                            ({"field": "stage", "op": "eq", "value": "lead"}, {"quantity": 1}),
                                            ({"field": "title", "op": "contains", "value": "new"}, {"notes": "n"})]):
            r = self.client.post("/api/v1/meta/apps/bench/automations", headers=self.headers, json={
                "key": f"w5_{i}", "label": f"W5 {i}", "trigger": {"type": "record_created", "table": "deals"},
                "condition": cond, "actions": [{"type": "update_record", "fields": fields}]})
            assert r.status_code in (201, 409), r.data[:300]

        def baseline() -> None:
            with self.engine.begin() as conn:
                conn.execute(t.insert().values({"version": 1, "created_at": now, "updated_at": now,
                                                c["title"].name: "raw", c["stage"].name: "lead",
                                                c["amount"].name: 1200.5, c["quantity"].name: 3,
                                                c["company"].name: 1, c["close_date"].name: dt.date(2026, 12, 1),
                                                c["owner"].name: self.info["user_id"]}))

        r = alternate(self.result("W5 create one record (API, in-process)", "≤ 5×; p50 ≤ 1.5 ms SQLite, ≤ 3 ms PG",
                                  note="3 automations on (their actions run in the worker, see W7)"),
                      platform, baseline, iterations=self.iterations)
        k = [0]

        def update_platform() -> None:
            k[0] += 1
            rid = 1 + k[0] % 50
            c0 = time.process_time()
            r = self.client.patch(f"/api/v1/data/bench/deals/{rid}", headers=self.headers, json={"fields": {
                "stage": "qualified" if k[0] % 2 else "proposal", "amount": 1000 + k[0], "title": f"changed {k[0]}"}})
            cpu["update"].append(time.process_time() - c0)
            assert r.status_code == 200, r.data[:300]

        def update_baseline() -> None:
            with self.engine.begin() as conn:
                conn.execute(t.update().where(t.c.id == 51 + k[0] % 50).values(
                    {"version": t.c.version + 1, "updated_at": now, c["stage"].name: "lead",
                     c["amount"].name: 1000 + k[0], c["title"].name: f"raw {k[0]}"}))

        r2 = alternate(self.result("W5 update one record (API, in-process)", "p50 ≤ 1.5 ms SQLite, ≤ 3 ms PG",
                                   note="3 fields; history and an outbox event; baseline = Core UPDATE + commit"),
                       update_platform, update_baseline, iterations=self.iterations)
        for res, key in ((r, "create"), (r2, "update")):
            res.note += f"; CPU of this process p50 {statistics.median(cpu[key]) * 1000:.2f} ms"
        return [r, r2]

    def w9(self) -> list[Result]:
        """search= across text fields vs the raw ILIKE on the same columns."""
        t = self.deals.sa
        c = self.c
        pat = "%globex 12%"
        raw_stmt = (select(t.c.id, c["title"]).where(t.c.deleted_at.is_(None), (c["title"].ilike(pat)) |
                                                   (c["email"].ilike(pat)) | (c["notes"].ilike(pat)))
                    .order_by(t.c.id).limit(51))
        url = "/api/v1/data/bench/deals?search=" + quote("Globex 12") + "&limit=50&fields=title"
        r = alternate(self.result("W9 search", "≤ 2×"), lambda: self.get(url), self.raw(raw_stmt),
                      iterations=self.iterations)
        return [r]


# W10, W8 and W1 write (rows, columns), so they run after the read workloads
WORKLOADS = {"W0": "w0", "W2": "w2", "W3": "w3", "W4": "w4", "W6": "w6", "W11": "w11", "W12": "w12", "W9": "w9",
             "W5": "w5", "W10": "w10", "W8": "w8", "W1": "w1"}


def run(backend: str, rows: int, workloads: list[str], iterations: int, pg_url: str,
        options: dict[str, Any] | None = None) -> list[Result]:
    options = dict(options or {})
    with database(backend, pg_url) as url:
        workdir = OUT / f"files_{uuid.uuid4().hex[:8]}"
        workdir.mkdir(parents=True, exist_ok=True)
        options["workdir"] = str(workdir)
        # imports run inside the request (not as a background job) so W1 times the endpoint itself
        app = create_app({"DATABASE_URL": url, "SECRET_KEY": "bench-secret", "TESTING": True,
                          "FILES_DIR": str(workdir), "IMPORT_JOB_ROWS": 10**9, "IMPORT_JOB_BYTES": 10**12})
        engine = app.extensions["formwork"].engine
        info = dataset.define(engine)
        t0 = time.perf_counter()
        dataset.load(engine, deals=rows, companies=min(10_000, max(100, rows // 10)), owners=info["owners"])
        print(f"# loaded {rows:,} deals on {backend} in {time.perf_counter() - t0:.1f}s", flush=True)
        b = Bench(app, info, backend, rows, iterations, options)
        out: list[Result] = []
        try:
            for w in sorted(workloads, key=list(WORKLOADS).index):
                for r in getattr(b, WORKLOADS[w])():
                    print(r.row(), flush=True)
                    out.append(r)
        finally:
            engine.dispose()
            shutil.rmtree(workdir, ignore_errors=True)
        return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--backend", default="both", choices=["sqlite", "postgresql", "both"])
    p.add_argument("--rows", type=int, default=10_000)
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--workloads", default=",".join(WORKLOADS))
    p.add_argument("--import-rows", type=int, default=100_000, help="W1: rows per import")
    p.add_argument("--import-iterations", type=int, default=3, help="W1: timed imports (after the warm-ups)")
    p.add_argument("--import-warmups", type=int, default=1, help="W1: untimed imports first")
    p.add_argument("--ddl-iterations", type=int, default=3, help="W8 type change: timed runs (after 1 warm-up)")
    p.add_argument("--soak-seconds", type=float, default=60, help="W10: duration")
    p.add_argument("--pg", default=os.environ.get("FORMWORK_BENCH_PG", "postgresql+psycopg://root@127.0.0.1:5432/test"))
    a = p.parse_args()
    backends = ["sqlite", "postgresql"] if a.backend == "both" else [a.backend]
    print(f"# {dt.date.today()} · {os.cpu_count()} cores · {pyplatform.python_version()} · rows {a.rows:,}")
    print(HEADER)
    for be in backends:
        run(be, a.rows, a.workloads.split(","), a.iterations, a.pg,
            {"import_rows": a.import_rows, "import_iterations": a.import_iterations, "import_warmups": a.import_warmups,
             "ddl_iterations": a.ddl_iterations, "soak_seconds": a.soak_seconds})


if __name__ == "__main__":
    main()
