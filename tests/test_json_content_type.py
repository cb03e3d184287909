"""JSON endpoints take only bodies labelled as JSON (issue 10): a cross-site ``text/plain`` or form post
can't reach them with a browser's cookies. Incoming webhooks, authenticated by their secret URL, stay lenient."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.helpers import Api, db_snapshot


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_json_endpoint_refuses_an_unlabelled_body(app: Any, admin: Api, content_type: str | None) -> None:
    before = db_snapshot(app)
    resp = admin.client.post("/api/v1/meta/apps", data=json.dumps({"key": "sneaky", "label": "Sneaky"}),
                             headers={**admin._headers(None), **({"Content-Type": content_type} if content_type
                                                                  else {})})
    assert resp.status_code == 415
    body = resp.get_json()
    assert body["error"]["code"] == "unsupported_media_type"
    assert "Content-Type: application/json" in body["error"]["message"]
    assert db_snapshot(app) == before


def test_json_with_a_charset_is_json(admin: Api) -> None:
    resp = admin.client.post("/api/v1/meta/apps", data=json.dumps({"key": "fine", "label": "Fine"}),
                             headers={**admin._headers(None), "Content-Type": "application/json; charset=utf-8"})
    assert resp.status_code == 201
