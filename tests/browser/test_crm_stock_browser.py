"""The CRM's stock and quotes in a real browser, in both languages, as the demo users (issue 16): a rep
confirms an order on its page and the product's stock falls; an order short of stock is refused next to
its status with nothing changed; a quote prints from its print view."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser import test_crm_daily_browser as daily
from tests.browser.test_ui_browser import pytestmark  # noqa: F401 - same skip rules

# the daily tests' fixtures: one CRM server with demo data per module, chromium, both languages
crm_server, lang, _unique = daily.crm_server, daily.lang, daily._unique
WORDS = {
    "en": {"status": "Status", "confirmed": "Confirmed", "save": "Save", "saved": "Saved.", "stock": "Stock",
           "short": "Not enough stock", "print_view": "Print view", "print": "Print", "lines": "Lines"},
    "zh-CN": {"status": "状态", "confirmed": "已确认", "save": "保存", "saved": "已保存。", "stock": "库存",
              "short": "库存不足", "print_view": "打印预览", "print": "打印", "lines": "报价明细"},
}


@pytest.fixture
def open_as(browser: Any, crm_server: dict[str, Any]) -> Iterator[Any]:
    """A logged-in page per user; any page error fails the test, except the refused confirmation's own 422."""
    yield from daily.pages_as(browser, crm_server["url"], tolerated="status of 422")


def _setup(crm_server: dict[str, Any], need: int) -> dict[str, int]:
    api = crm_server["api"]
    pid = api.ok("POST", "/data/crm/products", {"fields": {"name": _unique("浏览器库存品"), "price": 300}})["id"]
    wid = api.ok("POST", "/data/crm/warehouses", {"fields": {"name": _unique("浏览器仓")}})["id"]
    api.ok("POST", "/data/crm/stock_movements", {"fields": {"type": "in", "product": pid, "warehouse": wid,
                                                            "quantity": 10}})
    cust = api.ok("POST", "/data/crm/customers", {"fields": {"name": _unique("浏览器客户"),
                                                             "owner": crm_server["users"]["am1"]}})["id"]
    order = api.ok("POST", "/data/crm/orders", {"fields": {"customer": cust, "warehouse": wid,
                                                           "owner": crm_server["users"]["am1"]}})["id"]
    api.ok("POST", "/data/crm/order_lines", {"fields": {"order": order, "product": pid, "quantity": need}})
    return {"product": pid, "warehouse": wid, "order": order, "customer": cust}


def _confirm(page: Any, url: str, order: int, w: dict[str, str]) -> None:
    page.goto(f"{url}/apps/crm/orders/{order}")
    page.get_by_label(re.compile("^" + re.escape(w["status"]) + r"\*?$")).select_option(label=w["confirmed"])
    page.get_by_role("button", name=w["save"], exact=True).click()


def test_confirming_an_order_takes_the_stock(open_as: Any, crm_server: dict[str, Any], lang: str) -> None:
    from playwright.sync_api import expect

    w, url, api = WORDS[lang], crm_server["url"], crm_server["api"]
    ids = _setup(crm_server, 4)
    page = open_as("am1")
    _confirm(page, url, ids["order"], w)
    expect(page.get_by_role("status")).to_have_text(w["saved"])
    page.goto(f"{url}/apps/crm/products/{ids['product']}")
    expect(page.locator("#in-stock")).to_have_text("6")
    assert api.ok("GET", f"/data/crm/orders/{ids['order']}")["fields"]["status"] == "confirmed"

    # an order wanting more than is left is refused next to its status; nothing changes
    short = _setup(crm_server, 4)
    api.ok("POST", "/data/crm/stock_movements", {"fields": {"type": "out", "product": short["product"],
                                                            "warehouse": short["warehouse"], "quantity": 8}})
    _confirm(page, url, short["order"], w)
    expect(page.get_by_text(re.compile(re.escape(w["short"])))).to_be_visible()
    assert api.ok("GET", f"/data/crm/orders/{short['order']}")["fields"]["status"] == "draft"
    assert api.ok("GET", f"/data/crm/products/{short['product']}")["fields"]["stock"] == 2


def test_a_quote_prints_from_its_print_view(open_as: Any, crm_server: dict[str, Any], lang: str) -> None:
    from playwright.sync_api import expect

    w, url, api = WORDS[lang], crm_server["url"], crm_server["api"]
    ids = _setup(crm_server, 1)
    quote = api.ok("POST", "/data/crm/quotes", {"fields": {"customer": ids["customer"],
                                                           "owner": crm_server["users"]["am1"]}})
    api.ok("POST", "/data/crm/quote_lines", {"fields": {"quote": quote["id"], "product": ids["product"],
                                                        "quantity": 3, "discount": 10}})
    page = open_as("am1")
    page.goto(f"{url}/apps/crm/quotes/{quote['id']}")
    page.get_by_role("link", name=w["print_view"], exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(quote["fields"]["number"])
    expect(page.get_by_role("heading", level=2, name=w["lines"])).to_be_visible()
    expect(page.get_by_role("cell", name="¥810.00", exact=True)).to_be_visible()  # 3 × 300 less 10 %, money
    expect(page.locator("body[data-ready='1']")).to_have_count(1)
    expect(page.get_by_role("button", name=w["print"], exact=True)).to_be_visible()
    page.emulate_media(media="print")
    expect(page.get_by_role("button", name=w["print"], exact=True)).to_be_hidden()
