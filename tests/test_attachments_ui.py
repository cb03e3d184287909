"""Attachments on record pages: upload (limits named in the user's language, nothing half-uploaded kept),
preview and download only for readers who see the record and the field, removal recorded in the history,
and files on the new-record page."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from formwork import db
from tests.helpers import Api
from tests.test_ui_pages import PASSWORD, html, login

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@pytest.fixture
def world(app: Any, admin: Api) -> dict[str, Any]:
    admin.ok("POST", "/meta/apps", {"key": "docs", "label": "Docs"})
    admin.ok("POST", "/meta/apps/docs/tables", {"key": "cases", "label": {"en": "Cases", "zh-CN": "案例"}, "fields": [
        {"key": "name", "label": {"en": "Name", "zh-CN": "名称"}, "type": "text"},
        {"key": "photos", "label": {"en": "Photos", "zh-CN": "照片"}, "type": "attachment",
         "options": {"max_files": 2, "max_size": 2000, "mime_types": ["image/*", "application/pdf"]}},
        {"key": "secret", "label": "Secret files", "type": "attachment"},
    ]})
    admin.ok("POST", "/admin/roles", {"key": "rep", "label": "Rep", "permissions": {
        "docs.cases": {"read": "own", "create": True, "update": "own", "fields": {"secret": "hidden"}}}})
    admin.ok("POST", "/admin/users", {"username": "rep", "name": "Rep", "password": PASSWORD, "roles": ["rep"]})
    admin.ok("POST", "/admin/users", {"username": "rep2", "name": "Rep Two", "password": PASSWORD, "roles": ["rep"]})
    admin.ok("POST", "/admin/users", {"username": "boss", "name": "Boss", "password": PASSWORD, "is_admin": True})
    client, csrf = login(app, "rep")
    made = client.post("/apps/docs/cases/new", data={"csrf_token": csrf, "name": "Leak"})
    assert made.status_code == 302, made.get_data(as_text=True)[:300]
    rid = int(made.headers["Location"].rstrip("/").rsplit("/", 1)[-1])
    return {"client": client, "csrf": csrf, "rid": rid, "base": f"/apps/docs/cases/{rid}"}


def upload(w: dict[str, Any], field: str, *files: tuple[bytes, str], client: Any = None, csrf: str | None = None,
           headers: dict[str, str] | None = None) -> Any:
    data: dict[str, Any] = {"csrf_token": csrf or w["csrf"],
                            "files": [(io.BytesIO(body), name) for body, name in files]}
    return (client or w["client"]).post(f"{w['base']}/files/{field}", data=data, headers=headers,
                                        content_type="multipart/form-data")


def blobs(app: Any) -> list[Path]:
    return [p for p in (Path(app.config["FILES_DIR"]) / "blobs").rglob("*") if p.is_file()] \
        if (Path(app.config["FILES_DIR"]) / "blobs").exists() else []


def file_rows(app: Any) -> int:
    with app.extensions["formwork"].engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(db.files)).scalar_one())


def test_upload_preview_download_and_remove_through_history(app: Any, admin: Api, world: dict[str, Any]) -> None:
    c = world["client"]
    resp = upload(world, "photos", (PNG, "shot.png"), (b"%PDF-1.4 tiny", "spec.pdf"))
    assert resp.status_code == 302 and "#att-photos" in resp.headers["Location"]
    page = html(c.get(world["base"]))
    assert "shot.png" in page and "spec.pdf" in page
    rec = admin.ok("GET", f"/data/docs/cases/{world['rid']}")["fields"]
    png, pdf = rec["photos"]
    # a picture shows inline (sandboxed), a PDF opens in a tab, either downloads by default
    inline = c.get(f"{world['base']}/files/photos/{png['token']}?inline=1")
    assert inline.status_code == 200 and inline.data == PNG and inline.mimetype == "image/png"
    assert "sandbox" in inline.headers["Content-Security-Policy"]
    assert inline.headers["X-Content-Type-Options"] == "nosniff"
    assert "attachment" not in inline.headers.get("Content-Disposition", "")
    inline.close()
    dl = c.get(f"{world['base']}/files/photos/{pdf['token']}")
    assert dl.status_code == 200 and dl.headers["Content-Disposition"].startswith("attachment")
    dl.close()
    assert f'href="{world["base"]}/files/photos/{pdf["token"]}?inline=1" target="_blank"' in page
    assert "data-preview=" in page and "<img src=" in page
    # another rep cannot see the record, so not its files either (by the page's address or the API's)
    other, _ = login(app, "rep2")
    assert other.get(f"{world['base']}/files/photos/{png['token']}").status_code == 404
    assert other.get(f"/api/v1/files/{png['token']}").status_code in (401, 404)
    # removal is an update: the record's history names the file that went
    gone = c.post(f"{world['base']}/files/photos/{png['token']}/remove", data={"csrf_token": world["csrf"]})
    assert gone.status_code == 302
    rec = admin.ok("GET", f"/data/docs/cases/{world['rid']}")["fields"]
    assert [f["name"] for f in rec["photos"]] == ["spec.pdf"]
    hist = admin.ok("GET", f"/data/docs/cases/{world['rid']}/history")
    changed = hist["entries"][0]["changes"]["photos"]
    assert [f["name"] for f in changed["old"]] == ["shot.png", "spec.pdf"]
    assert [f["name"] for f in changed["new"]] == ["spec.pdf"]
    page = html(c.get(world["base"]))
    assert "shot.png, spec.pdf" in page  # the timeline shows which file went
    # the removed file is no longer served from the record
    assert c.get(f"{world['base']}/files/photos/{png['token']}").status_code == 404


@pytest.mark.parametrize("locale", ["en", "zh-CN"])
def test_limits_refuse_with_the_limit_named_and_leave_nothing(app: Any, world: dict[str, Any], locale: str) -> None:
    c = world["client"]
    c.post("/locale", data={"locale": locale, "next": "/", "csrf_token": world["csrf"]})
    before_blobs, before_rows = len(blobs(app)), file_rows(app)
    # too big: the second file breaks the 2000-byte limit, so the first is not kept either
    resp = upload(world, "photos", (PNG, "ok.png"), (b"\x89PNG" + b"0" * 5000, "huge.png"))
    text = html(resp, 422)
    assert "huge.png" in text and "2 KB" in text
    assert ("larger than" in text) if locale == "en" else ("超过了" in text)
    assert len(blobs(app)) == before_blobs and file_rows(app) == before_rows
    # a disallowed type
    text = html(upload(world, "photos", (b"MZ....", "tool.exe")), 422)
    assert "tool.exe" in text and "image/*" in text
    # too many (the field takes 2)
    text = html(upload(world, "photos", (PNG, "a.png"), (PNG + b"1", "b.png"), (PNG + b"2", "c.png")), 422)
    assert ("At most 2 files" in text) if locale == "en" else ("最多 2 个文件" in text)
    assert len(blobs(app)) == before_blobs and file_rows(app) == before_rows
    # two kept, then one more is refused naming how many the record has
    assert upload(world, "photos", (PNG, "a.png"), (PNG + b"1", "b.png")).status_code == 302
    text = html(upload(world, "photos", (PNG + b"2", "c.png")), 422)
    assert ("this record has 2 already" in text) if locale == "en" else ("此记录已有 2 个" in text)


def test_hidden_field_and_csrf(app: Any, admin: Api, world: dict[str, Any]) -> None:
    c = world["client"]
    page = html(c.get(world["base"]))
    assert "Secret files" not in page  # the rep may not see this field: no panel
    assert upload(world, "secret", (PNG, "x.png")).status_code in (403, 404)
    # an admin puts a file into the hidden field: the rep can't fetch it by the record's address
    boss, bcsrf = login(app, "boss")
    assert upload(world, "secret", (PNG + b"s", "s.png"), client=boss, csrf=bcsrf).status_code == 302
    rec = admin.ok("GET", f"/data/docs/cases/{world['rid']}")["fields"]
    token = rec["secret"][0]["token"]
    assert c.get(f"{world['base']}/files/secret/{token}").status_code == 404
    got = boss.get(f"{world['base']}/files/secret/{token}")
    assert got.status_code == 200
    got.close()
    # without the CSRF token nothing is stored
    rows = file_rows(app)
    assert upload(world, "photos", (PNG, "x.png"), csrf="nope").status_code in (400, 403)
    assert file_rows(app) == rows


def test_new_record_page_takes_files(app: Any, world: dict[str, Any]) -> None:
    c, csrf = world["client"], world["csrf"]
    page = html(c.get("/apps/docs/cases/new"))
    assert 'type="file"' in page and 'enctype="multipart/form-data"' in page
    resp = c.post("/apps/docs/cases/new", data={"csrf_token": csrf, "name": "With files",
                                                "photos": [(io.BytesIO(PNG), "new.png")]},
                  content_type="multipart/form-data")
    assert resp.status_code == 302
    shown = html(c.get(resp.headers["Location"]))
    assert "new.png" in shown
    rows = file_rows(app)
    text = html(c.post("/apps/docs/cases/new", data={"csrf_token": csrf, "name": "Too big",
                                                     "photos": [(io.BytesIO(b"0" * 5000), "big.png")]},
                       content_type="multipart/form-data"), 422)
    assert "big.png" in text and re.search(r'value="Too big"', text)
    assert file_rows(app) == rows


def test_thumbnails_are_small_copies(app: Any, world: dict[str, Any]) -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 40, 40)).resize((400, 300)).save(buf, "PNG")
    photo = buf.getvalue()
    assert len(photo) < 2000  # within the field's limit
    c = world["client"]
    assert upload(world, "photos", (photo, "red.png"), (PNG, "broken.png")).status_code == 302
    page = html(c.get(world["base"]))
    thumbs = re.findall(r'<img src="([^"]+thumb=1)"', page)
    assert len(thumbs) == 2
    small = c.get(thumbs[0].replace("&amp;", "&"))
    assert small.status_code == 200 and small.mimetype == "image/jpeg"
    assert "sandbox" in small.headers["Content-Security-Policy"]
    assert Image.open(io.BytesIO(small.data)).size == (160, 120)
    small.close()
    assert list((Path(app.config["FILES_DIR"]) / "thumbs").rglob("*.jpg"))  # made once, kept
    again = c.get(thumbs[0].replace("&amp;", "&"))
    assert again.status_code == 200 and again.mimetype == "image/jpeg"
    again.close()
    # a file Pillow can't read: the original, inline and sandboxed
    broken = c.get(thumbs[1].replace("&amp;", "&"))
    assert broken.status_code == 200 and broken.data == PNG and broken.mimetype == "image/png"
    assert "sandbox" in broken.headers["Content-Security-Policy"]
    broken.close()



def cell_upload(w: dict[str, Any], field: str, *files: tuple[bytes, str], client: Any = None,
                csrf: str | None = None, rid: int | None = None) -> Any:
    data: dict[str, Any] = {"csrf_token": csrf or w["csrf"], "view": "_all",
                            "files": [(io.BytesIO(body), name) for body, name in files]}
    return (client or w["client"]).post(f"/apps/docs/cases/{rid or w['rid']}/cell/{field}/files", data=data,
                                        content_type="multipart/form-data", headers={"HX-Request": "true"})


@pytest.mark.parametrize("locale", ["en", "zh-CN"])
def test_a_grid_cell_takes_files_through_the_record_pages_path(app: Any, admin: Api, world: dict[str, Any],
                                                                locale: str) -> None:
    c = world["client"]
    c.post("/locale", data={"locale": locale, "next": "/", "csrf_token": world["csrf"]})
    en = locale == "en"
    grid = html(c.get("/apps/docs/cases?view=_all"))
    # the cell's button names the field and its limits in the reader's language; no button for a field the
    # user may not see
    assert ('aria-label="Upload to Photos"' if en else 'aria-label="上传到照片"') in grid
    assert ("Up to 2 files of at most 2 KB each (image/*, application/pdf)" if en else
            "最多 2 个文件，每个不超过 2 KB（image/*, application/pdf）") in grid
    assert grid.count('class="cell-upload"') == 1
    before_blobs, before_rows = len(blobs(app)), file_rows(app)
    # too big: nothing of either file stays, the refusal names the limit under the row
    text = html(cell_upload(world, "photos", (PNG, "ok.png"), (b"\x89PNG" + b"0" * 5000, "huge.png")), 422)
    assert "huge.png" in text and "2 KB" in text and 'role="alert"' in text
    assert ("larger than" in text) if en else ("超过了" in text)
    assert f'<tr data-id="{world["rid"]}"' in text  # the row itself comes back, unchanged
    text = html(cell_upload(world, "photos", (b"MZ....", "tool.exe")), 422)
    assert "tool.exe" in text and "image/*" in text
    text = html(cell_upload(world, "photos", (PNG, "a.png"), (PNG + b"1", "b.png"), (PNG + b"2", "c.png")), 422)
    assert ("At most 2 files" in text) if en else ("最多 2 个文件" in text)
    assert len(blobs(app)) == before_blobs and file_rows(app) == before_rows
    assert admin.ok("GET", f"/data/docs/cases/{world['rid']}")["fields"]["photos"] == []
    # accepted: the row comes back with the thumbnail, served by the record's file route
    text = html(cell_upload(world, "photos", (PNG, "shot.png")))
    token = admin.ok("GET", f"/data/docs/cases/{world['rid']}")["fields"]["photos"][0]["token"]
    assert f'src="/apps/docs/cases/{world["rid"]}/files/photos/{token}?thumb=1"' in text
    assert 'alt="shot.png"' in text and 'class="files" title="1"' in text
    # the upload is an update the record's history names
    hist = admin.ok("GET", f"/data/docs/cases/{world['rid']}/history")
    assert [f["name"] for f in hist["entries"][0]["changes"]["photos"]["new"]] == ["shot.png"]
    # one more than the field takes, counting the file already there
    text = html(cell_upload(world, "photos", (PNG + b"1", "b.png"), (PNG + b"2", "c.png")), 422)
    assert ("this record has 1 already" in text) if en else ("此记录已有 1 个" in text)
    assert html(c.get("/apps/docs/cases?view=_all")).count('class="cell-thumb"') == 1


def test_a_grid_cell_upload_checks_the_field_and_the_record(app: Any, admin: Api, world: dict[str, Any]) -> None:
    rows = file_rows(app)
    # a field the user may not see, a record that is not theirs to change, a field that is no attachment
    assert cell_upload(world, "secret", (PNG, "x.png")).status_code in (403, 404)
    other, ocsrf = login(app, "rep2")
    assert cell_upload(world, "photos", (PNG, "x.png"), client=other, csrf=ocsrf).status_code in (403, 404)
    assert cell_upload(world, "name", (PNG, "x.png")).status_code == 404
    assert cell_upload(world, "photos", (PNG, "x.png"), csrf="nope").status_code in (400, 403)
    assert cell_upload(world, "photos").status_code == 422  # no file chosen
    assert file_rows(app) == rows
    assert admin.ok("GET", f"/data/docs/cases/{world['rid']}")["fields"]["photos"] == []
