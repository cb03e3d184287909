"""The `formwork worker` process: SIGKILL mid-delivery, restart, SIGTERM, and workers racing."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import select

from formwork import create_app, db
from formwork.automation.worker import Worker
from tests import peers
from tests import test_automation_support as support
from tests.helpers import Api
from tests.peers import SmtpSink, WebhookSink, wait_until
from tests.test_automation_support import add_rule, runs

FORMWORK = str(Path(sys.executable).with_name("formwork"))

# fixtures shared with the other automation test modules
sales = support.sales
smtp_sink = peers.smtp_sink
webhook_sink = peers.webhook_sink


def _start_worker(database_url: str, tmp_path: Path, smtp: SmtpSink, *extra: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, FORMWORK_DATABASE_URL=database_url, FORMWORK_SECRET_KEY="test-secret",
               FORMWORK_INSTANCE=str(tmp_path / "instance"), FORMWORK_SMTP_HOST="127.0.0.1",
               FORMWORK_SMTP_PORT=str(smtp.port), FORMWORK_SMTP_HELO="localhost",
               FORMWORK_WEBHOOK_ALLOW_PRIVATE="1", FORMWORK_AUTOMATION_RETRY_BASE="0.05")
    with open(tmp_path / "worker.log", "ab") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([FORMWORK, "worker", "--poll", "0.05", "--tick", "0.5", *extra], env=env,
                                stdout=subprocess.DEVNULL, stderr=log)


def _wait_started(tmp_path: Path, count: int = 1) -> None:
    """The worker logs "started" once its signal handlers and scheduler are in place."""
    wait_until(lambda: (tmp_path / "worker.log").read_text("utf-8", "replace").count(" started") >= count,
               timeout=20)


def _delivery_states(app: Any) -> list[tuple[str, str]]:
    with app.extensions["formwork"].engine.connect() as conn:
        return [(r.kind, r.status) for r in conn.execute(select(db.deliveries).order_by(db.deliveries.c.id))]


def test_sigkill_mid_delivery_then_restart_sends_nothing_twice_and_loses_nothing(
        app: Any, sales: Api, database_url: str, tmp_path: Path, smtp_sink: SmtpSink,
        webhook_sink: WebhookSink) -> None:
    webhook_sink.set_responses(200, delay=30)  # the peer takes its time to answer: the worker dies waiting
    app.config["WEBHOOK_ALLOW_PRIVATE"] = True  # the sink listens on 127.0.0.1: the operator allows it
    add_rule(sales, {"key": "both", "trigger": {"type": "record_created", "table": "tasks"},
                     "actions": [{"type": "send_email", "to": ["ops@example.com"],
                                  "subject": "任务 {{ record.title }}"},
                                 {"type": "call_webhook", "url": webhook_sink.url, "secret": "k", "timeout": 5,
                                  "payload": {"title": "{{ record.title }}"}}]})
    sales.ok("POST", "/data/sales/tasks", {"fields": {"title": "one"}})
    first = _start_worker(database_url, tmp_path, smtp_sink, "--lease", "0.2")
    try:
        webhook_sink.wait_for(1, timeout=20)
        smtp_sink.wait_for(1)
        wait_until(lambda: ("webhook", "written") in _delivery_states(app), timeout=5)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(5)
    sales.ok("POST", "/data/sales/tasks", {"fields": {"title": "two"}})  # committed while no worker runs
    webhook_sink.set_responses(200, delay=0)
    second = _start_worker(database_url, tmp_path, smtp_sink, "--lease", "0.2")
    _wait_started(tmp_path, 2)
    try:
        wait_until(lambda: len(webhook_sink.requests) >= 2 and len(smtp_sink.messages) >= 2
                   and all(s in ("sent", "unconfirmed") for _k, s in _delivery_states(app)), timeout=20)
        time.sleep(0.3)  # a duplicate, if any, would arrive now
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(10) == 0  # SIGTERM stops cleanly
    mail_keys = Counter(m["X-Formwork-Idempotency-Key"] for m in smtp_sink.messages)
    hook_keys = Counter(r.headers["X-Formwork-Idempotency-Key"] for r in webhook_sink.requests)
    assert len(mail_keys) == 2 and set(mail_keys.values()) == {1}, mail_keys
    assert len(hook_keys) == 2 and set(hook_keys.values()) == {1}, hook_keys
    assert sorted(r.json()["title"] for r in webhook_sink.requests) == ["one", "two"]
    assert webhook_sink.verify("k")
    log = {r["record_id"]: r for r in runs(sales, "both")}
    assert len(log) == 2
    one, two = sorted(log.values(), key=lambda r: r["id"])
    assert [s["status"] for s in one["steps"]] == ["sent", "unconfirmed"]
    assert one["status"] == "succeeded"
    assert [s["status"] for s in two["steps"]] == ["sent", "sent"]


def test_sigterm_stops_an_idle_worker_cleanly(database_url: str, tmp_path: Path, app: Any,
                                              smtp_sink: SmtpSink) -> None:
    proc = _start_worker(database_url, tmp_path, smtp_sink)
    _wait_started(tmp_path)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0


def test_two_workers_race_for_the_same_events_and_firings(app: Any, sales: Api, database_url: str,
                                                          tmp_path: Path) -> None:
    rule = add_rule(sales, {"key": "copy", "trigger": {"type": "record_created", "table": "tasks"},
                            "actions": [{"type": "create_record", "table": "companies",
                                         "fields": {"name": "from {{ record.id }}"}}]})
    sched = add_rule(sales, {"key": "minutely", "trigger": {"type": "schedule", "schedule": {"cron": "* * * * *"}},
                             "actions": [{"type": "create_record", "table": "companies",
                                          "fields": {"name": "tick {{ trigger.due_at }}"}}]})
    n = 120
    sales.ok("POST", "/data/sales/tasks", {"records": [{"fields": {"title": f"t{i}"}} for i in range(n)]})
    apps = [create_app({"DATABASE_URL": database_url, "SECRET_KEY": "test-secret", "TESTING": True,
                        "FILES_DIR": str(tmp_path / "files"), "AUTO_MIGRATE": False}) for _ in range(2)]
    workers = [Worker(a, worker_id=f"racer-{i}", batch=7) for i, a in enumerate(apps)]
    base = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    def ticks(w: Worker) -> None:
        for minute in range(3):
            w.tick(base + dt.timedelta(minutes=minute, seconds=1))
            w.drain()

    errors = support.race(workers, ticks, 60)
    for a in apps:
        a.extensions["formwork"].engine.dispose()
    assert not errors, errors
    names = Counter(c["fields"]["name"] for c in _all(sales, "companies"))
    assert sum(1 for k in names if k.startswith("from ")) == n
    assert set(names.values()) == {1}, [k for k, v in names.items() if v > 1]
    ticks = sorted(k for k in names if k.startswith("tick "))
    assert len(ticks) == 3
    copy_runs = runs_all(sales, "copy")
    assert len(copy_runs) == n and len({r["record_id"] for r in copy_runs}) == n
    assert len(runs(sales, "minutely")) == 3
    assert rule["id"] != sched["id"]


def _all(api: Api, table: str) -> list[dict[str, Any]]:
    return api.records("sales", table, limit=1000)


def runs_all(api: Api, key: str) -> list[dict[str, Any]]:
    return api.ok("GET", f"/meta/apps/sales/automations/{key}/runs?limit=500")["runs"]  # type: ignore[no-any-return]
