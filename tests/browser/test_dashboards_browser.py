"""Dashboards in a real browser, in both languages: build "order amount by month and owner" with a date
filter, drill into one bar's records, switch to last-year comparison, export the data."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from formwork import create_app, db
from formwork.runtime import auth
from formwork.ui.strings.dashboards import STRINGS
from tests.browser.test_ui_browser import PASSWORD, serving, settled  # noqa: F401 - fixtures and marks
from tests.browser.test_ui_browser import pytestmark as browser_marks
from tests.helpers import Api

pytestmark = browser_marks
ORDERS = [  # name, amount, order date, owner
    ("A-1", 1200, "2026-01-10", "lina"), ("A-2", 800, "2026-01-25", "lina"), ("A-3", 500, "2026-01-15", "tom"),
    ("A-4", 3000, "2026-02-03", "tom"), ("A-5", 700, "2026-02-20", "lina"), ("A-6", 9999, "2026-05-01", "tom"),
    ("B-1", 400, "2025-01-05", "lina"), ("B-2", 600, "2025-02-11", "tom")]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from formwork.runtime.ratelimit import form_limiter, login_limiter

    folder = tmp_path_factory.mktemp("dash-browser")
    app = create_app({"DATABASE_URL": f"sqlite:///{folder / 'ui.db'}", "SECRET_KEY": "browser-secret",
                      "TESTING": True, "FILES_DIR": str(folder / "files")})
    login_limiter.reset()
    form_limiter.reset()
    with db.transaction(app.extensions["formwork"].engine) as conn:
        uid = auth.create_user(conn, {"username": "admin", "name": "Ada Admin", "password": PASSWORD},
                               is_admin=True)
        users = {name: auth.create_user(conn, {"username": name, "name": full, "password": PASSWORD})
                 for name, full in (("lina", "李娜 Lina"), ("tom", "Tom Wu"))}
        token = auth.create_token(conn, uid, "setup", None)["token"]
    api = Api(app.test_client(), token)
    api.ok("POST", "/meta/apps", {"key": "shop", "label": {"en": "Shop", "zh-CN": "商店"}})
    api.ok("POST", "/meta/apps/shop/tables", {"key": "orders", "label": {"en": "Orders", "zh-CN": "订单"}, "fields": [
        {"key": "name", "label": {"en": "Order no.", "zh-CN": "订单号"}, "type": "text"},
        {"key": "amount", "label": {"en": "Amount", "zh-CN": "金额"}, "type": "currency",
         "options": {"currency": "CNY"}},
        {"key": "order_date", "label": {"en": "Order date", "zh-CN": "下单日期"}, "type": "date"},
        {"key": "owner", "label": {"en": "Owner", "zh-CN": "负责人"}, "type": "user"}]})
    for name, amount, date, owner in ORDERS:
        api.ok("POST", "/data/shop/orders", {"fields": {"name": name, "amount": amount, "order_date": date,
                                                        "owner": users[owner]}})
    with serving(app) as url:
        try:
            yield {"url": url, "api": api, "app": app}
        finally:
            app.extensions["formwork"].engine.dispose()


@pytest.fixture
def page(browser: Any, server: dict[str, Any]) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US", accept_downloads=True)
    ctx.set_default_timeout(30000)
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(f"console: {m.text} {m.location.get('url')}")
          if m.type == "error" else None)
    try:
        yield pg
    finally:
        ctx.close()
    assert not errors, errors


def log_in(page: Any, url: str, locale: str) -> None:
    page.goto(url + "/login")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(url + "/")
    current = page.locator("select[name=locale]").input_value()
    if current != locale:
        with page.expect_navigation():
            page.locator("select[name=locale]").select_option(locale)


def bar_point(page: Any, widget: str, category: int, series: int) -> tuple[float, float]:
    """Where on the page one bar of a stacked bar chart is drawn (ECharts maps data to pixels)."""
    box = page.locator(f"[data-widget={widget}] .chart").bounding_box()
    xy = page.evaluate("""([w, c, s]) => {
        const el = document.querySelector(`[data-widget=${w}] .chart`);
        const chart = echarts.getInstanceByDom(el);
        const opt = chart.getOption();
        let below = 0;
        for (let i = 0; i < s; i++) below += Number(opt.series[i].data[c] || 0);
        const v = Number(opt.series[s].data[c] || 0);
        return chart.convertToPixel({xAxisIndex: 0, yAxisIndex: 0}, [c, below + v / 2]);
    }""", [widget, category, series])
    return box["x"] + xy[0], box["y"] + xy[1]


@pytest.mark.parametrize("locale", ["en", "zh-CN"])
def test_build_filter_drill_compare_export(page: Any, server: dict[str, Any], locale: str) -> None:
    from openpyxl import load_workbook
    from playwright.sync_api import expect

    w = STRINGS[locale]
    url, api = server["url"], server["api"]
    log_in(page, url, locale)
    page.goto(url + "/apps/shop")
    # a new dashboard from the sidebar
    page.get_by_role("link", name=re.compile("New dashboard|新建仪表盘")).click()
    page.get_by_label(w["dashb_name_en"]).fill(f"Review {locale}")
    page.get_by_label(w["dashb_name_zh"]).fill(f"复盘 {locale}")
    page.get_by_role("button", name=w["dashb_create"]).click()
    page.wait_for_url(re.compile(r"/dashboards/[a-z0-9_]+/edit$"))
    edit_url = page.url
    # the widget: order amount by month and owner
    page.get_by_role("link", name=w["dashb_add_widget"]).first.click()
    page.get_by_label(w["dashb_w_label"], exact=True).fill("Order amount by month and owner")
    page.get_by_label(w["dashb_w_type"], exact=True).select_option("stacked_bar")
    page.get_by_label(w["dashb_w_group1"], exact=True).select_option("order_date")
    page.get_by_label(w["dashb_w_bucket1"], exact=True).select_option("month")
    page.get_by_label(w["dashb_w_group2"], exact=True).select_option("owner")
    page.get_by_label(w["dashb_w_fn"], exact=True).select_option("sum")
    page.get_by_label(w["dashb_w_field"], exact=True).select_option("amount")
    page.get_by_label(w["dashb_w_format"], exact=True).select_option("currency")
    page.get_by_label(w["dashb_width"], exact=True).select_option("12")
    page.get_by_role("button", name=w["dashb_save_widget"]).click()
    page.wait_for_url(edit_url)
    # and a KPI of the same amount, to compare
    page.get_by_role("link", name=w["dashb_add_widget"]).first.click()
    page.get_by_label(w["dashb_w_label"], exact=True).fill("Order amount")
    page.get_by_label(w["dashb_w_type"], exact=True).select_option("kpi")
    page.get_by_label(w["dashb_w_fn"], exact=True).select_option("sum")
    page.get_by_label(w["dashb_w_field"], exact=True).select_option("amount")
    page.get_by_label(w["dashb_w_format"], exact=True).select_option("currency")
    page.get_by_role("button", name=w["dashb_save_widget"]).click()
    page.wait_for_url(edit_url)
    # the dashboard's date filter runs on the order date
    label = w["dashb_period_field"].format(table="Orders" if locale == "en" else "订单")
    page.get_by_label(label).select_option("order_date")
    page.get_by_role("button", name=w["dashb_save_settings"]).click()
    page.wait_for_url(edit_url)
    page.get_by_role("link", name=w["dashb_view"]).click()
    page.wait_for_url(re.compile(r"/dashboards/[a-z0-9_]+$"))
    page.wait_for_function("() => document.body.dataset.htmxSettled !== undefined")
    # a custom period: January and February 2026
    page.get_by_label(w["dash_period"], exact=True).select_option("custom")
    with settled(page):
        page.get_by_label(w["dash_from"], exact=True).fill("2026-01-01")
    with settled(page):
        page.get_by_label(w["dash_to"], exact=True).fill("2026-02-28")
    kpi = page.get_by_role("region", name="Order amount", exact=True)
    expect(kpi.locator("a.kpi")).to_have_text("¥6,200")
    chart = page.locator("[data-widget] .chart").first
    expect(chart.locator("canvas")).to_have_count(1)
    expect(page.locator("[data-widget] .chart[data-ready]")).to_have_count(1)  # drawn, animation over
    widget = chart.locator("xpath=..").get_attribute("data-widget")
    # drill: the first month's first owner's bar opens exactly those orders
    opt = page.evaluate("w => echarts.getInstanceByDom(document.querySelector(`[data-widget=${w}] .chart`))"
                        ".getOption()", widget)
    categories = opt["xAxis"][0]["data"]
    assert categories == (["Jan 2026", "Feb 2026"] if locale == "en" else ["2026年1月", "2026年2月"])
    names = [s["name"] for s in opt["series"]]
    s = names.index("李娜 Lina")
    x, y = bar_point(page, widget, 0, s)
    with page.expect_navigation():
        page.mouse.click(x, y)
    assert "/apps/shop/orders" in page.url
    rows = page.locator("#rows tr[data-id]")
    expect(rows).to_have_count(2)
    expect(page.locator("#rows")).to_contain_text("A-1")
    expect(page.locator("#rows")).to_contain_text("A-2")
    page.go_back()
    page.wait_for_function("() => document.body.dataset.htmxSettled !== undefined")
    # compare with the same period last year
    with settled(page):
        page.get_by_label(w["dash_compare"], exact=True).select_option("previous_year")
    kpi = page.get_by_role("region", name="Order amount", exact=True)
    expect(kpi.locator(".kpi-cmp")).to_contain_text(w["dash_cmp_previous_year"] + ": ¥1,000")
    expect(kpi.locator(".kpi-cmp .delta")).to_have_text("+520.0%")
    # export the chart's data
    region = page.get_by_role("region", name="Order amount by month and owner")
    with page.expect_download() as dl:
        region.get_by_role("link", name=re.compile(w["dash_export_xlsx"])).click()
    sheet = load_workbook(io.BytesIO(Path(dl.value.path()).read_bytes())).active
    rows_x = list(sheet.iter_rows(values_only=True))
    month = "Jan 2026" if locale == "en" else "2026年1月"
    assert {(r[0], r[1]): float(r[2]) for r in rows_x[1:]}[(month, "李娜 Lina")] == 2000 and len(rows_x) == 5
    page.screenshot(path=f"/tmp/shots-dash/browser-{locale}.png", full_page=True)
    assert api.ok("GET", f"/meta/apps/shop/dashboards/{page.url.rsplit('/', 1)[-1].split('?')[0]}")["widgets"]
