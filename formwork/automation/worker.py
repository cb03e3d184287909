"""`formwork worker`: the process that runs automations (never the web processes).

One loop claims outbox events, resumes parked runs and sends deliveries; an APScheduler
BackgroundScheduler in the same process ticks schedule and date_reached rules.  Several workers may
run against one PostgreSQL database: row locks (SKIP LOCKED), delivery leases and unique firing keys
keep every event, firing and delivery to one worker.  SIGTERM finishes the current batch, releases
leases and stops the scheduler.  While it serves, a heartbeat thread keeps its ``fw_worker`` row fresh
(formwork.automation.heartbeat), so the health endpoint and the admins can tell whether automations run.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import socket
import threading
import uuid
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from flask import Flask

from formwork.automation.actions import register_actions
from formwork.automation.engine import AutomationEngine
from formwork.automation.heartbeat import BEAT_SECONDS, Heartbeat
from formwork.automation.settings import Settings
from formwork.metadata.schema_editor import ensure_search_indexes

log = logging.getLogger("formwork.worker")


class Worker:
    def __init__(self, app: Flask, *, worker_id: str | None = None, poll: float = 0.5, tick: float = 15.0,
                 batch: int = 100, settings: Settings | None = None, heartbeat: float = BEAT_SECONDS) -> None:
        register_actions()  # create_app() did already; a worker built around another app still needs them
        p = app.extensions["formwork"]
        self.worker_id = worker_id or f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.settings = settings or Settings.from_config(app.config)
        self.engine = AutomationEngine(p.engine, p.catalogs, self.settings, self.worker_id)
        self.heartbeat = Heartbeat(p.engine, self.worker_id, heartbeat)
        self.poll = poll
        self.tick_seconds = tick
        self.batch = batch
        self.stop_event = threading.Event()

    def run_pending(self) -> int:
        """One round: events, parked runs, deliveries; returns how much work was done."""
        n = self.engine.process_events(self.batch)
        n += self.engine.resume_runs()
        n += self.engine.process_deliveries(stop=self.stop_event.is_set)
        return n

    def drain(self, max_rounds: int = 200) -> None:
        """Work until nothing is left (tests and one-off runs)."""
        for _ in range(max_rounds):
            if self.run_pending() == 0:
                return

    def tick(self, now: dt.datetime | None = None) -> int:
        return self.engine.tick(now)

    def _safe_tick(self) -> None:
        try:
            self.engine.tick()
        except Exception:  # noqa: BLE001 - the scheduler thread must survive a bad tick
            log.exception("schedule tick failed")
        try:  # search indexes whose background build never happened (a web process stopped first)
            ensure_search_indexes(self.engine.engine, self.engine.catalogs.get())
        except Exception:  # noqa: BLE001 - search works without them; next tick tries again
            log.exception("search index check failed")

    def serve(self) -> None:
        """Run until ``stop_event`` is set (by SIGTERM/SIGINT in the command)."""
        scheduler = BackgroundScheduler(timezone=dt.UTC)
        scheduler.add_job(self._safe_tick, IntervalTrigger(seconds=self.tick_seconds, timezone=dt.UTC),
                          id="formwork-tick", max_instances=1, coalesce=True,
                          next_run_time=dt.datetime.now(dt.UTC))
        scheduler.start()
        self.heartbeat.start()
        log.info("worker %s started", self.worker_id)
        try:
            while not self.stop_event.is_set():
                try:
                    done = self.run_pending()
                except Exception:  # noqa: BLE001 - e.g. the database restarting: wait and retry
                    log.exception("worker round failed")
                    done = 0
                if done == 0:
                    self.stop_event.wait(self.poll)
        finally:
            scheduler.shutdown(wait=True)
            self.engine.release_leases()
            self.heartbeat.stop()
            log.info("worker %s stopped", self.worker_id)


def run_worker(app: Flask, **options: Any) -> None:
    """The `formwork worker` command body: install signal handlers and serve."""
    worker = Worker(app, **options)

    def stop(*_: Any) -> None:
        worker.stop_event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    worker.serve()
