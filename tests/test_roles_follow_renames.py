"""A permission keyed by a name never fails open: when a builder renames a field, a table or an app, every
role's per-field modes and row scopes follow (issue 10: "renaming a hidden field makes it visible")."""

from __future__ import annotations

from typing import Any

from tests.helpers import Api
from tests.test_automation_support import token_for


def _world(app: Any, admin: Api) -> tuple[Api, dict[str, int]]:
    admin.ok("POST", "/meta/apps", {"key": "sales", "label": "Sales"})
    admin.ok("POST", "/meta/apps/sales/tables", {"key": "accounts", "label": "Accounts", "fields": [
        {"key": "name", "label": "Name", "type": "text"}, {"key": "tier", "label": "Tier", "type": "text"}]})
    admin.ok("POST", "/meta/apps/sales/tables", {"key": "deals", "label": "Deals", "fields": [
        {"key": "name", "label": "Name", "type": "text"},
        {"key": "credit", "label": "Credit", "type": "number"},
        {"key": "region", "label": "Region", "type": "text"},
        {"key": "account", "label": "Account", "type": "link", "options": {"table": "accounts"}}]})
    admin.ok("POST", "/admin/roles", {"key": "rep", "label": "Rep", "permissions": {
        "sales.deals": {"read": {"and": [{"field": "region", "op": "eq", "value": "north"},
                                         {"field": "account.tier", "op": "ne", "value": "gold"}]},
                        "fields": {"credit": "hidden"}},
        "sales.accounts": {"read": "all"},
        "sales.*": {"read": "all"}}})
    rep = admin.ok("POST", "/admin/users", {"username": "rita", "name": "Rita", "password": "rita-pass-12345",
                                            "roles": ["rep"]})
    plain = admin.ok("POST", "/data/sales/accounts", {"fields": {"name": "Plain", "tier": "silver"}})
    gold = admin.ok("POST", "/data/sales/accounts", {"fields": {"name": "Gold", "tier": "gold"}})
    ids = {"north": admin.ok("POST", "/data/sales/deals", {"fields": {
        "name": "N", "credit": 4000000, "region": "north", "account": plain["id"]}})["id"],
        "south": admin.ok("POST", "/data/sales/deals", {"fields": {"name": "S", "credit": 1, "region": "south"}})["id"],
        "gold": admin.ok("POST", "/data/sales/deals", {"fields": {
            "name": "G", "credit": 2, "region": "north", "account": gold["id"]}})["id"]}
    return Api(app.test_client(), token_for(app, rep["id"])), ids


def _seen(rep: Api, app_key: str = "sales", table: str = "deals") -> dict[str, dict[str, Any]]:
    return {r["fields"]["name"]: r["fields"] for r in rep.records(app_key, table)}


def test_renaming_a_hidden_field_keeps_it_hidden(app: Any, admin: Api) -> None:
    rep, _ids = _world(app, admin)
    assert _seen(rep) == {"N": {"name": "N", "region": "north", "account": _seen(rep)["N"]["account"]}}
    admin.ok("PATCH", "/meta/apps/sales/tables/deals/fields/credit", {"key": "credit_limit"})
    seen = _seen(rep)
    assert set(seen) == {"N"} and "credit_limit" not in seen["N"] and "credit" not in seen["N"]
    role = admin.ok("GET", "/admin/roles/rep")
    assert role["permissions"]["sales.deals"]["fields"] == {"credit_limit": "hidden"}


def test_row_scopes_follow_renamed_fields_here_and_through_links(app: Any, admin: Api) -> None:
    rep, _ids = _world(app, admin)
    admin.ok("PATCH", "/meta/apps/sales/tables/deals/fields/region", {"key": "area"})
    admin.ok("PATCH", "/meta/apps/sales/tables/accounts/fields/tier", {"key": "level"})
    assert set(_seen(rep)) == {"N"}  # neither the region nor the gold account's deals leak in
    scope = admin.ok("GET", "/admin/roles/rep")["permissions"]["sales.deals"]["read"]
    assert scope == {"and": [{"field": "area", "op": "eq", "value": "north"},
                             {"field": "account.level", "op": "ne", "value": "gold"}]}


def test_renaming_a_table_or_an_app_keeps_its_grant(app: Any, admin: Api) -> None:
    rep, _ids = _world(app, admin)
    # the app-wide grant ("sales.*": read all, no hidden fields) must not take over the renamed table
    admin.ok("PATCH", "/meta/apps/sales/tables/deals", {"key": "opportunities"})
    seen = _seen(rep, table="opportunities")
    assert set(seen) == {"N"} and "credit" not in seen["N"]
    admin.ok("PATCH", "/meta/apps/sales", {"key": "crm2"})
    seen = _seen(rep, app_key="crm2", table="opportunities")
    assert set(seen) == {"N"} and "credit" not in seen["N"]
    perms = admin.ok("GET", "/admin/roles/rep")["permissions"]
    assert set(perms) == {"crm2.opportunities", "crm2.accounts", "crm2.*"}
