"""Administration of users, teams and roles (services; the HTTP views live in formwork.api.admin).

Who may do what, so that nobody can grant themselves more than they have:
- administrators may do everything except change their own roles, team, admin flag or active flag;
- holders of ``manage_users`` may manage non-admin users and teams and may grant any role that carries no
  more power than their own (:func:`role_beyond`): no administrative flag (build, manage users, manage
  automations, view dashboards) they lack, and no record they could not read, change or delete themselves
  (their own scope on that table is "all" or the very same scope), no field they don't see or may not edit.
  They act on another user's account (profile, password, roles, team, status, sessions) only when every
  role that user holds passes the same test (no takeover of a more powerful account by a password
  reset); they may not touch teams they belong to or manage (that would widen their own "team" scope),
  and may read roles but not change them. Only administrators make administrators;
- everyone else gets 403.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
import secrets
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.engine import Connection

from formwork import db
from formwork.errors import BadRequest, Conflict, Forbidden, NotFound, ValidationFailed, reject_unknown_args
from formwork.metadata import validation
from formwork.metadata.catalog import Catalog
from formwork.runtime import auth
from formwork.runtime.permissions import Access

KEY_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}\Z")
USER_KEYS = {"username", "name", "email", "password", "roles", "team", "locale", "timezone", "active", "is_admin"}
TEAM_KEYS = {"key", "name", "manager", "members"}


def assign_roles(conn: Connection, user_id: int, role_keys: list[str]) -> None:
    """Replace a user's roles with ``role_keys`` (each must exist)."""
    if not isinstance(role_keys, list) or not all(isinstance(k, str) for k in role_keys):
        raise ValidationFailed.from_details({"roles": ["must be a list of role keys"]})
    found = conn.execute(select(db.roles.c.key, db.roles.c.id).where(db.roles.c.key.in_(role_keys)))
    rows = {r.key: r.id for r in found}
    missing = [k for k in role_keys if k not in rows]
    if missing:
        raise ValidationFailed.from_details({"roles": [f"no role '{k}'" for k in missing]})
    conn.execute(delete(db.user_roles).where(db.user_roles.c.user_id == user_id))
    if rows:
        conn.execute(insert(db.user_roles), [{"user_id": user_id, "role_id": rid} for rid in set(rows.values())])


# --- who may ------------------------------------------------------------------------------------------
def require_user_admin(actor: Access) -> None:
    if not (actor.is_admin or actor.can_manage_users()):
        raise Forbidden("you may not manage users, teams or roles")


def require_admin(actor: Access, what: str) -> None:
    if not actor.is_admin:
        raise Forbidden(f"only administrators may {what}")


#: role flags that carry administrative power: a user manager grants a role holding one only when they hold it
POWER_FLAGS = ("build", "manage_users", "manage_automations", "view_dashboards")
_FIELD_RANK = {"hidden": 0, "read_only": 1, "editable": 2}


def _covers(mine: dict[str, Any], theirs: dict[str, Any]) -> bool:
    """Whether one table grant of the actor reaches every record and field another grant reaches."""
    for op in ("read", "update", "delete"):
        t, m = theirs.get(op, "none"), mine.get(op, "none")
        # "all" covers every scope; otherwise only the same scope (own, team, the same condition), as when
        # the actor holds that very role (the rule before: grant only roles you hold)
        if t not in ("none", None, False) and m not in ("all", True) and m != t:
            return False
    for flag in ("create", "import", "export"):
        if theirs.get(flag) and not mine.get(flag):
            return False
    their_fields = theirs.get("fields") or {}
    for key, mode in (mine.get("fields") or {}).items():
        if _FIELD_RANK.get(their_fields.get(key, "editable"), 2) > _FIELD_RANK.get(mode, 2):
            return False
    return True


def _effective(perms: dict[str, Any], key: str) -> dict[str, Any] | None:
    app_key = key.split(".", 1)[0]
    g = perms.get(key)
    return g if g is not None else perms.get(f"{app_key}.*")


def role_beyond(actor: Access, doc: dict[str, Any]) -> list[str]:
    """What a role grants beyond the actor's own power (empty when the actor may grant it): the
    administrative flags they lack and the tables where it opens records or fields they can't reach."""
    if actor.is_admin:
        return []
    out = [flag for flag in POWER_FLAGS if doc.get(flag) and not actor.flag(flag)]
    mine = [r.get("permissions") or {} for r in actor.roles]
    theirs = doc.get("permissions") or {}
    for key, g in sorted(theirs.items()):
        if not isinstance(g, dict):
            continue
        if key.endswith(".*"):
            # their app-wide grant applies to each table they name no grant of their own for: one of my roles
            # must cover it app-wide, and so must that role's own table grants (which override its app-wide one)
            app = key[:-1]
            ok = any(isinstance(p.get(key), dict) and _covers(p[key], g) and all(
                _covers(tg, g) for tk, tg in p.items() if tk.startswith(app) and tk != key and tk not in theirs)
                for p in mine)
        else:
            ok = any((e := _effective(p, key)) is not None and _covers(e, g) for p in mine)
        if not ok:
            out.append(key)
    return out


def _role_docs(conn: Connection, keys: list[str]) -> dict[str, dict[str, Any]]:
    if not keys:
        return {}
    return {r.key: r.doc for r in conn.execute(select(db.roles.c.key, db.roles.c.doc)
                                               .where(db.roles.c.key.in_(keys)))}


def _beyond_keys(conn: Connection, actor: Access, keys: list[str]) -> list[str]:
    """The roles among ``keys`` that carry more power than the actor has."""
    if actor.is_admin:
        return []
    return sorted(k for k, doc in _role_docs(conn, keys).items() if role_beyond(actor, doc))


def _guard_target(conn: Connection, actor: Access, target: Any) -> None:
    """Acting on another user's account (profile, password, roles, team, status, sessions) is acting with all
    they can do: only administrators act on administrators, and a user manager needs at least the power of
    every role the target holds."""
    if actor.is_admin:
        return
    if target.is_admin:
        raise Forbidden("only administrators may change an administrator's account")
    above = _beyond_keys(conn, actor, auth.role_keys(conn, target.id))
    if above:
        raise Forbidden("you may only manage users whose roles carry no more power than yours "
                        f"(not {', '.join(above)[:200]})")


def _guard_teams(actor: Access, team_ids: set[int]) -> None:
    """A non-admin may not change the membership of teams they are in or manage (their team scope)."""
    if not actor.is_admin and team_ids & set(actor.team_ids):
        raise Forbidden("you may not change the membership of a team you belong to or manage")


def _audit(conn: Connection, actor: Access, ip: str | None, action: str, target: str, details: Any = None) -> None:
    auth.audit(conn, action, user_id=actor.user_id, username=actor.username, target=target[:200], details=details,
               ip=ip)


# --- users --------------------------------------------------------------------------------------------
def _user_row(conn: Connection, user_id: Any) -> Any:
    try:
        uid = int(user_id)
    except (TypeError, ValueError):
        raise NotFound("no such user") from None
    row = conn.execute(select(db.users).where(db.users.c.id == uid)).first()
    if row is None:
        raise NotFound(f"no user {uid}")
    return row


def get_user(conn: Connection, user_id: Any) -> dict[str, Any]:
    """One user as answered over HTTP; 404 for an unknown id."""
    return user_out(conn, _user_row(conn, user_id))


def find_user(conn: Connection, ref: Any) -> Any:
    """A user by id or username (404 when there is none)."""
    if isinstance(ref, int) and not isinstance(ref, bool):
        cond = db.users.c.id == ref
    elif isinstance(ref, str) and ref.strip():
        cond = db.users.c.username == ref.strip()
        if ref.strip().isdigit():
            cond = or_(cond, db.users.c.id == int(ref.strip()))
    else:
        raise NotFound("no such user")
    rows = conn.execute(select(db.users).where(cond)).all()
    if len(rows) != 1:
        raise NotFound(f"no user '{str(ref)[:100]}'")
    return rows[0]


def user_out(conn: Connection, row: Any) -> dict[str, Any]:
    data = auth.user_json(row, auth.role_keys(conn, row.id))
    team = conn.execute(select(db.teams.c.key).where(db.teams.c.id == row.team_id)).scalar() if row.team_id else None
    data["team"] = team
    data["created_at"] = auth._iso(row.created_at)
    data["locked_until"] = auth._iso(row.locked_until)
    return data


def _team_id(conn: Connection, ref: Any) -> int | None:
    if ref is None:
        return None
    q = select(db.teams.c.id)
    if isinstance(ref, int) and not isinstance(ref, bool):
        q = q.where(db.teams.c.id == ref)
    elif isinstance(ref, str):
        q = q.where(db.teams.c.key == ref)
    else:
        raise ValidationFailed.from_details({"team": ["must be a team key or id"]})
    tid = conn.execute(q).scalar()
    if tid is None:
        raise ValidationFailed.from_details({"team": [f"no team '{str(ref)[:100]}'"]})
    return int(tid)


def _check_profile(data: dict[str, Any]) -> dict[str, list[str]]:
    details: dict[str, list[str]] = {}
    unknown = sorted(set(data) - USER_KEYS)
    for k in unknown:
        details[k[:100]] = ["is not a user property"]
    if "name" in data and (not isinstance(data["name"], str) or not 1 <= len(data["name"].strip()) <= 200):
        details["name"] = ["must be text of 1–200 characters"]
    if "email" in data and data["email"] is not None and (
            not isinstance(data["email"], str) or "@" not in data["email"] or len(data["email"]) > 320):
        details["email"] = ["must be an email address"]
    if "locale" in data and data["locale"] not in ("en", "zh-CN"):
        details["locale"] = ["must be one of: en, zh-CN"]
    if "timezone" in data:
        tz = data["timezone"]
        try:
            if not isinstance(tz, str) or not tz or len(tz) > 64:
                raise ZoneInfoNotFoundError(tz)
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            details["timezone"] = ["must be an IANA time zone such as Asia/Shanghai"]
    for flag in ("active", "is_admin"):
        if flag in data and not isinstance(data[flag], bool):
            details[flag] = ["must be true or false"]
    if "roles" in data and (not isinstance(data["roles"], list) or not all(isinstance(k, str) for k in data["roles"])):
        details["roles"] = ["must be a list of role keys"]
    return details


def _check_grants(conn: Connection, actor: Access, data: dict[str, Any], target_id: int | None,
                  old_team: int | None) -> int | None:
    """Escalation checks for a create or an update; returns the new team id."""
    if target_id is not None and target_id == actor.user_id:
        own = sorted(k for k in ("roles", "team", "active", "is_admin") if k in data)
        if own:
            raise Forbidden(f"you may not change your own {', '.join(own)}")
    if "is_admin" in data:
        require_admin(actor, "make or unmake administrators")
    if "roles" in data and not actor.is_admin:
        extra = _beyond_keys(conn, actor, list(data["roles"]))
        if extra:
            raise Forbidden(f"you may only grant roles that carry no more power than yours (not "
                            f"{', '.join(extra)[:200]})")
    team = old_team
    if "team" in data:
        team = _team_id(conn, data["team"])
        _guard_teams(actor, {t for t in (old_team, team) if t is not None} if team != old_team else set())
    return team


def list_users(conn: Connection, args: dict[str, str]) -> dict[str, Any]:
    allowed = {"q", "active", "team", "role", "limit", "offset"}
    reject_unknown_args(args, allowed)
    u = db.users
    conds: list[Any] = []
    if args.get("q"):
        pat = "%" + args["q"][:100].lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        conds.append(or_(func.lower(u.c.username).like(pat, escape="\\"), func.lower(u.c.name).like(pat, escape="\\"),
                         func.lower(func.coalesce(u.c.email, "")).like(pat, escape="\\")))
    if "active" in args:
        if args["active"] not in ("true", "false"):
            raise BadRequest("active must be true or false")
        conds.append(u.c.active.is_(args["active"] == "true"))
    if "team" in args:
        tid = conn.execute(select(db.teams.c.id).where(db.teams.c.key == args["team"])).scalar()
        if tid is None:
            raise BadRequest(f"no team '{args['team'][:100]}'")
        conds.append(u.c.team_id == tid)
    if "role" in args:
        rid = conn.execute(select(db.roles.c.id).where(db.roles.c.key == args["role"])).scalar()
        if rid is None:
            raise BadRequest(f"no role '{args['role'][:100]}'")
        conds.append(u.c.id.in_(select(db.user_roles.c.user_id).where(db.user_roles.c.role_id == rid)))
    limit, offset = _int_arg(args, "limit", 100, 1, 1000), _int_arg(args, "offset", 0, 0, 10_000_000)
    total = conn.execute(select(func.count()).select_from(u).where(*conds)).scalar() or 0
    rows = conn.execute(select(u).where(*conds).order_by(u.c.id).limit(limit).offset(offset)).all()
    return {"users": [user_out(conn, r) for r in rows], "total": int(total)}


def _int_arg(args: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    if name not in args:
        return default
    try:
        n = int(args[name])
    except ValueError:
        raise BadRequest(f"{name} must be a whole number") from None
    if not low <= n <= high:
        raise BadRequest(f"{name} must be between {low} and {high}")
    return n


def create_user(conn: Connection, actor: Access, data: Any, ip: str | None) -> dict[str, Any]:
    """Create an account. Without ``password`` and with ``"password_link": true`` the account gets an
    unguessable password and the answer carries ``password_link`` (a one-time set-password token)."""
    require_user_admin(actor)
    if not isinstance(data, dict):
        raise BadRequest("send {\"username\", \"name\", \"password\", \"roles\": [...]}")
    data = dict(data)
    link = data.pop("password_link", False)
    if not isinstance(link, bool):
        raise ValidationFailed.from_details({"password_link": ["must be true or false"]})
    if link:
        if "password" in data:
            raise ValidationFailed.from_details({"password": ["send a password or ask for a link, not both"]})
        data["password"] = secrets.token_urlsafe(32)
    details = _check_profile(data)
    if details:
        raise ValidationFailed.from_details(details)
    team = _check_grants(conn, actor, data, None, None)
    uid = auth.create_user(conn, {**data, "team_id": team}, is_admin=bool(data.get("is_admin")))
    assign_roles(conn, uid, data.get("roles") or [])
    row = _user_row(conn, uid)
    _audit(conn, actor, ip, "user_created", f"user:{row.username}",
           {"id": uid, "roles": data.get("roles") or [], "team": data.get("team"), "is_admin": row.is_admin})
    out = user_out(conn, row)
    if link:
        out["password_link"] = _new_link(conn, actor, row, ip)
    return out


def update_user(conn: Connection, actor: Access, user_id: Any, data: Any, ip: str | None) -> dict[str, Any]:
    require_user_admin(actor)
    row = _user_row(conn, user_id)
    if not isinstance(data, dict) or not data:
        raise BadRequest("send the properties to change")
    _guard_target(conn, actor, row)
    details = _check_profile(data)
    if "username" in data:
        details["username"] = ["cannot be changed"]
    if "password" in data:
        details["password"] = ["use POST /admin/users/{id}/password"]
    if details:
        raise ValidationFailed.from_details(details)
    team = _check_grants(conn, actor, data, row.id, row.team_id)
    values: dict[str, Any] = {k: data[k] for k in ("name", "email", "locale", "timezone", "active", "is_admin")
                              if k in data}
    if "team" in data:
        values["team_id"] = team
    if values:
        conn.execute(update(db.users).where(db.users.c.id == row.id).values(**values))
    if "roles" in data:
        assign_roles(conn, row.id, data["roles"])
    if values.get("active") is False:
        _lock_out(conn, row.id)
    changed = {k: data[k] for k in data if k in ("roles", "team", "active", "is_admin", "locale", "timezone")}
    _audit(conn, actor, ip, "user_updated", f"user:{row.username}", {"id": row.id, "changed": sorted(data),
                                                                     **changed})
    return user_out(conn, _user_row(conn, row.id))


def _lock_out(conn: Connection, user_id: int) -> None:
    """End every session and token of a user at once (deactivation, password reset)."""
    conn.execute(delete(db.sessions).where(db.sessions.c.user_id == user_id))
    conn.execute(update(db.api_tokens).where(db.api_tokens.c.user_id == user_id, db.api_tokens.c.revoked_at.is_(None))
                 .values(revoked_at=db.utcnow()))


def deactivate_user(conn: Connection, actor: Access, user_id: Any, ip: str | None) -> None:
    require_user_admin(actor)
    row = _user_row(conn, user_id)
    _guard_target(conn, actor, row)
    if row.id == actor.user_id:
        raise Forbidden("you may not deactivate yourself")
    conn.execute(update(db.users).where(db.users.c.id == row.id).values(active=False))
    _lock_out(conn, row.id)
    _audit(conn, actor, ip, "user_deactivated", f"user:{row.username}", {"id": row.id})


def reset_password(conn: Connection, actor: Access, user_id: Any, data: Any, ip: str | None) -> None:
    require_user_admin(actor)
    row = _user_row(conn, user_id)
    _guard_target(conn, actor, row)
    if not isinstance(data, dict):
        raise BadRequest("send {\"password\"}")
    auth.check_password_strength(data.get("password"), row.username)
    conn.execute(update(db.users).where(db.users.c.id == row.id).values(
        password_hash=auth.hash_password(data["password"]), failed_logins=0, locked_until=None))
    _lock_out(conn, row.id)  # whoever knew the old password may hold a session or a token: end both
    _audit(conn, actor, ip, "password_reset", f"user:{row.username}", {"id": row.id})


def sign_out_everywhere(conn: Connection, actor: Access, user_id: Any, ip: str | None) -> int:
    """End every browser session of a user (their API tokens stay; a password reset ends those too)."""
    require_user_admin(actor)
    row = _user_row(conn, user_id)
    _guard_target(conn, actor, row)
    n = conn.execute(delete(db.sessions).where(db.sessions.c.user_id == row.id)).rowcount or 0
    _audit(conn, actor, ip, "user_signed_out", f"user:{row.username}", {"id": row.id, "sessions": n})
    return int(n)


# --- one-time set-password links ----------------------------------------------------------------------
LINK_LIFETIME = dt.timedelta(hours=72)


def _new_link(conn: Connection, actor: Access, row: Any, ip: str | None) -> dict[str, Any]:
    now = db.utcnow()
    # a newer link replaces every earlier one that is still open
    conn.execute(update(db.password_links).where(db.password_links.c.user_id == row.id,
                                                 db.password_links.c.used_at.is_(None)).values(used_at=now))
    token = secrets.token_urlsafe(32)
    expires = now + LINK_LIFETIME
    conn.execute(insert(db.password_links).values(user_id=row.id, token_hash=auth.sha256(token),
                                                  created_by=actor.user_id, created_at=now, expires_at=expires))
    _audit(conn, actor, ip, "password_link_created", f"user:{row.username}",
           {"id": row.id, "expires_at": auth._iso(expires)})
    return {"token": token, "expires_at": auth._iso(expires)}


def create_password_link(conn: Connection, actor: Access, user_id: Any, ip: str | None) -> dict[str, Any]:
    """A one-time link (its secret, shown once) with which the user sets a new password; 72 hours."""
    require_user_admin(actor)
    row = _user_row(conn, user_id)
    _guard_target(conn, actor, row)
    if not row.active:
        raise Conflict("the account is deactivated: reactivate it first")
    return _new_link(conn, actor, row, ip)


def link_user(conn: Connection, token: Any) -> Any:
    """The (active) user a still valid link belongs to, or None."""
    if not isinstance(token, str) or not 20 <= len(token) <= 100:
        return None
    link = conn.execute(select(db.password_links).where(db.password_links.c.token_hash == auth.sha256(token))).first()
    if link is None or link.used_at is not None or link.expires_at < db.utcnow():
        return None
    row = conn.execute(select(db.users).where(db.users.c.id == link.user_id)).first()
    return row if row is not None and row.active else None


def use_password_link(conn: Connection, token: Any, password: Any, ip: str | None) -> Any:
    """Set the password with a link (once): lifts a lockout and ends the user's sessions and tokens."""
    row = link_user(conn, token)
    if row is None:
        raise NotFound("this link is not valid: it was used, replaced or has expired")
    auth.check_password_strength(password, row.username)
    res = conn.execute(update(db.password_links).where(db.password_links.c.token_hash == auth.sha256(token),
                                                       db.password_links.c.used_at.is_(None))
                       .values(used_at=db.utcnow()))
    if res.rowcount != 1:
        raise NotFound("this link is not valid: it was used, replaced or has expired")
    conn.execute(update(db.users).where(db.users.c.id == row.id).values(
        password_hash=auth.hash_password(password), failed_logins=0, locked_until=None))
    _lock_out(conn, row.id)
    auth.audit(conn, "password_reset", user_id=row.id, username=row.username, target=f"user:{row.username}",
               details={"id": row.id, "by": "link"}, ip=ip)
    return row


# --- the user's own account ---------------------------------------------------------------------------
ACCOUNT_KEYS = {"name", "email", "locale", "timezone"}


def update_own_account(conn: Connection, actor: Access, data: Any, ip: str | None) -> dict[str, Any]:
    """What a user changes about themselves: name, email, language, time zone."""
    if actor.user_id is None:
        raise Forbidden("the system has no account")
    if not isinstance(data, dict) or not data:
        raise BadRequest("send the properties to change")
    details = _check_profile(data)
    for k in sorted(set(data) - ACCOUNT_KEYS):
        details[k[:100]] = ["you may not change this yourself"]
    if details:
        raise ValidationFailed.from_details(details)
    conn.execute(update(db.users).where(db.users.c.id == actor.user_id).values(**data))
    _audit(conn, actor, ip, "account_updated", f"user:{actor.username}", {"changed": sorted(data)})
    return user_out(conn, _user_row(conn, actor.user_id))


def change_own_password(conn: Connection, actor: Access, current: Any, new: Any, keep_session: str | None,
                        ip: str | None) -> int:
    """Change one's own password (the current one is required); every other session ends. Answers how
    many sessions ended."""
    from werkzeug.security import check_password_hash

    if actor.user_id is None:
        raise Forbidden("the system has no account")
    row = _user_row(conn, actor.user_id)
    if not isinstance(current, str) or not row.password_hash or len(current) > 1024 or \
            not check_password_hash(row.password_hash, current):
        raise ValidationFailed.from_details({"current_password": ["is not your current password"]})
    auth.check_password_strength(new, row.username)
    if new == current:
        raise ValidationFailed.from_details({"password": ["must differ from the current password"]})
    conn.execute(update(db.users).where(db.users.c.id == row.id).values(password_hash=auth.hash_password(new)))
    q = delete(db.sessions).where(db.sessions.c.user_id == row.id)
    if keep_session:
        q = q.where(db.sessions.c.id != auth.sha256(keep_session))
    n = conn.execute(q).rowcount or 0
    _audit(conn, actor, ip, "password_changed", f"user:{row.username}", {"id": row.id, "sessions_ended": n})
    return int(n)


# --- teams --------------------------------------------------------------------------------------------
def team_out(conn: Connection, row: Any) -> dict[str, Any]:
    def person(r: Any) -> dict[str, Any]:
        return {"id": r.id, "username": r.username, "name": r.name}

    manager = conn.execute(select(db.users).where(db.users.c.id == row.manager_id)).first() if row.manager_id else None
    members = conn.execute(select(db.users).where(db.users.c.team_id == row.id).order_by(db.users.c.id)).all()
    return {"id": row.id, "key": row.key, "name": row.name, "manager": person(manager) if manager else None,
            "members": [person(m) for m in members]}


def _team_row(conn: Connection, key: str) -> Any:
    row = conn.execute(select(db.teams).where(db.teams.c.key == key)).first()
    if row is None:
        raise NotFound(f"no team '{key[:100]}'")
    return row


def get_team(conn: Connection, key: str) -> dict[str, Any]:
    """One team as answered over HTTP; 404 for an unknown key."""
    return team_out(conn, _team_row(conn, key))


def list_teams(conn: Connection) -> dict[str, Any]:
    return {"teams": [team_out(conn, r) for r in conn.execute(select(db.teams).order_by(db.teams.c.key)).all()]}


def _team_values(conn: Connection, data: Any, creating: bool) -> tuple[dict[str, Any], list[int] | None]:
    if not isinstance(data, dict):
        raise BadRequest("send {\"key\", \"name\", \"manager\"?, \"members\"?}")
    details: dict[str, list[str]] = {}
    for k in sorted(set(data) - TEAM_KEYS):
        details[k[:100]] = ["is not a team property"]
    values: dict[str, Any] = {}
    if creating or "key" in data:
        if not isinstance(data.get("key"), str) or not KEY_RE.match(data["key"]):
            details["key"] = ["must be lower-case letters, digits and _ , starting with a letter (at most 63)"]
        else:
            values["key"] = data["key"]
    if creating or "name" in data:
        if not isinstance(data.get("name"), str) or not 1 <= len(data["name"].strip()) <= 200:
            details["name"] = ["must be text of 1–200 characters"]
        else:
            values["name"] = data["name"].strip()
    if "manager" in data:
        try:
            values["manager_id"] = None if data["manager"] is None else find_user(conn, data["manager"]).id
        except NotFound:
            details["manager"] = [f"no user '{str(data['manager'])[:100]}'"]
    members: list[int] | None = None
    if "members" in data:
        if not isinstance(data["members"], list):
            details["members"] = ["must be a list of user ids or usernames"]
        else:
            members = []
            for i, ref in enumerate(data["members"]):
                try:
                    members.append(int(find_user(conn, ref).id))
                except NotFound:
                    details[f"members/{i}"] = [f"no user '{str(ref)[:100]}'"]
    if details:
        raise ValidationFailed.from_details(details)
    return values, members


def _set_members(conn: Connection, actor: Access, team_id: int, members: list[int]) -> set[int]:
    """Make ``members`` the team's members; returns the other teams those users leave."""
    old = {r[0] for r in conn.execute(select(db.users.c.id).where(db.users.c.team_id == team_id))}
    new = set(members)
    left_teams = {r[0] for r in conn.execute(select(db.users.c.team_id).where(
        db.users.c.id.in_(new - old), db.users.c.team_id.is_not(None)))}
    if actor.user_id is not None and actor.user_id in (old ^ new):
        raise Forbidden("you may not change your own team")
    conn.execute(update(db.users).where(db.users.c.id.in_(old - new)).values(team_id=None))
    if new - old:
        conn.execute(update(db.users).where(db.users.c.id.in_(new - old)).values(team_id=team_id))
    return left_teams


def create_team(conn: Connection, actor: Access, data: Any, ip: str | None) -> dict[str, Any]:
    require_user_admin(actor)
    values, members = _team_values(conn, data, creating=True)
    if conn.execute(select(db.teams.c.id).where(db.teams.c.key == values["key"])).first():
        raise Conflict(f"team key '{values['key']}' is taken", {"key": ["is taken"]})
    if values.get("manager_id") is not None and values["manager_id"] == actor.user_id and not actor.is_admin:
        raise Forbidden("you may not make yourself a team manager")
    tid = int(conn.execute(insert(db.teams).values(**values).returning(db.teams.c.id)).scalar_one())
    if members is not None:
        _guard_teams(actor, _set_members(conn, actor, tid, members))
    row = _team_row(conn, values["key"])
    _audit(conn, actor, ip, "team_created", f"team:{row.key}", {"id": tid, "manager": values.get("manager_id"),
                                                                 "members": members})
    return team_out(conn, row)


def update_team(conn: Connection, actor: Access, key: str, data: Any, ip: str | None) -> dict[str, Any]:
    require_user_admin(actor)
    row = _team_row(conn, key)
    _guard_teams(actor, {row.id})
    values, members = _team_values(conn, data, creating=False)
    if not values and members is None:
        raise BadRequest("send the properties to change")
    if "manager_id" in values and values["manager_id"] != row.manager_id and actor.user_id in (
            values["manager_id"], row.manager_id):
        raise Forbidden("you may not make yourself or unmake yourself a team manager")
    if values.get("key", row.key) != row.key and conn.execute(
            select(db.teams.c.id).where(db.teams.c.key == values["key"])).first():
        raise Conflict(f"team key '{values['key']}' is taken", {"key": ["is taken"]})
    if values:
        conn.execute(update(db.teams).where(db.teams.c.id == row.id).values(**values))
    if members is not None:
        _guard_teams(actor, _set_members(conn, actor, row.id, members))
    new = conn.execute(select(db.teams).where(db.teams.c.id == row.id)).one()
    _audit(conn, actor, ip, "team_updated", f"team:{new.key}", {"id": row.id, "changed": sorted(data),
                                                                 "members": members})
    return team_out(conn, new)


def delete_team(conn: Connection, actor: Access, key: str, ip: str | None) -> None:
    require_user_admin(actor)
    row = _team_row(conn, key)
    _guard_teams(actor, {row.id})
    conn.execute(update(db.users).where(db.users.c.team_id == row.id).values(team_id=None))
    conn.execute(delete(db.teams).where(db.teams.c.id == row.id))
    _audit(conn, actor, ip, "team_deleted", f"team:{row.key}", {"id": row.id})


# --- roles --------------------------------------------------------------------------------------------
def role_out(conn: Connection, row: Any, catalog: Catalog) -> dict[str, Any]:
    app = catalog.apps_by_id.get(row.app_id) if row.app_id else None
    users = conn.execute(select(func.count()).select_from(db.user_roles)
                         .where(db.user_roles.c.role_id == row.id)).scalar()
    return {**copy.deepcopy(row.doc), "id": row.id, "app": app.key if app else None, "user_count": int(users or 0)}


def _role_row(conn: Connection, key: str) -> Any:
    row = conn.execute(select(db.roles).where(db.roles.c.key == key)).first()
    if row is None:
        raise NotFound(f"no role '{key[:100]}'")
    return row


def get_role(conn: Connection, catalog: Catalog, key: str) -> dict[str, Any]:
    """One role as answered over HTTP; 404 for an unknown key."""
    return role_out(conn, _role_row(conn, key), catalog)


def list_roles(conn: Connection, catalog: Catalog) -> dict[str, Any]:
    return {"roles": [role_out(conn, r, catalog) for r in conn.execute(select(db.roles).order_by(db.roles.c.key))]}


def validate_role(catalog: Catalog, doc: Any) -> None:
    """JSON Schema, then every table, field and filter tree checked against the live metadata."""
    from formwork.metadata.documents import DocumentContext, document_kinds

    validation.validate("role", doc)
    document_kinds.get("role").check_refs(DocumentContext(catalog), doc)


def create_role(conn: Connection, actor: Access, catalog: Catalog, doc: Any, ip: str | None) -> dict[str, Any]:
    require_user_admin(actor)
    require_admin(actor, "create roles")
    validate_role(catalog, doc)
    if conn.execute(select(db.roles.c.id).where(db.roles.c.key == doc["key"])).first():
        raise Conflict(f"role key '{doc['key']}' is taken", {"/key": ["is taken"]})
    conn.execute(insert(db.roles).values(key=doc["key"], doc=doc))
    _audit(conn, actor, ip, "role_created", f"role:{doc['key']}", {"after": doc})
    return role_out(conn, _role_row(conn, doc["key"]), catalog)


def update_role(conn: Connection, actor: Access, catalog: Catalog, key: str, patch: Any,
                ip: str | None) -> dict[str, Any]:
    require_user_admin(actor)
    row = _role_row(conn, key)
    require_admin(actor, "change roles")
    if not isinstance(patch, dict):
        raise BadRequest("send the role properties to change")
    doc = {**copy.deepcopy(row.doc), **{k: v for k, v in patch.items() if k not in ("id", "app", "user_count")}}
    if doc.get("key") != key:
        raise ValidationFailed.from_details({"/key": ["cannot be changed"]})
    validate_role(catalog, doc)
    conn.execute(update(db.roles).where(db.roles.c.id == row.id).values(doc=doc))
    _audit(conn, actor, ip, "role_updated", f"role:{key}", {"before": row.doc, "after": doc})
    return role_out(conn, _role_row(conn, key), catalog)


def replace_role(conn: Connection, actor: Access, catalog: Catalog, key: str, doc: Any,
                 ip: str | None) -> dict[str, Any]:
    """Replace a whole role document (the role editor); the key stays."""
    require_user_admin(actor)
    row = _role_row(conn, key)
    require_admin(actor, "change roles")
    if not isinstance(doc, dict):
        raise BadRequest("send the role document")
    if doc.get("key") != key:
        raise ValidationFailed.from_details({"/key": ["cannot be changed"]})
    validate_role(catalog, doc)
    conn.execute(update(db.roles).where(db.roles.c.id == row.id).values(doc=doc))
    _audit(conn, actor, ip, "role_updated", f"role:{key}", {"before": row.doc, "after": doc})
    return role_out(conn, _role_row(conn, key), catalog)


def delete_role(conn: Connection, actor: Access, key: str, ip: str | None) -> None:
    require_user_admin(actor)
    row = _role_row(conn, key)
    require_admin(actor, "delete roles")
    holders = [r[0] for r in conn.execute(select(db.user_roles.c.user_id).where(db.user_roles.c.role_id == row.id))]
    conn.execute(delete(db.user_roles).where(db.user_roles.c.role_id == row.id))
    conn.execute(delete(db.roles).where(db.roles.c.id == row.id))
    _audit(conn, actor, ip, "role_deleted", f"role:{key}", {"before": row.doc, "holders": holders})


# --- audit log (read only) ----------------------------------------------------------------------------
def _when(value: str, name: str) -> dt.datetime:
    try:
        v = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{name} must be an ISO 8601 date or time") from None
    if v.tzinfo is not None:
        v = v.astimezone(dt.UTC).replace(tzinfo=None)
    return v


def list_audit(conn: Connection, args: dict[str, str]) -> dict[str, Any]:
    allowed = {"user", "action", "since", "until", "target", "limit", "before"}
    reject_unknown_args(args, allowed)
    a = db.audit
    conds: list[Any] = []
    if args.get("user"):
        ref = args["user"].strip()
        cond = a.c.username == ref
        if ref.isdigit():
            cond = or_(cond, a.c.user_id == int(ref))
        conds.append(cond)
    if args.get("action"):
        conds.append(a.c.action.in_([x.strip() for x in args["action"].split(",") if x.strip()][:50]))
    if args.get("target"):
        conds.append(a.c.target == args["target"][:200])
    if args.get("since"):
        conds.append(a.c.at >= _when(args["since"], "since"))
    if args.get("until"):
        conds.append(a.c.at <= _when(args["until"], "until"))
    if "before" in args:
        conds.append(a.c.id < _int_arg(args, "before", 0, 1, 2**62))
    limit = _int_arg(args, "limit", 100, 1, 1000)
    rows = conn.execute(select(a).where(*conds).order_by(a.c.id.desc())
                        .limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return {"entries": [{"id": r.id, "at": auth._iso(r.at), "user": {"id": r.user_id, "username": r.username},
                         "action": r.action, "target": r.target, "details": r.details, "ip": r.ip} for r in rows],
            "next_before": rows[-1].id if more else None}


# --- explain ------------------------------------------------------------------------------------------
def explain(conn: Connection, catalog: Catalog, args: dict[str, str]) -> dict[str, Any]:
    from formwork.runtime.records import parse_id

    allowed = {"user", "app", "table", "record", "field"}
    reject_unknown_args(args, allowed)
    for need in ("user", "app", "table"):
        if not args.get(need):
            raise BadRequest(f"'{need}' is required")
    who = find_user(conn, args["user"])
    target = Access.for_user(conn, who.id)
    t = catalog.table(args["app"], args["table"])
    rid = None
    if args.get("record"):
        rid = parse_id(args["record"])
        if conn.execute(select(t.sa.c.id).where(t.sa.c.id == rid, t.sa.c.deleted_at.is_(None))).first() is None:
            raise NotFound(f"no record {rid} in '{t.key}'")
    f = t.field(args["field"]) if args.get("field") else None
    out = target.explain(conn, catalog, t, rid, f)
    if not who.active:
        out["note"] = "this account is deactivated: it cannot log in or use tokens"
    return {"user": {"id": who.id, "username": who.username, "is_admin": who.is_admin,
                     "roles": auth.role_keys(conn, who.id)},
            "app": args["app"], "table": t.key, "record": rid, **out}
