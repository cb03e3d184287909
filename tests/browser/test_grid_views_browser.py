"""The grid as business users expect it, in a real browser and in both languages: columns hidden and
reordered (kept after a reload), rows grouped with counts and folded away, cells moved through with the
keyboard, copied as TSV and pasted (a bad row refused next to its cell), files put into an attachment cell by
its button, by drag-and-drop and by paste, a personal "Save as view", rows as cards on a phone and the kanban
there. Screenshots go to /tmp/shots-grid/."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from tests.browser.test_builder_browser import sales_app, use_locale
from tests.browser.test_ui_browser import browser, page, server, settled  # noqa: F401 - fixtures

pytestmark = pytest.mark.browser
SHOTS = Path(os.environ.get("FORMWORK_SHOTS") or "/tmp/shots-grid")

TEXT = {
    "en": {"columns": "Columns", "amount": "Amount", "stage": "Stage", "title": "Title", "group": "Group by",
           "lead": "Show or hide the group Lead", "records2": "2 records", "save_view": "Save as view",
           "view_name": "View name", "save": "Save", "mine": "Only you see this view", "not_number": "is not a number",
           "open": "Open record", "upload": "Upload to Photos", "bad_type": "is not an allowed type (image/*)"},
    "zh-CN": {"columns": "列设置", "amount": "金额", "stage": "阶段", "title": "标题", "group": "分组",
              "lead": "展开或收起分组“线索”", "records2": "2 条记录", "save_view": "保存为视图",
              "view_name": "视图名称", "save": "保存", "mine": "仅您自己可见", "not_number": "不是数字",
              "open": "打开记录", "upload": "上传到照片", "bad_type": "的文件类型不允许（image/*）"},
}


def shot(pg: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def picture(path: Path, color: tuple[int, int, int]) -> Path:
    from PIL import Image

    Image.new("RGB", (60, 40), color).save(path, "PNG")
    return path


def files_event(pg: Any, selector: str, kind: str, name: str, color: str) -> None:
    """Drop (``drop``) or paste (``paste``) a small picture onto an element, as the browser does with a file
    dragged from the desktop or a screenshot on the clipboard."""
    pg.evaluate("""([sel, kind, name, color]) => new Promise(done => {
        const c = document.createElement("canvas"); c.width = 60; c.height = 40;
        const g = c.getContext("2d"); g.fillStyle = color; g.fillRect(0, 0, 60, 40);
        c.toBlob(blob => {
          const dt = new DataTransfer();
          dt.items.add(new File([blob], name, {type: "image/png"}));
          const el = document.querySelector(sel), opts = {bubbles: true, cancelable: true};
          el.dispatchEvent(kind === "drop" ? new DragEvent("drop", {...opts, dataTransfer: dt})
                                           : new ClipboardEvent("paste", {...opts, clipboardData: dt}));
          done();
        }, "image/png");
    })""", [selector, kind, name, color])


def headers(pg: Any) -> list[str]:
    return [h.strip() for h in pg.locator("table.grid thead th[data-f]").all_inner_texts()]


@pytest.mark.parametrize("locale", ["en", "zh-CN"])
def test_grid_columns_groups_keyboard_paste_and_views(page: Any, server: dict[str, Any],  # noqa: F811
                                                      locale: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    url, api = server["url"], server["api"]
    key = "gv_" + locale.replace("-", "").lower()
    sales_app(api, key)
    api.ok("POST", f"/meta/apps/{key}/tables/deals/fields", {
        "key": "photos", "label": {"en": "Photos", "zh-CN": "照片"}, "type": "attachment",
        "options": {"max_files": 3, "max_size": 20000, "mime_types": ["image/*"]}})
    t = TEXT[locale]
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=url)
    use_locale(page, url, locale)
    page.goto(f"{url}/apps/{key}/deals?view=_all")
    grid = page.locator("table.grid")
    expect(grid).to_be_visible()
    assert "#" not in headers(page)
    assert headers(page)[:3] == [t["title"], t["amount"], t["stage"]]
    # the title opens its record; no id is shown anywhere in the grid
    expect(page.get_by_role("link", name="Alpha", exact=True)).to_have_attribute("href", f"/apps/{key}/deals/1")

    # hide a column: at once, and still so after a reload
    page.get_by_text(t["columns"], exact=True).click()
    with settled(page):
        page.locator(".col-list").get_by_label(t["amount"], exact=True).uncheck()
    expect(page.locator("table.grid thead th[data-f=amount]")).to_have_count(0)
    # drag "Stage" to the top of the list: the grid's first column after the checkbox
    with settled(page):
        page.locator('.col-list li[data-key=stage] .handle').drag_to(page.locator('.col-list li[data-key=name]'),
                                                                      target_position={"x": 20, "y": 2})
    assert headers(page)[0] == t["stage"]
    # Alt+Down on a column's checkbox moves it down the list too (Stage back below Title, then up again)
    with settled(page):
        page.locator(".col-list").get_by_label(t["stage"], exact=True).press("Alt+ArrowDown")
    assert headers(page)[:2] == [t["title"], t["stage"]]
    expect(page.locator(".col-list").get_by_label(t["stage"], exact=True)).to_be_focused()
    with settled(page):
        page.locator(".col-list").get_by_label(t["stage"], exact=True).press("Alt+ArrowUp")
    assert headers(page)[0] == t["stage"]
    shot(page, f"grid-columns-{locale}-1280")
    page.locator("h1").click()
    # resize the Title column by dragging its header's edge: kept for the user
    edge = page.locator("table.grid thead th[data-f=name] .col-resize")
    box = edge.bounding_box()
    assert box is not None
    with page.expect_response(lambda r: r.url.endswith("/grid-layout") and r.status == 204):
        page.mouse.move(box["x"] + 3, box["y"] + box["height"] / 2)
        page.mouse.down()
        page.mouse.move(box["x"] + 123, box["y"] + box["height"] / 2, steps=5)
        page.mouse.up()
    page.reload()
    assert headers(page)[0] == t["stage"] and t["amount"] not in headers(page)
    width = page.locator("table.grid thead th[data-f=name]").evaluate("th => th.getBoundingClientRect().width")
    assert width > 200, width
    # show Amount again, freeze the first column
    page.get_by_text(t["columns"]).first.click()
    with settled(page):
        page.locator(".col-list").get_by_label(t["amount"], exact=True).check()
    with settled(page):
        page.locator(".col-opts select[name=freeze]").select_option("1")
    expect(grid).to_have_attribute("data-freeze", "1")
    expect(page.locator("table.grid thead th.frozen-cell")).to_have_count(2)  # the checkbox and the first column
    expect(page.locator("details.col-pop")).to_have_attribute("open", "")  # open while its changes apply
    page.locator("h1").click()  # a click elsewhere closes it
    expect(page.locator(".col-list")).to_be_hidden()

    # group by stage: a header per group with its count, folded away on a click
    with settled(page):
        page.get_by_label(t["group"], exact=True).select_option("stage")
    lead_toggle = page.get_by_role("button", name=t["lead"])
    expect(lead_toggle).to_be_visible()
    expect(page.locator("tr.group-head[data-g=lead]")).to_contain_text(t["records2"])
    lead_rows = page.locator("table.grid tbody tr[data-g=lead][data-id]")
    expect(lead_rows).to_have_count(2)
    lead_toggle.click()
    expect(lead_rows.first).to_be_hidden()
    expect(lead_toggle).to_have_attribute("aria-expanded", "false")
    lead_toggle.click()
    expect(lead_rows.first).to_be_visible()
    shot(page, f"grid-grouped-{locale}-1280")
    with settled(page):
        page.get_by_label(t["group"], exact=True).select_option("")

    # keyboard: a focused cell moves with the arrows; Enter edits, Escape cancels and comes back
    assert headers(page)[:3] == [t["stage"], t["title"], t["amount"]]
    cur = page.locator("table.grid tbody td.cur")
    page.locator("table.grid tbody tr[data-id] td[data-f=name]").first.focus()
    expect(cur).to_have_attribute("data-f", "name")
    first_id = cur.locator("xpath=..").get_attribute("data-id")
    page.keyboard.press("ArrowRight")
    expect(cur).to_have_attribute("data-f", "amount")
    page.keyboard.press("ArrowDown")
    expect(cur.locator("xpath=..")).not_to_have_attribute("data-id", first_id or "")
    page.keyboard.press("ArrowUp")
    expect(cur.locator("xpath=..")).to_have_attribute("data-id", first_id or "")
    with settled(page):
        page.keyboard.press("Enter")
    expect(page.locator("table.grid td.editing input:not([type=hidden])").first).to_be_focused()
    with settled(page):
        page.keyboard.press("Escape")
    expect(page.locator("table.grid td.editing")).to_have_count(0)
    expect(cur).to_be_focused()
    expect(cur).to_have_attribute("data-f", "amount")

    # copy a rectangle (two rows of title and amount) as TSV
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("Shift+ArrowRight")
    page.keyboard.press("Shift+ArrowDown")
    expect(page.locator("table.grid tbody td.in-sel")).to_have_count(4)
    page.keyboard.press("Control+C")
    expect(page.locator("#grid-msg")).not_to_be_empty()
    copied = page.evaluate("navigator.clipboard.readText()")
    rows = [line.split("\t") for line in copied.split("\n")]
    assert len(rows) == 2 and all(len(r) == 2 for r in rows), copied
    assert rows[0][0] in ("Alpha", "Beta", "Gamma", "Delta")

    # paste two amounts: the good row is saved, the bad one refused next to its cell and left as it was
    page.keyboard.press("ArrowUp")  # a single cell again: the first row's amount
    expect(cur).to_have_attribute("data-f", "amount")
    expect(cur.locator("xpath=..")).to_have_attribute("data-id", first_id or "")
    page.evaluate("text => navigator.clipboard.writeText(text)", "7,777\nlots")
    page.keyboard.press("Control+V")
    alert = page.locator("table.grid td.has-err .cell-err")
    expect(alert).to_contain_text(t["not_number"])
    expect(page.locator(f'table.grid tr[data-id="{first_id}"] td[data-f=amount]')).to_contain_text("7,777")
    expect(grid).to_have_attribute("aria-busy", "false")
    shot(page, f"grid-paste-{locale}-1280")

    # an attachment cell takes a picture from its button, one dropped on it and one pasted into it; each
    # comes back as the row with its thumbnail; a file of a type the field refuses is named next to the cell
    files_cell = page.locator(f'table.grid tr[data-id="{first_id}"] td[data-f=photos]')
    button = files_cell.get_by_role("button", name=t["upload"], exact=True)
    expect(button).to_have_attribute("title", re.compile("image/"))
    with page.expect_file_chooser() as chooser:
        button.click()
    with settled(page):
        chooser.value.set_files(str(picture(tmp_path / "red.png", (200, 30, 30))))
    expect(files_cell.locator("img.cell-thumb")).to_have_count(1)
    expect(files_cell.locator("img.cell-thumb")).to_have_attribute("alt", "red.png")
    with settled(page):
        files_event(page, f'tr[data-id="{first_id}"] td[data-f=photos]', "drop", "green.png", "#1a1")
    expect(files_cell.locator("img.cell-thumb")).to_have_count(2)
    files_cell.focus()
    with settled(page):
        files_event(page, f'tr[data-id="{first_id}"] td[data-f=photos]', "paste", "blue.png", "#22c")
    expect(files_cell.locator("img.cell-thumb")).to_have_count(3)
    assert files_cell.locator("img.cell-thumb").first.evaluate("i => i.complete && i.naturalWidth > 0")
    (tmp_path / "notes.txt").write_text("not a picture")
    with page.expect_file_chooser() as chooser:
        files_cell.get_by_role("button", name=t["upload"], exact=True).click()
    chooser.value.set_files(str(tmp_path / "notes.txt"))
    expect(files_cell.locator(".cell-err[role=alert]")).to_contain_text("notes.txt")
    expect(files_cell.locator(".cell-err[role=alert]")).to_contain_text(t["bad_type"])
    names = [f["name"] for f in api.ok("GET", f"/data/{key}/deals/{first_id}")["fields"]["photos"]]
    assert names == ["red.png", "green.png", "blue.png"], names
    shot(page, f"grid-files-{locale}-1280")

    # Save as view: a personal view, marked as the user's own
    page.get_by_text(t["save_view"], exact=True).click()
    page.get_by_label(t["view_name"], exact=True).fill("My deals " + locale)
    with page.expect_navigation():
        page.locator(".save-view-box").get_by_role("button", name=t["save"]).click()
    tab = page.locator("nav.tabs a.tab.personal.active")
    expect(tab).to_contain_text("My deals " + locale)
    expect(tab).to_have_attribute("title", t["mine"])
    assert headers(page)[0] == t["stage"]
    shot(page, f"grid-view-{locale}-1280")

    # a phone: rows as cards with the title first, the kanban a column at a time
    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    card = page.locator("table.grid tbody tr[data-id]").first
    expect(card).to_be_visible()
    expect(page.locator("table.grid thead")).to_be_hidden()
    box = card.bounding_box()
    assert box is not None and box["width"] <= 390
    title_cell = card.locator("td.primary")
    assert title_cell.bounding_box()["y"] <= card.locator("td[data-f=amount]").bounding_box()["y"]  # type: ignore[index]
    expect(card.get_by_role("link", name=t["open"])).to_be_visible()
    shot(page, f"grid-cards-{locale}-390")
    api.ok("POST", f"/meta/apps/{key}/tables/deals/views", {"key": "board", "label": "Board", "type": "kanban",
                                                              "options": {"group_field": "stage"}})
    page.goto(f"{url}/apps/{key}/deals?view=board")
    board = page.locator(".board")
    expect(board).to_be_visible()
    width = page.evaluate("() => document.querySelector('.board .column').getBoundingClientRect().width")
    assert 300 <= width <= 390
    assert page.evaluate("() => getComputedStyle(document.querySelector('.board')).scrollSnapType").startswith("x")
    shot(page, f"kanban-{locale}-390")
