"""Definitions read like records (issue 10): a reader's table and view documents name no field hidden from
them — not as a column, a sort, a grouping, an option or a filter with its threshold — and a saved view's
conditions on a hidden field are not applied to them, so they can't list rows by a value they can't see."""

from __future__ import annotations

import json
from typing import Any

from tests.helpers import Api
from tests.test_automation_support import token_for


def _world(app: Any, admin: Api) -> tuple[Api, dict[str, int]]:
    admin.ok("POST", "/meta/apps", {"key": "crm", "label": "CRM"})
    admin.ok("POST", "/meta/apps/crm/tables", {
        "key": "customers", "label": "Customers", "fields": [
            {"key": "name", "label": "Name", "type": "text"},
            {"key": "credit", "label": "Credit", "type": "number"},
            {"key": "level", "label": "Level", "type": "text"}],
        "validations": [{"condition": {"field": "credit", "op": "lte", "value": 9000000},
                         "message": "credit too high"},
                        {"condition": {"field": "name", "op": "is_not_empty"}, "message": "name needed"}],
        "views": [{"key": "big", "label": "Big", "type": "grid", "fields": ["name", "credit"], "sort": ["-credit"],
                   "filter": {"and": [{"field": "credit", "op": "gte", "value": 4000000},
                                      {"field": "level", "op": "eq", "value": "A"}]}},
                  {"key": "board", "label": "Board", "type": "kanban", "options": {"group_field": "credit"}}]})
    admin.ok("POST", "/admin/roles", {"key": "rep", "label": "Rep", "permissions": {
        "crm.customers": {"read": "all", "fields": {"credit": "hidden"}}}})
    rep = admin.ok("POST", "/admin/users", {"username": "rep", "name": "Rep", "password": "rep-pass-12345",
                                            "roles": ["rep"]})
    ids = {name: admin.ok("POST", "/data/crm/customers", {"fields": {"name": name, "credit": credit,
                                                                      "level": level}})["id"]
           for name, credit, level in (("rich", 5000000, "A"), ("poor", 10, "A"), ("other", 5000000, "B"))}
    return Api(app.test_client(), token_for(app, rep["id"])), ids


def test_a_readers_definitions_name_no_hidden_field(app: Any, admin: Api) -> None:
    rep, _ids = _world(app, admin)
    for path in ("/meta/apps/crm", "/meta/apps/crm/tables", "/meta/apps/crm/tables/customers",
                 "/meta/apps/crm/tables/customers/views", "/meta/apps/crm/tables/customers/views/big",
                 "/meta/apps/crm/tables/customers/views/board"):
        text = json.dumps(rep.ok("GET", path))
        assert "credit" not in text and "4000000" not in text and "9000000" not in text, path
    big = rep.ok("GET", "/meta/apps/crm/tables/customers/views/big")
    assert big["fields"] == ["name"] and big["sort"] == [] \
        and big["filter"] == {"and": [{"field": "level", "op": "eq", "value": "A"}]}
    table = rep.ok("GET", "/meta/apps/crm/tables/customers")
    assert [v["message"] for v in table["validations"]] == ["name needed"]
    # a builder sees the whole definition
    assert "4000000" in json.dumps(admin.ok("GET", "/meta/apps/crm/tables/customers/views/big"))


def test_a_view_filter_on_a_hidden_field_is_not_applied_to_the_reader(app: Any, admin: Api) -> None:
    rep, ids = _world(app, admin)
    names = {r["fields"]["name"] for r in admin.records("crm", "customers", view="big")}
    assert names == {"rich"}
    # the reader gets the view's visible conditions only: both level-A customers, rich or poor alike
    names = {r["fields"]["name"] for r in rep.records("crm", "customers", view="big")}
    assert names == {"rich", "poor"}
    assert all("credit" not in r["fields"] for r in rep.records("crm", "customers", view="big"))
    # and a filter of their own on it is refused as if the field did not exist
    status, err = rep.get('/data/crm/customers?filter={"field":"credit","op":"gte","value":1}')
    assert status == 400 and "credit" in err["error"]["message"]
