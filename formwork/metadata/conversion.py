"""Type conversion of a field: whether a change touches data, the dry run (counts and samples) and the
conversion itself.

The values a conversion reads come through a ``ReadValues`` callable chosen by the caller: the runtime
passes one backed by its record reader (users and links as readers see them), so metadata never imports
the runtime, and the runtime can apply a reader's row scope and hidden fields to previews.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Index,
    String,
    and_,
    bindparam,
    case,
    cast,
    column,
    false,
    func,
    literal,
    select,
    true,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from formwork.errors import Conflict, ValidationFailed
from formwork.metadata.catalog import Catalog, FieldDef, TableDef, build_user_table
from formwork.metadata.fieldtypes.base import FieldValueError, QueryContext, WriteContext
from formwork.metadata.schema_editor import SchemaEditor

MAX_SAMPLES = 10
MAX_EXACT_INT = 10**15
#: every character Python's str.strip() removes: text fields strip input, so SQL must check the same set
_WHITESPACE = "".join(chr(c) for c in range(0x110000) if chr(c).isspace())

#: every record's value of one field as JSON, in id order: ``(catalog, conn, table, field) -> (id, value)``
ReadValues = Callable[[Catalog, Connection, TableDef, FieldDef], Iterable[tuple[int, Any]]]
#: what a preview may show its reader: (a condition on the table's rows they may read, or None for every
#: row; whether the field's values are shown to them). The conversion itself still converts every row.
PreviewScope = Callable[[Catalog, Connection, TableDef, FieldDef], tuple[Any, bool]]


def stored_values(catalog: Catalog, conn: Connection, t: TableDef, f: FieldDef) -> Iterator[tuple[int, Any]]:
    """A ReadValues without the runtime: each value as its field type shows it (users and links stay ids).

    Used when the caller passes none (the system actor of the CLI); the HTTP API and the UI pass the
    record reader's.
    """
    ctx = QueryContext(catalog=catalog, dialect=conn.dialect.name)
    expr = f.ftype.expression(f, t.sa, ctx)
    for rid, raw in conn.execute(select(t.sa.c.id, expr).order_by(t.sa.c.id)):
        yield rid, f.ftype.to_json(raw, f)


def column_signature(f: FieldDef) -> str | None:
    ct = f.ftype.column_type(f)
    return None if ct is None else repr(ct)


def type_changed(old: FieldDef, new: FieldDef) -> bool:
    """A new type, or a new column type (e.g. a precision change moves number from integer to decimal)."""
    return new.type != old.type or column_signature(old) != column_signature(new)


def needs_conversion(old: FieldDef, new: FieldDef) -> bool:
    """Whether the stored values must be rewritten (or checked) for ``new``."""
    if type_changed(old, new):
        return True
    return old.ftype.options_affect_data(old, new)


@dataclass
class FastConversion:
    """A conversion SQL does exactly for most rows: ``value`` is right wherever ``exact`` holds.

    Rows where the old value is present but ``exact`` is false go through the Python path, so the
    dry-run counts and the converted values are the same as a row-by-row conversion would give.
    """

    mode: str  # copy | number_text | checkbox_text | to_number
    dialect: str

    def present(self, src: Any) -> Any:
        if self.mode == "checkbox_text":
            return src.is_(True)
        if self.mode == "copy":
            return and_(src.is_not(None), src != "")
        return src.is_not(None)

    def value(self, src: Any, new: FieldDef) -> Any:
        if self.mode == "checkbox_text":
            return literal("true", String())
        if self.mode == "number_text":
            return cast(src, String())
        if self.mode == "to_number":
            return cast(src, new.ftype.column_type(new))  # type: ignore[arg-type]
        return src

    def exact(self, src: Any, new: FieldDef) -> Any:
        if self.mode == "to_number":
            conds = [src > -MAX_EXACT_INT, src < MAX_EXACT_INT]
            if new.options.get("min") is not None:
                conds.append(src >= new.options["min"])
            if new.options.get("max") is not None:
                conds.append(src <= new.options["max"])
            return and_(*conds)
        limit = min(new.options.get("max_length") or new.ftype.default_max,  # type: ignore[attr-defined]
                    new.ftype.default_max)  # type: ignore[attr-defined]
        if self.mode == "checkbox_text":
            return true() if limit >= 4 else false()
        value = self.value(src, new)
        conds = [func.length(value) <= limit]
        if new.ftype.strips_whitespace:
            trim = func.btrim if self.dialect == "postgresql" else func.trim
            conds.append(value == trim(value, literal(_WHITESPACE, String())))
        return and_(*conds)


def fast_conversion(old: FieldDef, new: FieldDef, dialect: str) -> FastConversion | None:
    """The set-based form of this conversion, when there is one (no user text reaches the SQL)."""
    if new.ftype.computed or not old.stored or new.ftype.column_type(new) is None or new.options.get("regex"):
        return None
    form = old.ftype.sql_text_form(old)
    if form is None:
        return None
    if new.ftype.accepts_sql_text(new):
        return FastConversion(form, dialect)
    if form == "number_text" and new.ftype.accepts_sql_number(new):
        return FastConversion("to_number", dialect)
    return None


class TypeConversion:
    """Converts every value of a field into its new type, inside the caller's transaction."""

    def __init__(self, conn: Connection, catalog: Catalog, editor: SchemaEditor, user_id: int | None,
                 read_values: ReadValues | None = None, preview_scope: PreviewScope | None = None) -> None:
        self.conn = conn
        self.preview_scope = preview_scope
        self.catalog = catalog
        self.editor = editor
        self.user_id = user_id
        self.read_values: ReadValues = read_values or stored_values

    def run(self, t: TableDef, old: FieldDef, new: FieldDef, dry_run: bool,
            confirm: bool = False) -> dict[str, Any]:
        """Convert (or with ``dry_run`` only count) every value of ``old`` into ``new``'s type.

        The new values go into a fresh column (its name carries a generation number), then the old
        column is dropped: on both databases this happens inside the caller's transaction. Conversions
        that SQL can do exactly run as one UPDATE; only the values it can't vouch for go through Python.
        A change that would empty values raises unless ``confirm`` (the counts are exact either way).
        """
        fast = fast_conversion(old, new, self.conn.dialect.name)
        scope, shown = self.preview_scope(self.catalog, self.conn, t, old) if self.preview_scope else (None, True)
        if fast is not None:
            report, new_values = self._plan_fast(t, old, new, fast, scope, shown)
        else:
            report, new_values = self._plan_python(t, old, new, scope, shown)
        lost = report.pop("_emptied_everywhere")
        if dry_run:
            return report
        if lost and not confirm:
            more = " (some in records you may not see)" if lost > report["emptied"] else ""
            raise ValidationFailed(
                f"{report['emptied']} values would be emptied{more}; send confirm_data_loss: true to go ahead",
                {"/type": [f"{report['emptied']} of {report['rows']} values cannot be converted{more}"]})
        gen = int(old.doc.get("_gen", 0)) + 1
        new.doc["_gen"] = gen
        drop_old = old.stored
        if old.stored:
            self._drop_field_indexes(t, old)
        if not new.ftype.computed and new.ftype.column_type(new) is not None:
            md = self.catalog.md.__class__()
            # the old column stays declared (it is dropped last) so the set-based copy can read it
            fresh = build_user_table(md, t, [new if g.id == new.id else g for g in t.fields]
                                     + ([old] if old.stored else []))
            col = fresh.c[new.column_name]
            if fast is not None and old.stored and self.conn.dialect.name == "postgresql":
                # one rewrite in place (as ALTER … TYPE … USING by hand), then the generation's new name
                self._alter_in_place(t, old, new, fast, col)
                drop_old = False  # its column is the new one now
            else:
                self.editor.add_column(t.sa, col)
                if fast is not None:
                    src = fresh.c[old.column_name]
                    self.conn.execute(update(fresh).where(fast.present(src), fast.exact(src, new))
                                      .values({col.name: fast.value(src, new)}))
            if new_values:
                stmt = update(fresh).where(fresh.c.id == bindparam("rid")).values({col.name: bindparam("v")})
                for i in range(0, len(new_values), 5000):
                    self.conn.execute(stmt, new_values[i:i + 5000])
            for ix in fresh.indexes:
                if any(c.name == new.column_name for c in ix.columns):
                    try:
                        with self.conn.begin_nested():
                            self.editor.create_index(ix)
                    except IntegrityError:
                        raise Conflict(f"'{new.key}' cannot be unique: converted values repeat") from None
            if new.ftype.searchable:  # reads every row: built after commit, in the background
                self.editor.create_search_index(fresh, [new.column_name], later=True)
        if drop_old:
            self.editor.drop_column(t.sa, old.column_name)
        return report

    def _alter_in_place(self, t: TableDef, old: FieldDef, new: FieldDef, fast: FastConversion, col: Any) -> None:
        """PostgreSQL: convert the column with one ``ALTER … TYPE … USING`` (the exact values; the others
        empty, to be written from Python after) and rename it to the new generation's name."""
        dialect = self.conn.dialect
        src: Any = column(old.column_name)  # unqualified, as USING wants it
        using = case((and_(fast.present(src), fast.exact(src, new)), fast.value(src, new)))
        sql_using = str(using.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
        q = dialect.identifier_preparer.quote
        ctype = col.type.compile(dialect=dialect)
        self.conn.exec_driver_sql(f"ALTER TABLE {q(t.name)} ALTER COLUMN {q(old.column_name)} TYPE {ctype} "
                                  f"USING {sql_using}")
        self.conn.exec_driver_sql(f"ALTER TABLE {q(t.name)} RENAME COLUMN {q(old.column_name)} "
                                  f"TO {q(new.column_name)}")

    def _write_ctx(self) -> WriteContext:
        return WriteContext(self.catalog, self.conn, self.user_id, lenient=True)

    @staticmethod
    def _convert_one(value: Any, old: FieldDef, new: FieldDef, ctx: WriteContext) -> tuple[Any, bool]:
        """(the stored value in the new type, whether it converted); empty values stay empty."""
        if old.ftype.is_empty(value):
            return None, False
        try:
            return new.ftype.convert_from(value, old, new, ctx), True
        except FieldValueError:
            return None, False

    def _plan_python(self, t: TableDef, old: FieldDef, new: FieldDef, scope: Any,
                     shown: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Every row's new value; counts and samples only from the rows (and the field) the reader sees."""
        ctx = self._write_ctx()
        readable = None if scope is None else set(self.conn.scalars(select(t.sa.c.id).where(scope)))
        rows = converted = emptied = everywhere = outside = 0
        samples: list[dict[str, Any]] = []
        new_values: list[dict[str, Any]] = []
        for rid, value in self.read_values(self.catalog, self.conn, t, old):
            after, ok = self._convert_one(value, old, new, ctx)
            lost = (not old.ftype.is_empty(value) and not ok) or (new.ftype.computed and ok and not old.ftype.computed)
            everywhere += lost
            if not new.ftype.computed:
                new_values.append({"rid": rid, "v": after})
            if readable is not None and rid not in readable:
                outside += 1
                continue
            rows += 1
            emptied += lost
            converted += ok and not old.ftype.is_empty(value)
            if shown and len(samples) < MAX_SAMPLES and not old.ftype.is_empty(value):
                samples.append({"id": rid, "before": value,
                                "after": new.ftype.to_json(after, new) if not new.ftype.computed else None})
        report = {"rows": rows, "converted": converted, "emptied": emptied, "samples": samples,
                  "_emptied_everywhere": everywhere}
        if readable is not None:
            report["outside_scope"] = outside
        return report, new_values

    def _plan_fast(self, t: TableDef, old: FieldDef, new: FieldDef, fast: FastConversion, scope: Any,
                   shown: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Counts for a set-based conversion; values SQL can't convert exactly are converted in Python.
        Counts and samples come only from the rows (and the field) the reader sees."""
        src = t.sa.c[old.column_name]
        ctx = self._write_ctx()
        present, exact = fast.present(src), fast.exact(src, new)
        seen = scope if scope is not None else true()
        rows, simple, outside, odd_count = self.conn.execute(select(
            func.count(case((seen, 1))), func.count(case((and_(seen, present, exact), 1))),
            func.count(case((~seen, 1))) if scope is not None else literal(0),
            func.count(case((and_(present, ~exact), 1))))).one()
        rows, simple = int(rows or 0), int(simple or 0)
        converted, emptied, everywhere = simple, 0, 0
        new_values: list[dict[str, Any]] = []
        odd = select(t.sa.c.id, src, seen.label("seen")).where(present, ~exact).order_by(t.sa.c.id)
        for rid, raw, visible in self.conn.execute(odd) if odd_count else ():
            after, ok = self._convert_one(old.ftype.to_json(raw, old), old, new, ctx)
            everywhere += not ok
            if visible:
                converted, emptied = converted + ok, emptied + (not ok)
            new_values.append({"rid": rid, "v": after})
        samples = []
        if shown:
            for rid, raw in self.conn.execute(select(t.sa.c.id, src).where(present, seen).order_by(t.sa.c.id)
                                              .limit(MAX_SAMPLES)):
                before = old.ftype.to_json(raw, old)
                after, _ok = self._convert_one(before, old, new, ctx)
                samples.append({"id": rid, "before": before, "after": new.ftype.to_json(after, new)})
        report = {"rows": rows, "converted": converted, "emptied": emptied, "samples": samples,
                  "_emptied_everywhere": everywhere}
        if scope is not None:
            report["outside_scope"] = int(outside or 0)
        return report, new_values

    def _drop_field_indexes(self, t: TableDef, f: FieldDef) -> None:
        for ix in list(t.sa.indexes):
            if any(c.name == f.column_name for c in ix.columns):
                self.editor.drop_index(ix)
        if self.conn.dialect.name == "postgresql":
            self.editor.drop_index(Index(f"tg_{t.name}_{f.column_name}", t.sa.c[f.column_name]))
