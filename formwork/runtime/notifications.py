"""Notifications: the one place that creates, lists and marks a user's notifications.

Automations (a notify action, an approval request, a failed run) and the public pool (reminders, records
taken back) create them; the API and the bell in the pages list them and mark them read.

Reading has one meaning everywhere: :func:`mark_read` sets ``read_at`` the first time a notification is
marked and never moves it afterwards (marking twice is harmless and keeps the first time); a notification
that is not the caller's is "not found", exactly like one that does not exist. :func:`mark_all_read` does
the same for every unread notification of the user at once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection

from formwork import db
from formwork.errors import NotFound
from formwork.metadata.fieldtypes.temporal import iso_utc

MAX_TITLE = 2000
MAX_BODY = 20000
LIST_LIMIT = 200


@dataclass(frozen=True)
class Note:
    """One notification to one user; ``at`` defaults to now (the pool passes its own clock)."""

    user_id: int
    kind: str
    title: str
    body: str | None = None
    link: dict[str, Any] | None = None
    at: dt.datetime | None = None


def send(conn: Connection, notes: Iterable[Note]) -> int:
    """Insert the notifications in the caller's transaction (one statement); returns how many."""
    now = db.utcnow()
    rows = [{"user_id": n.user_id, "kind": n.kind, "title": n.title[:MAX_TITLE], "body": (n.body or "")[:MAX_BODY],
             "link": n.link, "created_at": n.at or now} for n in notes]
    if rows:
        conn.execute(insert(db.notifications), rows)
    return len(rows)


def notify(conn: Connection, user_ids: Iterable[int], kind: str, title: str, body: str | None = None,
           link: dict[str, Any] | None = None) -> int:
    """The same notification to each of the users (each once, whatever the repeats in ``user_ids``)."""
    return send(conn, [Note(u, kind, title, body, link) for u in sorted(set(user_ids))])


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
             limit: int = LIST_LIMIT) -> list[Any]:
    """The user's notifications, newest first (rows of ``fw_notification``)."""
    n = db.notifications
    q = select(n).where(n.c.user_id == user_id)
    if unread_only:
        q = q.where(n.c.read_at.is_(None))
    return list(conn.execute(q.order_by(n.c.id.desc()).limit(limit)).all())


def unread_count(conn: Connection, user_id: int | None) -> int:
    n = db.notifications
    return int(conn.execute(select(func.count()).select_from(n).where(
        n.c.user_id == user_id, n.c.read_at.is_(None))).scalar() or 0)


def to_json(row: Any) -> dict[str, Any]:
    """A notification as the API answers it."""
    return {"id": row.id, "kind": row.kind, "title": row.title, "body": row.body, "link": row.link,
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
