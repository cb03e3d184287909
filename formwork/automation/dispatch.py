"""Sends the email and webhook intents that runs queued (``fw_delivery``), after their run committed.

A delivery is leased to one worker, marked ``written`` as soon as its bytes were handed to the peer
(before the answer) and ``sent`` on success. After a crash a ``pending`` intent is sent (nothing went
out), a ``written`` one is not sent again but marked ``unconfirmed``, so a restart never duplicates;
only a crash inside the sub-millisecond gap between the socket write and that commit can repeat a
delivery, and then with the same idempotency key (Message-ID / ``X-Formwork-Idempotency-Key``) so
receivers can drop it. Retryable failures back off; the run settles when its last delivery does.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.engine import Connection

from formwork import db
from formwork.automation.delivery import DeliveryError, backoff_delay, call_webhook, send_email
from formwork.automation.runs import RuleRunner, final_status, find_rule, rule_owner
from formwork.runtime import notifications

log = logging.getLogger(__name__)

class Dispatcher:
    """Leases due deliveries, sends them and records the outcome on the delivery, its step and its run."""

    def __init__(self, runner: RuleRunner) -> None:
        self.runner = runner
        self.settings = runner.settings
        self.worker_id = runner.worker_id

    def process_deliveries(self, limit: int = 10, stop: Callable[[], bool] | None = None) -> int:
        """Send due email/webhook intents; see the module docstring for the crash rules."""
        d = db.deliveries
        now = db.utcnow()
        with db.transaction(self.runner.engine) as conn:
            free = or_(d.c.locked_until.is_(None), d.c.locked_until < now)
            rows = conn.execute(select(d).where(or_(
                and_(d.c.status == "pending", d.c.next_attempt_at <= now, free),
                and_(d.c.status == "written", d.c.locked_until < now))).order_by(d.c.id).limit(limit)
                .with_for_update(skip_locked=True)).all()
            for row in rows:
                timeout = float((row.request or {}).get("timeout") or 10)
                conn.execute(update(d).where(d.c.id == row.id).values(
                    locked_by=self.worker_id,
                    locked_until=now + dt.timedelta(seconds=self.settings.lease + timeout)))
        done = 0
        for row in rows:
            if stop is not None and stop():
                self.release_leases()
                break
            self.deliver(row)
            done += 1
        return done

    def deliver(self, row: Any) -> None:
        d = db.deliveries
        if row.status == "written":
            self._finish(row, "unconfirmed", row.response,
                         "the worker stopped after handing this over and before the answer; "
                         "not sent again so that it is not duplicated")
            return
        req = row.request

        def mark_written() -> None:
            with db.transaction(self.runner.engine) as c:
                c.execute(update(d).where(d.c.id == row.id, d.c.locked_by == self.worker_id)
                          .values(status="written"))

        try:
            if row.kind == "email":
                mid = send_email(self.settings.smtp, req["to"], req["subject"], req.get("body") or "",
                                 body_html=req.get("html"), cc=req.get("cc") or None,
                                 idempotency_key=row.idempotency_key, on_written=mark_written)
                self._finish(row, "sent", {"message_id": mid}, None)
            else:
                res = call_webhook(req["url"], req.get("payload"), secret=req.get("secret"),
                                   idempotency_key=row.idempotency_key, timeout=float(req.get("timeout") or 10),
                                   allow_private=self.settings.allow_private, on_written=mark_written)
                # the run log keeps the status and the size, never the receiver's body: it may echo
                # tokens or personal data, and run logs are read by everyone who manages automations
                self._finish(row, "sent", {"status": res.status, "body_chars": len(res.body)}, None)
        except DeliveryError as e:
            attempts = row.attempts + 1
            if e.retryable and attempts < self.settings.max_attempts:
                delay = max(backoff_delay(attempts, self.settings.retry_base, self.settings.retry_cap),
                            min(e.retry_after or 0, self.settings.retry_cap))
                with db.transaction(self.runner.engine) as c:
                    c.execute(update(d).where(d.c.id == row.id, d.c.locked_by == self.worker_id).values(
                        status="pending", attempts=attempts, error=e.message[:2000], locked_by=None,
                        locked_until=None, next_attempt_at=db.utcnow() + dt.timedelta(seconds=delay)))
                    self._update_step(c, row.id, "retrying", None, f"attempt {attempts}: {e.message}")
            else:
                self._finish(row, "failed", None, e.message, attempts=attempts)
        except Exception as e:  # noqa: BLE001 - one bad item must not stop the round (it would lease and fail again)
            log.warning("delivery %s of run %s failed for good: %s", row.id, row.run_id, e, exc_info=True)
            self._finish(row, "failed", None, f"could not be sent: {type(e).__name__}: {e}"[:2000],
                         attempts=row.attempts + 1)

    def _finish(self, row: Any, status: str, response: Any, error: str | None, attempts: int | None = None) -> None:
        d = db.deliveries
        with db.transaction(self.runner.engine) as conn:
            res = conn.execute(update(d).where(d.c.id == row.id, d.c.locked_by == self.worker_id).values(
                status=status, response=response, error=error, locked_by=None, locked_until=None,
                attempts=attempts if attempts is not None else row.attempts + (status != "unconfirmed"),
                sent_at=db.utcnow() if status in ("sent", "unconfirmed") else None))
            if res.rowcount != 1:
                return  # another worker took the delivery over after our lease ran out
            self._update_step(conn, row.id, status, response, error)
            self.settle_run(conn, row.run_id)

    @staticmethod
    def _update_step(conn: Connection, delivery_id: int, status: str, output: Any, error: str | None) -> None:
        s = db.automation_steps
        values: dict[str, Any] = {"status": status, "error": error}
        if output is not None:
            values["output"] = output
        conn.execute(update(s).where(s.c.delivery_id == delivery_id).values(**values))

    def settle_run(self, conn: Connection, run_id: int) -> None:
        """A run waiting only for its deliveries ends when the last one is settled."""
        r = db.automation_runs
        q = select(r).where(r.c.id == run_id)
        if conn.dialect.name == "postgresql":
            q = q.with_for_update()
        run = conn.execute(q).first()
        if run is None or run.status != "delivering":
            return
        values = final_status(conn, run_id)
        if values["status"] == "delivering":
            return
        conn.execute(update(r).where(r.c.id == run_id).values(**values))
        if values["status"] == "failed":
            cat = self.runner.catalogs.get(conn)
            found = find_rule(cat, run.automation_id)
            owner = rule_owner(conn, run.automation_id)
            if owner is not None:
                notifications.notify(conn, [owner], "automation_failed", f"Automation '{run.automation_key}' failed",
                       values.get("error"), {"app": found[0].key if found else None,
                                             "automation": run.automation_key, "run_id": run_id})

    def release_leases(self) -> None:
        d = db.deliveries
        with db.transaction(self.runner.engine) as conn:
            conn.execute(update(d).where(d.c.locked_by == self.worker_id, d.c.status == "pending")
                         .values(locked_by=None, locked_until=None))
