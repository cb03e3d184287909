"""W1 in CPU time: the import endpoint vs the raw loader on the same CSV, robust to a loaded machine.

Like ``bench.w0_floor`` and ``bench.w5_cpu``: this process's CPU time (SQLite: all of the work; PostgreSQL:
the client side only) compares code paths fairly where wall time measures the scheduler's queue. Same
dataset, file and raw loader as ``bench.run``'s W1, on a 5,000-row bench table. Compare two checkouts:

    PYTHONPATH=. .venv/bin/python -m bench.w1_cpu --rows 20000 --label after
    PYTHONPATH=/tmp/old-checkout .venv/bin/python /path/to/bench/w1_cpu.py --rows 20000 --label before
"""

from __future__ import annotations

import argparse
import io
import shutil
import time
import uuid

from bench import dataset
from bench import run as bench_run
from formwork import create_app


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--label", default="")
    p.add_argument("--backend", default="sqlite", choices=["sqlite", "postgresql"])
    p.add_argument("--pg", default="postgresql+psycopg://root@127.0.0.1:5432/test")
    p.add_argument("--rows", type=int, default=20_000, help="rows per import")
    p.add_argument("--runs", type=int, default=2)
    a = p.parse_args()
    with bench_run.database(a.backend, a.pg) as url:
        work = bench_run.OUT / f"w1cpu_{uuid.uuid4().hex[:8]}"
        work.mkdir(parents=True, exist_ok=True)
        app = create_app({"DATABASE_URL": url, "SECRET_KEY": "bench-secret", "TESTING": True,
                          "FILES_DIR": str(work), "IMPORT_JOB_ROWS": 10**9, "IMPORT_JOB_BYTES": 10**12})
        engine = app.extensions["formwork"].engine
        info = dataset.define(engine)
        dataset.load(engine, deals=5000, companies=1000, owners=info["owners"])
        b = bench_run.Bench(app, info, a.backend, 5000, 1, {"workdir": str(work)})
        data = b._csv(a.rows, 11)
        (work / "w1.csv").write_bytes(data)
        for run in range(a.runs):
            c0 = time.process_time()
            assert b._raw_load(work / "w1.csv") == a.rows
            c1 = time.process_time()
            r = b.client.post("/api/v1/data/bench/deals/import", headers=b.headers,
                              data={"file": (io.BytesIO(data), "deals.csv")}, content_type="multipart/form-data")
            c2 = time.process_time()
            assert r.status_code == 200 and r.get_json()["inserted"] == a.rows, r.data[:300]
            raw, plat = a.rows / (c1 - c0), a.rows / (c2 - c1)
            print(f"{a.label} {a.backend} run {run + 1}: platform {plat:,.0f} rows/cpu-s, raw loader {raw:,.0f} "
                  f"rows/cpu-s, ratio {raw / plat:.2f}")
        engine.dispose()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
