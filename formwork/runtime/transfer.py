"""Record import (CSV/XLSX → records) and export (records → CSV/XLSX).

Import streams the file through :mod:`formwork.runtime.tabular`, maps columns to fields, converts each
cell leniently with the field's own type (``"1,200.50"``, ``"¥300"``, ``"2026年11月23日"``, select labels,
``是/否``, users by name, links by display value) and writes batches of up to 1,000 rows through
:class:`RecordService`, so permissions, required and unique checks, validation rules, history and outbox
events are the same as for the API. Every batch runs in a savepoint; when one fails, its rows are retried
one by one to find and report the bad ones. The whole import runs in one more savepoint that is released
only when nothing failed (or ``on_error=skip``) and this is not a dry run: all or nothing by default.

Export pages through :class:`RecordReader` with its keyset cursor (same filter, sort, view, search and
permission semantics as the list endpoint) and writes what a person reads: link displays, user names,
select values, ISO dates; :mod:`tabular` neutralises formula-like text.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine

from formwork import db
from formwork.errors import BadRequest, FormworkError, ValidationFailed
from formwork.metadata.catalog import Catalog, FieldDef, TableDef, label_text
from formwork.metadata.fieldtypes.base import (
    BOOL,
    DATE,
    FILES,
    LINK_MANY,
    LINK_ONE,
    MULTI,
    NUMBER,
    SELECT,
    TEXT,
    USER,
    FieldValueError,
    WriteContext,
    cell_parts,
)
from formwork.metadata.fieldtypes.link import is_many
from formwork.runtime import auth, duplicates, jobs
from formwork.runtime.permissions import Access
from formwork.runtime.records import RecordReader, RecordService
from formwork.runtime.tabular import (
    MalformedRow,
    TabularError,
    TabularReader,
    open_tabular,
    write_csv,
    write_xlsx,
)

if TYPE_CHECKING:
    from flask import Flask

BATCH = 1000
MAX_ERRORS = 1000
MODES = ("insert", "upsert")
ON_ERROR = ("abort", "skip")
DUPLICATES = ("warn", "skip", "allow")
_NEUTRALIZED = re.compile("^'[=+\\-@\t\r\uff1d\uff0b\uff0d\uff20]")  # what tabular.neutralize prefixed
_RECORD_KEY = re.compile(r"^records/\d+/?")


# --- options and column plan ------------------------------------------------------------------------
def _bool_text(name: str, value: str | None) -> bool:
    v = (value or "false").strip().lower()
    if v not in ("true", "false", "1", "0", "yes", "no", ""):
        raise BadRequest(f"{name} must be true or false")
    return v in ("true", "1", "yes")


@dataclass
class ImportOptions:
    mapping: dict[str, str | None] | None = None
    mode: str = "insert"
    key_field: str | None = None
    dry_run: bool = False
    on_error: str = "abort"
    #: rows matching existing records under the table's duplicate rules: "warn" (import them, report the
    #: matches per row), "skip" (leave them out, reported) or "allow" (no check)
    duplicates: str = "warn"

    @classmethod
    def parse(cls, form: Mapping[str, str]) -> ImportOptions:
        """Options from the multipart form fields; 400 for malformed ones."""
        unknown = set(form) - {"mapping", "mode", "key_field", "dry_run", "on_error", "duplicates", "csrf_token"}
        if unknown:
            raise BadRequest(f"unknown form field(s): {', '.join(sorted(unknown))[:200]}")
        mapping: dict[str, str | None] | None = None
        raw = form.get("mapping")
        if raw not in (None, ""):
            try:
                parsed = json.loads(raw)
            except (json.JSONDecodeError, RecursionError):
                raise BadRequest("mapping must be a JSON object such as {\"Column\": \"field_key\"}") from None
            if not isinstance(parsed, dict) or not all(
                    isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in parsed.items()):
                raise BadRequest("mapping must be a JSON object of column names to field keys (or null)")
            mapping = parsed
        mode = (form.get("mode") or "insert").strip()
        if mode not in MODES:
            raise BadRequest("mode must be insert or upsert")
        on_error = (form.get("on_error") or "abort").strip()
        if on_error not in ON_ERROR:
            raise BadRequest("on_error must be abort or skip")
        key = (form.get("key_field") or "").strip() or None
        if mode == "upsert" and key is None:
            raise ValidationFailed.from_details({"key_field": ["is required when mode is upsert"]})
        dups = (form.get("duplicates") or "warn").strip()
        if dups not in DUPLICATES:
            raise BadRequest("duplicates must be warn, skip or allow")
        return cls(mapping, mode, key, _bool_text("dry_run", form.get("dry_run")), on_error, dups)

    def to_params(self) -> dict[str, Any]:
        return {"mapping": self.mapping, "mode": self.mode, "key_field": self.key_field,
                "dry_run": self.dry_run, "on_error": self.on_error, "duplicates": self.duplicates}

    @classmethod
    def from_params(cls, p: dict[str, Any]) -> ImportOptions:
        return cls(p.get("mapping"), p.get("mode", "insert"), p.get("key_field"), bool(p.get("dry_run")),
                   p.get("on_error", "abort"), p.get("duplicates", "warn"))


@dataclass
class ImportColumn:
    index: int
    name: str
    field: FieldDef


@dataclass
class ImportPlan:
    columns: list[ImportColumn]
    notes: list[dict[str, Any]] = field(default_factory=list)
    key: ImportColumn | None = None

    def column_of(self, key: str) -> str | None:
        return next((c.name for c in self.columns if c.field.key == key), None)


def _norm(text: str) -> str:
    return "".join(text.split()).casefold()


def _names(f: FieldDef) -> list[str]:
    label = f.label
    labels = list(label.values()) if isinstance(label, dict) else [label]
    return [f.key, *(str(x) for x in labels if x)]


def _importable(f: FieldDef) -> str | None:
    """Why a field cannot take values from a file, or None when it can."""
    if f.ftype.read_only or f.ftype.computed:
        return "is read-only (computed or maintained by the platform); column skipped"
    if f.ftype.kind == FILES:
        return "is an attachment field; files can't be imported from a spreadsheet, column skipped"
    return None


def plan_import(cat: Catalog, t: TableDef, access: Access, header: list[str],
                opts: ImportOptions) -> ImportPlan:
    """Match the file's columns to fields; 422 for a mapping or key_field that can't work."""
    vis = access.field_visibility(cat, t, t.sa)
    visible = [f for f in t.fields if vis.get(f.id, True) is not False]
    by_key = {f.key: f for f in visible}
    chosen: dict[int, FieldDef] = {}
    ignored: set[int] = set()
    problems: list[str] = []
    positions = {name: i for i, name in enumerate(header)}
    norm_positions = {_norm(name): i for i, name in enumerate(header)}
    for col, key in (opts.mapping or {}).items():
        idx = positions.get(col.strip(), norm_positions.get(_norm(col)))
        if idx is None:
            problems.append(f"the file has no column '{col[:100]}'")
            continue
        if key is None or key == "":
            ignored.add(idx)
            continue
        f = by_key.get(key)
        if f is None:
            problems.append(f"column '{col[:100]}': no field '{key[:100]}' in table '{t.key}'")
            continue
        chosen[idx] = f
    if problems:
        raise ValidationFailed.from_details({"mapping": problems})
    names: dict[str, list[FieldDef]] = {}
    for f in visible:
        for n in _names(f):
            names.setdefault(_norm(n), [])
            if f not in names[_norm(n)]:
                names[_norm(n)].append(f)
    used = {f.id for f in chosen.values()}
    notes: list[dict[str, Any]] = []
    for idx, name in enumerate(header):
        if idx in chosen or idx in ignored:
            continue
        exact = by_key.get(name.strip())
        candidates = [exact] if exact is not None else names.get(_norm(name), [])
        candidates = [f for f in candidates if f.id not in used]
        if len(candidates) == 1:
            chosen[idx] = candidates[0]
            used.add(candidates[0].id)
        else:
            reason = "matches no field" if not candidates else "matches several fields; map it explicitly"
            notes.append({"column": name, "field": None, "message": f"{reason}; column skipped"})
    seen: dict[int, int] = {}
    for idx, f in sorted(chosen.items()):
        if f.id in seen:
            problems.append(f"columns '{header[seen[f.id]]}' and '{header[idx]}' both map to field '{f.key}'")
        seen[f.id] = idx
    if problems:
        raise ValidationFailed.from_details({"mapping": problems})
    columns: list[ImportColumn] = []
    for idx, f in sorted(chosen.items()):
        why = _importable(f)
        if why is None and not access.field_writable(cat, t, f):
            why = "you may not change this field; column skipped"
        if why is not None:
            notes.append({"column": header[idx], "field": f.key, "message": f"'{f.key}' {why}"})
            continue
        columns.append(ImportColumn(idx, header[idx], f))
    if not columns:
        raise ValidationFailed.from_details({"mapping": [
            f"no column of the file matches a writable field of '{t.key}' (columns are matched to field "
            "keys or labels; send a mapping to choose)"]})
    plan = ImportPlan(columns, notes)
    if opts.key_field is not None:
        kf = by_key.get(opts.key_field)
        if kf is None:
            raise ValidationFailed.from_details({"key_field": [f"no field '{opts.key_field[:100]}' in '{t.key}'"]})
        kind = kf.ftype.value_kind(kf, cat)
        if not kf.stored or kind in (LINK_ONE, LINK_MANY) or (kind not in (TEXT, NUMBER) and not kf.unique):
            raise ValidationFailed.from_details({"key_field": [
                f"'{kf.key}' ({kf.type}) can't identify records; use a unique, text or number field"]})
        plan.key = next((c for c in columns if c.field.id == kf.id), None)
        if plan.key is None:
            raise ValidationFailed.from_details({"key_field": [f"no column of the file maps to '{kf.key}'"]})
    if opts.mode == "insert":
        mapped = {c.field.id for c in columns}
        missing = {f.key: ["is required but no column of the file maps to it"] for f in t.fields
                   if f.required and f.id not in mapped and _importable(f) is None
                   and f.doc.get("default") is None}
        if missing:
            raise ValidationFailed.from_details(missing)
    return plan


# --- cell conversion --------------------------------------------------------------------------------
def _prepare(value: Any) -> Any:
    """Undo what spreadsheets and our own export do to cells: float integers, neutralised text, blanks."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return int(value)
    if isinstance(value, str):
        if not value.strip():
            return None
        if _NEUTRALIZED.match(value):
            return value[1:]
    return value


def _api_value(value: Any) -> Any:
    """A coerced value back in the API's input form (RecordService coerces it once more, strictly)."""
    if isinstance(value, dt.datetime):
        return value.isoformat(timespec="seconds") + "Z"
    if isinstance(value, Decimal):
        return str(value)
    return value


def _key_norm(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float | Decimal):
        return Decimal(str(value)).normalize()
    return value


class LinkResolver:
    """Link cells → record ids, by the target's display value (or an id); one query per distinct value."""

    def __init__(self, cat: Catalog, reader: RecordReader) -> None:
        self.cat = cat
        self.reader = reader
        self.cache: dict[tuple[int, str], int] = {}

    def resolve(self, f: FieldDef, value: Any) -> int | list[int]:
        target = self.cat.table_by_id(f.options["target"])
        if is_many(f):
            out: list[int] = []
            for part in cell_parts(value):
                rid = self._one(target, part)
                if rid not in out:
                    out.append(rid)
            return out
        return self._one(target, value)

    def prefetch(self, f: FieldDef, values: list[Any]) -> None:
        """Resolve a batch's distinct display values of one link column in one query (text displays only).

        Values matching exactly one record are cached; the others go through ``_one``, which reports them.
        """
        target = self.cat.table_by_id(f.options["target"])
        disp = target.display_field
        if disp is None or disp.ftype.value_kind(disp, self.cat) != TEXT \
                or not self.reader.access.can_see_table(self.cat, target):
            return
        texts: set[str] = set()
        for value in values:
            for part in (cell_parts(value) if is_many(f) else [value]):
                text = part.isoformat() if isinstance(part, dt.date) else str(part).strip()
                if (target.id, text) not in self.cache:
                    texts.add(text)
        if not texts:
            return
        sa = target.sa
        expr = disp.ftype.expression(disp, sa, self.reader.ctx)
        conds = self.reader.base_conditions(target)
        found: dict[str, list[int]] = {}
        wanted = sorted(texts)
        for n in range(0, len(wanted), BATCH):
            for rid, text in self.reader.conn.execute(select(sa.c.id, expr).where(*conds,
                                                                                 expr.in_(wanted[n:n + BATCH]))):
                found.setdefault(text, []).append(rid)
        for text, ids in found.items():
            if len(ids) == 1 and text in texts:
                self.cache[(target.id, text)] = ids[0]

    def _one(self, target: TableDef, value: Any) -> int:
        text = value.isoformat() if isinstance(value, dt.date) else str(value).strip()
        key = (target.id, text)
        if key in self.cache:
            return self.cache[key]
        sa = target.sa
        conds = self.reader.base_conditions(target) if self.reader.access.can_see_table(self.cat, target) else None
        if conds is None:
            raise FieldValueError(f"no record '{text[:100]}' in '{target.key}'")
        disp = target.display_field
        ids: list[int] = []
        if disp is not None:
            expr = disp.ftype.expression(disp, sa, self.reader.ctx)
            match = disp.ftype.match_text(disp, expr, text, self.cat)
            if match is not None:
                ids = [r[0] for r in self.reader.conn.execute(select(sa.c.id).where(*conds, match).limit(2))]
        if len(ids) > 1:
            raise FieldValueError(f"'{text[:100]}' matches several records in '{target.key}'; use the record id")
        if not ids and text.isdigit():
            ids = [r[0] for r in self.reader.conn.execute(select(sa.c.id).where(*conds, sa.c.id == int(text)))]
        if not ids:
            raise FieldValueError(f"no record '{text[:100]}' in '{target.key}'")
        self.cache[key] = ids[0]
        return ids[0]


def convert_cell(f: FieldDef, value: Any, ctx: WriteContext, links: LinkResolver) -> Any:
    """One prepared, non-empty cell → the field's stored value (lenient), or FieldValueError."""
    return f.ftype.from_cell(value, f, ctx, links)


# --- the import itself ------------------------------------------------------------------------------
@dataclass
class _Row:
    number: int
    stored: dict[str, Any]  # the values as the field types coerced them (empty cells left out)
    empty: list[str] = field(default_factory=list)  # keys of the row's empty cells
    key: Any = None  # normalised, for comparisons
    stored_key: Any = None  # as the column holds it, for the look-up query
    record_id: int | None = None

    @property
    def fields(self) -> dict[str, Any]:
        """The row in the API's input form (an update parses it once more, strictly); None = an empty cell."""
        out: dict[str, Any] = dict.fromkeys(self.empty)
        out.update((k, _api_value(v)) for k, v in self.stored.items())
        return out


#: value kinds whose cells repeat (choices, people, linked records, dates, yes/no): a cell's conversion is
#: remembered per column, up to MEMO cells, so each distinct text is parsed once per import
_MEMO_KINDS = (SELECT, MULTI, BOOL, DATE, USER, LINK_ONE, LINK_MANY)
MEMO = 10_000


@dataclass
class _Column:
    index: int
    name: str
    field: FieldDef
    key: str
    required: bool
    is_key: bool
    memo: dict[str, Any] | None  # cell text → stored value


class Importer:
    def __init__(self, conn: Connection, cat: Catalog, access: Access, t: TableDef, plan: ImportPlan,
                 opts: ImportOptions, secret: bytes,
                 progress: Callable[[int], None] | None = None) -> None:
        self.conn, self.cat, self.access, self.t = conn, cat, access, t
        self.plan, self.opts, self.progress = plan, opts, progress
        self.svc = RecordService(cat, conn, access, secret=secret)
        self.reader = self.svc.reader
        self.ctx = WriteContext(cat, conn, access.user_id, lenient=True)
        self.links = LinkResolver(cat, self.reader)
        self.errors: list[dict[str, Any]] = []
        self.error_rows: set[int] = set()
        self.truncated = False
        self.rows = self.inserted = self.updated = 0
        self.inserted_rows: list[int] = []
        self.updated_rows: list[int] = []
        self.keys_seen: dict[Any, int] = {}
        self.dup_index: duplicates.DuplicateIndex | None = None  # built on the first batch, if the table has rules
        self.dup_rows: list[dict[str, Any]] = []
        self.dup_skipped = 0
        self.columns = self._columns()

    # errors
    def error(self, row: int, column: str | None, f: str | None, message: str) -> None:
        self.error_rows.add(row)
        if len(self.errors) >= MAX_ERRORS:
            self.truncated = True
            return
        self.errors.append({"row": row, "column": column, "field": f, "message": message})

    def _stop(self) -> bool:
        return self.opts.on_error == "abort" and self.truncated

    # rows
    def _columns(self) -> list[_Column]:
        key = self.plan.key
        return [_Column(c.index, c.name, c.field, c.field.key, c.field.required, c is key,
                        {} if c.field.ftype.value_kind(c.field, self.cat) in _MEMO_KINDS else None)
                for c in self.plan.columns]

    def _convert_cell(self, col: _Column, raw: Any) -> Any:
        """A prepared, non-empty cell → its stored value; FieldValueError as the field type raises it.

        Text cells of the repeating kinds are converted once per distinct text (errors are not kept: a
        link to a record an earlier batch created may resolve later)."""
        memo = col.memo
        if memo is None or type(raw) is not str:
            return convert_cell(col.field, raw, self.ctx, self.links)
        if raw in memo:
            value = memo[raw]
        else:
            value = convert_cell(col.field, raw, self.ctx, self.links)
            if len(memo) >= MEMO:
                memo.clear()
            memo[raw] = value
        return list(value) if isinstance(value, list) else value  # rows never share a list

    def convert(self, number: int, cells: list[Any]) -> _Row | None:
        coerced: dict[str, Any] = {}
        empty: list[str] = []
        ok = True
        key: Any = None
        stored_key: Any = None
        for col in self.columns:
            raw = _prepare(cells[col.index])
            if raw is None:
                empty.append(col.key)
                if col.required:
                    self.error(number, col.name, col.key, "is required")
                    ok = False
                continue
            try:
                stored = self._convert_cell(col, raw)
            except FieldValueError as e:
                self.error(number, col.name, col.key, e.message)
                ok = False
                continue
            if col.required and col.field.ftype.is_empty(stored):
                self.error(number, col.name, col.key, "is required")
                ok = False
                continue
            coerced[col.key] = stored
            if col.is_key:
                key, stored_key = _key_norm(stored), stored
        if self.plan.key is not None and ok:
            if key is None:
                self.error(number, self.plan.key.name, self.plan.key.field.key, "the key column is empty")
                return None
            first = self.keys_seen.get(key)
            if first is not None:
                self.error(number, self.plan.key.name, self.plan.key.field.key,
                           f"the same key as row {first}")
                return None
            self.keys_seen[key] = number
        return _Row(number, coerced, empty, key, stored_key) if ok else None

    def _match_keys(self, batch: list[_Row]) -> list[_Row]:
        """Upsert: find each row's record by the key field; more than one match is a row error."""
        assert self.plan.key is not None
        kf = self.plan.key.field
        col = self.t.sa.c[kf.column_name]
        wanted = {r.key for r in batch}
        found: dict[Any, list[int]] = {}
        raw_keys = [r.stored_key for r in batch]
        conds = self.reader.base_conditions(self.t)
        for rid, value in self.conn.execute(select(self.t.sa.c.id, col).where(col.in_(raw_keys), *conds)):
            k = _key_norm(value)
            if k in wanted:
                found.setdefault(k, []).append(rid)
        out = []
        for r in batch:
            ids = found.get(r.key, [])
            if len(ids) > 1:
                self.error(r.number, self.plan.key.name, kf.key,
                           f"{len(ids)} records have this {kf.key}; the key must identify one record")
                continue
            r.record_id = ids[0] if ids else None
            out.append(r)
        return out

    def _write(self, rows: list[_Row]) -> None:
        # new records take the values as the field types already coerced them (no second parse)
        inserts = [r.stored for r in rows if r.record_id is None]
        updates = [{"id": r.record_id, "fields": r.fields} for r in rows if r.record_id is not None]
        if inserts:
            self.svc.create_many(self.t, inserts, coerced=True)
        if updates:
            self.svc.update_many(self.t, updates)

    def _count(self, rows: list[_Row]) -> None:
        for r in rows:
            if r.record_id is None:
                self.inserted += 1
                self.inserted_rows.append(r.number)
            else:
                self.updated += 1
                self.updated_rows.append(r.number)

    def _check_duplicates(self, batch: list[_Row]) -> list[_Row]:
        """New rows matching existing records (or earlier rows) under the duplicate rules: reported per row
        and, with ``duplicates=skip``, left out. Each batch reads only the records its new rows may match
        (a large import reads the table once, see ``DuplicateIndex.cover``)."""
        if self.opts.duplicates == "allow" or not duplicates.rules(self.t):
            return batch
        if self.dup_index is None:
            self.dup_index = duplicates.DuplicateIndex.for_import(self.conn, self.t)
        self.dup_index.cover(self.conn, [r.stored for r in batch if r.record_id is None])
        out = []
        for r in batch:
            if r.record_id is not None:
                out.append(r)
                continue
            found = self.dup_index.lookup(r.stored)
            if found:
                skip = self.opts.duplicates == "skip"
                if len(self.dup_rows) < MAX_ERRORS:
                    self.dup_rows.append({
                        "row": r.number, "records": sorted(i for i in found if i > 0),
                        "rows": sorted(-i for i in found if i < 0),
                        "rules": sorted({k for ks in found.values() for k in ks}), "skipped": skip})
                if skip:
                    self.dup_skipped += 1
                    continue
            self.dup_index.add(-r.number, r.stored)  # later rows of the file are compared with this one
            out.append(r)
        return out

    def flush(self, batch: list[_Row]) -> None:
        if self.plan.key is not None and batch:
            batch = self._match_keys(batch)
        batch = self._check_duplicates(batch)
        if not batch:
            return
        try:
            with self.conn.begin_nested():
                self._write(batch)
            self._count(batch)
            return
        except FormworkError:
            pass
        for r in batch:  # find the rows at fault
            if self._stop():
                return
            try:
                with self.conn.begin_nested():
                    self._write([r])
                self._count([r])
            except FormworkError as e:
                self._record_failure(r, e)

    def _record_failure(self, r: _Row, e: FormworkError) -> None:
        if not e.details:
            self.error(r.number, None, None, e.message)
            return
        for k, msgs in e.details.items():
            key = _RECORD_KEY.sub("", str(k))
            f = self.t.fields_by_key.get(key)
            for m in (msgs if isinstance(msgs, list) else [msgs]):
                if f is None:  # a table rule ("validations/0", "record 12") or the record as a whole
                    self.error(r.number, None, None, str(m))
                else:
                    self.error(r.number, self.plan.column_of(f.key), f.key, str(m))

    @staticmethod
    def _chunks(rows: Iterator[tuple[int, list[Any]]]) -> Iterator[list[tuple[int, list[Any]]]]:
        chunk: list[tuple[int, list[Any]]] = []
        for item in rows:
            chunk.append(item)
            if len(chunk) >= BATCH:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def _prefetch_links(self, chunk: list[tuple[int, list[Any]]]) -> None:
        """Link columns: one look-up query per column and chunk instead of one per distinct value."""
        for col in self.plan.columns:
            if col.field.ftype.is_link:
                values = [v for v in (_prepare(cells[col.index]) for _n, cells in chunk
                                      if not isinstance(cells, MalformedRow)) if v is not None]
                if values:
                    self.links.prefetch(col.field, values)

    def run(self, rows: Iterator[tuple[int, list[Any]]]) -> dict[str, Any]:
        outer = self.conn.begin_nested()
        try:
            batch: list[_Row] = []
            for chunk in self._chunks(rows):
                self._prefetch_links(chunk)
                for number, cells in chunk:
                    self.rows += 1
                    if isinstance(cells, MalformedRow):  # lenient reading: the row is the error, not the file
                        self.error(number, None, None, cells.message)
                        row = None
                    else:
                        row = self.convert(number, cells)
                    if row is not None:
                        batch.append(row)
                    if self._stop():
                        break
                    if len(batch) >= BATCH:
                        self.flush(batch)
                        batch = []
                        if self.progress:
                            self.progress(self.rows)
                if self._stop():
                    break
            if not self._stop():
                self.flush(batch)
            if self.progress:
                self.progress(self.rows)
            failed = bool(self.error_rows) and self.opts.on_error == "abort"
            commit = not failed and not self.opts.dry_run
        except BaseException:
            outer.rollback()
            raise
        if commit:
            outer.commit()
        else:
            outer.rollback()
        return self.report(failed, commit)

    def report(self, failed: bool, committed: bool) -> dict[str, Any]:
        skipped = len(self.error_rows)
        out: dict[str, Any] = {
            "inserted": 0 if failed else self.inserted, "updated": 0 if failed else self.updated,
            "skipped": self.rows if failed else skipped + self.dup_skipped,
            "errors": sorted(self.errors, key=lambda e: e["row"]),
            "rows": self.rows, "notes": self.plan.notes, "dry_run": self.opts.dry_run, "committed": committed,
            "row_ranges": {"inserted": [] if failed else row_ranges(self.inserted_rows),
                           "updated": [] if failed else row_ranges(self.updated_rows)},
        }
        if self.truncated:
            out["errors_truncated"] = True
        if self.dup_rows:
            out["duplicates"] = self.dup_rows
            out["duplicates_skipped"] = self.dup_skipped
        return out


def row_ranges(numbers: list[int]) -> list[list[int]]:
    """Row numbers as ``[first, last]`` runs (a report of 100,000 rows stays small)."""
    out: list[list[int]] = []
    for n in sorted(numbers):
        if out and n == out[-1][1] + 1:
            out[-1][1] = n
        else:
            out.append([n, n])
    return out


def open_file(path: str | Path, name: str | None, lenient: bool = False) -> tuple[IO[bytes], TabularReader]:
    """Open a stored upload; the caller closes both (TabularError for a bad file, nothing left open).

    ``lenient``: a row that doesn't fit the header comes as a :class:`MalformedRow` (that row's error).
    """
    fh = open(path, "rb")  # noqa: SIM115 - closed by the caller together with the reader
    try:
        return fh, open_tabular(fh, name, lenient=lenient)
    except BaseException:
        fh.close()
        raise


def count_rows(path: str | Path, name: str | None, lenient: bool = False) -> int:
    """Data rows of a file; reading it to the end also finds encoding and shape errors up front."""
    fh, reader = open_file(path, name, lenient)
    with fh, reader:
        return sum(1 for _ in reader.rows())


def run_import(conn: Connection, cat: Catalog, access: Access, t: TableDef, path: str | Path,
               name: str | None, opts: ImportOptions, secret: bytes,
               progress: Callable[[int], None] | None = None, limit: int | None = None) -> dict[str, Any]:
    """Import one stored file in the caller's transaction; see the module docstring for the rules.

    With ``on_error=skip`` a malformed row (more cells than the header, an over-long cell) is that row's
    error and the others go in; ``limit`` reads only the first rows (the wizard's dry-run preview).
    """
    access.require(cat, t, "import")
    if opts.mode == "insert":
        access.require(cat, t, "create")
    fh, reader = open_file(path, name, lenient=opts.on_error == "skip")
    with fh, reader:
        plan = plan_import(cat, t, access, reader.header, opts)
        rows = reader.rows() if limit is None else itertools.islice(reader.rows(), limit)
        return Importer(conn, cat, access, t, plan, opts, secret, progress).run(rows)


# --- export -----------------------------------------------------------------------------------------
@dataclass
class ExportSpec:
    filter_tree: Any = None
    sort: str | None = None
    search: str | None = None
    fields: str | None = None
    view: dict[str, Any] | None = None
    header: str = "labels"


def export_columns(cat: Catalog, t: TableDef, access: Access, reader: RecordReader,
                   spec: ExportSpec) -> tuple[list[FieldDef], list[str]]:
    """The exported fields (hidden ones dropped) and the header: labels in the user's locale, or keys."""
    vis = access.field_visibility(cat, t, t.sa)
    fields = [f for f in reader.pick_fields(t, spec.fields, spec.view) if vis.get(f.id, True) is not False]
    if spec.header == "keys":
        return fields, [f.key for f in fields]
    labels = [label_text(f.label, access.locale).strip() or f.key for f in fields]
    counts: dict[str, int] = {}
    for x in labels:
        counts[_norm(x)] = counts.get(_norm(x), 0) + 1
    return fields, [x if counts[_norm(x)] == 1 else f"{x} ({f.key})" for x, f in zip(labels, fields, strict=True)]


def export_cell(f: FieldDef, kind: str, value: Any, fmt: str) -> Any:
    """A JSON field value → a cell a person reads (and that import reads back to the same value)."""
    if value is None or value == [] or value == "":
        return None
    if kind == BOOL and isinstance(value, bool):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    if kind == DATE and isinstance(value, str) and fmt == "xlsx":
        try:
            return dt.date.fromisoformat(value[:10])
        except ValueError:
            return value
    return f.ftype.export_text(value, f)


def iter_export(reader: RecordReader, t: TableDef, fields: list[FieldDef], spec: ExportSpec,
                fmt: str, page: int = 1000) -> Iterator[list[Any]]:
    """Rows of cells, one page of records at a time (keyset cursor), never the whole table at once."""
    kinds = [f.ftype.value_kind(f, reader.cat) for f in fields]
    keys = [f.key for f in fields] or None
    cursor: str | None = None
    while True:
        result = reader.list(t, filter_tree=spec.filter_tree, sort=spec.sort, search=spec.search,
                             fields=keys, limit=page, cursor=cursor, view=spec.view)
        for rec in result["records"]:
            values = rec["fields"]
            yield [export_cell(f, k, values.get(f.key), fmt) for f, k in zip(fields, kinds, strict=True)]
        cursor = result["next_cursor"]
        if not cursor:
            return


# --- the whole of an export, and imports run as background jobs (what the HTTP layer calls) -------------
EXPORT_FORMATS = ("csv", "xlsx")
XLSX_MIME = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
_CHUNK = 64 * 1024


@dataclass
class ExportFile:
    """An export ready to send: its file name, media type, the bytes and (when known) their size."""

    filename: str
    mimetype: str
    chunks: Iterator[bytes]
    size: int | None = None


def export_records(conn: Connection, cat: Catalog, access: Access, t: TableDef, spec: ExportSpec, fmt: str,
                   secret: bytes, engine: Engine, ip: str | None = None) -> ExportFile:
    """Export a table's records as the caller may read them, and leave an ``export`` audit row in ``conn``.

    The query is tried on one row first, so a bad filter or sort is a 400 before anything streams. XLSX is
    written now, to a temporary file (its size is known); CSV streams afterwards from its own read
    transaction, so ``conn`` (with the audit row) can commit before the first byte is sent.
    """
    if fmt not in EXPORT_FORMATS:
        raise BadRequest("format must be csv or xlsx")
    access.require(cat, t, "export")
    reader = RecordReader(cat, conn, access, secret=secret)
    fields, names = export_columns(cat, t, access, reader, spec)
    reader.list(t, filter_tree=spec.filter_tree, sort=spec.sort, search=spec.search,
                fields=[f.key for f in fields] or None, limit=1, view=spec.view)
    auth.audit(conn, "export", user_id=access.user_id, username=access.username,
               target=f"table:{cat.app_by_id(t.app_id).key}.{t.key}", ip=ip,
               details={"format": fmt, "view": spec.view["key"] if spec.view else None, "filter": spec.filter_tree,
                        "sort": spec.sort, "search": spec.search, "fields": [f.key for f in fields]})
    if fmt == "xlsx":
        out = tempfile.TemporaryFile()
        try:
            write_xlsx(names, iter_export(reader, t, fields, spec, fmt), t.key, out=out)
        except TabularError as e:
            out.close()
            raise BadRequest(e.message) from None
        except BaseException:
            out.close()
            raise
        size = out.tell()
        out.seek(0)
        return ExportFile(f"{t.key}.xlsx", XLSX_MIME, _file_chunks(out), size)

    def stream() -> Iterator[bytes]:
        with db.transaction(engine, write=False) as c:
            yield from write_csv(names, iter_export(RecordReader(cat, c, access, secret=secret), t, fields, spec,
                                                    fmt))

    return ExportFile(f"{t.key}.csv", "text/csv", stream())


def _file_chunks(fh: IO[bytes]) -> Iterator[bytes]:
    """Stream a temporary file and close it at the end (or when the response is dropped)."""
    try:
        while chunk := fh.read(_CHUNK):
            yield chunk
    finally:
        fh.close()


def audit_import(conn: Connection, access: Access, app_key: str, table_key: str, name: str,
                 opts: ImportOptions, report: dict[str, Any], ip: str | None) -> None:
    auth.audit(conn, "import", user_id=access.user_id, username=access.username,
               target=f"table:{app_key}.{table_key}", ip=ip,
               details={"file": name, "mode": opts.mode, "dry_run": opts.dry_run, "on_error": opts.on_error,
                        "rows": report["rows"], "inserted": report["inserted"], "updated": report["updated"],
                        "skipped": report["skipped"], "errors": len(report["errors"]),
                        "committed": report["committed"]})


def import_failed(report: dict[str, Any]) -> bool:
    """An all-or-nothing import that found errors (a dry run only reports them)."""
    return bool(report["errors"]) and not report["committed"] and not report["dry_run"]


def import_failure_message(report: dict[str, Any]) -> str:
    n = len({e["row"] for e in report["errors"]})
    more = "+" if report.get("errors_truncated") else ""
    return f"{n}{more} row{'s' if n != 1 else ''} of the file have errors; nothing was imported"


def import_job(app: Flask, ctx: jobs.JobContext) -> dict[str, Any]:
    """The ``import`` job: a large upload imported in the background; the stored file is removed after."""
    p = ctx.params
    path = Path(p["path"])
    opts = ImportOptions.from_params(p["options"])
    plat = app.extensions["formwork"]
    try:
        total = ctx.runner.live.get(ctx.job_id, (0, None))[1]
        if total is None:
            total = count_rows(path, p["name"], lenient=opts.on_error == "skip")
            ctx.progress(0, total)
        with db.transaction(plat.engine) as conn:
            cat = plat.catalogs.get(conn)
            if ctx.user_id is None:
                raise jobs.JobFailed("the job has no user")
            access = Access.for_user(conn, ctx.user_id)
            t = cat.table(p["app"], p["table"])
            report = run_import(conn, cat, access, t, path, p["name"], opts,
                                str(app.config["SECRET_KEY"]).encode(), progress=ctx.progress)
            audit_import(conn, access, p["app"], t.key, p["name"], opts, report, ip="")
    except TabularError as e:
        raise jobs.JobFailed(e.message) from None
    finally:
        if not p.get("keep_file"):  # the wizard keeps it for the rejected-rows file (removed by age)
            path.unlink(missing_ok=True)
    if import_failed(report):
        raise jobs.JobFailed(import_failure_message(report), report)
    return report


# --- what the import wizard needs: a sample, suggested mapping, guessed types, the rejected rows ----------
_NUMBER = re.compile(r"^[-+]?[¥$€£]?\s*[-+]?(\d{1,3}(,\d{3})+|\d+)(\.\d+)?$")
_DATE = re.compile(r"^\d{4}([-/.])\d{1,2}\1\d{1,2}$|^\d{4}年\d{1,2}月\d{1,2}日$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_URL = re.compile(r"^https?://\S+$", re.IGNORECASE)
_BOOLS = {"true", "false", "yes", "no", "是", "否", "y", "n", "✓", "✔"}
GUESSABLE_TYPES = ("text", "long_text", "number", "decimal", "date", "checkbox", "email", "url")


def guess_type(values: list[Any]) -> str:
    """The field type a column's (non-empty) sample values look like; ``text`` when unsure."""
    vals = [v for v in values if v is not None and str(v).strip() != ""]
    if not vals:
        return "text"
    if all(isinstance(v, bool) or str(v).strip().casefold() in _BOOLS for v in vals) \
            and not all(isinstance(v, int | float) and not isinstance(v, bool) for v in vals):
        return "checkbox"
    if all(isinstance(v, int | float) and not isinstance(v, bool) or
           (isinstance(v, str) and _NUMBER.match(v.strip())) for v in vals):
        whole = all(isinstance(v, int) or (isinstance(v, str) and "." not in v) for v in vals)
        return "number" if whole else "decimal"
    if all(isinstance(v, dt.date) or (isinstance(v, str) and _DATE.match(v.strip())) for v in vals):
        return "date"
    texts = [str(v).strip() for v in vals]
    if all(_EMAIL.match(x) for x in texts):
        return "email"
    if all(_URL.match(x) for x in texts):
        return "url"
    if any(len(x) > 200 or "\n" in x for x in texts):
        return "long_text"
    return "text"


@dataclass
class FileSample:
    """The start of an uploaded file: its header, how many data rows, the first rows (a malformed one
    carries its message) and a guessed field type per column."""

    header: list[str]
    rows: list[tuple[int, list[Any], str | None]]
    total: int
    guesses: list[str]


def sample_file(path: str | Path, name: str | None, n: int = 20, guess_rows: int = 200) -> FileSample:
    """Read the whole file once (finding errors of the file as a whole up front, TabularError) and keep
    the first ``n`` rows and a type guess per column from the first ``guess_rows``."""
    fh, reader = open_file(path, name, lenient=True)
    with fh, reader:
        header = reader.header
        rows: list[tuple[int, list[Any], str | None]] = []
        columns: list[list[Any]] = [[] for _ in header]
        total = 0
        for number, cells in reader.rows():
            total += 1
            bad = isinstance(cells, MalformedRow)
            if len(rows) < n:
                rows.append((number, list(cells), cells.message if isinstance(cells, MalformedRow) else None))
            if total <= guess_rows and not bad:
                for i, v in enumerate(cells[:len(header)]):
                    columns[i].append(_prepare(v))
    return FileSample(header, rows, total, [guess_type(c) for c in columns])


def importable_fields(cat: Catalog, t: TableDef, access: Access) -> list[FieldDef]:
    """The fields a file's column may be mapped to by this user (visible, writable, not computed)."""
    vis = access.field_visibility(cat, t, t.sa)
    return [f for f in t.fields if vis.get(f.id, True) is not False and _importable(f) is None
            and access.field_writable(cat, t, f)]


def suggest_mapping(fields: list[FieldDef], header: list[str]) -> list[str | None]:
    """Each column's field key by its name (a key, or a label in any language), or None; a field once."""
    names: dict[str, list[FieldDef]] = {}
    for f in fields:
        for n in _names(f):
            bucket = names.setdefault(_norm(n), [])
            if f not in bucket:
                bucket.append(f)
    used: set[int] = set()
    out: list[str | None] = []
    for col in header:
        exact = next((f for f in fields if f.key == col.strip()), None)
        cands = [exact] if exact is not None else names.get(_norm(col), [])
        cands = [f for f in cands if f.id not in used]
        if len(cands) == 1:
            used.add(cands[0].id)
            out.append(cands[0].key)
        else:
            out.append(None)
    return out


def key_fields(cat: Catalog, fields: list[FieldDef]) -> list[FieldDef]:
    """The fields an upsert can match records on (what :func:`plan_import` accepts as ``key_field``)."""
    out = []
    for f in fields:
        kind = f.ftype.value_kind(f, cat)
        if f.stored and kind not in (LINK_ONE, LINK_MANY) and (kind in (TEXT, NUMBER) or f.unique):
            out.append(f)
    return out


def rejected_rows(path: str | Path, name: str | None, numbers: set[int]) -> tuple[list[str], Iterator[
        tuple[int, list[Any]]]]:
    """The header and the rows of a stored upload whose numbers are given, as the file holds them."""
    fh, reader = open_file(path, name, lenient=True)

    def rows() -> Iterator[tuple[int, list[Any]]]:
        with fh, reader:
            for number, cells in reader.rows():
                if number in numbers:
                    yield number, list(cells)

    return reader.header, rows()


# --- installing a template as a job (the gallery) ---------------------------------------------------------
def template_job(app: Flask, ctx: jobs.JobContext) -> dict[str, Any]:
    """The ``template`` job: install a bundled template as a new app, with its demo data if asked.

    One transaction: the app and its data appear together or not at all. Progress counts one step for
    the definitions and then the demo generator's own unit (customers, for the CRM).
    """
    from formwork.metadata import portable
    from formwork.metadata.service import MetadataService
    from formwork.runtime import demo
    from formwork.runtime.previews import builder_actor

    p = ctx.params
    plat = app.extensions["formwork"]
    name, key, with_demo = str(p["template"]), p.get("key") or None, bool(p.get("demo"))
    scale = 0
    if with_demo:
        module = demo.load_generator(name)
        scale = int(getattr(module, "SIZES", demo.SIZES)["small"]) if module is not None else 0
    total = 1 + scale
    ctx.progress(0, total)
    if ctx.user_id is None:
        raise jobs.JobFailed("the job has no user")
    with db.transaction(plat.engine) as conn:
        cat = plat.catalogs.get(conn)
        access = Access.for_user(conn, ctx.user_id)
        svc = MetadataService(conn, builder_actor(access, None), cat)
        new = portable.install_template(svc, name, key)
        ctx.progress(1, total)
        counts: dict[str, Any] = {}
        if with_demo and scale:
            language = str(p.get("language")) if p.get("language") in demo.LANGUAGES else "zh-CN"
            counts = demo.generate_demo(conn, svc.catalog, new.key, name, language=language,
                                        progress=lambda _unit, done: ctx.progress(1 + done, total))["tables"]
        auth.audit(conn, "template_installed", user_id=access.user_id, username=access.username,
                   target=f"app:{new.key}", details={"template": name, "demo_data": with_demo})
    return {"app": new.key, "template": name, "demo_data": with_demo, "records": counts}


# --- a large export as a job (the table page's Export on a big table) -------------------------------------
def export_size(conn: Connection, cat: Catalog, access: Access, t: TableDef, spec: ExportSpec,
                secret: bytes, cap: int) -> int:
    """How many records the export would hold, counted up to ``cap`` (enough to choose: now or as a job)."""
    reader = RecordReader(cat, conn, access, secret=secret)
    conds = reader.where(t, spec.filter_tree, spec.search, spec.view)
    return reader.count(t, conds, cap=cap)


def export_job(app: Flask, ctx: jobs.JobContext) -> dict[str, Any]:
    """The ``export`` job: the file is written under ``FILES_DIR/exports`` with progress per 500 records;
    the table page's job view offers it for download (to the job's owner only)."""
    p = ctx.params
    plat = app.extensions["formwork"]
    secret = str(app.config["SECRET_KEY"]).encode()
    path = Path(p["path"])
    fmt = p["format"]
    if ctx.user_id is None:
        raise jobs.JobFailed("the job has no user")
    path.parent.mkdir(parents=True, exist_ok=True)
    with db.transaction(plat.engine, write=False) as conn:
        cat = plat.catalogs.get(conn)
        access = Access.for_user(conn, ctx.user_id)
        t = cat.table(p["app"], p["table"])
        access.require(cat, t, "export")
        s = p["spec"]
        spec = ExportSpec(filter_tree=s.get("filter"), sort=s.get("sort"), search=s.get("search"),
                          view=s["view_doc"] if isinstance(s.get("view_doc"), dict)  # a personal view, as it was
                          else t.view(s["view"]) if s.get("view") else None)
        reader = RecordReader(cat, conn, access, secret=secret)
        total = export_size(conn, cat, access, t, spec, secret, cap=10_000_000)
        ctx.progress(0, total)
        fields, names = export_columns(cat, t, access, reader, spec)
        done = 0

        def counted() -> Iterator[list[Any]]:
            nonlocal done
            for row in iter_export(reader, t, fields, spec, fmt):
                done += 1
                if done % 500 == 0:
                    ctx.progress(done, total)
                yield row

        try:
            with path.open("wb") as out:
                if fmt == "xlsx":
                    write_xlsx(names, counted(), t.key, out=out)
                else:
                    for chunk in write_csv(names, counted()):
                        out.write(chunk)
        except TabularError as e:
            path.unlink(missing_ok=True)
            raise jobs.JobFailed(e.message) from None
        except BaseException:
            path.unlink(missing_ok=True)
            raise
    with db.transaction(plat.engine) as conn:
        auth.audit(conn, "export", user_id=access.user_id, username=access.username,
                   target=f"table:{p['app']}.{t.key}",
                   details={"format": fmt, "view": s.get("view"), "filter": spec.filter_tree, "sort": spec.sort,
                            "search": spec.search, "fields": [f.key for f in fields], "job": ctx.job_id})
    return {"rows": done, "filename": f"{t.key}.{fmt}", "format": fmt}
