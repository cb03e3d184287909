"""The visual condition builder: one component that edits a filter tree (API.md's format) as nested and/or
groups of conditions, with operators and value inputs that fit each field's type.

It edits view filters, automation conditions, role row scopes and dashboard filters alike::

    cb = conditions.builder(p, t, tree, name="filter")          # render: {{ condition_builder(cb) }}
    tree = conditions.parse(p, t, request.form, name="filter")  # back to a tree, or ConditionError
    text = conditions.describe(p, t, tree)                      # the condition in words

The form encodes the tree in input names, so no script is needed to submit it: a group at prefix ``P`` posts
``P.conj`` (and / or) and holds children ``P.<id>``; a condition at ``P`` posts ``P.field``, ``P.op``,
``P.value`` (repeated for several values), ``P.value2`` (the upper end of "between"), and for dates
``P.mode`` (a date, a relative period or today), ``P.rel`` and ``P.n``. Children keep the order in which
the browser posts them (document order); ids are opaque tokens. Adding a condition or group, and
re-fitting a condition to a newly chosen field, are htmx requests to the routes below; removing one is
done by static/conditions.js.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from dataclasses import dataclass
from dataclasses import field as dc_field
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlencode

from flask import Response, request
from sqlalchemy import select

from formwork import db
from formwork.errors import BadRequest, FormworkError, NotFound
from formwork.metadata.catalog import FieldDef, TableDef
from formwork.metadata.fieldtypes.base import (
    BOOL,
    DATE,
    DATETIME,
    FILES,
    LINK_MANY,
    LINK_ONE,
    MULTI,
    NUMBER,
    SELECT,
    USER,
)
from formwork.metadata.fieldtypes.link import is_many
from formwork.metadata.query import MAX_CONDITIONS, RELATIVE
from formwork.ui import i18n
from formwork.ui.context import Page, make_page, render, visible_table
from formwork.ui.render import choice_map
from formwork.web import RouteSet, current_access, unit

routes = RouteSet()

NO_VALUE = ("is_empty", "is_not_empty")
LIST_OPS = ("in", "not_in", "has_any", "has_all", "has_none")
MAX_NESTING = 6
ATTRS = {"conj", "field", "op", "value", "value2", "mode", "rel", "n"}
SEGMENT = re.compile(r"[A-Za-z0-9_]{1,16}")
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_\-]{0,40}")
N_RELATIVE = ("last_n_days", "next_n_days")
ME = "@me"


class ConditionError(FormworkError):
    """The submitted conditions don't make a valid filter; ``errors`` maps input names to messages in the
    user's language (an error about the whole builder is keyed by the builder's name)."""

    status = 422
    code = "validation_failed"

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(errors.values()))
        self.errors = errors
        self.details = {k: [v] for k, v in errors.items()}


@dataclass
class Choice:
    """A field the builder offers: its path (``key`` or ``link.key``), label, kind, operators and values."""

    path: str
    label: str
    kind: str
    ops: list[str]
    choices: dict[str, tuple[str, str]] = dc_field(default_factory=dict)
    users: bool = False
    link_search: str | None = None  # the URL of the record search for a link's values
    link_target: TableDef | None = None
    group: str = ""


@dataclass
class Cond:
    prefix: str
    field: str = ""
    op: str = ""
    values: list[str] = dc_field(default_factory=list)
    value2: str = ""
    mode: str = "date"
    rel: str = "this_month"
    n: str = "7"
    picked: list[dict[str, Any]] = dc_field(default_factory=list)
    is_group: bool = False


@dataclass
class Group:
    prefix: str
    conj: str = "and"
    children: list[Cond | Group] = dc_field(default_factory=list)
    is_group: bool = True


@dataclass
class Builder:
    """What the ``condition_builder`` macro renders."""

    name: str
    app_key: str
    table_key: str
    root: Group
    fields: list[Choice]
    users: list[dict[str, Any]]
    errors: dict[str, str]
    locale: str
    allow_me: bool = True

    @property
    def by_path(self) -> dict[str, Choice]:
        return {c.path: c for c in self.fields}

    def choice(self, path: str) -> Choice | None:
        return self.by_path.get(path)

    def op_label(self, op: str) -> str:
        return i18n.operator_label(self.locale, op)

    def relatives(self) -> list[tuple[str, str]]:
        return [(r, i18n.translate(self.locale, f"cb_rel_{r}")) for r in RELATIVE]

    def new_id(self) -> str:
        return new_id()

    def t(self, key: str, **kw: Any) -> str:
        return i18n.translate(self.locale, key, **kw)

    def error(self, key: str) -> str | None:
        return self.errors.get(key)

    def node_url(self, prefix: str, kind: str) -> str:
        return (f"/apps/{self.app_key}/{self.table_key}/conditions/node?"
                + urlencode({"name": self.name, "prefix": prefix, "kind": kind, "me": "1" if self.allow_me else "0"}))


def new_id() -> str:
    return secrets.token_hex(3)


# --- the fields on offer ---------------------------------------------------------------------------

def field_choices(p: Page, t: TableDef) -> list[Choice]:
    """The reader's visible fields of ``t``, then, per to-one link, the visible fields of its target."""
    app_key = p.cat.app_by_id(t.app_id).key
    hidden = p.access.unreadable_fields(p.cat, t)
    out: list[Choice] = []
    links: list[FieldDef] = []
    for f in t.fields:
        if f.key in hidden:
            continue
        c = _choice(p, app_key, t, f, f.key, p.label(f.label))
        if c is not None:
            out.append(c)
        if f.ftype.is_link and not is_many(f):
            links.append(f)
    for lf in links:
        target = p.cat.table_by_id(lf.options["target"])
        if not p.access.can_see_table(p.cat, target):
            continue
        t_hidden = p.access.unreadable_fields(p.cat, target)
        for tf in target.fields:
            if tf.key in t_hidden or tf.ftype.is_link:
                continue
            kind = tf.ftype.value_kind(tf, p.cat)
            if kind in (MULTI, LINK_MANY, FILES) or tf.ftype.is_many_lookup(tf, p.cat):
                continue
            c = _choice(p, app_key, target, tf, f"{lf.key}.{tf.key}",
                        f"{p.label(lf.label)} › {p.label(tf.label)}", group=p.label(lf.label))
            if c is not None:
                out.append(c)
    return out


def _choice(p: Page, app_key: str, t: TableDef, f: FieldDef, path: str, label: str, group: str = "") -> Choice | None:
    try:
        kind = f.ftype.value_kind(f, p.cat)
        ops = list(f.ftype.operators(f, p.cat))
    except (KeyError, ValueError):
        return None
    c = Choice(path=path, label=label, kind=kind, ops=ops, group=group)
    if f.ftype.has_choices:
        c.choices = choice_map(f, p.locale)
    c.users = kind == USER or (kind == MULTI and bool(f.ftype.holds_users))
    if kind in (LINK_ONE, LINK_MANY) and f.ftype.is_link:
        c.link_search = f"/apps/{app_key}/{t.key}/link-search/{f.key}"
        c.link_target = p.cat.table_by_id(f.options["target"])
    return c


def active_users(p: Page) -> list[dict[str, Any]]:
    return [{"id": r.id, "name": r.name} for r in p.conn.execute(
        select(db.users.c.id, db.users.c.name).where(db.users.c.active.is_(True)).order_by(db.users.c.name)
        .limit(1000))]


# --- tree → builder ----------------------------------------------------------------------------------

def builder(p: Page, t: TableDef, tree: Any = None, name: str = "filter", form: Any = None,
            errors: dict[str, str] | None = None, allow_me: bool = True) -> Builder:
    """The builder for ``tree``, or — after a refused submission — for what the user posted in ``form``,
    with ``errors`` shown next to the inputs they concern."""
    if not NAME.fullmatch(name):
        raise ValueError(f"bad condition builder name {name!r}")
    choices = field_choices(p, t)
    if form is not None:
        root = _raw_tree(form, name)
    else:
        root = _from_tree(tree, name, 0) if tree else Group(prefix=name)
    b = Builder(name=name, app_key=p.cat.app_by_id(t.app_id).key, table_key=t.key, root=root, fields=choices,
                users=active_users(p) if any(c.users for c in choices) else [], errors=errors or {},
                locale=p.locale, allow_me=allow_me)
    _fill_picked(p, b)
    return b


def _from_tree(node: Any, prefix: str, depth: int) -> Group:
    g = Group(prefix=prefix)
    if not isinstance(node, dict) or depth > MAX_NESTING:
        return g
    if "and" in node or "or" in node:
        g.conj = "or" if "or" in node else "and"
        items = node.get(g.conj) or []
    else:
        items = [node]
    for item in items if isinstance(items, list) else []:
        cp = f"{prefix}.{new_id()}"
        if isinstance(item, dict) and ("and" in item or "or" in item):
            g.children.append(_from_tree(item, cp, depth + 1))
        elif isinstance(item, dict) and "field" in item:
            g.children.append(_cond_from_tree(item, cp))
    return g


def _cond_from_tree(item: dict[str, Any], prefix: str) -> Cond:
    c = Cond(prefix=prefix, field=str(item.get("field") or ""), op=str(item.get("op") or ""))
    v = item.get("value")
    if c.op == "between" and isinstance(v, list) and len(v) == 2:
        c.values, c.value2 = [_scalar(v[0], c)], _scalar(v[1], c)
    elif isinstance(v, list):
        c.values = [_scalar(x, c) for x in v]
    elif v is not None:
        c.values = [_scalar(v, c)]
    return c


def _scalar(v: Any, c: Cond) -> str:
    if isinstance(v, dict):
        if v.get("var") == "me":
            return ME
        if v.get("var") == "today":
            c.mode = "today"
            return ""
        if "relative" in v:
            c.mode, c.rel = "relative", str(v.get("relative"))
            if v.get("n") is not None:
                c.n = str(v.get("n"))
            return ""
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return "" if v is None else str(v)


def _fill_picked(p: Page, b: Builder) -> None:
    """Linked records chosen in conditions on link fields, with their display names (one read per table)."""
    wanted: dict[str, list[Cond]] = {}
    for c in _walk(b.root):
        ch = b.choice(c.field)
        if ch is not None and ch.link_target is not None:
            wanted.setdefault(ch.path, []).append(c)
    for path, conds in wanted.items():
        ch = b.by_path[path]
        target = ch.link_target
        assert target is not None
        ids = sorted({int(v) for c in conds for v in c.values if v.isdigit()})
        names: dict[int, str] = {}
        if ids and p.access.can_see_table(p.cat, target):
            disp = target.display_field
            r = p.renderer(b.app_key)
            for rec in _by_ids(p, target, ids)["records"]:
                names[rec["id"]] = (r.text(disp, rec["fields"].get(disp.key)) if disp else "") or f"#{rec['id']}"
        for c in conds:
            c.picked = [{"id": v, "label": names.get(int(v), f"#{v}")} for v in c.values if v.isdigit()]


def _by_ids(p: Page, target: TableDef, ids: list[int]) -> dict[str, Any]:
    disp = target.display_field
    return {"records": p.reader().visible_by_ids(target, ids[:50], fields=[disp.key] if disp else None)}


def _walk(g: Group) -> list[Cond]:
    out: list[Cond] = []
    for ch in g.children:
        if isinstance(ch, Group):
            out += _walk(ch)
        else:
            out.append(ch)
    return out


def form_items(b: Builder) -> list[tuple[str, str]]:
    """The inputs the rendered builder would post, as (name, value) pairs (what a link or a hidden form
    carries to say the same conditions)."""
    out: list[tuple[str, str]] = []

    def walk(node: Group | Cond) -> None:
        if isinstance(node, Group):
            out.append((f"{node.prefix}.conj", node.conj))
            for ch in node.children:
                walk(ch)
            return
        out.extend([(f"{node.prefix}.field", node.field), (f"{node.prefix}.op", node.op)])
        out.extend((f"{node.prefix}.value", v) for v in node.values)
        if node.value2:
            out.append((f"{node.prefix}.value2", node.value2))
        if node.mode != "date":
            out.extend([(f"{node.prefix}.mode", node.mode), (f"{node.prefix}.rel", node.rel),
                        (f"{node.prefix}.n", node.n)])

    walk(b.root)
    return out


# --- form → raw nodes → tree -----------------------------------------------------------------------------

def _raw_tree(form: Any, name: str) -> Group:
    """The posted inputs as groups and conditions, in the order the browser posted them."""
    root = Group(prefix=name)
    nodes: dict[str, Group | Cond] = {name: root}
    attrs: dict[str, dict[str, list[str]]] = {}
    count = 0
    for key in list(form.keys()):
        if not key.startswith(name + "."):
            continue
        *segs, attr = key[len(name) + 1:].split(".")
        if attr not in ATTRS or len(segs) > MAX_NESTING + 1 or not all(SEGMENT.fullmatch(s) for s in segs):
            continue
        prefix = ".".join([name, *segs])
        attrs.setdefault(prefix, {})[attr] = [str(v) for v in form.getlist(key)][:1000]
        parent = name
        for i in range(len(segs)):
            here = ".".join([name, *segs[:i + 1]])
            if here not in nodes:
                last = i == len(segs) - 1
                is_group = last and attr == "conj" or not last
                node: Group | Cond = Group(prefix=here) if is_group else Cond(prefix=here)
                count += 1
                if count > MAX_CONDITIONS:
                    raise BadRequest("too many conditions")
                parent_node = nodes[parent]
                if isinstance(parent_node, Group):
                    parent_node.children.append(node)
                nodes[here] = node
            parent = here
    for prefix, a in attrs.items():
        node = nodes[prefix]
        if isinstance(node, Group):
            node.conj = "or" if (a.get("conj") or ["and"])[0] == "or" else "and"
        else:
            node.field = (a.get("field") or [""])[0]
            node.op = (a.get("op") or [""])[0]
            node.values = [v for v in a.get("value", []) if v != ""] if node.op in LIST_OPS \
                else (a.get("value") or [""])[:1]
            node.value2 = (a.get("value2") or [""])[0]
            node.mode = (a.get("mode") or ["date"])[0]
            node.rel = (a.get("rel") or ["this_month"])[0]
            node.n = (a.get("n") or ["7"])[0]
    return root


def parse(p: Page, t: TableDef, form: Any, name: str = "filter", allow_me: bool = True) -> dict[str, Any] | None:
    """The filter tree the posted builder describes (None when it holds no condition); ConditionError with
    messages next to the inputs when it doesn't make sense. The tree is compiled once with the reader's
    permissions, so a field hidden from them can't be filtered on."""
    choices = {c.path: c for c in field_choices(p, t)}
    errors: dict[str, str] = {}
    tree = _group_tree(p, _raw_tree(form, name), choices, errors, allow_me)
    if errors:
        raise ConditionError(errors)
    if tree is None:
        return None
    try:
        p.reader().where(t, tree, None, None)
    except BadRequest as e:
        raise ConditionError({name: p.t("cb_invalid", detail=e.message)}) from None
    return tree


def _group_tree(p: Page, g: Group, choices: dict[str, Choice], errors: dict[str, str],
                allow_me: bool) -> dict[str, Any] | None:
    items = []
    for ch in g.children:
        node = _group_tree(p, ch, choices, errors, allow_me) if isinstance(ch, Group) \
            else _cond_tree(p, ch, choices, errors, allow_me)
        if node is not None:
            items.append(node)
    if not items:
        return None
    return {g.conj: items}


def _cond_tree(p: Page, c: Cond, choices: dict[str, Choice], errors: dict[str, str],
               allow_me: bool) -> dict[str, Any] | None:
    if not c.field:
        return None  # a row whose field was never chosen is left out
    ch = choices.get(c.field)
    if ch is None:
        errors[f"{c.prefix}.field"] = p.t("cb_no_field")
        return None
    if c.op not in ch.ops:
        errors[f"{c.prefix}.op"] = p.t("cb_choose_op")
        return None
    node: dict[str, Any] = {"field": ch.path, "op": c.op}
    if c.op in NO_VALUE:
        return node
    try:
        node["value"] = _value(p, ch, c, allow_me)
    except _Bad as e:
        errors[f"{c.prefix}.{e.where}"] = e.message
        return None
    return node


class _Bad(Exception):
    def __init__(self, where: str, message: str) -> None:
        super().__init__(message)
        self.where, self.message = where, message


def _value(p: Page, ch: Choice, c: Cond, allow_me: bool) -> Any:
    k, op = ch.kind, c.op
    if k in (DATE, DATETIME):
        if op == "between":
            return [_date(p, c.values[0] if c.values else "", "value"), _date(p, c.value2, "value2")]
        if c.mode == "today":
            return {"var": "today"}
        if c.mode == "relative":
            if c.rel not in RELATIVE:
                raise _Bad("rel", p.t("cb_choose_period"))
            if c.rel in N_RELATIVE:
                if not c.n.strip().isdigit() or not 1 <= int(c.n) <= 3660:
                    raise _Bad("n", p.t("cb_days_range"))
                return {"relative": c.rel, "n": int(c.n)}
            return {"relative": c.rel}
        return _date(p, c.values[0] if c.values else "", "value")
    if k == BOOL:
        return (c.values[0] if c.values else "true") == "true"
    if k == NUMBER:
        if op == "between":
            return [_number(p, c.values[0] if c.values else "", "value"), _number(p, c.value2, "value2")]
        if op in LIST_OPS:
            parts = _split(c.values)
            if not parts:
                raise _Bad("value", p.t("cb_enter_value"))
            return [_number(p, x, "value") for x in parts]
        return _number(p, c.values[0] if c.values else "", "value")
    if k in (SELECT, MULTI) and ch.choices:
        picked = [v for v in c.values if v]
        bad = [v for v in picked if v not in ch.choices]
        if bad or not picked:
            raise _Bad("value", p.t("cb_choose_option"))
        return picked if (op in LIST_OPS or k == MULTI) else picked[0]
    if ch.users:
        picked = [v for v in c.values if v]
        if not picked:
            raise _Bad("value", p.t("cb_choose_person"))
        out: list[Any] = []
        for v in picked:
            if v == ME and allow_me:
                out.append({"var": "me"})
            elif v.isdigit():
                out.append(int(v))
            else:
                raise _Bad("value", p.t("cb_choose_person"))
        return out if (op in LIST_OPS or k == MULTI) else out[0]
    if k in (LINK_ONE, LINK_MANY):
        ids = [int(v) for v in c.values if v.isdigit()]
        if not ids:
            raise _Bad("value", p.t("cb_choose_record"))
        return ids if (op in LIST_OPS or k == LINK_MANY) else ids[0]
    # text, and anything else compared as text
    if op in LIST_OPS or k == MULTI:
        parts = _split(c.values)
        if not parts:
            raise _Bad("value", p.t("cb_enter_value"))
        return parts
    text = (c.values[0] if c.values else "").strip()
    if not text:
        raise _Bad("value", p.t("cb_enter_value"))
    return text[:1000]


def _split(values: list[str]) -> list[str]:
    out: list[str] = []
    for v in values:
        out += [x.strip() for x in re.split(r"[,，、;；\n]", v) if x.strip()]
    return out[:1000]


def _date(p: Page, raw: str, where: str) -> str:
    raw = raw.strip()
    try:
        return dt.date.fromisoformat(raw).isoformat()
    except ValueError:
        raise _Bad(where, p.t("cb_enter_date")) from None


def _number(p: Page, raw: str, where: str) -> int | float | str:
    raw = raw.strip().replace(",", "").replace("，", "")
    try:
        d = Decimal(raw)
    except InvalidOperation:
        raise _Bad(where, p.t("cb_enter_number")) from None
    if not d.is_finite() or abs(d) >= Decimal("1e15"):
        raise _Bad(where, p.t("cb_enter_number"))
    return int(d) if d == d.to_integral_value() else str(d)


# --- in words ----------------------------------------------------------------------------------------------

def describe(p: Page, t: TableDef, tree: Any) -> str:
    """The condition in the reader's words, e.g. "Stage is any of Proposal, Negotiation and Amount ≥ 100000"."""
    if not tree:
        return p.t("cb_always")
    b = builder(p, t, tree)
    return _describe_group(p, b, b.root, top=True) or p.t("cb_always")


def _describe_group(p: Page, b: Builder, g: Group, top: bool = False) -> str:
    parts = []
    for ch in g.children:
        text = _describe_group(p, b, ch) if isinstance(ch, Group) else _describe_cond(p, b, ch)
        if text:
            parts.append(text)
    joined = f" {p.t('cb_' + g.conj)} ".join(parts)
    return joined if top or len(parts) < 2 else f"({joined})"


def _describe_cond(p: Page, b: Builder, c: Cond) -> str:
    ch = b.choice(c.field)
    label = ch.label if ch else c.field
    op = b.op_label(c.op)
    if c.op in NO_VALUE:
        return f"{label} {op}"
    if ch is None:
        return f"{label} {op} {', '.join(c.values)}"
    if ch.kind in (DATE, DATETIME):
        if c.mode == "today":
            value = p.t("today")
        elif c.mode == "relative":
            value = p.t(f"cb_rel_{c.rel}") if c.rel not in N_RELATIVE else p.t(f"cb_rel_{c.rel}_n", n=c.n)
        elif c.op == "between":
            value = f"{c.values[0] if c.values else ''} – {c.value2}"
        else:
            value = c.values[0] if c.values else ""
    elif ch.kind == BOOL:
        value = p.t("yes") if (c.values[:1] or ["true"])[0] == "true" else p.t("no")
    elif ch.choices:
        value = ", ".join(ch.choices.get(v, (v, ""))[0] for v in c.values)
    elif ch.users:
        names = {str(u["id"]): u["name"] for u in b.users}
        value = ", ".join(p.t("cb_me") if v == ME else names.get(v, v) for v in c.values)
    elif ch.link_target is not None:
        value = ", ".join(x["label"] for x in c.picked)
    elif c.op == "between":
        value = f"{c.values[0] if c.values else ''} – {c.value2}"
    else:
        value = ", ".join(c.values)
    return f"{label} {op} {value}"


# --- htmx: a new condition or group, a condition re-fitted to its field ---------------------------------

def _prefix_arg(name: str) -> str:
    prefix = (request.args.get("prefix") or "").strip()
    segs = prefix.split(".")
    if segs[0] != name or len(segs) > MAX_NESTING + 2 or not all(SEGMENT.fullmatch(s) for s in segs[1:]):
        raise BadRequest("bad prefix")
    return prefix


@routes.get("/apps/<app_key>/<table_key>/conditions/node")
def condition_node(app_key: str, table_key: str) -> Response:
    """A new condition (``kind=cond``) or group (``kind=group``) under ``prefix``, or the condition at
    ``prefix`` re-fitted to the field just chosen (``kind=refit``, the row's inputs sent along)."""
    name = (request.args.get("name") or "").strip()
    if not NAME.fullmatch(name):
        raise BadRequest("bad builder name")
    prefix = _prefix_arg(name)
    kind = request.args.get("kind") or "cond"
    access = current_access()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        t = visible_table(p, app_key, table_key)
        b = builder(p, t, None, name=name, allow_me=request.args.get("me", "1") == "1")
        node: Cond | Group
        if kind == "group":
            node = Group(prefix=f"{prefix}.{new_id()}")
            node.children.append(Cond(prefix=f"{node.prefix}.{new_id()}"))
        elif kind == "refit":
            raw = _raw_tree(request.args, name)
            found = _find(raw, prefix)
            node = found if isinstance(found, Cond) else Cond(prefix=prefix)
            ch = b.choice(node.field)
            if ch is None:
                raise NotFound("no such field")
            if node.op not in ch.ops:
                node.op = ch.ops[0]
                node.values, node.value2 = [], ""
            if ch.choices:
                node.values = [v for v in node.values if v in ch.choices]
        else:
            node = Cond(prefix=f"{prefix}.{new_id()}")
        b.root = Group(prefix=name, children=[node])
        _fill_picked(p, b)
        return render(p, "_condition_node.html", cb=b, node=node)


def _find(g: Group, prefix: str) -> Cond | Group | None:
    if g.prefix == prefix:
        return g
    for ch in g.children:
        if ch.prefix == prefix:
            return ch
        if isinstance(ch, Group):
            hit = _find(ch, prefix)
            if hit is not None:
                return hit
    return None


__all__ = ["Builder", "ConditionError", "builder", "describe", "field_choices", "parse", "routes"]
