"""A record's print page: a clean, paper-shaped page of its fields and its child lines (a quote with its
lines and totals, an order with its lines), in the reader's language; ``@media print`` drops the buttons.

Child lines are the related tables whose rows belong to this record (``scope_parent`` names the link to
it); other related lists stay on the record page. Everything shown is what the reader may read."""

from __future__ import annotations

import datetime as dt

from flask import Response

from formwork.ui.context import make_page, render, shown_fields, visible_app, visible_table
from formwork.ui.render import local_datetime
from formwork.web import RouteSet, current_access, unit

routes = RouteSet()
MAX_LINES = 500


@routes.get("/apps/<app_key>/<table_key>/<int:rid>/print")
def record_print(app_key: str, table_key: str, rid: int) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        app = visible_app(p, app_key)
        t = visible_table(p, app_key, table_key)
        rec = p.reader().get(t, rid)  # 404 unless readable
        r = p.renderer(app.key)
        shown = [f for f in shown_fields(p, t) if f.key in rec["fields"]]
        reverse = [f for f in shown if f.ftype.lists_related(f)]
        fields = [{"label": p.label(f.label), "value": r.cell(f, rec["fields"].get(f.key))}
                  for f in shown if f not in reverse and f.ftype.input_kind != "files"]
        sections = []
        for f in reverse:
            target = cat.tables_by_id.get(int(f.options.get("target") or 0))
            pair = cat.fields_by_id.get(f.options.get("pair") or -1)
            if target is None or pair is None or target.doc.get("scope_parent") != pair.key:
                continue
            if not p.access.can_see_table(cat, target):
                continue
            cols = [g for g in shown_fields(p, target) if g.key != pair.key and not g.ftype.lists_related(g)
                    and g.ftype.input_kind != "files" and g.type not in ("created_by", "created_at")]
            rows = p.reader().list(target, filter_tree={"field": pair.key, "op": "eq", "value": rid},
                                   sort="id", limit=MAX_LINES)["records"]
            tr = p.renderer(app.key)
            sections.append({"label": p.label(f.label), "cols": [{"label": p.label(g.label), "num": _numeric(g.type)}
                                                                 for g in cols],
                             "rows": [[tr.cell(g, x["fields"].get(g.key)) for g in cols] for x in rows]})
        title = r.text(t.display_field, rec["fields"].get(t.display_field.key)) if t.display_field else ""
        printed = local_datetime(dt.datetime.now(dt.UTC).isoformat(), p.tz)
        return render(p, "record_print.html", app=app, t=t, rec=rec, title=title or f"#{rid}", fields=fields,
                      sections=sections, printed=printed.strftime("%Y-%m-%d %H:%M") if printed else "")


def _numeric(ftype: str) -> bool:
    return ftype in ("number", "currency", "percent", "formula", "rollup", "autonumber")


__all__ = ["record_print", "routes"]
