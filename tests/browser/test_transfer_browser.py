"""Import and export in a real browser: a messy CSV and a GBK file through the wizard (English and
Chinese), the report and the rejected rows; the filtered view exported and read back."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest

from tests.browser.test_ui_browser import browser, log_in, page, server  # noqa: F401 - fixtures and marks

pytestmark = pytest.mark.browser
SHOTS = Path("/tmp/shots-data")


@pytest.fixture(scope="module")
def shop(server: dict[str, Any]) -> dict[str, Any]:  # noqa: F811
    api = server["api"]
    api.ok("POST", "/meta/apps", {"key": "shop", "label": {"en": "Shop", "zh-CN": "商店"}})
    api.ok("POST", "/meta/apps/shop/tables", {"key": "customers", "label": {"en": "Customers", "zh-CN": "客户"},
                                              "fields": [
        {"key": "name", "label": {"en": "Name", "zh-CN": "名称"}, "type": "text", "required": True},
        {"key": "spend", "label": {"en": "Spend", "zh-CN": "消费"}, "type": "number"},
        {"key": "city", "label": {"en": "City", "zh-CN": "城市"}, "type": "text"}],
        "views": [{"key": "all", "label": {"en": "All customers", "zh-CN": "全部客户"}, "type": "grid"}]})
    return server


def shot(pg: Any, name: str) -> None:
    SHOTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def clear(api: Any) -> None:
    for r in api.records("shop", "customers", limit=1000):
        api.ok("DELETE", f"/data/shop/customers/{r['id']}")


MESSY = ("Name,Spend,City\n"
         "Ann,10,Paris\n"
         "Bob,20,Rome,extra\n"
         "Cid,lots,Oslo\n"
         "Dee,40,Lima\n")


def test_messy_csv_through_the_wizard(page: Any, shop: dict[str, Any], tmp_path: Path) -> None:  # noqa: F811
    from playwright.sync_api import expect

    url, api = shop["url"], shop["api"]
    clear(api)
    log_in(page, url)
    page.goto(url + "/apps/shop/customers")
    page.get_by_role("link", name="Import").click()
    expect(page).to_have_title("Import into Customers · Formwork")
    # a file that is not a spreadsheet: refused on the first step, nothing written
    bad = tmp_path / "photo.csv"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    page.get_by_label("Spreadsheet file (CSV or Excel .xlsx)").set_input_files(str(bad))
    page.get_by_role("button", name="Upload and continue").click()
    expect(page.get_by_role("alert")).to_contain_text("This file is not a spreadsheet.")
    messy = tmp_path / "messy.csv"
    messy.write_text(MESSY)
    page.get_by_label("Spreadsheet file (CSV or Excel .xlsx)").set_input_files(str(messy))
    page.get_by_role("button", name="Upload and continue").click()
    expect(page.get_by_label("Field: Spend")).to_have_value("spend")
    shot(page, "import-map-en")
    page.get_by_role("button", name="Check the rows").click()
    expect(page.get_by_role("status")).to_have_text(
        "4 rows checked: 2 would be added, 0 would be updated, 2 have problems.")
    problems = page.get_by_role("table", name="Rows with problems")
    expect(problems).to_contain_text("This row has 4 cells but the header has 3.")
    expect(problems).to_contain_text("Spend: not a number.")
    shot(page, "import-check-en")
    page.get_by_role("button", name="Import 4 rows").click()
    expect(page.get_by_role("heading", name="Import finished")).to_be_visible(timeout=20000)
    expect(page.locator(".report")).to_contain_text("Rows 2, 5")
    expect(page.locator(".report")).to_contain_text("Rows 3-4")
    shot(page, "import-report-en")
    with page.expect_download() as dl:
        page.get_by_role("link", name="Download the rejected rows").click()
    rows = list(csv.reader(io.StringIO(Path(dl.value.path()).read_text("utf-8-sig"))))
    assert [r[:2] for r in rows[1:]] == [["3", "This row has 4 cells but the header has 3."],
                                         ["4", "Spend: not a number."]]
    assert sorted(r["fields"]["name"] for r in api.records("shop", "customers")) == ["Ann", "Dee"]


def test_gbk_file_in_chinese(page: Any, shop: dict[str, Any], tmp_path: Path) -> None:  # noqa: F811
    from playwright.sync_api import expect

    url, api = shop["url"], shop["api"]
    clear(api)
    log_in(page, url)
    page.goto(url + "/apps/shop/customers/import")
    page.get_by_label("Language").select_option("zh-CN")
    expect(page.get_by_role("button", name="上传并继续")).to_be_visible()
    gbk = tmp_path / "客户.csv"
    gbk.write_bytes("名称,消费,城市\n张三,100,北京\n李四,两百,上海\n王五,300,广州,多余\n".encode("gbk"))
    page.get_by_label("表格文件（CSV 或 Excel .xlsx）").set_input_files(str(gbk))
    page.get_by_role("button", name="上传并继续").click()
    expect(page.get_by_label("字段: 城市")).to_have_value("city")
    shot(page, "import-map-zh")
    page.get_by_role("button", name="检查数据").click()
    expect(page.get_by_role("status")).to_contain_text("已检查 3 行")
    page.get_by_role("button", name="导入 3 行").click()
    expect(page.get_by_role("heading", name="导入完成")).to_be_visible(timeout=20000)
    report = page.get_by_role("table", name="有问题的行")
    expect(report).to_contain_text("消费：不是数字。")
    expect(report).to_contain_text("这一行有 4 个单元格，但标题行只有 3 列。")
    shot(page, "import-report-zh")
    assert [r["fields"]["city"] for r in api.records("shop", "customers")] == ["北京"]
    page.get_by_label("语言").select_option("en")
    expect(page.get_by_label("Language")).to_be_visible()


def test_export_the_filtered_view_and_read_it_back(page: Any, shop: dict[str, Any]) -> None:  # noqa: F811
    from playwright.sync_api import expect

    url, api = shop["url"], shop["api"]
    clear(api)
    for name, city in (("Ann", "Paris"), ("Bob", "Rome"), ("Cid", "Paris")):
        api.ok("POST", "/data/shop/customers", {"fields": {"name": name, "city": city}})
    log_in(page, url)
    page.goto(url + "/apps/shop/customers?view=all&sort=-name&ff=city&fo=eq&fv=Paris")
    expect(page.locator("#rows tr[data-id]")).to_have_count(2)
    page.locator("summary", has_text="Export").click()
    with page.expect_download() as dl:
        page.get_by_role("link", name="Export as CSV").click()
    rows = list(csv.reader(io.StringIO(Path(dl.value.path()).read_text("utf-8-sig"))))
    assert rows[0] == ["Name", "Spend", "City"]
    assert [r[0] for r in rows[1:]] == ["Cid", "Ann"]

