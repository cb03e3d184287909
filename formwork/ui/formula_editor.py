"""The formula editor's server side: formulas shown with field names instead of keys, checked as they are
typed (error position, result type) and previewed on a few records the builder may read.

People write ``{金额} * 0.1``; the stored formula is ``{amount} * 0.1`` (keys, which survive renames). A
reference is resolved as a key first, then as a field's name in any language when exactly one field has it;
``{客户.名称}`` reaches through a link the same way.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from formwork.metadata import formula as fl
from formwork.metadata.catalog import Catalog, FieldDef, TableDef
from formwork.metadata.fieldtypes.base import FieldValueError, QueryContext
from formwork.metadata.fieldtypes.computed import KIND_BY_FORMULA_TYPE, json_for_kind
from formwork.ui.context import Page
from formwork.ui.engine_messages import say

REF = re.compile(r"\{([^{}]{0,200})\}")
SAMPLES = 3

# the function reference: name → (signature, example, what it gives); descriptions are per locale
FUNCTION_GROUPS: list[tuple[str, list[str]]] = [
    ("logic", ["IF", "SWITCH", "AND", "OR", "NOT", "ISBLANK", "BLANK"]),
    ("number", ["ROUND", "ROUNDUP", "ROUNDDOWN", "INT", "ABS", "MIN", "MAX", "SUM", "AVERAGE", "MOD", "POWER",
                "SQRT"]),
    ("text", ["CONCAT", "LEN", "LOWER", "UPPER", "TRIM", "LEFT", "RIGHT", "MID", "SUBSTITUTE", "FIND", "CONTAINS",
              "TEXT", "VALUE"]),
    ("date", ["TODAY", "NOW", "YEAR", "MONTH", "DAY", "WEEKDAY", "DATE", "DATEADD", "DATEDIF"]),
]
SIGNATURES: dict[str, tuple[str, str]] = {
    "IF": ("IF(condition, then, else)", 'IF({amount} > 10000, "Key", "Normal")'),
    "SWITCH": ("SWITCH(value, case1, result1, …, default)", 'SWITCH({stage}, "won", 1, 0)'),
    "AND": ("AND(a, b, …)", "AND({paid}, {amount} > 0)"),
    "OR": ("OR(a, b, …)", "OR({vip}, {amount} > 1000)"),
    "NOT": ("NOT(a)", "NOT({paid})"),
    "ISBLANK": ("ISBLANK(value)", "ISBLANK({phone})"),
    "BLANK": ("BLANK()", "IF({paid}, BLANK(), {amount})"),
    "ROUND": ("ROUND(number, places)", "ROUND({price} * 1.13, 2)"),
    "ROUNDUP": ("ROUNDUP(number, places)", "ROUNDUP(2.341, 1) → 2.4"),
    "ROUNDDOWN": ("ROUNDDOWN(number, places)", "ROUNDDOWN(2.349, 1) → 2.3"),
    "INT": ("INT(number)", "INT(7.8) → 7"),
    "ABS": ("ABS(number)", "ABS(-3) → 3"),
    "MIN": ("MIN(a, b, …)", "MIN({budget}, 5000)"),
    "MAX": ("MAX(a, b, …)", "MAX({a}, {b})"),
    "SUM": ("SUM(a, b, …)", "SUM({q1}, {q2}, {q3})"),
    "AVERAGE": ("AVERAGE(a, b, …)", "AVERAGE({q1}, {q2})"),
    "MOD": ("MOD(number, divisor)", "MOD(7, 3) → 1"),
    "POWER": ("POWER(number, power)", "POWER(2, 10) → 1024"),
    "SQRT": ("SQRT(number)", "SQRT(16) → 4"),
    "CONCAT": ("CONCAT(a, b, …)", 'CONCAT({city}, " ", {street})'),
    "LEN": ("LEN(text)", "LEN({phone})"),
    "LOWER": ("LOWER(text)", "LOWER({email})"),
    "UPPER": ("UPPER(text)", "UPPER({code})"),
    "TRIM": ("TRIM(text)", "TRIM({name})"),
    "LEFT": ("LEFT(text, n)", "LEFT({phone}, 3)"),
    "RIGHT": ("RIGHT(text, n)", "RIGHT({phone}, 4)"),
    "MID": ("MID(text, start, n)", 'MID("ABCDE", 2, 3) → "BCD"'),
    "SUBSTITUTE": ("SUBSTITUTE(text, old, new)", 'SUBSTITUTE({phone}, "-", "")'),
    "FIND": ("FIND(part, text)", 'FIND("@", {email})'),
    "CONTAINS": ("CONTAINS(text, part)", 'CONTAINS({name}, "Ltd")'),
    "TEXT": ("TEXT(value)", '"No. " & TEXT({number})'),
    "VALUE": ("VALUE(text)", 'VALUE("12.5") → 12.5'),
    "TODAY": ("TODAY()", "DATEDIF({signed_on}, TODAY(), \"days\")"),
    "NOW": ("NOW()", "NOW()"),
    "YEAR": ("YEAR(date)", "YEAR({signed_on})"),
    "MONTH": ("MONTH(date)", "MONTH({signed_on})"),
    "DAY": ("DAY(date)", "DAY({signed_on})"),
    "WEEKDAY": ("WEEKDAY(date)", "WEEKDAY(TODAY())"),
    "DATE": ("DATE(year, month, day)", "DATE(2026, 12, 31)"),
    "DATEADD": ("DATEADD(date, amount, unit)", 'DATEADD({signed_on}, 30, "days")'),
    "DATEDIF": ("DATEDIF(start, end, unit)", 'DATEDIF({signed_on}, TODAY(), "days")'),
}


@dataclass
class Check:
    """What the editor shows under the formula: ok + result type + samples, or an error at a position."""

    ok: bool
    text: str
    message: str = ""
    position: int | None = None
    result_type: str | None = None
    samples: list[tuple[str, str]] = field(default_factory=list)

    @property
    def before(self) -> str:
        return self.text[: self.position] if self.position is not None else self.text

    @property
    def at(self) -> str:
        return self.text[self.position: self.position + 1] if self.position is not None else ""

    @property
    def after(self) -> str:
        return self.text[self.position + 1:] if self.position is not None else ""


def _names(f: FieldDef) -> list[str]:
    label = f.label
    values = label.values() if isinstance(label, dict) else [label]
    return [str(v).strip().casefold() for v in values if isinstance(v, str) and v.strip()]


def _resolve_in(t: TableDef, name: str) -> FieldDef | None:
    name = name.strip()
    if name in t.fields_by_key:
        return t.fields_by_key[name]
    hits = [f for f in t.fields if name.casefold() in _names(f)]
    return hits[0] if len(hits) == 1 else None


def resolve_ref(cat: Catalog, t: TableDef, name: str) -> str | None:
    """The key path of a reference written as keys or names; None when nothing (or several) match."""
    head, _, rest = name.partition(".")
    f = _resolve_in(t, head)
    if f is None:
        return None
    if not rest:
        return f.key
    if not f.ftype.is_link:
        return None
    target = cat.table_by_id(f.options["target"])
    g = _resolve_in(target, rest)
    return f"{f.key}.{g.key}" if g is not None else None


def to_keys(cat: Catalog, t: TableDef, text: str) -> tuple[str, list[tuple[int, int]], list[tuple[int, str]]]:
    """The formula with every reference as keys, anchors mapping its offsets back to ``text``, and the
    references that match no field (offset, name)."""
    out: list[str] = []
    anchors: list[tuple[int, int]] = [(0, 0)]
    unknown: list[tuple[int, str]] = []
    pos = 0
    length = 0
    for m in REF.finditer(text):
        chunk = text[pos:m.start()]
        out.append(chunk)
        length += len(chunk)
        key = resolve_ref(cat, t, m.group(1))
        if key is None:
            unknown.append((m.start(), m.group(1).strip()))
            key = m.group(1)
        anchors.append((length, m.start()))
        piece = "{" + key + "}"
        out.append(piece)
        length += len(piece)
        anchors.append((length, m.end()))
        pos = m.end()
    out.append(text[pos:])
    return "".join(out), anchors, unknown


def back(anchors: list[tuple[int, int]], pos: int) -> int:
    base_out, base_in = max((a for a in anchors if a[0] <= pos), default=(0, 0))
    return base_in + (pos - base_out)


def to_names(cat: Catalog, t: TableDef, text: str, locale: str) -> str:
    """A stored formula as the editor shows it: each ``{key}`` as the field's name when that name is
    unambiguous (and not another field's key)."""

    def name_of(tab: TableDef, key: str) -> str | None:
        f = tab.fields_by_key.get(key)
        if f is None:
            return None
        label = f.label
        text_ = label.get(locale) or label.get("en") if isinstance(label, dict) else label
        if not isinstance(text_, str) or not text_.strip() or "{" in text_ or "}" in text_ or "." in text_:
            return None
        if text_ in tab.fields_by_key and text_ != key:
            return None
        return text_ if _resolve_in(tab, text_) is f else None

    def sub(m: re.Match[str]) -> str:
        head, _, rest = m.group(1).strip().partition(".")
        hn = name_of(t, head)
        if not rest:
            return "{" + (hn or head) + "}"
        f = t.fields_by_key.get(head)
        if f is None or not f.ftype.is_link or hn is None:
            return m.group(0)
        rn = name_of(cat.table_by_id(f.options["target"]), rest)
        return "{" + hn + "." + (rn or rest) + "}" if rn else m.group(0)

    return REF.sub(sub, text)


def check(p: Page, t: TableDef, text: str, field_key: str | None = None) -> Check:
    """Parse, resolve and compile ``text`` (names or keys) for table ``t``; on success the result type and
    the values of a few records."""
    if not text.strip():
        return Check(False, text, p.t("builder_formula_empty"))
    keyed, anchors, unknown = to_keys(p.cat, t, text)
    if unknown:
        pos, name = unknown[0]
        return Check(False, text, p.t("builder_formula_unknown", name=name), pos)
    try:
        node = fl.parse(keyed)
    except fl.FormulaError as e:
        return Check(False, text, p.t("builder_formula_error", detail=say(e.message, p.locale)),
                     back(anchors, e.position) if e.position is not None else None)
    if field_key and field_key in fl.references(node):
        return Check(False, text, p.t("builder_formula_self"))
    probe_id = -1 - secrets.randbelow(2**30)  # a field that is never stored: its parse is cached by id
    probe = FieldDef(probe_id, t.id, field_key or "_formula", "formula",
                     {"key": field_key or "_formula", "type": "formula", "options": {"formula": keyed}}, 0)
    ctx = QueryContext(catalog=p.cat, dialect=p.conn.dialect.name, user_id=p.access.user_id, timezone=p.tz)
    try:
        expr, rtype = probe.ftype.compile(probe, t.sa, ctx)  # type: ignore[attr-defined]
    except (fl.FormulaError, FieldValueError) as e:
        msg = getattr(e, "message", str(e))
        where: int | None = getattr(e, "position", None)
        return Check(False, text, p.t("builder_formula_error", detail=say(msg, p.locale)),
                     back(anchors, where) if where is not None else None)
    finally:
        p.cat._cache.pop(("formula", probe_id), None)  # noqa: SLF001 - see probe_id
    result = Check(True, text, result_type=rtype)
    reader = p.reader()
    kind = KIND_BY_FORMULA_TYPE[rtype]
    r = p.renderer(p.cat.app_by_id(t.app_id).key)
    rows = p.conn.execute(select(t.sa.c.id, expr.label("v")).where(*reader.where(t)).order_by(t.sa.c.id.desc())
                          .limit(SAMPLES)).all()
    titles = {rec["id"]: rec for rec in reader.by_ids(t, [row.id for row in rows])} if rows else {}
    df = t.display_field
    for row in rows:
        try:
            value = json_for_kind(kind, row.v)
        except (ArithmeticError, ValueError):
            value = None
        rec = titles.get(row.id)
        title = (r.text(df, rec["fields"].get(df.key)) if rec and df else "") or f"#{row.id}"
        shown = "—" if value is None else (p.t("yes") if value is True else p.t("no") if value is False
                                           else str(value))
        result.samples.append((title, shown))
    return result


def reference(locale: str) -> list[tuple[str, list[dict[str, Any]]]]:
    """The function reference by group: name, signature, example, and what it does in ``locale``."""
    from formwork.ui import i18n

    return [(i18n.translate(locale, f"builder_fxg_{g}"),
             [{"name": n, "sig": SIGNATURES[n][0], "example": SIGNATURES[n][1],
               "doc": i18n.translate(locale, f"builder_fx_{n}")} for n in names])
            for g, names in FUNCTION_GROUPS]


__all__ = ["Check", "check", "reference", "resolve_ref", "to_keys", "to_names"]
