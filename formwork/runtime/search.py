"""Global search: one text across every table the reader may see, grouped by table.

Each table is searched through :class:`RecordReader` (``list(search=...)``), so row scopes and hidden
fields apply exactly as on the table page and the API: a record outside the reader's rows is not found,
and a match on a field hidden from them does not count. Each hit is the record's title (its display
field, when the reader may see it) and where it lives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection

from formwork.errors import FormworkError
from formwork.metadata.catalog import Catalog, FieldDef, TableDef
from formwork.runtime.permissions import Access
from formwork.runtime.records import RecordReader

MAX_TABLES = 60
MAX_TEXT = 200


@dataclass
class Hit:
    id: int
    title: str


@dataclass
class Group:
    app_key: str
    app_label: Any
    table: TableDef
    hits: list[Hit] = field(default_factory=list)
    more: bool = False


def title_field(cat: Catalog, access: Access, t: TableDef) -> FieldDef | None:
    """The field that names a record for this reader: the display field, else the first visible text one."""
    vis = access.field_visibility(cat, t, t.sa)
    disp = t.display_field
    if disp is not None and vis.get(disp.id, True) is not False:
        return disp
    return next((f for f in t.fields if vis.get(f.id, True) is not False and f.type == "text"), None)


def record_title(f: FieldDef | None, values: dict[str, Any], rid: int) -> str:
    """A record's name in words; ``#id`` when it has none the reader may see."""
    if f is not None:
        value = values.get(f.key)
        if value not in (None, "", []):
            text = f.ftype.export_text(value, f)
            if text not in (None, ""):
                return str(text)
    return f"#{rid}"


def search_everywhere(cat: Catalog, conn: Connection, access: Access, text: str, secret: bytes,
                      per_table: int = 5) -> list[Group]:
    """The tables (that the reader may see) holding records that match ``text``, with their first hits."""
    text = text.strip()[:MAX_TEXT]
    if not text or "\x00" in text:
        return []
    reader = RecordReader(cat, conn, access, secret=secret)
    groups: list[Group] = []
    searched = 0
    for app in cat.apps:
        for t in app.tables:
            if searched >= MAX_TABLES:
                return groups
            if not access.can_see_table(cat, t):
                continue
            searched += 1
            tf = title_field(cat, access, t)
            try:
                result = reader.list(t, search=text, limit=per_table + 1, fields=[tf.key] if tf else None)
            except FormworkError:
                continue  # a table nothing of which can be searched by this reader
            recs = result["records"]
            if not recs:
                continue
            groups.append(Group(app.key, app.doc.get("label", app.key), t,
                                [Hit(r["id"], record_title(tf, r["fields"], r["id"])) for r in recs[:per_table]],
                                len(recs) > per_table))
    return groups


def recent_records(cat: Catalog, conn: Connection, access: Access, items: list[Any],
                   secret: bytes) -> list[tuple[str, Any, TableDef, Hit]]:
    """Recently viewed records (``[app, table, id]`` items, newest first) that the reader may still see."""
    reader = RecordReader(cat, conn, access, secret=secret)
    out: list[tuple[str, Any, TableDef, Hit]] = []
    for item in items:
        try:
            app_key, table_key, rid = str(item[0]), str(item[1]), int(item[2])
            app = cat.app(app_key)
            t = app.table(table_key)
            if not access.can_see_table(cat, t):
                continue
            tf = title_field(cat, access, t)
            rec = reader.get(t, rid, fields=[tf.key] if tf else None)
        except (FormworkError, LookupError, TypeError, ValueError):
            continue
        out.append((app.key, app.doc.get("label", app.key), t, Hit(rid, record_title(tf, rec["fields"], rid))))
    return out
