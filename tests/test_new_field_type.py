"""A new field type is one class plus one registration: a "stars" type defined here, registered for the
test and taken out again, goes through the API (create, write, read, filter, sort, aggregate, import,
export, OpenAPI) and the pages (grid, record, new record, builder) with no other change anywhere."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

import pytest
from sqlalchemy import SmallInteger
from sqlalchemy.types import TypeEngine

from formwork.metadata.fieldtypes import FieldType, FieldValueError, field_types
from formwork.metadata.fieldtypes.base import NUMBER, WriteContext
from tests.helpers import Api
from tests.test_transfer import csv_bytes, fetch, upload
from tests.test_ui_pages import html, login

if TYPE_CHECKING:
    from formwork.metadata.catalog import FieldDef


class StarsType(FieldType):
    """One to five stars: everything the platform needs to know about the type is here."""

    type = "stars"
    label: ClassVar[dict[str, str]] = {"en": "Stars", "zh-CN": "星级"}
    kind = NUMBER
    input_kind = "number"
    cell_style = "rating"

    def column_type(self, f: FieldDef) -> TypeEngine[Any]:
        return SmallInteger()

    def coerce(self, value: Any, f: FieldDef, ctx: WriteContext) -> Any:
        if value is None or value == "":
            return None
        text = str(value).strip() if isinstance(value, int | str) and not isinstance(value, bool) else ""
        if not (text.isdigit() and 1 <= int(text) <= 5):
            raise FieldValueError("must be 1 to 5 stars")
        return int(text)


@pytest.fixture
def stars() -> Iterator[None]:
    field_types.register(StarsType())
    try:
        yield
    finally:
        field_types.unregister("stars")


def records(api: Api, **params: Any) -> list[dict[str, Any]]:
    return api.records("shop", "reviews", **params)


def test_a_new_field_type_is_one_class_plus_one_registration(app: Any, admin: Api, stars: None) -> None:
    admin.ok("POST", "/meta/apps", {"key": "shop", "label": "Shop"})
    admin.ok("POST", "/meta/apps/shop/tables", {"key": "reviews", "label": "Reviews", "fields": [
        {"key": "title", "label": "Title", "type": "text"}]})
    created = admin.ok("POST", "/meta/apps/shop/tables/reviews/fields",
                       {"key": "score", "label": {"en": "Score", "zh-CN": "评分"}, "type": "stars"})
    assert created["type"] == "stars"
    assert "stars" in {t["type"] for t in admin.ok("GET", "/meta/field-types")}

    # write and read
    admin.ok("POST", "/data/shop/reviews", {"records": [
        {"fields": {"title": "great", "score": 5}}, {"fields": {"title": "fine", "score": "3"}},
        {"fields": {"title": "meh", "score": 1}}, {"fields": {"title": "none"}}]})
    status, body = admin.post("/data/shop/reviews", {"fields": {"title": "too many", "score": 6}})
    assert status == 422 and body["error"]["details"]["score"] == ["must be 1 to 5 stars"]
    by_title = {r["fields"]["title"]: r for r in records(admin)}
    assert by_title["great"]["fields"]["score"] == 5 and by_title["fine"]["fields"]["score"] == 3
    assert by_title["none"]["fields"].get("score") is None
    great = by_title["great"]["id"]
    admin.ok("PATCH", f"/data/shop/reviews/{great}", {"fields": {"score": 4}})
    assert admin.ok("GET", f"/data/shop/reviews/{great}")["fields"]["score"] == 4

    # filter, sort, aggregate: the type's kind (a number) brings its operators
    high = records(admin, filter={"field": "score", "op": "gte", "value": 3}, sort="-score")
    assert [r["fields"]["title"] for r in high] == ["great", "fine"]
    assert [r["fields"]["title"] for r in records(admin, sort="score")][:3] == ["meh", "fine", "great"]
    groups = admin.ok("GET", "/data/shop/reviews/aggregate?group_by=score&metrics=count")["groups"]
    assert {g["key"]["score"]: g["count"] for g in groups} == {None: 1, 1: 1, 3: 1, 4: 1}
    summed = admin.ok("GET", "/data/shop/reviews/aggregate?metrics=" + quote("avg:score,max:score"))["groups"]
    assert summed[0]["max:score"] == 4

    # import and export
    status, result = upload(admin, "/data/shop/reviews/import", csv_bytes([["Title", "Score"], ["new", "2"],
                                                                          ["bad", "9"]]), on_error="skip")
    assert status == 200 and result["inserted"] == 1, result
    assert [e["field"] for e in result["errors"]] == ["score"]
    status, data = fetch(admin, "/data/shop/reviews/export?format=csv&sort=title&fields=title,score")
    assert status == 200
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))
    assert rows[0] == ["Title", "Score"] and ["new", "2"] in rows and ["great", "4"] in rows

    # the OpenAPI document describes it by its kind
    spec = admin.ok("GET", "/openapi.json")
    assert "score" in json.dumps(spec)

    # the pages: a number input, stars in the grid, the builder lists the type
    c, _csrf = login(app, "admin", "admin-pass-1")
    grid = html(c.get("/apps/shop/reviews"))
    assert '<span class="rating">★★★★<span class="off">★</span></span>' in grid
    rec = html(c.get(f"/apps/shop/reviews/{great}"))
    assert 'type="number"' in rec and 'name="score"' in rec and 'value="4"' in rec
    assert 'name="score"' in html(c.get("/apps/shop/reviews/new"))
    assert "Stars" in html(c.get("/apps/shop/reviews/fields"))
    assert 'id="field-options"' in html(c.get("/apps/shop/reviews/fields/options?type=stars"))


def test_the_type_is_gone_once_unregistered(admin: Api) -> None:
    """The registry (and the field schema built from it) forgets a type taken out again."""
    assert "stars" not in field_types
    admin.ok("POST", "/meta/apps", {"key": "shop", "label": "Shop"})
    status, body = admin.post("/meta/apps/shop/tables", {"key": "r", "label": "R", "fields": [
        {"key": "score", "label": "Score", "type": "stars"}]})
    assert status == 422, body
