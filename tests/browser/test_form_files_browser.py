"""A public form takes an attachment in a real browser (both languages): chosen with the button, and an
oversized one refused with the limit named."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.test_builder_browser import SHOTS
from tests.browser.test_ui_browser import browser, server  # noqa: F401 - fixtures and marks

pytestmark = pytest.mark.browser


@pytest.fixture
def page(browser: Any, server: dict[str, Any]) -> Iterator[Any]:  # noqa: F811
    """As tests/browser/test_ui_browser.py's, except that a refused form page answers 422 by design (the
    browser logs that status, which is not a script error)."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 860}, locale="en-US")
    ctx.set_default_timeout(30000)
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(f"console: {m.text}")
          if m.type == "error" and "status of 422" not in m.text else None)
    try:
        yield pg
    finally:
        ctx.close()
    assert not errors, errors


@pytest.mark.parametrize("locale", ["en", "zh-CN"])
def test_a_public_form_takes_an_attachment(page: Any, server: dict[str, Any], locale: str,  # noqa: F811
                                           tmp_path: Any) -> None:
    from playwright.sync_api import expect

    url, api = server["url"], server["api"]
    key = "ff_" + locale.replace("-", "").lower()
    api.ok("POST", "/meta/apps", {"key": key, "label": "Forms"})
    api.ok("POST", f"/meta/apps/{key}/tables", {"key": "requests", "label": {"en": "Requests", "zh-CN": "申请"},
                                                "fields": [
        {"key": "name", "label": {"en": "Name", "zh-CN": "姓名"}, "type": "text", "required": True,
         "description": "Your full name"},
        {"key": "files", "label": {"en": "Photos", "zh-CN": "照片"}, "type": "attachment",
         "options": {"max_files": 2, "max_size": 2000, "mime_types": ["image/*"]}}],
        "views": [{"key": "apply", "label": {"en": "Apply", "zh-CN": "申请表"}, "type": "form",
                   "options": {"public": True, "success_message": {"en": "Received!", "zh-CN": "已收到！"}}}]})
    small, big = tmp_path / "photo.png", tmp_path / "huge.png"
    small.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 100)
    big.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 5000)
    page.goto(f"{url}/f/{key}/requests/apply")
    if locale != "en":
        with page.expect_navigation():
            page.get_by_role("button", name="中文").click()
    name, photos = ("Name", "Photos") if locale == "en" else ("姓名", "照片")
    expect(page.locator("body")).to_contain_text("Your full name")
    page.get_by_label(name).fill("Li Lei")
    page.get_by_label(photos).set_input_files(str(big))
    expect(page.locator(".picked-files")).to_contain_text("huge.png")
    page.get_by_role("button", name="Submit" if locale == "en" else "提交").click()
    expect(page.locator(".err[role=alert]")).to_contain_text("huge.png")
    expect(page.get_by_label(name)).to_have_value("Li Lei")
    assert api.records(key, "requests") == []
    page.get_by_label(photos).set_input_files(str(small))
    page.get_by_role("button", name="Submit" if locale == "en" else "提交").click()
    expect(page.locator(".flash.ok")).to_have_text("Received!" if locale == "en" else "已收到！")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"public-form-{locale}.png"), full_page=True)
    rec = api.records(key, "requests")[0]["fields"]
    assert rec["name"] == "Li Lei" and [f["name"] for f in rec["files"]] == ["photo.png"]
