"""Writing records of user tables: RecordService is their only writer.

It checks the caller's permissions, coerces and validates values through their field types (see
:mod:`.schemas`), writes the rows and their links, checks unique values and the table's validation rules,
and records history and outbox events, all in the caller's transaction.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from sqlalchemy import and_, bindparam, delete, false, func, insert, not_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from formwork import db
from formwork.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PreconditionFailed,
    TooLarge,
    ValidationFailed,
)
from formwork.metadata import defaults
from formwork.metadata.catalog import Catalog, FieldDef, TableDef, label_text
from formwork.metadata.fieldtypes.base import (
    BOOL,
    DATE,
    DATETIME,
    MULTI,
    NUMBER,
    SELECT,
    TEXT,
    USERS,
    FieldType,
    WriteContext,
)
from formwork.metadata.fieldtypes.link import existing_ids, known_links_key, relation, set_writer_scope
from formwork.metadata.fieldtypes.temporal import iso_utc
from formwork.metadata.flows import flows_of
from formwork.metadata.query import FilterCompiler
from formwork.runtime import guards
from formwork.runtime.permissions import Access
from formwork.runtime.records import bulk
from formwork.runtime.records.messages import msg
from formwork.runtime.records.params import MAX_BATCH, parse_id
from formwork.runtime.records.reader import RecordReader
from formwork.runtime.records.schemas import load_input, serializer

_HISTORY_INSERT = insert(db.history)


def _choice_label(f: FieldDef, locale: str, value: Any) -> str:
    """An option's label in the reader's language (the value itself when it is no option)."""
    if value is None:
        return "—"
    for c in f.options.get("choices") or []:
        if c.get("value") == value:
            return label_text(c.get("label") or value, locale)
    return str(value)
_OUTBOX_INSERT = insert(db.outbox)
_USERS_BY_ID = select(db.users.c.id, db.users.c.name, db.users.c.active).where(
    db.users.c.id.in_(bindparam("ids", expanding=True)))
_HISTORY_COLUMNS = ("table_id", "record_id", "at", "user_id", "action", "changes")
_OUTBOX_COLUMNS = ("at", "app_id", "table_id", "record_id", "event", "user_id", "payload", "depth", "origin",
                   "status", "attempts", "next_attempt_at")
COPY_FROM = 50  # PostgreSQL: batches from this size are written with COPY (one statement, no SQL to parse)


_NO_VALUE: tuple[Any, ...] = (None, [], False)  # what a new record's history leaves out (0 too: it equals False)


def _lock_row(q: Any, lock: bool) -> Any:
    return q.with_for_update() if lock else q


_PLAIN_KINDS = (TEXT, NUMBER, DATE, DATETIME, BOOL, SELECT, MULTI)


def _created_plan(cat: Catalog, t: TableDef) -> tuple[list[tuple[str, str | None, Any]], list[FieldDef]]:
    """Per field of ``t`` in order: (key, its column when the value written is what a read returns, the
    serializer), and the fields that must be read back (see ``RecordService._created_records``)."""
    own: list[tuple[str, str | None, Any]] = []
    read: list[FieldDef] = []
    for f in t.fields:
        ft = type(f.ftype)
        plain = (f.stored and not f.ftype.computed and not f.ftype.is_link
                 and f.ftype.value_kind(f, cat) in _PLAIN_KINDS and not f.ftype.many_values(f, cat)
                 and ft.expression is FieldType.expression and ft.read_expression is FieldType.read_expression)
        own.append((f.key, f.column_name if plain else None, serializer(f, cat)))
        if not plain:
            read.append(f)
    return own, read


class RecordService:
    """The only writer of user tables."""

    def __init__(self, catalog: Catalog, conn: Connection, access: Access, *, origin: str | None = None,
                 depth: int = 0, secret: bytes = b"formwork") -> None:
        self.cat = catalog
        self.conn = conn
        self.access = access
        self.origin = origin  # the automation whose action makes this change (loop protection)
        self.depth = depth
        self.reader = RecordReader(catalog, conn, access, secret=secret)

    # --- input -------------------------------------------------------------------------------------
    def _write_context(self) -> WriteContext:
        """Coercion context carrying the writer's read scope: links and attachments only reach what the
        writer can see (an id outside it reads as "no record with id N")."""
        return set_writer_scope(WriteContext(self.cat, self.conn, self.access.user_id), self.reader.read_scope)

    def _load(self, t: TableDef, data: Any, creating: bool, ctx: WriteContext) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise BadRequest("'fields' must be an object mapping field keys to values")
        details: dict[str, list[str]] = {}
        # read-only fields are refused whatever the value (marshmallow never looks at a null)
        for key in data:
            f = t.fields_by_key.get(key)
            if f is not None and f.ftype.read_only:
                details[key] = ["is read-only"]
        writable = {k: v for k, v in data.items() if k not in details}
        values, errors = load_input(t, self.cat, writable, ctx)
        details.update(errors)
        for key, v in list(values.items()):
            if v is None:  # a null means "empty" in the type's own terms (false, no links, ...)
                f = t.fields_by_key[key]
                values[key] = f.ftype.coerce(None, f, ctx)
        for key in values:
            f = t.fields_by_key[key]
            if not self.access.field_writable(self.cat, t, f):
                details[key] = ["you may not change this field"]
        if creating:
            for f in t.fields:
                if f.key not in values and f.doc.get("default") is not None and f.ftype.supports_default:
                    self._default(f, values, ctx)
        for f in t.fields:
            if f.required and f.key not in details and (f.key in values or creating) \
                    and f.ftype.is_empty(values.get(f.key)):
                details.setdefault(f.key, []).append("is required")
        if details:
            raise ValidationFailed.from_details(details)
        return values

    def _load_coerced(self, t: TableDef, data: dict[str, Any], ctx: WriteContext) -> dict[str, Any]:
        """A new record's values already coerced by their field types: the checks of ``_load`` without the parse."""
        details: dict[str, list[str]] = {}
        values: dict[str, Any] = {}
        for key, v in data.items():
            f = t.fields_by_key.get(key)
            if f is None:
                details[key] = ["is not a field of this table"]
            elif f.ftype.read_only:
                details[key] = ["is read-only"]
            elif not self.access.field_writable(self.cat, t, f):
                details[key] = ["you may not change this field"]
            else:
                values[key] = f.ftype.coerce(None, f, ctx) if v is None else v
        rules = self.cat.cached(("create_rules", t), lambda: (
            [f for f in t.fields if f.doc.get("default") is not None and f.ftype.supports_default],
            [f for f in t.fields if f.required]))
        for f in rules[0]:
            if f.key not in values:
                self._default(f, values, ctx)
        for f in rules[1]:
            if f.key not in details and f.ftype.is_empty(values.get(f.key)):
                details.setdefault(f.key, []).append("is required")
        if details:
            raise ValidationFailed.from_details(details)
        return values

    def _default(self, f: FieldDef, values: dict[str, Any], ctx: WriteContext) -> None:
        """A new record's default: a plain value, or the creator / their today (``metadata.defaults``)."""
        value = defaults.resolve(f, f.doc["default"], self.access.user_id, self.access.timezone)
        if value is not None:
            values[f.key] = f.ftype.coerce(value, f, ctx)

    def _check_unique(self, t: TableDef, values: dict[str, Any], exclude_id: int | None,
                      prefix: str | None = None) -> None:
        for key, v in values.items():
            f = t.fields_by_key[key]
            if f.unique and f.stored and v is not None:
                # the unique index covers trashed rows too (they keep their values for restore)
                q = select(t.sa.c.id, t.sa.c.deleted_at).where(t.sa.c[f.column_name] == v)
                if exclude_id is not None:
                    q = q.where(t.sa.c.id != exclude_id)
                hit = self.conn.execute(q.order_by(t.sa.c.deleted_at.is_not(None)).limit(1)).first()
                if hit is not None:
                    # where the value sits is said only to a writer who may read that record: otherwise the
                    # answer would tell apart rows they can't see (a unique-value oracle)
                    if self._may_read_row(t, hit.id):
                        where = " by a record in the trash" if hit.deleted_at is not None else " by another record"
                    else:
                        where = ""
                    raise Conflict(f"{key}: the value is already used{where}",
                                   {f"{prefix or ''}{key}": [f"is already used{where}"]})

    def _flow_errors(self, t: TableDef, values: dict[str, Any], rid: int | None) -> dict[str, list[str]]:
        """The table's state flows (``metadata.flows``) against a new record's values (``rid`` None) or a
        change of record ``rid``: allowed start and moves for this user, fields required on entering."""
        table_flows = self.cat.cached(("flows", t), lambda: flows_of(t))
        if not table_flows:
            return {}
        if rid is not None and not any(fl.field.key in values for fl in table_flows):
            return {}
        roles = [str(r.get("key")) for r in self.access.roles]
        admin, loc = self.access.is_admin, self.access.locale
        current = self._stored_values(t, rid, table_flows) if rid is not None else {}
        errors: dict[str, list[str]] = {}
        for fl in table_flows:
            key = fl.field.key
            if rid is not None and (key not in values or values[key] == current.get(key)):
                continue
            new = values.get(key)
            name = functools.partial(_choice_label, fl.field, loc)
            if rid is None and not fl.may_start(new, roles, admin):
                errors[key] = [msg(loc, "flow_start", to=name(new),
                                   allowed=", ".join(name(v) for v in fl.initial or ()) or msg(loc, "nothing"))]
            elif rid is not None:
                why = fl.may_move(current.get(key), new, roles, admin)
                if why == "who":
                    errors[key] = [msg(loc, "flow_who", frm=name(current.get(key)), to=name(new))]
                elif why:
                    allowed = fl.targets(current.get(key), roles, admin)
                    errors[key] = [msg(loc, "flow_move", frm=name(current.get(key)), to=name(new),
                                       allowed=", ".join(name(v) for v in allowed) or msg(loc, "nothing"))
                                   if allowed else msg(loc, "flow_move_none", frm=name(current.get(key)))]
            for k in fl.require.get(new, ()) if new is not None else ():
                g = t.fields_by_key.get(k)
                if g is not None and g.ftype.is_empty(values[k] if k in values else current.get(k)):
                    errors.setdefault(k, []).append(msg(loc, "flow_required", state=label_text(fl.field.label, loc),
                                                        to=name(new)))
        return errors

    def _stored_values(self, t: TableDef, rid: int, table_flows: list[Any]) -> dict[str, Any]:
        """The current stored values of a record's flow fields and the fields they require."""
        keys = {fl.field.key for fl in table_flows} | {k for fl in table_flows for ks in fl.require.values()
                                                         for k in ks}
        stored = [t.fields_by_key[k] for k in sorted(keys) if k in t.fields_by_key and t.fields_by_key[k].stored]
        row = self.conn.execute(select(*(t.sa.c[f.column_name] for f in stored)).where(t.sa.c.id == rid)).first()
        out = {f.key: row[i] for i, f in enumerate(stored)} if row is not None else {}
        others = [k for k in keys if k in t.fields_by_key and k not in out]
        if others:
            rec = self.reader.by_ids(t, [rid])
            out.update({k: rec[0]["fields"].get(k) for k in others} if rec else {})
        return out

    def _check_parent(self, t: TableDef, ids: list[int]) -> None:
        """Rows of a table scoped through its parent may only be put under a parent the writer may edit
        (adding an order line changes the order): 403 naming the parent otherwise, nothing changes."""
        scope = self.access.parent_scope(self.cat, t, t.sa, "update")
        if scope is None or not ids:
            return
        bad = self.conn.execute(select(t.sa.c.id).where(t.sa.c.id.in_(ids), not_(scope)).limit(1)).first()
        if bad is not None:
            link = t.fields_by_key[t.doc["scope_parent"]]
            raise Forbidden(f"{link.key}: you may not change records under this {link.key}",
                            {link.key: [msg(self.access.locale, "parent_locked", field=label_text(
                                link.label, self.access.locale))]})

    def _may_read_row(self, t: TableDef, record_id: int) -> bool:
        scope = self.reader.read_scope(t, t.sa)
        if scope is None:
            return True
        return self.conn.execute(select(t.sa.c.id).where(t.sa.c.id == record_id, scope)).first() is not None

    def _check_rules(self, t: TableDef, ids: list[int], where: dict[int, str] | None = None) -> None:
        """Table validation rules on the written rows (as stored, computed fields included).

        Every broken rule of every row is reported at once; ``where`` names a row in the details
        (``records/3`` in a batch), a single write uses the rule's key alone.
        """
        rules = t.doc.get("validations") or []
        if not rules or not ids:
            return
        details: dict[str, list[str]] = {}
        first = ""
        for n, rule in enumerate(rules):
            fc = FilterCompiler(t, self.reader.ctx)
            # a condition that is NULL for a row (an empty value) does not hold
            holds = func.coalesce(fc.compile(rule["condition"]), false())
            broken = not_(holds)
            if rule.get("when"):
                broken = and_(func.coalesce(fc.compile(rule["when"]), false()), broken)
            rows = self.conn.execute(select(t.sa.c.id).where(t.sa.c.id.in_(ids), broken)
                                     .order_by(t.sa.c.id).limit(100)).all()
            msg = label_text(rule["message"], self.access.locale)
            name = rule.get("key") or f"validations/{n}"
            for row in rows:
                prefix = (where or {}).get(row.id)
                details.setdefault(f"{prefix}/{name}" if prefix else name, []).append(msg)
                first = first or msg
        if details:
            raise ValidationFailed(first if len(details) == 1 else f"{len(details)} validation rules are broken",
                                   details)

    def _split(self, t: TableDef, values: dict[str, Any]) -> tuple[dict[str, Any], dict[FieldDef, list[int]]]:
        # per field key: its column, or the field itself for a to-many link (junction rows); built once per catalog
        where = self.cat.cached(("split", t), lambda: {
            f.key: f if f.ftype.stored_as_links(f) else (f.column_name if f.stored else None)
            for f in t.fields})
        cols: dict[str, Any] = {}
        links: dict[FieldDef, list[int]] = {}
        for key, v in values.items():
            target = where[key]
            if isinstance(target, str):
                cols[target] = v
            elif target is not None:
                links[target] = v or []
        return cols, links

    def _write_links(self, t: TableDef, rid: int, links: dict[FieldDef, list[int]]) -> None:
        """Set this record's to-many links, within the writer's sight.

        Only links to records the writer can read are added or removed: links to records hidden from
        the writer stay as they are (a form showing the visible links must not drop the others). Moving
        a to-one link from the other side changes those records, so it needs the writer's update right
        on each of them, and they get their own history entries and record_updated events.
        """
        for f, ids in links.items():
            rel = relation(f, self.cat)
            rt = rel.table
            target = self.cat.table_by_id(f.options["target"])
            wanted = set(ids)
            if rt is target.sa:
                # reverse of a to-one link: point the other records' column at this record
                fwd = self.cat.field_by_id(f.options["pair"])
                col = rt.c[fwd.column_name]
                seen = self.reader.read_scope(target, rt)
                current = {r[0] for r in self.conn.execute(select(rt.c.id).where(
                    col == rid, rt.c.deleted_at.is_(None), *([seen] if seen is not None else [])))}
                unlink, link = current - wanted, wanted - current
                changed = sorted(unlink | link)
                if not changed:
                    continue
                self._check_target_update(target, fwd, changed)
                before = self.reader.by_ids(target, changed)
                stamp = {"version": rt.c.version + 1, "updated_at": db.utcnow(), "updated_by": self.access.user_id}
                if unlink:
                    self.conn.execute(update(rt).where(rt.c.id.in_(sorted(unlink))).values({col.name: None, **stamp}))
                if link:
                    self.conn.execute(update(rt).where(rt.c.id.in_(sorted(link))).values({col.name: rid, **stamp}))
                self._log_target_changes(target, before)
                continue
            other = rt.c[rel.other]
            existing = {r[0] for r in self.conn.execute(select(other).where(rt.c[rel.this] == rid))}
            visible: set[int] = set()
            if existing:
                visible = {r[0] for r in self.conn.execute(select(target.sa.c.id).where(
                    target.sa.c.id.in_(sorted(existing)), *self.reader.base_conditions(target)))}
            drop, add = visible - wanted, wanted - existing
            if not drop and not add:
                continue
            pair = self.cat.fields_by_id.get(f.options.get("pair") or -1)
            changed = sorted(drop | add)
            before = self.reader.by_ids(target, changed) if pair is not None else []
            if drop:
                self.conn.execute(delete(rt).where(rt.c[rel.this] == rid, other.in_(sorted(drop))))
            if add:
                self.conn.execute(insert(rt), [{rel.this: rid, rel.other: i} for i in sorted(add)])
            if before:
                self._log_target_changes(target, before)

    def _check_target_update(self, target: TableDef, fwd: FieldDef, ids: list[int]) -> None:
        """Re-pointing another record's to-one link is an update of that record: the writer needs the
        update right on it and on the link field (403 naming the first record refused)."""
        if not self.access.field_writable(self.cat, target, fwd):
            raise Forbidden(f"you may not change '{fwd.key}' of records in '{target.key}'")
        scope = self.access.scope(self.cat, target, target.sa, "update")
        if scope is None:
            return
        allowed = {r[0] for r in self.conn.execute(select(target.sa.c.id).where(target.sa.c.id.in_(ids), scope))}
        refused = [i for i in ids if i not in allowed]
        if refused:
            raise Forbidden(f"you may not update record {refused[0]} in '{target.key}' (its '{fwd.key}' would change)")

    def _log_target_changes(self, target: TableDef, before: list[dict[str, Any]]) -> None:
        """History entries and record_updated events for linked records whose side of a link changed."""
        now = db.utcnow()
        hist, events = [], []
        after = {r["id"]: r for r in self.reader.by_ids(target, [r["id"] for r in before])}
        for old_rec in before:
            rec = after.get(old_rec["id"])
            if rec is None:
                continue
            old = old_rec["fields"]
            changes = {k: {"old": old.get(k), "new": v} for k, v in rec["fields"].items()
                       if old.get(k) != v and not target.fields_by_key[k].ftype.computed}
            if changes:
                hist.append({"record_id": rec["id"], "at": now, "action": "update", "changes": changes})
                events.append({"record_id": rec["id"], "event": "record_updated",
                               "payload": {"changes": changes, "fields": rec["fields"]}})
        self._history(target, hist)
        self._events(target, events)

    def _autonumbers(self, t: TableDef, n: int) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for f in t.fields:
            if f.ftype.uses_counter:
                res = self.conn.execute(update(db.counters).where(db.counters.c.field_id == f.id)
                                        .values(value=db.counters.c.value + n).returning(db.counters.c.value))
                top = res.scalar()
                if top is None:
                    top = n
                    self.conn.execute(insert(db.counters).values(field_id=f.id, value=n))
                out[f.column_name] = list(range(int(top) - n + 1, int(top) + 1))
        return out

    def _history(self, t: TableDef, entries: list[dict[str, Any]]) -> None:
        if len(entries) >= COPY_FROM:  # set-based: one COPY / driver executemany, JSON encoded once
            uid, dumps = self.access.user_id, json.dumps
            bulk.insert_rows(self.conn, db.history, _HISTORY_COLUMNS, [
                (t.id, e["record_id"], e["at"], uid, e["action"],
                 None if e["changes"] is None else dumps(e["changes"])) for e in entries], json_text=("changes",))
        elif entries:
            self.conn.execute(_HISTORY_INSERT, [dict(e, table_id=t.id, user_id=self.access.user_id)
                                                   for e in entries])

    def _events(self, t: TableDef, events: list[dict[str, Any]]) -> None:
        if len(events) >= COPY_FROM:
            now, uid, dumps = db.utcnow(), self.access.user_id, json.dumps
            bulk.insert_rows(self.conn, db.outbox, _OUTBOX_COLUMNS, [
                (now, t.app_id, t.id, e["record_id"], e["event"], uid, dumps(e["payload"]), self.depth,
                 self.origin, "pending", 0, now) for e in events], json_text=("payload",))
        elif events:
            self.conn.execute(_OUTBOX_INSERT, [
                dict(e, app_id=t.app_id, table_id=t.id, user_id=self.access.user_id, depth=self.depth,
                     origin=self.origin) for e in events])

    # --- create ------------------------------------------------------------------------------------
    def create(self, t: TableDef, data: Any) -> dict[str, Any]:
        return self.create_many(t, [data], single=True)[0]

    def create_many(self, t: TableDef, items: Any, single: bool = False,
                    coerced: bool = False) -> list[dict[str, Any]]:
        """Create records in one pass: batched look-ups and checks, one multi-row INSERT … RETURNING.

        ``coerced``: the items hold values their field types already coerced (imports, which parse cells
        leniently with the same types); they skip the second parse but not the other checks.
        """
        self.access.require(self.cat, t, "create")
        if not isinstance(items, list) or not items:
            raise BadRequest("'records' must be a non-empty list")
        if len(items) > MAX_BATCH:
            raise TooLarge(f"a batch takes at most {MAX_BATCH} records")
        ctx = self._write_context()
        if not coerced:
            self._prefetch_links(t, items, ctx)
        loaded: list[dict[str, Any]] = []
        details: dict[str, list[str]] = {}
        for i, item in enumerate(items):
            try:
                loaded.append(self._load_coerced(t, item, ctx) if coerced
                              else self._load(t, item, creating=True, ctx=ctx))
            except ValidationFailed as e:
                if single:
                    raise
                for k, v in (e.details or {}).items():
                    details[f"records/{i}/{k}" if k else f"records/{i}"] = v
        for i, values in enumerate(loaded):
            for k, v in self._flow_errors(t, values, None).items():
                if single:
                    details[k] = v
                else:
                    details[f"records/{i}/{k}"] = v
        if details:
            raise ValidationFailed.from_details(details)
        guards.check(self, t, "create", [guards.PlannedWrite(None, v) for v in loaded], single)
        self._check_unique_batch(t, loaded, single)
        now = db.utcnow()
        numbers = self._autonumbers(t, len(loaded))
        rows: list[dict[str, Any]] = []
        link_sets: list[dict[FieldDef, list[int]]] = []
        columns: set[str] = set()
        for i, values in enumerate(loaded):
            cols, links = self._split(t, values)
            row = {"version": 1, "created_at": now, "updated_at": now, "created_by": self.access.user_id,
                   "updated_by": self.access.user_id, **cols}
            for col, nums in numbers.items():
                row[col] = nums[i]
            columns.update(row)
            rows.append(row)
            link_sets.append(links)
        for row in rows:  # one statement needs one column list; an absent value is NULL either way
            for col in columns.difference(row):
                row[col] = None
        try:
            ids = self._insert_rows(t, rows)
        except IntegrityError:
            raise Conflict("a unique value is already used by another record") from None
        self._write_links_many(t, ids, link_sets)
        self._check_parent(t, ids)
        self._check_rules(t, ids, None if single else {rid: f"records/{i}" for i, rid in enumerate(ids)})
        records = self._created_records(t, ids, rows, now) if coerced else self.reader.by_ids(t, ids)
        self._history(t, [{"record_id": r["id"], "at": now, "action": "create",
                           "changes": {k: {"old": None, "new": v} for k, v in r["fields"].items()
                                       if k in loaded[i] and v not in _NO_VALUE}}
                          for i, r in enumerate(records)])
        self._events(t, [{"record_id": r["id"], "event": "record_created", "payload": {"fields": r["fields"]}}
                         for r in records])
        return records

    def _created_records(self, t: TableDef, ids: list[int], rows: list[dict[str, Any]],
                         now: Any) -> list[dict[str, Any]]:
        """New records as ``RecordReader.by_ids`` returns them, built from the rows just written.

        Only what the database works out is read back, for the whole batch in one statement: computed
        fields (lookups, rollups, formulas), link displays, user names, to-many values. A field whose read
        expression is its plain column is serialised from the value written, by the same function a read
        uses; a table without the others reads nothing back. Field visibility that varies by row (or
        hides fields) takes the plain read-back.
        """
        vis = self.access.field_visibility(self.cat, t, t.sa)
        if any(v is not True for v in vis.values()):
            return self.reader.by_ids(t, ids)
        own, read = self.cat.cached(("created_plan", t), lambda: _created_plan(self.cat, t))
        read_back: dict[int, dict[str, Any]] = {}
        if read:
            cols, rvis = self.reader._columns(t, read)
            by_id = {r.id: r for r in self.conn.execute(select(*cols).where(t.sa.c.id.in_(ids)))}
            read_back = {rec["id"]: rec["fields"] for rec in self.reader.to_records(
                t, [by_id[i] for i in ids if i in by_id], read, rvis)}
        stamp = iso_utc(now)
        out = []
        for rid, row in zip(ids, rows, strict=True):
            other = read_back.get(rid, {})
            fields = {key: (to_json(row.get(col)) if col is not None else other.get(key)) for key, col, to_json in own}
            out.append({"id": rid, "version": 1, "created_at": stamp, "updated_at": stamp, "fields": fields})
        return out

    def _insert_rows(self, t: TableDef, rows: list[dict[str, Any]]) -> list[int]:
        """Multi-row INSERT … RETURNING id; the ids in the order of ``rows``.

        SQLAlchemy keeps RETURNING in parameter order on PostgreSQL with a sentinel, but on SQLite asking
        for that order falls back to one statement per row. There the writer holds the write lock
        (BEGIN IMMEDIATE) and each new row gets the next rowid in VALUES order, so sorted ids are in order.
        """
        if len(rows) == 1:
            stmt = self.cat.cached(("insert_returning", t), lambda: insert(t.sa).returning(t.sa.c.id))
            return [int(self.conn.execute(stmt, rows[0]).scalar_one())]
        if self.conn.dialect.name == "postgresql" and len(rows) >= COPY_FROM:
            return self._copy_rows(t, rows)
        if self.conn.dialect.name == "sqlite" and len(rows) >= COPY_FROM:
            names = list(rows[0])
            ids = bulk.insert_rows_ids(self.conn, t.sa, names, [tuple(row[n] for n in names) for row in rows])
            if len(ids) != len(rows):
                raise RuntimeError("the insert returned a different number of ids than rows")
            return ids
        if self.conn.dialect.name == "sqlite":
            ids = sorted(int(r) for r in self.conn.execute(insert(t.sa).returning(t.sa.c.id), rows).scalars())
        else:
            ids = [int(r) for r in self.conn.execute(
                insert(t.sa).returning(t.sa.c.id, sort_by_parameter_order=True), rows).scalars()]
        if len(ids) != len(rows):
            raise RuntimeError("the insert returned a different number of ids than rows")
        return ids

    def _copy_rows(self, t: TableDef, rows: list[dict[str, Any]]) -> list[int]:
        """PostgreSQL, larger batches: ids drawn from the table's sequence, then one COPY in this transaction.

        The same guarantees as INSERT: constraints (unique indexes) hold, and the caller's savepoint or
        transaction takes the rows back on any error. Values pass through the columns' own bind processing.
        """
        seq = self.conn.execute(select(func.pg_get_serial_sequence(t.name, "id"))).scalar_one()
        ids = sorted(int(r[0]) for r in self.conn.execute(
            select(func.nextval(seq)).select_from(func.generate_series(1, len(rows)))))
        names = list(rows[0])
        dialect = self.conn.dialect
        procs = [t.sa.c[n].type.dialect_impl(dialect).bind_processor(dialect) for n in names]
        quote = dialect.identifier_preparer.quote
        sql = f"COPY {quote(t.name)} (id, {', '.join(quote(n) for n in names)}) FROM STDIN"
        raw = self.conn.connection.driver_connection
        import psycopg

        try:
            with raw.cursor() as cur, cur.copy(sql) as copy:  # type: ignore[union-attr]
                for rid, row in zip(ids, rows, strict=True):
                    copy.write_row([rid, *(p(row[n]) if p is not None and row[n] is not None else row[n]
                                           for n, p in zip(names, procs, strict=True))])
        except psycopg.errors.IntegrityError as e:  # as INSERT would report it (a unique value clash)
            raise IntegrityError(sql, None, e) from None
        return ids

    def _prefetch_links(self, t: TableDef, items: list[Any], ctx: WriteContext) -> None:
        """One existence query per link field for the whole batch (coercion then answers from the cache)."""
        wanted: dict[int, set[int]] = {}
        people: set[int] = set()
        for item in items:
            if not isinstance(item, dict):
                continue
            for key, value in item.items():
                f = t.fields_by_key.get(key)
                refs = f.ftype.ids_to_check(value, f) if f is not None else None
                if refs is None:
                    continue
                what, ids = refs
                if what == USERS:
                    people.update(ids)
                else:
                    wanted.setdefault(int(what), set()).update(ids)
        if people:
            self._prefetch_users(people, ctx)
        for target_id, target_ids in wanted.items():
            target = self.cat.table_by_id(target_id)
            checked = sorted(i for i in target_ids if isinstance(i, int) and 0 < i <= 2**62)
            found: set[int] = set()
            for n in range(0, len(checked), MAX_BATCH):
                found |= existing_ids(ctx, target, checked[n:n + MAX_BATCH])
            ctx.cache[known_links_key(target_id)] = (set(checked), found)

    def _prefetch_users(self, ids: set[int], ctx: WriteContext) -> None:
        """User ids of a batch in one query: seeds the coercion cache (active users only, as resolve_user
        looks them up) and the names the read-back shows."""
        known: dict[Any, int | None] = ctx.cache.setdefault("users", {})
        found = {r.id: r for r in self.conn.execute(_USERS_BY_ID, {"ids": list(ids)})}
        for i in ids:
            row = found.get(i)
            known[i] = i if row is not None and row.active else None
        self.reader.names.update({r.id: {"id": r.id, "name": r.name} for r in found.values()})

    def _check_unique_batch(self, t: TableDef, loaded: list[dict[str, Any]], single: bool) -> None:
        """Unique fields: one query per field for the batch; a hit falls back to the row-by-row report."""
        clash = False
        for f in t.fields:
            if not (f.unique and f.stored):
                continue
            given = [v[f.key] for v in loaded if v.get(f.key) is not None]
            col = t.sa.c[f.column_name]
            for n in range(0, len(given), MAX_BATCH):
                if self.conn.execute(select(t.sa.c.id).where(col.in_(given[n:n + MAX_BATCH])).limit(1)).first():
                    clash = True
        seen: dict[str, set[Any]] = {}
        for i, values in enumerate(loaded):
            if clash:
                self._check_unique(t, values, None, None if single else f"records/{i}/")
            for key, v in values.items():
                if t.fields_by_key[key].unique and v is not None:
                    if v in seen.setdefault(key, set()):
                        raise Conflict(f"{key}: the value '{str(v)[:100]}' appears twice in the batch",
                                       {f"records/{i}/{key}": ["repeats a value earlier in the batch"]})
                    seen[key].add(v)

    def _write_links_many(self, t: TableDef, ids: list[int], link_sets: list[dict[FieldDef, list[int]]]) -> None:
        """Junction rows of new records, one DELETE and one INSERT per to-many link field."""
        by_field: dict[FieldDef, list[tuple[int, list[int]]]] = {}
        for rid, links in zip(ids, link_sets, strict=True):
            for f, targets in links.items():
                by_field.setdefault(f, []).append((rid, targets))
        for f, pairs in by_field.items():
            rel = relation(f, self.cat)
            rt = rel.table
            if rt is self.cat.table_by_id(f.options["target"]).sa:
                for rid, targets in pairs:  # the reverse of a to-one link moves other records
                    self._write_links(t, rid, {f: targets})
                continue
            self.conn.execute(delete(rt).where(rt.c[rel.this].in_([rid for rid, _ in pairs])))
            rows = [{rel.this: rid, rel.other: i} for rid, targets in pairs for i in targets]
            if rows:
                self.conn.execute(insert(rt), rows)

    # --- update ------------------------------------------------------------------------------------
    def _current(self, t: TableDef, rid: int, op: str) -> Any:
        """The row to change, locked, within the caller's update/delete scope (404/403 otherwise)."""
        sa = t.sa
        lock = self.conn.dialect.name == "postgresql"
        if self.reader.read_scope(t, sa) is None:  # one statement per table and schema version
            q = self.cat.cached(("current_row", t, lock), lambda: _lock_row(select(sa.c.id, sa.c.version).where(
                sa.c.id == bindparam("rid"), *self.reader.base_conditions(t)), lock))
            row = self.conn.execute(q, {"rid": rid}).first()
        else:
            q = _lock_row(select(sa.c.id, sa.c.version).where(sa.c.id == rid, *self.reader.base_conditions(t)), lock)
            row = self.conn.execute(q).first()
        if row is None:
            raise NotFound(f"no record {rid} in '{t.key}'")
        scope = self.access.scope(self.cat, t, sa, op)
        if scope is not None:
            ok = self.conn.execute(select(sa.c.id).where(sa.c.id == rid, scope)).first()
            if ok is None:
                raise Forbidden(f"you may not {op} this record")
        return row

    def update(self, t: TableDef, record_id: Any, data: Any, if_match: int | None = None) -> dict[str, Any]:
        return self.update_many(t, [{"id": record_id, "fields": data}], if_match=if_match, single=True)[0]

    def update_many(self, t: TableDef, items: Any, if_match: int | None = None,
                    single: bool = False, where: dict[int, str] | None = None) -> list[dict[str, Any]]:
        if not isinstance(items, list) or not items:
            raise BadRequest("'records' must be a non-empty list")
        if len(items) > MAX_BATCH:
            raise TooLarge(f"a batch takes at most {MAX_BATCH} records")
        ctx = self._write_context()
        self._prefetch_links(t, [i.get("fields") for i in items if isinstance(i, dict)], ctx)
        plan: list[tuple[int, int, dict[str, Any]]] = []
        details: dict[str, list[str]] = {}
        seen_ids: set[int] = set()
        for i, item in enumerate(items):
            if not isinstance(item, dict) or "id" not in item:
                raise BadRequest(f"records[{i}] needs an 'id' and 'fields'")
            rid = parse_id(item["id"])
            if rid in seen_ids:
                raise BadRequest(f"record {rid} appears twice in the batch")
            seen_ids.add(rid)
            row = self._current(t, rid, "update")
            expected = item.get("version", if_match)
            if expected is not None and (isinstance(expected, bool) or not isinstance(expected, int)):
                raise BadRequest(f"records[{i}]: 'version' must be the record's version number")
            if expected is not None and expected != row.version:
                raise PreconditionFailed(f"record {rid} was changed by someone else (version {row.version})",
                                         current=self.reader.get(t, rid))
            try:
                values = self._load(t, item.get("fields", {}), creating=False, ctx=ctx)
                flow_errors = self._flow_errors(t, values, rid)
                if flow_errors:
                    raise ValidationFailed.from_details(flow_errors)
            except ValidationFailed as e:
                if single:
                    raise
                for k, v in (e.details or {}).items():
                    details[f"records/{i}/{k}"] = v
                continue
            plan.append((rid, row.version, values))
        if details:
            raise ValidationFailed.from_details(details)
        guards.check(self, t, "update", [guards.PlannedWrite(rid, values) for rid, _v, values in plan], single)
        before = {r["id"]: r for r in self.reader.by_ids(t, [p[0] for p in plan])}
        now = db.utcnow()
        for i, (rid, version, values) in enumerate(plan):
            self._check_unique(t, values, rid, None if single else f"records/{i}/")
            cols, links = self._split(t, values)
            stmt = update(t.sa).where(t.sa.c.id == rid, t.sa.c.version == version).values(
                version=version + 1, updated_at=now, updated_by=self.access.user_id, **cols)
            try:
                res = self.conn.execute(stmt)
            except IntegrityError:
                raise Conflict("a unique value is already used by another record") from None
            if res.rowcount != 1:
                raise PreconditionFailed(f"record {rid} was changed by someone else",
                                         current=self.reader.get(t, rid))
            self._write_links(t, rid, links)
        ids = [p[0] for p in plan]
        self._check_parent(t, ids)
        self._check_rules(t, ids, where or (None if single else {rid: f"records/{i}" for i, rid in enumerate(ids)}))
        after = self.reader.by_ids(t, ids)
        hist, events = [], []
        for rec in after:
            old = before[rec["id"]]["fields"]
            changes = {k: {"old": old.get(k), "new": v} for k, v in rec["fields"].items()
                       if old.get(k) != v and not t.fields_by_key[k].ftype.computed}
            if not changes:
                continue
            hist.append({"record_id": rec["id"], "at": now, "action": "update", "changes": changes})
            events.append({"record_id": rec["id"], "event": "record_updated",
                           "payload": {"changes": changes, "fields": rec["fields"]}})
        self._history(t, hist)
        self._events(t, events)
        return after

    # --- delete / restore --------------------------------------------------------------------------
    def delete(self, t: TableDef, record_id: Any) -> None:
        self.delete_many(t, [parse_id(record_id)])

    def delete_many(self, t: TableDef, ids: list[int]) -> int:
        if len(ids) > 100_000:
            raise TooLarge("too many records at once")
        for rid in ids:
            self._current(t, rid, "delete")
        self._check_delete_blocks(t, ids)
        guards.check_delete(self, t, ids)
        now = db.utcnow()
        before = self.reader.by_ids(t, ids)
        self.conn.execute(update(t.sa).where(t.sa.c.id.in_(ids)).values(
            deleted_at=now, version=t.sa.c.version + 1, updated_by=self.access.user_id))
        self._history(t, [{"record_id": r["id"], "at": now, "action": "delete", "changes": None} for r in before])
        self._events(t, [{"record_id": r["id"], "event": "record_deleted", "payload": {"fields": r["fields"]}}
                         for r in before])
        return len(ids)

    def _check_delete_blocks(self, t: TableDef, ids: list[int]) -> None:
        """Links marked on_delete=block keep their targets from being deleted while linked."""
        for f in self.cat.fields_by_id.values():
            if not f.ftype.is_link or f.options.get("on_delete") != "block" or f.options.get("target") != t.id:
                continue
            pair = self.cat.fields_by_id.get(f.options.get("pair") or -1)
            if pair is None:
                continue
            rel = relation(pair, self.cat)
            ra = rel.table.alias()
            conds = [ra.c[rel.this].in_(ids)]
            if rel.trash:
                conds.append(ra.c.deleted_at.is_(None))
            hit = self.conn.execute(select(ra.c[rel.this]).where(*conds).limit(1)).first()
            if hit is not None:
                src = self.cat.table_by_id(f.table_id)
                raise Conflict(f"record {hit[0]} is still linked from '{src.key}.{f.key}'; unlink it first")

    def restore(self, t: TableDef, record_id: Any) -> dict[str, Any]:
        rid = parse_id(record_id)
        self.access.require(self.cat, t, "create")
        sa = t.sa
        conds = [sa.c.id == rid, sa.c.deleted_at.is_not(None)]
        scope = self.access.scope(self.cat, t, sa, "delete")
        if scope is not None:
            conds.append(scope)
        res = self.conn.execute(update(sa).where(*conds).values(deleted_at=None, version=sa.c.version + 1,
                                                                updated_at=db.utcnow()))
        if res.rowcount != 1:
            raise NotFound(f"no deleted record {rid} in '{t.key}'")
        for f in t.fields:
            if f.unique and f.stored:
                v = self.conn.execute(select(sa.c[f.column_name]).where(sa.c.id == rid)).scalar()
                if v is not None:
                    self._check_unique(t, {f.key: v}, rid)
        rec = self.reader.by_ids(t, [rid])[0]
        self._history(t, [{"record_id": rid, "at": db.utcnow(), "action": "restore", "changes": None}])
        self._events(t, [{"record_id": rid, "event": "record_created", "payload": {"fields": rec["fields"],
                                                                                    "restored": True}}])
        return rec

    # --- by filter ---------------------------------------------------------------------------------
    def matching_ids(self, t: TableDef, filter_tree: Any, op: str, limit: int = 100_000) -> list[int]:
        if not isinstance(filter_tree, dict):
            raise BadRequest("a bulk change needs a 'filter' (use {\"and\": []} for every record)")
        conds = self.reader.where(t, filter_tree)
        scope = self.access.scope(self.cat, t, t.sa, op)
        if scope is not None:
            conds.append(scope)
        rows = self.conn.execute(select(t.sa.c.id).where(*conds).order_by(t.sa.c.id).limit(limit + 1)).all()
        if len(rows) > limit:
            raise TooLarge(f"the filter matches more than {limit} records")
        return [r[0] for r in rows]

    def bulk_update(self, t: TableDef, filter_tree: Any, data: Any) -> int:
        """Change the same fields on every record the filter matches (one transaction, history each)."""
        ids = self.matching_ids(t, filter_tree, "update")
        if not ids:  # nothing the caller may update matches: nothing to check or change
            return 0
        # bad values are reported by field key, once, before any record is touched
        self._load(t, data, creating=False, ctx=self._write_context())
        for i in range(0, len(ids), MAX_BATCH):
            chunk = ids[i:i + MAX_BATCH]
            self.update_many(t, [{"id": rid, "fields": data} for rid in chunk],
                             where={rid: f"record:{rid}" for rid in chunk})
        return len(ids)

    def bulk_delete(self, t: TableDef, filter_tree: Any) -> int:
        ids = self.matching_ids(t, filter_tree, "delete")
        return self.delete_many(t, ids) if ids else 0

    def history(self, t: TableDef, record_id: Any, limit: int = 200) -> dict[str, Any]:
        rid = parse_id(record_id)
        sa = t.sa
        visible = self.conn.execute(select(sa.c.id).where(sa.c.id == rid, *self.reader.base_conditions(t))).first()
        if visible is None:
            raise NotFound(f"no record {rid} in '{t.key}'")
        vis = self.access.field_visibility(self.cat, t, sa)
        if any(v is not True for v in vis.values()):
            row_vis = {}
            for f in t.fields:
                v = vis.get(f.id, True)
                if v is True or v is False:
                    row_vis[f.key] = v
                else:
                    row_vis[f.key] = self.conn.execute(select(sa.c.id).where(sa.c.id == rid, v)).first() is not None
        else:
            row_vis = None
        h = db.history
        rows = self.conn.execute(select(h, db.users.c.name.label("user_name")).outerjoin(
            db.users, db.users.c.id == h.c.user_id).where(h.c.table_id == t.id, h.c.record_id == rid)
            .order_by(h.c.id.desc()).limit(limit)).all()
        entries = []
        for r in rows:
            changes = r.changes
            if changes and row_vis is not None:
                changes = {k: v for k, v in changes.items() if row_vis.get(k, False)}
            entries.append({"at": iso_utc(r.at), "user": {"id": r.user_id, "name": r.user_name} if r.user_id else None,
                            "action": r.action, "changes": changes or {}})
        self._recheck_history_links(t, entries)
        return {"entries": entries}

    def _recheck_history_links(self, t: TableDef, entries: list[dict[str, Any]]) -> None:
        """Linked records in history show their stored display text only if the reader can read them now
        (and sees the target's display field); otherwise ``{"id": n, "display": null}``."""
        links = {f.key: f for f in t.fields if f.ftype.is_link}
        wanted: dict[int, set[int]] = {}
        for e in entries:
            for key, change in e["changes"].items():
                if key in links and isinstance(change, dict):
                    for side in (change.get("old"), change.get("new")):
                        for item in side if isinstance(side, list) else [side]:
                            if isinstance(item, dict) and isinstance(item.get("id"), int):
                                wanted.setdefault(links[key].options["target"], set()).add(item["id"])
        readable: dict[int, set[int]] = {}
        for target_id, ids in wanted.items():
            target = self.cat.table_by_id(target_id)
            readable[target_id] = {r[0] for r in self.conn.execute(select(target.sa.c.id).where(
                target.sa.c.id.in_(sorted(ids)), *self.reader.base_conditions(target)))}

        def shown(item: Any, target_id: int) -> Any:
            if not isinstance(item, dict) or not isinstance(item.get("id"), int):
                return item
            if item["id"] not in readable.get(target_id, set()):
                return {"id": item["id"], "display": None}
            if self.reader.display_hidden(self.cat.table_by_id(target_id)):
                return {"id": item["id"], "display": f"#{item['id']}"}
            return item

        for e in entries:
            for key, change in list(e["changes"].items()):
                if key in links and isinstance(change, dict):
                    tid = links[key].options["target"]
                    e["changes"][key] = {side: [shown(i, tid) for i in v] if isinstance(v, list) else shown(v, tid)
                                         for side, v in change.items()}
