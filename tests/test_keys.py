"""Keys derived from labels (metadata.keys) and definitions created through the API without a key."""

from __future__ import annotations

import re
from typing import Any

import pytest

from formwork.metadata.keys import KEY_RE, derive_key, slugify
from tests.helpers import Api


@pytest.mark.parametrize(("label", "expected"), [
    ("Close date", "close_date"),
    ("  Café Crème ", "cafe_creme"),
    ({"en": "Deals", "zh-CN": "商机"}, "deals"),
    ({"zh-CN": "商机", "en": "Pipeline value"}, "pipeline_value"),
    ("2026 budget", "n_2026_budget"),
    ("E-mail / 电话", "e_mail"),
])
def test_readable_labels_give_readable_keys(label: Any, expected: str) -> None:
    assert derive_key(label, set()) == expected


@pytest.mark.parametrize("label", ["客户", "客户 A", "预算2026", {"zh-CN": "负责人"}, "🙂🙂", "—", ""])
def test_other_labels_get_a_generated_key(label: Any) -> None:
    key = derive_key(label, set(), "field")
    assert re.fullmatch(r"f_[a-z2-9]{6}", key), key
    assert KEY_RE.match(key)


def test_a_taken_key_gets_a_number_and_generated_keys_avoid_taken_ones() -> None:
    assert derive_key("Name", {"name"}) == "name_2"
    assert derive_key("Name", {"name", "name_2"}) == "name_3"
    assert derive_key("客户", lambda k: False, "table").startswith("t_")
    assert slugify("x" * 100) == "x" * 40


def test_api_creates_everything_from_labels_alone(admin: Api) -> None:
    app = admin.ok("POST", "/meta/apps", {"label": "销售管理"})
    assert re.fullmatch(r"a_[a-z2-9]{6}", app["key"])
    a = app["key"]
    t = admin.ok("POST", f"/meta/apps/{a}/tables", {"label": {"zh-CN": "客户", "en": "Customers"}, "fields": [
        {"label": "名称", "type": "text"}, {"label": "Name", "type": "text"}, {"label": "Name", "type": "number"},
        {"label": "ID", "type": "text"}]})
    assert t["key"] == "customers"
    keys = [f["key"] for f in t["fields"]]
    assert re.fullmatch(r"f_[a-z2-9]{6}", keys[0]) and keys[1:] == ["name", "name_2", "id_2"]
    f = admin.ok("POST", f"/meta/apps/{a}/tables/customers/fields", {"label": "Name", "type": "text"})
    assert f["key"] == "name_3"
    v = admin.ok("POST", f"/meta/apps/{a}/tables/customers/views", {"label": "全部", "type": "grid"})
    assert v["key"].startswith("v_")
    d = admin.ok("POST", f"/meta/apps/{a}/dashboards", {"label": "Overview", "widgets": []})
    assert d["key"] == "overview"
    # a key given is still taken as given, and refused when bad
    assert admin.ok("POST", f"/meta/apps/{a}/tables/customers/fields",
                    {"key": "code", "label": "编号", "type": "text"})["key"] == "code"
    status, body = admin.post(f"/meta/apps/{a}/tables/customers/fields", {"type": "text"})
    assert status == 422, body
