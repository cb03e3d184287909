"""One record: its page (fields, history, approvals), saving, deleting, restoring, a new record,
and the link picker's search."""

from __future__ import annotations

from typing import Any

from flask import Response, redirect, request, url_for
from sqlalchemy import select

from formwork import db
from formwork.automation import intake
from formwork.errors import BadRequest, Conflict, Forbidden, NotFound, PreconditionFailed, ValidationFailed
from formwork.metadata import defaults
from formwork.metadata.catalog import AppDef, TableDef
from formwork.metadata.fieldtypes.base import FILES
from formwork.runtime import buttons, comments, files, pool
from formwork.ui import attachments
from formwork.ui.approvals import panel as approval_panel
from formwork.ui.context import (
    Page,
    make_page,
    parse_version,
    render,
    shown_fields,
    visible_app,
    visible_dashboards,
    visible_table,
    visible_tables,
    writable,
)
from formwork.ui.engine_messages import refusal
from formwork.ui.inputs import flow_options, input_options, parse_form
from formwork.ui.merge import duplicate_panel
from formwork.ui.render import local_datetime
from formwork.web import RouteSet, current_access, unit

routes = RouteSet()


def record_context(p: Page, app: AppDef, t: TableDef, rec: dict[str, Any],
                   att_errors: dict[str, list[str]] | None = None,
                   stored: dict[str, Any] | None = None) -> dict[str, Any]:
    """What record.html shows; ``stored``: the record's saved values when ``rec`` shows what was typed (a
    refused save), so a state flow offers the moves from the saved state."""
    fields = shown_fields(p, t)
    shown = [f for f in fields if f.key in rec["fields"]]
    r = p.renderer(app.key)
    reverse = [f for f in shown if f.ftype.lists_related(f)]
    att = attachments.panels(p, app, t, rec, shown, att_errors)
    own = [f for f in shown if f not in reverse and not (f.ftype.kind == FILES and f.stored)]  # _attachments.html
    edit = [f for f in own if writable(p, t, f)]
    history: list[dict[str, Any]] = []  # the timeline shows the changes
    return {"app": app, "t": t, "rec": rec, "fields": own,
            "cells": {f.key: r.cell(f, rec["fields"].get(f.key)) for f in shown}, "edit_fields": edit,
            "reverse": [(f, rec["fields"].get(f.key) or [], p.cat.tables_by_id[f.options["target"]])
                        for f in reverse if f.options.get("target") in p.cat.tables_by_id],
            "attachments": att,
            "history": history, "approval_panel": approval_panel(p, t, rec["id"]),
            "options": flow_options(p, t, input_options(p, t, edit), rec["fields"] if stored is None else stored),
            "tables": visible_tables(p, app),
            "title": r.text(t.display_field, rec["fields"].get(t.display_field.key)) if t.display_field else "",
            "can_delete": _allowed(p, t, rec["id"], "delete"), "dashboards": visible_dashboards(p, app),
            "buttons": record_buttons(p, t, rec["id"]), "adds": related_adds(p, app, t, rec["id"], reverse),
            "timeline": timeline_entries(p, t, rec["id"], history),
            "mention_users": _mention_users(p),
            "can_merge": bool(t.doc.get("duplicate_rules")) and _allowed(p, t, rec["id"], "update")}


def related_adds(p: Page, app: AppDef, t: TableDef, rid: int, reverse: list[Any]) -> dict[str, str]:
    """Per related list (reverse link key): the address of a new record of that table already linked
    to this one ("add contact", "log activity"), where the user may create such records."""
    out: dict[str, str] = {}
    for f in reverse:
        target = p.cat.tables_by_id.get(f.options.get("target"))
        pair = p.cat.fields_by_id.get(f.options.get("pair") or -1)
        if target is None or pair is None or not p.access.can(p.cat, target, "create"):
            continue
        args: dict[str, Any] = {pair.key: rid}
        out[f.key] = url_for("ui.record_new", app_key=app.key, table_key=target.key, **args)
    return out


def timeline_entries(p: Page, t: TableDef, rid: int, history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The record's timeline for the page: its comments, the changes (rendered as in the history) and the
    related records the table names in ``timeline``, newest first."""
    items = comments.timeline(p.conn, p.cat, p.access, t, rid, limit=150)
    r = p.renderer(p.cat.app_by_id(t.app_id).key)
    labels = {f.key: p.label(f.label) for f in t.fields}
    labels.update({"_merged_from": p.t("dup_merged_from"), "_merged_into": p.t("dup_merged_into")})
    out = []
    for it in items:
        d = local_datetime(str(it["at"]), p.tz) if it["at"] and len(str(it["at"])) > 10 else None
        it = {**it, "when": d.strftime("%Y-%m-%d %H:%M") if d else str(it["at"] or "")[:10]}
        if it["kind"] == "change":
            e = it["change"]
            e["rows"] = [{"label": labels.get(k, k), "old": _shown_change(r, t, k, v.get("old")),
                          "new": _shown_change(r, t, k, v.get("new"))}
                         for k, v in (e.get("changes") or {}).items() if isinstance(v, dict)]
        out.append(it)
    return out


def _merged_text(value: Any) -> Any:
    """A merge entry's other record ({"id", "display"}) as its display text."""
    if isinstance(value, dict) and "id" in value:
        return value.get("display") or f"#{value['id']}"
    return value


def _shown_change(r: Any, t: TableDef, key: str, value: Any) -> Any:
    """A value in the timeline: as its cell, except files, named (so a removed file shows which one went)."""
    f = t.fields_by_key.get(key)
    if f is None:
        return _merged_text(value)
    if f.ftype.kind == FILES and isinstance(value, list):
        return ", ".join(str(v.get("name")) for v in value if isinstance(v, dict)) or "—"
    return r.cell(f, value)


def _mention_users(p: Page) -> list[dict[str, Any]]:
    rows = p.conn.execute(select(db.users.c.username, db.users.c.name).where(
        db.users.c.active.is_(True), db.users.c.id != (p.access.user_id or 0)).order_by(db.users.c.name).limit(500))
    return [{"username": r.username, "name": r.name} for r in rows]


def record_buttons(p: Page, t: TableDef, rid: int) -> list[dict[str, Any]]:
    """The record's buttons for ``_record_buttons.html`` (assign carries the people it may go to)."""
    out = []
    for b in buttons.visible(p.conn, p.cat, p.access, t, rid):
        item: dict[str, Any] = {"key": b.key, "label": b.label, "action": b.action}
        if b.action == "assign":
            item["users"] = pool.assignable_users(p.conn, p.access)
        out.append(item)
    return out


def _allowed(p: Page, t: TableDef, rid: int, op: str) -> bool:
    scope = p.access.scope(p.cat, t, t.sa, op)
    q = select(t.sa.c.id).where(t.sa.c.id == rid)
    if scope is not None:
        q = q.where(scope)
    return p.conn.execute(q).first() is not None


@routes.get("/apps/<app_key>/<table_key>/<int:rid>")
def record_page(app_key: str, table_key: str, rid: int) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        app = visible_app(p, app_key)
        t = visible_table(p, app_key, table_key)
        try:
            rec = p.reader().get(t, rid)
        except NotFound:
            deleted = p.reader().get(t, rid, trashed=True)  # 404 unless it is in the trash and readable
            return render(p, "record_trashed.html", app=app, t=t, rec=deleted, tables=visible_tables(p, app),
                          dashboards=visible_dashboards(p, app))
        done = buttons.find(t, request.args.get("done") or "")
        return render(p, "record.html", **record_context(p, app, t, rec), errors={},
                      saved=request.args.get("saved") == "1", merged=request.args.get("merged") == "1",
                      button_done=p.label(done.get("label") or done["key"]) if done else None)


@routes.post("/apps/<app_key>/<table_key>/<int:rid>")
def record_save(app_key: str, table_key: str, rid: int) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        app = visible_app(p, app_key)
        t = visible_table(p, app_key, table_key)
        keys = set(request.form.getlist("_fields"))
        fields = [f for f in t.fields if f.key in keys and writable(p, t, f)]
        data = parse_form(p, t, fields, request.form)
        try:
            with conn.begin_nested():
                version = parse_version(request.form.get("version"))
                if _claims(p, t, rid, data):
                    # choosing yourself as the owner of a pool record is claiming it (limits and cooldown apply)
                    pool.claim(conn, cat, access, t, rid)
                    version = None
                    data = {k: v for k, v in data.items() if k != pool.owner_key(t, cat)}
                if data:
                    p.service().update(t, rid, data, if_match=version)
        except PreconditionFailed:
            rec = p.reader().get(t, rid)
            return render(p, "record.html", 412, **record_context(p, app, t, rec), errors={}, stale=True)
        except (ValidationFailed, Conflict, Forbidden) as e:
            rec = p.reader().get(t, rid)
            stored = dict(rec["fields"])
            rec["fields"].update(_shown_links(p, t, data))
            return render(p, "record.html", 403 if isinstance(e, Forbidden) else 422,
                          **record_context(p, app, t, rec, stored=stored), errors=e.details or {"": [e.message]},
                          submitted=True)
    return redirect(url_for("ui.record_page", app_key=app_key, table_key=table_key, rid=rid,  # type: ignore[return-value]
                            saved=1))


@routes.post("/apps/<app_key>/<table_key>/<int:rid>/buttons/<key>")
def record_button(app_key: str, table_key: str, rid: int, key: str) -> Response:
    """Press a record button (claim, release, assign, or a manual automation); back to the record, or to
    its table when the record left the user's sight (released by a rep who sees only their own)."""
    access = current_access()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        app = visible_app(p, app_key)
        t = visible_table(p, app_key, table_key)
        user = request.form.get("user", "")
        b = buttons.find(t, key)
        try:
            with conn.begin_nested():
                buttons.press(conn, cat, access, t, rid, key, int(user) if user.isdigit() else None)
                if b is not None and b.get("automation"):
                    rule = next((r for r in app.automations if r.get("key") == b["automation"]), None)
                    if rule is None:
                        raise NotFound(f"no automation '{b['automation']}'")
                    intake.queue_manual_run(conn, cat, access, app, rule, [rid])
        except (ValidationFailed, Conflict, Forbidden) as e:
            rec = p.reader().get(t, rid)
            msgs = refusal(e, p.locale)
            return render(p, "record.html", 422 if isinstance(e, ValidationFailed) else e.status,
                          **record_context(p, app, t, rec), errors={}, button_error="; ".join(msgs))
        if not _readable(p, t, rid):
            return redirect(url_for("ui.table_page", app_key=app_key, table_key=table_key))  # type: ignore[return-value]
    return redirect(url_for("ui.record_page", app_key=app_key, table_key=table_key, rid=rid,  # type: ignore[return-value]
                            done=key))


@routes.post("/apps/<app_key>/<table_key>/<int:rid>/comments")
def comment_add(app_key: str, table_key: str, rid: int) -> Response:
    return _comment_change(app_key, table_key, rid, None, "add")


@routes.post("/apps/<app_key>/<table_key>/<int:rid>/comments/<int:cid>")
def comment_edit(app_key: str, table_key: str, rid: int, cid: int) -> Response:
    return _comment_change(app_key, table_key, rid, cid, "edit")


@routes.post("/apps/<app_key>/<table_key>/<int:rid>/comments/<int:cid>/delete")
def comment_delete(app_key: str, table_key: str, rid: int, cid: int) -> Response:
    return _comment_change(app_key, table_key, rid, cid, "delete")


def _comment_change(app_key: str, table_key: str, rid: int, cid: int | None, what: str) -> Response:
    """Add, edit or delete a comment from the record page; a bad comment comes back with its text."""
    access = current_access()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        app = visible_app(p, app_key)
        t = visible_table(p, app_key, table_key)
        body = request.form.get("body", "")
        try:
            with conn.begin_nested():
                if what == "add":
                    comments.add(conn, cat, access, t, rid, body)
                elif what == "edit":
                    comments.edit(conn, cat, access, t, rid, cid, body)
                else:
                    comments.delete(conn, cat, access, t, rid, cid)
        except (ValidationFailed, Forbidden) as e:
            rec = p.reader().get(t, rid)
            msgs = refusal(e, p.locale)
            return render(p, "record.html", 422 if isinstance(e, ValidationFailed) else 403,
                          **record_context(p, app, t, rec), errors={}, comment_error="; ".join(msgs),
                          comment_text=body if what == "add" else "", comment_edit=cid)
    return redirect(url_for("ui.record_page", app_key=app_key, table_key=table_key, rid=rid,  # type: ignore[return-value]
                            _anchor="comments"))


@routes.post("/apps/<app_key>/<table_key>/<int:rid>/delete")
def record_delete(app_key: str, table_key: str, rid: int) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        app = visible_app(p, app_key)
        t = visible_table(p, app_key, table_key)
        try:
            with conn.begin_nested():
                p.service().delete(t, rid)
        except Conflict as e:  # a link that blocks it, or a rule of the app (stock history stays): said on the page
            rec = p.reader().get(t, rid)
            return render(p, "record.html", 409, **record_context(p, app, t, rec), errors={},
                          button_error="; ".join(refusal(e, p.locale)))
    return redirect(url_for("ui.record_page", app_key=app_key, table_key=table_key, rid=rid))  # type: ignore[return-value]


@routes.post("/apps/<app_key>/<table_key>/<int:rid>/restore")
def record_restore(app_key: str, table_key: str, rid: int) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        t = visible_table(p, app_key, table_key)
        p.service().restore(t, rid)
    return redirect(url_for("ui.record_page", app_key=app_key, table_key=table_key, rid=rid))  # type: ignore[return-value]


@routes.route("/apps/<app_key>/<table_key>/new", methods=["GET", "POST"])
def record_new(app_key: str, table_key: str) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        app = visible_app(p, app_key)
        t = visible_table(p, app_key, table_key)
        p.access.require(p.cat, t, "create")
        fields = [f for f in shown_fields(p, t) if (writable(p, t, f) or _file_input(p, t, f))
                  and not f.ftype.lists_related(f)]
        limits = {f.key: attachments.limits(f) for f in fields if f.ftype.kind == FILES}
        new_options = flow_options(p, t, input_options(p, t, fields), None)  # a flow's states it may start in
        values: dict[str, Any] = {}
        errors: dict[str, list[str]] = {}
        dups = None
        if request.method == "POST":
            values = parse_form(p, t, fields, request.form)
            if request.form.get("_allow_duplicates") != "1":
                # looks like an existing record: show which (with links) and offer "create anyway"
                dups = duplicate_panel(p, t, values)
            if dups is not None:
                return render(p, "record_new.html", 200, app=app, t=t, fields=fields,
                              values=_shown_links(p, t, values), errors={}, duplicates=dups,
                              options=new_options, tables=visible_tables(p, app),
                              dashboards=visible_dashboards(p, app))
            created: list[Any] = []
            try:
                with conn.begin_nested():
                    attachments.take_files(p, fields, False, access.user_id, values, errors, created)
                    if errors:
                        raise ValidationFailed.from_details(errors)
                    rec = p.service().create(t, values)
                if _readable(p, t, rec["id"]):
                    return redirect(url_for("ui.record_page", app_key=app_key,  # type: ignore[return-value]
                                            table_key=table_key, rid=rec["id"]))
                # the new record went out of the creator's sight (another owner): no 404, say so
                return render(p, "record_new.html", app=app, t=t, fields=fields, limits=limits,
                              values=new_record_values(p, t, fields, {}), errors={}, created_elsewhere=True,
                              options=new_options, tables=visible_tables(p, app),
                              dashboards=visible_dashboards(p, app))
            except (ValidationFailed, Conflict) as e:
                files.discard(conn, created)
                errors = e.details or {"": [e.message]}
                values = _shown_links(p, t, {k: v for k, v in values.items() if k not in limits})
        else:
            values = new_record_values(p, t, [f for f in fields if f.key not in limits], request.args)
        return render(p, "record_new.html", 422 if errors else 200, app=app, t=t, fields=fields, values=values,
                      errors=errors, options=new_options, tables=visible_tables(p, app),
                      dashboards=visible_dashboards(p, app), limits=limits)


def _file_input(p: Page, t: TableDef, f: Any) -> bool:
    """An attachment field the creator may fill: an upload box on the new-record page."""
    return f.ftype.kind == FILES and f.stored and not f.ftype.read_only and p.access.field_writable(p.cat, t, f)


def _claims(p: Page, t: TableDef, rid: int, data: dict[str, Any]) -> bool:
    """Does this save set the caller as the owner of a record that sits in the table's pool?"""
    key = pool.owner_key(t, p.cat)
    if key is None or p.access.user_id is None or data.get(key) != p.access.user_id:
        return False
    col = t.sa.c[t.fields_by_key[key].column_name]
    row = p.conn.execute(select(col).where(t.sa.c.id == rid, t.sa.c.deleted_at.is_(None))).first()
    return row is not None and row[0] is None and not _allowed(p, t, rid, "update")


def _readable(p: Page, t: TableDef, rid: int) -> bool:
    return _allowed(p, t, rid, "read")


def new_record_values(p: Page, t: TableDef, fields: list[Any], args: Any) -> dict[str, Any]:
    """What a new-record form starts with: the fields' defaults (the creator, today, …), then values
    given in the address (``?customer=17`` from a related list's "add"), links shown by their display."""
    values: dict[str, Any] = {}
    for f in fields:
        d = defaults.field_default(f, p.access.user_id, p.access.timezone)
        if d is not None:
            values[f.key] = d
    given = [f for f in fields if f.key in args]
    if given:
        try:
            values.update({k: v for k, v in parse_form(p, t, given, args).items() if v not in (None, [], "")})
        except BadRequest:
            pass  # a hand-made address with a bad id prefills nothing
    return _shown_links(p, t, values)


def _shown_links(p: Page, t: TableDef, values: dict[str, Any]) -> dict[str, Any]:
    """Link ids as ``{"id", "display"}`` (a picker shows names, never ids); ids the user can't read drop."""
    out = dict(values)
    for key, v in values.items():
        f = t.fields_by_key.get(key)
        if f is None or not f.ftype.is_link or v in (None, []):
            continue
        target = p.cat.table_by_id(f.options["target"])
        ids = [i for i in (v if isinstance(v, list) else [v]) if isinstance(i, int)]
        shown = []
        disp = target.display_field
        r = p.renderer(p.cat.app_by_id(t.app_id).key)
        for rec in p.reader().by_ids(target, ids) if access_reads(p, target) else []:
            if _readable(p, target, rec["id"]):
                text = r.text(disp, rec["fields"].get(disp.key)) if disp else ""
                shown.append({"id": rec["id"], "display": text or "—"})
        out[key] = shown if isinstance(v, list) else (shown[0] if shown else None)
    return out


def access_reads(p: Page, t: TableDef) -> bool:
    return p.access.can_see_table(p.cat, t)


@routes.get("/apps/<app_key>/<table_key>/link-search/<field_key>")
def link_search(app_key: str, table_key: str, field_key: str) -> Response:
    """Records of a link's target table matching ``q`` by their display field (for the link picker)."""
    access = current_access()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        t = visible_table(p, app_key, table_key)
        f = t.field(field_key)
        if not f.ftype.is_link or f not in shown_fields(p, t):
            raise NotFound(f"no link field '{field_key}'")
        target = cat.table_by_id(f.options["target"])
        disp = target.display_field
        q = (request.args.get("_q") or request.args.get("q") or "").strip()[:200]
        items: list[dict[str, Any]] = []
        if access.can_see_table(cat, target):
            res = p.reader().list(target, search=q or None, fields=[disp.key] if disp else None, limit=10)
            r = p.renderer(app_key)
            items = [{"id": rec["id"], "label": (r.text(disp, rec["fields"].get(disp.key)) if disp else "")
                      or f"#{rec['id']}"} for rec in res["records"]]
        return render(p, "_link_results.html", items=items, field=f)
