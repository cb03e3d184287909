"""Definitions survive: trash and restore with data (fields, links, tables, apps), and whole apps
exported to one JSON document and imported again (same database and a fresh one)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text

from tests.conftest import reset_database
from tests.helpers import Api, db_snapshot


def build_crm(admin: Api) -> dict[str, int]:
    """customers ← deals (to-one, reverse 'deals') and deals → tags (to-many), with data in each."""
    admin.ok("POST", "/meta/apps", {"key": "crm", "label": {"en": "CRM", "zh-CN": "客户管理"},
                                    "description": "sales"})
    admin.ok("POST", "/meta/apps/crm/tables", {"key": "customers", "label": {"en": "Customers", "zh-CN": "客户"},
                                               "fields": [
        {"key": "name", "label": "Name", "type": "text", "required": True, "unique": True},
        {"key": "level", "label": "Level", "type": "single_select",
         "options": {"choices": [{"value": "a", "label": {"en": "A", "zh-CN": "甲"}, "color": "red"},
                                 {"value": "b"}]}},
        {"key": "code", "label": "Code", "type": "autonumber", "options": {"prefix": "C-", "digits": 3}}]})
    admin.ok("POST", "/meta/apps/crm/tables", {"key": "tags", "label": "Tags", "fields": [
        {"key": "name", "label": "Name", "type": "text"}]})
    admin.ok("POST", "/meta/apps/crm/tables", {
        "key": "deals", "label": "Deals", "display_field": "title",
        "validations": [{"key": "positive", "condition": {"field": "amount", "op": "gte", "value": 0},
                         "message": {"en": "Amount must be positive", "zh-CN": "金额不能为负"}}],
        "fields": [
            {"key": "amount", "label": "Amount", "type": "currency", "options": {"currency": "CNY", "min": 0}},
            {"key": "title", "label": "Title", "type": "text", "options": {"max_length": 100}},
            {"key": "customer", "label": "Customer", "type": "link",
             "options": {"table": "customers", "reverse_key": "deals",
                         "reverse_label": {"en": "Deals", "zh-CN": "商机"}}},
            {"key": "tags", "label": "Tags", "type": "link", "options": {"table": "tags", "multiple": True}},
            {"key": "customer_level", "label": "Customer level", "type": "lookup",
             "options": {"link": "customer", "field": "level"}},
            {"key": "tax", "label": "Tax", "type": "formula", "options": {"formula": "{amount} * 0.13"}}],
        "views": [{"key": "big", "label": "Big deals", "type": "grid", "fields": ["title", "amount"],
                   "sort": ["-amount"], "filter": {"field": "amount", "op": "gte", "value": 1000}}]})
    admin.ok("POST", "/meta/apps/crm/tables/customers/fields", {
        "key": "total", "label": "Total", "type": "rollup",
        "options": {"link": "deals", "field": "amount", "function": "sum"}})
    acme = admin.ok("POST", "/data/crm/customers", {"fields": {"name": "Acme", "level": "a"}})["id"]
    hot = admin.ok("POST", "/data/crm/tags", {"fields": {"name": "hot"}})["id"]
    deal = admin.ok("POST", "/data/crm/deals", {"fields": {"title": "Big one", "amount": 5000, "customer": acme,
                                                           "tags": [hot]}})["id"]
    return {"acme": acme, "hot": hot, "deal": deal}


def trash_entry(admin: Api, kind: str, key: str) -> dict[str, Any]:
    entries = [e for e in admin.ok("GET", "/meta/trash")["entries"] if e["kind"] == kind and e["key"] == key]
    assert len(entries) == 1, entries
    return entries[0]  # type: ignore[no-any-return]


# --- trash and restore --------------------------------------------------------------------------------
def test_field_trash_and_restore_with_data(admin: Api) -> None:
    ids = build_crm(admin)
    admin.ok("DELETE", "/meta/apps/crm/tables/deals/fields/title")
    status, _ = admin.get(f"/data/crm/deals/{ids['deal']}?fields=title")
    assert status in (400, 422)
    assert "title" not in admin.ok("GET", f"/data/crm/deals/{ids['deal']}")["fields"]
    entry = trash_entry(admin, "field", "title")
    assert entry["label"] == "Title" and entry["deleted_at"].endswith("Z")
    admin.ok("POST", f"/meta/trash/{entry['id']}/restore")
    assert admin.ok("GET", f"/data/crm/deals/{ids['deal']}")["fields"]["title"] == "Big one"
    assert not [e for e in admin.ok("GET", "/meta/trash")["entries"] if e["key"] == "title"]
    status, err = admin.post(f"/meta/trash/{entry['id']}/restore")
    assert status == 404


def test_link_and_reverse_go_to_trash_together(admin: Api) -> None:
    ids = build_crm(admin)
    status, err = admin.delete("/meta/apps/crm/tables/deals/fields/customer")
    assert status == 409 and "customer_level" in err["error"]["message"]  # a lookup depends on it
    admin.ok("DELETE", "/meta/apps/crm/tables/deals/fields/customer_level")
    admin.ok("DELETE", "/meta/apps/crm/tables/customers/fields/total")
    admin.ok("DELETE", "/meta/apps/crm/tables/deals/fields/customer")
    assert "deals" not in admin.ok("GET", f"/data/crm/customers/{ids['acme']}")["fields"]
    assert not [e for e in admin.ok("GET", "/meta/trash")["entries"] if e["key"] == "deals"]  # not listed alone
    admin.ok("POST", f"/meta/trash/{trash_entry(admin, 'field', 'customer')['id']}/restore")
    assert admin.ok("GET", f"/data/crm/deals/{ids['deal']}")["fields"]["customer"] == {"id": ids["acme"],
                                                                                    "display": "Acme"}
    assert admin.ok("GET", f"/data/crm/customers/{ids['acme']}")["fields"]["deals"] == [
        {"id": ids["deal"], "display": "Big one"}]
    # the to-many link and its junction rows come back too
    admin.ok("DELETE", "/meta/apps/crm/tables/deals/fields/tags")
    assert "deals" not in admin.ok("GET", f"/data/crm/tags/{ids['hot']}")["fields"]
    admin.ok("POST", f"/meta/trash/{trash_entry(admin, 'field', 'tags')['id']}/restore")
    assert admin.ok("GET", f"/data/crm/tags/{ids['hot']}")["fields"]["deals"] == [
        {"id": ids["deal"], "display": "Big one"}]


def test_table_trash_and_restore_with_links_into_it(admin: Api) -> None:
    ids = build_crm(admin)
    status, err = admin.delete("/meta/apps/crm/tables/customers")
    assert status == 409 and "customer_level" in err["error"]["message"]
    admin.ok("DELETE", "/meta/apps/crm/tables/deals/fields/customer_level")
    admin.ok("DELETE", "/meta/apps/crm/tables/customers")
    deal = admin.ok("GET", f"/data/crm/deals/{ids['deal']}")["fields"]
    assert "customer" not in deal and deal["title"] == "Big one"
    assert admin.get("/data/crm/customers")[0] == 404
    entry = trash_entry(admin, "table", "customers")
    admin.ok("POST", f"/meta/trash/{entry['id']}/restore")
    cust = admin.ok("GET", f"/data/crm/customers/{ids['acme']}")["fields"]
    assert cust["name"] == "Acme" and cust["total"] == 5000 and cust["code"] == "C-001"
    assert admin.ok("GET", f"/data/crm/deals/{ids['deal']}")["fields"]["customer"]["id"] == ids["acme"]
    # deleting the table that holds links removes their reverses elsewhere, and restores them
    admin.ok("DELETE", "/meta/apps/crm/tables/customers/fields/total")
    admin.ok("DELETE", "/meta/apps/crm/tables/deals")
    assert "deals" not in admin.ok("GET", f"/data/crm/customers/{ids['acme']}")["fields"]
    assert "deals" not in admin.ok("GET", f"/data/crm/tags/{ids['hot']}")["fields"]
    admin.ok("POST", f"/meta/trash/{trash_entry(admin, 'table', 'deals')['id']}/restore")
    assert admin.ok("GET", f"/data/crm/tags/{ids['hot']}")["fields"]["deals"][0]["id"] == ids["deal"]
    assert admin.ok("GET", f"/data/crm/deals/{ids['deal']}")["fields"]["tax"] == 650


def test_app_trash_and_restore(admin: Api) -> None:
    ids = build_crm(admin)
    admin.ok("DELETE", "/meta/apps/crm")
    assert admin.get("/meta/apps/crm")[0] == 404
    assert admin.get("/data/crm/deals")[0] == 404
    admin.ok("POST", f"/meta/trash/{trash_entry(admin, 'app', 'crm')['id']}/restore")
    deal = admin.ok("GET", f"/data/crm/deals/{ids['deal']}")["fields"]
    assert deal["title"] == "Big one" and deal["customer"]["display"] == "Acme"


def test_restore_conflicts_are_clear(admin: Api) -> None:
    build_crm(admin)
    app = admin.client.application
    admin.ok("DELETE", "/meta/apps/crm/tables/deals/fields/title")
    admin.ok("POST", "/meta/apps/crm/tables/deals/fields", {"key": "title", "label": "New title", "type": "text"})
    entry = trash_entry(admin, "field", "title")
    before = db_snapshot(app)
    status, err = admin.post(f"/meta/trash/{entry['id']}/restore")
    assert status == 409 and "title" in err["error"]["message"]
    assert db_snapshot(app) == before
    # the reverse of a trashed link: its key was taken on the target meanwhile
    admin.ok("DELETE", "/meta/apps/crm/tables/deals/fields/tags")
    admin.ok("POST", "/meta/apps/crm/tables/tags/fields", {"key": "deals", "label": "Deals", "type": "text"})
    before = db_snapshot(app)
    status, err = admin.post(f"/meta/trash/{trash_entry(admin, 'field', 'tags')['id']}/restore")
    assert status == 409 and "deals" in err["error"]["message"]
    assert db_snapshot(app) == before
    admin.ok("DELETE", "/meta/apps/crm/tables/tags/fields/deals")
    admin.ok("POST", f"/meta/trash/{trash_entry(admin, 'field', 'tags')['id']}/restore")
    # tables and apps
    admin.ok("DELETE", "/meta/apps/crm/tables/tags")
    admin.ok("POST", "/meta/apps/crm/tables", {"key": "tags", "label": "Other tags"})
    status, err = admin.post(f"/meta/trash/{trash_entry(admin, 'table', 'tags')['id']}/restore")
    assert status == 409 and "tags" in err["error"]["message"]
    admin.ok("DELETE", "/meta/apps/crm")
    admin.ok("POST", "/meta/apps", {"key": "crm", "label": "Another CRM"})
    status, err = admin.post(f"/meta/trash/{trash_entry(admin, 'app', 'crm')['id']}/restore")
    assert status == 409 and "crm" in err["error"]["message"]
    assert admin.post("/meta/trash/field-999999/restore")[0] == 404
    assert admin.post("/meta/trash/nonsense/restore")[0] == 404


def test_restoring_a_link_whose_target_is_trashed(admin: Api) -> None:
    build_crm(admin)
    admin.ok("DELETE", "/meta/apps/crm/tables/deals/fields/tags")
    admin.ok("DELETE", "/meta/apps/crm/tables/tags")
    status, err = admin.post(f"/meta/trash/{trash_entry(admin, 'field', 'tags')['id']}/restore")
    assert status == 409 and "tags" in err["error"]["message"]
    admin.ok("POST", f"/meta/trash/{trash_entry(admin, 'table', 'tags')['id']}/restore")
    admin.ok("POST", f"/meta/trash/{trash_entry(admin, 'field', 'tags')['id']}/restore")
    assert admin.records("crm", "deals")[0]["fields"]["tags"][0]["display"] == "hot"


# --- export / import ------------------------------------------------------------------------------------
def without_app_key(doc: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(doc))
    out["app"].pop("key")
    return out  # type: ignore[no-any-return]


def test_export_import_round_trip(admin: Api) -> None:
    build_crm(admin)
    admin.ok("PATCH", "/meta/apps/crm/tables/deals/fields/tax", {"position": 0})
    admin.ok("POST", "/meta/apps/crm/dashboards", {"key": "sales", "label": "Sales", "widgets": [
        {"key": "by_level", "type": "bar", "label": "By level", "table": "customers", "group_by": ["level"],
         "metrics": ["count", "sum:total"]}]})
    doc = admin.ok("GET", "/meta/apps/crm/export")
    assert doc["format"] == "formwork.app" and doc["app"]["key"] == "crm"
    assert [f["key"] for f in doc["tables"][2]["fields"]][0] == "tax"
    copy = admin.ok("POST", "/meta/apps/import?key=copy", doc)
    assert copy["key"] == "copy"
    again = admin.ok("GET", "/meta/apps/copy/export")
    assert again["app"]["key"] == "copy"
    assert without_app_key(again) == without_app_key(doc)
    # the copy is a working app of its own
    cid = admin.ok("POST", "/data/copy/customers", {"fields": {"name": "Acme"}})["id"]
    d = admin.ok("POST", "/data/copy/deals", {"fields": {"title": "x", "amount": 100, "customer": cid}})
    assert d["fields"]["tax"] == 13
    assert admin.ok("GET", f"/data/copy/customers/{cid}")["fields"]["total"] == 100
    assert len(admin.records("crm", "deals")) == 1
    status, err = admin.post("/meta/apps/import?key=copy", doc)
    assert status == 409


def test_import_rejects_bad_documents_and_changes_nothing(admin: Api) -> None:
    build_crm(admin)
    doc = admin.ok("GET", "/meta/apps/crm/export")
    app = admin.client.application
    before = db_snapshot(app)
    broken = json.loads(json.dumps(doc))
    broken["tables"][2]["fields"][5]["options"]["formula"] = "{amount} *"
    for bad, status in ((broken, 422), ({"format": "other"}, 400), ({**doc, "format_version": 99}, 400),
                        ([], 400)):
        got, err = admin.post("/meta/apps/import?key=other", bad)
        assert got == status, (got, err)
        assert db_snapshot(app) == before
    got, err = admin.post("/meta/apps/import?key=other", broken)
    assert "/tables/2/fields/5/options/formula" in err["error"]["details"]
    got, err = admin.post("/meta/apps/import?key=Bad-Key", doc)
    assert got == 422 and "/key" in json.dumps(err)
    assert db_snapshot(app) == before


@pytest.fixture
def fresh_database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A second, empty database of the same backend, for the CLI import."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    base = os.environ["FORMWORK_TEST_DATABASE_URL"]
    name = f"fw_fresh_{uuid.uuid4().hex[:10]}"
    eng = create_engine(base, isolation_level="AUTOCOMMIT")
    with eng.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{base.rsplit('/', 1)[0]}/{name}"
    finally:
        with eng.connect() as c:
            c.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name})
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        eng.dispose()


def test_cli_export_import_into_a_fresh_database(admin: Api, app: Any, fresh_database_url: str,
                                                 tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from formwork import cli, create_app
    from formwork.cli import main

    made: list[Any] = []  # the real app each command builds, kept so its engine is closed (a CLI just exits)
    real_app = cli._app
    monkeypatch.setattr(cli, "_app", lambda: made.append(real_app()) or made[-1])
    build_crm(admin)
    doc = admin.ok("GET", "/meta/apps/crm/export")
    env = {"FORMWORK_SECRET_KEY": "test-secret", "FORMWORK_INSTANCE": str(tmp_path / "instance")}
    runner = CliRunner()
    out = tmp_path / "crm.json"
    res = runner.invoke(main, ["export", "crm", "-o", str(out)],
                        env={**env, "FORMWORK_DATABASE_URL": app.config["DATABASE_URL"]})
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text("utf-8")) == doc
    fresh = create_app({"DATABASE_URL": fresh_database_url, "SECRET_KEY": "test-secret", "TESTING": True,
                        "FILES_DIR": str(tmp_path / "files")})
    try:
        reset_database(fresh.extensions["formwork"].engine)
        res = runner.invoke(main, ["import", str(out)], env={**env, "FORMWORK_DATABASE_URL": fresh_database_url})
        assert res.exit_code == 0, res.output
        assert "imported app 'crm'" in res.output
        res = runner.invoke(main, ["export", "crm"], env={**env, "FORMWORK_DATABASE_URL": fresh_database_url})
        assert res.exit_code == 0, res.output
        assert json.loads(res.output) == doc
    finally:
        fresh.extensions["formwork"].engine.dispose()
        for a in made:
            a.extensions["formwork"].engine.dispose()


def test_restoring_tables_in_any_order(admin: Api) -> None:
    """Both ends of a link trashed one after the other, restored in the same order: no dangling link shows."""
    ids = build_crm(admin)
    admin.ok("DELETE", "/meta/apps/crm/tables/deals/fields/customer_level")
    admin.ok("DELETE", "/meta/apps/crm/tables/customers/fields/total")
    admin.ok("DELETE", "/meta/apps/crm/tables/customers")
    admin.ok("DELETE", "/meta/apps/crm/tables/deals")
    admin.ok("POST", f"/meta/trash/{trash_entry(admin, 'table', 'customers')['id']}/restore")
    fields = [f["key"] for f in admin.ok("GET", "/meta/apps/crm/tables/customers")["fields"]]
    assert fields == ["name", "level", "code"]
    assert admin.ok("GET", f"/data/crm/customers/{ids['acme']}")["fields"]["name"] == "Acme"
    admin.ok("GET", "/meta/apps/crm")
    admin.ok("POST", f"/meta/trash/{trash_entry(admin, 'table', 'deals')['id']}/restore")
    assert admin.ok("GET", f"/data/crm/customers/{ids['acme']}")["fields"]["deals"][0]["id"] == ids["deal"]
    assert admin.ok("GET", f"/data/crm/deals/{ids['deal']}")["fields"]["customer"]["id"] == ids["acme"]
