"""Duplicates in the pages: the warning on a new record (``duplicate_panel``) and the merge page, where two
records are compared field by field, the surviving record and each value are chosen, and the other record
is folded in (``formwork.runtime.duplicates.merge``)."""

from __future__ import annotations

from typing import Any

from flask import Response, redirect, request, url_for

from formwork.errors import BadRequest, Conflict, Forbidden, NotFound, ValidationFailed
from formwork.metadata.catalog import TableDef
from formwork.runtime import duplicates
from formwork.ui.context import (
    Page,
    make_page,
    render,
    shown_fields,
    visible_app,
    visible_dashboards,
    visible_table,
    visible_tables,
)
from formwork.web import RouteSet, current_access, unit

routes = RouteSet()


def rule_words(p: Page, t: TableDef, keys: list[str]) -> str:
    """The rules a record matched under, in words ("名称相同、电话相同")."""
    out = []
    for r in duplicates.rules(t):
        if r["key"] in keys:
            if r.get("label"):
                out.append(p.label(r["label"]))
            else:
                names = [p.label(t.fields_by_key[x["field"]].label) for x in r["fields"]
                         if x["field"] in t.fields_by_key]
                out.append(p.t("dup_same", fields=p.t("dup_and").join(names)))
    return p.t("dup_list_sep").join(out)


def duplicate_panel(p: Page, t: TableDef, values: dict[str, Any], exclude: int | None = None) -> dict[str, Any] | None:
    """What the new-record page shows when ``values`` look like existing records (None when they don't)."""
    if not duplicates.rules(t):
        return None
    found = duplicates.find(p.conn, p.cat, p.access, t, values, exclude)
    if not found["matches"] and not found["hidden"]:
        return None
    app_key = p.cat.app_by_id(t.app_id).key
    return {"matches": [{"id": m["id"], "display": m["display"] or f"#{m['id']}", "why": rule_words(p, t, m["rules"]),
                         "url": url_for("ui.record_page", app_key=app_key, table_key=t.key, rid=m["id"])}
                        for m in found["matches"]], "hidden": found["hidden"]}


def import_duplicates(p: Page, t: TableDef, report: dict[str, Any]) -> list[dict[str, Any]]:
    """An import report's rows that look like existing records (or earlier rows), for the import pages:
    the matching records as links (only those the user may read) and the rows they repeat."""
    rows = (report or {}).get("duplicates") or []
    if not rows:
        return []
    from sqlalchemy import select

    app_key = p.cat.app_by_id(t.app_id).key
    reader = p.reader()
    ids = sorted({i for r in rows for i in r.get("records", [])})[:2000]
    shown = {}
    if ids:
        q = select(t.sa.c.id, reader.display_value(t, t.sa, reader.ctx).label("d")).where(
            t.sa.c.id.in_(ids), *reader.base_conditions(t))
        shown = {r.id: str(r.d) if r.d is not None else f"#{r.id}" for r in p.conn.execute(q)}
    out = []
    for r in rows:
        out.append({"row": r["row"], "skipped": r.get("skipped"), "why": rule_words(p, t, r.get("rules") or []),
                    "matches": [{"display": shown[i], "url": url_for("ui.record_page", app_key=app_key,
                                                                     table_key=t.key, rid=i)}
                                for i in r.get("records", []) if i in shown],
                    "hidden": len([i for i in r.get("records", []) if i not in shown]),
                    "rows": ", ".join(str(n) for n in r.get("rows", []))})
    return out


def _compare_rows(p: Page, t: TableDef, a: dict[str, Any], b: dict[str, Any], keep: str) -> list[dict[str, Any]]:
    """One row per field that can be chosen: both values as shown, whether they differ, and the side chosen
    at first: the kept record's value, unless it is empty and the other's is not."""
    app_key = p.cat.app_by_id(t.app_id).key
    r = p.renderer(app_key)
    rows = []
    for f in shown_fields(p, t):
        if f.ftype.read_only or f.ftype.lists_related(f) or f.key not in a["fields"]:
            continue
        va, vb = a["fields"].get(f.key), b["fields"].get(f.key)
        empty_a = f.ftype.is_empty(va) if not isinstance(va, dict) else False
        empty_b = f.ftype.is_empty(vb) if not isinstance(vb, dict) else False
        rows.append({"key": f.key, "label": p.label(f.label), "a": r.cell(f, va), "b": r.cell(f, vb),
                     "differ": va != vb, "default": _default_side(keep, empty_a, empty_b),
                     "files": f.ftype.kind == "files"})
    return rows


def _default_side(keep: str, empty_a: bool, empty_b: bool) -> str:
    if keep == "b":
        return "a" if empty_b and not empty_a else "b"
    return "b" if empty_a and not empty_b else "a"


def _title(p: Page, t: TableDef, rec: dict[str, Any]) -> str:
    d = t.display_field
    if d is None:
        return f"#{rec['id']}"
    text = p.renderer(p.cat.app_by_id(t.app_id).key).text(d, rec["fields"].get(d.key))
    return str(text or f"#{rec['id']}")


def _candidates(p: Page, t: TableDef, rec: dict[str, Any], q: str) -> list[dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    if duplicates.rules(t):
        found = duplicates.find(p.conn, p.cat, p.access, t, _raw_values(p, t, rec["id"]), rec["id"])
        for m in found["matches"]:
            out[m["id"]] = {"id": m["id"], "display": m["display"] or f"#{m['id']}",
                            "why": rule_words(p, t, m["rules"])}
    if q:
        for other in p.reader().list(t, search=q[:200], limit=20)["records"]:
            if other["id"] != rec["id"] and other["id"] not in out:
                out[other["id"]] = {"id": other["id"], "display": _title(p, t, other), "why": ""}
    return list(out.values())


def _raw_values(p: Page, t: TableDef, rid: int) -> dict[str, Any]:
    """The stored values of the rule fields of one record (what the duplicate index compares)."""
    from sqlalchemy import select

    keys = {x["field"] for r in duplicates.rules(t) for x in r["fields"] if x["field"] in t.fields_by_key}
    cols = [t.sa.c[t.fields_by_key[k].column_name].label(k) for k in keys]
    row = p.conn.execute(select(*cols).where(t.sa.c.id == rid)).first() if cols else None
    return dict(row._mapping) if row is not None else {}


def _page(p: Page, app_key: str, t: TableDef, rid: int, status: int = 200, error: str | None = None) -> Response:
    app = visible_app(p, app_key)
    rec = p.reader().get(t, rid)
    other_arg = request.values.get("other", "")
    ctx: dict[str, Any] = {"app": app, "t": t, "rec": rec, "title": _title(p, t, rec), "error": error,
                           "tables": visible_tables(p, app), "dashboards": visible_dashboards(p, app)}
    if other_arg.isdigit() and int(other_arg) != rid:
        other = p.reader().get(t, int(other_arg))
        keep = "b" if request.values.get("keep") == "b" else "a"
        ctx.update(other=other, other_title=_title(p, t, other), rows=_compare_rows(p, t, rec, other, keep),
                   keep=keep, chosen={k: v for k, v in request.form.items() if k.startswith("f_")})
    else:
        q = (request.args.get("q") or "").strip()
        ctx.update(q=q, candidates=_candidates(p, t, rec, q))
    return render(p, "merge.html", status, **ctx)


@routes.get("/apps/<app_key>/<table_key>/<int:rid>/merge")
def merge_page(app_key: str, table_key: str, rid: int) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        t = visible_table(p, app_key, table_key)
        return _page(p, app_key, t, rid)


@routes.post("/apps/<app_key>/<table_key>/<int:rid>/merge")
def merge_submit(app_key: str, table_key: str, rid: int) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        t = visible_table(p, app_key, table_key)
        other_arg = request.form.get("other", "")
        if not other_arg.isdigit():
            raise BadRequest("choose the record to merge")
        other = int(other_arg)
        keep = request.form.get("keep", "a")
        survivor, loser = (rid, other) if keep != "b" else (other, rid)
        loser_side = "b" if keep != "b" else "a"
        take = [k[2:] for k, v in request.form.items() if k.startswith("f_") and v == loser_side]
        try:
            with conn.begin_nested():
                duplicates.merge(conn, cat, access, t, survivor, loser, take)
        except (ValidationFailed, Conflict, Forbidden, NotFound) as e:
            msg = p.t("dup_merge_forbidden") if isinstance(e, Forbidden) else \
                "; ".join(m for v in (e.details or {}).values() for m in (v if isinstance(v, list) else [str(v)])) \
                or e.message
            return _page(p, app_key, t, rid, e.status, error=msg)
    return redirect(url_for("ui.record_page", app_key=app_key, table_key=table_key,  # type: ignore[return-value]
                            rid=survivor, merged=1))
