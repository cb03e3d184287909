"""The pages in a real browser: Playwright drives Debian's chromium against a live server on SQLite."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from formwork import create_app, db
from formwork.runtime import auth
from tests.browser.conftest import ARGS, CHROMIUM, browser  # noqa: F401 - shared by the modules importing it
from tests.helpers import Api

PASSWORD = "browser-pass-1"

pytestmark = pytest.mark.browser
if not shutil.which(CHROMIUM) and not os.environ.get("CI"):
    pytestmark = [pytest.mark.browser, pytest.mark.skip(reason=f"{CHROMIUM} is missing (run `make browser`); "
                                                               "in CI (CI set) these tests fail instead")]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The real WSGI server on 127.0.0.1 (a free port) in a thread, with an app built through the API."""
    from formwork.runtime.ratelimit import form_limiter, login_limiter

    folder = tmp_path_factory.mktemp("browser")
    app = create_app({"DATABASE_URL": f"sqlite:///{folder / 'ui.db'}", "SECRET_KEY": "browser-secret",
                      "TESTING": True, "FILES_DIR": str(folder / "files")})
    login_limiter.reset()
    form_limiter.reset()
    with db.transaction(app.extensions["formwork"].engine) as conn:
        uid = auth.create_user(conn, {"username": "admin", "name": "Ada Admin", "password": PASSWORD},
                               is_admin=True)
        token = auth.create_token(conn, uid, "setup", None)["token"]
    api = Api(app.test_client(), token)
    api.ok("POST", "/meta/apps", {"key": "sales", "label": {"en": "Sales", "zh-CN": "销售"}})
    api.ok("POST", "/meta/apps/sales/tables", {"key": "leads", "label": {"en": "Leads", "zh-CN": "线索"}, "fields": [
        {"key": "name", "label": {"en": "Name", "zh-CN": "姓名"}, "type": "text", "required": True},
        {"key": "phone", "label": {"en": "Phone", "zh-CN": "电话"}, "type": "phone"}],
        "views": [{"key": "all", "label": {"en": "All leads", "zh-CN": "全部线索"}, "type": "grid"},
                  {"key": "web", "label": {"en": "Contact us", "zh-CN": "联系我们"}, "type": "form",
                   "options": {"public": True, "success_message": {"en": "Thanks!", "zh-CN": "谢谢！"}}}]})
    with serving(app) as url:
        try:
            yield {"url": url, "api": api, "app": app}
        finally:
            app.extensions["formwork"].engine.dispose()


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """The real WSGI server on 127.0.0.1 (a free port) in a thread, for as long as the block runs."""
    from werkzeug.serving import make_server

    srv = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_port}"
    finally:
        srv.shutdown()
        thread.join(5)
        srv.server_close()


@pytest.fixture
def page(browser: Any, server: dict[str, Any]) -> Iterator[Any]:  # noqa: F811
    ctx = browser.new_context(viewport={"width": 1280, "height": 860}, locale="en-US")
    ctx.set_default_timeout(30000)
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    # htmx reports a bad attribute (e.g. an hx-trigger syntax error) only on the console: fail on it
    pg.on("console", lambda m: errors.append(f"console: {m.text} {m.location.get('url')}")
          if m.type == "error" else None)
    try:
        yield pg
    finally:
        ctx.close()
    assert not errors, errors


QUIET = "() => document.body && document.body.dataset.htmxInflight === '0'"
SETTLED = "n => +document.body.dataset.htmxSettled > n && document.body.dataset.htmxInflight === '0'"


@contextmanager
def settled(page: Any) -> Iterator[None]:
    """Run the block, then wait for the page's settle signal (static/app.js): a request the block started
    has been swapped and processed by htmx, and none is in flight. Interacting with swapped-in content
    before htmx has processed it loses the event (the old flaky filter-builder test)."""
    page.wait_for_function(QUIET)
    before = int(page.evaluate("document.body.dataset.htmxSettled"))
    yield
    page.wait_for_function(SETTLED, arg=before)


def log_in(page: Any, url: str) -> None:
    page.goto(url + "/")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(url + "/")


def test_build_a_table_then_work_with_records(page: Any, server: dict[str, Any]) -> None:
    from playwright.sync_api import expect

    url, api = server["url"], server["api"]
    log_in(page, url)
    page.click("a.app-card")
    # builder: a new table, then a currency field and a single select field
    page.click("text=New table")
    page.get_by_role("textbox", name="Name", exact=True).fill("Deals")  # the key is made from the name
    page.click("button:has-text('Create')")
    page.wait_for_url(url + "/apps/sales/deals")
    page.goto(url + "/apps/sales/deals/fields/new")
    page.get_by_role("textbox", name="Name", exact=True).fill("Amount")
    with settled(page):
        page.select_option("select[name=type]", "currency")
    expect(page.locator("input[name=currency]")).to_be_visible()  # the options part follows the type
    page.click("button:has-text('Save')")
    page.wait_for_url(url + "/apps/sales/deals/fields")
    page.click("text=New field")
    page.get_by_role("textbox", name="Name", exact=True).fill("Stage")
    with settled(page):
        page.select_option("select[name=type]", "single_select")
    page.get_by_role("button", name="Add option").click()
    page.get_by_label("Option name").last.fill("lead")
    page.get_by_label("Option name").last.press("Enter")  # Enter adds the next option
    page.get_by_label("Option name").last.fill("won")
    page.get_by_label("Colour").last.select_option("green")
    page.click("button:has-text('Save')")
    page.wait_for_url(url + "/apps/sales/deals/fields")
    expect(page.locator("table.plain")).to_contain_text("Stage")
    # records: quick add in the grid, then inline-edit a cell
    page.goto(url + "/apps/sales/deals")
    for name in ("Acme order", "Globex order"):
        page.fill("form.quick-add input[name=value]", name)
        with settled(page):
            page.click("form.quick-add button")
        expect(page.locator("#rows")).to_contain_text(name)
    row = page.locator("#rows tr", has_text="Acme order")
    with settled(page):
        row.locator("td[data-f=amount]").click()
    cell_input = page.locator("td.editing input[name=amount]")
    cell_input.fill("1500")
    with settled(page):
        cell_input.press("Enter")
    expect(page.locator("#rows tr", has_text="Acme order").locator("td[data-f=amount]")).to_have_text("¥1,500.00")
    row = page.locator("#rows tr", has_text="Globex order")
    with settled(page):
        row.locator("td[data-f=stage]").click()
    page.locator("td.editing select[name=stage]").select_option("won")
    with settled(page):
        page.locator("td.editing button[aria-label=Save]").click()
    expect(page.locator("#rows tr", has_text="Globex order").locator("td[data-f=stage]")).to_have_text("won")
    assert api.records("sales", "deals", search="Acme")[0]["fields"]["amount"] == 1500
    # search and the filter builder
    with settled(page):
        page.fill("#search", "glob")
    expect(page.locator("#rows tr[data-id]")).to_have_count(1)
    with settled(page):
        page.fill("#search", "")
    expect(page.locator("#rows tr[data-id]")).to_have_count(2)
    page.click("summary:has-text('Filter')")
    with settled(page):
        page.get_by_role("button", name="Add condition").click()
    with settled(page):  # the condition's inputs follow the chosen field
        page.get_by_label("Field", exact=True).select_option(label="Stage")
    page.get_by_label("Value", exact=True).select_option("won")
    with settled(page):
        page.click(".filter-box button:has-text('Apply')")
    expect(page.locator("#rows tr[data-id]")).to_have_count(1)
    with settled(page):
        page.get_by_label("Comparison").select_option("ne")
    with settled(page):
        page.click(".filter-box button:has-text('Apply')")
    expect(page.locator("#rows")).not_to_contain_text("Globex order")
    with settled(page):
        page.get_by_label("Comparison").select_option("eq")
    with settled(page):
        page.click(".filter-box button:has-text('Apply')")
    expect(page.locator("#rows tr[data-id]")).to_have_count(1)
    expect(page.locator("#rows")).to_contain_text("Globex order")
    page.screenshot(path="/tmp/formwork-grid.png", full_page=True)
    # a kanban view through the builder, then drag a card to another column
    page.goto(url + "/apps/sales/deals/views/new")
    page.get_by_role("textbox", name="Name", exact=True).fill("Pipeline")
    page.select_option("select[name=type]", "kanban")
    page.select_option("select[name=group_field]", "stage")
    page.click("button:has-text('Save')")
    page.wait_for_url(url + "/apps/sales/deals?view=pipeline")
    card = page.locator(".card", has_text="Acme order")
    expect(card).to_be_visible()
    with settled(page):
        card.drag_to(page.locator(".column[data-value=won]"))
    expect(page.locator(".column[data-value=won]")).to_contain_text("Acme order")
    assert api.records("sales", "deals", search="Acme")[0]["fields"]["stage"] == "won"
    with settled(page):
        page.locator(".card", has_text="Globex order").locator("select[name=value]").select_option("lead")
    expect(page.locator(".column[data-value=lead]")).to_contain_text("Globex order")
    page.screenshot(path="/tmp/formwork-kanban.png", full_page=True)
    # the record page shows the history of those changes
    page.locator(".card-title", has_text="Acme order").click()
    expect(page.locator(".timeline")).to_contain_text("Ada Admin")
    expect(page.locator(".timeline")).to_contain_text("1,500.00")
    expect(page.locator(".timeline")).to_contain_text("won")
    page.fill("input[name=name]", "Acme big order")
    page.click(".fields-form button:has-text('Save')")
    expect(page.locator(".flash.ok")).to_be_visible()
    expect(page.locator("h1")).to_have_text("Acme big order")
    page.screenshot(path="/tmp/formwork-record.png", full_page=True)


def test_public_form_and_chinese(page: Any, server: dict[str, Any]) -> None:
    from playwright.sync_api import expect

    url, api = server["url"], server["api"]
    page.goto(url + "/f/sales/leads/web")
    page.fill("input[name=name]", "Wang Wei")
    page.fill("input[name=phone]", "13800000000")
    page.click("button:has-text('Submit')")
    expect(page.locator(".flash.ok")).to_have_text("Thanks!")
    assert api.records("sales", "leads", search="Wang")[0]["fields"]["phone"] == "13800000000"
    log_in(page, url)
    page.goto(url + "/apps/sales/leads")
    page.select_option("select[name=locale]", "zh-CN")
    page.wait_for_load_state()
    expect(page.locator("h1")).to_have_text("线索")
    expect(page.locator("table.grid thead")).to_contain_text("姓名")
    expect(page.locator(".tabs")).to_contain_text("全部线索")
    expect(page.locator("body")).to_contain_text("退出")
    page.screenshot(path="/tmp/formwork-zh.png", full_page=True)
    page.select_option("select[name=locale]", "en")
    page.wait_for_load_state()
    expect(page.locator("h1")).to_have_text("Leads")
