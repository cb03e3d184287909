"""Accounts, sessions and API tokens. Only hashes of secrets are stored."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection
from werkzeug.security import check_password_hash, generate_password_hash

from formwork import db
from formwork.errors import BadRequest, Conflict, NotFound, Unauthorized, ValidationFailed
from formwork.runtime import passwords

MAX_FAILURES = 5  # per (username, client address) within LOCKOUT
LOCKOUT = dt.timedelta(minutes=15)
WRONG_LOGIN = "wrong username or password"
SESSION_IDLE = dt.timedelta(days=7)
MIN_PASSWORD = passwords.MIN_LENGTH
_DUMMY_HASH = generate_password_hash("formwork-dummy-password")


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def hash_password(password: str) -> str:
    return generate_password_hash(password)  # scrypt with a random salt


def check_password_strength(password: Any, username: str | None = None) -> None:
    """The password policy (formwork.runtime.passwords): length, not the username, not a common password."""
    passwords.check(password, username)


def audit(conn: Connection, action: str, *, user_id: int | None = None, username: str | None = None,
          target: str | None = None, details: Any = None, ip: str | None = None) -> None:
    conn.execute(insert(db.audit).values(at=db.utcnow(), user_id=user_id, username=username, action=action,
                                         target=target, details=details, ip=ip))


def user_json(row: Any, roles: list[str] | None = None) -> dict[str, Any]:
    return {"id": row.id, "username": row.username, "name": row.name, "email": row.email,
            "locale": row.locale, "timezone": row.timezone, "active": row.active, "is_admin": row.is_admin,
            "team_id": row.team_id, "roles": roles or []}


def role_keys(conn: Connection, user_id: int) -> list[str]:
    q = (select(db.roles.c.key).join(db.user_roles, db.user_roles.c.role_id == db.roles.c.id)
         .where(db.user_roles.c.user_id == user_id).order_by(db.roles.c.key))
    return [r[0] for r in conn.execute(q)]


def create_user(conn: Connection, data: dict[str, Any], *, is_admin: bool = False) -> int:
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    details: dict[str, list[str]] = {}
    username = data.get("username")
    if not isinstance(username, str) or not (1 <= len(username.strip()) <= 150) or any(c.isspace() for c in username):
        details["username"] = ["must be 1–150 characters without spaces"]
    name = data.get("name") or username
    if not isinstance(name, str) or len(name) > 200:
        details["name"] = ["must be text of at most 200 characters"]
    email = data.get("email")
    if email is not None and (not isinstance(email, str) or "@" not in email or len(email) > 320):
        details["email"] = ["must be an email address"]
    try:
        check_password_strength(data.get("password"), username if isinstance(username, str) else None)
    except ValidationFailed as e:
        details.update(e.details or {})
    if details:
        raise ValidationFailed.from_details(details)
    if conn.execute(select(db.users.c.id).where(db.users.c.username == username)).first():
        raise Conflict(f"username '{username}' is taken", {"username": ["is taken"]})
    uid = conn.execute(insert(db.users).values(
        username=username, name=name, email=email, password_hash=hash_password(data["password"]),
        locale=data.get("locale") or "en", timezone=data.get("timezone") or "UTC", active=True,
        is_admin=is_admin, team_id=data.get("team_id"), failed_logins=0, created_at=db.utcnow())
        .returning(db.users.c.id)).scalar_one()
    return int(uid)


def login(conn: Connection, username: Any, password: Any, ip: str | None) -> tuple[str, str, Any]:
    """Check credentials with lockout; return (session token, csrf token, user row)."""
    if not isinstance(username, str) or not isinstance(password, str) or len(password) > 1024:
        raise BadRequest("username and password are required")
    if len(username) > 150 or "\x00" in username or "\x00" in password:
        raise Unauthorized(WRONG_LOGIN)
    u = conn.execute(select(db.users).where(db.users.c.username == username)).first()
    now = db.utcnow()
    if _recent_failures(conn, username, ip, now) >= MAX_FAILURES:
        # locked for this (username, address) only, and answered like a wrong password: nobody can lock
        # a colleague out from elsewhere, and a locked account doesn't reveal that the username exists
        check_password_hash(_DUMMY_HASH, password)
        audit(conn, "login_locked", user_id=u.id if u else None, username=username, ip=ip)
        raise Unauthorized(WRONG_LOGIN)
    ok = check_password_hash(u.password_hash or _DUMMY_HASH, password) if u is not None else \
        check_password_hash(_DUMMY_HASH, password) and False
    if not ok or u is None or not u.active:
        if u is not None:
            conn.execute(update(db.users).where(db.users.c.id == u.id)
                         .values(failed_logins=(u.failed_logins or 0) + 1))
        audit(conn, "login_failed", user_id=u.id if u else None, username=username, ip=ip)
        raise Unauthorized(WRONG_LOGIN)
    conn.execute(update(db.users).where(db.users.c.id == u.id).values(failed_logins=0, locked_until=None))
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(24)
    conn.execute(insert(db.sessions).values(id=sha256(token), user_id=u.id, csrf_token=csrf, created_at=now,
                                            last_seen=now, ip=ip))
    audit(conn, "login", user_id=u.id, username=u.username, ip=ip)
    return token, csrf, u


def _recent_failures(conn: Connection, username: str, ip: str | None, now: dt.datetime) -> int:
    """Failed logins for this username from this address within the lockout window, since the last
    successful login from there or an administrator's reset of the password (read from the audit log, so
    every process sees the same count)."""
    a = db.audit
    same = [a.c.username == username, a.c.ip == ip if ip is not None else a.c.ip.is_(None),
            a.c.at >= now - LOCKOUT]
    last_ok = conn.execute(select(func.max(a.c.at)).where(a.c.action == "login", *same)).scalar()
    last_reset = conn.execute(select(func.max(a.c.at)).where(
        a.c.action == "password_reset", a.c.target == f"user:{username}", a.c.at >= now - LOCKOUT)).scalar()
    q = select(func.count()).select_from(a).where(a.c.action == "login_failed", *same)
    for since in (last_ok, last_reset):
        if since is not None:
            q = q.where(a.c.at > since)
    return int(conn.execute(q).scalar() or 0)


def resolve_session(conn: Connection, token: str) -> tuple[int, str] | None:
    row = conn.execute(select(db.sessions).where(db.sessions.c.id == sha256(token))).first()
    if row is None or row.last_seen < db.utcnow() - SESSION_IDLE:
        return None
    return row.user_id, row.csrf_token


def touch_session(conn: Connection, token: str) -> None:
    conn.execute(update(db.sessions).where(db.sessions.c.id == sha256(token)).values(last_seen=db.utcnow()))


def logout(conn: Connection, token: str) -> None:
    conn.execute(delete(db.sessions).where(db.sessions.c.id == sha256(token)))


def create_token(conn: Connection, user_id: int, name: Any, expires_in_days: Any) -> dict[str, Any]:
    if not isinstance(name, str) or not (1 <= len(name) <= 200):
        raise ValidationFailed.from_details({"name": ["is required (at most 200 characters)"]})
    expires = None
    if expires_in_days is not None:
        if (isinstance(expires_in_days, bool) or not isinstance(expires_in_days, int)
                or not 1 <= expires_in_days <= 3650):
            raise ValidationFailed.from_details({"expires_in_days": ["must be a whole number from 1 to 3650"]})
        expires = db.utcnow() + dt.timedelta(days=expires_in_days)
    prefix = secrets.token_hex(4)
    token = f"fw_{prefix}_{secrets.token_urlsafe(32)}"
    tid = conn.execute(insert(db.api_tokens).values(
        user_id=user_id, name=name, token_hash=sha256(token), prefix=prefix, created_at=db.utcnow(),
        expires_at=expires).returning(db.api_tokens.c.id)).scalar_one()
    return {"id": tid, "token": token, "name": name, "expires_at": _iso(expires)}


def resolve_token(conn: Connection, token: str) -> int | None:
    row = conn.execute(select(db.api_tokens).where(db.api_tokens.c.token_hash == sha256(token))).first()
    if row is None or row.revoked_at is not None:
        return None
    if row.expires_at is not None and row.expires_at < db.utcnow():
        return None
    if not hmac.compare_digest(row.token_hash, sha256(token)):
        return None
    return int(row.user_id)


def list_tokens(conn: Connection, user_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(select(db.api_tokens).where(db.api_tokens.c.user_id == user_id,
                                                    db.api_tokens.c.revoked_at.is_(None))
                        .order_by(db.api_tokens.c.id))
    return [{"id": r.id, "name": r.name, "prefix": f"fw_{r.prefix}_", "created_at": _iso(r.created_at),
             "expires_at": _iso(r.expires_at), "last_used_at": _iso(r.last_used_at)} for r in rows]


def revoke_token(conn: Connection, user_id: int, token_id: Any) -> None:
    try:
        tid = int(token_id)
    except (TypeError, ValueError):
        raise NotFound("no such token") from None
    if not 0 < tid <= 2**62:
        raise NotFound("no such token")
    res = conn.execute(update(db.api_tokens).where(db.api_tokens.c.id == tid, db.api_tokens.c.user_id == user_id,
                                                   db.api_tokens.c.revoked_at.is_(None))
                       .values(revoked_at=db.utcnow()))
    if res.rowcount != 1:
        raise NotFound("no such token")


def _iso(v: dt.datetime | None) -> str | None:
    return v.isoformat(timespec="seconds") + "Z" if v else None


def audit_meta_change(conn: Connection, access: Any, method: str, path: str, ip: str | None) -> None:
    """One audit row per metadata API call that changes something (same transaction: a failed change leaves none)."""
    action = "automation_changed" if "/automations" in path else "schema_changed"
    audit(conn, action, user_id=access.user_id, username=access.username, target=path[:200],
          details={"method": method, "path": path[:1000]}, ip=ip)
