"""Runs one rule's action list for one record, step by step, writing each step's log entry.

The executor is the context every action runs in: the record (loaded once, links expanded one level),
template rendering, a RecordService acting as the rule's user, and delivery intents for email and
webhooks (``fw-<run id>-<action path>``, sent after commit).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection

from formwork import db
from formwork.automation.actions.base import action_types
from formwork.automation.runs import Park, RuleRunner, RunRequest, StepFailed, path_text, plain
from formwork.automation.templating import TemplateError, render_value, template_names
from formwork.errors import FormworkError, NotFound, ValidationFailed
from formwork.metadata.catalog import Catalog, TableDef
from formwork.runtime.permissions import Access
from formwork.runtime.records import RecordReader, RecordService


class Executor:
    """Runs one rule's actions for one record, collecting step log entries."""

    def __init__(self, eng: RuleRunner, conn: Connection, cat: Catalog, req: RunRequest, access: Access, *,
                 run_id: int, outputs: dict[str, Any], dry: bool = False, reader: Access | None = None) -> None:
        self.eng = eng
        self.conn = conn
        self.cat = cat
        self.req = req
        self.rule = req.rule
        self.app = req.app
        self.t = req.table
        self.rid = req.record_id
        self.access = access
        self.run_id = run_id
        self.outputs = outputs
        self.dry = dry
        self.reader_access = reader  # whose eyes templates read the record with (a dry run's viewer)
        self.steps: list[dict[str, Any]] = []
        self._record: dict[str, Any] | None = None
        self._delivery_id: int | None = None
        self.queued = 0

    # --- context ---------------------------------------------------------------------------------
    def service(self) -> RecordService:
        return RecordService(self.cat, self.conn, self.access, origin=self.rule["key"], depth=self.req.depth + 1,
                             secret=self.eng.settings.secret)

    def record(self) -> dict[str, Any]:
        if self._record is None:
            self._record = self._load_record()
        return self._record

    def forget_record(self) -> None:
        """The record was changed: templates of later steps see it as it is now."""
        self._record = None

    def _load_record(self) -> dict[str, Any]:
        if self.t is None or self.rid is None:
            return {}
        reader = RecordReader(self.cat, self.conn, self.reader_access or self.access)
        try:
            rec = reader.get(self.t, self.rid, trashed=self.req.trigger == "record_deleted")
        except NotFound:
            if self.req.deleted_fields is not None:
                return {"id": self.rid, **self.req.deleted_fields}
            raise StepFailed(f"record {self.rid} is gone or not visible to the rule's user") from None
        users: dict[int, dict[str, Any]] = {}
        out = self._expand(reader, self.t, rec, users, 0)
        if users:
            for u in self.conn.execute(select(db.users.c.id, db.users.c.email).where(db.users.c.id.in_(users))):
                for holder in users[u.id]["holders"]:
                    holder["email"] = u.email
        return out

    def _expand(self, reader: RecordReader, t: TableDef, rec: dict[str, Any],
                users: dict[int, dict[str, Any]], depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {"id": rec["id"]}
        for k, v in rec["fields"].items():
            f = t.fields_by_key.get(k)
            if f is not None and f.ftype.is_link and depth == 0 and v:
                target = self.cat.table_by_id(f.options["target"])
                items = v if isinstance(v, list) else [v]
                expanded = []
                for item in items[:50]:
                    try:
                        linked = reader.get(target, item["id"])
                        expanded.append(dict(self._expand(reader, target, linked, users, 1), display=item["display"]))
                    except NotFound:
                        expanded.append(item)
                out[k] = expanded if isinstance(v, list) else expanded[0]
            elif f is not None and f.ftype.holds_users and v:
                vals = [dict(x) for x in (v if isinstance(v, list) else [v])]
                for x in vals:
                    users.setdefault(x["id"], {"holders": []})["holders"].append(x)
                    x.setdefault("email", None)
                out[k] = vals if isinstance(v, list) else vals[0]
            else:
                out[k] = v
        return out

    def context(self, record: bool = True, **extra: Any) -> dict[str, Any]:
        """What templates see; ``record=False`` leaves the record out (no template reads it: not loaded)."""
        now = dt.datetime.now(dt.UTC)
        out = {"trigger": self.req.trigger_ctx, "actions": self.outputs, "now": now,
               "today": now.astimezone(ZoneInfo(self.access.timezone or "UTC")).date(), **extra}
        if record:
            out["record"] = self.record()
        return out

    def render(self, value: Any, **extra: Any) -> Any:
        try:
            return plain(render_value(value, self.context("record" in template_names(value), **extra)))
        except TemplateError as e:
            raise StepFailed(f"template: {e.message}") from None

    def queue_delivery(self, kind: str, request: dict[str, Any], path: list[Any]) -> dict[str, Any]:
        """Insert a delivery intent (email or webhook) in the run's transaction; the worker sends it later."""
        key = f"fw-{self.run_id}-{path_text(path)}"
        shown = {k: v for k, v in request.items() if k != "secret"}
        if self.dry:
            return {"would_send": shown}
        self.queued += 1
        self._delivery_id = int(self.conn.execute(insert(db.deliveries).values(
            idempotency_key=key, run_id=self.run_id, kind=kind, request=request, status="pending", attempts=0,
            next_attempt_at=db.utcnow(), created_at=db.utcnow()).returning(db.deliveries.c.id)).scalar_one())
        return {"idempotency_key": key, **shown}

    # --- the action list ---------------------------------------------------------------------------
    def run_list(self, items: list[dict[str, Any]], base: list[Any], resume: list[Any] | None) -> Park | None:
        """Run the actions from the start, or from ``resume`` (a path into nested lists) after a stop."""
        start = 0
        if resume:
            start = int(resume[0])
            if len(resume) > 1:
                park = self.run_list(items[start].get(resume[1]) or [], [*base, start, resume[1]], resume[2:])
                if park is not None:
                    return park
                start += 1
        for i in range(start, len(items)):
            park = self.action(items[i], [*base, i])
            if park is not None:
                return park
        return None

    def action(self, a: dict[str, Any], path: list[Any]) -> Park | None:
        kind = a["type"]
        action = action_types.get(kind)
        started = time.perf_counter()
        step: dict[str, Any] = {"path": path_text(path), "action": kind, "status": "ok", "output": None,
                                "error": None, "started_at": db.utcnow(), "delivery_id": None}
        self.steps.append(step)
        self._delivery_id = None
        if action.needs_record and self.rid is None:
            step.update(status="failed", error=f"'{kind}' needs a record; this run has none")
            raise StepFailed(f"step {step['path']} ({kind}): needs a record")
        try:
            result = action.run(a, path, self)
        except StepFailed as e:
            step.update(status="failed", error=str(e), duration_ms=int((time.perf_counter() - started) * 1000))
            raise StepFailed(f"step {step['path']} ({kind}): {e}") from None
        except ValidationFailed as e:
            msg = e.message + (f" {e.details}" if e.details else "")
            step.update(status="failed", error=msg, duration_ms=int((time.perf_counter() - started) * 1000))
            raise StepFailed(f"step {step['path']} ({kind}): {msg}") from None
        except FormworkError as e:
            step.update(status="failed", error=e.message, duration_ms=int((time.perf_counter() - started) * 1000))
            raise StepFailed(f"step {step['path']} ({kind}): {e.message}") from None
        step["duration_ms"] = int((time.perf_counter() - started) * 1000)
        if isinstance(result, Park):
            if not action.routes_only:
                step["status"] = result.status if not self.dry else "would_stop"
            return result
        step["output"] = result
        if self._delivery_id is not None:
            step.update(status="queued", delivery_id=self._delivery_id)
        elif self.dry:
            step["status"] = "would_run"
        if not action.routes_only:
            self.outputs[a.get("key") or path_text(path)] = result
        return None
