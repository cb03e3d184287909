"""Comments on records, with @mentions, and a record's timeline.

* Anyone who can read a record may comment on it; a comment names people as ``@username``. Each person
  mentioned is notified once, and only if they can read the record themselves (a mention never shows a
  record to someone who may not see it; the others are left as plain text).
* Authors edit and delete their own comments (an administrator may delete any); a deleted comment leaves
  the timeline.
* The timeline merges, newest first: comments, the record's changes (its history as the reader sees it)
  and the records of related tables the table names in ``"timeline": ["activities", ...]`` (reverse link
  fields of the table), each as the reader may see them.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from formwork import db
from formwork.errors import Forbidden, NotFound, ValidationFailed
from formwork.metadata.catalog import Catalog, TableDef, label_text
from formwork.metadata.fieldtypes.base import DATE, DATETIME
from formwork.metadata.fieldtypes.temporal import iso_utc
from formwork.runtime import notifications
from formwork.runtime.notifications import Note
from formwork.runtime.permissions import Access
from formwork.runtime.records import RecordReader, RecordService, parse_id

MAX_BODY = 10_000
MENTION = re.compile(r"(?<![\w@])@([A-Za-z0-9_.\-]{1,100})")
KIND = "mention"

_WORDS = {
    "en": {"empty": "write something first", "long": f"is longer than {MAX_BODY} characters",
           "not_yours": "you may only change your own comments", "mentioned": "{who} mentioned you on “{what}”"},
    "zh-CN": {"empty": "请先填写评论内容", "long": f"超过 {MAX_BODY} 个字符",
              "not_yours": "只能修改自己的评论", "mentioned": "{who} 在「{what}」中提到了你"},
}


def _w(access: Access, key: str, **kw: Any) -> str:
    return (_WORDS.get(access.locale) or _WORDS["en"])[key].format(**kw)


def _check_body(access: Access, body: Any) -> str:
    text = body.strip() if isinstance(body, str) else ""
    if not text:
        raise ValidationFailed.from_details({"body": [_w(access, "empty")]})
    if len(text) > MAX_BODY or "\x00" in text:
        raise ValidationFailed.from_details({"body": [_w(access, "long")]})
    return text


def _record(conn: Connection, catalog: Catalog, access: Access, t: TableDef, record_id: Any) -> dict[str, Any]:
    """The record as the caller reads it (404 otherwise)."""
    return RecordReader(catalog, conn, access).get(t, parse_id(record_id))


def _title(t: TableDef, rec: dict[str, Any]) -> str:
    disp = t.display_field
    v = rec["fields"].get(disp.key) if disp is not None else None
    if isinstance(v, dict):
        v = v.get("display") or v.get("name")
    return str(v) if v not in (None, "") else f"#{rec['id']}"


def _mentions(conn: Connection, catalog: Catalog, t: TableDef, rid: int, text: str,
              author: int | None) -> list[int]:
    """Active users named as @username who can read the record (the author left out)."""
    names = {m.group(1).rstrip(".") for m in MENTION.finditer(text)}
    if not names:
        return []
    u = db.users
    rows = conn.execute(select(u).where(u.c.username.in_(sorted(names)), u.c.active.is_(True))).all()
    out = []
    for row in rows:
        if row.id == author:
            continue
        try:
            RecordReader(catalog, conn, Access.for_row(conn, row)).get(t, rid, fields=[])
        except NotFound:
            continue
        out.append(int(row.id))
    return sorted(out)


def _link(catalog: Catalog, t: TableDef, rid: int) -> dict[str, Any]:
    return {"app": catalog.app_by_id(t.app_id).key, "table": t.key, "table_id": t.id, "record_id": rid}


def _notify(conn: Connection, catalog: Catalog, access: Access, t: TableDef, rec: dict[str, Any],
            users: list[int], text: str) -> None:
    who = conn.execute(select(db.users.c.name).where(db.users.c.id == access.user_id)).scalar() or "?"
    what = _title(t, rec)
    notes = []
    for uid in users:
        loc = conn.execute(select(db.users.c.locale).where(db.users.c.id == uid)).scalar() or "en"
        words = _WORDS.get(loc) or _WORDS["en"]
        notes.append(Note(uid, KIND, words["mentioned"].format(who=who, what=what), text[:500],
                          _link(catalog, t, rec["id"])))
    notifications.send(conn, notes)


def _shape(row: Any, access: Access) -> dict[str, Any]:
    return {"id": row.id, "body": row.body, "user": {"id": row.user_id, "name": row.user_name}
            if row.user_id else None, "created_at": iso_utc(row.created_at),
            "edited_at": iso_utc(row.edited_at) if row.edited_at else None, "mentions": row.mentions or [],
            "mine": row.user_id is not None and row.user_id == access.user_id}


def _rows(conn: Connection, t: TableDef, rid: int, comment_id: int | None = None) -> list[Any]:
    c = db.comments
    q = select(c, db.users.c.name.label("user_name")).outerjoin(db.users, db.users.c.id == c.c.user_id).where(
        c.c.table_id == t.id, c.c.record_id == rid, c.c.deleted_at.is_(None))
    if comment_id is not None:
        q = q.where(c.c.id == comment_id)
    return list(conn.execute(q.order_by(c.c.id.desc()).limit(500)).all())


def list_comments(conn: Connection, catalog: Catalog, access: Access, t: TableDef,
                  record_id: Any) -> list[dict[str, Any]]:
    rec = _record(conn, catalog, access, t, record_id)
    return [_shape(r, access) for r in _rows(conn, t, rec["id"])]


def add(conn: Connection, catalog: Catalog, access: Access, t: TableDef, record_id: Any, body: Any) -> dict[str, Any]:
    rec = _record(conn, catalog, access, t, record_id)
    text = _check_body(access, body)
    mentioned = _mentions(conn, catalog, t, rec["id"], text, access.user_id)
    cid = conn.execute(insert(db.comments).values(table_id=t.id, record_id=rec["id"], user_id=access.user_id,
                                                  body=text, mentions=mentioned, created_at=db.utcnow())
                       .returning(db.comments.c.id)).scalar_one()
    _notify(conn, catalog, access, t, rec, mentioned, text)
    return _shape(_rows(conn, t, rec["id"], cid)[0], access)


def _own(conn: Connection, access: Access, t: TableDef, rid: int, comment_id: Any, deleting: bool) -> Any:
    cid = parse_id(comment_id)
    rows = _rows(conn, t, rid, cid)
    if not rows:
        raise NotFound(f"no comment {cid} on this record")
    row = rows[0]
    if row.user_id != access.user_id and not (deleting and access.is_admin):
        raise Forbidden(_w(access, "not_yours"))
    return row


def edit(conn: Connection, catalog: Catalog, access: Access, t: TableDef, record_id: Any, comment_id: Any,
         body: Any) -> dict[str, Any]:
    rec = _record(conn, catalog, access, t, record_id)
    row = _own(conn, access, t, rec["id"], comment_id, False)
    text = _check_body(access, body)
    mentioned = _mentions(conn, catalog, t, rec["id"], text, access.user_id)
    conn.execute(update(db.comments).where(db.comments.c.id == row.id).values(
        body=text, mentions=mentioned, edited_at=db.utcnow()))
    _notify(conn, catalog, access, t, rec, [u for u in mentioned if u not in (row.mentions or [])], text)
    return _shape(_rows(conn, t, rec["id"], row.id)[0], access)


def delete(conn: Connection, catalog: Catalog, access: Access, t: TableDef, record_id: Any, comment_id: Any) -> None:
    rec = _record(conn, catalog, access, t, record_id)
    row = _own(conn, access, t, rec["id"], comment_id, True)
    conn.execute(update(db.comments).where(db.comments.c.id == row.id).values(deleted_at=db.utcnow()))


def timeline(conn: Connection, catalog: Catalog, access: Access, t: TableDef, record_id: Any,
             limit: int = 200) -> list[dict[str, Any]]:
    """Comments, changes and related records of one record, newest first (see the module docstring)."""
    rec = _record(conn, catalog, access, t, record_id)
    rid = rec["id"]
    items: list[dict[str, Any]] = [{"kind": "comment", "at": c["created_at"], "comment": c}
                                   for c in list_comments(conn, catalog, access, t, rid)]
    hist = RecordService(catalog, conn, access).history(t, rid, limit=limit)["entries"]
    items += [{"kind": "change", "at": e["at"], "change": e} for e in hist]
    reader = RecordReader(catalog, conn, access)
    for key in t.doc.get("timeline") or []:
        f = t.fields_by_key.get(key)
        if f is None or not f.ftype.is_link or not isinstance(rec["fields"].get(key), list):
            continue
        target = catalog.table_by_id(f.options["target"])
        ids = [x["id"] for x in rec["fields"][key]][:limit]
        for r in reader.by_ids(target, ids) if ids else []:
            items.append({"kind": "related", "at": _when(target, r), "table": target.key,
                          "table_label": label_text(target.label, access.locale), "record": r,
                          "title": _title(target, r)})
    items.sort(key=lambda i: str(i["at"] or ""), reverse=True)
    return items[:limit]


def _when(t: TableDef, rec: dict[str, Any]) -> str:
    """A related record's moment: its first date field with a value, else when it was created."""
    for f in t.fields:
        if f.ftype.kind in (DATE, DATETIME) and not f.ftype.read_only and rec["fields"].get(f.key):
            v = str(rec["fields"][f.key])
            return v if len(v) > 10 else v + "T00:00:00Z"
    return str(rec["created_at"])
