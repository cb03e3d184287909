"""The worker heartbeat (``fw_worker``) and what it says: is anyone running the automations?

A worker inserts its row when it starts, updates ``seen_at`` every few seconds from a small thread and
marks ``stopped_at`` when it stops cleanly; a worker that died keeps a row whose ``seen_at`` goes stale.
The web side only reads: :func:`worker_status` answers the health endpoint and the admins' banner with
at most two indexed queries, and none when no automation is enabled.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.engine import Connection, Engine

from formwork import db
from formwork.metadata.catalog import Catalog
from formwork.metadata.fieldtypes.temporal import iso_utc

log = logging.getLogger("formwork.worker")

BEAT_SECONDS = 5.0
STALE_AFTER = dt.timedelta(seconds=60)  # no beat for this long: the worker is gone
KEEP = dt.timedelta(days=7)  # rows of workers not seen for this long are pruned

RUNNING, MISSING, NOT_NEEDED = "running", "missing", "not_needed"


@dataclass(frozen=True)
class WorkerStatus:
    """``running``: a live worker beat within the last minute; ``missing``: automations are enabled but
    none did; ``not_needed``: no automation is enabled. ``last_seen`` is the latest beat of any worker."""

    status: str
    last_seen: dt.datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "last_seen": iso_utc(self.last_seen)}


def automations_enabled(cat: Catalog) -> bool:
    """Whether any app has an enabled automation (so a worker is needed)."""
    return any(rule.get("enabled", True) for app in cat.apps for rule in app.automations)


def worker_status(conn: Connection, cat: Catalog, now: dt.datetime | None = None) -> WorkerStatus:
    """Whether automations have a worker: the health endpoint's and the admin banner's answer."""
    if not automations_enabled(cat):
        return WorkerStatus(NOT_NEEDED, None)
    now = now or db.utcnow()
    w = db.workers
    live = conn.execute(select(func.max(w.c.seen_at))
                        .where(w.c.seen_at >= now - STALE_AFTER, w.c.stopped_at.is_(None))).scalar()
    if live is not None:
        return WorkerStatus(RUNNING, live)
    return WorkerStatus(MISSING, conn.execute(select(func.max(w.c.seen_at))).scalar())


def register(conn: Connection, worker_id: str, now: dt.datetime | None = None) -> None:
    """A worker starts: its row, and the rows of workers long gone pruned."""
    now = now or db.utcnow()
    w = db.workers
    conn.execute(delete(w).where(or_(w.c.seen_at < now - KEEP, w.c.id == worker_id)))
    conn.execute(insert(db.workers).values(id=worker_id, host=socket.gethostname()[:255], pid=os.getpid(),
                                           started_at=now, seen_at=now))


def beat(conn: Connection, worker_id: str, now: dt.datetime | None = None) -> None:
    """One UPDATE; the row is put back if something removed it."""
    now = now or db.utcnow()
    if conn.execute(update(db.workers).where(db.workers.c.id == worker_id)
                    .values(seen_at=now, stopped_at=None)).rowcount == 0:
        register(conn, worker_id, now)


def mark_stopped(conn: Connection, worker_id: str, now: dt.datetime | None = None) -> None:
    now = now or db.utcnow()
    conn.execute(update(db.workers).where(db.workers.c.id == worker_id).values(seen_at=now, stopped_at=now))


class Heartbeat:
    """The worker's heartbeat thread: independent of the work loop, so a long delivery never looks like
    a dead worker. Database errors are logged and retried on the next beat."""

    def __init__(self, engine: Engine, worker_id: str, every: float = BEAT_SECONDS) -> None:
        self.engine = engine
        self.worker_id = worker_id
        self.every = every
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._write(register)
        self._thread = threading.Thread(target=self._run, name="formwork-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.every + 5)
        self._write(mark_stopped)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self._write(beat)

    def _write(self, what: Any) -> None:
        try:
            with db.transaction(self.engine) as conn:
                what(conn, self.worker_id)
        except Exception:  # noqa: BLE001 - e.g. the database restarting: the next beat retries
            log.exception("worker heartbeat failed")
