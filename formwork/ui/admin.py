"""Administration pages: users, teams, roles (editor, preview, "why can they see it?") and the audit log.

Every page asks the same services as the API (formwork.runtime.admin) and so the same rules: only
administrators and holders of ``manage_users`` get in (403 otherwise), a user manager grants no role with more
power than their own, only administrators change roles. Errors come back in the user's language next to the
input that caused them, and nothing typed is lost.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import unicodedata
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import Response, redirect, request, url_for
from sqlalchemy import func, select

from formwork import db
from formwork.errors import BadRequest, Conflict, Forbidden, FormworkError, NotFound, ValidationFailed
from formwork.metadata.catalog import TableDef
from formwork.runtime import admin, passwords
from formwork.runtime.permissions import Access
from formwork.ui import conditions
from formwork.ui.context import Page, make_page, render, secret, shown_fields
from formwork.ui.timezones import zone_choices
from formwork.web import RouteSet, client_ip, current_access, unit

routes = RouteSet()
USERNAME_RE = re.compile(r"^[A-Za-z0-9._@-]{1,150}\Z")
SCOPES = ("all", "team", "own", "none")
OPS = ("read", "update", "delete")
TABLE_FLAGS = ("create", "import", "export")
FIELD_MODES = ("editable", "read_only", "hidden")
FLASH_KEYS = ("admin_saved", "admin_created", "admin_deactivated", "admin_reactivated", "admin_reset_done",
              "admin_signed_out", "admin_team_created", "admin_team_deleted", "admin_role_created",
              "admin_role_saved", "admin_role_deleted")


# --- shared ---------------------------------------------------------------------------------------------
def _actor() -> Access:
    actor = current_access()
    admin.require_user_admin(actor)
    return actor


def _flash(p: Page) -> str | None:
    key = request.args.get("done")
    if key not in FLASH_KEYS:
        return None
    return p.t(key, name=request.args.get("name", "")[:200], n=request.args.get("n", "")[:10])


def _tab(p: Page, template: str, tab: str, status: int = 200, **ctx: Any) -> Response:
    return render(p, template, status, tab=tab, flash=_flash(p), is_admin=p.access.is_admin, **ctx)


def password_error(p: Page, password: str, username: str | None) -> str | None:
    """The password policy's verdict in the user's language (None when the password is fine)."""
    code = passwords.problem(password, username)
    return None if code is None else p.t(f"admin_pw_{code}", n=passwords.MIN_LENGTH)


def translate_error(p: Page, err: FormworkError) -> dict[str, str]:
    """A refused change as messages per input, in the user's language where the reason is known."""
    out: dict[str, str] = {}
    msg = err.message or ""
    if isinstance(err, Forbidden):
        m = re.search(r"no more power than yours \(not (.+)\)", msg)
        if m and "grant" in msg:
            out["roles"] = p.t("admin_err_role_beyond", roles=m.group(1))
        elif "your own" in msg:
            out[""] = p.t("admin_err_not_yourself")
        elif "team you belong to" in msg:
            out["team"] = p.t("admin_err_team_own")
        elif "manage users whose roles" in msg or "administrator's account" in msg:
            out[""] = p.t("admin_err_target")
        else:
            out[""] = p.t("admin_err_forbidden")
        return out
    if isinstance(err, Conflict) and "username" in msg:
        return {"username": p.t("admin_err_taken")}
    for key, reasons in (err.details or {}).items():
        name = key.lstrip("/").split("/")[0] or ""
        text = "; ".join(map(str, reasons)) if isinstance(reasons, list) else str(reasons)
        if name == "password":
            for code, english in passwords.MESSAGES.items():
                if english in text:
                    text = p.t(f"admin_pw_{code}", n=passwords.MIN_LENGTH)
        elif name == "email":
            text = p.t("admin_err_email")
        elif name == "username":
            text = p.t("admin_err_taken") if "taken" in text else p.t("admin_err_username")
        else:
            text = p.t("admin_err_invalid")
        out[name] = text
    if not out:
        out[""] = msg
    return out


def _attempt(fn: Any, *args: Any) -> Any:
    """Run a change in a savepoint: a refused one leaves nothing behind and the page can be shown again."""
    conn = args[0]
    with conn.begin_nested():
        return fn(*args)


def role_choices(p: Page) -> list[dict[str, Any]]:
    """Every role with its label, member count and whether this viewer may grant it."""
    rows = p.conn.execute(select(db.roles).order_by(db.roles.c.key)).all()
    counts: dict[Any, Any] = dict(p.conn.execute(select(db.user_roles.c.role_id, func.count())
                                 .group_by(db.user_roles.c.role_id)).all())
    return [{"key": r.key, "label": p.label(r.doc.get("label") or r.key), "doc": r.doc,
             "users": int(counts.get(r.id, 0)), "grantable": not admin.role_beyond(p.access, r.doc)}
            for r in rows]


def team_choices(p: Page) -> list[Any]:
    return list(p.conn.execute(select(db.teams).order_by(db.teams.c.name)).all())


def user_choices(p: Page) -> list[Any]:
    return list(p.conn.execute(select(db.users.c.id, db.users.c.name, db.users.c.username, db.users.c.active)
                               .order_by(db.users.c.name)).all())


def _local(p: Page, value: Any) -> str:
    if value is None:
        return ""
    try:
        return value.replace(tzinfo=dt.UTC).astimezone(ZoneInfo(p.tz)).strftime("%Y-%m-%d %H:%M")
    except (ZoneInfoNotFoundError, ValueError, OverflowError):
        return value.strftime("%Y-%m-%d %H:%M")


def _redirect(endpoint: str, **kw: Any) -> Response:
    return redirect(url_for(endpoint, **kw))  # type: ignore[return-value]


# --- users ----------------------------------------------------------------------------------------------
@routes.get("/admin")
def admin_home() -> Response:
    _actor()
    return _redirect("ui.admin_users")


@routes.get("/admin/users")
def admin_users() -> Response:
    _actor()
    q = request.args.get("q", "").strip()[:100]
    status = request.args.get("status", "")
    args = {"limit": "500"}
    if q:
        args["q"] = q
    if status in ("active", "inactive"):
        args["active"] = "true" if status == "active" else "false"
    with unit() as (conn, cat):
        p = make_page(conn, cat, _actor())
        found = admin.list_users(conn, args)
        teams = {t.key: t.name for t in team_choices(p)}
        roles = {r["key"]: r["label"] for r in role_choices(p)}
        return _tab(p, "admin_users.html", "users", users=found["users"], total=found["total"], q=q,
                    status_filter=status, teams=teams, roles=roles)


def _user_form(p: Page, values: dict[str, Any], errors: dict[str, str], user: dict[str, Any] | None,
               status: int = 200, **extra: Any) -> Response:
    return _tab(p, "admin_user.html", "users", status, values=values, errors=errors, user=user,
                roles=role_choices(p), teams=team_choices(p), zones=zone_choices(p.locale, values.get("timezone")),
                min_password=passwords.MIN_LENGTH, **extra)


@routes.get("/admin/users/new")
def admin_user_new() -> Response:
    actor = _actor()
    with unit() as (conn, cat):
        p = make_page(conn, cat, actor)
        return _user_form(p, {"password_mode": "password", "roles": [], "locale": p.locale,
                              "timezone": p.tz}, {}, None)


def _profile_from_form(p: Page, creating: bool) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """(values to show again, data for the service, errors) from the posted user form."""
    f = request.form
    values: dict[str, Any] = {k: f.get(k, "").strip() for k in ("name", "username", "email", "team", "locale",
                                                               "timezone", "password_mode")}
    values["roles"] = f.getlist("roles")
    values["is_admin"] = f.get("is_admin") == "on"
    errors: dict[str, str] = {}
    data: dict[str, Any] = {"name": values["name"], "email": values["email"] or None,
                            "team": values["team"] or None, "roles": values["roles"]}
    if values["locale"] in ("en", "zh-CN"):
        data["locale"] = values["locale"]
    if values["timezone"]:
        data["timezone"] = values["timezone"]
    if p.access.is_admin:
        data["is_admin"] = values["is_admin"]
    if not values["name"]:
        errors["name"] = p.t("admin_err_required")
    if values["email"] and ("@" not in values["email"] or len(values["email"]) > 320):
        errors["email"] = p.t("admin_err_email")
    beyond = [r["label"] for r in role_choices(p) if r["key"] in values["roles"] and not r["grantable"]]
    if beyond:
        errors["roles"] = p.t("admin_err_role_beyond", roles="、".join(beyond) if p.locale == "zh-CN"
                              else ", ".join(beyond))
    if creating:
        data["username"] = values["username"]
        if not values["username"]:
            errors["username"] = p.t("admin_err_required")
        elif not USERNAME_RE.match(values["username"]):
            errors["username"] = p.t("admin_err_username")
        elif p.conn.execute(select(db.users.c.id).where(db.users.c.username == values["username"])).first():
            errors["username"] = p.t("admin_err_taken")
        if values["password_mode"] == "link":
            data["password_link"] = True
        else:
            pw = f.get("password", "")
            data["password"] = pw
            problem = password_error(p, pw, values["username"])
            if problem:
                errors["password"] = problem
    return values, data, errors


@routes.post("/admin/users/new")
def admin_user_create() -> Response:
    actor = _actor()
    with unit() as (conn, cat):
        p = make_page(conn, cat, actor)
        values, data, errors = _profile_from_form(p, creating=True)
        if not errors:
            try:
                out = _attempt(admin.create_user, conn, actor, data, client_ip())
            except (ValidationFailed, Conflict, Forbidden, BadRequest) as e:
                errors = translate_error(p, e)
        if errors:
            return _user_form(p, values, errors, None, 422)
        if "password_link" in out:
            return _user_page(p, out["id"], link=_link_view(p, out, out["password_link"]),
                              flash_text=p.t("admin_created", name=out["name"]))
    return _redirect("ui.admin_user", user_id=out["id"], done="admin_created", name=out["name"])


def _link_view(p: Page, user: dict[str, Any], link: dict[str, Any]) -> dict[str, Any]:
    expires = dt.datetime.fromisoformat(link["expires_at"].rstrip("Z"))
    return {"url": url_for("ui.set_password_page", token=link["token"], _external=True),
            "name": user["name"], "when": _local(p, expires)}


def _user_page(p: Page, user_id: Any, status: int = 200, values: dict[str, Any] | None = None,
               errors: dict[str, str] | None = None, **extra: Any) -> Response:
    user = admin.get_user(p.conn, user_id)
    if values is None:
        values = {**user, "team": user["team"] or "", "email": user["email"] or ""}
    return _user_form(p, values, errors or {}, user, status, **extra)


@routes.get("/admin/users/<int:user_id>")
def admin_user(user_id: int) -> Response:
    actor = _actor()
    with unit() as (conn, cat):
        return _user_page(make_page(conn, cat, actor), user_id)


@routes.post("/admin/users/<int:user_id>")
def admin_user_save(user_id: int) -> Response:
    actor = _actor()
    with unit() as (conn, cat):
        p = make_page(conn, cat, actor)
        user = admin.get_user(conn, user_id)
        values, data, errors = _profile_from_form(p, creating=False)
        if user["id"] == actor.user_id:  # one's own roles, team and flags are not for oneself to change
            for k in ("roles", "team", "is_admin"):
                data.pop(k, None)
            errors.pop("roles", None)
        else:
            # unchanged properties are not sent: a manager may edit a name without re-granting every role
            for k, old in (("roles", sorted(user["roles"])), ("team", user["team"]),
                           ("is_admin", user["is_admin"])):
                if k in data and (sorted(data[k]) if k == "roles" else data[k]) == old:
                    data.pop(k)
            if "roles" not in data:
                errors.pop("roles", None)
        if not errors:
            try:
                _attempt(admin.update_user, conn, actor, user_id, data, client_ip())
            except (ValidationFailed, Conflict, Forbidden, BadRequest) as e:
                errors = translate_error(p, e)
        if errors:
            return _user_page(p, user_id, 422, values={**values, "username": user["username"]}, errors=errors)
    return _redirect("ui.admin_user", user_id=user_id, done="admin_saved")


@routes.post("/admin/users/<int:user_id>/active")
def admin_user_active(user_id: int) -> Response:
    actor = _actor()
    active = request.form.get("active") == "true"
    with unit() as (conn, cat):
        p = make_page(conn, cat, actor)
        user = admin.get_user(conn, user_id)
        try:
            if active:
                _attempt(admin.update_user, conn, actor, user_id, {"active": True}, client_ip())
            else:
                _attempt(admin.deactivate_user, conn, actor, user_id, client_ip())
        except Forbidden as e:
            return _user_page(p, user_id, 403, errors=translate_error(p, e))
    return _redirect("ui.admin_user", user_id=user_id, done="admin_reactivated" if active else "admin_deactivated",
                     name=user["name"])


@routes.post("/admin/users/<int:user_id>/password")
def admin_user_password(user_id: int) -> Response:
    actor = _actor()
    with unit() as (conn, cat):
        p = make_page(conn, cat, actor)
        user = admin.get_user(conn, user_id)
        errors: dict[str, str] = {}
        if request.form.get("mode") == "link":
            try:
                link = _attempt(admin.create_password_link, conn, actor, user_id, client_ip())
            except (Forbidden, Conflict) as e:
                return _user_page(p, user_id, 403 if isinstance(e, Forbidden) else 409, errors=translate_error(p, e))
            return _user_page(p, user_id, link=_link_view(p, user, link))
        pw = request.form.get("new_password", "")
        problem = password_error(p, pw, user["username"])
        if problem:
            errors["new_password"] = problem
        else:
            try:
                _attempt(admin.reset_password, conn, actor, user_id, {"password": pw}, client_ip())
            except (ValidationFailed, Forbidden) as e:
                errors = {("new_password" if k == "password" else k): v for k, v in translate_error(p, e).items()}
        if errors:
            return _user_page(p, user_id, 422, errors=errors)
    return _redirect("ui.admin_user", user_id=user_id, done="admin_reset_done", name=user["name"])


@routes.post("/admin/users/<int:user_id>/signout")
def admin_user_signout(user_id: int) -> Response:
    actor = _actor()
    with unit() as (conn, cat):
        p = make_page(conn, cat, actor)
        user = admin.get_user(conn, user_id)
        try:
            n = _attempt(admin.sign_out_everywhere, conn, actor, user_id, client_ip())
        except Forbidden as e:
            return _user_page(p, user_id, 403, errors=translate_error(p, e))
    return _redirect("ui.admin_user", user_id=user_id, done="admin_signed_out", name=user["name"], n=n)


# --- teams ----------------------------------------------------------------------------------------------
def _key_from(name: str, taken: set[str], prefix: str) -> str:
    """A key for a name (people never type keys): its ASCII letters, else ``prefix_<n>``."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    base = re.sub(r"[^a-z0-9]+", "_", ascii_name).strip("_")[:50]
    if not base or not base[0].isalpha():
        base = prefix + (f"_{base}" if base else "")
    key, n = base, 1
    while key in taken:
        n += 1
        key = f"{base}_{n}"
    return key


@routes.get("/admin/teams")
def admin_teams() -> Response:
    actor = _actor()
    with unit() as (conn, cat):
        p = make_page(conn, cat, actor)
        return _tab(p, "admin_teams.html", "teams", teams=admin.list_teams(conn)["teams"], values={}, errors={})


def _team_data(p: Page) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    f = request.form
    values: dict[str, Any] = {"name": f.get("name", "").strip(), "manager": f.get("manager", ""),
              "members": [int(x) for x in f.getlist("members") if x.isdigit()]}
    errors: dict[str, str] = {}
    if not values["name"]:
        errors["name"] = p.t("admin_err_required")
    data: dict[str, Any] = {"name": values["name"],
                            "manager": int(values["manager"]) if str(values["manager"]).isdigit() else None}
    if "members_sent" in f:
        data["members"] = values["members"]
    return values, data, errors


@routes.post("/admin/teams")
def admin_team_create() -> Response:
    actor = _actor()
    with unit() as (conn, cat):
        p = make_page(conn, cat, actor)
        values, data, errors = _team_data(p)
        if not errors:
            taken = {r[0] for r in conn.execute(select(db.teams.c.key))}
            data["key"] = _key_from(values["name"], taken, "team")
            try:
                out = _attempt(admin.create_team, conn, actor, data, client_ip())
            except (ValidationFailed, Conflict, Forbidden, BadRequest) as e:
                errors = translate_error(p, e)
        if errors:
            return _tab(p, "admin_teams.html", "teams", 422, teams=admin.list_teams(conn)["teams"], values=values,
                        errors=errors)
    return _redirect("ui.admin_team", key=out["key"], done="admin_team_created", name=out["name"])


def _team_page(p: Page, key: str, status: int = 200, values: dict[str, Any] | None = None,
               errors: dict[str, str] | None = None) -> Response:
    team = admin.get_team(p.conn, key)
    if values is None:
        values = {"name": team["name"], "manager": str(team["manager"]["id"]) if team["manager"] else "",
                  "members": [m["id"] for m in team["members"]]}
    team_of = dict(p.conn.execute(select(db.users.c.id, db.teams.c.name).join(
        db.teams, db.teams.c.id == db.users.c.team_id)).all())
    return _tab(p, "admin_team.html", "teams", status, team=team, values=values, errors=errors or {},
                users=user_choices(p), team_of=team_of)


@routes.get("/admin/teams/<key>")
def admin_team(key: str) -> Response:
    actor = _actor()
    with unit() as (conn, cat):
        return _team_page(make_page(conn, cat, actor), key)


@routes.post("/admin/teams/<key>")
def admin_team_save(key: str) -> Response:
    actor = _actor()
    with unit() as (conn, cat):
        p = make_page(conn, cat, actor)
        team = admin.get_team(conn, key)
        values, data, errors = _team_data(p)
        if data.get("manager") == (team["manager"]["id"] if team["manager"] else None):
            data.pop("manager")
        if sorted(data.get("members", [])) == sorted(m["id"] for m in team["members"]):
            data.pop("members", None)
        if not errors:
            try:
                _attempt(admin.update_team, conn, actor, key, data, client_ip())
            except (ValidationFailed, Conflict, Forbidden, BadRequest) as e:
                errors = translate_error(p, e)
        if errors:
            return _team_page(p, key, 422, values=values, errors=errors)
    return _redirect("ui.admin_team", key=key, done="admin_saved")


@routes.post("/admin/teams/<key>/delete")
def admin_team_delete(key: str) -> Response:
    actor = _actor()
    with unit() as (conn, cat):
        p = make_page(conn, cat, actor)
        try:
            _attempt(admin.delete_team, conn, actor, key, client_ip())
        except Forbidden as e:
            return _team_page(p, key, 403, errors=translate_error(p, e))
    return _redirect("ui.admin_teams", done="admin_team_deleted")


# --- roles ----------------------------------------------------------------------------------------------
@routes.get("/admin/roles")
def admin_roles() -> Response:
    actor = _actor()
    with unit() as (conn, cat):
        p = make_page(conn, cat, actor)
        return _tab(p, "admin_roles.html", "roles", roles=role_choices(p), values={}, errors={})


@routes.post("/admin/roles")
def admin_role_create() -> Response:
    actor = _actor()
    with unit() as (conn, cat):
        p = make_page(conn, cat, actor)
        f = request.form
        values = {"label_en": f.get("label_en", "").strip()[:200], "label_zh": f.get("label_zh", "").strip()[:200],
                  "copy_from": f.get("copy_from", "")}
        errors: dict[str, str] = {}
        if not values["label_en"] and not values["label_zh"]:
            errors["label_en"] = p.t("admin_err_required")
        if not errors:
            taken = {r[0] for r in conn.execute(select(db.roles.c.key))}
            key = _key_from(values["label_en"] or values["label_zh"], taken, "role")
            label = {k: v for k, v in (("en", values["label_en"]), ("zh-CN", values["label_zh"])) if v}
            doc: dict[str, Any] = {"key": key, "label": label, "permissions": {}}
            src = next((r["doc"] for r in role_choices(p) if r["key"] == values["copy_from"]), None)
            if src is not None:
                doc = {**{k: v for k, v in src.items() if k not in ("key", "label", "description")}, **doc,
                       "permissions": src.get("permissions") or {}}
            try:
                _attempt(admin.create_role, conn, actor, cat, doc, client_ip())
            except (ValidationFailed, Conflict, Forbidden, BadRequest) as e:
                errors = translate_error(p, e)
        if errors:
            return _tab(p, "admin_roles.html", "roles", 422, roles=role_choices(p), values=values, errors=errors)
    return _redirect("ui.admin_role", key=key, done="admin_role_created", name=p.label(label))


def _scope_value(scope: Any) -> str:
    if scope in (None, False):
        return "none"
    if scope is True:
        return "all"
    return scope if isinstance(scope, str) and scope in SCOPES else "custom"


def role_rows(p: Page, doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The editor's rows: per app an "all tables" row, then one per table, each with its current grant."""
    perms = doc.get("permissions") or {}
    out: list[dict[str, Any]] = []
    for app in p.cat.apps:
        star = perms.get(f"{app.key}.*")
        out.append({"key": f"{app.key}.*", "label": p.t("admin_all_tables", app=p.label(app.doc.get("label",
                                                                                                    app.key))),
                    "grant": star, "star": True, "fields": [], "app_has_star": star is not None})
        for t in app.tables:
            g = perms.get(f"{app.key}.{t.key}")
            out.append({"key": f"{app.key}.{t.key}", "label": p.label(t.doc.get("label", t.key)), "grant": g,
                        "star": False, "app_has_star": star is not None, "table": t,
                        "fields": [(fd.key, p.label(fd.doc.get("label", fd.key))) for fd in t.fields]})
    for row in out:
        g = row["grant"] or {}
        row["scopes"] = {op: ("inherit" if row["grant"] is None and row["app_has_star"] and not row["star"]
                              else _scope_value(g.get(op, "none"))) for op in OPS}
        row["flags"] = {fl: bool(g.get(fl)) for fl in TABLE_FLAGS}
        row["modes"] = dict(g.get("fields") or {})
        row["custom"] = {op: g.get(op) for op in OPS if _scope_value(g.get(op, "none")) == "custom"}
    return out


def scope_name(row_key: str, op: str) -> str:
    """The condition builder's name for one table's scope (input names: ``<name>.<...>``)."""
    return "cs-" + re.sub(r"[^A-Za-z0-9_]", "-", row_key)[:30] + "-" + op


def role_from_form(p: Page, old: dict[str, Any], rows: list[dict[str, Any]]) -> tuple[dict[str, Any],
                                                                                      dict[str, str]]:
    """The whole role document from the editor's form; a "custom condition" scope comes from its condition
    builder (errors keyed by the builder's input names)."""
    f = request.form
    errors: dict[str, str] = {}
    label = {k: v for k, v in (("en", f.get("label_en", "").strip()[:200]),
                               ("zh-CN", f.get("label_zh", "").strip()[:200])) if v}
    if not label:
        errors["label_en"] = p.t("admin_err_required")
    doc: dict[str, Any] = {"key": old["key"], "label": label or old.get("label")}
    desc = f.get("description", "").strip()[:1000]
    if desc:
        doc["description"] = desc
    for flag in admin.POWER_FLAGS:
        if f.get(f"flag_{flag}") == "on":
            doc[flag] = True
    limit = f.get("claim_limit", "").strip()
    if limit:
        if not limit.isdigit() or int(limit) > 1_000_000:
            errors["claim_limit"] = p.t("admin_err_invalid")
        else:
            doc["claim_limit"] = int(limit)
    perms: dict[str, Any] = {}
    for row in rows:
        k = row["key"]
        scopes = {op: f.get(f"{k}:{op}", "none") for op in OPS}
        if scopes["read"] == "inherit" and not row["star"]:
            continue
        g: dict[str, Any] = {}
        for op, s in scopes.items():
            if s == "custom" and not row["star"]:
                name = scope_name(k, op)
                try:
                    tree = conditions.parse(p, row["table"], f, name=name)
                except conditions.ConditionError as e:
                    errors.update(e.errors)
                    tree = None
                    g[op] = "none"
                    continue
                if tree is None:
                    errors[name] = p.t("admin_err_no_condition")
                    g[op] = "none"
                else:
                    g[op] = tree
            elif s == "custom" and op in row["custom"]:
                g[op] = row["custom"][op]
            elif s in SCOPES:
                g[op] = s
            else:
                g[op] = "none"
        for fl in TABLE_FLAGS:
            if f.get(f"{k}:{fl}") == "on":
                g[fl] = True
        modes = {fk: f.get(f"{k}:field:{fk}", "editable") for fk, _ in row["fields"]}
        modes = {fk: m for fk, m in modes.items() if m in ("hidden", "read_only")}
        if modes:
            g["fields"] = modes
        grants_nothing = all(g.get(op) == "none" for op in OPS) and not any(g.get(fl) for fl in TABLE_FLAGS)
        if grants_nothing and not modes and not (row["app_has_star"] and not row["star"]):
            continue  # "none" everywhere without an app-wide grant to override: no entry at all
        perms[k] = g
    doc["permissions"] = perms
    return doc, errors


def _role_page(p: Page, key: str, status: int = 200, doc: dict[str, Any] | None = None,
               errors: dict[str, str] | None = None) -> Response:
    role = admin.get_role(p.conn, p.cat, key)
    shown = doc if doc is not None else role
    tables = [(f"{app.key}.{t.key}", f"{p.label(app.doc.get('label', app.key))} · {p.label(t.doc.get('label', t.key))}")
              for app in p.cat.apps for t in app.tables]
    members = p.conn.execute(select(db.users.c.id, db.users.c.name).join(
        db.user_roles, db.user_roles.c.user_id == db.users.c.id).join(
        db.roles, db.roles.c.id == db.user_roles.c.role_id).where(db.roles.c.key == key)
        .order_by(db.users.c.name)).all()
    rows = role_rows(p, shown)
    builders: dict[str, Any] = {}
    described: dict[str, str] = {}
    for row in rows:
        if row["star"]:
            continue
        for op in OPS:
            name = scope_name(row["key"], op)
            posted = status != 200 and request.method == "POST" and request.form.get(f"{row['key']}:{op}") == "custom"
            if posted:
                builders[name] = conditions.builder(p, row["table"], None, name=name, form=request.form,
                                                    errors=errors)
                row["scopes"][op] = "custom"
            elif op in row["custom"]:
                builders[name] = conditions.builder(p, row["table"], row["custom"][op], name=name)
                try:
                    described[name] = conditions.describe(p, row["table"], row["custom"][op])
                except FormworkError:
                    described[name] = p.t("admin_custom_kept")
    return _tab(p, "admin_role.html", "roles", status, role=role, doc=shown, rows=rows, errors=errors or {},
                editable=p.access.is_admin, tables=tables, members=members, flags=admin.POWER_FLAGS, ops=OPS,
                table_flags=TABLE_FLAGS, scopes=SCOPES, modes=FIELD_MODES, builders=builders, described=described,
                scope_name=scope_name, can_preview=not admin.role_beyond(p.access, role))


@routes.get("/admin/roles/<key>")
def admin_role(key: str) -> Response:
    actor = _actor()
    with unit() as (conn, cat):
        return _role_page(make_page(conn, cat, actor), key)


@routes.post("/admin/roles/<key>")
def admin_role_save(key: str) -> Response:
    actor = _actor()
    with unit() as (conn, cat):
        p = make_page(conn, cat, actor)
        old = admin.get_role(conn, cat, key)
        admin.require_admin(actor, "change roles")
        doc, errors = role_from_form(p, old, role_rows(p, old))
        if not errors:
            try:
                _attempt(admin.replace_role, conn, actor, cat, key, doc, client_ip())
            except (ValidationFailed, Forbidden, BadRequest) as e:
                errors = translate_error(p, e)
        if errors:
            return _role_page(p, key, 422, doc={**old, **doc}, errors=errors)
    return _redirect("ui.admin_role", key=key, done="admin_role_saved")


@routes.post("/admin/roles/<key>/delete")
def admin_role_delete(key: str) -> Response:
    actor = _actor()
    with unit() as (conn, _cat):
        admin.delete_role(conn, actor, key, client_ip())
    return _redirect("ui.admin_roles", done="admin_role_deleted")


@routes.get("/admin/roles/<key>/scope")
def admin_role_scope(key: str) -> Response:
    """The condition builder for one table's scope, shown when "Custom condition" is picked (empty otherwise)."""
    actor = _actor()
    with unit() as (conn, cat):
        p = make_page(conn, cat, actor)
        admin.get_role(conn, cat, key)
        row, op = request.args.get("row", ""), request.args.get("op", "")
        t = _table_arg(p, row)
        if t is None or op not in OPS:
            raise BadRequest("no such table or operation")
        if request.args.get(f"{row}:{op}") != "custom":
            return Response("", mimetype="text/html")
        name = scope_name(row, op)
        return render(p, "_admin_scope.html", cb=conditions.builder(p, t, None, name=name), label=p.t(f"admin_{op}"),
                      table_label=p.label(t.doc.get("label", t.key)))


def _table_arg(p: Page, value: str | None) -> TableDef | None:
    if not value or "." not in value:
        return None
    app_key, table_key = value.split(".", 1)
    try:
        return p.cat.table(app_key, table_key)
    except NotFound:
        return None


@routes.get("/admin/roles/<key>/preview")
def admin_role_preview(key: str) -> Response:
    """A table as a member of this role alone would see it: the rows and the columns."""
    actor = _actor()
    with unit() as (conn, cat):
        p = make_page(conn, cat, actor)
        role = admin.get_role(conn, cat, key)
        t = _table_arg(p, request.args.get("table"))
        if t is None:
            raise BadRequest("choose a table")
        doc = {k: v for k, v in role.items() if k not in ("id", "app", "user_count")}
        if admin.role_beyond(actor, doc):
            # previewing a role that reaches further than oneself would show records one can't read
            raise Forbidden("you may only preview roles that carry no more power than yours")
        member = request.args.get("as", "")
        who = Access(user_id=0, username="preview", timezone=p.tz, locale=p.locale, roles=[doc])
        if member.isdigit():
            holder = conn.execute(select(db.users).join(db.user_roles, db.user_roles.c.user_id == db.users.c.id)
                                  .join(db.roles, db.roles.c.id == db.user_roles.c.role_id)
                                  .where(db.roles.c.key == key, db.users.c.id == int(member))).first()
            if holder is not None:
                real = Access.for_row(conn, holder)
                who = Access(user_id=real.user_id, username=real.username, timezone=p.tz, locale=p.locale,
                             roles=[doc], team_user_ids=real.team_user_ids, team_ids=real.team_ids)
        as_member = Page(who, conn, cat, p.locale, p.tz)
        app = cat.app_by_id(t.app_id)
        rows: list[dict[str, Any]] = []
        cols = []
        hidden: list[str] = []
        if who.can_see_table(cat, t):
            cols = shown_fields(as_member, t)
            from formwork.runtime.records import RecordReader

            reader = RecordReader(cat, conn, who, secret=secret())
            rows = reader.list(t, limit=50, fields=[c.key for c in cols])["records"]
            hidden = [p.label(f.doc.get("label", f.key)) for f in t.fields if f not in cols]
        renderer = p.renderer(app.key)
        return render(p, "_admin_preview.html", table_label=p.label(t.doc.get("label", t.key)),
                      role_label=p.label(role.get("label") or key), cols=cols, rows=rows, hidden=hidden,
                      cell=renderer.cell, can_see=who.can_see_table(cat, t))


# --- why can they see it ------------------------------------------------------------------------------
def _scope_words(p: Page, scope: Any) -> str:
    s = _scope_value(scope)
    return p.t(f"admin_sc_{s}") if s in ("all", "team", "own", "custom") else p.t("admin_scope_none")


def explain_words(p: Page, ans: dict[str, Any], user_name: str, role_labels: dict[str, str],
                  field_label: str | None) -> list[str]:
    """The explain endpoint's answer (Access.explain) as sentences in the user's language."""
    def roles_text(entries: list[dict[str, Any]], with_scope: bool = True) -> str:
        parts = [p.t("admin_ex_by", role=role_labels.get(e.get("role") or "", e.get("role") or ""),
                     scope=_scope_words(p, e.get("scope"))) if with_scope
                 else f"“{role_labels.get(e.get('role') or '', e.get('role') or '')}”" for e in entries]
        return ("；" if p.locale == "zh-CN" else "; ").join(parts)

    if ans["user"]["is_admin"]:
        return [p.t("admin_ex_admin", user=user_name)]
    out = []
    for op in OPS:
        r = ans[op]
        opw = p.t(f"admin_op_{op}")
        if r["allowed"]:
            out.append(p.t("admin_ex_allowed", user=user_name, op=opw, roles=roles_text(r["by"])))
            continue
        reasons = []
        if r.get("reason") or not r["denied_by"]:
            reasons.append(p.t("admin_ex_no_roles"))
        for d in r["denied_by"]:
            label = role_labels.get(d.get("role") or "", d.get("role") or "")
            if d.get("scope") in (None, "none", False):
                reasons.append(p.t("admin_ex_grants_none", role=label, op=opw))
            else:
                reasons.append(p.t("admin_ex_outside", role=label, scope=_scope_words(p, d.get("scope"))))
        out.append(p.t("admin_ex_denied", user=user_name, op=opw) + " " + ("；" if p.locale == "zh-CN"
                                                                          else "; ").join(reasons))
    for fl in TABLE_FLAGS:
        r = ans[fl]
        opw = p.t(f"admin_op_{fl}")
        out.append(p.t("admin_ex_flag_yes", user=user_name, op=opw, roles=roles_text(r["by"], False))
                   if r["allowed"] else p.t("admin_ex_flag_no", user=user_name, op=opw))
    fa = ans.get("field")
    if fa is not None and field_label:
        by = ""
        if fa.get("hidden_by"):
            by = p.t("admin_ex_hidden_by", roles="、".join(role_labels.get(k, k) for k in fa["hidden_by"] if k))
        if fa["visible"] is True:
            out.append(p.t("admin_ex_field_visible", field=field_label, user=user_name))
        elif fa["visible"] is False:
            out.append(p.t("admin_ex_field_hidden", field=field_label, user=user_name, by=by))
        else:
            out.append(p.t("admin_ex_field_some", field=field_label, user=user_name))
        if fa["visible"] and not fa["writable"]:
            ro = fa.get("read_only_by") or []
            out.append(p.t("admin_ex_field_ro", user=user_name, by=p.t(
                "admin_ex_hidden_by", roles="、".join(role_labels.get(k, k) for k in ro if k)) if ro else ""))
    if ans.get("note"):
        out.append(p.t("admin_ex_inactive"))
    return out


@routes.get("/admin/explain")
def admin_explain_page() -> Response:
    actor = _actor()
    with unit() as (conn, cat):
        p = make_page(conn, cat, actor)
        args = request.args
        t = _table_arg(p, args.get("table"))
        if t is not None and not actor.can_see_table(cat, t):
            t = None
        tables = [(f"{app.key}.{tb.key}",
                   f"{p.label(app.doc.get('label', app.key))} · {p.label(tb.doc.get('label', tb.key))}")
                  for app in cat.apps for tb in app.tables if actor.can_see_table(cat, tb)]
        records: list[tuple[int, str]] = []
        fields: list[tuple[str, str]] = []
        words: list[str] = []
        if t is not None:
            df = t.display_field
            from formwork.runtime.records import RecordReader

            # the records to ask about are those the asker may read themselves (no titles leak to a user manager)
            listed = RecordReader(cat, conn, actor, secret=secret()).list(
                t, limit=200, fields=[df.key] if df is not None else [t.fields[0].key] if t.fields else None)
            r = p.renderer(cat.app_by_id(t.app_id).key)
            for rec in listed["records"]:
                text = r.text(df, rec["fields"].get(df.key)) if df is not None else ""
                records.append((rec["id"], text or f"#{rec['id']}"))
            fields = [(f.key, p.label(f.doc.get("label", f.key))) for f in t.fields]
        who = args.get("user", "")
        if t is not None and who.isdigit():
            q = {"user": who, "app": cat.app_by_id(t.app_id).key, "table": t.key}
            if args.get("record", "").isdigit():
                q["record"] = args["record"]
            if args.get("field") in t.fields_by_key:
                q["field"] = args["field"]
            try:
                ans = admin.explain(conn, cat, q)
            except NotFound:
                ans = None
            if ans is not None:
                name = conn.execute(select(db.users.c.name).where(db.users.c.id == int(who))).scalar() or ""
                labels = {r["key"]: r["label"] for r in role_choices(p)}
                flabel = dict(fields).get(q.get("field", ""))
                words = explain_words(p, ans, name, labels, flabel)
        return _tab(p, "admin_explain.html", "explain", users=user_choices(p), tables=tables, records=records,
                    fields=fields, words=words, args=args)


# --- audit log --------------------------------------------------------------------------------------------
AUDIT_ACTIONS = ("login", "login_failed", "login_locked", "logout", "user_created", "user_updated",
                 "user_deactivated", "password_reset", "password_changed", "password_link_created",
                 "user_signed_out", "account_updated", "team_created", "team_updated", "team_deleted",
                 "role_created", "role_updated", "role_deleted", "token_created", "token_revoked",
                 "schema_changed", "automation_changed", "export", "import", "app_exported", "hook_token_created")


def _day_bound(p: Page, value: str, end: bool) -> str | None:
    """A local date from the filter as a UTC time: the start of that day, or the end for "to"."""
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        return None
    start = dt.datetime.combine(day + dt.timedelta(days=1) if end else day, dt.time())
    try:
        local = start.replace(tzinfo=ZoneInfo(p.tz))
    except (ZoneInfoNotFoundError, ValueError):
        local = start.replace(tzinfo=dt.UTC)
    utc = local.astimezone(dt.UTC) - (dt.timedelta(microseconds=1) if end else dt.timedelta())
    return utc.replace(tzinfo=None).isoformat()


def _audit_args(p: Page) -> dict[str, str]:
    a = request.args
    args: dict[str, str] = {}
    if a.get("user", "").strip():
        args["user"] = a["user"].strip()[:150]
    if a.get("action") in AUDIT_ACTIONS:
        args["action"] = a["action"]
    for name, end in (("since", False), ("until", True)):
        bound = _day_bound(p, a.get(name, ""), end) if a.get(name) else None
        if bound:
            args[name] = bound
    return args


def action_label(p: Page, action: str) -> str:
    return p.t(f"admin_act_{action}") if action in AUDIT_ACTIONS else action


def _target_link(p: Page, target: str | None, users: dict[str, int],
                 details: Any = None) -> tuple[str, str | None]:
    """The changed thing in words and, when it has a page, its address."""
    if not target:
        return "", None
    kind, _, ref = target.partition(":")
    if kind == "user" and ref in users:
        return ref, url_for("ui.admin_user", user_id=users[ref])
    if kind == "team":
        return ref, url_for("ui.admin_team", key=ref)
    if kind == "role":
        return ref, url_for("ui.admin_role", key=ref)
    if target.startswith("/api/v1/meta/"):
        method = details.get("method") if isinstance(details, dict) else None
        return _design_target(p, target, method if isinstance(method, str) else "")
    apps = {app.key: app for app in p.cat.apps}
    if kind == "app" and ref in apps:
        return p.label(apps[ref].doc.get("label", ref)), url_for("ui.app_page", app_key=ref)
    m = re.match(r"^(?:table:|/api/v1/meta/apps/)([a-z][a-z0-9_]*)(?:\.|/tables/)?([a-z][a-z0-9_]*)?", target)
    if m and m.group(1) in apps:
        app = apps[m.group(1)]
        t = next((x for x in app.tables if x.key == m.group(2)), None)
        name = p.label(app.doc.get("label", app.key))
        if t is not None:
            return f"{name} · {p.label(t.doc.get('label', t.key))}", url_for("ui.table_page", app_key=app.key,
                                                                          table_key=t.key)
        return name, url_for("ui.app_page", app_key=app.key)
    return target, None


#: the kinds of document a design-change address names, in the reader's words
_DESIGN_PARTS = {"apps": "admin_part_app", "tables": "admin_part_table", "fields": "admin_part_field",
                 "views": "admin_part_view", "automations": "admin_part_automation",
                 "dashboards": "admin_part_dashboard", "templates": "admin_part_template", "trash": "admin_part_trash"}


def _design_target(p: Page, path: str, method: str) -> tuple[str, str | None]:
    """A design change's API address (``/api/v1/meta/apps/crm/tables/customers/fields/phone``) said in words
    (``CRM · 客户 · 字段 电话``) with the page of the app or table it changed; names that no longer exist (a
    deleted field) are shown by their key, never the raw address."""
    parts = [x for x in path.split("?")[0].split("/")[4:] if x]
    words: list[str] = []
    link: str | None = None
    app = table = None
    i = 0
    while i < len(parts):
        part, ref = parts[i], parts[i + 1] if i + 1 < len(parts) else None
        i += 2
        if part == "apps" and ref:
            app = next((a for a in p.cat.apps if a.key == ref), None)
            words.append(p.label(app.doc.get("label", ref)) if app else ref)
            link = url_for("ui.app_page", app_key=ref) if app else None
        elif part == "tables" and ref and app is not None:
            table = next((t for t in app.tables if t.key == ref), None)
            words.append(p.label(table.doc.get("label", ref)) if table else ref)
            if table is not None:
                link = url_for("ui.table_page", app_key=app.key, table_key=table.key)
        elif part == "fields" and ref and table is not None:
            field = next((f for f in table.fields if f.key == ref), None)
            words.append(f"{p.t('admin_part_field')} {p.label(field.doc.get('label', ref)) if field else ref}")
        elif part == "templates" and ref:
            words.append(p.t("admin_part_installed", name=p.label(_template_label(ref))))
            method = ""
        elif part in _DESIGN_PARTS:
            docs = (table.views if table is not None and part == "views"
                    else getattr(app, part, None) if app is not None and part != "views" else None) or []
            doc = next((d for d in docs if isinstance(d, dict) and d.get("key") == ref), None)
            name = p.label(doc.get("label", ref)) if doc else ref if ref and not ref.isdigit() else ""
            words.append(f"{p.t(_DESIGN_PARTS[part])} {name}".strip())
        elif part == "import" or ref == "import":
            words.append(p.t("admin_part_import"))
    said = " · ".join(words) or p.t("admin_part_design")
    verb = {"POST": "admin_verb_created", "PATCH": "admin_verb_changed", "PUT": "admin_verb_changed",
            "DELETE": "admin_verb_deleted"}.get(method.upper())
    return (p.t(verb, what=said) if verb else said), link


def _template_label(key: str) -> Any:
    from formwork.metadata.portable import load_template

    try:
        return load_template(key).get("app", {}).get("label", key)
    except Exception:  # noqa: BLE001 - a template that is gone is named by its key
        return key


@routes.get("/admin/audit")
def admin_audit_page() -> Response:
    actor = _actor()
    with unit() as (conn, cat):
        p = make_page(conn, cat, actor)
        args = _audit_args(p)
        if request.args.get("before", "").isdigit():
            args["before"] = request.args["before"]
        args["limit"] = "100"
        found = admin.list_audit(conn, args)
        users = {u.username: u.id for u in user_choices(p)}
        entries = []
        for e in found["entries"]:
            text, link = _target_link(p, e["target"], users, e.get("details"))
            at = dt.datetime.fromisoformat(e["at"].rstrip("Z")) if e["at"] else None
            entries.append({**e, "when": _local(p, at), "label": action_label(p, e["action"]), "target_text": text,
                            "link": link})
        more = None
        kept: dict[str, Any] = {k: v for k, v in request.args.items() if k != "before"}
        if found["next_before"]:
            more = url_for("ui.admin_audit_page", **kept, before=found["next_before"])
        csv_url = url_for("ui.admin_audit_csv", **kept)
        return _tab(p, "admin_audit.html", "audit", entries=entries, more=more, csv_url=csv_url,
                    actions=[(a, action_label(p, a)) for a in AUDIT_ACTIONS], users=user_choices(p),
                    args=request.args)


@routes.get("/admin/audit.csv")
def admin_audit_csv() -> Response:
    actor = _actor()
    with unit() as (conn, cat):
        p = make_page(conn, cat, actor)
        args = {**_audit_args(p), "limit": "1000"}
        rows: list[list[str]] = []
        for _ in range(100):  # at most 100 000 entries per file
            found = admin.list_audit(conn, args)
            for e in found["entries"]:
                at = dt.datetime.fromisoformat(e["at"].rstrip("Z")) if e["at"] else None
                details = e["details"]
                rows.append([e["at"] or "", _local(p, at), e["user"]["username"] or "", action_label(p, e["action"]),
                             e["target"] or "", "" if details is None else _compact(details), e["ip"] or ""])
            if not found["next_before"]:
                break
            args["before"] = str(found["next_before"])
        header = ["UTC", p.t("admin_when"), p.t("admin_audit_user"), p.t("admin_audit_action"), p.t("admin_what"),
                  p.t("admin_details"), p.t("admin_from_ip")]
    resp = Response(_csv_lines([header, *rows]), mimetype="text/csv")
    resp.headers["Content-Disposition"] = "attachment; filename=audit-log.csv"
    return resp


def _compact(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)[:5000]


def _csv_lines(rows: list[list[str]]) -> Iterator[str]:
    yield "\ufeff"  # spreadsheet programs read UTF-8 (Chinese) only with the byte order mark
    for row in rows:
        buf = io.StringIO()
        # a cell starting with = + - @ would run as a formula in a spreadsheet: prefix it with a quote
        csv.writer(buf).writerow(["'" + c if c[:1] in ("=", "+", "-", "@") else c for c in row])
        yield buf.getvalue()
