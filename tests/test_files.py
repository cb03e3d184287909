"""File uploads and downloads: content-addressed storage, size limit, who may download, safe headers."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select
from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

from formwork import db
from formwork.runtime import auth
from tests.helpers import Api, db_snapshot


def post_file(api: Api, data: bytes | None, filename: str = "note.txt", mime: str | None = None,
              **form: Any) -> tuple[int, Any]:
    body: dict[str, Any] = dict(form)
    if data is not None:
        body["file"] = FileStorage(io.BytesIO(data), filename, content_type=mime)
    boundary, raw = encode_multipart(body)
    resp = api.client.post("/api/v1/files", data=raw, headers={"Authorization": f"Bearer {api.token}"},
                           content_type=f"multipart/form-data; boundary={boundary}")
    payload = resp.get_json(silent=True)
    if resp.status_code >= 400:
        assert isinstance(payload, dict) and "error" in payload, resp.data[:200]
        assert resp.status_code < 500
    return resp.status_code, payload


class Download:
    def __init__(self, resp: Any) -> None:
        self.status_code = resp.status_code
        self.data = resp.get_data()
        self.headers = resp.headers
        resp.close()  # send_file keeps the blob open until the response is closed


def download(api: Api, token: str) -> Download:
    return Download(api.client.get(f"/api/v1/files/{token}", headers={"Authorization": f"Bearer {api.token}"}))


def user_api(admin: Api, username: str, perms: dict[str, Any] | None) -> Api:
    app = admin.client.application
    with db.transaction(app.extensions["formwork"].engine) as conn:
        uid = auth.create_user(conn, {"username": username, "name": username, "password": "password-123"})
        if perms is not None:
            rid = conn.execute(insert(db.roles).values(key=f"r_{username}", doc={
                "key": f"r_{username}", "label": username, "permissions": perms}).returning(db.roles.c.id)
            ).scalar_one()
            conn.execute(insert(db.user_roles).values(user_id=uid, role_id=rid))
        token = auth.create_token(conn, uid, "t", None)["token"]
    return Api(admin.client, token)


@pytest.fixture
def docs(admin: Api) -> Api:
    admin.ok("POST", "/meta/apps", {"key": "hr", "label": "HR"})
    admin.ok("POST", "/meta/apps/hr/tables", {"key": "people", "label": "People", "fields": [
        {"key": "name", "label": "Name", "type": "text"},
        {"key": "files", "label": "Files", "type": "attachment"},
        {"key": "secret_files", "label": "Secret files", "type": "attachment"}]})
    return admin


def test_upload_and_download(docs: Api) -> None:
    status, f = post_file(docs, "你好, world".encode(), "../../etc/报告 v1.txt", "text/plain")
    assert status == 201
    assert f["name"] == "报告 v1.txt" and f["size"] == len("你好, world".encode()) and f["mime"] == "text/plain"
    assert len(f["token"]) >= 40
    resp = download(docs, f["token"])
    assert resp.status_code == 200
    assert resp.data == "你好, world".encode()
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    disposition = resp.headers["Content-Disposition"]
    assert disposition.startswith("attachment;") and "filename*=UTF-8''%E6%8A%A5%E5%91%8A" in disposition


def test_content_addressed_storage(docs: Api) -> None:
    files_dir = Path(docs.client.application.config["FILES_DIR"])
    _, a = post_file(docs, b"same bytes", "a.bin")
    _, b = post_file(docs, b"same bytes", "b.bin")
    _, c = post_file(docs, b"other bytes", "c.bin")
    assert a["token"] != b["token"]
    blobs = [p for p in (files_dir / "blobs").rglob("*") if p.is_file()]
    assert len(blobs) == 2
    assert {p.read_bytes() for p in blobs} == {b"same bytes", b"other bytes"}
    assert a["mime"] == "application/octet-stream" and c["name"] == "c.bin"
    assert list((files_dir / "tmp").iterdir()) == []


def test_html_is_served_as_an_attachment_with_nosniff(docs: Api) -> None:
    _, f = post_file(docs, b"<script>alert(1)</script>", "x.html", "text/html")
    resp = download(docs, f["token"])
    assert resp.headers["Content-Disposition"].startswith("attachment")
    assert "sandbox" in resp.headers["Content-Security-Policy"]
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


def test_too_large_and_missing_part(docs: Api) -> None:
    app = docs.client.application
    app.config["MAX_CONTENT_LENGTH"] = 4096
    before = db_snapshot(app)
    status, err = post_file(docs, b"x" * 10_000, "big.bin")
    assert status == 413 and err["error"]["code"] == "too_large"
    status, err = post_file(docs, None, other="1")
    assert status == 400 and "'file'" in err["error"]["message"]
    assert db_snapshot(app) == before
    files_dir = Path(app.config["FILES_DIR"])
    assert not (files_dir / "blobs").exists() or not any(p.is_file() for p in (files_dir / "blobs").rglob("*"))


def test_upload_needs_login(docs: Api) -> None:
    anon = Api(docs.client)
    assert post_file(anon, b"x")[0] == 401


def test_who_may_download(docs: Api) -> None:
    owner = user_api(docs, "uploader", {"hr.people": {"read": "all", "create": True, "update": "all",
                                                  "delete": "all"}})
    reader = user_api(docs, "reader", {"hr.people": {"read": "all", "fields": {"secret_files": "hidden"}}})
    stranger = user_api(docs, "stranger", None)
    _, f = post_file(owner, b"contract", "contract.pdf")
    _, s = post_file(owner, b"secret", "secret.pdf")
    assert f["mime"] == "application/pdf"
    # only the uploader (and admins) until a record holds it
    assert download(owner, f["token"]).status_code == 200
    assert download(docs, f["token"]).status_code == 200
    assert download(reader, f["token"]).status_code == 404
    rec = owner.ok("POST", "/data/hr/people", {"fields": {"name": "Li", "files": [f["token"]],
                                                          "secret_files": [s["token"]]}})
    assert rec["fields"]["files"][0]["url"] == f"/api/v1/files/{f['token']}"
    assert download(reader, f["token"]).status_code == 200
    assert download(reader, s["token"]).status_code == 404  # the field holding it is hidden from them
    assert download(stranger, f["token"]).status_code == 404
    assert download(stranger, "nope").status_code == 404
    owner.ok("DELETE", f"/data/hr/people/{rec['id']}")
    assert download(reader, f["token"]).status_code == 404  # trashed records don't open their files
    with docs.client.application.extensions["formwork"].engine.connect() as c:
        assert c.execute(select(func.count()).select_from(db.files)).scalar() == 2


@pytest.mark.parametrize("char", ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068",
                                  "\u2069", "\u200e", "\u200f", "\u061c", "\u200b", "\u2028", "\x1b", "\x85"])
def test_bidi_and_control_characters_leave_file_names(docs: Api, char: str) -> None:
    status, f = post_file(docs, b"MZ", f"invoice{char}gnp.exe", "application/octet-stream")
    assert status == 201
    assert f["name"] in ("invoicegnp.exe", "invoice_gnp.exe"), f["name"]
    assert download(docs, f["token"]).headers["Content-Disposition"].count("%E2%80%AE") == 0
