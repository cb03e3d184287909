"""The views that are not a grid: kanban (with moving a card), calendar and gallery."""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import Response, request

from formwork.errors import BadRequest, Conflict, NotFound, PreconditionFailed, ValidationFailed
from formwork.metadata.catalog import AppDef, FieldDef, TableDef
from formwork.metadata.fieldtypes.base import DATETIME, FILES, NUMBER, SELECT
from formwork.metadata.flows import flow_of
from formwork.ui.context import (
    PAGE_SIZE,
    GridState,
    Page,
    parse_version,
    render,
    shown_fields,
    writable,
)
from formwork.ui.engine_messages import refusal
from formwork.ui.gridlayout import table_context
from formwork.ui.render import choice_map, local_datetime
from formwork.web import RouteSet, current_access, unit

routes = RouteSet()
KANBAN_CARDS = 20  # per column; "show more" loads the next 20
CARD_FIELDS = 6  # shown when nobody chose the card fields
MAX_CARD_FIELDS = 12


def board_settings(p: Page, t: TableDef, view: dict[str, Any]) -> dict[str, Any]:
    """A kanban's card fields (None: not chosen) and "hide empty columns" as this user sees them: the view's,
    with the user's own choice laid over (kept in their grid settings of the table, like a grid's column
    layout, so nobody else's board changes)."""
    from formwork.ui import gridlayout

    cards = [k for k in view.get("fields") or [] if isinstance(k, str)] or None
    hide = bool((view.get("options") or {}).get("hide_empty"))
    mine = False
    prefs = (gridlayout.load(p, t).get("prefs") or {}).get(gridlayout.pref_key(view))
    if isinstance(prefs, dict):
        if isinstance(prefs.get("cards"), list):
            cards, mine = [k for k in prefs["cards"] if isinstance(k, str)], True
        if isinstance(prefs.get("hide_empty"), bool):
            hide, mine = prefs["hide_empty"], True
    return {"cards": cards, "hide_empty": hide, "mine": mine}


def kanban_data(p: Page, app: AppDef, t: TableDef, view: dict[str, Any], state: GridState,
                first_page: bool = True) -> dict[str, Any]:
    from formwork.runtime.aggregate import aggregate

    gkey = (view.get("options") or {}).get("group_field")
    gf = t.fields_by_key.get(gkey or "")
    if gf is None or gf not in shown_fields(p, t):
        return {"columns": [], "board_error": p.t("forbidden")}
    title_key = (view.get("options") or {}).get("title_field") or (t.display_field.key if t.display_field else None)
    settings = board_settings(p, t, view)
    cover = t.fields_by_key.get((view.get("options") or {}).get("cover_field") or "")
    if cover is not None and (cover.ftype.kind != FILES or cover not in shown_fields(p, t)):
        cover = None
    choosable = [f for f in shown_fields(p, t) if f.key not in (title_key, gkey) and f is not cover]
    if settings["cards"] is None:
        extra = choosable[:CARD_FIELDS]
    else:
        by_key = {f.key: f for f in choosable}
        extra = [by_key[k] for k in dict.fromkeys(settings["cards"]) if k in by_key][:MAX_CARD_FIELDS]
    sf = t.fields_by_key.get((view.get("options") or {}).get("sum_field") or "")
    if sf is not None and (sf not in shown_fields(p, t) or sf.ftype.value_kind(sf, p.cat) != NUMBER):
        sf = None
    metrics = ["count", f"sum:{sf.key}"] if sf is not None else ["count"]
    try:
        tree = state.tree(p, t)
        counts = aggregate(p.conn, p.cat, p.access, t, group_by=[gkey], metrics=metrics, filter_tree=tree,
                           view=view, search=state.search or None)
    except BadRequest as e:
        return {"columns": [], "board_error": e.message}
    sums = {_group_value(g["key"].get(gkey)): g.get(f"sum:{sf.key}") for g in counts} if sf is not None else {}
    r = p.renderer(app.key)
    columns: list[dict[str, Any]] = []
    if gf.ftype.has_choices and gf.ftype.value_kind(gf, p.cat) == SELECT:  # a column per choice, in order
        by_value = {g["key"].get(gkey): g["count"] for g in counts}
        for value, (label, color) in choice_map(gf, p.locale).items():
            columns.append({"value": value, "label": label, "color": color, "count": by_value.get(value, 0)})
    else:
        for g in counts:
            k = g["key"].get(gkey)
            if k is not None:
                columns.append({"value": str(k["id"]), "label": k.get("name") or f"#{k['id']}", "color": "gray",
                                "count": g["count"]})
    empty = next((g["count"] for g in counts if g["key"].get(gkey) is None), 0)
    columns.append({"value": "", "label": p.t("empty_group"), "color": "gray", "count": empty})
    r0 = p.renderer(app.key)
    for col in columns:
        total = sums.get(col["value"]) if sf is not None else None
        col["sum"] = r0.cell(sf, total if total is not None else 0) if sf is not None else None
    if settings["hide_empty"]:
        columns = [c for c in columns if c["count"]]
    cards = CardReader(p, r, t, view, state, tree, gkey or "", title_key, extra, cover)
    for col in columns:
        col["cards"], col["next"] = cards.page(col["value"]) if col["count"] and first_page else ([], None)
    movable = writable(p, t, gf)
    for col in columns:
        moves = allowed_moves(p, t, gf.key, col["value"] or None)
        for card in col["cards"]:
            card["moves"] = moves
    tf = t.fields_by_key.get(title_key or "")
    can_add = p.access.can(p.cat, t, "create") and movable and tf is not None and writable(p, t, tf) \
        and tf.ftype.input_kind in ("text", "textarea", "email", "url", "tel")
    return {"columns": columns, "group_field": gf, "movable": movable, "board_error": None, "sum_field": sf,
            "can_add_card": can_add, "title_field": tf, "board_settings": settings, "cards": cards,
            "card_choices": [(f, True) for f in extra] + [(f, False) for f in choosable if f not in extra]}


class CardReader:
    """One column's cards, a page at a time (``KANBAN_CARDS``; "show more" asks for the next by cursor)."""

    def __init__(self, p: Page, r: Any, t: TableDef, view: dict[str, Any], state: GridState, tree: Any, gkey: str,
                 title_key: str | None, extra: list[FieldDef], cover: FieldDef | None) -> None:
        self.p, self.r, self.t, self.view, self.state, self.tree = p, r, t, view, state, tree
        self.gkey, self.extra, self.cover = gkey, extra, cover
        self.tf = t.fields_by_key.get(title_key or "")
        self.keys = [k for k in [title_key, *[f.key for f in extra], gkey, cover.key if cover else None] if k]
        self.labels = [p.label(f.label) for f in extra]

    def page(self, value: str, cursor: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
        cond: dict[str, Any] = {"field": self.gkey, "op": "is_empty"} if value == "" else \
            {"field": self.gkey, "op": "eq", "value": value}
        full = {"and": [cond, self.tree]} if self.tree else cond
        res = self.p.reader().list(self.t, filter_tree=full, search=self.state.search or None, fields=self.keys,
                                   limit=KANBAN_CARDS, cursor=cursor, view=self.view)
        r, tf = self.r, self.tf
        out = []
        for rec in res["records"]:
            fields = rec["fields"]
            out.append({"rec": rec, "title": (r.text(tf, fields.get(tf.key)) if tf else "") or f"#{rec['id']}",
                        "cover": cover_url(rec, self.cover),
                        "extra": [(label, r.cell(f, fields.get(f.key)))
                                  for label, f in zip(self.labels, self.extra, strict=True)
                                  if fields.get(f.key) not in (None, "", [])]})
        return out, res.get("next_cursor")


@routes.get("/apps/<app_key>/<table_key>/kanban/more")
def kanban_more(app_key: str, table_key: str) -> Response:
    """A column's next cards ("show more"): the cards after ``cursor`` and, when more remain, the next button."""
    access = current_access()
    with unit() as (conn, cat):
        c = table_context(conn, cat, access, app_key, table_key, "kanban")
        p, app, t, state, view = c.p, c.app, c.t, c.state, c.view
        assert view is not None
        data = kanban_data(p, app, t, view, state, first_page=False)
        value = request.args.get("value", "")
        col = next((col for col in data["columns"] if col["value"] == value), None)
        if col is None:
            raise NotFound(p.t("not_found"))
        col["cards"], col["next"] = data["cards"].page(value, request.args.get("cursor") or None)
        before = request.args.get("shown", "")
        col["shown"] = (int(before) if before.isdigit() and len(before) < 8 else 0) + len(col["cards"])
        moves = allowed_moves(p, t, data["group_field"].key, value or None)
        for card in col["cards"]:
            card["moves"] = moves
        data.pop("cards")
        return render(p, "_kanban_cards.html", app=app, t=t, view=view, state=state, col=col, **data)


@routes.post("/apps/<app_key>/<table_key>/board-settings")
def board_settings_save(app_key: str, table_key: str) -> Response:
    """The board's "Card fields" panel: the fields cards show (ticked, in the list's order) and "hide empty
    columns", kept for this user; ``reset`` goes back to the view's; ``to_view`` (builders) saves them into
    the shared view for everyone (through MetadataService: the build right, validation, the change log).
    Answers the board."""
    from formwork.ui import gridlayout
    from formwork.ui.builder import builder_page

    access = current_access()
    with unit() as (conn, cat):
        c = table_context(conn, cat, access, app_key, table_key, "kanban")
        p, app, t, state, view = c.p, c.app, c.t, c.state, c.view
        assert view is not None
        readable = {f.key for f in shown_fields(p, t)}
        shown = set(request.form.getlist("show"))
        cards = [k for k in dict.fromkeys(request.form.getlist("order")) if k in readable and k in shown]
        cards = cards[:MAX_CARD_FIELDS]
        hide = request.form.get("hide_empty") == "1"
        data = gridlayout.load(p, t)
        prefs = dict(data.get("prefs") or {})
        message = note = None
        if request.form.get("to_view"):
            _, svc = builder_page(conn, cat, access)
            opts = {k: v for k, v in (view.get("options") or {}).items() if k != "hide_empty"}
            if hide:
                opts["hide_empty"] = True
            title = opts.get("title_field") or (t.display_field.key if t.display_field else None)
            patch = {"fields": cards or ([title] if title else []), "options": opts}
            try:
                with conn.begin_nested():
                    saved = svc.update_doc("view", app.key, view["key"], patch, t.key)
            except (ValidationFailed, Conflict, BadRequest) as e:
                message = e.message
            else:
                view = {**view, "fields": saved.get("fields"), "options": saved.get("options")}
                prefs.pop(gridlayout.pref_key(view), None)
                note = p.t("gv_saved_to_view")
        elif request.form.get("reset"):
            prefs.pop(gridlayout.pref_key(view), None)
        else:
            prefs[gridlayout.pref_key(view)] = {"cards": cards, "hide_empty": hide}
        data["prefs"] = prefs
        gridlayout.store(p, t, data)
        resp = render(p, "_kanban.html", app=app, t=t, view=view, state=state, board_message=message,
                      board_note=note, board_panel=True, **kanban_data(p, app, t, view, state))
        resp.headers["HX-Push-Url"] = "false"
        return resp


def _group_value(k: Any) -> str:
    """A kanban column's value as the aggregate reports it (a choice, or a user as ``{"id": ...}``)."""
    if isinstance(k, dict):
        return str(k.get("id"))
    return "" if k is None else str(k)


@routes.post("/apps/<app_key>/<table_key>/kanban/add")
def kanban_add(app_key: str, table_key: str) -> Response:
    """Add a card in a column: a record with that column's value and the typed title."""
    access = current_access()
    message = None
    with unit() as (conn, cat):
        c = table_context(conn, cat, access, app_key, table_key, "kanban")
        p, app, t, state, view = c.p, c.app, c.t, c.state, c.view
        assert view is not None
        data_ = kanban_data(p, app, t, view, state)
        gf, tf = data_.get("group_field"), data_.get("title_field")
        title = (request.form.get("title") or "").strip()
        if not data_.get("can_add_card") or gf is None or tf is None:
            raise BadRequest(p.t("forbidden"))
        if not title:
            message = p.t("fix_errors")
        else:
            value = request.form.get("value", "")
            data = {tf.key: title, gf.key: (int(value) if gf.ftype.holds_users and value.isdigit() else value) or None}
            try:
                with conn.begin_nested():
                    p.service().create(t, data)
            except (ValidationFailed, Conflict) as e:
                message = "; ".join(refusal(e, p.locale))
        return render(p, "_kanban.html", app=app, t=t, view=view, state=state, board_message=message,
                      **kanban_data(p, app, t, view, state))


def allowed_moves(p: Page, t: TableDef, field_key: str, current: str | None) -> set[str] | None:
    """The columns a card in ``current`` may move to under the field's state flow (None: any column)."""
    fl = flow_of(t, field_key)
    if fl is None:
        return None
    roles = [str(r.get("key")) for r in p.access.roles]
    return set(fl.targets(current, roles, p.access.is_admin)) | {current or ""}


@routes.post("/apps/<app_key>/<table_key>/<int:rid>/move")
def kanban_move(app_key: str, table_key: str, rid: int) -> Response:
    """Drop a card on another column: set the group field (If-Match on the card's version)."""
    access = current_access()
    message = None
    with unit() as (conn, cat):
        c = table_context(conn, cat, access, app_key, table_key, "kanban")
        p, app, t, state, view = c.p, c.app, c.t, c.state, c.view
        assert view is not None
        gf = t.field(view["options"]["group_field"])
        value = request.form.get("value", "")
        data = {gf.key: (int(value) if gf.ftype.holds_users and value.isdigit() else value) or None}
        try:
            with conn.begin_nested():
                p.service().update(t, rid, data, if_match=parse_version(request.form.get("version")))
        except PreconditionFailed:
            message = p.t("stale")
        except (ValidationFailed, Conflict) as e:
            message = "; ".join(refusal(e, p.locale))
        return render(p, "_kanban.html", app=app, t=t, view=view, state=state, board_message=message,
                      **kanban_data(p, app, t, view, state))


CAL_MODES = ("month", "week", "day")


def calendar_range(p: Page, mode: str) -> tuple[dt.date, list[dt.date], dt.date, dt.date, dt.date]:
    """The days a calendar shows: (anchor, days, previous anchor, next anchor, today). A month shows whole
    weeks around it; the anchor comes from ``day`` (any mode) or ``month`` (2026-05)."""
    try:
        today = dt.datetime.now(ZoneInfo(p.tz)).date()
    except (ZoneInfoNotFoundError, ValueError):
        today = dt.datetime.now(dt.UTC).date()
    day_arg, month_arg = request.values.get("day", ""), request.values.get("month", "")
    try:
        if day_arg:
            anchor = dt.date.fromisoformat(day_arg)
        elif month_arg:
            anchor = dt.date.fromisoformat(month_arg + "-01")
        else:
            anchor = today
    except ValueError:
        raise BadRequest(p.t("builder_bad_day")) from None
    if not dt.date(1, 2, 1) <= anchor <= dt.date(9998, 11, 30):  # the weeks around it must be dates too
        raise BadRequest(p.t("builder_bad_day"))
    if mode == "day":
        return anchor, [anchor], anchor - dt.timedelta(days=1), anchor + dt.timedelta(days=1), today
    if mode == "week":
        start = anchor - dt.timedelta(days=anchor.weekday())
        return anchor, [start + dt.timedelta(days=i) for i in range(7)], anchor - dt.timedelta(days=7), \
            anchor + dt.timedelta(days=7), today
    first = anchor.replace(day=1)
    nxt = (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    prev = (first - dt.timedelta(days=1)).replace(day=1)
    start = first - dt.timedelta(days=first.weekday())
    days = [start + dt.timedelta(days=i) for i in range(42)]
    if days[35] >= nxt:
        days = days[:35]
    return first, days, prev, nxt, today


def calendar_data(p: Page, app: AppDef, t: TableDef, view: dict[str, Any], state: GridState) -> dict[str, Any]:
    """A month, week or day of records on their date (ranges span their days); events carry their version so
    dragging one to another day reschedules it without overwriting someone else's change."""
    opts = view.get("options") or {}
    df = t.fields_by_key.get(opts.get("date_field", ""))
    ef = t.fields_by_key.get(opts.get("end_field", "") or "")
    mode = request.values.get("mode", "month")
    mode = mode if mode in CAL_MODES else "month"
    first, days, prev, nxt, today = calendar_range(p, mode)
    events: dict[dt.date, list[dict[str, Any]]] = {d: [] for d in days}
    error = None
    movable = False
    tf = None
    if df is None or df not in shown_fields(p, t):
        error = p.t("forbidden")
    else:
        tf = t.fields_by_key.get(opts.get("title_field") or "") or t.display_field
        movable = writable(p, t, df) and (ef is None or writable(p, t, ef))
        last = days[-1]
        within: dict[str, Any] = {"field": df.key, "op": "between", "value": [days[0].isoformat(), last.isoformat()]}
        if ef is not None and ef in shown_fields(p, t):
            within = {"or": [within, {"and": [
                {"field": df.key, "op": "lte", "value": last.isoformat()},
                {"field": ef.key, "op": "gte", "value": days[0].isoformat()}]}]}
        cf = t.fields_by_key.get(opts.get("color_field") or "")
        colors = choice_map(cf, p.locale) if cf is not None and cf.ftype.has_choices else {}
        keys = [k.key for k in (tf, df, ef, cf if colors else None) if k is not None]
        try:
            tree = state.tree(p, t)
            res = p.reader().list(t, filter_tree={"and": [within, tree]} if tree else within, sort=df.key,
                                  fields=keys, limit=1000, view=view, search=state.search or None)
        except BadRequest as err:
            res, error = {"records": []}, err.message
        r = p.renderer(app.key)
        for rec in res["records"]:
            s = _day(rec["fields"].get(df.key), p.tz)
            if s is None:
                continue
            end = _day(rec["fields"].get(ef.key), p.tz) if ef is not None else None
            end = end if end is not None and end >= s else s
            title = (r.text(tf, rec["fields"].get(tf.key)) if tf else "") or f"#{rec['id']}"
            color = colors.get(rec["fields"].get(cf.key) or "", ("", ""))[1] if colors and cf else ""
            d = max(s, days[0])
            while d <= min(end, days[-1]):
                events[d].append({"id": rec["id"], "title": title, "version": rec["version"], "color": color,
                                  "start": d == s})
                d += dt.timedelta(days=1)
    can_add = df is not None and tf is not None and movable and p.access.can(p.cat, t, "create") \
        and writable(p, t, tf) and tf.ftype.input_kind in ("text", "textarea", "email", "url", "tel")
    if mode == "month":
        title = p.t("month_title", month=p.t("month_names").split(",")[first.month - 1], year=first.year,
                    n=first.month)
    elif mode == "week":
        title = f"{days[0].isoformat()} – {days[-1].isoformat()}"
    else:
        title = f"{first.isoformat()} {p.t('weekdays').split(',')[first.weekday()]}"
    return {"cal_days": days, "cal_events": events, "cal_month": first, "cal_prev": prev.isoformat(),
            "cal_next": nxt.isoformat(), "cal_today": today, "cal_error": error, "cal_mode": mode,
            "cal_title": title, "cal_movable": movable, "cal_can_add": can_add, "cal_title_field": tf,
            "month_names": p.t("month_names").split(","), "weekdays": p.t("weekdays").split(",")}


@routes.post("/apps/<app_key>/<table_key>/<int:rid>/reschedule")
def calendar_move(app_key: str, table_key: str, rid: int) -> Response:
    """Drop an event on another day: its date moves there (an end date moves by as many days, a time of day
    stays), If-Match on the version it was shown with."""
    access = current_access()
    message = None
    with unit() as (conn, cat):
        c = table_context(conn, cat, access, app_key, table_key, "calendar")
        p, app, t, state, view = c.p, c.app, c.t, c.state, c.view
        assert view is not None
        opts = view.get("options") or {}
        df = t.field(opts["date_field"])
        ef = t.fields_by_key.get(opts.get("end_field") or "")
        try:
            target = dt.date.fromisoformat(request.form.get("date", ""))
        except ValueError:
            raise BadRequest(p.t("builder_bad_day")) from None
        rec = p.reader().get(t, rid, fields=[k.key for k in (df, ef) if k is not None])
        start = _day(rec["fields"].get(df.key), p.tz)
        if start is None:
            message = p.t("builder_no_date")
        else:
            delta = target - start
            data = {df.key: _shift(rec["fields"].get(df.key), delta, p.tz)}
            if ef is not None and rec["fields"].get(ef.key):
                data[ef.key] = _shift(rec["fields"][ef.key], delta, p.tz)
            try:
                with conn.begin_nested():
                    p.service().update(t, rid, data, if_match=parse_version(request.form.get("version")))
            except PreconditionFailed:
                message = p.t("stale")
            except (ValidationFailed, Conflict) as e:
                message = "; ".join(refusal(e, p.locale))
        return render(p, "_calendar.html", app=app, t=t, view=view, state=state, cal_message=message,
                      **calendar_data(p, app, t, view, state))


@routes.post("/apps/<app_key>/<table_key>/calendar/add")
def calendar_add(app_key: str, table_key: str) -> Response:
    """Click a day, type a title: a record on that day."""
    access = current_access()
    message = None
    with unit() as (conn, cat):
        c = table_context(conn, cat, access, app_key, table_key, "calendar")
        p, app, t, state, view = c.p, c.app, c.t, c.state, c.view
        assert view is not None
        cal = calendar_data(p, app, t, view, state)
        df, tf = t.field(view["options"]["date_field"]), cal["cal_title_field"]
        if not cal["cal_can_add"] or tf is None:
            raise BadRequest(p.t("forbidden"))
        title = (request.form.get("title") or "").strip()
        try:
            day = dt.date.fromisoformat(request.form.get("date", ""))
        except ValueError:
            raise BadRequest(p.t("builder_bad_day")) from None
        if not title:
            message = p.t("fix_errors")
        else:
            value: Any = day.isoformat()
            if df.ftype.kind == DATETIME:
                value = dt.datetime.combine(day, dt.time(9, 0), _zone(p.tz)).isoformat()
            try:
                with conn.begin_nested():
                    p.service().create(t, {tf.key: title, df.key: value})
            except (ValidationFailed, Conflict) as e:
                message = "; ".join(refusal(e, p.locale))
        return render(p, "_calendar.html", app=app, t=t, view=view, state=state, cal_message=message,
                      **calendar_data(p, app, t, view, state))


def _zone(tz: str) -> dt.tzinfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        return dt.UTC


def _shift(value: Any, delta: dt.timedelta, tz: str) -> Any:
    """A date or datetime value moved by whole days (a datetime keeps its local time of day)."""
    if not isinstance(value, str) or not value:
        return value
    if len(value) == 10:
        return (dt.date.fromisoformat(value) + delta).isoformat()
    local = local_datetime(value, tz)
    if local is None:
        return value
    return (local.replace(tzinfo=None) + delta).replace(tzinfo=_zone(tz)).isoformat()


def _day(value: Any, tz: str) -> dt.date | None:
    if not isinstance(value, str) or not value:
        return None
    if len(value) == 10:
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            return None
    d = local_datetime(value, tz)
    return d.date() if d else None


def cover_url(rec: dict[str, Any], cover: FieldDef | None) -> str | None:
    """The first image of a record's attachment field (its thumbnail when the file store made one)."""
    if cover is None:
        return None
    for item in rec["fields"].get(cover.key) or []:
        if isinstance(item, dict) and str(item.get("mime", "")).startswith("image/") \
                and item.get("mime") != "image/svg+xml":
            url = item.get("thumbnail_url") or item.get("url")
            if url:  # shown in the page, not downloaded
                return f"{url}?inline=1" if str(url).startswith("/api/v1/files/") and "?" not in str(url) else str(url)
            if item.get("token"):
                return f"/api/v1/files/{quote(str(item['token']), safe='')}?inline=1"
    return None


def gallery_data(p: Page, app: AppDef, t: TableDef, view: dict[str, Any], state: GridState) -> dict[str, Any]:
    opts = view.get("options") or {}
    shown = shown_fields(p, t, view.get("fields"))
    tf = t.fields_by_key.get(opts.get("title_field") or "") or t.display_field
    cover = t.fields_by_key.get(opts.get("cover_field") or "") or next(
        (f for f in shown if f.ftype.kind == FILES), None)
    if cover is not None and cover not in shown_fields(p, t):
        cover = None
    extra = [f for f in shown if f not in (tf, cover)][:4]
    keys = [f.key for f in [tf, cover, *extra] if f is not None]
    try:
        res = p.reader().list(t, filter_tree=state.tree(p, t), search=state.search or None, fields=keys,
                              limit=PAGE_SIZE, view=view, sort=state.sort or None)
    except BadRequest as e:
        return {"cards": [], "gallery_error": e.message}
    r = p.renderer(app.key)
    cards = []
    for rec in res["records"]:
        img = cover_url(rec, cover)
        cards.append({"rec": rec, "title": (r.text(tf, rec["fields"].get(tf.key)) if tf else "") or f"#{rec['id']}",
                      "cover": img, "extra": [(p.label(f.label), r.cell(f, rec["fields"].get(f.key))) for f in extra
                                              if rec["fields"].get(f.key) not in (None, "", [])]})
    return {"cards": cards, "gallery_error": None}
