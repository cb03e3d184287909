"""The import wizard and export from a view, through Flask's test client (SQLite and PostgreSQL)."""

from __future__ import annotations

import csv
import io
import json
import re
import time
import zipfile
from typing import Any

import pytest
from openpyxl import Workbook, load_workbook

from formwork import db
from formwork.runtime import auth
from tests.helpers import Api
from tests.test_ui_pages import html, login

PASSWORD = "correct-horse-9"


@pytest.fixture
def shop(app: Any, admin: Api) -> dict[str, Any]:
    admin.ok("POST", "/meta/apps", {"key": "shop", "label": {"en": "Shop", "zh-CN": "商店"}})
    admin.ok("POST", "/meta/apps/shop/tables", {"key": "customers", "label": {"en": "Customers", "zh-CN": "客户"},
                                                "fields": [
        {"key": "name", "label": {"en": "Name", "zh-CN": "名称"}, "type": "text", "required": True},
        {"key": "email", "label": {"en": "Email", "zh-CN": "邮箱"}, "type": "email", "unique": True},
        {"key": "spend", "label": {"en": "Spend", "zh-CN": "消费"}, "type": "number"},
        {"key": "city", "label": {"en": "City", "zh-CN": "城市"}, "type": "text"}],
        "views": [{"key": "all", "label": "All", "type": "grid"}]})
    with db.transaction(app.extensions["formwork"].engine) as conn:
        auth.create_user(conn, {"username": "ada", "name": "Ada", "password": PASSWORD}, is_admin=True)
    client, csrf = login(app, "ada")
    return {"client": client, "csrf": csrf, "api": admin}


def upload(shop: dict[str, Any], data: bytes, name: str = "people.csv") -> Any:
    return shop["client"].post("/apps/shop/customers/import", data={
        "csrf_token": shop["csrf"], "file": (io.BytesIO(data), name)}, content_type="multipart/form-data")


def wizard(shop: dict[str, Any], data: bytes, name: str = "people.csv", **choices: str) -> tuple[str, str]:
    """Upload and post the mapping step; returns (the check page's URL, the upload id)."""
    resp = upload(shop, data, name)
    assert resp.status_code == 302, resp.get_data(as_text=True)[:2000]
    map_url = resp.headers["Location"]
    page = html(shop["client"].get(map_url))
    form = {"csrf_token": shop["csrf"], "mode": "insert", "on_error": "skip"}
    for m in re.finditer(r'<select name="(col\.\d+)"[^>]*>(.*?)</select>', page, re.S):
        sel = re.search(r'<option value="([^"]*)" selected>', m.group(2))
        form[m.group(1)] = sel.group(1) if sel else ""
    form.update(choices)
    resp = shop["client"].post(map_url, data=form)
    assert resp.status_code == 302, resp.get_data(as_text=True)[:3000]
    return resp.headers["Location"], map_url.rsplit("/", 1)[1]


def run(shop: dict[str, Any], check_url: str) -> tuple[str, str]:
    page = html(shop["client"].get(check_url))
    action = re.search(r'<form method="post" action="([^"]+/run)"', page).group(1)  # type: ignore[union-attr]
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', page))
    fields = {k: v.replace("&#34;", '"').replace("&quot;", '"') for k, v in fields.items()}
    resp = shop["client"].post(action, data=fields)
    assert resp.status_code == 302, resp.get_data(as_text=True)[:2000]
    job_url = resp.headers["Location"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = html(shop["client"].get(job_url, headers={"HX-Request": "true"}))
        if "hx-trigger" not in text:
            return job_url, text
        time.sleep(0.05)
    raise AssertionError("the import did not finish")


MESSY = ("Name,Email,Spend,City\n"
         "Ann,ann@example.com,10,Paris\n"
         "Bob,bob@example.com,20,Rome,extra,cells\n"
         "Cid,cid@example.com,lots,Oslo\n"
         ",nobody@example.com,5,Nowhere\n"
         "Dee,dee@example.com,40,Lima\n")


def test_messy_csv_good_rows_in_bad_rows_reported(shop: dict[str, Any]) -> None:
    check, _upload = wizard(shop, MESSY.encode())
    page = html(shop["client"].get(check))
    assert "5 rows checked: 2 would be added, 0 would be updated, 3 have problems." in page
    assert "This row has 6 cells but the header has 4." in page
    job_url, report = run(shop, check)
    assert "Import finished" in report
    assert re.search(r"Added</dt><dd><strong>2</strong> <span[^>]*>Rows 2, 6", report)
    assert re.search(r"Skipped</dt><dd><strong>3</strong> <span[^>]*>Rows 3-5", report)
    assert "Spend: not a number." in report and "Name: a value is required." in report
    names = sorted(r["fields"]["name"] for r in shop["api"].records("shop", "customers"))
    assert names == ["Ann", "Dee"]
    resp = shop["client"].get(job_url + "/rejected.csv")
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(resp.get_data(as_text=True).lstrip("\ufeff"))))
    assert rows[0] == ["Row", "Reason", "Name", "Email", "Spend", "City"]
    assert [r[0] for r in rows[1:]] == ["3", "4", "5"]
    assert rows[1][2:] == ["Bob", "bob@example.com", "20", "Rome", "extra", "cells"]


def test_gbk_file_with_chinese_headers(shop: dict[str, Any]) -> None:
    data = "名称,邮箱,消费,城市\n张三,zhang@example.com,100,北京\n李四,li@example.com,200,上海\n".encode("gbk")
    check, _ = wizard(shop, data, "客户.csv")
    _job, report = run(shop, check)
    assert "Import finished" in report
    recs = {r["fields"]["name"]: r["fields"] for r in shop["api"].records("shop", "customers")}
    assert recs["张三"]["city"] == "北京" and recs["李四"]["spend"] == 200


def test_upsert_on_a_unique_field_and_new_field(shop: dict[str, Any]) -> None:
    shop["api"].ok("POST", "/data/shop/customers", {"fields": {"name": "Ann", "email": "ann@example.com"}})
    data = b"Email,Name,Joined\nann@example.com,Ann B,2026-01-05\nzed@example.com,Zed,2026-02-01\n"
    check, _ = wizard(shop, data, **{"mode": "upsert", "key_field": "email", "col.2": "__new__",
                                     "type.2": "date", "label.2": "Joined"})
    _job, report = run(shop, check)
    assert re.search(r"Updated</dt><dd><strong>1</strong>", report), report
    recs = {r["fields"]["email"]: r["fields"] for r in shop["api"].records("shop", "customers")}
    assert recs["ann@example.com"]["name"] == "Ann B" and recs["zed@example.com"]["joined"] == "2026-02-01"


@pytest.mark.parametrize(("data", "name", "message"), [
    (b"", "x.csv", "The file is empty."),
    (b"%PDF-1.4 stuff", "x.csv", "This file is not a spreadsheet."),
    (b"Name,Name\na,b\n", "x.csv", "The header row has &#34;Name&#34; twice (columns A and B)"),
])
def test_bad_files_are_refused_on_the_first_step(shop: dict[str, Any], app: Any, data: bytes, name: str,
                                                 message: str) -> None:
    resp = upload(shop, data, name)
    page = html(resp)
    assert message in page
    assert not list((app.config["FILES_DIR"] and __import__("pathlib").Path(app.config["FILES_DIR"]) /
                     "imports").glob("*")) if (__import__("pathlib").Path(app.config["FILES_DIR"]) /
                                               "imports").exists() else True
    assert shop["api"].records("shop", "customers") == []


def test_zip_bomb_is_refused(shop: dict[str, Any]) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("xl/workbook.xml", "<workbook/>")
        zf.writestr("xl/worksheets/sheet1.xml", b"\0" * (30 * 1024 * 1024))
    page = html(upload(shop, buf.getvalue(), "bomb.xlsx"))
    assert "not a normal workbook" in page


def test_xlsx_and_chinese_pages(shop: dict[str, Any]) -> None:
    wb = Workbook()
    ws = wb.active
    ws.append(["名称", "消费"])
    ws.append(["王五", 7])
    out = io.BytesIO()
    wb.save(out)
    shop["client"].post("/locale", data={"csrf_token": shop["csrf"], "locale": "zh-CN"})
    page = html(shop["client"].get("/apps/shop/customers/import"))
    assert "上传并继续" in page
    check, _ = wizard(shop, out.getvalue(), "k.xlsx")
    assert "已检查 1 行" in html(shop["client"].get(check))
    _job, report = run(shop, check)
    assert "导入完成" in report


def test_mapping_errors_are_next_to_the_picker(shop: dict[str, Any]) -> None:
    resp = upload(shop, b"Name,Other\nAnn,Bob\n")
    map_url = resp.headers["Location"]
    page = html(shop["client"].post(map_url, data={"csrf_token": shop["csrf"], "col.0": "name", "col.1": "name",
                                                   "mode": "insert", "on_error": "skip"}))
    assert "Two columns go to this field: Name, Other" in page
    page = html(shop["client"].post(map_url, data={"csrf_token": shop["csrf"], "col.0": "", "col.1": "city",
                                                   "mode": "insert", "on_error": "skip"}))
    assert "Name is required: choose the column that holds it." in page


def test_someone_elses_upload_and_job_are_not_found(shop: dict[str, Any], app: Any) -> None:
    resp = upload(shop, b"Name\nAnn\n")
    map_url = resp.headers["Location"]
    with db.transaction(app.extensions["formwork"].engine) as conn:
        auth.create_user(conn, {"username": "eve", "name": "Eve", "password": PASSWORD}, is_admin=True)
    other, _csrf = login(app, "eve")
    assert other.get(map_url).status_code == 404


def test_export_the_filtered_view(shop: dict[str, Any]) -> None:
    for n, city in (("Ann", "Paris"), ("Bob", "Rome"), ("Cid", "Paris")):
        shop["api"].ok("POST", "/data/shop/customers", {"fields": {"name": n, "city": city}})
    resp = shop["client"].get("/apps/shop/customers/export?format=csv&view=all&ff=city&fo=eq&fv=Paris&sort=-name")
    assert resp.status_code == 200
    rows = list(csv.reader(io.StringIO(resp.get_data(as_text=True).lstrip("\ufeff"))))
    assert rows[0][:2] == ["Name", "Email"] and [r[0] for r in rows[1:]] == ["Cid", "Ann"]
    resp = shop["client"].get("/apps/shop/customers/export?format=xlsx&ff=city&fo=eq&fv=Rome")
    ws = load_workbook(io.BytesIO(resp.get_data()), read_only=True).active
    assert [r[0] for r in ws.iter_rows(values_only=True)] == ["Name", "Bob"]
    assert json.dumps(True)


def test_a_large_export_runs_as_a_job(shop: dict[str, Any], app: Any) -> None:
    for n in ("Ann", "Bob", "Cid"):
        shop["api"].ok("POST", "/data/shop/customers", {"fields": {"name": n, "city": "Paris"}})
    app.config["EXPORT_JOB_ROWS"] = 2
    c = shop["client"]
    resp = c.get("/apps/shop/customers/export?format=xlsx&sort=name")
    assert resp.status_code == 302 and "/export/jobs/" in resp.headers["Location"]
    job_url = resp.headers["Location"]
    deadline = time.monotonic() + 60
    while "hx-trigger" in (text := html(c.get(job_url, headers={"HX-Request": "true"}))):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert "The file is ready (3 records)" in text
    resp = c.get(job_url + "/file")
    assert resp.status_code == 200 and "customers.xlsx" in resp.headers["Content-Disposition"]
    data = resp.get_data()
    resp.close()
    ws = load_workbook(io.BytesIO(data), read_only=True).active
    assert [r[0] for r in ws.iter_rows(values_only=True)] == ["Name", "Ann", "Bob", "Cid"]
    # someone else can't see the job or its file
    with db.transaction(app.extensions["formwork"].engine) as conn:
        auth.create_user(conn, {"username": "eve", "name": "Eve", "password": PASSWORD})
    other, _ = login(app, "eve")
    assert other.get(job_url + "/file").status_code == 404


def test_an_import_cut_short_by_a_restart_ends_failed_saying_nothing_was_saved(shop: dict[str, Any],
                                                                                app: Any) -> None:
    import socket

    from sqlalchemy import update

    from formwork.runtime import jobs

    engine = app.extensions["formwork"].engine
    with db.transaction(engine) as conn:
        uid = conn.execute(db.users.select().where(db.users.c.username == "ada")).first().id
        job = jobs.enqueue(conn, "import", uid, {"app": "shop", "table": "customers", "path": "/nonexistent",
                                                 "name": "x.csv", "options": {}}, total=5000)
        conn.execute(update(db.jobs).where(db.jobs.c.id == job["id"]).values(
            status="running", progress=1200, owner=f"{socket.gethostname()}:999999999:gone"))
    app.extensions.pop("formwork_jobs", None)  # a fresh process: its job runner looks for orphans first
    url = f"/apps/shop/customers/import/jobs/{job['id']}"
    shop["client"].get(url, headers={"HX-Request": "true"})
    page = html(shop["client"].get(url))
    assert "Import failed" in page
    assert "The import was interrupted (the server stopped) at row 1200 of 5000. Nothing of it was saved" in page
