"""The template gallery and app copies through Flask's test client (SQLite and PostgreSQL)."""

from __future__ import annotations

import io
import json
import time
from typing import Any

import pytest

from formwork import db
from formwork.runtime import auth
from tests.helpers import Api
from tests.test_ui_pages import html, login

PASSWORD = "correct-horse-9"


@pytest.fixture
def builder(app: Any, admin: Api) -> dict[str, Any]:
    with db.transaction(app.extensions["formwork"].engine) as conn:
        auth.create_user(conn, {"username": "ada", "name": "Ada", "password": PASSWORD}, is_admin=True)
        auth.create_user(conn, {"username": "bob", "name": "Bob", "password": PASSWORD})
    client, csrf = login(app, "ada")
    return {"client": client, "csrf": csrf, "api": admin}


def finish(client: Any, url: str) -> str:
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline:
        text = html(client.get(url, headers={"HX-Request": "true"}))
        if "hx-trigger" not in text:
            return text
        time.sleep(0.1)
    raise AssertionError(f"the job did not finish: {text[-600:]}")


def test_install_the_crm_without_demo_data(builder: dict[str, Any]) -> None:
    c = builder["client"]
    page = html(c.get("/templates"))
    assert 'name="key.crm" value="crm"' in page
    resp = c.post("/templates/crm/install", data={"csrf_token": builder["csrf"], "key.crm": "crm"})
    assert resp.status_code == 302
    done = finish(c, resp.headers["Location"])
    assert "The app is ready" in done and 'href="/apps/crm"' in done
    apps = builder["api"].ok("GET", "/meta/apps")
    assert "crm" in json.dumps(apps)
    # the key is now taken: the form says so next to the input, and offers crm_2
    page = html(c.post("/templates/crm/install", data={"csrf_token": builder["csrf"], "key.crm": "crm"}))
    assert "An app with the key crm already exists" in page
    assert 'value="crm_2"' in html(c.get("/templates"))


def test_install_with_demo_data(builder: dict[str, Any]) -> None:
    c = builder["client"]
    resp = c.post("/templates/crm/install", data={"csrf_token": builder["csrf"], "key.crm": "democrm",
                                                  "demo.crm": "1"})
    done = finish(c, resp.headers["Location"])
    assert "The app is ready" in done
    tables = builder["api"].ok("GET", "/meta/apps/democrm")["tables"]
    first = tables[0]["key"]
    assert builder["api"].records("democrm", first)


def test_export_an_app_to_a_file_and_import_it_as_a_new_app(builder: dict[str, Any]) -> None:
    api, c = builder["api"], builder["client"]
    api.ok("POST", "/meta/apps", {"key": "shop", "label": {"en": "Shop", "zh-CN": "商店"}})
    api.ok("POST", "/meta/apps/shop/tables", {"key": "items", "label": "Items",
                                              "fields": [{"key": "name", "label": "Name", "type": "text"}]})
    resp = c.get("/apps/shop/export-file")
    assert resp.status_code == 200 and "attachment" in resp.headers["Content-Disposition"]
    data = resp.get_data()
    resp = c.post("/apps/import-file", data={"csrf_token": builder["csrf"], "import_key": "shop_copy",
                                             "app_file": (io.BytesIO(data), "shop.formwork.json")},
                  content_type="multipart/form-data")
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/apps/shop_copy")
    assert [t["key"] for t in api.ok("GET", "/meta/apps/shop_copy")["tables"]] == ["items"]
    # no key: a free one is chosen
    resp = c.post("/apps/import-file", data={"csrf_token": builder["csrf"],
                                             "app_file": (io.BytesIO(data), "shop.formwork.json")},
                  content_type="multipart/form-data")
    assert resp.headers["Location"].endswith("/apps/shop_2")


def test_bad_app_files(builder: dict[str, Any]) -> None:
    c = builder["client"]
    for data in (b"", b"not json", b'{"format": "other"}', b"[1, 2]"):
        page = html(c.post("/apps/import-file", data={"csrf_token": builder["csrf"],
                                                      "app_file": (io.BytesIO(data), "x.json")},
                           content_type="multipart/form-data"))
        assert "This file is not an app saved from Formwork." in page or "Choose the app file" in page
    page = html(c.post("/apps/import-file", data={"csrf_token": builder["csrf"], "import_key": "Bad Key!",
                                                  "app_file": (io.BytesIO(b"{}"), "x.json")},
                       content_type="multipart/form-data"))
    assert "Use lower-case letters" in page


def test_people_who_may_not_build_get_403(builder: dict[str, Any], app: Any) -> None:
    bob, csrf = login(app, "bob")
    assert bob.get("/templates").status_code == 403
    assert bob.post("/templates/crm/install", data={"csrf_token": csrf, "key.crm": "x"}).status_code == 403
    assert bob.post("/apps/import-file", data={"csrf_token": csrf}).status_code == 403
