"""The form designer and attachments in a real browser, in both languages: design a form (sections, order,
help and section titles in English and Chinese (the form shows the reader's), required, a hidden prefilled
value, success message, public link with its QR code), open the public link, send it with an attachment and
see the success message; a filled honeypot stores nothing. On a record page: add files by button, paste and
drop, preview a picture in the lightbox, remove a file and see the history name it."""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.test_builder_browser import SHOTS, use_locale
from tests.browser.test_ui_browser import browser, server  # noqa: F401 - fixtures

pytestmark = pytest.mark.browser

T = {
    "en": {"design": "Form designer", "add_section": "Add section", "section_en": "Section title (EN)",
           "section_zh": "Section title (中文)", "help_zh": "Help text (中文): Name",
           "saved": "Form saved.", "public": "Anyone with the link can fill in this form", "save": "Save",
           "help": "Help text (EN): Name", "hidden": "Hidden: Source", "prefill": "Prefilled value: Source",
           "required": "Required: Email", "success": "Success message (EN)", "title": "Title (EN)",
           "name": "Name", "email": "Email", "photos": "Photos", "submit": "Submit", "qr": "QR code of the public link",
           "add_files": "Add files", "view": "View", "close": "Close", "remove": "Remove", "up": "Move up: Email",
           "drag": "Drag to reorder"},
    "zh-CN": {"design": "表单设计器", "add_section": "添加分组", "section_en": "分组标题 (EN)",
              "section_zh": "分组标题 (中文)", "help_zh": "填写说明 (中文): 姓名",
              "saved": "表单已保存。", "public": "任何拿到链接的人都可以填写此表单", "save": "保存",
              "help": "填写说明 (EN): 姓名", "hidden": "隐藏: 来源", "prefill": "预填值: 来源",
              "required": "必填: 邮箱", "success": "成功提示 (中文)", "title": "标题 (中文)",
              "name": "姓名", "email": "邮箱", "photos": "照片", "submit": "提交", "qr": "公开链接的二维码",
              "add_files": "添加文件", "view": "查看", "close": "关闭", "remove": "移除", "up": "上移: 邮箱",
              "drag": "拖动排序"},
}


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A real PNG of one colour with a darker diagonal (so thumbnails show something)."""
    rows = b""
    for y in range(height):
        row = bytearray([0])
        for x in range(width):
            dark = abs(x * height - y * width) < width * 2
            row += bytes(c // 2 if dark else c for c in rgb)
        rows += bytes(row)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) \
        + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


@pytest.fixture
def page(browser: Any, server: dict[str, Any]) -> Iterator[Any]:  # noqa: F811
    """As tests/browser/test_ui_browser.py's, except that a refused page answers 422 by design."""
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


def shot(pg: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    width = pg.viewport_size["width"]
    pg.set_viewport_size({"width": 390, "height": 844})
    pg.screenshot(path=str(SHOTS / f"{name}-390.png"), full_page=True)
    pg.set_viewport_size({"width": width, "height": 860})


def make_app(api: Any, key: str) -> None:
    api.ok("POST", "/meta/apps", {"key": key, "label": {"en": "Requests", "zh-CN": "申请"}})
    api.ok("POST", f"/meta/apps/{key}/tables", {"key": "requests", "label": {"en": "Requests", "zh-CN": "申请"},
                                                "fields": [
        {"key": "name", "label": {"en": "Name", "zh-CN": "姓名"}, "type": "text"},
        {"key": "email", "label": {"en": "Email", "zh-CN": "邮箱"}, "type": "email"},
        {"key": "source", "label": {"en": "Source", "zh-CN": "来源"}, "type": "text"},
        {"key": "photos", "label": {"en": "Photos", "zh-CN": "照片"}, "type": "attachment",
         "options": {"max_files": 3, "max_size": 200000, "mime_types": ["image/*", "application/pdf"]}}],
        "views": [{"key": "apply", "label": {"en": "Apply", "zh-CN": "申请表"}, "type": "form"}]})


@pytest.mark.parametrize("locale", ["en", "zh-CN"])
def test_design_a_form_then_fill_it_in(page: Any, server: dict[str, Any], locale: str,  # noqa: F811
                                       tmp_path: Any) -> None:
    from playwright.sync_api import expect

    url, api, t = server["url"], server["api"], T[locale]
    key = "fd_" + locale.replace("-", "").lower()
    make_app(api, key)
    use_locale(page, url, locale)
    page.goto(f"{url}/apps/{key}/requests/forms/apply/design")
    expect(page.get_by_role("heading", name=t["design"])).to_be_visible()
    page.get_by_label(t["title"]).fill("Apply now" if locale == "en" else "立即申请")
    # email above name: by the move button, then the section dragged by its handle to the top
    page.get_by_role("button", name=t["up"]).click()
    rows = page.locator("[data-fd-list] > li input[name=row]")
    expect(rows.nth(0)).to_have_value("f:email")
    page.get_by_role("button", name=t["add_section"]).click()
    # section titles and help texts in both languages: the form shows the reader's
    page.get_by_label(t["section_en"]).fill("Contact")
    page.get_by_label(t["section_zh"]).fill("联系方式")
    expect(rows.nth(0)).to_have_value(re.compile(r"^s:"))  # a new section comes first
    # the source row dragged by its handle to the top (SortableJS)
    # the list's top at the window's top, so both rows are on screen where the pointer goes
    page.locator("[data-fd-list]").evaluate("l => l.scrollIntoView({block: 'start'})")
    assert page.locator("[data-fd-list] > li").nth(3).locator(".fd-handle").evaluate(
        "h => h.getBoundingClientRect().bottom < window.innerHeight")
    assert page.evaluate("() => !!(window.Sortable && Sortable.get(document.querySelector('[data-fd-list]')))")
    page.evaluate("() => document.fonts.ready.then(() => true)")  # no late font moving the rows
    src = page.locator("[data-fd-list] > li").nth(3).locator(".fd-handle").bounding_box()
    dst = page.locator("[data-fd-list] > li").nth(0).bounding_box()
    x, y0, y1 = src["x"] + src["width"] / 2, src["y"] + src["height"] / 2, dst["y"] + 4
    assert page.evaluate("([x, y]) => document.elementFromPoint(x, y).closest('li').querySelector('input[name=row]')"
                         ".value", [x, y0]) == "f:source"
    page.mouse.move(x, y0)
    page.mouse.down()
    for i in range(1, 31):  # in small steps, as a hand would: SortableJS follows the pointer row by row
        page.mouse.move(x, y0 + (y1 - y0) * i / 30)
    # SortableJS skips a row while it is still animating and only looks again when the pointer moves: the
    # hand stays over the top row, moving a little, until the row has gone there (each move waits for the
    # browser; no sleep)
    for i in range(100):
        if rows.nth(0).get_attribute("value") == "f:source":
            break
        page.mouse.move(x, y1 + 2 * (i % 4))
    page.mouse.up()
    expect(rows.nth(0)).to_have_value("f:source")
    page.get_by_label(t["help"]).fill("As on your ID")
    page.get_by_label(t["help_zh"]).fill("与证件一致")
    page.get_by_label(t["required"]).check()
    page.get_by_label(t["hidden"]).check()
    page.get_by_label(t["prefill"]).fill("web")
    page.get_by_label(t["success"]).fill("We got it!" if locale == "en" else "已收到！")
    page.get_by_label(t["public"]).check()
    page.get_by_role("button", name=t["save"], exact=True).click()
    expect(page.locator(".flash.ok")).to_have_text(t["saved"])
    qr = page.get_by_role("img", name=t["qr"])
    expect(qr).to_be_visible()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=qr.element_handle())
    link = page.locator("[data-public-link]").get_attribute("href")
    assert link and link.endswith(f"/f/{key}/requests/apply")
    shot(page, f"form-designer-{locale}")
    view = api.ok("GET", f"/meta/apps/{key}/tables/requests/views/apply")
    layout = view.get("data", view)["options"]["layout"]
    assert {"field": "source", "hidden": True, "value": "web"} in layout
    assert [i.get("field") for i in layout if "field" in i] == ["source", "email", "name", "photos"]
    assert layout[1]["section"] == {"en": "Contact", "zh-CN": "联系方式"}
    assert {"field": "name", "help": {"en": "As on your ID", "zh-CN": "与证件一致"}} in layout

    # the public link, as a visitor sees it
    page.goto(link)
    expect(page.get_by_role("heading", name="Contact" if locale == "en" else "联系方式")).to_be_visible()
    expect(page.locator("body")).to_contain_text("As on your ID" if locale == "en" else "与证件一致")
    expect(page.locator("body")).not_to_contain_text("与证件一致" if locale == "en" else "As on your ID")
    expect(page.locator("input[name=source]")).to_have_count(0)
    page.get_by_label(t["name"]).fill("Li Lei")
    photo = tmp_path / "photo.png"
    photo.write_bytes(png(80, 60, (90, 140, 220)))
    page.get_by_label(t["photos"]).set_input_files(str(photo))
    page.get_by_role("button", name=t["submit"]).click()
    expect(page.locator(".field.has-err")).to_contain_text(t["email"])  # required by this form
    expect(page.get_by_label(t["name"])).to_have_value("Li Lei")
    assert api.records(key, "requests") == []
    page.get_by_label(t["email"]).fill("li@example.com")
    page.get_by_label(t["photos"]).set_input_files(str(photo))
    page.get_by_role("button", name=t["submit"]).click()
    expect(page.locator(".flash.ok")).to_have_text("We got it!" if locale == "en" else "已收到！")
    shot(page, f"form-public-sent-{locale}")
    rec = api.records(key, "requests")[0]["fields"]
    assert rec["name"] == "Li Lei" and rec["source"] == "web" and [f["name"] for f in rec["photos"]] == ["photo.png"]

    # a robot fills the honeypot: it is thanked, nothing is stored
    page.goto(link)
    page.get_by_label(t["name"]).fill("Robot")
    page.get_by_label(t["email"]).fill("bot@example.com")
    page.locator("#hp-website").fill("http://spam.example", force=True)
    page.get_by_role("button", name=t["submit"]).click()
    expect(page.locator(".flash.ok")).to_be_visible()
    assert len(api.records(key, "requests")) == 1


@pytest.mark.parametrize("locale", ["en", "zh-CN"])
def test_attachments_on_a_record_page(page: Any, server: dict[str, Any], locale: str,  # noqa: F811
                                      tmp_path: Any) -> None:
    from playwright.sync_api import expect

    url, api, t = server["url"], server["api"], T[locale]
    key = "fa_" + locale.replace("-", "").lower()
    make_app(api, key)
    rid = api.ok("POST", f"/data/{key}/requests", {"fields": {"name": "Han Meimei"}})["id"]
    use_locale(page, url, locale)
    page.on("dialog", lambda d: d.accept())
    base = f"{url}/apps/{key}/requests/{rid}"
    page.goto(base)
    photo = tmp_path / "site.png"
    photo.write_bytes(png(120, 90, (60, 170, 110)))
    with page.expect_navigation():
        page.get_by_label(t["add_files"]).set_input_files(str(photo))
    items = page.locator(".att-item")
    expect(items).to_have_count(1)
    expect(items.first).to_contain_text("site.png")
    # paste a picture anywhere on the page (not into a text box), then drop a PDF on the field
    with page.expect_navigation():
        page.evaluate("""b64 => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], "pasted.png", {type: "image/png"}));
            document.querySelector(".attachments h2").dispatchEvent(
                new ClipboardEvent("paste", {clipboardData: dt, bubbles: true, cancelable: true}));
        }""", __import__("base64").b64encode(png(60, 60, (220, 120, 60))).decode())
    expect(items).to_have_count(2)
    with page.expect_navigation():
        page.evaluate("""() => {
            const dt = new DataTransfer();
            dt.items.add(new File(["%PDF-1.4 small"], "offer.pdf", {type: "application/pdf"}));
            const zone = document.querySelector(".att-field");
            zone.dispatchEvent(new DragEvent("dragover", {dataTransfer: dt, bubbles: true, cancelable: true}));
            zone.dispatchEvent(new DragEvent("drop", {dataTransfer: dt, bubbles: true, cancelable: true}));
        }""")
    expect(items).to_have_count(3)
    # a PDF opens in a new tab (the browser's viewer), a picture in the page's lightbox
    pdf_link = page.locator(".att-item", has_text="offer.pdf").locator("a[target=_blank]")
    expect(pdf_link).to_have_attribute("href", re.compile(r"/files/photos/[^/]+\?inline=1$"))
    # a fourth file breaks the field's limit of 3: said at once in the page's language, nothing is sent
    page.get_by_label(t["add_files"]).set_input_files(str(photo))
    expect(page.locator(".att-field .err[role=alert]")).to_have_text(
        "At most 3 files: this record has 3 already." if locale == "en" else "最多 3 个文件：此记录已有 3 个。")
    expect(items).to_have_count(3)
    assert len(api.records(key, "requests")[0]["fields"]["photos"]) == 3
    # preview a picture in the lightbox
    page.locator(".att-item", has_text="site.png").get_by_role("link", name=f"{t['view']} site.png", exact=True).click()
    box = page.locator("dialog.att-lightbox")
    expect(box).to_be_visible()
    page.wait_for_function("() => { const i = document.querySelector('dialog.att-lightbox img');"
                           " return i.complete && i.naturalWidth === 120; }")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"record-lightbox-{locale}.png"))
    box.get_by_role("button", name=t["close"]).click()
    expect(box).to_be_hidden()
    # remove one: it goes through the history
    with page.expect_navigation():
        page.locator(".att-item", has_text="pasted.png").get_by_role("button", name=t["remove"]).click()
    expect(items).to_have_count(2)
    expect(page.locator(".timeline")).to_contain_text("site.png, pasted.png, offer.pdf")
    page.wait_for_function("() => [...document.querySelectorAll('.att-thumb img')].every(i => i.complete"
                           " && i.naturalWidth > 0)")
    page.goto(base)  # the page from its top, for the picture
    page.wait_for_function("() => [...document.querySelectorAll('.att-thumb img')].every(i => i.complete"
                           " && i.naturalWidth > 0)")
    shot(page, f"record-attachments-{locale}")
    assert [f["name"] for f in api.records(key, "requests")[0]["fields"]["photos"]] == ["site.png", "offer.pdf"]
    # too big and a wrong type: named with the limit, before anything is sent
    big = tmp_path / "poster.png"
    big.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 210000)
    page.get_by_label(t["add_files"]).set_input_files(str(big))
    expect(page.locator(".att-field .err[role=alert]")).to_contain_text("poster.png")
    expect(page.locator(".att-field .err[role=alert]")).to_contain_text("195 KB")
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    page.get_by_label(t["add_files"]).set_input_files(str(notes))
    expect(page.locator(".att-field .err[role=alert]")).to_contain_text("image/*, application/pdf")
    expect(items).to_have_count(2)
