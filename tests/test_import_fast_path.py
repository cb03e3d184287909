"""The import's set-based path writes what the row-by-statement path writes.

Batches of ``writer.COPY_FROM`` rows or more go in with one COPY (PostgreSQL) or the driver's executemany
(SQLite), their history and outbox rows too, and a new record's JSON is built from the values written with
only computed values, link displays and user names read back. Setting ``COPY_FROM`` out of reach gives the
statement path (multi-row INSERT … RETURNING, every record read back). The same file imported through
both, into two tables defined alike, must leave the same history entries and outbox events (ids and
timestamps aside), for an administrator and for a user whose role hides a field; and bad rows in a large
batch are still reported with their row numbers while the good ones go in.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from formwork import db
from formwork.runtime.records import RecordReader, writer
from tests.helpers import Api
from tests.test_transfer import CHOICES_STAGE, _user_api, csv_bytes, deal_fields, upload

ROWS = 130  # more than COPY_FROM, in one batch


def _extra_fields() -> list[dict[str, Any]]:
    return [
        {"key": "seen", "label": "Seen", "type": "datetime"},
        {"key": "mail", "label": "Mail", "type": "email"},
        {"key": "region", "label": "Region", "type": "text", "default": "north"},
        {"key": "phase", "label": "Phase", "type": "single_select", "options": {"choices": CHOICES_STAGE},
         "default": "lead"},
        {"key": "city", "label": "City", "type": "lookup", "options": {"link": "customer", "field": "city"}},
        {"key": "partner_size", "label": "Partner size", "type": "rollup",
         "options": {"link": "partners", "field": "size", "function": "sum"}},
        {"key": "twice", "label": "Twice", "type": "formula", "options": {"formula": "{qty} * 2"}},
    ]


@pytest.fixture
def tables(admin: Api) -> Api:
    admin.ok("POST", "/meta/apps", {"key": "crm", "label": "CRM"})
    admin.ok("POST", "/meta/apps/crm/tables", {"key": "customers", "label": "Customers", "fields": [
        {"key": "name", "label": "Name", "type": "text", "required": True, "unique": True},
        {"key": "city", "label": "City", "type": "text"},
        {"key": "size", "label": "Size", "type": "number"}]})
    admin.ok("POST", "/data/crm/customers", {"records": [
        {"fields": {"name": "Acme", "city": "Shanghai", "size": 10}},
        {"fields": {"name": "北京科技", "city": "北京", "size": 250}},
        {"fields": {"name": "Globex", "size": 3}}]})
    for key, suffix in (("slow", "_s"), ("fast", "_f")):
        admin.ok("POST", "/meta/apps/crm/tables", {"key": key, "label": key, "fields": deal_fields(suffix)})
        for f in _extra_fields():
            admin.ok("POST", f"/meta/apps/crm/tables/{key}/fields", f)
    return admin


def _file(owner: str, bad: bool = False) -> bytes:
    header = ["Title", "Code", "Amount", "Quantity", "Stage", "Tags", "Close date", "Done", "Customer",
              "Partners", "Owner", "Note", "Seen", "Mail", "Region", "Phase"]
    rows: list[list[Any]] = [header]
    amounts = ["1,200.50", "¥300", "", "0", "42"]
    stages = ["Won", "线索", "lost", ""]
    tags = ["VIP, 新", "", "old", "重要"]
    dates = ["2025-01-31", "2025/2/3", "2025年3月4日", ""]
    for i in range(ROWS):
        rows.append([f"Deal {i}", f"C{i:03d}", amounts[i % 5], str(i % 7), stages[i % 4], tags[i % 4],
                     dates[i % 4], ["是", "no", "", "TRUE"][i % 4], ["Acme", "北京科技", "", "Globex"][i % 4],
                     ["Acme, Globex", "", "北京科技"][i % 3], owner if i % 2 else "", "备注" if i % 3 else "",
                     "2026-10-01T10:15:00Z" if i % 2 else "", f"p{i}@example.com" if i % 5 else "",
                     "" if i % 4 else "south", "" if i % 3 else "Won"])
    if bad:
        rows[8][3] = "many"  # row 8 of the file: not a number
        rows[21][0] = ""  # a required title left empty
        rows[40][8] = "Nobody Inc"  # row 40: no such customer
    return csv_bytes(rows)


def _written(api: Api, table: str) -> tuple[list[Any], list[Any]]:
    """History entries and outbox events of a table in order, records numbered by first appearance."""
    app = api.client.application
    plat = app.extensions["formwork"]
    tid = plat.catalogs.get().table("crm", table).id
    with plat.engine.connect() as conn:
        hist = conn.execute(select(db.history).where(db.history.c.table_id == tid).order_by(db.history.c.id)).all()
        out = conn.execute(select(db.outbox).where(db.outbox.c.table_id == tid).order_by(db.outbox.c.id)).all()
    rank: dict[int, int] = {}
    for r in [*hist, *out]:
        rank.setdefault(r.record_id, len(rank))
    return ([(rank[h.record_id], h.user_id, h.action, h.changes) for h in hist],
            [(rank[o.record_id], o.app_id, o.event, o.user_id, o.payload, o.depth, o.origin, o.status, o.attempts)
             for o in out])


def _import_both(api: Api, monkeypatch: pytest.MonkeyPatch, data: bytes, **form: Any) -> tuple[Any, Any]:
    with monkeypatch.context() as m:
        m.setattr(writer, "COPY_FROM", 10**9)  # the statement path
        status, slow = upload(api, "/data/crm/slow/import", data, "deals.csv", **form)
        assert status == 200, slow
    bulk_tables: list[str] = []
    read_backs: list[int] = []
    insert_rows, by_ids = writer.bulk.insert_rows, RecordReader.by_ids

    def spy_insert(conn: Any, table: Any, *a: Any, **k: Any) -> None:
        bulk_tables.append(table.name)
        insert_rows(conn, table, *a, **k)

    def spy_by_ids(self: RecordReader, t: Any, ids: list[int]) -> Any:
        read_backs.append(len(ids))
        return by_ids(self, t, ids)

    with monkeypatch.context() as m:
        m.setattr(writer.bulk, "insert_rows", spy_insert)
        m.setattr(RecordReader, "by_ids", spy_by_ids)
        status, fast = upload(api, "/data/crm/fast/import", data, "deals.csv", **form)
    assert status == 200, fast
    # the set-based path did run: history and outbox rows in bulk (and the records, on SQLite)
    assert {"fw_history", "fw_outbox"} <= set(bulk_tables), bulk_tables
    fast["_read_backs"] = read_backs
    slow["_read_backs"] = read_backs
    return slow, fast


def test_fast_path_writes_the_history_and_events_of_the_statement_path(tables: Api,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    slow, fast = _import_both(tables, monkeypatch, _file("admin"))
    assert slow == fast and fast["inserted"] == ROWS and not fast["errors"]
    assert fast["_read_backs"] == []  # only the computed values were read, not the records
    hist_s, out_s = _written(tables, "slow")
    hist_f, out_f = _written(tables, "fast")
    assert len(hist_f) == len(out_f) == ROWS
    assert hist_f == hist_s
    assert out_f == out_s
    # what the entries hold: values as read (links with displays, users with names, computed values)
    first = out_f[1][4]["fields"]
    assert first["customer"] == {"id": 2, "display": "北京科技"} and first["city"] == "北京"
    assert first["num"] == "D-0002" and first["twice"] == 2 and first["region"] == "north"
    assert first["owner"]["name"] == "Admin" and first["partners"] == []
    assert out_f[0][4]["fields"]["partner_size"] == 13 and out_f[0][4]["fields"]["phase"] == "won"
    assert hist_f[3][3]["qty"] == {"old": None, "new": 3} and "qty" not in hist_f[0][3]  # 0 is no change


def test_fast_path_for_a_user_with_a_hidden_field_and_bad_rows(tables: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    perms = {"read": "all", "create": True, "update": "all", "import": True, "fields": {"note": "hidden"}}
    user = _user_api(tables, "clerk", {"crm.slow": perms, "crm.fast": perms, "crm.customers": {"read": "all"}})
    slow, fast = _import_both(user, monkeypatch, _file("clerk", bad=True), on_error="skip")
    assert slow == fast and fast["_read_backs"] == [ROWS - 3]  # a hidden field: read back as the user sees them
    assert [(e["row"], e["field"]) for e in fast["errors"]] == [(9, "qty"), (22, "title"), (41, "customer")]
    assert fast["inserted"] == ROWS - 3 and fast["committed"]
    hist_s, out_s = _written(tables, "slow")
    hist_f, out_f = _written(tables, "fast")
    assert len(hist_f) == len(out_f) == ROWS - 3
    assert hist_f == hist_s and out_f == out_s
    assert all("note" not in o[4]["fields"] for o in out_f)  # as the writer reads its records
    assert {h[1] for h in hist_f} == {o[3] for o in out_f} != {1}
    # a unique value already taken: the batch is checked row by row, the clash reported at its row
    rows = [["Title", "Code"], *[[f"More {i}", f"M{i:03d}"] for i in range(60)]]
    rows[30][1] = "C005"
    status, report = upload(user, "/data/crm/fast/import", csv_bytes(rows), "more.csv", on_error="skip")
    assert status == 200 and report["inserted"] == 59, report
    assert [(e["row"], e["field"]) for e in report["errors"]] == [(31, "code")]
    assert len(_written(tables, "fast")[0]) == ROWS - 3 + 59
