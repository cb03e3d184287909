"""The generated OpenAPI 3.1 document: valid, complete for what the caller reads, and true to real responses."""

from __future__ import annotations

from typing import Any

import jsonschema
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

from tests.helpers import Api
from tests.test_aggregate import build_sales, make_user_client


def schema_validator(doc: dict[str, Any], name: str) -> jsonschema.Draft202012Validator:
    """Validates instances against one component schema (refs resolved inside the document)."""
    return jsonschema.Draft202012Validator({"$ref": f"#/components/schemas/{name}",
                                            "components": doc["components"]})


def test_document_is_valid_openapi_31_with_static_and_table_paths(admin: Api, app: Any) -> None:
    build_sales(admin, app)
    admin.ok("PATCH", "/meta/apps/sales/tables/deals/fields/name", {"required": True})
    doc = admin.ok("GET", "/openapi.json")
    validate(doc, cls=OpenAPIV31SpecValidator)
    assert doc["openapi"] == "3.1.0"
    paths = doc["paths"]
    for p in ("/auth/login", "/me", "/auth/tokens", "/meta/apps", "/meta/apps/{app_key}",
              "/meta/apps/{app_key}/tables/{table_key}/fields/{field_key}",
              "/meta/apps/{app_key}/dashboards/{key}/data"):
        assert p in paths, p
    assert paths["/auth/login"]["post"]["security"] == []
    base = "/data/sales/deals"
    assert set(paths[base]) == {"get", "post", "patch"}
    assert set(paths[f"{base}/{{id}}"]) == {"parameters", "get", "patch", "delete"}
    for suffix in ("/{id}/history", "/{id}/restore", "/aggregate", "/import", "/export", "/bulk-update"):
        assert base + suffix in paths, suffix
    assert "/data/sales/customers" in paths
    assert not any("<" in p for p in paths)
    ops = [op["operationId"] for item in paths.values() for k, op in item.items() if k != "parameters"]
    assert len(ops) == len(set(ops))
    assert doc["components"]["schemas"]["Error"]["required"] == ["error"]

    fields = doc["components"]["schemas"]["sales.deals"]["properties"]["fields"]["properties"]
    assert fields["name"]["type"] == ["string", "null"]
    assert fields["amount"]["type"] == ["number", "null"]
    assert fields["qty"]["type"] == ["integer", "null"]
    assert fields["stage"]["enum"] == ["lead", "qualified", "proposal", "won", "lost", None]
    assert fields["tags"]["items"]["enum"] == ["new", "vip", "upsell"]
    assert fields["close_date"]["format"] == "date" and fields["closed_at"]["format"] == "date-time"
    assert fields["hot"] == {"type": "boolean", "title": "Hot"}
    assert fields["owner"]["type"] == ["object", "null"] and set(fields["owner"]["properties"]) == {"id", "name"}
    assert set(fields["customer"]["properties"]) == {"id", "display"}
    assert fields["customer_level"]["readOnly"] is True and fields["customer_level"]["enum"] == ["A", "B", None]
    assert fields["double"]["readOnly"] is True and fields["double"]["type"] == ["number", "null"]
    assert "readOnly" not in fields["amount"]
    customers = doc["components"]["schemas"]["sales.customers"]["properties"]["fields"]["properties"]
    assert customers["total"]["readOnly"] is True
    assert customers["deals"]["type"] == "array"
    create = doc["components"]["schemas"]["sales.deals.input"]
    assert create["required"] == ["name"]
    assert "double" not in create["properties"] and "customer_level" not in create["properties"]
    assert create["properties"]["customer"]["type"] == ["integer", "null"]
    assert "required" not in doc["components"]["schemas"]["sales.deals.patch"]


def test_real_responses_and_requests_fit_the_schemas(admin: Api, app: Any) -> None:
    build_sales(admin, app)
    doc = admin.ok("GET", "/openapi.json")
    for table in ("deals", "customers"):
        check = schema_validator(doc, f"sales.{table}")
        records = admin.records("sales", table, limit=100)
        assert records
        for rec in records:
            errors = [e.message for e in check.iter_errors(rec)]
            assert not errors, (rec, errors)
    # what the input schema accepts, the API accepts; what it refuses (wrong type, read-only, unknown), the API refuses
    create = schema_validator(doc, "sales.deals.input")
    good = {"name": "new", "amount": "12.5", "qty": 3, "stage": "won", "tags": ["vip"], "owner": "alice",
            "close_date": "2026-02-01", "hot": True}
    assert not list(create.iter_errors(good))
    admin.ok("POST", "/data/sales/deals", {"fields": good})
    for bad in ({"name": "x", "stage": "wn"}, {"name": "x", "double": 3}, {"name": "x", "colour": "red"},
                {"name": "x", "tags": "vip,new"}):
        assert list(create.iter_errors(bad)), bad
        status, _ = admin.post("/data/sales/deals", {"fields": bad})
        assert status == 422, bad
    wrong = create.iter_errors({"name": "x", "qty": [1]})
    assert list(wrong)


def test_document_follows_what_the_caller_may_read(admin: Api, app: Any) -> None:
    build_sales(admin, app)
    bob, _ = make_user_client(app, "bob")
    doc = bob.ok("GET", "/openapi.json")
    validate(doc, cls=OpenAPIV31SpecValidator)
    assert "/data/sales/deals" in doc["paths"]
    assert not any(p.startswith("/data/sales/customers") for p in doc["paths"])
    assert "sales.customers" not in doc["components"]["schemas"]
    deal_fields = doc["components"]["schemas"]["sales.deals"]["properties"]["fields"]["properties"]
    assert "amount" not in deal_fields and "stage" in deal_fields  # hidden from bob's role
    alice, _ = make_user_client(app, "alice")
    assert "/data/sales/customers" in alice.ok("GET", "/openapi.json")["paths"]
    status, _ = Api(app.test_client()).get("/openapi.json")
    assert status == 401


def test_document_is_cached_per_schema_version(admin: Api, app: Any) -> None:
    build_sales(admin, app)
    first = admin.ok("GET", "/openapi.json")
    assert admin.ok("GET", "/openapi.json") == first
    admin.ok("POST", "/meta/apps/sales/tables/deals/fields", {"key": "region", "label": "Region", "type": "text"})
    second = admin.ok("GET", "/openapi.json")
    assert "region" in second["components"]["schemas"]["sales.deals"]["properties"]["fields"]["properties"]
    assert "region" not in first["components"]["schemas"]["sales.deals"]["properties"]["fields"]["properties"]
    assert second["info"]["version"] != first["info"]["version"]
    validate(second, cls=OpenAPIV31SpecValidator)
