"""Schema changes with data present: type conversions (dry run, confirmation), relabel, re-key, reorder,
unique toggling, and the change log / schema version every change leaves."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from formwork import create_app, db
from tests.helpers import Api, db_snapshot

CHOICES = {"choices": [{"value": "lead", "label": {"en": "Lead", "zh-CN": "线索"}}, {"value": "won"},
                       {"value": "lost"}]}
BASE = "/meta/apps/crm/tables/items/fields"


def setup_table(admin: Api, field: dict[str, Any], values: list[Any]) -> list[int]:
    """An app with table items(name, <field>) holding one record per value; returns the record ids."""
    admin.ok("POST", "/meta/apps", {"key": "crm", "label": "CRM"})
    admin.ok("POST", "/meta/apps/crm/tables", {"key": "items", "label": "Items", "fields": [
        {"key": "name", "label": "Name", "type": "text"}, field]})
    out = []
    for i, v in enumerate(values):
        out.append(admin.ok("POST", "/data/crm/items", {"fields": {"name": f"r{i}", field["key"]: v}})["id"])
    return out


def values_of(admin: Api, key: str, ids: list[int]) -> list[Any]:
    return [admin.ok("GET", f"/data/crm/items/{i}")["fields"].get(key) for i in ids]


def change(admin: Api, key: str, patch: dict[str, Any], lossy: bool) -> dict[str, Any]:
    """Dry run (nothing changes), then the lossy check, then the real change; returns the dry-run report."""
    app = admin.client.application
    field_before = admin.ok("GET", f"{BASE}/{key}")
    before = db_snapshot(app)
    report = admin.ok("PATCH", f"{BASE}/{key}?dry_run=true", patch)
    assert set(report) == {"rows", "converted", "emptied", "samples"}
    assert db_snapshot(app) == before
    assert admin.ok("GET", f"{BASE}/{key}") == field_before
    if lossy:
        assert report["emptied"] > 0
        status, err = admin.patch(f"{BASE}/{key}", patch)
        assert status == 422, err
        assert "confirm_data_loss" in err["error"]["message"]
        assert db_snapshot(app) == before
        assert admin.ok("GET", f"{BASE}/{key}") == field_before
        done = admin.ok("PATCH", f"{BASE}/{key}", {**patch, "confirm_data_loss": True})
    else:
        assert report["emptied"] == 0
        done = admin.ok("PATCH", f"{BASE}/{key}", patch)
    assert done["conversion"]["converted"] == report["converted"]
    assert done["conversion"]["emptied"] == report["emptied"]
    return report


@pytest.mark.parametrize("field,values,patch,after,lossy", [
    ({"key": "v", "label": "V", "type": "text"}, ["12", " 1,200 ", "abc", None, "7.6"],
     {"type": "number"}, [12, 1200, None, None, 8], True),
    ({"key": "v", "label": "V", "type": "text"}, ["2026-01-05", "2026/2/3", "2026年3月4日", "soon"],
     {"type": "date"}, ["2026-01-05", "2026-02-03", "2026-03-04", None], True),
    ({"key": "v", "label": "V", "type": "text"}, ["won", "Lead", "线索", "weird"],
     {"type": "single_select", "options": CHOICES}, ["won", "lead", "lead", None], True),
    ({"key": "v", "label": "V", "type": "single_select", "options": CHOICES}, ["won", "lead", None],
     {"type": "text"}, ["won", "lead", None], False),
    ({"key": "v", "label": "V", "type": "number"}, [12, -3, None, 0],
     {"type": "text"}, ["12", "-3", None, "0"], False),
    ({"key": "v", "label": "V", "type": "decimal"}, ["12.5", "3"],
     {"type": "text"}, ["12.5", "3"], False),
    ({"key": "v", "label": "V", "type": "single_select", "options": CHOICES}, ["won", None],
     {"type": "multi_select", "options": CHOICES}, [["won"], []], False),
    ({"key": "v", "label": "V", "type": "multi_select", "options": CHOICES}, [["lost", "won"], ["lead"], []],
     {"type": "single_select", "options": CHOICES}, ["lost", "lead", None], False),
    ({"key": "v", "label": "V", "type": "number"}, [12, 7, None],
     {"type": "decimal"}, [12, 7, None], False),
    ({"key": "v", "label": "V", "type": "number"}, [12, 7],
     {"type": "currency", "options": {"currency": "CNY"}}, [12, 7], False),
    ({"key": "v", "label": "V", "type": "number"}, [12, 7],
     {"type": "percent"}, [12, 7], False),
    ({"key": "v", "label": "V", "type": "decimal", "options": {"precision": 3}}, ["1.25", "2.5"],
     {"type": "currency"}, [1.25, 2.5], False),
    ({"key": "v", "label": "V", "type": "checkbox"}, [True, False],
     {"type": "text"}, ["true", None], False),
    ({"key": "v", "label": "V", "type": "date"}, ["2026-11-23", None],
     {"type": "text"}, ["2026-11-23", None], False),
    ({"key": "v", "label": "V", "type": "text"}, ["short", "  padded  "],
     {"type": "long_text"}, ["short", "padded"], False),
    ({"key": "v", "label": "V", "type": "long_text"}, ["short", "x" * 3000, "two\nlines", "\u3000全角 ", "\t "],
     {"type": "text"}, ["short", None, "two\nlines", "全角", None], True),
    ({"key": "v", "label": "V", "type": "text"}, ["abc", "abcdef"],
     {"options": {"max_length": 4}}, ["abc", None], True),
    ({"key": "v", "label": "V", "type": "number"}, [5, 50, -1],
     {"type": "currency", "options": {"min": 0, "max": 10}}, [5, None, None], True),
    ({"key": "v", "label": "V", "type": "text"}, ["yes", "no", "maybe"],
     {"type": "checkbox"}, [True, False, False], True),
], ids=["text-number", "text-date", "text-single", "single-text", "number-text", "decimal-text", "single-multi",
        "multi-single", "number-decimal", "number-currency", "number-percent", "decimal-currency", "checkbox-text",
        "date-text", "text-long", "long-text", "text-max-length", "number-currency-range", "text-checkbox"])
def test_type_change_converts_data(admin: Api, field: dict[str, Any], values: list[Any], patch: dict[str, Any],
                                   after: list[Any], lossy: bool) -> None:
    ids = setup_table(admin, field, values)
    before = values_of(admin, "v", ids)
    report = change(admin, "v", patch, lossy)
    assert report["rows"] == len(values)
    non_empty = [b for b in before if b is not None and b is not False and b != []]
    assert report["converted"] + report["emptied"] == len(non_empty)
    assert len(report["samples"]) == min(len(non_empty), 10)
    for s in report["samples"]:
        i = ids.index(s["id"])
        assert s["before"] == before[i]
        assert s["after"] == after[i]
    assert values_of(admin, "v", ids) == after
    assert admin.ok("GET", f"{BASE}/v")["type"] == patch.get("type", field["type"])
    # the converted column takes new writes of the new type
    new = admin.ok("POST", "/data/crm/items", {"fields": {"name": "new", "v": after[0]}})
    assert new["fields"]["v"] == after[0]


def test_removing_a_choice_in_use(admin: Api) -> None:
    ids = setup_table(admin, {"key": "v", "label": "V", "type": "single_select", "options": CHOICES},
                      ["won", "lost", "lead", "lost"])
    report = change(admin, "v", {"options": {"choices": [{"value": "lead"}, {"value": "won"}]}}, lossy=True)
    assert report["emptied"] == 2 and report["converted"] == 2
    assert values_of(admin, "v", ids) == ["won", None, "lead", None]
    status, _ = admin.post("/data/crm/items", {"fields": {"v": "lost"}})
    assert status == 422


def test_adding_a_choice_keeps_data_without_conversion(admin: Api) -> None:
    ids = setup_table(admin, {"key": "v", "label": "V", "type": "multi_select", "options": CHOICES},
                      [["won", "lead"]])
    res = admin.ok("PATCH", f"{BASE}/v", {"options": {"choices": [*CHOICES["choices"], {"value": "new"}]}})
    assert res["conversion"]["rows"] == 0
    assert values_of(admin, "v", ids) == [["won", "lead"]]


def test_relabel_rekey_reorder(admin: Api) -> None:
    admin.ok("POST", "/meta/apps", {"key": "crm", "label": "CRM"})
    admin.ok("POST", "/meta/apps/crm/tables", {"key": "items", "label": "Items", "display_field": "name",
                                               "fields": [
        {"key": "name", "label": "Name", "type": "text"},
        {"key": "qty", "label": "Qty", "type": "number"},
        {"key": "price", "label": "Price", "type": "decimal"},
        {"key": "total", "label": "Total", "type": "formula", "options": {"formula": "{qty} * {price}"}}]})
    admin.ok("POST", "/meta/apps/crm/tables/items/views", {
        "key": "big", "label": "Big", "type": "grid", "fields": ["name", "qty"], "sort": ["-qty"],
        "filter": {"field": "qty", "op": "gt", "value": 1}})
    rid = admin.ok("POST", "/data/crm/items", {"fields": {"name": "A", "qty": 3, "price": 2}})["id"]
    admin.ok("PATCH", f"{BASE}/qty", {"label": {"en": "Quantity", "zh-CN": "数量"}})
    assert admin.ok("GET", f"{BASE}/qty")["label"] == {"en": "Quantity", "zh-CN": "数量"}
    admin.ok("PATCH", f"{BASE}/qty", {"key": "quantity"})
    rec = admin.ok("GET", f"/data/crm/items/{rid}")["fields"]
    assert rec["quantity"] == 3 and "qty" not in rec and rec["total"] == 6
    assert admin.ok("GET", f"{BASE}/total")["options"]["formula"] == "{quantity} * {price}"
    view = admin.ok("GET", "/meta/apps/crm/tables/items/views/big")
    assert view["fields"] == ["name", "quantity"] and view["sort"] == ["-quantity"]
    assert view["filter"]["field"] == "quantity"
    assert [r["id"] for r in admin.records("crm", "items", view="big")] == [rid]
    admin.ok("PATCH", f"{BASE}/name", {"key": "title"})
    assert admin.ok("GET", "/meta/apps/crm/tables/items")["display_field"] == "title"
    admin.ok("PATCH", f"{BASE}/total", {"position": 0})
    keys = [f["key"] for f in admin.ok("GET", "/meta/apps/crm/tables/items")["fields"]]
    assert keys[0] == "total"
    status, err = admin.patch(f"{BASE}/price", {"key": "total"})
    assert status == 409 and "total" in err["error"]["message"]


def test_unique_toggle(admin: Api) -> None:
    ids = setup_table(admin, {"key": "v", "label": "V", "type": "text"}, ["a", "b", "a"])
    before = db_snapshot(admin.client.application)
    status, err = admin.patch(f"{BASE}/v", {"unique": True})
    assert status == 409 and "v" in err["error"]["message"]
    assert db_snapshot(admin.client.application) == before
    assert admin.ok("GET", f"{BASE}/v").get("unique") in (None, False)
    admin.ok("PATCH", f"/data/crm/items/{ids[2]}", {"fields": {"v": "c"}})
    assert admin.ok("PATCH", f"{BASE}/v", {"unique": True})["unique"] is True
    status, _ = admin.post("/data/crm/items", {"fields": {"v": "a"}})
    assert status in (409, 422)
    admin.ok("PATCH", f"{BASE}/v", {"unique": False})
    admin.ok("POST", "/data/crm/items", {"fields": {"v": "a"}})


def test_changes_are_logged_and_bump_the_version(admin: Api, app: Any) -> None:
    engine = app.extensions["formwork"].engine

    def version() -> int:
        with engine.connect() as c:
            return int(c.execute(select(db.state.c.value).where(db.state.c.name == db.SCHEMA_VERSION)).scalar())

    def last_change() -> Any:
        with engine.connect() as c:
            return c.execute(select(db.meta_changes).order_by(db.meta_changes.c.id.desc()).limit(1)).first()

    v0 = version()
    setup_table(admin, {"key": "v", "label": "V", "type": "text"}, ["12"])
    v1 = version()
    assert v1 > v0
    uid = last_change().user_id
    assert uid is not None
    admin.ok("PATCH", f"{BASE}/v", {"label": "Value"})
    row = last_change()
    assert version() == v1 + 1 and row.schema_version == v1 + 1
    assert (row.kind, row.action, row.user_id) == ("field", "update", uid)
    assert row.before["label"] == "V" and row.after["label"] == "Value"
    admin.ok("PATCH", f"{BASE}/v", {"type": "number"})
    row = last_change()
    assert row.before["type"] == "text" and row.after["type"] == "number"
    admin.ok("DELETE", f"{BASE}/v")
    row = last_change()
    assert (row.action, row.after) == ("delete", None) and row.before["key"] == "v"
    status, _ = admin.patch(f"{BASE}/name", {"type": "nope"})
    assert status == 422
    assert last_change().id == row.id


def test_second_app_instance_sees_changes_without_restart(admin: Api, app: Any) -> None:
    other = create_app({"DATABASE_URL": app.config["DATABASE_URL"], "SECRET_KEY": "test-secret", "TESTING": True,
                        "FILES_DIR": app.config["FILES_DIR"]})
    try:
        peer = Api(other.test_client(), admin.token)
        setup_table(admin, {"key": "v", "label": "V", "type": "text"}, ["12", "x"])
        assert [f["key"] for f in peer.ok("GET", "/meta/apps/crm/tables/items")["fields"]] == ["name", "v"]
        admin.ok("PATCH", f"{BASE}/v", {"type": "number", "confirm_data_loss": True})
        assert peer.ok("GET", f"{BASE}/v")["type"] == "number"
        assert sorted(r["fields"].get("v") or 0 for r in peer.records("crm", "items")) == [0, 12]
        peer.ok("POST", f"{BASE}", {"key": "w", "label": "W", "type": "text"})
        assert admin.ok("POST", "/data/crm/items", {"fields": {"w": "hello"}})["fields"]["w"] == "hello"
    finally:
        other.extensions["formwork"].engine.dispose()


@pytest.mark.parametrize("old,new,fast", [
    ("number", "text", True), ("number", "long_text", True), ("text", "long_text", True),
    ("long_text", "text", True), ("single_select", "text", True), ("checkbox", "text", True),
    ("number", "decimal", True), ("number", "currency", True), ("number", "percent", True),
    ("text", "number", False), ("text", "date", False), ("decimal", "text", False), ("date", "text", False),
    ("multi_select", "single_select", False), ("text", "email", False),
])
def test_set_based_conversion_is_chosen_where_sql_can_do_it(app: Any, old: str, new: str, fast: bool) -> None:
    from formwork.metadata.catalog import FieldDef
    from formwork.metadata.conversion import fast_conversion

    def fdef(ftype: str) -> FieldDef:
        opts = {"choices": [{"value": "a"}]} if ftype.endswith("select") else {}
        return FieldDef(1, 1, "v", ftype, {"key": "v", "label": "V", "type": ftype, "options": opts}, 0)

    assert (fast_conversion(fdef(old), fdef(new), "sqlite") is not None) is fast
    with_regex = FieldDef(1, 1, "v", new, {"options": {"regex": "x+"}}, 0)
    if new in ("text", "long_text"):
        assert fast_conversion(fdef(old), with_regex, "sqlite") is None
