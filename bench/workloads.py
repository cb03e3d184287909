"""Workloads W1 (CSV import), W6 (dashboard aggregations), W8 (schema changes), W10 (soak) and W11 (a dashboard).

They extend :class:`bench.run.Bench`; each times the platform beside a raw baseline in the same process run.
W1 and W8 change the dataset (100k rows more, extra columns), so bench.run runs them last.
"""

from __future__ import annotations

import csv
import datetime as dt
import http.client
import io
import json
import logging
import random
import resource
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Integer, Text, cast, column, func, insert, select, table, update

from bench import dataset
from bench.harness import Result, alternate
from formwork import db


def rss_mb() -> float:
    """Resident memory of this process now (Linux /proc), in MB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_note(cpu: dict[str, list[float]], n: int, warmups: int) -> str:
    """This process's CPU time per run (robust to a loaded machine; on PostgreSQL the server's is left out)."""
    p, b = statistics.median(cpu["platform"][warmups:]), statistics.median(cpu["baseline"][warmups:])
    return (f"CPU of this process: platform {n / p:,.0f} rows/cpu-s, baseline {n / b:,.0f} rows/cpu-s, "
            f"ratio {p / b:.2f}")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class MoreWorkloads:
    """Mixed into Bench (bench.run): uses its app, client, headers, engine, deals table and result()."""

    app: Any
    client: Any
    headers: dict[str, str]
    info: dict[str, Any]
    backend: str
    rows: int
    iterations: int
    engine: Any
    cat: Any
    deals: Any
    c: dict[str, Any]
    options: dict[str, Any]

    def result(self, name: str, target: str, note: str = "") -> Result: ...
    def get(self, path: str) -> Any: ...
    def empty(self) -> None: ...
    def raw(self, stmt: Any) -> Callable[[], Any]: ...

    # --- W1: CSV import through the real endpoint vs executemany (SQLite) / COPY (PG) ----------------------
    HEADER = ["title", "email", "notes", "stage", "tags", "quantity", "amount", "close_date", "touched_at",
              "closed", "owner", "company"]

    def _csv(self, n: int, seed: int) -> bytes:
        rnd = random.Random(seed)
        comp = self.cat.table("bench", "companies")
        name_col = comp.sa.c[comp.fields_by_key["name"].column_name]
        with self.engine.connect() as conn:
            names = [r[0] for r in conn.execute(select(name_col).order_by(comp.sa.c.id).limit(2000))]
        owners = ["bench", *[f"rep{i}" for i in range(8)]]
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(self.HEADER)
        base = dt.date(2025, 1, 1)
        for j in range(n):
            w.writerow([f"{rnd.choice(dataset.WORDS)} import {j}", f"imp{j}@example.com",
                        "导入的备注" if j % 4 == 0 else "imported note", rnd.choice(dataset.STAGES),
                        ", ".join(rnd.sample(dataset.TAGS, rnd.randint(0, 2))), rnd.randint(1, 500),
                        f"{rnd.uniform(100, 1_000_000):.2f}",
                        (base + dt.timedelta(days=rnd.randrange(730))).isoformat(),
                        f"2026-10-{rnd.randint(1, 28):02d}T{rnd.randint(0, 23):02d}:15:00Z",
                        "true" if rnd.random() < 0.3 else "false", rnd.choice(owners), rnd.choice(names)])
        return buf.getvalue().encode()

    def _raw_load(self, path: Path) -> int:
        """The hand-written loader: csv module → typed tuples → Core executemany (SQLite) or COPY (PG)."""
        t = self.deals.sa
        col = {k: t.c[self.deals.fields_by_key[k].column_name].name for k in self.HEADER}
        comp = self.cat.table("bench", "companies")
        name_col = comp.sa.c[comp.fields_by_key["name"].column_name]
        now = db.utcnow()
        n = 0
        with db.transaction(self.engine) as conn:
            users = dict(conn.execute(select(db.users.c.username, db.users.c.id)).all())
            companies = dict(conn.execute(select(name_col, comp.sa.c.id)).all())
            names = ["version", "created_at", "updated_at", "created_by", "updated_by", *col.values()]

            def rows() -> Any:
                with open(path, newline="", encoding="utf-8") as fh:
                    r = csv.reader(fh)
                    next(r)
                    for (title, email, notes, stage, tags, qty, amount, close, touched, closed, owner,
                         company) in r:
                        yield (1, now, now, users["bench"], users["bench"], title, email, notes, stage,
                               [x.strip() for x in tags.split(",") if x.strip()] or None, int(qty), float(amount),
                               dt.date.fromisoformat(close), dt.datetime.fromisoformat(touched[:-1]),
                               closed == "true", users[owner], companies[company])

            if self.backend == "postgresql":
                raw = conn.connection.driver_connection
                cols = ", ".join(f'"{c}"' for c in names)
                with raw.cursor() as cur, cur.copy(f'COPY "{t.name}" ({cols}) FROM STDIN') as cp:
                    for row in rows():
                        cp.write_row(row[:9] + (json.dumps(row[9]) if row[9] is not None else None,) + row[10:])
                        n += 1
            else:
                batch: list[dict[str, Any]] = []
                for row in rows():
                    batch.append(dict(zip(names, row, strict=True)))
                    if len(batch) >= 5000:
                        conn.execute(insert(t), batch)
                        n += len(batch)
                        batch = []
                if batch:
                    conn.execute(insert(t), batch)
                    n += len(batch)
        return n

    def w1(self) -> list[Result]:
        n = int(self.options.get("import_rows") or 100_000)
        iterations = int(self.options.get("import_iterations") or 3)
        warmups = int(self.options.get("import_warmups", 1))
        path = Path(self.options["workdir"]) / "w1.csv"
        path.write_bytes(self._csv(n, 11))
        data = path.read_bytes()
        growth: list[float] = []

        cpu: dict[str, list[float]] = {"platform": [], "baseline": []}

        def platform() -> None:
            before = rss_mb()
            c0 = time.process_time()
            r = self.client.post("/api/v1/data/bench/deals/import", headers=self.headers,
                                 data={"file": (io.BytesIO(data), "deals.csv")}, content_type="multipart/form-data")
            assert r.status_code == 200, r.data[:500]
            body = r.get_json()
            assert body["inserted"] == n and not body["errors"], str(body)[:500]
            cpu["platform"].append(time.process_time() - c0)
            growth.append(rss_mb() - before)

        def baseline() -> None:
            c0 = time.process_time()
            assert self._raw_load(path) == n
            cpu["baseline"].append(time.process_time() - c0)

        peak0 = peak_rss_mb()
        res = alternate(self.result("W1 CSV import (API, in-process)", "≤ 4×; ≥ 20k rows/s",
                                    note=f"{n:,} rows per run"), platform, baseline, iterations=iterations,
                        warmup=warmups)
        p50, b50 = statistics.median(res.platform), statistics.median(res.baseline)
        res.note = (f"{n:,} rows/run, {iterations} runs after {warmups} warm-up: platform {n / p50:,.0f} rows/s, "
                    f"baseline {n / b50:,.0f} rows/s; RSS growth per import max {max(growth):.0f} MB, "
                    f"peak RSS +{peak_rss_mb() - peak0:.0f} MB; {cpu_note(cpu, n, warmups)}")
        return [res]

    # --- W6: dashboard aggregations vs the same GROUP BY in raw SQL -------------------------------------
    def w6(self) -> list[Result]:
        t = self.deals.sa
        c = self.c
        live = t.c.deleted_at.is_(None)
        if self.backend == "postgresql":
            month = func.to_char(c["close_date"], "YYYY-MM")
        else:
            month = func.strftime("%Y-%m", c["close_date"])
        cases = [
            ("W6 count by select", "group_by=stage&metrics=count",
             select(c["stage"], func.count()).where(live).group_by(c["stage"])),
            ("W6 sum by owner", "group_by=owner&metrics=sum:amount",
             select(c["owner"], db.users.c.name, func.sum(c["amount"])).outerjoin(db.users, db.users.c.id == c["owner"])
             .where(live).group_by(c["owner"], db.users.c.name)),
            ("W6 count by month", "group_by=" + quote("close_date:month") + "&metrics=count",
             select(month, func.count()).where(live).group_by(month)),
        ]
        out = []
        for name, qs, stmt in cases:
            url = f"/api/v1/data/bench/deals/aggregate?{qs}"
            core = self.raw(stmt)

            def baseline(core: Callable[[], Any] = core) -> None:
                core()
                self.empty()

            def platform(url: str = url) -> None:
                assert self.get(url)["groups"]

            out.append(alternate(self.result(name, "≤ 1.2×", note="baseline = raw GROUP BY + empty Flask request"),
                                 platform, baseline, iterations=self.iterations))
        return out

    # --- W8: add a field; change a number field to text --------------------------------------------------
    def _ddl(self, sql: str) -> None:
        with db.transaction(self.engine) as conn:
            conn.exec_driver_sql(sql)

    def w8(self) -> list[Result]:
        t = self.deals.sa
        qi = self.engine.dialect.identifier_preparer.quote
        n = [0]

        def add_platform() -> None:
            n[0] += 1
            r = self.client.post("/api/v1/meta/apps/bench/tables/deals/fields", headers=self.headers,
                                 json={"key": f"extra_{n[0]}", "label": f"Extra {n[0]}", "type": "text"})
            assert r.status_code == 201, r.data[:300]

        def add_baseline() -> None:
            self._ddl(f"ALTER TABLE {qi(t.name)} ADD COLUMN {qi(f'raw_extra_{n[0]}')} VARCHAR(1000)")

        from formwork.metadata.schema_editor import wait_for_search_indexes

        # alternated like harness.alternate, but the search index the platform builds after its commit
        # (PostgreSQL, in the background) is waited for outside both timings, so it never delays the
        # next raw ALTER; how long it took after the response is reported beside
        add = self.result("W8 add field", "≤ raw DDL + 20 ms")
        after: list[float] = []
        for i in range(self.iterations + 5):
            t0 = time.perf_counter()
            add_baseline()
            t1 = time.perf_counter()
            add_platform()
            t2 = time.perf_counter()
            wait_for_search_indexes()
            t3 = time.perf_counter()
            if i >= 5:
                add.baseline.append(t1 - t0)
                add.platform.append(t2 - t1)
                after.append(t3 - t2)
        diff = (statistics.median(add.platform) - statistics.median(add.baseline)) * 1000
        add.note = (f"platform − raw = {diff:.1f} ms (incl. HTTP, validation, catalog reload); search index "
                    f"after the response: p50 {statistics.median(after) * 1000:.1f} ms (background)")

        change = self.result("W8 change type number→text", "≤ 1.5× raw",
                             note="ALTER … TYPE … USING" if self.backend == "postgresql" else "add/UPDATE/drop column")
        runs = int(self.options.get("ddl_iterations") or 3)
        change_after: list[float] = []
        qty = self.c["quantity"].name
        for i in range(runs + 1):
            key = f"num_{i}"
            with db.transaction(self.engine) as conn:  # set-up, not timed
                from formwork.metadata.service import Actor, MetadataService

                svc = MetadataService(conn, Actor(self.info["user_id"], True))
                svc.create_field("bench", "deals", {"key": key, "label": key, "type": "number"})
                col = svc.catalog.table("bench", "deals").fields_by_key[key].column_name
                conn.execute(update(table(t.name, column(col), column(qty))).values({col: column(qty)}))
                conn.exec_driver_sql(f"ALTER TABLE {qi(t.name)} ADD COLUMN {qi(f'raw_num_{i}')} NUMERIC(20, 4)")
                conn.execute(update(table(t.name, column(f"raw_num_{i}"), column(qty)))
                             .values({f"raw_num_{i}": column(qty)}))
            raw = qi(f"raw_num_{i}")
            t0 = time.perf_counter()
            if self.backend == "postgresql":
                self._ddl(f"ALTER TABLE {qi(t.name)} ALTER COLUMN {raw} TYPE VARCHAR(1000) USING {raw}::text")
            else:
                with db.transaction(self.engine) as conn:
                    tmp = qi(f"raw_txt_{i}")
                    conn.exec_driver_sql(f"ALTER TABLE {qi(t.name)} ADD COLUMN {tmp} VARCHAR(1000)")
                    conn.execute(update(table(t.name, column(f"raw_txt_{i}"), column(f"raw_num_{i}")))
                                 .values({f"raw_txt_{i}": cast(column(f"raw_num_{i}"), Text())}))
                    conn.exec_driver_sql(f"ALTER TABLE {qi(t.name)} DROP COLUMN {raw}")
            t1 = time.perf_counter()
            r = self.client.patch(f"/api/v1/meta/apps/bench/tables/deals/fields/{key}", headers=self.headers,
                                  json={"type": "text"})
            t2 = time.perf_counter()
            assert r.status_code == 200, r.data[:300]
            wait_for_search_indexes()  # the converted text field's index, built after the response
            if i:
                change_after.append(time.perf_counter() - t2)
            if i:
                change.baseline.append(t1 - t0)
                change.platform.append(t2 - t1)
        change.note += (f"; {runs} runs after 1 warm-up; search index after the response: p50 "
                        f"{statistics.median(change_after) * 1000:.0f} ms (background)")
        return [add, change]

    # --- W10: soak against a real HTTP server --------------------------------------------------------------
    def w10(self) -> list[Result]:
        from werkzeug.serving import make_server

        seconds = float(self.options.get("soak_seconds") or 60)
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access log line per request
        srv = make_server("127.0.0.1", 0, self.app, threaded=True)
        port = srv.server_port
        server = threading.Thread(target=srv.serve_forever, daemon=True)
        server.start()
        flt = quote(json.dumps({"field": "stage", "op": "in", "value": ["proposal", "negotiation"]}))
        read_url = (f"/api/v1/data/bench/deals?filter={flt}&sort=-amount&limit=50"
                    "&fields=title,stage,amount,owner,company")
        reads: list[float] = []
        writes: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()
        stop = time.monotonic() + seconds
        rss0 = rss_mb()

        def client(seed: int) -> None:
            rnd = random.Random(seed)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            k = 0
            while time.monotonic() < stop:
                k += 1
                write = rnd.random() < 0.2
                t0 = time.perf_counter()
                try:
                    if write:
                        body = json.dumps({"fields": {"title": f"soak {seed}-{k}", "stage": "lead", "amount": 10.5,
                                                      "company": rnd.randint(1, 100),
                                                      "owner": self.info["user_id"]}})
                        conn.request("POST", "/api/v1/data/bench/deals", body=body,
                                     headers={**self.headers, "Content-Type": "application/json"})
                    else:
                        conn.request("GET", read_url, headers=self.headers)
                    resp = conn.getresponse()
                    payload = resp.read()
                    ok = resp.status == (201 if write else 200)
                    if resp.getheader("Connection", "").lower() == "close" or resp.version == 10:
                        conn.close()
                        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                except (OSError, http.client.HTTPException) as e:
                    ok, payload = False, str(e).encode()
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                dt_ = time.perf_counter() - t0
                with lock:
                    (writes if write else reads).append(dt_)
                    if not ok:
                        errors.append(payload[:200].decode(errors="replace"))
            conn.close()

        threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        srv.shutdown()
        server.join(10)
        rss1 = rss_mb()
        res = self.result("W10 soak (4 clients, 80/20)", "p95 read ≤ 50, write ≤ 100 ms; 0 errors",
                          note=(f"{seconds:.0f} s: {len(reads):,} reads, {len(writes):,} writes, "
                                f"{(len(reads) + len(writes)) / seconds:,.0f} req/s; "
                                f"errors {len(errors)}{' (' + errors[0][:80] + ')' if errors else ''}; "
                                f"RSS {rss0:.0f} → {rss1:.0f} MB; columns: platform = reads, baseline = writes"))
        res.platform, res.baseline = reads, writes
        return [res]

    # --- W11: a dashboard of eight widgets with a date filter vs the same eight raw GROUP BYs ----------
    W11_FROM, W11_TO = "2025-04-01", "2025-12-31"

    def w11(self) -> list[Result]:
        """The whole dashboard (one API request, eight widgets, each one GROUP BY under the period filter)
        beside the eight hand-written GROUP BYs with the same WHERE, run one after another, plus one empty
        Flask request (the HTTP plumbing is not counted against the platform, as in W6)."""
        widgets = [
            {"key": "n", "type": "kpi", "table": "deals"},
            {"key": "total", "type": "kpi", "table": "deals", "metrics": ["sum:amount"], "format": "currency"},
            {"key": "by_stage", "type": "bar", "table": "deals", "group_by": ["stage"]},
            {"key": "by_owner", "type": "bar", "table": "deals", "group_by": ["owner"], "metrics": ["sum:amount"]},
            {"key": "by_month", "type": "line", "table": "deals", "group_by": ["close_date:month"]},
            {"key": "closed", "type": "pie", "table": "deals", "group_by": ["closed"]},
            {"key": "quarter_stage", "type": "stacked_bar", "table": "deals",
             "group_by": ["close_date:quarter", "stage"], "metrics": ["sum:amount"]},
            {"key": "stage_table", "type": "table", "table": "deals", "group_by": ["stage"],
             "metrics": ["count", "avg:quantity"], "sort": "-count"},
        ]
        r = self.client.post("/api/v1/meta/apps/bench/dashboards", headers=self.headers, json={
            "key": "w11", "label": "W11", "widgets": widgets,
            "filters": [{"key": "period", "type": "period", "field": "close_date"}]})
        assert r.status_code in (201, 409), r.data[:300]
        url = f"/api/v1/meta/apps/bench/dashboards/w11/data?period=custom&from={self.W11_FROM}&to={self.W11_TO}"

        t = self.deals.sa
        c = self.c
        lo, hi = dt.date.fromisoformat(self.W11_FROM), dt.date.fromisoformat(self.W11_TO)
        where = (t.c.deleted_at.is_(None), c["close_date"] >= lo, c["close_date"] <= hi)
        if self.backend == "postgresql":
            month = func.to_char(c["close_date"], "YYYY-MM")
            quarter = func.to_char(c["close_date"], 'YYYY-"Q"Q')
        else:
            month = func.strftime("%Y-%m", c["close_date"])
            quarter = func.strftime("%Y", c["close_date"]) + "-Q" + cast(
                (cast(func.strftime("%m", c["close_date"]), Integer) + 2) / 3, Text())
        stmts = [
            select(func.count()).where(*where),
            select(func.coalesce(func.sum(c["amount"]), 0)).where(*where),
            select(c["stage"], func.count()).where(*where).group_by(c["stage"]),
            select(c["owner"], db.users.c.name, func.sum(c["amount"]))
            .outerjoin(db.users, db.users.c.id == c["owner"]).where(*where).group_by(c["owner"], db.users.c.name),
            select(month, func.count()).where(*where).group_by(month),
            select(func.coalesce(c["closed"], False), func.count()).where(*where)
            .group_by(func.coalesce(c["closed"], False)),
            select(quarter, c["stage"], func.sum(c["amount"])).where(*where).group_by(quarter, c["stage"]),
            select(c["stage"], func.count(), func.avg(c["quantity"])).where(*where).group_by(c["stage"])
            .order_by(func.count().desc()),
        ]
        sqls = [str(s.compile(self.engine, compile_kwargs={"literal_binds": True})) for s in stmts]
        with self.engine.connect() as conn:  # the same numbers, or the comparison means nothing
            expected = conn.exec_driver_sql(str(stmts[0].compile(
                self.engine, compile_kwargs={"literal_binds": True}))).scalar()
        got = {w["key"]: w for w in self.get(url)["widgets"]}
        assert got["n"]["value"] == expected, (got["n"], expected)
        assert all("error" not in w for w in got.values()), got

        def baseline() -> None:  # one connection for the eight, as the platform's request has
            with self.engine.connect() as conn:
                for sql in sqls:
                    conn.exec_driver_sql(sql).fetchall()
            self.empty()

        def platform() -> None:
            assert len(self.get(url)["widgets"]) == 8

        res = alternate(self.result("W11 dashboard, 8 widgets, date filter", "≤ 1.3×",
                                    note=f"{expected:,} rows in the period; baseline = 8 raw GROUP BYs + empty "
                                         "Flask request"), platform, baseline, iterations=self.iterations)
        return [res]
