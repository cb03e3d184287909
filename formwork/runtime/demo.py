"""Demo data for templates: the generic part (writers, Faker pools, users, the run); the data is the template's.

A template may ship ``demo.py`` beside its ``app.json`` with ``generate(run: DemoRun) -> None`` (and
optionally ``UNIT``, what its scale counts, and ``SIZES``); :func:`generate_demo` finds it by the
template's name and drives it. Rows go through one of two writers:

* records (default below :data:`BULK_FROM`): every record goes through ``RecordService`` (validation,
  computed checks, history) in batches, then ``created_at``/``created_by`` are back-dated;
* bulk: rows go straight into the physical tables with ``executemany`` through the catalog's SQLAlchemy
  ``Table`` objects, with ids assigned up front, autonumber counters (``fw_counter``),
  ``created_at``/``created_by`` and junction rows maintained.

Names and companies come from Faker (zh_CN and en_US) drawn once into pools, so a fixed seed gives
the same data on every run and large runs don't pay Faker's cost per row.
"""

from __future__ import annotations

import datetime as dt
import importlib
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, TypeAlias

from sqlalchemy import bindparam, func, insert, select, text, update
from sqlalchemy.engine import Connection

from formwork import db
from formwork.errors import BadRequest, NotFound
from formwork.metadata import portable
from formwork.metadata.catalog import AppDef, Catalog, TableDef
from formwork.metadata.fieldtypes.link import relation
from formwork.metadata.service import MetadataService
from formwork.runtime.permissions import Access
from formwork.runtime.records import MAX_BATCH, RecordService

SIZES = {"small": 150, "medium": 2000, "large": 20000}  # a template's SIZES replaces these
DEFAULT_SEED = 20240601
DEMO_PASSWORD_ENV = "FORMWORK_DEMO_PASSWORD"
DEFAULT_DEMO_PASSWORD = "formwork-demo"
BULK_FROM = 5000  # from this scale on, rows are bulk-loaded
CHUNK = 2000  # scale units per chunk in bulk mode
MAX_SCALE = 10_000_000

# a demo user: username, display name, role key, team key, manages the team
DemoUser: TypeAlias = tuple[str, str, str, str | None, bool]


def demo_password() -> str:
    return os.environ.get(DEMO_PASSWORD_ENV) or DEFAULT_DEMO_PASSWORD


@dataclass
class Pools:
    """Faker output drawn once per run (both locales), sampled by the seeded RNG afterwards."""

    companies: list[str]
    people: list[str]
    phones: list[str]
    addresses: list[str]
    sentences: list[str]
    jobs: list[str]

    @classmethod
    def build(cls, seed: int, n: int, language: str = "zh-CN") -> Pools:
        """Names, companies, addresses and sentences in the demo's language (Chinese ones from Faker's zh_CN,
        English ones from en_US); phone numbers are Chinese mobile numbers either way."""
        from faker import Faker

        fake = Faker(["zh_CN", "en_US"])
        fake.seed_instance(seed)
        zh = fake["zh_CN"]
        words = zh if language.startswith("zh") else fake["en_US"]
        sep = " " if words is zh else ", "
        per = max(50, n)
        return cls(
            companies=[words.company() for _ in range(per)],
            people=[words.name() for _ in range(per)],
            phones=[zh.phone_number() for _ in range(per)],
            addresses=[words.address().replace("\n", sep) for _ in range(min(per, 1000))],
            sentences=[words.sentence() for _ in range(200)],
            jobs=[words.job() for _ in range(100)],
        )


#: the languages demo data can be written in (a Chinese team gets 华为 and 李娜, an English one Acme and Lina Li)
LANGUAGES = ("zh-CN", "en")


# --- writers ------------------------------------------------------------------------------------
class Writer:
    """Where generated rows go. ``write`` returns the new ids in order."""

    conn: Connection

    def write(self, t: TableDef, rows: list[dict[str, Any]], meta: list[tuple[dt.datetime, int | None]]) -> list[int]:
        raise NotImplementedError

    def finish(self) -> None:
        """Called once at the end."""


class RecordWriter(Writer):
    """Through RecordService (all validation), then back-dates ``created_at``/``created_by``."""

    def __init__(self, conn: Connection, catalog: Catalog) -> None:
        self.conn = conn
        self.svc = RecordService(catalog, conn, Access.system(), origin="demo")
        self.first_event = conn.execute(select(func.max(db.outbox.c.id))).scalar() or 0

    def write(self, t: TableDef, rows: list[dict[str, Any]], meta: list[tuple[dt.datetime, int | None]]) -> list[int]:
        if not rows:  # e.g. a second run: the reference rows exist already
            return []
        ids: list[int] = []
        for i in range(0, len(rows), MAX_BATCH):
            ids += [r["id"] for r in self.svc.create_many(t, rows[i:i + MAX_BATCH])]
        sa = t.sa
        stmt = update(sa).where(sa.c.id == bindparam("_id")).values(
            created_at=bindparam("_at"), updated_at=bindparam("_at"), created_by=bindparam("_by"),
            updated_by=bindparam("_by"))
        self.conn.execute(stmt, [{"_id": rid, "_at": at, "_by": by} for rid, (at, by) in zip(ids, meta, strict=True)])
        return ids

    def finish(self) -> None:
        # demo rows are history, not news: automations must not react to them (round robin, emails...)
        ob = db.outbox
        self.conn.execute(update(ob).where(ob.c.id > self.first_event, ob.c.status == "pending")
                          .values(status="done", processed_at=db.utcnow()))


class BulkWriter(Writer):
    """Straight into the physical tables: ids assigned up front, one executemany per table and chunk."""

    def __init__(self, conn: Connection, catalog: Catalog) -> None:
        self.conn = conn
        self.cat = catalog
        self.next_id: dict[int, int] = {}
        self.rows = 0

    def _ids(self, t: TableDef, n: int) -> list[int]:
        if t.id not in self.next_id:
            self.next_id[t.id] = int(self.conn.execute(select(func.max(t.sa.c.id))).scalar() or 0) + 1
        start = self.next_id[t.id]
        self.next_id[t.id] = start + n
        return list(range(start, start + n))

    def _numbers(self, t: TableDef, n: int) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        c = db.counters
        for f in t.fields:
            if not f.ftype.uses_counter:
                continue
            top = self.conn.execute(update(c).where(c.c.field_id == f.id).values(value=c.c.value + n)
                                    .returning(c.c.value)).scalar()
            if top is None:
                start = int(f.options.get("start") or 1)
                top = start - 1 + n
                self.conn.execute(insert(c).values(field_id=f.id, value=top))
            out[f.column_name] = list(range(int(top) - n + 1, int(top) + 1))
        return out

    def write(self, t: TableDef, rows: list[dict[str, Any]], meta: list[tuple[dt.datetime, int | None]]) -> list[int]:
        if not rows:
            return []
        ids = self._ids(t, len(rows))
        numbers = self._numbers(t, len(rows))
        junctions: dict[int, list[dict[str, int]]] = {}
        out = []
        stored = {f.key: f for f in t.fields if f.stored}
        many = {f.key: f for f in t.fields if f.ftype.stored_as_links(f)}
        for i, (rid, values, (at, by)) in enumerate(zip(ids, rows, meta, strict=True)):
            row: dict[str, Any] = {"id": rid, "version": 1, "created_at": at, "updated_at": at, "created_by": by,
                                   "updated_by": by, "deleted_at": None}
            for f in stored.values():
                row[f.column_name] = values.get(f.key)
            for col, nums in numbers.items():
                row[col] = nums[i]
            for key, f in many.items():
                rel = relation(f, self.cat)
                junctions.setdefault(f.id, []).extend({rel.this: rid, rel.other: o} for o in values.get(key) or [])
            out.append(row)
        self.conn.execute(insert(t.sa), out)
        for fid, jrows in junctions.items():
            if jrows:
                self.conn.execute(insert(self.cat.junction(fid)), jrows)
        self.rows += len(out)
        return ids

    def finish(self) -> None:
        if self.conn.dialect.name != "postgresql":
            return
        for tid, nxt in self.next_id.items():  # explicit ids: move each table's sequence past them
            name = self.cat.table_by_id(tid).name
            self.conn.execute(text("SELECT setval(pg_get_serial_sequence(:t, 'id'), :v)"),
                              {"t": name, "v": max(nxt - 1, 1)})


# --- users ------------------------------------------------------------------------------------------
def ensure_users(conn: Connection, users: list[DemoUser], teams: dict[str, str]) -> dict[str, int]:
    """Demo users, their teams and role memberships; existing ones (same username or key) are reused.

    Every demo user gets the demo password (``FORMWORK_DEMO_PASSWORD``); a role that does not exist is
    skipped, so the template's roles must be installed first."""
    from formwork.runtime import auth

    out: dict[str, int] = {}
    team_ids: dict[str, int] = {}
    for key, name in teams.items():
        tid = conn.execute(select(db.teams.c.id).where(db.teams.c.key == key)).scalar()
        if tid is None:
            tid = conn.execute(insert(db.teams).values(key=key, name=name).returning(db.teams.c.id)).scalar_one()
        team_ids[key] = int(tid)
    password = demo_password()
    auth.check_password_strength(password)
    hashed: str | None = None  # every demo user has the same password: hash it once (scrypt is slow on purpose)
    for username, name, role, team, manages in users:
        uid = conn.execute(select(db.users.c.id).where(db.users.c.username == username)).scalar()
        if uid is None:
            hashed = hashed or auth.hash_password(password)
            uid = conn.execute(insert(db.users).values(
                username=username, name=name, email=f"{username}@example.com", password_hash=hashed,
                locale="zh-CN" if any("\u4e00" <= ch <= "\u9fff" for ch in name) else "en",
                timezone="Asia/Shanghai", active=True, is_admin=False,
                team_id=team_ids[team] if team else None, failed_logins=0, created_at=db.utcnow(),
            ).returning(db.users.c.id)).scalar_one()
        out[username] = int(uid)
        rid = conn.execute(select(db.roles.c.id).where(db.roles.c.key == role)).scalar()
        if rid is not None and conn.execute(select(db.user_roles).where(
                db.user_roles.c.user_id == uid, db.user_roles.c.role_id == rid)).first() is None:
            conn.execute(insert(db.user_roles).values(user_id=uid, role_id=rid))
        if manages and team:
            conn.execute(update(db.teams).where(db.teams.c.id == team_ids[team]).values(manager_id=uid))
    return out


# --- the run a template's generator drives ---------------------------------------------------------------
@dataclass
class DemoRun:
    """One run of a template's generator: the app to fill, where rows go, seeded randomness, the counts."""

    conn: Connection
    catalog: Catalog
    app: AppDef
    writer: Writer
    rng: random.Random
    now: dt.datetime
    seed: int
    scale: int  # how many of the template's main records (its UNIT) to generate
    unit: str
    chunk: int
    progress: Callable[[str, int], None] | None = None
    language: str = "zh-CN"  # what the demo's names and texts are written in (LANGUAGES)
    counts: dict[str, int] = field(default_factory=dict)
    users: dict[str, int] = field(default_factory=dict)
    _pools: Pools | None = None

    @property
    def pools(self) -> Pools:
        if self._pools is None:
            self._pools = Pools.build(self.seed, min(2000, max(200, self.scale)), self.language)
        return self._pools

    def put(self, table_key: str, rows: list[dict[str, Any]],
            meta: list[tuple[dt.datetime, int | None]]) -> list[int]:
        """Write rows of one of the app's tables (``meta``: each row's created_at and created_by)."""
        ids = self.writer.write(self.app.table(table_key), rows, meta)
        self.counts[table_key] = self.counts.get(table_key, 0) + len(ids)
        return ids

    def chunks(self) -> Iterator[int]:
        """The scale in chunks (one chunk unless bulk-loading), reporting progress after each."""
        done, total = 0, self.scale
        while done < total:
            n = min(self.chunk, total - done)
            yield n
            done += n
            if self.progress is not None:
                self.progress(self.unit, done)

    def ensure_users(self, users: list[DemoUser], teams: dict[str, str]) -> dict[str, int]:
        found = ensure_users(self.conn, users, teams)
        self.users.update(found)
        return found


def load_generator(template_name: str) -> ModuleType | None:
    """The template's ``demo.py`` module, or None when the template has none (or does not exist)."""
    try:
        folder = portable.template_dir(template_name)
    except NotFound:
        return None
    if not (folder / "demo.py").is_file():
        return None
    return importlib.import_module(f"{portable.TEMPLATES_PACKAGE}.{template_name}.demo")


def generate_demo(conn: Connection, catalog: Catalog, app_key: str, template_name: str, *, size: str = "small",
                  scale: int | None = None, seed: int = DEFAULT_SEED, now: dt.datetime | None = None,
                  bulk: bool | None = None, progress: Callable[[str, int], None] | None = None,
                  language: str = "zh-CN") -> dict[str, Any]:
    """Fill ``app_key`` (installed from ``template_name``) with the template's demo data, written in
    ``language`` (one of :data:`LANGUAGES`); counts and timing.

    ``size`` picks a scale from the template's ``SIZES`` unless ``scale`` is given. Bulk loading is used
    from :data:`BULK_FROM` on (or when ``bulk`` says so).
    """
    module = load_generator(template_name)
    if module is None:
        raise BadRequest(f"template '{template_name[:60]}' has no demo data")
    sizes: dict[str, int] = getattr(module, "SIZES", SIZES)
    unit: str = getattr(module, "UNIT", "records")
    if scale is None:
        if size not in sizes:
            raise BadRequest(f"size must be one of: {', '.join(sizes)}")
        scale = sizes[size]
    if not 1 <= scale <= MAX_SCALE:
        raise BadRequest(f"{unit} must be between 1 and {MAX_SCALE}")
    if language not in LANGUAGES:
        raise BadRequest(f"language must be one of: {', '.join(LANGUAGES)}")
    use_bulk = bulk if bulk is not None else scale >= BULK_FROM
    started = time.perf_counter()
    writer: Writer = BulkWriter(conn, catalog) if use_bulk else RecordWriter(conn, catalog)
    run = DemoRun(conn=conn, catalog=catalog, app=catalog.app(app_key), writer=writer, rng=random.Random(seed),
                  now=(now or db.utcnow()).replace(microsecond=0), seed=seed, scale=scale, unit=unit,
                  chunk=CHUNK if use_bulk else scale, progress=progress, language=language)
    module.generate(run)
    writer.finish()
    seconds = time.perf_counter() - started
    rows = sum(run.counts.values())
    return {"mode": "bulk" if use_bulk else "records", "scale": scale, "unit": unit, "seed": seed,
            "tables": run.counts, "rows": rows, "seconds": round(seconds, 3),
            "rows_per_second": round(rows / seconds) if seconds else None, "users": sorted(run.users)}


def install_template(svc: MetadataService, name: str, key: str | None = None, demo_data: bool = False,
                     language: str = "zh-CN") -> AppDef:
    """Install a bundled template (``portable.install_template``), then fill it with its demo data (written in
    ``language``)."""
    app = portable.install_template(svc, name, key)
    if demo_data:
        generate_demo(svc.conn, svc.catalog, app.key, name, language=language)
    return svc.catalog.app(app.key)
