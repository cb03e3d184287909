"""Automation pages: the list of an app's rules, the builder (trigger, condition, actions), the test (dry
run), the run log with retry, and the manual-run buttons on record pages.

Every change goes through MetadataService exactly as the API's (the right to manage automations, the
same JSON Schema and save-time checks); the builder's form is read into the API's document
(formwork.automation.forms) and the validation's JSON pointers are turned back into the form's inputs,
so errors show next to what caused them and nothing typed is lost. Runs, dry runs and retries use the
services the API uses (formwork.automation.engine, runs, intake, hooks).
"""

from __future__ import annotations

import copy
from typing import Any

from flask import Response, current_app, g, make_response, redirect, request, url_for
from sqlalchemy import select

from formwork import db
from formwork.automation import forms, hooks, intake, runs
from formwork.automation.actions.base import action_types
from formwork.automation.document import AutomationDocument
from formwork.automation.engine import AutomationEngine
from formwork.automation.settings import Settings
from formwork.automation.triggers.base import trigger_types
from formwork.errors import BadRequest, Conflict, Forbidden, FormworkError, NotFound, ValidationFailed
from formwork.metadata import validation
from formwork.metadata.catalog import AppDef, TableDef
from formwork.metadata.documents import DocumentContext
from formwork.metadata.fieldtypes.base import DATE, DATETIME
from formwork.metadata.service import MetadataService
from formwork.runtime import auth
from formwork.runtime.previews import record_values
from formwork.ui.context import Page, make_page, render, visible_app, visible_dashboards, visible_table, visible_tables
from formwork.ui.render import choice_map, local_datetime
from formwork.ui.timezones import zone_choices, zone_name
from formwork.web import RouteSet, client_ip, current_access, unit

routes = RouteSet()
BASE = "/apps/<app_key>/_automations"
RUN_STATUSES = ("succeeded", "failed", "running", "waiting", "awaiting_approval", "delivering", "skipped")
#: actions the builder offers, in this order (then whatever else the registry holds)
ACTION_ORDER = ("update_record", "create_record", "update_related", "send_email", "call_webhook", "notify",
                "assign_owner", "request_approval", "wait", "branch", "recycle_to_pool")


def _conditions() -> Any:
    """The shared visual condition builder, once it is there (formwork/ui/conditions.py)."""
    import importlib

    try:
        return importlib.import_module("formwork.ui.conditions")
    except ImportError:
        return None


# --- pages and rights ---------------------------------------------------------------------------------
def manager_page(conn: Any, cat: Any, access: Any) -> tuple[Page, MetadataService]:
    """A page of someone who may manage automations (403 otherwise), and the service that saves rules."""
    if not access.can_manage_automations():
        raise Forbidden("you may not manage automations")
    p = make_page(conn, cat, access)
    if request.method not in ("GET", "HEAD"):
        auth.audit_meta_change(conn, access, request.method, request.path, client_ip())
    return p, MetadataService(conn, access.actor(client_ip(), record_values(access)), cat)


def engine() -> AutomationEngine:
    from formwork.web import platform

    pf = platform()
    return AutomationEngine(pf.engine, pf.catalogs, Settings.from_config(current_app.config), "web")


def find_rule(app: AppDef, key: str) -> dict[str, Any]:
    for rule in app.automations:
        if rule["key"] == key:
            return rule
    raise NotFound(f"no automation '{key[:100]}' in app '{app.key}'")


def frame(p: Page, app: AppDef) -> dict[str, Any]:
    return {"app": app, "tables": visible_tables(p, app), "dashboards": visible_dashboards(p, app),
            "side_active": "automations"}


def when(p: Page, iso: str | None) -> str:
    d = local_datetime(iso, p.tz) if iso else None
    return d.strftime("%Y-%m-%d %H:%M") if d else ""


# --- words --------------------------------------------------------------------------------------------
def field_label(p: Page, t: TableDef | None, key: str) -> str:
    f = t.fields_by_key.get(key) if t is not None else None
    return p.label(f.label) if f is not None else key


def value_words(p: Page, t: TableDef | None, key: str, value: Any) -> str:
    f = t.fields_by_key.get(key) if t is not None else None
    if f is not None and f.ftype.has_choices:
        return choice_map(f, p.locale).get(str(value), (str(value), ""))[0]
    if isinstance(value, bool):
        return p.t("yes") if value else p.t("no")
    return str(value)


def schedule_words(p: Page, spec: Any) -> str:
    if not isinstance(spec, dict):
        return ""
    tz = zone_name(spec.get("timezone") or "UTC", p.locale)
    if "cron" in spec:
        return p.t("auto_sched_cron_words", cron=spec.get("cron"), tz=tz)
    every = spec.get("every") or "day"
    at = str(spec.get("at") or "00:00")
    if every == "hour":
        return p.t("auto_sched_hour_words", minute=at.lstrip(":").zfill(2), tz=tz)
    if every == "week":
        return p.t("auto_sched_week_words", day=p.t(f"auto_wd_{spec.get('weekday') or 'mon'}"), at=at, tz=tz)
    if every == "month":
        day = spec.get("day") or 1
        day_text = p.t("auto_last_day") if day == "last" else p.t("auto_day_n", n=day)
        return p.t("auto_sched_month_words", day=day_text, at=at, tz=tz)
    return p.t(f"auto_sched_{every}_words", at=at, tz=tz)


def trigger_words(p: Page, app: AppDef, trig: dict[str, Any]) -> str:
    """A rule's trigger in a sentence of the reader's language."""
    t = app.tables_by_key.get(trig.get("table") or "")
    table = p.label(t.label) if t is not None else ""
    kind = trig.get("type")
    if kind == "record_updated":
        text = p.t("auto_words_record_updated", table=table)
        if trig.get("fields"):
            text += p.t("auto_words_fields", fields="、".join(field_label(p, t, k) for k in trig["fields"])
                        if p.locale == "zh-CN" else ", ".join(field_label(p, t, k) for k in trig["fields"]))
        for c in trig.get("changes") or []:
            name = field_label(p, t, c.get("field", ""))
            if "from" in c and "to" in c:
                text += p.t("auto_words_from_to", field=name, old=value_words(p, t, c["field"], c["from"]),
                            new=value_words(p, t, c["field"], c["to"]))
            elif "to" in c:
                text += p.t("auto_words_to", field=name, new=value_words(p, t, c["field"], c["to"]))
            elif "from" in c:
                text += p.t("auto_words_from", field=name, old=value_words(p, t, c["field"], c["from"]))
        return text
    if kind == "schedule":
        text = schedule_words(p, trig.get("schedule"))
        return text + (p.t("auto_words_each_record", table=table) if t is not None else "")
    if kind == "date_reached":
        n = int(trig.get("offset_days") or 0) if isinstance(trig.get("offset_days"), int) else 0
        field = field_label(p, t, trig.get("date_field") or "")
        rel = p.t("auto_words_on_date", field=field) if n == 0 else \
            p.t("auto_words_days_before" if n < 0 else "auto_words_days_after", n=abs(n), field=field)
        return p.t("auto_words_date_reached", table=table, rel=rel, at=trig.get("at") or "09:00",
                   tz=zone_name(trig.get("timezone") or "UTC", p.locale))
    if kind in ("record_created", "record_deleted", "form_submitted", "manual", "webhook"):
        return p.t(f"auto_words_{kind}", table=table)
    return str(kind)


def _keys(p: Page) -> set[str]:
    from formwork.ui import i18n

    return set(i18n.STRINGS.get(p.locale, {}))


def condition_words(p: Page, app: AppDef, rule: dict[str, Any]) -> str:
    """A rule's condition in words ("" when it has none)."""
    t = app.tables_by_key.get(rule["trigger"].get("table") or "")
    cond, changed = forms.split_condition(rule.get("condition"))
    parts: list[str] = []
    conditions = _conditions()
    if cond is not None and t is not None:
        if conditions is not None and not forms.has_changed_tests(cond):
            try:
                parts.append(conditions.describe(p, t, cond))
            except (FormworkError, KeyError, ValueError, TypeError):
                parts.append(p.t("auto_has_condition"))
        else:
            parts.append(p.t("auto_has_condition"))
    if changed:
        parts.append(p.t("auto_words_changed", fields=", ".join(field_label(p, t, k) for k in changed)))
    return "; ".join(parts)


# --- messages of the validation, in the reader's language -----------------------------------------------
KNOWN_ERRORS = (
    ("is required", "auto_err_required"),
    ("needs at least one recipient", "auto_err_recipients"),
    ("name 'users', 'roles'", "auto_err_recipients"),
    ("calls to private or local addresses are refused", "auto_err_private_url"),
    ("must start with http", "auto_err_url"),
    ("does not match", "auto_err_key"),
    ("a wait needs", "auto_err_wait"),
    ("must name a date field", "auto_err_date_field"),
    ("name exactly one of 'role'", "auto_err_assign_who"),
    ("must name a single user field", "auto_err_assign_field"),
    ("needs a triggering record", "auto_err_needs_record"),
    ("this trigger has none", "auto_err_needs_record"),
    ("must map field keys to values", "auto_err_fields"),
    ("is already used", "auto_err_key_taken"),
    ("only an administrator may make a rule run as", "auto_err_run_as"),
)
TEMPLATE_WORDS = ("template", "unsafe", "not allowed", "unknown name", "undefined", "syntax", "sandbox", "'__")


def localized(p: Page, message: str) -> str:
    for needle, key in KNOWN_ERRORS:
        if needle in message:
            return p.t(key) if key != "auto_err_private_url" else p.t(key, detail=message.split("(", 1)[-1]
                                                                        .split(")", 1)[0])
    if any(w in message.lower() for w in TEMPLATE_WORDS):
        return p.t("auto_err_template", detail=message)
    return p.t("auto_err_other", detail=message)


class Errors:
    """Validation messages by form input; a message is shown once, next to the first input asking for it,
    and what no input claimed is shown with its action or at the top."""

    def __init__(self, p: Page, err: FormworkError | None = None,
                 extra: dict[str, list[str]] | None = None) -> None:
        self.by_name: dict[str, list[str]] = {}
        self.used: set[str] = set()
        if err is not None:
            details = err.details or {"": [err.message]}
            for ptr, msgs in details.items():
                name = forms.input_name(ptr)
                for m in msgs if isinstance(msgs, list) else [str(msgs)]:
                    self.by_name.setdefault(name, []).append(localized(p, str(m)))
        for name, msgs in (extra or {}).items():
            self.by_name.setdefault(name, []).extend(msgs)

    def __bool__(self) -> bool:
        return bool(self.by_name)

    def at(self, *names: str) -> list[str]:
        out: list[str] = []
        for name in names:
            if name in self.by_name and name not in self.used:
                self.used.add(name)
                out += self.by_name[name]
        return out

    def under(self, prefix: str) -> list[str]:
        """Every message not shown yet of inputs under ``prefix`` (an action's leftovers)."""
        names = [n for n in self.by_name if (n == prefix or n.startswith(prefix + ".")) and n not in self.used]
        return self.at(*names)

    def has(self, name: str) -> bool:
        return bool(self.by_name.get(name))

    def rest(self) -> list[str]:
        return self.at(*[n for n in self.by_name if n not in self.used])


# --- the editor ---------------------------------------------------------------------------------------
def users_roles_teams(p: Page) -> dict[str, Any]:
    users = [{"username": r.username, "name": r.name} for r in p.conn.execute(
        select(db.users.c.username, db.users.c.name).where(db.users.c.active.is_(True)).order_by(db.users.c.name)
        .limit(1000))]
    roles = [{"key": r.key, "label": p.label((r.doc or {}).get("label") or r.key)} for r in p.conn.execute(
        select(db.roles.c.key, db.roles.c.doc).order_by(db.roles.c.key))]
    teams = [{"key": r.key, "name": r.name} for r in p.conn.execute(
        select(db.teams.c.key, db.teams.c.name).order_by(db.teams.c.name))]
    return {"users": users, "roles": roles, "teams": teams}


def field_info(p: Page, t: TableDef) -> list[dict[str, Any]]:
    """A table's fields as the pickers show them: key, label, whether writable, choices, user/date/link."""
    out = []
    for f in t.fields:
        kind = f.ftype.kind
        out.append({"key": f.key, "label": p.label(f.label), "writable": not f.ftype.read_only,
                    "choices": [(v, lc[0]) for v, lc in choice_map(f, p.locale).items()] if f.ftype.has_choices
                    else [], "date": kind in (DATE, DATETIME), "user": f.ftype.can_own_records(f),
                    "link": f.ftype.is_link, "target": f.options.get("target") if f.ftype.is_link else None})
    return out


def variables(p: Page, t: TableDef | None) -> list[tuple[str, str]]:
    """What a message template may insert: the record's fields (names of users, linked records), the
    person who triggered it, today and now."""
    out: list[tuple[str, str]] = []
    if t is not None:
        for f in t.fields:
            label = p.label(f.label)
            if f.ftype.holds_users:
                out += [(f"{{{{ record.{f.key}.name }}}}", f"{label} · {p.t('auto_var_name')}"),
                        (f"{{{{ record.{f.key}.email }}}}", f"{label} · {p.t('auto_var_email')}")]
            elif f.ftype.is_link:
                target = p.cat.tables_by_id.get(int(f.options.get("target") or 0))
                disp = target.display_field if target is not None else None
                out.append((f"{{{{ record.{f.key}.{disp.key if disp else 'display'} }}}}", label))
            else:
                out.append((f"{{{{ record.{f.key} }}}}", label))
        out.append(("{{ record.id }}", p.t("auto_var_id")))
    out += [("{{ trigger.user.name }}", p.t("auto_var_trigger_user")), ("{{ today }}", p.t("today")),
            ("{{ now }}", p.t("auto_var_now"))]
    return out


def sample_records(p: Page, t: TableDef | None, chosen: int | None = None) -> list[tuple[int, str]]:
    """Recent records of the trigger's table the builder may try the rule on (as this user sees them)."""
    if t is None or not p.access.can_see_table(p.cat, t):
        return []
    disp = t.display_field
    res = p.reader().list(t, fields=[disp.key] if disp else None, limit=30, sort=["-id"])
    r = p.renderer(p.cat.app_by_id(t.app_id).key)
    items = [(rec["id"], (r.text(disp, rec["fields"].get(disp.key)) if disp else "") or f"#{rec['id']}")
             for rec in res["records"]]
    if chosen and chosen not in [i for i, _ in items]:
        try:
            rec = p.reader().get(t, chosen)
            items.insert(0, (chosen, (r.text(disp, rec["fields"].get(disp.key)) if disp else "") or f"#{chosen}"))
        except NotFound:
            pass
    return items


def editor(p: Page, app: AppDef, doc: dict[str, Any], errors: Errors, editing: dict[str, Any] | None,
           status: int = 200, **extra: Any) -> Response:
    trig = doc.get("trigger") or {"type": "record_created"}
    t = app.tables_by_key.get(trig.get("table") or "")
    cond_part, only_changed = forms.split_condition(doc.get("condition"))
    cond_errors = extra.pop("cond_errors", None)
    cb = None
    conditions = _conditions()
    if conditions is not None and t is not None and not forms.has_changed_tests(cond_part):
        posted = request.method == "POST" and (request.form.get("_cond_table") or "") == t.key \
            and not request.form.get("_cond_json")
        cb = conditions.builder(p, t, None if posted else cond_part, name="cond",
                                form=request.form if posted else None, errors=cond_errors)
    action_types_shown = [k for k in ACTION_ORDER if k in action_types] + \
        [a.type for a in action_types.all() if a.type not in ACTION_ORDER]
    tables = {tb.key: tb for tb in app.tables}
    ctx = {
        **frame(p, app), "doc": doc, "trig": trig, "t": t, "errors": errors, "editing": editing,
        "label_en": (doc.get("label") or {}).get("en", "") if isinstance(doc.get("label"), dict)
        else str(doc.get("label") or ""),
        "label_zh": (doc.get("label") or {}).get("zh-CN", "") if isinstance(doc.get("label"), dict) else "",
        "trigger_types": [tt.type for tt in trigger_types.all()], "action_types": action_types_shown,
        "fields_of": {k: field_info(p, tb) for k, tb in tables.items()},
        "table_choices": [(tb.key, p.label(tb.label)) for tb in app.tables],
        "form_views": [(v["key"], p.label(v.get("label") or v["key"])) for v in (t.views if t else [])
                       if v.get("type") == "form"],
        "cond_builder": cb, "cond_part": cond_part, "cond_json": forms.json.dumps(cond_part, ensure_ascii=False)
        if cond_part is not None and cb is None else "", "only_changed": only_changed,
        "variables": variables(p, t), "records": sample_records(p, t, extra.get("test_record")),
        "timezones": _zones(p, trig), "every": forms.EVERY, "weekdays": forms.WEEKDAYS,
        "wait_units": forms.WAIT_UNITS, "kept": forms.kept, "kept_rule": forms.kept_rule(doc),
        "kept_trigger": forms.kept_trigger(trig), "link_target": lambda f: _link_target(p, f, app),
        "has_hook": _has_hook(p, editing), "schedule": _schedule_form(trig.get("schedule")),
        "offset": _offset_form(trig), "trigger_words": trigger_words(p, app, trig),
        "branch_builder": lambda prefix, a: _branch_builder(p, t, prefix, a, cond_errors),
        **users_roles_teams(p), **extra,
    }
    return render(p, "automation_edit.html", status, **ctx)


def _branch_builder(p: Page, t: TableDef | None, prefix: str, a: dict[str, Any],
                    errors: dict[str, str] | None) -> Any:
    """The condition builder of an if/else step (None without a table, or for a condition it can't show)."""
    conditions = _conditions()
    if conditions is None or t is None or forms.has_changed_tests(a.get("condition")):
        return None
    failed = prefix in g.get("auto_failed_branches", set())
    return conditions.builder(p, t, None if failed else a.get("condition"), name=branch_name(prefix),
                              form=request.form if failed else None, errors=errors if failed else None)


def _zones(p: Page, trig: dict[str, Any]) -> list[tuple[str, str]]:
    chosen = (p.tz, trig.get("timezone"), (trig.get("schedule") or {}).get("timezone"))
    return zone_choices(p.locale, *(z for z in chosen if isinstance(z, str)))


def _link_target(p: Page, f: dict[str, Any], app: AppDef) -> str | None:
    target = p.cat.tables_by_id.get(int(f["target"])) if f.get("target") else None
    return target.key if target is not None and target.app_id == app.id else None


def _has_hook(p: Page, editing: dict[str, Any] | None) -> bool:
    if editing is None:
        return False
    return p.conn.execute(select(db.hook_tokens.c.id).where(
        db.hook_tokens.c.automation_id == editing["id"])).first() is not None


def _schedule_form(spec: Any) -> dict[str, Any]:
    spec = spec if isinstance(spec, dict) else {}
    if "cron" in spec:
        return {"mode": "cron", "cron": spec.get("cron"), "tz": spec.get("timezone") or "UTC", "every": "day",
                "at": "09:00", "minute": "0", "weekday": "mon", "day": "1"}
    at = str(spec.get("at") or ("00" if spec.get("every") == "hour" else "09:00"))
    return {"mode": "friendly", "cron": "", "tz": spec.get("timezone") or "", "every": spec.get("every") or "day",
            "at": at if ":" in at[1:] else "09:00", "minute": at.lstrip(":") if spec.get("every") == "hour" else "0",
            "weekday": spec.get("weekday") or "mon", "day": str(spec.get("day") or "1")}


def _offset_form(trig: dict[str, Any]) -> dict[str, Any]:
    n = trig.get("offset_days")
    if not isinstance(n, int):
        return {"n": n if n is not None else "", "dir": "on" if n in (None, 0, "") else "before"}
    return {"n": abs(n) if n else "", "dir": "on" if n == 0 else ("before" if n < 0 else "after")}


def doc_from_request(p: Page, app: AppDef) -> tuple[dict[str, Any], dict[str, str]]:
    """The document the posted builder form describes, and the condition builder's own errors."""
    form = request.form
    t = app.tables_by_key.get((form.get("trigger_table") or "").strip())
    condition: Any = None
    errs: dict[str, str] = {}
    conditions = _conditions()
    if conditions is not None and t is not None and (form.get("_cond_table") or "") == t.key \
            and not form.get("_cond_json"):
        try:
            condition = conditions.parse(p, t, form, name="cond")
        except conditions.ConditionError as e:
            errs = dict(e.errors)
    elif form.get("_cond_json") and (form.get("_cond_table") or "") == (t.key if t else ""):
        condition = forms._keep(form, "_cond_json") or None
    doc = forms.doc_from_form(form, condition)
    if conditions is not None and t is not None and (form.get("_cond_table") or "") == t.key:
        _branch_conditions(p, t, form, doc.get("actions") or [], "a", errs)
    return doc, errs


def branch_name(prefix: str) -> str:
    """The condition builder's name of the branch at an action prefix (``a.0.then.1`` → ``br_a_0_then_1``)."""
    return "br_" + prefix.replace(".", "_")


def _branch_conditions(p: Page, t: TableDef, form: Any, actions: list[dict[str, Any]], prefix: str,
                       errs: dict[str, str]) -> None:
    """Each if/else step's condition from its own condition builder in the posted form."""
    conditions = _conditions()
    for pfx, a in zip(forms.action_prefixes(form, prefix), actions, strict=False):
        if a.get("type") == "branch" and f"{branch_name(pfx)}.conj" in form:
            try:
                tree = conditions.parse(p, t, form, name=branch_name(pfx))
            except conditions.ConditionError as e:
                errs.update(e.errors)
                g.setdefault("auto_failed_branches", set()).add(pfx)
            else:
                if tree:
                    a["condition"] = tree
                else:
                    a.pop("condition", None)
        for nested in action_types.nested_keys():
            if isinstance(a.get(nested), list):
                _branch_conditions(p, t, form, a[nested], f"{pfx}.{nested}", errs)


def check_doc(p: Page, app: AppDef, doc: dict[str, Any]) -> None:
    """The API's validation without saving: the JSON Schema, then the automation kind's own checks."""
    validation.validate("automation", doc)
    AutomationDocument().check_refs(DocumentContext(p.cat, app, None, p.conn, p.access.actor(client_ip())), doc)


@routes.get(BASE)
def automations_page(app_key: str) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        p, _svc = manager_page(conn, cat, access)
        app = visible_app(p, app_key)
        summary = runs.rule_summaries(conn, app)
        items = [{"rule": r, "label": p.label(r.get("label") or r["key"]),
                  "trigger": trigger_words(p, app, r["trigger"]), "condition": condition_words(p, app, r),
                  "enabled": r.get("enabled", True),
                  "last": summary.get(r["id"], {}).get("last"), "failures": summary.get(r["id"], {}).get("failures", 0),
                  "last_when": when(p, (summary.get(r["id"], {}).get("last") or {}).get("started_at"))}
                 for r in app.automations]
        return render(p, "automations.html", **frame(p, app), items=items)


@routes.route(BASE + "/new", methods=["GET", "POST"])
def automation_new(app_key: str) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        p, svc = manager_page(conn, cat, access)
        app = visible_app(p, app_key)
        if request.method == "POST":
            return _save(p, svc, app, None)
        first = next(iter(visible_tables(p, app)), None)
        doc = {"label": "", "key": "", "enabled": True,
               "trigger": {"type": "record_created", **({"table": first.key} if first else {})}, "actions": []}
        return editor(p, app, doc, Errors(p), None)


@routes.route(BASE + "/<key>/edit", methods=["GET", "POST"])
def automation_edit(app_key: str, key: str) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        p, svc = manager_page(conn, cat, access)
        app = visible_app(p, app_key)
        rule = find_rule(app, key)
        if request.method == "POST":
            return _save(p, svc, app, rule)
        doc = AutomationDocument().public(copy.deepcopy(rule))
        return editor(p, app, doc, Errors(p), rule)


def _save(p: Page, svc: MetadataService, app: AppDef, rule: dict[str, Any] | None) -> Response:
    doc, cond_errors = doc_from_request(p, app)
    if request.form.get("_op"):
        return _refresh(p, app, doc, rule)
    if cond_errors:
        where = "condition" if any(k.startswith("cond") for k in cond_errors) else ""
        return editor(p, app, doc, Errors(p, extra={where: [p.t("auto_err_condition")]}), rule, 422,
                      cond_errors=cond_errors)
    try:
        with p.conn.begin_nested():
            if rule is None:
                taken = {r["key"] for r in app.automations}
                if not (request.form.get("key") or "").strip():
                    label = doc["label"]
                    doc["key"] = forms.key_from_label(label if isinstance(label, str) else label.get("en") or "",
                                                      taken)
                saved = svc.create_doc("automation", app.key, doc)
            else:
                incoming = AutomationDocument().incoming(doc, lambda: rule)
                for name in ("condition", "description"):
                    incoming.setdefault(name, None)  # cleared in the form → removed from the rule
                saved = svc.update_doc("automation", app.key, rule["key"], incoming)
    except (ValidationFailed, Conflict, BadRequest, NotFound) as e:
        return editor(p, app, doc, Errors(p, e), rule, 422)
    return redirect(url_for("ui.automations_page", app_key=app.key, saved=saved["key"]))  # type: ignore[return-value]


def _refresh(p: Page, app: AppDef, doc: dict[str, Any], rule: dict[str, Any] | None) -> Response:
    """The builder again from what was typed, after a picker changed or an action was added or moved."""
    forms.apply_op(doc, request.form.get("_op") or "")
    return editor(p, app, doc, Errors(p), rule)


@routes.post(BASE + "/form")
def automation_form(app_key: str) -> Response:
    """htmx: the builder re-rendered from the posted form (``_op`` says what changed); nothing is saved."""
    access = current_access()
    with unit() as (conn, cat):
        p, _svc = manager_page(conn, cat, access)
        app = visible_app(p, app_key)
        editing = (request.form.get("_editing") or "").strip()
        rule = find_rule(app, editing) if editing else None
        doc, _errs = doc_from_request(p, app)
        return _refresh(p, app, doc, rule)


@routes.post(BASE + "/test")
def automation_test(app_key: str) -> Response:
    """htmx: the dry run of the rule as the form describes it, on the record chosen; nothing is saved and
    no action has effects (the engine's dry run, in a transaction that is rolled back)."""
    access = current_access()
    with unit() as (conn, cat):
        p, _svc = manager_page(conn, cat, access)
        app = visible_app(p, app_key)
        editing = (request.form.get("_editing") or "").strip()
        rule = find_rule(app, editing) if editing else None
        doc, cond_errors = doc_from_request(p, app)
        try:
            rid = int(request.form.get("test_record") or 0) or None
        except ValueError:
            rid = None
        t = app.tables_by_key.get(doc["trigger"].get("table") or "")
        if cond_errors:
            return render(p, "_automation_test.html", problems=list(cond_errors.values()))
        if t is not None and rid is None:
            return render(p, "_automation_test.html", problems=[p.t("auto_test_pick_record")])
        try:
            with conn.begin_nested() as sp:
                if rule is not None:
                    doc = AutomationDocument().incoming(doc, lambda: rule)
                check_doc(p, app, doc)
                sp.rollback()
        except (ValidationFailed, BadRequest, NotFound, Conflict) as e:
            errs = Errors(p, e)
            return render(p, "_automation_test.html", problems=errs.rest())
        run_doc = {**doc, "id": rule["id"] if rule else 0}
        if not run_doc.get("run_as"):
            run_doc["run_as"] = access.username
        problems: list[str] = []
        view = None
        try:
            result = engine().dry_run(conn, cat, app, run_doc, [rid] if rid else None, 1, viewer=access)
            view = _test_view(p, app, t, result)
        except runs.StepFailed as e:
            problems = [p.t("auto_err_other", detail=str(e))]
        finally:
            conn.rollback()  # whatever the dry run touched is undone
        return render(p, "_automation_test.html", result=view, problems=problems)


def _test_view(p: Page, app: AppDef, t: TableDef | None, result: dict[str, Any]) -> dict[str, Any]:
    entry = (result.get("results") or [{}])[0]
    return {"matched": entry.get("matched"), "error": entry.get("error"), "stops": entry.get("stops"),
            "steps": [_step_view(p, app, t, s) for s in entry.get("actions") or []]}


def _step_view(p: Page, app: AppDef, t: TableDef | None, s: dict[str, Any]) -> dict[str, Any]:
    """One step of a run or dry run in words: what it did (or would do) and to whom."""
    out = s.get("output") or {}
    lines: list[tuple[str, str]] = []
    kind = s.get("action")
    if isinstance(out, dict):
        send = out.get("would_send") or out
        if kind == "send_email":
            lines += [(p.t("auto_to"), ", ".join(send.get("to") or [])),
                      (p.t("auto_subject"), send.get("subject") or ""), (p.t("auto_body"), send.get("body") or "")]
        elif kind == "call_webhook":
            lines += [(p.t("auto_url"), str(send.get("url") or ""))]
            if "status" in out:
                lines.append((p.t("auto_http_status"), str(out["status"])))
        elif kind == "notify":
            names = _user_names(p, out.get("users") or [])
            lines += [(p.t("auto_recipients"), ", ".join(names)), (p.t("auto_title"), str(out.get("title") or ""))]
        elif kind in ("update_record", "create_record"):
            target = app.tables_by_key.get(out.get("table") or "") if kind == "create_record" else t
            values = out.get("would_set") or out.get("would_create") or out.get("fields") or {}
            lines += [(field_label(p, target, k), value_words(p, target, k, v)) for k, v in values.items()
                      if not isinstance(v, dict | list)]
        elif kind == "assign_owner" and isinstance(out.get("user"), dict):
            lines.append((p.t("auto_assignee"), str(out["user"].get("name") or "")))
        elif kind == "branch":
            lines.append((p.t("auto_branch_taken"),
                          p.t("auto_then") if out.get("branch") == "then" else p.t("auto_else")))
        elif kind == "wait" and out.get("until"):
            lines.append((p.t("auto_until"), when(p, out["until"])))
    return {"action": p.t(f"auto_action_{kind}") if f"auto_action_{kind}" in _keys(p) else str(kind),
            "status": s.get("status"), "status_text": p.t(f"auto_step_{s.get('status')}")
            if f"auto_step_{s.get('status')}" in _keys(p) else str(s.get("status")),
            "error": s.get("error"), "lines": [(k, v) for k, v in lines if v not in (None, "")],
            "depth": str(s.get("path") or "").count("."), "duration_ms": s.get("duration_ms")}


def _user_names(p: Page, ids: list[Any]) -> list[str]:
    ints = [int(i) for i in ids if isinstance(i, int)]
    if not ints:
        return []
    names = dict(p.conn.execute(select(db.users.c.id, db.users.c.name).where(db.users.c.id.in_(ints))).all())
    return [str(names.get(i, f"#{i}")) for i in ints]


@routes.post(BASE + "/<key>/toggle")
def automation_toggle(app_key: str, key: str) -> Response:
    """htmx: switch a rule on or off (the same save and checks as any change)."""
    access = current_access()
    with unit() as (conn, cat):
        p, svc = manager_page(conn, cat, access)
        app = visible_app(p, app_key)
        rule = find_rule(app, key)
        enabled = bool(request.form.get("enabled"))
        svc.update_doc("automation", app.key, key, {"enabled": enabled})
        return render(p, "_automation_switch.html", app=app, rule={**rule, "enabled": enabled},
                      label=p.label(rule.get("label") or key), toast=p.t("auto_enabled_now" if enabled
                                                                             else "auto_disabled_now"))


@routes.post(BASE + "/<key>/duplicate")
def automation_duplicate(app_key: str, key: str) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        p, svc = manager_page(conn, cat, access)
        app = visible_app(p, app_key)
        rule = find_rule(app, key)
        doc = {k: copy.deepcopy(v) for k, v in rule.items() if k != "id"}
        doc["key"] = forms.key_from_label(key + "_copy", {r["key"] for r in app.automations})[:63]
        label = rule.get("label") or key
        doc["label"] = {k: f"{v} ({p.t('auto_copy')})" for k, v in label.items()} if isinstance(label, dict) \
            else f"{label} ({p.t('auto_copy')})"
        doc["enabled"] = False
        saved = svc.create_doc("automation", app.key, doc)
    return redirect(url_for("ui.automation_edit", app_key=app_key, key=saved["key"]))  # type: ignore[return-value]


@routes.post(BASE + "/<key>/delete")
def automation_delete(app_key: str, key: str) -> Response:
    """To the trash, like other definitions (restorable from the trash page)."""
    access = current_access()
    with unit() as (conn, cat):
        _p, svc = manager_page(conn, cat, access)
        svc.delete_doc("automation", app_key, key)
    return redirect(url_for("ui.automations_page", app_key=app_key, deleted=key))  # type: ignore[return-value]


@routes.post(BASE + "/<key>/webhook-url")
def automation_hook_url(app_key: str, key: str) -> Response:
    """htmx: a new incoming-webhook URL for the rule, shown this once (the old one stops working)."""
    access = current_access()
    with unit() as (conn, cat):
        p, _svc = manager_page(conn, cat, access)
        app = visible_app(p, app_key)
        rule = find_rule(app, key)
        token = hooks.create_token(conn, access, rule)
        url = request.host_url.rstrip("/") + f"/api/v1/hooks/{token}"
        return render(p, "_automation_hook.html", url=url)


# --- the run log --------------------------------------------------------------------------------------
@routes.get(BASE + "/runs")
def automation_runs_page(app_key: str) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        p, _svc = manager_page(conn, cat, access)
        app = visible_app(p, app_key)
        status = request.args.get("status") or ""
        if status and status not in RUN_STATUSES:
            status = ""
        only = request.args.get("automation") or ""
        rules = {r["id"]: r for r in app.automations}
        ids = [r["id"] for r in app.automations if r["key"] == only] if only else None
        try:
            before = int(request.args["before"]) if request.args.get("before") else None
        except ValueError:
            before = None
        entries = runs.app_run_log(conn, cat, app, ids, status or None, 50, before)
        items = _run_views(p, app, rules, entries)
        return render(p, "automation_runs.html", **frame(p, app), items=items, current_status=status, only=only,
                      statuses=RUN_STATUSES, rules=[(r["key"], p.label(r.get("label") or r["key"]))
                                                    for r in app.automations],
                      older=entries[-1]["id"] if len(entries) == 50 else None)


def _run_views(p: Page, app: AppDef, rules: dict[int, dict[str, Any]],
               entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    displays = _record_displays(p, app, entries)
    out = []
    for e in entries:
        rule = rules.get(e["automation_id"])
        t = app.tables_by_key.get(e.get("table") or "")
        out.append({
            "id": e["id"], "status": e["status"], "status_text": p.t(f"auto_run_{e['status']}")
            if f"auto_run_{e['status']}" in _keys(p) else e["status"],
            "rule_key": rule["key"] if rule else None,
            "rule_label": p.label(rule.get("label") or rule["key"]) if rule else p.t("auto_deleted_rule"),
            "trigger": p.t(f"auto_trigger_{e['trigger']}") if f"auto_trigger_{e['trigger']}" in _keys(p)
            else e["trigger"], "table": t, "record_id": e.get("record_id"),
            "record_text": displays.get((str(e.get("table")), int(e.get("record_id") or 0))) or
            (f"#{e['record_id']}" if e.get("record_id") else ""),
            "started": when(p, e.get("started_at")), "duration": _duration(p, e.get("duration_ms")),
            "error": e.get("error"), "retry_of": e.get("retry_of"),
            "steps": [_step_view(p, app, t, s) for s in e.get("steps") or []],
            "can_retry": e["status"] == "failed" and rule is not None and rule.get("enabled", True)})
    return out


def _duration(p: Page, ms: Any) -> str:
    if ms is None:
        return ""
    return f"{ms} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


def _record_displays(p: Page, app: AppDef, entries: list[dict[str, Any]]) -> dict[tuple[str, int], str]:
    """The display value of each run's record, as this user may read it (one query per table)."""
    by_table: dict[str, set[int]] = {}
    for e in entries:
        if e.get("table") and e.get("record_id"):
            by_table.setdefault(e["table"], set()).add(e["record_id"])
    out: dict[tuple[str, int], str] = {}
    reader = p.reader()
    for key, ids in by_table.items():
        t = app.tables_by_key.get(key)
        if t is None or not p.access.can_see_table(p.cat, t) or t.display_field is None or not t.display_field.stored:
            continue
        col = t.sa.c[t.display_field.column_name]
        r = p.renderer(app.key)
        for rid, value in p.conn.execute(select(t.sa.c.id, col).where(t.sa.c.id.in_(sorted(ids)),
                                                                     *reader.base_conditions(t))):
            out[(key, rid)] = r.text(t.display_field, value) if value is not None else f"#{rid}"
    return out


@routes.post(BASE + "/<key>/runs/<int:run_id>/retry")
def automation_retry(app_key: str, key: str, run_id: int) -> Response:
    """A failed run again (the worker starts it); back to the run log with a note."""
    access = current_access()
    with unit() as (conn, cat):
        p, _svc = manager_page(conn, cat, access)
        app = visible_app(p, app_key)
        rule = find_rule(app, key)
        try:
            runs.retry_run(conn, rule, run_id)
        except LookupError:
            raise NotFound(f"no run {run_id} of automation '{key[:100]}'") from None
        except runs.RetryRefused as e:
            raise Conflict(str(e)) from None
    back = request.form.get("back") or ""
    target = back if back.startswith(f"/apps/{app_key}/_automations/runs") else \
        url_for("ui.automation_runs_page", app_key=app_key)
    sep = "&" if "?" in target else "?"
    return redirect(f"{target}{sep}retried={run_id}")  # type: ignore[return-value]


# --- manual runs from a record page ---------------------------------------------------------------------
def manual_rules(app: AppDef, t: TableDef) -> list[dict[str, Any]]:
    return [r for r in app.automations if r["trigger"].get("type") == "manual"
            and r["trigger"].get("table") == t.key and r.get("enabled", True)]


@routes.get("/apps/<app_key>/<table_key>/<int:rid>/automations")
def automation_buttons(app_key: str, table_key: str, rid: int) -> Response:
    """htmx: the buttons of the enabled manual rules of the record's table (anyone who sees the record
    may start them; the rule acts with its own user's rights)."""
    access = current_access()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        app = visible_app(p, app_key)
        t = visible_table(p, app_key, table_key)
        p.reader().get(t, rid)
        buttons = [(r["key"], p.label(r.get("label") or r["key"])) for r in manual_rules(app, t)]
        return render(p, "_automation_buttons_list.html", app=app, t=t, rid=rid, buttons=buttons)


@routes.post("/apps/<app_key>/<table_key>/<int:rid>/automations/<key>/run")
def automation_run_manual(app_key: str, table_key: str, rid: int, key: str) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        app = visible_app(p, app_key)
        visible_table(p, app_key, table_key)
        rule = find_rule(app, key)
        intake.queue_manual_run(conn, cat, access, app, rule, [rid])
        resp = make_response(render(p, "_toast.html", message=p.t("auto_manual_queued",
                                                                   name=p.label(rule.get("label") or key)),
                                    kind="ok"))
        resp.headers["HX-Retarget"] = "#toast"
        resp.headers["HX-Reswap"] = "innerHTML"
        return resp

