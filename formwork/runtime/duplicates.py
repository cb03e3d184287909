"""Duplicate rules and merging two records.

A table declares ``duplicate_rules``: each rule names one or more fields and how each is compared
(``name``, ``phone``, ``email`` or ``exact``); a record matches another under a rule when every field
of the rule has a value in both and the normalised values are equal. Rules only warn: the API and the
pages refuse a create that matches until the client confirms (``allow_duplicates``), imports report the
matches per row (and may skip them). Automations are not checked: they create what they were told to.

``merge`` folds one record (the loser) into another (the survivor) in the caller's transaction: chosen
field values are copied through RecordService (checks, history, events), every link pointing at the
loser is moved to the survivor (to-one columns and to-many rows, on every table, including records the
caller cannot see: leaving them on a trashed record would hide them from everyone), the loser's own
to-many links and attachments are added to the survivor's, comments move, both records get a history
entry and the loser goes to the trash. Only someone who may update both records may merge them.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Text, and_, cast, delete, func, insert, literal, or_, select, true, update
from sqlalchemy.engine import Connection

from formwork import db
from formwork.errors import BadRequest, Conflict, Forbidden, NotFound, ValidationFailed
from formwork.metadata.catalog import Catalog, FieldDef, TableDef
from formwork.metadata.fieldtypes.link import relation
from formwork.runtime import guards
from formwork.runtime.permissions import Access

MATCHES = ("name", "phone", "email", "exact")
#: most matches listed in an answer
LIST_LIMIT = 20

# company suffixes ignored when names are compared (after case and width folding); longest first
_CJK_SUFFIXES = ("股份有限公司", "有限责任公司", "集团有限公司", "有限公司", "分公司", "公司")
_LATIN_SUFFIXES = {"co", "ltd", "limited", "inc", "incorporated", "llc", "corp", "corporation", "company",
                   "gmbh", "plc", "sa", "ag", "bv", "pte", "pty", "srl", "kk"}
_PUNCT = re.compile(r"[\s\.,;:'\"()（）\[\]【】&＆+\-_/·・,。、]+")
# international calling codes ignored at the start of a phone number written with + or 00
_COUNTRY_CODES = ("852", "853", "886", "86", "1", "7", "20", "27", "30", "31", "32", "33", "34", "39", "41",
                  "43", "44", "45", "46", "47", "48", "49", "52", "55", "60", "61", "62", "63", "64", "65",
                  "66", "81", "82", "84", "90", "91", "971")


def normalise_name(value: Any) -> str | None:
    """Trimmed, case- and width-folded, punctuation and company suffixes (有限公司, Co., Ltd.) ignored."""
    if value is None:
        return None
    text = unicodedata.normalize("NFKC", str(value)).casefold().strip()
    changed = True
    while changed and text:
        changed = False
        for s in _CJK_SUFFIXES:
            if text.endswith(s) and len(text) > len(s):
                text = text[: -len(s)].rstrip()
                changed = True
        words = [w for w in _PUNCT.split(text) if w]
        while len(words) > 1 and words[-1] in _LATIN_SUFFIXES:
            words.pop()
            changed = True
        text = " ".join(words)
    out = _PUNCT.sub("", text)
    return out or None


def normalise_phone(value: Any) -> str | None:
    """Digits only; a country code written with + or 00 (or 86 before a Chinese mobile) is ignored, and
    so is a leading trunk 0."""
    if value is None:
        return None
    raw = unicodedata.normalize("NFKC", str(value)).strip()
    digits = "".join(ch for ch in raw if ch.isdigit())
    international = raw.startswith("+") or digits.startswith("00")
    digits = digits.lstrip("0")
    if international:
        for code in _COUNTRY_CODES:
            if digits.startswith(code) and len(digits) - len(code) >= 6:
                digits = digits[len(code):]
                break
    elif digits.startswith("86") and len(digits) == 13 and digits[2] == "1":
        digits = digits[2:]
    digits = digits.lstrip("0")
    return digits if len(digits) >= 5 else None


def normalise_email(value: Any) -> str | None:
    if value is None:
        return None
    text = unicodedata.normalize("NFKC", str(value)).strip().lower()
    return text or None


def normalise_exact(value: Any) -> str | None:
    if value is None:
        return None
    text = unicodedata.normalize("NFKC", str(value)).strip().casefold()
    return text or None


NORMALISERS = {"name": normalise_name, "phone": normalise_phone, "email": normalise_email, "exact": normalise_exact}


def rules(t: TableDef) -> list[dict[str, Any]]:
    return [r for r in t.doc.get("duplicate_rules") or [] if isinstance(r, dict)]


def _rule_fields(t: TableDef, rule: dict[str, Any]) -> list[tuple[FieldDef, str]]:
    return [(t.fields_by_key[p["field"]], p.get("match", "exact")) for p in rule.get("fields") or []
            if p.get("field") in t.fields_by_key]


def rule_key(t: TableDef, rule: dict[str, Any], values: dict[str, Any]) -> tuple[str, ...] | None:
    """The normalised values of one record under one rule; None when a field of the rule is empty."""
    out = []
    for f, match in _rule_fields(t, rule):
        v = values.get(f.key)
        n = NORMALISERS[match](v) if v not in (None, "", []) else None
        if n is None:
            return None
        out.append(n)
    return tuple(out) if out else None


@dataclass
class Match:
    id: int
    rules: list[str]
    visible: bool
    display: str | None = None


# --- the SQL prefilter ----------------------------------------------------------------------------------
# A record can only match when its normalised values are equal, so each stored value must contain the
# characters of the incoming normalised value. For stored text made of "plain" characters (printable ASCII,
# the CJK unified ideographs and common CJK punctuation), normalising only drops characters and lowercases
# ASCII, so it must literally contain (ASCII case aside) each ASCII letter, digit and ideograph of the
# incoming normalised value. Stored text with any other character (full-width letters, compatibility
# ideographs, accents…) may normalise into those characters, so it is always a candidate. The database
# keeps the rows passing either test (a superset of the matches), and the exact normalised comparison
# runs on those only: the same matches as comparing every row, without reading the whole table.
_CJK_PUNCT = "（）【】《》「」『』，。、；：？！“”‘’·—…\u3000"
_PLAIN_CLASS = " -~\u4e00-\u9fff" + _CJK_PUNCT
_PHONE_CLASS = "0-9 ().+/-"
#: most probe characters per field (each one a LIKE the database tests)
PROBES = 3
#: checking more incoming records than this, an import reads the table once instead
SCAN_AFTER = 2000


def _probe_char(ch: str) -> bool:
    return ("0" <= ch <= "9") or ("a" <= ch <= "z") or ("\u4e00" <= ch <= "\u9fff")


def _probes(normalised: str) -> list[str]:
    """Up to PROBES distinct characters of a normalised value every plain stored match contains, rarest
    (ideographs, then letters, then digits) first."""
    chars = list(dict.fromkeys(c for c in normalised if _probe_char(c)))
    chars.sort(key=lambda c: 0 if c >= "\u4e00" else 1 if c >= "a" else 2)
    return chars[:PROBES]


def _outside(conn: Connection, col: Any, cls: str) -> Any:
    """``col`` holds a character outside the bracket class ``cls`` (SQLite GLOB, PostgreSQL regex)."""
    if conn.dialect.name == "postgresql":
        return col.op("~")(literal(f"[^{cls}]"))
    return col.op("GLOB")(literal(f"*[^{cls}]*"))


def _field_condition(conn: Connection, col: Any, match: str, normalised: str) -> Any:
    col = cast(col, Text)  # numbers and autonumbers are compared as their text, as the normalisers do
    if match == "phone":  # the last digits once the usual separators are gone, or any other character
        stripped: Any = col
        for ch in " -().+/":
            stripped = func.replace(stripped, ch, "")
        return or_(stripped.like(f"%{normalised[-6:]}%"), _outside(conn, col, _PHONE_CLASS))
    probes = _probes(normalised)
    if not probes:
        return true()
    lowered = func.lower(col)
    return or_(and_(*[lowered.like(f"%{c}%") for c in probes]), _outside(conn, col, _PLAIN_CLASS))


def candidates_condition(conn: Connection, t: TableDef, values: list[dict[str, Any]]) -> Any | None:
    """A condition keeping every live record that may duplicate one of ``values`` under any rule (None:
    nothing can match, no record needs reading)."""
    ors = []
    for r in rules(t):
        fields = _rule_fields(t, r)
        if not fields or any(not f.stored for f, _m in fields):
            return and_(t.sa.c.deleted_at.is_(None))  # a rule over a computed value: every record
        for v in values:
            key = rule_key(t, r, v)
            if key is None:
                continue
            ors.append(and_(*[_field_condition(conn, t.sa.c[f.column_name], m, k)
                              for (f, m), k in zip(fields, key, strict=True)]))
    if not ors:
        return None
    return and_(t.sa.c.deleted_at.is_(None), or_(*ors))


@dataclass
class DuplicateIndex:
    """Live records of a table under each rule (normalised values → record ids), looked up in memory.

    ``build(conn, t)`` reads every record once (a large import); ``build(conn, t, values)`` and ``cover``
    read only the records that may match the given incoming values (see the prefilter above)."""

    table: TableDef
    by_rule: dict[str, dict[tuple[str, ...], list[int]]] = field(default_factory=dict)
    seen: set[int] = field(default_factory=set)
    complete: bool = False
    covered: int = 0
    upto: int | None = None  # an import's index: records created after it was built are the import's own

    @classmethod
    def for_import(cls, conn: Connection, t: TableDef) -> DuplicateIndex:
        """An empty index covering the records that exist now; ``cover`` each batch's new rows."""
        idx = cls.build(conn, t, [])
        idx.upto = int(conn.execute(select(func.max(t.sa.c.id))).scalar() or 0)
        return idx

    @classmethod
    def build(cls, conn: Connection, t: TableDef, values: list[dict[str, Any]] | None = None) -> DuplicateIndex:
        idx = cls(t)
        for r in rules(t):
            idx.by_rule[r["key"]] = {}
        if rules(t):
            if values is None:
                idx._read(conn, t.sa.c.deleted_at.is_(None))
                idx.complete = True
            else:
                idx.cover(conn, values)
        return idx

    def cover(self, conn: Connection, values: list[dict[str, Any]]) -> None:
        """Read the records that may duplicate ``values`` (all of them, once, past SCAN_AFTER values)."""
        if self.complete or not rules(self.table):
            return
        self.covered += len(values)
        if self.covered > SCAN_AFTER:
            self._read(conn, self.table.sa.c.deleted_at.is_(None))
            self.complete = True
            return
        for i in range(0, len(values), 100):
            cond = candidates_condition(conn, self.table, values[i:i + 100])
            if cond is not None:
                self._read(conn, cond)

    def _read(self, conn: Connection, cond: Any) -> None:
        t = self.table
        if self.upto is not None:
            cond = and_(cond, t.sa.c.id <= self.upto)
        used = {f.key: f for r in rules(t) for f, _m in _rule_fields(t, r)}
        sa = t.sa
        cols = [sa.c.id, *(sa.c[f.column_name].label(k) for k, f in used.items())]
        for row in conn.execute(select(*cols).where(cond)):
            if row.id not in self.seen:
                self.add(row.id, {k: getattr(row, k) for k in used})

    def add(self, rid: int, values: dict[str, Any]) -> None:
        self.seen.add(rid)
        for r in rules(self.table):
            k = rule_key(self.table, r, values)
            if k is not None:
                self.by_rule.setdefault(r["key"], {}).setdefault(k, []).append(rid)

    def lookup(self, values: dict[str, Any], exclude: int | None = None) -> dict[int, list[str]]:
        """Ids of the records ``values`` duplicates, with the keys of the rules they match under."""
        out: dict[int, list[str]] = {}
        for r in rules(self.table):
            k = rule_key(self.table, r, values)
            if k is None:
                continue
            for rid in self.by_rule.get(r["key"], {}).get(k, []):
                if rid != exclude and r["key"] not in out.setdefault(rid, []):
                    out[rid].append(r["key"])
        return {rid: rs for rid, rs in out.items() if rs}


def matching(conn: Connection, t: TableDef, rule_key_: str, values: dict[str, Any]) -> list[int]:
    """Ids of the live records ``values`` duplicates under the rule ``rule_key_``, oldest first."""
    found = DuplicateIndex.build(conn, t, [values]).lookup(values)
    return sorted(rid for rid, keys in found.items() if rule_key_ in keys)


class DuplicateFound(Conflict):
    """A create that matches existing records under the table's duplicate rules (409, code ``duplicate``)."""

    code = "duplicate"


def describe(conn: Connection, cat: Catalog, access: Access, t: TableDef,
             found: dict[int, list[str]]) -> dict[str, Any]:
    """The answer's ``matches`` (id, display, rules; only records the caller may read) and ``hidden``
    (how many more matched among records the caller may not see)."""
    from formwork.runtime.records.reader import RecordReader

    if not found:
        return {"matches": [], "hidden": 0}
    reader = RecordReader(cat, conn, access)
    sa = t.sa
    ids = sorted(found)
    visible_q = select(sa.c.id, reader.display_value(t, sa, reader.ctx).label("display")).where(
        sa.c.id.in_(ids), *reader.base_conditions(t))
    shown = {r.id: r.display for r in conn.execute(visible_q)}
    matches = [{"id": rid, "display": None if shown[rid] is None else str(shown[rid]), "rules": found[rid]}
               for rid in ids if rid in shown][:LIST_LIMIT]
    return {"matches": matches, "hidden": len([i for i in ids if i not in shown])}


def find(conn: Connection, cat: Catalog, access: Access, t: TableDef, values: dict[str, Any],
         exclude: int | None = None) -> dict[str, Any]:
    """Which existing records ``values`` (field key → value, as sent) duplicates."""
    if not rules(t):
        return {"matches": [], "hidden": 0}
    return describe(conn, cat, access, t, DuplicateIndex.build(conn, t, [values]).lookup(values, exclude))


def refuse_duplicates(conn: Connection, cat: Catalog, access: Access, t: TableDef,
                      items: list[dict[str, Any]]) -> None:
    """Raise DuplicateFound when any of the records about to be created duplicates an existing one or an
    earlier one of the same batch (details: ``matches``/``hidden``, per ``records/<i>`` for a batch)."""
    if not rules(t) or not items:
        return
    idx = DuplicateIndex.build(conn, t, [v for v in items if isinstance(v, dict)])
    details: dict[str, Any] = {}
    for i, values in enumerate(items):
        if not isinstance(values, dict):
            continue
        found = idx.lookup(values)
        batch = [j for j, other in enumerate(items[:i]) if isinstance(other, dict)
                 and any(rule_key(t, r, values) is not None and rule_key(t, r, values) == rule_key(t, r, other)
                         for r in rules(t))]
        if found or batch:
            d = describe(conn, cat, access, t, found)
            if batch:
                d["same_batch"] = batch
            details[str(i)] = d
    if not details:
        return
    if len(items) == 1:
        d = details["0"]
        n = len(d["matches"]) + d["hidden"]
        raise DuplicateFound(f"this record may duplicate {n} existing record{'s' if n != 1 else ''}; "
                             "send allow_duplicates: true to create it anyway", d)
    raise DuplicateFound(f"{len(details)} of the records may duplicate existing ones; "
                         "send allow_duplicates: true to create them anyway",
                         {f"records/{k}": v for k, v in details.items()})


# --- merge ---------------------------------------------------------------------------------------------
def _require_update(conn: Connection, cat: Catalog, access: Access, t: TableDef, rid: int) -> None:
    from formwork.runtime.records.reader import RecordReader

    sa = t.sa
    reader = RecordReader(cat, conn, access)
    if conn.execute(select(sa.c.id).where(sa.c.id == rid, *reader.base_conditions(t))).first() is None:
        raise NotFound(f"no record {rid} in '{t.key}'")
    scope = access.scope(cat, t, sa, "update")
    if scope is not None and conn.execute(select(sa.c.id).where(sa.c.id == rid, scope)).first() is None:
        raise Forbidden(f"you may not update record {rid}: merging needs the right to update both records")


def _links_to(cat: Catalog, t: TableDef) -> Iterable[FieldDef]:
    """Forward (storing) link fields of any table whose target is ``t``."""
    for f in cat.fields_by_id.values():
        if f.ftype.is_link and f.options.get("target") == t.id and f.options.get("side") != "reverse":
            yield f


def merge(conn: Connection, cat: Catalog, access: Access, t: TableDef, survivor: int, loser: int,
          take: Iterable[str] = ()) -> dict[str, Any]:
    """Fold ``loser`` into ``survivor`` (see the module docstring); ``take``: keys of the fields whose
    value comes from the loser. Returns the survivor and what moved."""
    from formwork.runtime.records.writer import RecordService

    if survivor == loser:
        raise BadRequest("a record cannot be merged with itself")
    access.require(cat, t, "update")
    for rid in (survivor, loser):
        _require_update(conn, cat, access, t, rid)
    svc = RecordService(cat, conn, access)
    guards.check_delete(svc, t, [loser])  # the loser goes to the trash: what may not be deleted is not merged away
    take = list(dict.fromkeys(take))
    bad = {k: ["is not a field of this table"] for k in take if k not in t.fields_by_key}
    bad.update({k: ["is computed or read-only"] for k in take
                if k in t.fields_by_key and t.fields_by_key[k].ftype.read_only})
    if bad:
        raise ValidationFailed.from_details({f"take/{k}": v for k, v in bad.items()})
    both = {r["id"]: r for r in svc.reader.by_ids(t, [survivor, loser])}
    keep, gone = both[survivor]["fields"], both[loser]["fields"]
    data: dict[str, Any] = {}
    for k in take:
        f = t.fields_by_key[k]
        if not f.ftype.lists_related(f):
            data[k] = gone.get(k)
    for f in t.fields:  # attachments of both are kept unless one side was chosen
        if f.ftype.kind == "files" and f.key not in take and gone.get(f.key):
            tokens = [x["token"] for x in (keep.get(f.key) or []) + (gone.get(f.key) or [])]
            data[f.key] = list(dict.fromkeys(tokens))
    unique = [t.fields_by_key[k].column_name for k in data if t.fields_by_key[k].unique and t.fields_by_key[k].stored]
    if unique:  # a unique value taken from the loser leaves it first (the loser goes to the trash anyway)
        conn.execute(update(t.sa).where(t.sa.c.id == loser).values({c: None for c in unique}))
    if data:
        svc.update(t, survivor, data)
    now = db.utcnow()
    moved: dict[str, int] = {}
    stamp = {"updated_at": now, "updated_by": access.user_id}
    touched = _Touched(svc)
    for f in _links_to(cat, t):
        src = cat.table_by_id(f.table_id)
        if f.options.get("multiple"):
            rel = relation(f, cat)  # junction: src → dst (the loser)
            j = rel.table
            rows = [r[0] for r in conn.execute(select(j.c.src).where(j.c.dst == loser))]
            if f.table_id == t.id:  # a self-link: the loser's own links come along below
                rows = [r for r in rows if r not in (survivor, loser)]
            if not rows:
                continue
            have = {r[0] for r in conn.execute(select(j.c.src).where(j.c.dst == survivor, j.c.src.in_(rows)))}
            touched.before(src, rows)
            conn.execute(delete(j).where(j.c.dst == loser, j.c.src.in_(rows)))
            new = [r for r in rows if r not in have]
            if new:
                conn.execute(insert(j), [{"src": r, "dst": survivor} for r in new])
            _history(conn, access, src, rows, f.key, loser, survivor, now, many=True)
            moved[f"{src.key}.{f.key}"] = len(rows)
        else:
            col = src.sa.c[f.column_name]
            ids = [r[0] for r in conn.execute(select(src.sa.c.id).where(col == loser))]
            if f.table_id == t.id:
                ids = [i for i in ids if i != loser]
            if not ids:
                continue
            touched.before(src, ids)
            conn.execute(update(src.sa).where(src.sa.c.id.in_(ids)).values(
                {col.name: survivor, "version": src.sa.c.version + 1, **stamp}))
            _history(conn, access, src, ids, f.key, loser, survivor, now)
            moved[f"{src.key}.{f.key}"] = len(ids)
    for f in t.fields:  # the loser's own to-many links are added to the survivor's
        if f.ftype.is_link and f.options.get("multiple") and f.options.get("side") != "reverse":
            j = relation(f, cat).table
            others = {r[0] for r in conn.execute(select(j.c.dst).where(j.c.src == loser))} - {survivor, loser}
            have = {r[0] for r in conn.execute(select(j.c.dst).where(j.c.src == survivor))}
            if others - have:
                touched.before(t, [survivor])
            conn.execute(delete(j).where(j.c.src == loser))
            if others - have:
                conn.execute(insert(j), [{"src": survivor, "dst": d} for d in sorted(others - have)])
    n_comments = conn.execute(update(db.comments).where(
        db.comments.c.table_id == t.id, db.comments.c.record_id == loser).values(record_id=survivor)).rowcount
    touched.raise_updates()
    svc._check_delete_blocks(t, [loser])
    before = svc.reader.by_ids(t, [loser])
    conn.execute(update(t.sa).where(t.sa.c.id == loser).values(
        deleted_at=now, version=t.sa.c.version + 1, updated_by=access.user_id))
    survivor_display = _display(conn, cat, access, t, survivor)
    loser_display = _display(conn, cat, access, t, loser)
    svc._history(t, [
        {"record_id": survivor, "at": now, "action": "merge",
         "changes": {"_merged_from": {"old": None, "new": {"id": loser, "display": loser_display}},
                     **{k: {"old": keep.get(k), "new": v} for k, v in data.items()}}},
        {"record_id": loser, "at": now, "action": "merge",
         "changes": {"_merged_into": {"old": None, "new": {"id": survivor, "display": survivor_display}}}},
    ])
    svc._events(t, [{"record_id": loser, "event": "record_deleted",
                     "payload": {"fields": before[0]["fields"], "merged_into": survivor}}])
    return {"record": svc.reader.get(t, survivor), "merged": loser, "moved": moved, "comments": n_comments}


class _Touched:
    """The records a merge changes besides the survivor's own fields (related records re-pointed at the
    survivor, the survivor gaining the loser's to-many links): their state before, so that afterwards
    each raises the ``record_updated`` event an ordinary update raises (changes and fields as the merging
    user's writer reads them), into the same outbox in the same transaction, and automations see them."""

    def __init__(self, svc: Any) -> None:
        self.svc = svc
        self.tables: dict[int, TableDef] = {}
        self.old: dict[int, dict[int, dict[str, Any]]] = {}

    def before(self, t: TableDef, ids: list[int]) -> None:
        seen = self.old.setdefault(t.id, {})
        self.tables[t.id] = t
        fresh = [i for i in ids if i not in seen]
        for rec in self.svc.reader.by_ids(t, fresh) if fresh else []:
            seen[rec["id"]] = rec["fields"]

    def raise_updates(self) -> None:
        for tid, old in self.old.items():
            t = self.tables[tid]
            events = []
            for rec in self.svc.reader.by_ids(t, sorted(old)):
                was = old[rec["id"]]
                changes = {k: {"old": was.get(k), "new": v} for k, v in rec["fields"].items()
                           if was.get(k) != v and not t.fields_by_key[k].ftype.computed}
                if changes:
                    events.append({"record_id": rec["id"], "event": "record_updated",
                                   "payload": {"changes": changes, "fields": rec["fields"], "merge": True}})
            self.svc._events(t, events)


def _display(conn: Connection, cat: Catalog, access: Access, t: TableDef, rid: int) -> str | None:
    from formwork.runtime.records.reader import RecordReader

    reader = RecordReader(cat, conn, access)
    v = conn.execute(select(reader.display_value(t, t.sa, reader.ctx)).where(t.sa.c.id == rid)).scalar()
    return None if v is None else str(v)


def _history(conn: Connection, access: Access, src: TableDef, ids: list[int], key: str, old: int, new: int,
             now: Any, many: bool = False) -> None:
    """A moved related record's history: its link changed from the loser to the survivor (the display is
    filled in when the history is read, for readers who may see the linked record)."""
    def val(i: int) -> Any:
        return [{"id": i, "display": None}] if many else {"id": i, "display": None}

    conn.execute(insert(db.history), [
        {"table_id": src.id, "record_id": rid, "at": now, "user_id": access.user_id, "action": "update",
         "changes": {key: {"old": val(old), "new": val(new)}}} for rid in ids])
