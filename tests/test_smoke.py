from tests.helpers import Api


def test_create_app_table_and_record(admin: Api) -> None:
    admin.ok("POST", "/meta/apps", {"key": "sales", "label": {"en": "Sales", "zh-CN": "销售"}})
    t = admin.ok("POST", "/meta/apps/sales/tables", {"key": "deals", "label": "Deals", "fields": [
        {"key": "name", "label": "Name", "type": "text", "required": True},
        {"key": "amount", "label": "Amount", "type": "currency", "options": {"currency": "CNY"}},
        {"key": "stage", "label": "Stage", "type": "single_select",
         "options": {"choices": [{"value": "lead"}, {"value": "won"}, {"value": "lost"}]}},
    ]})
    assert [f["key"] for f in t["fields"]] == ["name", "amount", "stage"]
    rec = admin.ok("POST", "/data/sales/deals", {"fields": {"name": "Acme", "amount": "1200.50", "stage": "won"}})
    assert rec["fields"] == {"name": "Acme", "amount": 1200.5, "stage": "won"}
    status, err = admin.post("/data/sales/deals", {"fields": {"amount": "abc", "stage": "wn"}})
    assert status == 422
    assert set(err["error"]["details"]) == {"name", "amount", "stage"}
    recs = admin.records("sales", "deals", filter={"field": "stage", "op": "eq", "value": "won"})
    assert len(recs) == 1
