"""Shared option lists (数据字典): one app-level list feeds several select fields; editing it updates them all."""

from __future__ import annotations

from typing import Any

from formwork.metadata import portable
from tests.helpers import Api

SOURCE = {"key": "source", "label": {"en": "Source", "zh-CN": "来源"}, "choices": [
    {"value": "web", "label": {"en": "Website", "zh-CN": "官网"}, "color": "blue"},
    {"value": "fair", "label": {"en": "Trade fair", "zh-CN": "展会"}, "color": "green"},
    {"value": "referral", "label": {"en": "Referral", "zh-CN": "转介绍"}}]}


def build(admin: Api) -> None:
    admin.ok("POST", "/meta/apps", {"key": "crm", "label": "CRM"})
    admin.ok("POST", "/meta/apps/crm/option-lists", SOURCE)
    admin.ok("POST", "/meta/apps/crm/tables", {"key": "customers", "label": "Customers", "fields": [
        {"key": "name", "label": "Name", "type": "text"},
        {"key": "source", "label": "Source", "type": "single_select", "options": {"list": "source"}}]})
    admin.ok("POST", "/meta/apps/crm/tables", {"key": "deals", "label": "Deals", "fields": [
        {"key": "name", "label": "Name", "type": "text"},
        {"key": "sources", "label": "Sources", "type": "multi_select", "options": {"list": "source", "choices": [
            {"value": "ignored"}]}}]})


def choices(admin: Api, table: str, field: str) -> list[dict[str, Any]]:
    return admin.ok("GET", f"/meta/apps/crm/tables/{table}/fields/{field}")["options"]["choices"]


def test_fields_take_the_lists_choices_and_follow_its_edits(admin: Api) -> None:
    build(admin)
    assert [c["value"] for c in choices(admin, "customers", "source")] == ["web", "fair", "referral"]
    assert [c["value"] for c in choices(admin, "deals", "sources")] == ["web", "fair", "referral"]
    got = admin.ok("GET", "/meta/apps/crm/option-lists/source")
    assert {(u["table"], u["field"]) for u in got["used_by"]} == {("customers", "source"), ("deals", "sources")}
    rec = admin.ok("POST", "/data/crm/customers", {"fields": {"name": "A", "source": "官网"}})
    assert rec["fields"]["source"] == "web"
    # relabel, recolour, reorder and add: both fields follow; the record keeps its value
    new = [{"value": "fair", "label": {"en": "Expo", "zh-CN": "展会"}, "color": "red"},
           {"value": "web", "label": {"en": "Website", "zh-CN": "官网"}, "color": "blue"},
           {"value": "referral", "label": {"en": "Referral", "zh-CN": "转介绍"}},
           {"value": "ads", "label": {"en": "Ads", "zh-CN": "广告"}}]
    out = admin.ok("PATCH", "/meta/apps/crm/option-lists/source", {"choices": new})
    assert out["impact"]["emptied"] == 0
    for table, field in (("customers", "source"), ("deals", "sources")):
        got_choices = choices(admin, table, field)
        assert [c["value"] for c in got_choices] == ["fair", "web", "referral", "ads"]
        assert got_choices[0]["label"]["en"] == "Expo" and got_choices[0]["color"] == "red"
    assert admin.ok("GET", f"/data/crm/customers/{rec['id']}")["fields"]["source"] == "web"
    admin.ok("POST", "/data/crm/deals", {"fields": {"name": "D", "sources": ["ads", "web"]}})


def test_removing_a_used_option_reports_counts_and_needs_confirmation(admin: Api) -> None:
    build(admin)
    admin.ok("POST", "/data/crm/customers", {"records": [{"fields": {"name": "A", "source": "web"}},
                                                         {"fields": {"name": "B", "source": "web"}},
                                                         {"fields": {"name": "C", "source": "fair"}}]})
    admin.ok("POST", "/data/crm/deals", {"fields": {"name": "D", "sources": ["web", "fair"]}})
    smaller = [c for c in SOURCE["choices"] if c["value"] != "web"]
    dry = admin.ok("PATCH", "/meta/apps/crm/option-lists/source?dry_run=1", {"choices": smaller})
    assert dry["impact"]["emptied"] == 3
    assert {(f["table"], f["records"]) for f in dry["impact"]["fields"]} == {("customers", 2), ("deals", 1)}
    status, body = admin.patch("/meta/apps/crm/option-lists/source", {"choices": smaller})
    assert status == 409 and body["error"]["details"]["emptied"] == 3
    assert [c["value"] for c in choices(admin, "customers", "source")] == ["web", "fair", "referral"]
    admin.ok("PATCH", "/meta/apps/crm/option-lists/source", {"choices": smaller, "confirm_data_loss": True})
    assert [c["value"] for c in choices(admin, "customers", "source")] == ["fair", "referral"]
    vals = sorted(str(r["fields"]["source"]) for r in admin.records("crm", "customers"))
    assert vals == ["None", "None", "fair"]
    # as when a field's own options lose a choice: a multi select holding it is emptied (it was counted)
    assert admin.records("crm", "deals")[0]["fields"]["sources"] == []


def test_bad_lists_are_refused_and_change_nothing(admin: Api) -> None:
    build(admin)
    status, body = admin.post("/meta/apps/crm/tables/customers/fields", {
        "key": "x", "label": "X", "type": "single_select", "options": {"list": "nope"}})
    assert status == 422 and "/options/list" in body["error"]["details"]
    status, _ = admin.post("/meta/apps/crm/option-lists", SOURCE)
    assert status == 409
    status, _ = admin.post("/meta/apps/crm/option-lists", {"key": "dup", "label": "Dup", "choices": [
        {"value": "a"}, {"value": "a"}]})
    assert status == 422
    status, _ = admin.patch("/meta/apps/crm", {"option_lists": []})
    assert status == 422
    whole = admin.ok("GET", "/meta/apps/crm")  # a document read and sent back whole is fine
    admin.ok("PATCH", "/meta/apps/crm", {"label": "CRM 2", "option_lists": whole["option_lists"]})
    assert len(admin.ok("GET", "/meta/apps/crm/option-lists")["option_lists"]) == 1


def test_deleting_a_list_leaves_fields_their_choices(admin: Api) -> None:
    build(admin)
    admin.ok("DELETE", "/meta/apps/crm/option-lists/source")
    f = admin.ok("GET", "/meta/apps/crm/tables/customers/fields/source")
    assert "list" not in f["options"] and len(f["options"]["choices"]) == 3
    assert admin.ok("GET", "/meta/apps/crm/option-lists")["option_lists"] == []


def test_export_and_import_carry_lists(admin: Api, app: Any) -> None:
    build(admin)
    doc = admin.ok("GET", "/meta/apps/crm/export")
    assert doc["app"]["option_lists"][0]["key"] == "source"
    doc["app"]["option_lists"][0]["choices"].append({"value": "cold_call"})
    status, body = admin.post("/meta/apps/import", {**doc, "app": {**doc["app"], "key": "crm2"}})
    assert status == 201, body
    f = admin.ok("GET", "/meta/apps/crm2/tables/deals/fields/sources")
    assert f["options"]["list"] == "source" and f["options"]["choices"][-1]["value"] == "cold_call"
    assert portable.FORMAT == doc["format"]
