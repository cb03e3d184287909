"""The public pool (公海): records without an owner that users may claim, and that return to it.

Generic: any table whose document has a ``pool`` object takes part, e.g. the CRM's customers::

    "pool": {"owner_field": "owner", "previous_owner_field": "previous_owner", "released_at_field": "released_at",
             "claimed_at_field": "claimed_at", "claim_limit_role_flag": "claim_limit", "cooldown_days": 7,
             "last_activity_field": "last_activity_at", "recycle_after_days": 30, "warn_days_before": 5,
             "deal_field": "last_order_date", "deal_after_days": 365}

* claim: an unowned record the caller can see becomes theirs, while the number of records they own in
  the table stays below the largest ``claim_limit`` of their roles (roles without it may not claim);
  whoever released a record may not take it back during ``cooldown_days``.
* release: the owner (or someone whose update scope covers the record) gives it back.
* recycle: owned records without follow-up (last activity, claim and creation all older than
  ``recycle_after_days``), or without a deal for ``deal_after_days``, go back to the pool; owners get an
  in-app reminder ``warn_days_before`` days earlier (once per record and stale spell). The automation
  action ``recycle_to_pool`` runs it on a schedule.

Writes go through RecordService, so history, validation and outbox events work as for any edit; the
claim and release writes are made with elevated rights because they deliberately reach records the
caller may not otherwise edit (that is what a pool is for).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from formwork import db
from formwork.errors import BadRequest, Conflict, Forbidden, NotFound, ValidationFailed
from formwork.metadata.catalog import Catalog, FieldDef, TableDef, label_text
from formwork.metadata.fieldtypes.base import DATE, DATETIME, QueryContext
from formwork.runtime import notifications
from formwork.runtime.notifications import Note
from formwork.runtime.permissions import Access
from formwork.runtime.records import MAX_BATCH, RecordReader, RecordService, parse_id

REMINDER_KIND = "pool_reminder"
RELEASED_KIND = "pool_released"


_WORDS: dict[str, dict[str, str]] = {
    "en": {
        "signed_in": "only a signed-in user can claim records",
        "no_claim": "your roles may not claim records from the pool of '{table}' (none of them sets '{flag}')",
        "own_already": "you already own this record",
        "owned": "this record belongs to {who}; only records in the pool (without an owner) can be claimed",
        "cooldown": "you released this record on {released}; you may claim it again from {until} UTC "
                    "(cooldown of {days} days)",
        "limit": "you already own {owned} records in '{table}', the claim limit of your roles is {limit}: "
                 "release some before claiming more",
        "in_pool": "this record is already in the pool",
        "no_release": "only the owner, or someone who may edit this record, can release it",
        "choose": "choose a user",
        "no_assign": "only a team's manager may assign records from the pool",
        "not_member": "is not a member of a team you manage",
        "owned_assign": "this record belongs to {who}; only records in the pool or that you may edit can be assigned",
    },
    "zh-CN": {
        "signed_in": "只有登录用户才能领取",
        "no_claim": "你的角色不能从“{table}”的公海领取（没有设置 {flag}）",
        "own_already": "这条记录已经是你的了",
        "owned": "这条记录属于 {who}；只能领取公海中（没有负责人）的记录",
        "cooldown": "你在 {released} 退回了这条记录；{until}（UTC）之后才能再次领取（冷却期 {days} 天）",
        "limit": "你已拥有 {owned} 条“{table}”记录，达到角色的领取上限 {limit}：请先退回一些再领取",
        "in_pool": "这条记录已经在公海中",
        "no_release": "只有负责人或有权编辑该记录的人才能退回公海",
        "choose": "请选择一位成员",
        "no_assign": "只有团队主管可以从公海分配记录",
        "not_member": "不是你所管理团队的成员",
        "owned_assign": "这条记录属于 {who}；只能分配公海中或你有权编辑的记录",
    },
}


def _say(access: Access, key: str, **kw: Any) -> str:
    """A pool message in the caller's language."""
    return (_WORDS.get(access.locale) or _WORDS["en"])[key].format(**kw)


@dataclass
class PoolConfig:
    owner: FieldDef
    previous: FieldDef | None
    released_at: FieldDef | None
    claimed_at: FieldDef | None
    flag: str
    cooldown_days: int
    activity: FieldDef | None
    recycle_after_days: int | None
    warn_days_before: int
    deal: FieldDef | None
    deal_after_days: int | None


def pool_problems(t: TableDef, catalog: Catalog) -> dict[str, list[str]]:
    """What is wrong with a table's pool settings (JSON pointers into the table document)."""
    spec = t.doc.get("pool")
    if not isinstance(spec, dict):
        return {"/pool": [f"table '{t.key}' has no public pool (no 'pool' settings)"]}
    out: dict[str, list[str]] = {}

    def need(name: str, fits: Callable[[FieldDef], bool], what: str) -> None:
        key = spec.get(name)
        if key is None:
            return
        f = t.fields_by_key.get(key)
        if f is None or not fits(f):
            out[f"/pool/{name}"] = [f"must name {what} of table '{t.key}'"]

    def single_user(f: FieldDef) -> bool:  # the pool hands records over through it
        return f.ftype.can_own_records(f)

    def stamp(f: FieldDef) -> bool:  # the pool writes the time into it
        return f.ftype.kind == DATETIME and not f.ftype.read_only

    def dated(f: FieldDef) -> bool:  # read only: a rollup of activity dates will do
        return f.ftype.value_kind(f, catalog) in (DATE, DATETIME)

    need("owner_field", single_user, "a single user field")
    need("previous_owner_field", single_user, "a single user field")
    need("released_at_field", stamp, "a date-and-time field")
    need("claimed_at_field", stamp, "a date-and-time field")
    need("last_activity_field", dated, "a date or date-and-time field (e.g. a rollup)")
    need("deal_field", dated, "a date or date-and-time field (e.g. a rollup)")
    owner = t.owner_field
    if spec.get("owner_field") is None and (owner is None or not owner.ftype.holds_users or owner.ftype.read_only):
        out["/pool/owner_field"] = ["the table has no owner field: name one"]
    if spec.get("recycle_after_days") and spec.get("warn_days_before", 0) >= spec["recycle_after_days"]:
        out["/pool/warn_days_before"] = ["must be less than recycle_after_days"]
    if spec.get("cooldown_days") and not (spec.get("previous_owner_field") and spec.get("released_at_field")):
        out["/pool/cooldown_days"] = ["a cooldown needs previous_owner_field and released_at_field"]
    if spec.get("deal_after_days") and not spec.get("deal_field"):
        out["/pool/deal_after_days"] = ["needs deal_field"]
    return out


def owner_key(t: TableDef, catalog: Catalog) -> str | None:
    """The key of the field a table's pool hands records over through; None for a table without a pool."""
    if not isinstance(t.doc.get("pool"), dict) or pool_problems(t, catalog):
        return None
    return pool_config(t, catalog).owner.key


def pool_config(t: TableDef, catalog: Catalog) -> PoolConfig:
    problems = pool_problems(t, catalog)
    if problems:
        ptr, msgs = next(iter(problems.items()))
        raise BadRequest(msgs[0] if ptr == "/pool" else
                         f"the pool settings of '{t.key}' are broken: {ptr[1:].replace('/', '.')} {msgs[0]}")
    spec = t.doc["pool"]

    def f(name: str) -> FieldDef | None:
        return t.fields_by_key[spec[name]] if spec.get(name) else None

    owner = f("owner_field") or t.owner_field
    assert owner is not None
    return PoolConfig(owner=owner, previous=f("previous_owner_field"), released_at=f("released_at_field"),
                      claimed_at=f("claimed_at_field"), flag=spec.get("claim_limit_role_flag") or "claim_limit",
                      cooldown_days=int(spec.get("cooldown_days") or 0), activity=f("last_activity_field"),
                      recycle_after_days=spec.get("recycle_after_days"),
                      warn_days_before=int(spec.get("warn_days_before") or 0),
                      deal=f("deal_field"), deal_after_days=spec.get("deal_after_days"))


def claim_limit(access: Access, flag: str) -> int | None:
    """The largest limit over the caller's roles; None = no limit (administrators), 0 = may not claim."""
    if access.is_admin:
        return None
    limits = [v for v in (r.get(flag) for r in access.roles) if isinstance(v, int) and not isinstance(v, bool)]
    return max(limits) if limits else 0


def status(conn: Connection, catalog: Catalog, access: Access, t: TableDef) -> dict[str, Any]:
    """The table's pool settings and where the caller stands: how many records they own, their limit."""
    if not access.can_see_table(catalog, t):
        raise NotFound(f"no table '{t.key}'")
    cfg = pool_config(t, catalog)
    col = t.sa.c[cfg.owner.column_name]
    owned = conn.execute(select(func.count()).select_from(t.sa).where(
        col == access.user_id, t.sa.c.deleted_at.is_(None))).scalar() if access.user_id is not None else 0
    return {"settings": t.doc["pool"], "owner_field": cfg.owner.key, "owned": owned,
            "claim_limit": claim_limit(access, cfg.flag)}


def _elevated(access: Access) -> Access:
    """The caller's identity (history, events) with the rights a pool move needs."""
    return dataclasses.replace(access, is_admin=True)


def _user_name(conn: Connection, uid: int | None) -> str:
    if uid is None:
        return "?"
    return str(conn.execute(select(db.users.c.name).where(db.users.c.id == uid)).scalar() or f"#{uid}")


def _locked_row(conn: Connection, t: TableDef, rid: int, cols: list[Any]) -> Any:
    q = select(*cols).where(t.sa.c.id == rid, t.sa.c.deleted_at.is_(None))
    if conn.dialect.name == "postgresql":
        q = q.with_for_update()
    return conn.execute(q).first()


def claim(conn: Connection, catalog: Catalog, access: Access, t: TableDef, record_id: Any,
          now: dt.datetime | None = None) -> dict[str, Any]:
    """Make an unowned record the caller's; see the module docstring for the rules."""
    cfg = pool_config(t, catalog)
    rid = parse_id(record_id)
    reader = RecordReader(catalog, conn, access)
    reader.get(t, rid, fields=[cfg.owner.key])  # 404 unless the caller can see it
    if access.user_id is None:
        raise Forbidden(_say(access, "signed_in"))
    limit = claim_limit(access, cfg.flag)
    if limit == 0:
        raise Forbidden(_say(access, "no_claim", table=t.key, flag=cfg.flag))
    if conn.dialect.name == "postgresql":  # one claim at a time per user keeps the limit exact
        conn.execute(select(db.users.c.id).where(db.users.c.id == access.user_id).with_for_update())
    owner_col = t.sa.c[cfg.owner.column_name]
    cols: list[Any] = [t.sa.c.id, owner_col]
    if cfg.previous is not None:
        cols.append(t.sa.c[cfg.previous.column_name].label("previous"))
    if cfg.released_at is not None:
        cols.append(t.sa.c[cfg.released_at.column_name].label("released"))
    row = _locked_row(conn, t, rid, cols)
    if row is None:
        raise NotFound(f"no record {rid} in '{t.key}'")
    owner = row[1]
    if owner == access.user_id:
        raise Conflict(_say(access, "own_already"))
    if owner is not None:
        raise Conflict(_say(access, "owned", who=_user_name(conn, owner)))
    now = now or db.utcnow()
    previous = row._mapping.get("previous")
    released = row._mapping.get("released")
    if cfg.cooldown_days and previous == access.user_id and released is not None:
        until = released + dt.timedelta(days=cfg.cooldown_days)
        if now < until:
            raise Conflict(_say(access, "cooldown", released=f"{released:%Y-%m-%d}", until=f"{until:%Y-%m-%d %H:%M}",
                                days=cfg.cooldown_days))
    if limit is not None:
        owned = conn.execute(select(func.count()).select_from(t.sa).where(
            owner_col == access.user_id, t.sa.c.deleted_at.is_(None))).scalar() or 0
        if owned >= limit:
            raise Forbidden(_say(access, "limit", owned=owned, table=t.key, limit=limit))
    values: dict[str, Any] = {cfg.owner.key: access.user_id}
    if cfg.claimed_at is not None:
        values[cfg.claimed_at.key] = now
    RecordService(catalog, conn, _elevated(access), origin="pool").update(t, rid, values)
    return reader.get(t, rid)


def release(conn: Connection, catalog: Catalog, access: Access, t: TableDef, record_id: Any,
            now: dt.datetime | None = None) -> dict[str, Any]:
    """Give an owned record back to the pool (its owner, or anyone whose update scope covers it)."""
    cfg = pool_config(t, catalog)
    rid = parse_id(record_id)
    reader = RecordReader(catalog, conn, access)
    reader.get(t, rid, fields=[cfg.owner.key])
    row = _locked_row(conn, t, rid, [t.sa.c.id, t.sa.c[cfg.owner.column_name]])
    if row is None:
        raise NotFound(f"no record {rid} in '{t.key}'")
    owner = row[1]
    if owner is None:
        raise Conflict(_say(access, "in_pool"))
    if owner != access.user_id:
        scope = access.scope(catalog, t, t.sa, "update")
        allowed = scope is None or conn.execute(select(t.sa.c.id).where(t.sa.c.id == rid, scope)).first()
        if not allowed:
            raise Forbidden(_say(access, "no_release"))
    RecordService(catalog, conn, _elevated(access), origin="pool").update(t, rid, _release_values(cfg, owner,
                                                                                                  now or db.utcnow()))
    try:
        return reader.get(t, rid)
    except NotFound:
        return {"id": rid, "released": True}


def assignable_users(conn: Connection, access: Access) -> list[dict[str, Any]]:
    """Who the caller may hand pool records to: any active user for an administrator, else the members
    of the teams the caller manages (a manager assigns within their team)."""
    u = db.users
    q = select(u.c.id, u.c.name).where(u.c.active.is_(True)).order_by(u.c.name, u.c.id)
    if not access.is_admin:
        if access.user_id is None:
            return []
        managed = select(db.teams.c.id).where(db.teams.c.manager_id == access.user_id)
        q = q.where(u.c.team_id.in_(managed))
    return [{"id": r.id, "name": r.name} for r in conn.execute(q.limit(1000))]


def assign(conn: Connection, catalog: Catalog, access: Access, t: TableDef, record_id: Any, user: Any,
           now: dt.datetime | None = None) -> dict[str, Any]:
    """Hand a record in the pool (or one the caller may edit) to a member of a team the caller manages."""
    cfg = pool_config(t, catalog)
    rid = parse_id(record_id)
    reader = RecordReader(catalog, conn, access)
    reader.get(t, rid, fields=[cfg.owner.key])
    if isinstance(user, dict):
        user = user.get("id")
    if isinstance(user, bool) or not isinstance(user, int):
        raise ValidationFailed.from_details({"user": [_say(access, "choose")]})
    allowed = {u["id"] for u in assignable_users(conn, access)}
    if user not in allowed:
        if not allowed:
            raise Forbidden(_say(access, "no_assign"))
        raise ValidationFailed.from_details({"user": [_say(access, "not_member")]})
    row = _locked_row(conn, t, rid, [t.sa.c.id, t.sa.c[cfg.owner.column_name]])
    if row is None:
        raise NotFound(f"no record {rid} in '{t.key}'")
    if row[1] is not None:
        scope = access.scope(catalog, t, t.sa, "update")
        if scope is not None and conn.execute(select(t.sa.c.id).where(t.sa.c.id == rid, scope)).first() is None:
            raise Conflict(_say(access, "owned_assign", who=_user_name(conn, row[1])))
    values: dict[str, Any] = {cfg.owner.key: user}
    if cfg.claimed_at is not None:
        values[cfg.claimed_at.key] = now or db.utcnow()
    RecordService(catalog, conn, _elevated(access), origin="pool").update(t, rid, values)
    notifications.send(conn, [Note(user, "pool_assigned",
                                   f"{_user_name(conn, access.user_id)} 把一条记录分配给了你 / assigned you a record",
                                   "", _link(catalog, t, rid), now or db.utcnow())])
    try:
        return reader.get(t, rid)
    except NotFound:
        return {"id": rid, "assigned": True}


def _release_values(cfg: PoolConfig, owner: int, now: dt.datetime) -> dict[str, Any]:
    values: dict[str, Any] = {cfg.owner.key: None}
    if cfg.previous is not None:
        values[cfg.previous.key] = owner
    if cfg.released_at is not None:
        values[cfg.released_at.key] = now
    if cfg.claimed_at is not None:
        values[cfg.claimed_at.key] = None
    return values


# --- recycling ---------------------------------------------------------------------------------------
class _Clock:
    def __init__(self, catalog: Catalog, t: TableDef, cfg: PoolConfig, dialect: str, now: dt.datetime) -> None:
        self.cat = catalog
        self.t = t
        self.cfg = cfg
        self.now = now
        self.ctx = QueryContext(catalog=catalog, dialect=dialect, now=now)

    def value(self, f: FieldDef) -> ColumnElement[Any]:
        return f.ftype.expression(f, self.t.sa, self.ctx)

    def older(self, f: FieldDef | None, cutoff: dt.datetime) -> ColumnElement[bool] | None:
        if f is None:
            return None
        e = self.value(f)
        bound: Any = cutoff.date() if f.ftype.value_kind(f, self.cat) == DATE else cutoff
        return or_(e.is_(None), e < bound)

    def untouched_since(self, cutoff: dt.datetime, signal: FieldDef | None) -> ColumnElement[bool]:
        """Nothing happened after ``cutoff``: not created, claimed, nor ``signal`` (activity or deal)."""
        parts = [self.t.sa.c.created_at < cutoff]
        for f in (signal, self.cfg.claimed_at):
            cond = self.older(f, cutoff)
            if cond is not None:
                parts.append(cond)
        return and_(*parts)

    def stale(self) -> ColumnElement[bool] | None:
        cfg, parts = self.cfg, []
        if cfg.recycle_after_days:
            parts.append(self.untouched_since(self.now - dt.timedelta(days=cfg.recycle_after_days), cfg.activity))
        if cfg.deal_after_days and cfg.deal is not None:
            parts.append(self.untouched_since(self.now - dt.timedelta(days=cfg.deal_after_days), cfg.deal))
        return or_(*parts) if parts else None


def recycle(conn: Connection, catalog: Catalog, t: TableDef, *, now: dt.datetime | None = None,
            origin: str | None = "pool", depth: int = 0, dry: bool = False) -> dict[str, Any]:
    """Return stale records to the pool and remind owners of records about to go; one transaction."""
    cfg = pool_config(t, catalog)
    now = (now or db.utcnow()).replace(tzinfo=None)
    clock = _Clock(catalog, t, cfg, conn.dialect.name, now)
    owner_col = t.sa.c[cfg.owner.column_name]
    base = [t.sa.c.deleted_at.is_(None), owner_col.is_not(None)]
    stale = clock.stale()
    released: list[tuple[int, int]] = []
    if stale is not None:
        released = [(r[0], r[1]) for r in conn.execute(
            select(t.sa.c.id, owner_col).where(*base, stale).order_by(t.sa.c.id))]
    reminded = _remind(conn, catalog, t, cfg, clock, base, stale, dry)
    if not dry and released:
        svc = RecordService(catalog, conn, Access.system(), origin=origin, depth=depth)
        for i in range(0, len(released), MAX_BATCH):
            part = released[i:i + MAX_BATCH]
            svc.update_many(t, [{"id": rid, "fields": _release_values(cfg, owner, now)} for rid, owner in part])
        per_owner: dict[int, int] = {}
        for _rid, owner in released:
            per_owner[owner] = per_owner.get(owner, 0) + 1
        notifications.send(conn, [
            Note(owner, RELEASED_KIND, f"{n} record(s) in '{label_text(t.label)}' returned to the pool "
                 f"(no follow-up) / {n} 条记录因未跟进已回收到公海", "", _link(catalog, t), now)
            for owner, n in sorted(per_owner.items())])
    return {"table": t.key, "released": len(released), "reminded": len(reminded),
            "released_ids": [r[0] for r in released[:100]], "reminded_ids": reminded[:100]}


def _remind(conn: Connection, catalog: Catalog, t: TableDef, cfg: PoolConfig, clock: _Clock,
            base: list[Any], stale: Any, dry: bool) -> list[int]:
    days, warn = cfg.recycle_after_days, cfg.warn_days_before
    if not days or not warn:
        return []
    soon = clock.untouched_since(clock.now - dt.timedelta(days=days - warn), cfg.activity)
    conds = [*base, soon]
    if stale is not None:
        conds.append(~stale)
    disp = t.display_field
    cols: list[Any] = [t.sa.c.id, t.sa.c[cfg.owner.column_name], t.sa.c.created_at]
    cols.append(clock.value(disp).label("disp") if disp is not None else t.sa.c.id.label("disp"))
    for name, f in (("act", cfg.activity), ("claimed", cfg.claimed_at)):
        if f is not None:
            cols.append(clock.value(f).label(name))
    rows = conn.execute(select(*cols).where(*conds).order_by(t.sa.c.id)).all()
    if not rows:
        return []

    def moment(v: Any) -> dt.datetime:
        if v is None:
            return dt.datetime.min
        if isinstance(v, str):
            v = dt.datetime.fromisoformat(v[:19])
        if isinstance(v, dt.datetime):
            return v.replace(tzinfo=None)
        return dt.datetime.combine(v, dt.time())

    touch = {r.id: max(moment(r.created_at), moment(r._mapping.get("act")), moment(r._mapping.get("claimed")))
             for r in rows}
    sent = set()
    owners = sorted({r[1] for r in rows})
    for uid, link, at in notifications.sent_since(conn, REMINDER_KIND, owners, min(touch.values())):
        if isinstance(link, dict) and link.get("table_id") == t.id:
            sent.add((uid, link.get("record_id"), at))
    out: list[int] = []
    notes: list[Note] = []
    for r in rows:
        if any(u == r[1] and rid == r.id and at >= touch[r.id] for u, rid, at in sent):
            continue
        due = (touch[r.id] + dt.timedelta(days=days)).date()
        out.append(r.id)
        notes.append(Note(r[1], REMINDER_KIND,
                          f"「{r.disp}」{warn} 天内未跟进将回收到公海 / '{r.disp}' returns to the pool on {due} "
                          "unless you follow up", "", _link(catalog, t, r.id), clock.now))
    if not dry:
        notifications.send(conn, notes)
    return out


def _link(catalog: Catalog, t: TableDef, record_id: int | None = None) -> dict[str, Any]:
    return {"app": catalog.app_by_id(t.app_id).key, "table": t.key, "table_id": t.id, "record_id": record_id}
