"""W0 in CPU time: an authenticated no-op request vs an empty Flask endpoint, robust to a loaded machine.

On a shared machine wall-clock medians of sub-millisecond requests measure the scheduler more than the
code (a request that needs 1 ms of CPU waits for several time slices at load 10 on 2 cores). The CPU time
of this process (``time.process_time``) is not inflated by waiting, so for in-process SQLite it compares
code paths fairly; for PostgreSQL it counts the client side only. Run it against two checkouts to compare:

    PYTHONPATH=. .venv/bin/python -m bench.w0_floor --label after
    PYTHONPATH=/tmp/old-checkout .venv/bin/python /path/to/bench/w0_floor.py --label before
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from typing import Any


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--label", default="")
    p.add_argument("--url", default="", help="database URL (default: a new SQLite file)")
    p.add_argument("--requests", type=int, default=3000)
    a = p.parse_args()
    from formwork import create_app, db
    from formwork.runtime import auth
    from formwork.web import current_access, unit

    url = a.url or f"sqlite:///{tempfile.mkdtemp()}/w0.db"
    app = create_app({"DATABASE_URL": url, "SECRET_KEY": "w0", "TESTING": True})

    @app.get("/__authed")
    def _authed() -> Any:
        current_access()
        with unit():
            pass
        return {"ok": True}

    @app.get("/__empty")
    def _empty() -> Any:
        return {"ok": True}

    with db.transaction(app.extensions["formwork"].engine) as conn:
        uid = auth.create_user(conn, {"username": "w0", "name": "W0", "password": "w0-pass-word-123"}, is_admin=True)
        token = auth.create_token(conn, uid, "w0", None)["token"]
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    cpu_a: list[float] = []
    cpu_e: list[float] = []
    wall_a: list[float] = []
    wall_e: list[float] = []
    for i in range(a.requests):
        w0, c0 = time.perf_counter(), time.process_time()
        assert client.get("/__authed", headers=headers).status_code == 200
        c1, w1 = time.process_time(), time.perf_counter()
        client.get("/__empty")
        c2, w2 = time.process_time(), time.perf_counter()
        if i >= a.requests // 10:  # warm-up
            cpu_a.append(c1 - c0)
            cpu_e.append(c2 - c1)
            wall_a.append(w1 - w0)
            wall_e.append(w2 - w1)
    # process_time ticks coarsely on some kernels: CPU as a mean, wall time as a median
    ma, me = statistics.mean(cpu_a) * 1e3, statistics.mean(cpu_e) * 1e3
    print(f"{a.label} {url.split(':')[0]}: CPU mean authed {ma:.3f} ms, empty {me:.3f} ms, ratio {ma / me:.2f}; "
          f"wall p50 authed {statistics.median(wall_a) * 1e3:.3f} ms, empty {statistics.median(wall_e) * 1e3:.3f} ms")


if __name__ == "__main__":
    main()
