"""Upgrading an installed version-1 CRM to the version-2 template (formwork.metadata.upgrade and the CRM's
upgrade hook): everything new arrives, typed numbers become records (stock → opening stock movements, quote
totals → quote lines), edits people made are kept and listed, and the upgraded CRM works like a new one.

``tests/data/crm_v1_app.json`` is the CRM template as shipped before issue 16 (git f653221^)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from formwork import create_app, db
from formwork.metadata.portable import load_template
from formwork.runtime import auth
from tests.conftest import reset_database
from tests.helpers import Api

V1 = Path(__file__).parent / "data" / "crm_v1_app.json"


@pytest.fixture(scope="module")
def admin(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    tmp = tmp_path_factory.mktemp("crm_upgrade")
    application = create_app({"DATABASE_URL": database_url, "SECRET_KEY": "test-secret", "TESTING": True,
                              "FILES_DIR": str(tmp / "files")})
    p = application.extensions["formwork"]
    reset_database(p.engine)
    p.catalogs.invalidate()
    with db.transaction(p.engine) as conn:
        uid = auth.create_user(conn, {"username": "admin", "name": "Admin", "password": "admin-pass-1"},
                               is_admin=True)
        token = auth.create_token(conn, uid, "tests", None)["token"]
    yield Api(application.test_client(), token)
    p.engine.dispose()


def test_a_version_1_crm_is_upgraded_in_place(admin: Api) -> None:
    v1 = json.loads(V1.read_text("utf-8"))
    admin.ok("POST", "/meta/apps/import?key=crm", v1)
    # version-1 data: typed stock, typed quote totals, typed campaign revenue
    pa = admin.ok("POST", "/data/crm/products", {"fields": {"name": "升级产品A", "price": 100, "stock": 30}})["id"]
    pb = admin.ok("POST", "/data/crm/products", {"fields": {"name": "升级产品B", "price": 50, "stock": 0}})["id"]
    cust = admin.ok("POST", "/data/crm/customers", {"fields": {"name": "升级客户"}})["id"]
    quote = admin.ok("POST", "/data/crm/quotes", {"fields": {"customer": cust, "total": 5000}})["id"]
    camp = admin.ok("POST", "/data/crm/campaigns", {"fields": {"name": "升级活动", "cost": 1000,
                                                                "won_revenue": 9000}})["id"]
    # someone added a source of their own and a duplicate rule of their own: both stay
    src = admin.ok("GET", "/meta/apps/crm/tables/customers/fields/source")
    admin.ok("PATCH", "/meta/apps/crm/tables/customers/fields/source", {"options": {
        **src["options"], "choices": src["options"]["choices"] + [{"value": "community",
                                                                    "label": {"en": "Community", "zh-CN": "社群"}}]}})
    admin.ok("PATCH", "/meta/apps/crm/tables/customers", {"duplicate_rules": [
        {"key": "same_website", "fields": [{"field": "website", "match": "exact"}]}]})
    fan = admin.ok("POST", "/data/crm/customers", {"fields": {"name": "社群客户", "source": "community"}})["id"]
    # someone edited an automation: the upgrade keeps it
    admin.ok("PATCH", "/meta/apps/crm/automations/stage_clock", {"label": {"en": "Our stage clock",
                                                                             "zh-CN": "我们的阶段计时"}})

    report = admin.ok("POST", "/meta/apps/crm/upgrade", {"template": "crm"})
    assert (report["from_version"], report["to_version"]) == (1, 2)
    assert {"table warehouses", "table stock_levels", "table stock_movements", "table quote_lines",
            "table sales_targets"} <= set(report["created"])
    conv = {(c["table"], c["field"]): c for c in report["converted"]}
    assert conv[("products", "stock")]["moved"] == 1 and conv[("quotes", "total")]["moved"] == 1
    assert "automation stage_clock" in report["kept"]

    # the installed app now has every table and field of version 2, with the same types
    doc = load_template("crm")
    app = admin.ok("GET", "/meta/apps/crm")
    assert app["settings"]["template_version"] == 2 and isinstance(app["description"], dict)
    for t in doc["tables"]:
        have = {f["key"]: f["type"] for f in admin.ok("GET", f"/meta/apps/crm/tables/{t['key']}")["fields"]}
        for f in t["fields"]:
            assert have.get(f["key"]) == f["type"], (t["key"], f["key"])
    auto = {a["key"]: a for a in app["automations"]}
    assert {a["key"] for a in doc["automations"]} <= set(auto)
    assert auto["stage_clock"]["label"]["en"] == "Our stage clock"

    # typed numbers became records
    assert admin.ok("GET", f"/data/crm/products/{pa}")["fields"]["stock"] == 30
    moves = admin.ok("GET", "/data/crm/stock_movements")["records"]
    assert [(m["fields"]["product"]["id"], m["fields"]["quantity"], m["fields"]["warehouse"]["display"])
            for m in moves] == [(pa, 30, "总仓 Main warehouse")]
    assert admin.ok("GET", f"/data/crm/quotes/{quote}")["fields"]["total"] == 5000
    assert admin.ok("GET", f"/data/crm/campaigns/{camp}")["fields"]["won_revenue"] in (0, None)

    # new choices, form fields and settings arrived
    prio = admin.ok("GET", "/meta/apps/crm/tables/tickets/fields/priority")
    assert "urgent" in [c["value"] for c in prio["options"]["choices"]]
    form = next(v for v in admin.ok("GET", "/meta/apps/crm/tables/opportunities")["views"]
                if v["key"] == "lead_form")
    assert {"lead_company", "lead_contact", "lead_phone", "lead_email"} <= set(form["fields"])
    orders = admin.ok("GET", "/meta/apps/crm/tables/orders")
    assert orders["flows"]["status"]["require"]["confirmed"] == ["warehouse"]

    # the shared option list arrived with every choice in use, and both source fields take it
    assert "option_list lead_source" in report["created"]
    lists = {ol["key"]: ol for ol in admin.ok("GET", "/meta/apps/crm/option-lists")["option_lists"]}
    values = [c["value"] for c in lists["lead_source"]["choices"]]
    template_values = [c["value"] for c in doc["app"]["option_lists"][0]["choices"]]
    assert values == [*template_values, "community"]
    assert {(u["table"], u["field"]) for u in lists["lead_source"]["used_by"]} == {
        ("customers", "source"), ("opportunities", "source")}
    assert admin.ok("GET", f"/data/crm/customers/{fan}")["fields"]["source"] == "community"
    opp_source = admin.ok("GET", "/meta/apps/crm/tables/opportunities/fields/source")["options"]
    assert opp_source["list"] == "lead_source" and "cold_call" in [c["value"] for c in opp_source["choices"]]
    # the template's duplicate rules arrived next to the user's own, and they work
    rules = {r["key"] for r in admin.ok("GET", "/meta/apps/crm/tables/customers")["duplicate_rules"]}
    assert rules == {"same_website", "same_name", "same_phone"}
    assert {r["key"] for r in admin.ok("GET", "/meta/apps/crm/tables/contacts")["duplicate_rules"]} == {
        "same_phone", "same_email"}
    st, body = admin.post("/data/crm/customers", {"fields": {"name": "升级客户有限公司"}})
    assert st == 409 and [m["id"] for m in body["error"]["details"]["matches"]] == [cust]

    # the upgraded CRM takes stock like a new one
    wid = moves[0]["fields"]["warehouse"]["id"]
    order = admin.ok("POST", "/data/crm/orders", {"fields": {"customer": cust, "warehouse": wid}})["id"]
    admin.ok("POST", "/data/crm/order_lines", {"fields": {"order": order, "product": pa, "quantity": 4}})
    admin.ok("PATCH", f"/data/crm/orders/{order}", {"fields": {"status": "confirmed"}})
    assert admin.ok("GET", f"/data/crm/products/{pa}")["fields"]["stock"] == 26
    short = admin.ok("POST", "/data/crm/orders", {"fields": {"customer": cust, "warehouse": wid}})["id"]
    admin.ok("POST", "/data/crm/order_lines", {"fields": {"order": short, "product": pb, "quantity": 1}})
    st, _ = admin.patch(f"/data/crm/orders/{short}", {"fields": {"status": "confirmed"}})
    assert st == 422

    # a second upgrade has nothing to do
    again: dict[str, Any] = admin.ok("POST", "/meta/apps/crm/upgrade", {"template": "crm"})
    assert again.get("up_to_date") is True and again["created"] == []
