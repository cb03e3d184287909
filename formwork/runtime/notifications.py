"""Notifications: the one place that creates, lists and marks a user's notifications.

Automations (a notify action, an approval request, a failed run) and the public pool (reminders, records
taken back) create them; the API and the bell in the pages list them and mark them read.

Reading has one meaning everywhere: :func:`mark_read` sets ``read_at`` the first time a notification is
marked and never moves it afterwards (marking twice is harmless and keeps the first time); a notification
that is not the caller's is "not found", exactly like one that does not exist. :func:`mark_all_read` does
the same for every unread notification of the user at once.

Each reader sees a notification in their own language only. A notification keeps what renders it per
language in ``message``: a platform message (``{"key", "params"}``, the texts in :data:`MESSAGES`; a param
may itself hold one text per language) or the texts a rule wrote per language (``{"texts": {"en":
{"title", "body"}, "zh-CN": {...}}}``). ``title``/``body`` keep one rendering for older readers, and rows
written before ``message`` existed are shown from them as they are. :func:`texts` picks the reader's.

An email copy of each notification goes to users who asked for one (:func:`email_copy`, a per-user setting
kept on the server): it is queued as a delivery in the same transaction and sent after commit by the
worker's dispatcher, in the recipient's language.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection

from formwork import db
from formwork.errors import NotFound
from formwork.metadata.fieldtypes.temporal import iso_utc

MAX_TITLE = 2000
MAX_BODY = 20000
LIST_LIMIT = 200
LOCALES = ("en", "zh-CN")
EMAIL_COPY = "notify_email"  # the user setting: send me an email copy of each notification

#: platform messages by language: ``{"key": ..., "params": {...}}`` renders through these
MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        "approval_request": "Waiting for your approval: {title}",
        "approval_request_level": "Waiting for your approval ({level}): {title}",
        "approval_approved": "Approved: {title}",
        "approval_rejected": "Rejected: {title}",
        "approval_returned": "Returned for changes: {title}",
        "approval_cancelled": "Approval withdrawn (the record changed): {title}",
        "approval_comment": "{user}: {comment}",
        "date_reminder_late": "{title}",
    },
    "zh-CN": {
        "approval_request": "待你审批：{title}",
        "approval_request_level": "待你审批（{level}）：{title}",
        "approval_approved": "已通过：{title}",
        "approval_rejected": "已驳回：{title}",
        "approval_returned": "已退回修改：{title}",
        "approval_cancelled": "审批已撤回（记录已修改）：{title}",
        "approval_comment": "{user}：{comment}",
        "date_reminder_late": "{title}",
    },
}


@dataclass(frozen=True)
class Note:
    """One notification to one user; ``at`` defaults to now (the pool passes its own clock)."""

    user_id: int
    kind: str
    title: str
    body: str | None = None
    link: dict[str, Any] | None = None
    at: dt.datetime | None = None
    message: dict[str, Any] | None = None  # renders it per language (see the module docstring)


def message(key: str, **params: Any) -> dict[str, Any]:
    """A platform message: ``key`` of :data:`MESSAGES` and its params (a param may be ``{locale: text}``)."""
    return {"key": key, "params": params}


def localized(titles: dict[str, str], bodies: dict[str, str] | None = None) -> dict[str, Any]:
    """A rule's own texts, one per language: ``{"texts": {locale: {"title", "body"}}}``."""
    out: dict[str, dict[str, str]] = {}
    for loc, title in titles.items():
        out[loc] = {"title": title[:MAX_TITLE], "body": ((bodies or {}).get(loc) or "")[:MAX_BODY]}
    return {"texts": out}


def _pick(value: Any, locale: str) -> str:
    """A text that may be given per language: the reader's, else English, else the first."""
    if isinstance(value, dict):
        for loc in (locale, "en", *value):
            if isinstance(value.get(loc), str):
                return str(value[loc])
        return ""
    return "" if value is None else str(value)


def texts(row: Any, locale: str) -> tuple[str, str]:
    """(title, body) of a notification in the reader's language; older rows as they were written."""
    msg = getattr(row, "message", None)
    if isinstance(msg, dict):
        if "texts" in msg and isinstance(msg["texts"], dict):
            by_locale = msg["texts"]
            chosen: dict[str, Any] = by_locale.get(locale) or by_locale.get("en") or next(iter(by_locale.values()), {})
            return str(chosen.get("title") or row.title), str(chosen.get("body") or "")
        key = msg.get("key")
        table = MESSAGES.get(locale) or MESSAGES["en"]
        if key in table:
            params = {k: _pick(v, locale) for k, v in (msg.get("params") or {}).items()}
            try:
                title = table[key].format(**params)
            except (KeyError, IndexError, ValueError):
                title = row.title
            return title, _pick(msg.get("body"), locale) if msg.get("body") is not None else (row.body or "")
    return row.title, row.body or ""


def send(conn: Connection, notes: Iterable[Note]) -> int:
    """Insert the notifications in the caller's transaction (one statement) and queue the email copies
    their recipients asked for; returns how many notifications."""
    now = db.utcnow()
    notes = list(notes)
    rows = []
    for n in notes:
        title, body = n.title, n.body
        if n.message is not None:  # the English rendering for readers that don't look at ``message``
            title, body = texts(_Row(n.title, n.body, n.message), "en")
        rows.append({"user_id": n.user_id, "kind": n.kind, "title": title[:MAX_TITLE],
                     "body": (body or "")[:MAX_BODY], "link": n.link, "created_at": n.at or now,
                     "message": n.message})
    if rows:
        conn.execute(insert(db.notifications), rows)
        _email_copies(conn, notes)
    return len(rows)


@dataclass(frozen=True)
class _Row:
    title: str
    body: str | None
    message: dict[str, Any] | None


def notify(conn: Connection, user_ids: Iterable[int], kind: str, title: str, body: str | None = None,
           link: dict[str, Any] | None = None, message: dict[str, Any] | None = None) -> int:
    """The same notification to each of the users (each once, whatever the repeats in ``user_ids``)."""
    return send(conn, [Note(u, kind, title, body, link, message=message) for u in sorted(set(user_ids))])


# --- email copies -----------------------------------------------------------------------------------
def _email_copies(conn: Connection, notes: list[Note]) -> None:
    """Queue one email per notification to each recipient who turned email copies on (and has an address);
    the worker's dispatcher sends them after commit (a delivery with no run)."""
    ids = sorted({n.user_id for n in notes})
    s, u = db.user_settings, db.users
    wanted = {r.id: r for r in conn.execute(
        select(u.c.id, u.c.email, u.c.locale, s.c.value).join(s, s.c.user_id == u.c.id)
        .where(s.c.key == EMAIL_COPY, u.c.id.in_(ids), u.c.email.is_not(None), u.c.active.is_(True)))
        if r.email and r.value is True}
    if not wanted:
        return
    now = db.utcnow()
    rows = []
    for n in notes:
        user = wanted.get(n.user_id)
        if user is None:
            continue
        locale = user.locale if user.locale in LOCALES else "en"
        title, body = texts(_Row(n.title, n.body, n.message), locale)
        rows.append({"idempotency_key": f"fw-note-{uuid.uuid4().hex}", "run_id": 0, "kind": "email",
                     "request": {"to": [user.email], "subject": title[:300], "body": body or title},
                     "status": "pending", "attempts": 0, "next_attempt_at": now, "created_at": now})
    if rows:
        conn.execute(insert(db.deliveries), rows)


# --- per-user settings ------------------------------------------------------------------------------
def get_setting(conn: Connection, user_id: int, key: str, default: Any = None) -> Any:
    s = db.user_settings
    row = conn.execute(select(s.c.value).where(s.c.user_id == user_id, s.c.key == key)).first()
    return default if row is None else row[0]


def set_setting(conn: Connection, user_id: int, key: str, value: Any) -> None:
    """Store one setting of the user (replacing the old value); None removes it."""
    s = db.user_settings
    conn.execute(delete(s).where(s.c.user_id == user_id, s.c.key == key))
    if value is not None:
        conn.execute(insert(s).values(user_id=user_id, key=key, value=value))


def email_copy(conn: Connection, user_id: int) -> bool:
    """Whether the user gets an email copy of each notification (off unless they turned it on)."""
    return get_setting(conn, user_id, EMAIL_COPY, False) is True


def set_email_copy(conn: Connection, user_id: int, on: bool) -> None:
    """Turn the user's email copies of notifications on or off (the "My account" page calls this)."""
    set_setting(conn, user_id, EMAIL_COPY, True if on else None)


def sent_since(conn: Connection, kind: str, user_ids: Iterable[int],
               since: dt.datetime) -> list[tuple[int, dict[str, Any] | None, dt.datetime]]:
    """(user id, link, created at) of the notifications of one kind sent to these users since a moment:
    what lets a sender (the pool's reminders) avoid saying the same thing twice."""
    n = db.notifications
    ids = sorted(set(user_ids))
    if not ids:
        return []
    q = select(n.c.user_id, n.c.link, n.c.created_at).where(n.c.kind == kind, n.c.user_id.in_(ids),
                                                            n.c.created_at >= since)
    return [(r[0], r[1], r[2]) for r in conn.execute(q)]


def list_for(conn: Connection, user_id: int | None, *, unread_only: bool = False,
             limit: int = LIST_LIMIT, only_id: int | None = None) -> list[Any]:
    """The user's notifications, newest first (rows of ``fw_notification``); ``only_id``: just that one."""
    n = db.notifications
    q = select(n).where(n.c.user_id == user_id)
    if only_id is not None:
        q = q.where(n.c.id == only_id)
    if unread_only:
        q = q.where(n.c.read_at.is_(None))
    return list(conn.execute(q.order_by(n.c.id.desc()).limit(limit)).all())


def unread_count(conn: Connection, user_id: int | None) -> int:
    n = db.notifications
    return int(conn.execute(select(func.count()).select_from(n).where(
        n.c.user_id == user_id, n.c.read_at.is_(None))).scalar() or 0)


def to_json(row: Any, locale: str = "en") -> dict[str, Any]:
    """A notification as the API answers it: title and body in the reader's language."""
    title, body = texts(row, locale)
    return {"id": row.id, "kind": row.kind, "title": title, "body": body, "link": row.link,
            "created_at": iso_utc(row.created_at), "read_at": iso_utc(row.read_at) if row.read_at else None}


def mark_read(conn: Connection, user_id: int | None, notification_id: int) -> None:
    """Mark one of the user's notifications read (the first time counts); 404 if it is not theirs."""
    n = db.notifications
    res = conn.execute(update(n).where(n.c.id == notification_id, n.c.user_id == user_id)
                       .values(read_at=func.coalesce(n.c.read_at, db.utcnow())))
    if res.rowcount != 1:
        raise NotFound("no such notification")


def mark_all_read(conn: Connection, user_id: int | None) -> int:
    """Mark every unread notification of the user read; returns how many were unread."""
    n = db.notifications
    res = conn.execute(update(n).where(n.c.user_id == user_id, n.c.read_at.is_(None))
                       .values(read_at=db.utcnow()))
    return int(res.rowcount or 0)
