"""Background jobs with progress: rows in ``fw_job`` run by a thread of the web process.

A request enqueues a job inside its transaction and calls :func:`kick` after the commit; a per-app runner
thread then claims queued jobs one at a time (``UPDATE ... WHERE status='queued'``, so two processes never
run the same job) and stops when none are left. Handlers are registered by kind (by ``create_app``) and
run in their own transactions. Progress is kept in memory (the runner's process answers ``GET /jobs/{id}``
with it) and, on PostgreSQL, also written to the row; SQLite allows one writer at a time, so a running
import there holds the write lock and only the final state reaches the row.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Flask
from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from formwork import db
from formwork.errors import FormworkError, NotFound
from formwork.metadata.fieldtypes.temporal import iso_utc
from formwork.runtime.permissions import Access

log = logging.getLogger(__name__)
STATUSES = ("queued", "running", "done", "failed")
_OWNER: tuple[int, str] | None = None


def process_owner() -> str:
    """``host:pid:token`` of this process (a fresh token after a fork): written on the jobs it runs."""
    global _OWNER
    if _OWNER is None or _OWNER[0] != os.getpid():
        _OWNER = (os.getpid(), f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}")
    return _OWNER[1]


def _process_gone(owner: str | None) -> bool:
    """Whether the process named by ``owner`` is certainly gone: only processes of this host can be checked."""
    if owner is None:
        return True  # started before migration 0004, by a process that a restart has ended
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    if owner == process_owner():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return True  # the pid was reused by this process: the owner is gone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


def recover_orphans(engine: Any) -> int:
    """Mark failed the jobs left "running" by a process that is gone (killed, restarted); returns how many.

    A handler runs in one transaction (an import commits all its rows or none), so a killed job committed
    nothing: the message says so, with how far it had got.
    """
    j = db.jobs
    failed = 0
    with db.transaction(engine) as conn:
        for row in conn.execute(select(j.c.id, j.c.owner, j.c.progress, j.c.total).where(j.c.status == "running")):
            if not _process_gone(row.owner):
                continue
            got = f" (it had reached {row.progress} of {row.total})" if row.total else ""
            message = (f"the process running this job ({row.owner or 'unknown'}) stopped before it finished{got}; "
                       "the job runs in one transaction, so nothing of it was committed: start it again")
            res = conn.execute(update(j).where(j.c.id == row.id, j.c.status == "running").values(
                status="failed", error=message, finished_at=db.utcnow()))
            failed += res.rowcount
    if failed:
        log.warning("marked %d job(s) failed whose process is gone", failed)
    return failed


class JobFailed(Exception):
    """Raised by a handler that ran to the end but failed as a whole; ``result`` is kept (e.g. a report)."""

    def __init__(self, message: str, result: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.result = result


@dataclass
class JobContext:
    job_id: int
    kind: str
    user_id: int | None
    params: dict[str, Any]
    runner: JobRunner

    def progress(self, done: int, total: int | None = None) -> None:
        self.runner.report(self.job_id, done, total)


Handler = Callable[[Flask, JobContext], dict[str, Any]]
HANDLERS: dict[str, Handler] = {}


def register(kind: str, fn: Handler) -> None:
    """Name the handler of one kind of job; ``create_app`` registers every kind at start-up."""
    HANDLERS[kind] = fn


def enqueue(conn: Connection, kind: str, user_id: int | None, params: dict[str, Any],
            total: int | None = None) -> dict[str, Any]:
    """Insert a queued job in the caller's transaction; call :func:`kick` once it has committed."""
    if kind not in HANDLERS:
        raise ValueError(f"no job handler for {kind!r}")
    jid = conn.execute(insert(db.jobs).values(kind=kind, user_id=user_id, status="queued", progress=0,
                                              total=total, params=params, created_at=db.utcnow())
                       .returning(db.jobs.c.id)).scalar_one()
    return {"id": jid, "kind": kind, "status": "queued", "progress": 0, "total": total}


class JobRunner:
    def __init__(self, app: Flask) -> None:
        self.app = app
        self.engine = app.extensions["formwork"].engine
        self.live: dict[int, tuple[int, int | None]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pending = False

    def kick(self) -> None:
        with self._lock:
            self._pending = True
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="formwork-jobs", daemon=True)
                self._thread.start()

    def wait(self, timeout: float = 60) -> None:
        """Until the runner's thread has finished the queued jobs (tests; a clean shutdown)."""
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._lock:
                self._pending = False
            try:
                job = self._claim()
            except Exception:  # noqa: BLE001 - a broken database must not kill the process; retried on next kick
                log.exception("could not claim a job")
                job = None
            if job is None:
                with self._lock:
                    if not self._pending:
                        self._thread = None
                        return
                continue
            self._run(job)

    def _claim(self) -> Any:
        j = db.jobs
        while True:
            with db.transaction(self.engine) as conn:
                row = conn.execute(select(j).where(j.c.status == "queued").order_by(j.c.id).limit(1)).first()
                if row is None:
                    return None
                res = conn.execute(update(j).where(j.c.id == row.id, j.c.status == "queued")
                                   .values(status="running", owner=process_owner()))
                if res.rowcount == 1:
                    return row

    def _run(self, row: Any) -> None:
        ctx = JobContext(row.id, row.kind, row.user_id, dict(row.params or {}), self)
        self.live[row.id] = (0, row.total)
        status, result, error = "done", None, None
        try:
            fn = HANDLERS.get(row.kind)
            if fn is None:
                raise JobFailed(f"no handler for jobs of kind '{row.kind}'")
            result = fn(self.app, ctx)
        except JobFailed as e:
            status, result, error = "failed", e.result, e.message
        except FormworkError as e:
            status, error = "failed", e.message
        except Exception:  # noqa: BLE001 - the job fails, the runner lives on
            log.exception("job %s (%s) crashed", row.id, row.kind)
            status, error = "failed", "the job stopped because of an internal error"
        done, total = self.live.get(row.id, (0, row.total))
        if status == "done":
            done = total if total is not None else done
        try:
            with db.transaction(self.engine) as conn:
                conn.execute(update(db.jobs).where(db.jobs.c.id == row.id).values(
                    status=status, result=result, error=error, progress=done, total=total,
                    finished_at=db.utcnow()))
        finally:
            self.live.pop(row.id, None)  # only now: until the row says so, readers must see live progress

    def report(self, job_id: int, done: int, total: int | None) -> None:
        old = self.live.get(job_id, (0, None))
        total = total if total is not None else old[1]
        self.live[job_id] = (done, total)
        if self.engine.dialect.name != "sqlite":
            with db.transaction(self.engine) as conn:
                conn.execute(update(db.jobs).where(db.jobs.c.id == job_id).values(progress=done, total=total))


def runner(app: Flask) -> JobRunner:
    """The app's job runner; made on first use in a process, which first fails the jobs of dead processes."""
    r = app.extensions.get("formwork_jobs")
    if r is None:
        try:
            recover_orphans(app.extensions["formwork"].engine)
        except Exception:  # noqa: BLE001 - e.g. a database not migrated yet: start anyway, jobs wait
            log.exception("could not check for jobs left running by a stopped process")
        r = app.extensions.setdefault("formwork_jobs", JobRunner(app))
    return r


def kick(app: Flask) -> None:
    runner(app).kick()


def job_json(row: Any, app: Flask | None = None) -> dict[str, Any]:
    progress, total = row.progress, row.total
    if row.status == "running" and app is not None:
        live = runner(app).live.get(row.id)
        if live is not None:
            progress, total = live[0], live[1] if live[1] is not None else total
    return {"id": row.id, "kind": row.kind, "status": row.status, "progress": progress, "total": total,
            "result": row.result, "error": row.error, "created_at": iso_utc(row.created_at),
            "finished_at": iso_utc(row.finished_at)}


def get_job(conn: Connection, access: Access, job_id: Any, app: Flask | None = None) -> dict[str, Any]:
    """A job as its owner (or an administrator) sees it; 404 for everyone else."""
    try:
        jid = int(job_id)
    except (TypeError, ValueError):
        raise NotFound("no such job") from None
    row = conn.execute(select(db.jobs).where(db.jobs.c.id == jid)).first()
    if row is None or not (access.is_admin or (row.user_id is not None and row.user_id == access.user_id)):
        raise NotFound("no such job")
    return job_json(row, app)
