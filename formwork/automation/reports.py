"""Scheduled dashboard emails: the worker's tick queues each due report as an email delivery.

A dashboard's ``schedules`` name how often (daily, weekly on a weekday, monthly on a day), at which hour of
each recipient's own time zone, and to whom (users by id, roles by key). Each recipient gets the dashboard
as THEY would see it (their row scope, hidden fields, language); recipients without an email address or the
right to view dashboards are skipped. A report is queued once per recipient and period: the delivery's
idempotency key (``report:<dashboard id>:<schedule>:<user>:<period stamp>``) is unique, so several workers
or a worker that was down catch up exactly once. The dispatcher sends it like any other email (a delivery
with no run: ``run_id`` 0).
"""

from __future__ import annotations

import datetime as dt
import html
import logging
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from formwork import db
from formwork.metadata.catalog import AppDef, Catalog, label_text
from formwork.runtime.dashboards import DashboardRun, Selection, shared_with
from formwork.runtime.permissions import Access

log = logging.getLogger("formwork.automation")
MAX_ROWS = 10
WORDS = {
    "en": {"subject": "{name}: your {every} report", "daily": "daily", "weekly": "weekly", "monthly": "monthly",
           "period": "Period: {start} to {end}", "all": "All time", "hidden": "You may not see this data.",
           "invalid": "This widget no longer fits its table.", "empty": "(empty)", "more": "… and {n} more",
           "footer": "Sent by Formwork because this dashboard is scheduled for you."},
    "zh-CN": {"subject": "{name}：{every}报表", "daily": "每日", "weekly": "每周", "monthly": "每月",
              "period": "期间：{start} 至 {end}", "all": "全部时间", "hidden": "您无权查看这些数据。",
              "invalid": "该组件与数据表不再匹配。", "empty": "（空）", "more": "……另有 {n} 项",
              "footer": "此邮件由 Formwork 按该仪表盘的定时设置发送给您。"},
}


def _tz(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def due_stamp(sched: dict[str, Any], local: dt.datetime) -> str | None:
    """The period stamp of the report due at ``local`` (the recipient's wall time), or None if not yet due."""
    hour = int(sched.get("hour", 8))
    every = sched.get("every")
    today = local.date()
    if every == "daily":
        start, stamp = today, today.isoformat()
    elif every == "weekly":
        monday = today - dt.timedelta(days=today.weekday())
        start = monday + dt.timedelta(days=int(sched.get("weekday", 0)))
        iso = today.isocalendar()
        stamp = f"{iso.year}-W{iso.week:02d}"
    elif every == "monthly":
        start = today.replace(day=int(sched.get("day", 1)))
        stamp = today.strftime("%Y-%m")
    else:
        return None
    due = dt.datetime.combine(start, dt.time(hour), local.tzinfo)
    return stamp if local >= due else None


def recipients(conn: Connection, sched: dict[str, Any]) -> list[Any]:
    u = db.users
    ids = {int(i) for i in sched.get("users") or []}
    if sched.get("roles"):
        r, ur = db.roles, db.user_roles
        ids |= {row[0] for row in conn.execute(select(ur.c.user_id).join(r, r.c.id == ur.c.role_id)
                                               .where(r.c.key.in_(list(sched["roles"]))))}
    if not ids:
        return []
    return list(conn.execute(select(u.c.id, u.c.email, u.c.locale, u.c.timezone)
                             .where(u.c.id.in_(sorted(ids)), u.c.active.is_(True)).order_by(u.c.id)))


def _key_text(cat: Catalog, app: AppDef, w: dict[str, Any], name: str, v: Any, words: dict[str, str],
              locale: str) -> str:
    if v is None:
        return words["empty"]
    if isinstance(v, dict):
        return str(v.get("name") or v.get("display") or v.get("id"))
    t = app.tables_by_key.get(w.get("table") or "")
    f = t.fields_by_key.get(name) if t is not None else None
    if f is not None and f.ftype.has_choices:
        for c in f.options.get("choices", []):
            if c.get("value") == v:
                return label_text(c.get("label"), locale) or str(v)
    return str(v)


def _number(v: Any, fmt: str | None) -> str:
    if v is None:
        return "—"
    if fmt == "percent":
        return f"{float(v) * 100:.1f}%"
    n = float(v)
    text = f"{n:,.0f}" if n.is_integer() or fmt == "currency" else f"{n:,.2f}"
    return ("¥" + text) if fmt == "currency" else text


def render_report(cat: Catalog, app: AppDef, doc: dict[str, Any], run: DashboardRun, locale: str,
                  every: str) -> tuple[str, str, str]:
    """Subject, plain text and HTML of one recipient's report."""
    words = WORDS.get(locale, WORDS["en"])
    name = label_text(doc.get("label") or doc["key"], locale)
    subject = words["subject"].format(name=name, every=words.get(every, every))
    period = words["period"].format(start=run.rng[0], end=run.rng[1]) if run.rng else words["all"]
    text = [name, period, ""]
    parts = [f"<h2>{html.escape(name)}</h2><p>{html.escape(period)}</p>"]
    for w, data in zip(doc.get("widgets", []), run.widgets(), strict=True):
        label = label_text(w.get("label") or w["key"], locale)
        fmt = w.get("format")
        text.append(f"== {label}")
        parts.append(f"<h3>{html.escape(label)}</h3>")
        if data.get("error"):
            msg = words["hidden"] if data["error"] == "forbidden" else words["invalid"]
            text.append(msg)
            parts.append(f"<p>{html.escape(msg)}</p>")
            continue
        if "value" in data:
            value = _number(data["value"], fmt)
            text.append(value)
            parts.append(f"<p style=\"font-size:24px;font-weight:bold\">{html.escape(value)}</p>")
            continue
        metric = "value" if (w.get("ratio") or w.get("ratio_of")) else (data.get("metrics") or ["count"])[0]
        mfmt = fmt if not metric.startswith("count") else None
        groups = data.get("groups") or []
        rows = []
        for g in groups[:MAX_ROWS]:
            key = " / ".join(_key_text(cat, app, w, k, v, words, locale) for k, v in g["key"].items())
            val = _number(g.get(metric), mfmt)
            text.append(f"{key}: {val}")
            rows.append(f"<tr><td>{html.escape(key)}</td><td style=\"text-align:right\">{html.escape(val)}</td></tr>")
        if len(groups) > MAX_ROWS:
            more = words["more"].format(n=len(groups) - MAX_ROWS)
            text.append(more)
            rows.append(f"<tr><td colspan=\"2\">{html.escape(more)}</td></tr>")
        parts.append("<table cellpadding=\"4\">" + "".join(rows) + "</table>")
        text.append("")
    text.append(words["footer"])
    parts.append(f"<p style=\"color:#6b7280\">{html.escape(words['footer'])}</p>")
    return subject, "\n".join(text), "".join(parts)


def tick(engine: Engine, cat: Catalog, now: dt.datetime | None = None) -> int:
    """Queue every due scheduled report; returns how many were queued."""
    now = now or dt.datetime.now(dt.UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=dt.UTC)
    queued = 0
    for app in cat.apps:
        for doc in app.dashboards:
            for i, sched in enumerate(doc.get("schedules") or []):
                try:
                    with db.transaction(engine) as conn:
                        queued += _tick_schedule(conn, cat, app, doc, i, sched, now)
                except Exception:  # noqa: BLE001 - one broken report must not stop the others
                    log.exception("dashboard %s: scheduled report failed", doc.get("key"))
    return queued


def _tick_schedule(conn: Connection, cat: Catalog, app: AppDef, doc: dict[str, Any], index: int,
                   sched: dict[str, Any], now: dt.datetime) -> int:
    queued = 0
    d = db.deliveries
    for user in recipients(conn, sched):
        if not user.email:
            continue
        local = now.astimezone(_tz(user.timezone))
        stamp = due_stamp(sched, local)
        if stamp is None:
            continue
        key = f"report:{doc['id']}:{index}:{user.id}:{stamp}"
        if conn.execute(select(d.c.id).where(d.c.idempotency_key == key)).first() is not None:
            continue
        access = Access.for_user(conn, user.id)
        if not access.can_view_dashboards() or not shared_with(access, doc):
            continue
        sel = Selection.parse({"period": sched["period"]} if sched.get("period") else {}, doc)
        run = DashboardRun(conn, cat, access, app, doc, sel)
        locale = user.locale if user.locale in WORDS else "en"
        subject, body, body_html = render_report(cat, app, doc, run, locale, sched["every"])
        try:
            with conn.begin_nested():
                conn.execute(insert(d).values(idempotency_key=key, run_id=0, kind="email", request={
                    "to": [user.email], "subject": subject, "body": body, "html": body_html}))
            queued += 1
        except IntegrityError:
            continue  # another worker queued it first
    return queued
