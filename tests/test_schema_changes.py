"""Schema changes on big tables: a new text field's search index is built after the commit, in the
background (and made up by the worker when that never happened); an exact type change on PostgreSQL
rewrites the column once, in place."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from formwork.automation.worker import Worker
from formwork.metadata.schema_editor import ensure_search_indexes, search_index_name, wait_for_search_indexes
from tests.helpers import Api


@pytest.fixture
def notes(admin: Api) -> Api:
    admin.ok("POST", "/meta/apps", {"key": "crm", "label": "CRM"})
    admin.ok("POST", "/meta/apps/crm/tables", {"key": "notes", "label": "Notes", "fields": [
        {"key": "title", "label": "Title", "type": "text"},
        {"key": "qty", "label": "Qty", "type": "number", "options": {"precision": 2}}]})
    admin.ok("POST", "/data/crm/notes", {"records": [
        {"fields": {"title": f"note {i}", "qty": i + 0.5 if i % 3 else None}} for i in range(40)]})
    return admin


def _index(app: Any, field_key: str) -> tuple[str, bool | None]:
    cat = app.extensions["formwork"].catalogs.get()
    t = cat.table("crm", "notes")
    name = search_index_name(t.name, t.fields_by_key[field_key].column_name)
    with app.extensions["formwork"].engine.connect() as conn:
        row = conn.execute(text("SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                                "WHERE c.relname = :n"), {"n": name}).first()
    return name, None if row is None else bool(row[0])


def test_a_new_text_fields_search_index_comes_after_the_commit(app: Any, notes: Api, backend: str) -> None:
    if backend != "postgresql":
        pytest.skip("search indexes (pg_trgm) exist on PostgreSQL only")
    notes.ok("POST", "/meta/apps/crm/tables/notes/fields", {"key": "memo", "label": "Memo", "type": "text"})
    wait_for_search_indexes()
    assert _index(app, "memo")[1] is True
    notes.ok("PATCH", "/data/crm/notes/1", {"fields": {"memo": "needle in a haystack"}})
    found = notes.ok("GET", "/data/crm/notes?search=needle")["records"]
    assert [r["id"] for r in found] == [1]


def test_the_worker_makes_up_a_search_index_that_was_never_built(app: Any, notes: Api, backend: str) -> None:
    if backend != "postgresql":
        pytest.skip("search indexes (pg_trgm) exist on PostgreSQL only")
    name, valid = _index(app, "title")
    assert valid is True
    with app.extensions["formwork"].engine.begin() as conn:
        conn.exec_driver_sql(f'DROP INDEX "{name}"')  # as if the process had stopped before building it
    assert _index(app, "title")[1] is None
    Worker(app, worker_id="repair")._safe_tick()
    assert _index(app, "title")[1] is True
    assert ensure_search_indexes(app.extensions["formwork"].engine, app.extensions["formwork"].catalogs.get()) == 0


def test_an_exact_type_change_converts_every_value_in_place(app: Any, notes: Api, backend: str) -> None:
    """number → text: every value converts exactly (one ALTER … USING on PostgreSQL), empty stays empty,
    the field keeps working under its new column, and its search index follows."""
    before = {r["id"]: r["fields"].get("qty") for r in notes.records("crm", "notes", limit=100)}
    res = notes.ok("PATCH", "/meta/apps/crm/tables/notes/fields/qty", {"type": "text"})["conversion"]
    assert res["emptied"] == 0 and res["converted"] == sum(v is not None for v in before.values())
    after = {r["id"]: r["fields"].get("qty") for r in notes.records("crm", "notes", limit=100)}
    assert after == {k: None if v is None else str(v) for k, v in before.items()}
    rec = notes.ok("POST", "/data/crm/notes", {"fields": {"title": "new", "qty": "a few"}})
    assert rec["fields"]["qty"] == "a few"
    if backend == "postgresql":
        wait_for_search_indexes()
        assert _index(app, "qty")[1] is True
        with app.extensions["formwork"].engine.connect() as conn:
            cols = {r[0] for r in conn.execute(text(
                "SELECT column_name FROM information_schema.columns WHERE table_name = :t"),
                {"t": app.extensions["formwork"].catalogs.get().table("crm", "notes").name})}
        current = app.extensions["formwork"].catalogs.get().table("crm", "notes").fields_by_key["qty"].column_name
        assert current in cols and len([c for c in cols if c.startswith("f_")]) == 2


def test_fields_added_back_to_back_never_wait_on_each_others_index(app: Any, notes: Api, backend: str) -> None:
    """Each add starts an index build after its commit; the next add changes the same table's columns at
    once. (A concurrent build held its table lock while waiting for that transaction: a deadlock that
    could fail the user's change.) Every add succeeds and every index ends up built."""
    if backend != "postgresql":
        pytest.skip("search indexes (pg_trgm) exist on PostgreSQL only")
    for i in range(6):
        notes.ok("POST", "/meta/apps/crm/tables/notes/fields", {"key": f"memo{i}", "label": f"Memo {i}",
                                                                "type": "text"})
        notes.ok("PATCH", "/data/crm/notes/1", {"fields": {f"memo{i}": "x"}})
    wait_for_search_indexes()
    assert all(_index(app, f"memo{i}")[1] is True for i in range(6))


def test_a_field_change_leaves_its_catalog_to_the_next_request(app: Any, notes: Api) -> None:
    """The catalog the change loaded after its last write is the process's once the change commits: the
    next request finds the new field without loading the catalog again; a failed change leaves none."""
    cache = app.extensions["formwork"].catalogs
    notes.ok("POST", "/meta/apps/crm/tables/notes/fields", {"key": "memo", "label": "Memo", "type": "text"})
    held = cache._catalog
    assert held is not None and "memo" in held.table("crm", "notes").fields_by_key
    with app.extensions["formwork"].engine.connect() as conn:
        assert cache.get(conn) is held
    status, _ = notes.call("POST", "/meta/apps/crm/tables/notes/fields", {"key": "memo", "label": "Again",
                                                                          "type": "text"})
    assert status == 409 and cache._catalog is held
    notes.ok("PATCH", "/meta/apps/crm/tables/notes/fields/memo", {"label": "Memo 2"})
    assert cache._catalog is not held and cache._catalog.table("crm", "notes").field("memo").label == "Memo 2"
