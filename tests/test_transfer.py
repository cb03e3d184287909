"""Record import/export through the API: encodings, lenient values, links, upsert, errors, jobs, permissions."""

from __future__ import annotations

import csv
import io
import json
import time
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from openpyxl import Workbook, load_workbook
from sqlalchemy import func, insert, select, update
from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

from formwork import db
from formwork.runtime import auth
from tests.helpers import Api, db_snapshot

CHOICES_STAGE = [{"value": "lead", "label": {"en": "Lead", "zh-CN": "线索"}},
                 {"value": "won", "label": {"en": "Won", "zh-CN": "赢单"}},
                 {"value": "lost", "label": {"en": "Lost", "zh-CN": "输单"}}]
CHOICES_TAGS = [{"value": "vip", "label": {"en": "VIP", "zh-CN": "重要"}},
                {"value": "new", "label": {"en": "New", "zh-CN": "新"}},
                {"value": "old", "label": {"en": "Old", "zh-CN": "老"}}]


def deal_fields(suffix: str = "") -> list[dict[str, Any]]:
    def lb(en: str, zh: str) -> dict[str, str]:
        return {"en": en, "zh-CN": zh}

    return [
        {"key": "title", "label": lb("Title", "标题"), "type": "text", "required": True},
        {"key": "code", "label": lb("Code", "编号"), "type": "text", "unique": True},
        {"key": "amount", "label": lb("Amount", "金额"), "type": "currency", "options": {"currency": "CNY"}},
        {"key": "qty", "label": lb("Quantity", "数量"), "type": "number"},
        {"key": "stage", "label": lb("Stage", "阶段"), "type": "single_select", "options": {"choices": CHOICES_STAGE}},
        {"key": "tags", "label": lb("Tags", "标签"), "type": "multi_select", "options": {"choices": CHOICES_TAGS}},
        {"key": "close", "label": lb("Close date", "成交日期"), "type": "date"},
        {"key": "done", "label": lb("Done", "已完成"), "type": "checkbox"},
        {"key": "customer", "label": lb("Customer", "客户"), "type": "link",
         "options": {"table": "customers", "reverse_key": f"deals{suffix}"}},
        {"key": "partners", "label": lb("Partners", "伙伴"), "type": "link",
         "options": {"table": "customers", "multiple": True, "reverse_key": f"partner_deals{suffix}"}},
        {"key": "owner", "label": lb("Owner", "负责人"), "type": "user"},
        {"key": "num", "label": lb("Number", "序号"), "type": "autonumber", "options": {"prefix": "D-", "digits": 4}},
        {"key": "note", "label": lb("Note", "备注"), "type": "long_text"},
    ]


@pytest.fixture
def crm(admin: Api) -> Api:
    admin.ok("POST", "/meta/apps", {"key": "crm", "label": {"en": "CRM", "zh-CN": "客户管理"}})
    admin.ok("POST", "/meta/apps/crm/tables", {"key": "customers", "label": "Customers", "fields": [
        {"key": "name", "label": {"en": "Name", "zh-CN": "名称"}, "type": "text", "required": True, "unique": True},
        {"key": "city", "label": "City", "type": "text"}]})
    admin.ok("POST", "/data/crm/customers", {"records": [{"fields": {"name": n}} for n in
                                                        ("Acme", "北京科技", "Globex")]})
    admin.ok("POST", "/meta/apps/crm/tables", {"key": "deals", "label": "Deals", "fields": deal_fields()})
    return admin


def upload(api: Api, path: str, data: bytes | None, filename: str = "data.csv", **form: Any) -> tuple[int, Any]:
    body: dict[str, Any] = {k: v for k, v in form.items()}
    if data is not None:
        body["file"] = FileStorage(io.BytesIO(data), filename)
    # encoded in memory: the test client would spool big bodies to a temporary file it never closes
    boundary, raw = encode_multipart(body)
    resp = api.client.post("/api/v1" + path, data=raw, headers={"Authorization": f"Bearer {api.token}"},
                           content_type=f"multipart/form-data; boundary={boundary}")
    api.last = resp
    payload = resp.get_json(silent=True)
    if resp.status_code >= 400:
        assert isinstance(payload, dict) and "error" in payload, (resp.status_code, resp.data[:300])
        assert resp.status_code < 500, payload
    return resp.status_code, payload


def fetch(api: Api, path: str) -> tuple[int, bytes]:
    """GET a file (export/download): the raw bytes, since the body is not JSON."""
    resp = api.client.get("/api/v1" + path, headers={"Authorization": f"Bearer {api.token}"})
    api.last = resp
    return resp.status_code, resp.get_data()


def csv_bytes(rows: list[list[Any]], encoding: str = "utf-8") -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerows(rows)
    return buf.getvalue().encode(encoding)


def by_title(api: Api, table: str = "deals") -> dict[str, dict[str, Any]]:
    return {r["fields"]["title"]: r["fields"] for r in api.records("crm", table, limit=1000)}


def customer_id(api: Api, name: str) -> int:
    return next(r["id"] for r in api.records("crm", "customers") if r["fields"]["name"] == name)


CHINESE_ROWS = [
    ["标题", "编号", "金额", "数量", "阶段", "标签", "成交日期", "已完成", "客户", "伙伴", "负责人"],
    ["第一单", "C-1", "1,200.50", "3", "赢单", "重要，新", "2026/11/23", "是", "北京科技", "Acme, Globex", "Admin"],
    ["第二单", "C-2", "￥300", "", "lead", "old", "2026年11月23日", "否", "Acme", "", "admin"],
]


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gbk", "gb18030"])
def test_import_csv_with_chinese_headers_in_every_encoding(crm: Api, encoding: str) -> None:
    status, report = upload(crm, "/data/crm/deals/import", csv_bytes(CHINESE_ROWS, encoding))
    assert status == 200, report
    assert (report["inserted"], report["updated"], report["skipped"], report["errors"]) == (2, 0, 0, [])
    assert report["committed"] is True
    recs = by_title(crm)
    one = recs["第一单"]
    assert one["amount"] == 1200.5 and one["qty"] == 3 and one["stage"] == "won"
    assert one["tags"] == ["vip", "new"] and one["close"] == "2026-11-23" and one["done"] is True
    assert one["customer"]["display"] == "北京科技"
    assert sorted(p["display"] for p in one["partners"]) == ["Acme", "Globex"]
    assert one["owner"]["name"] == "Admin"
    two = recs["第二单"]
    assert two["amount"] == 300 and two.get("qty") is None and two["stage"] == "lead"
    assert two["tags"] == ["old"] and two["close"] == "2026-11-23" and two["done"] is False
    assert two["num"] == "D-0002" and two["partners"] == []
    # history and outbox events as for API writes
    with crm.client.application.extensions["formwork"].engine.connect() as c:
        assert c.execute(select(func.count()).select_from(db.history).where(db.history.c.action == "create")
                         ).scalar() == 5  # 3 customers + 2 deals
        assert c.execute(select(func.count()).select_from(db.outbox)
                         .where(db.outbox.c.event == "record_created")).scalar() == 5
        audit = c.execute(select(db.audit).where(db.audit.c.action == "import")).all()
        assert len(audit) == 1 and audit[0].details["inserted"] == 2 and audit[0].target == "table:crm.deals"


def test_import_xlsx_with_typed_cells(crm: Api) -> None:
    import datetime as dt

    wb = Workbook()
    ws = wb.active
    ws.append(["Title", "amount", " QUANTITY ", "Stage", "Close date", "Done", "Customer", "Extra"])
    ws.append(["X1", 99.9, 7.0, "Won", dt.date(2026, 1, 2), True, "Acme", "ignored"])
    ws.append(["X2", "1,000", 2, "输单", dt.datetime(2026, 3, 4), False, customer_id(crm, "Globex"), None])
    buf = io.BytesIO()
    wb.save(buf)
    status, report = upload(crm, "/data/crm/deals/import", buf.getvalue(), "deals.xlsx")
    assert status == 200, report
    assert report["inserted"] == 2
    assert report["notes"] == [{"column": "Extra", "field": None, "message": "matches no field; column skipped"}]
    recs = by_title(crm)
    assert recs["X1"]["amount"] == 99.9 and recs["X1"]["qty"] == 7 and recs["X1"]["close"] == "2026-01-02"
    assert recs["X1"]["done"] is True and recs["X1"]["customer"]["display"] == "Acme"
    assert recs["X2"]["amount"] == 1000 and recs["X2"]["stage"] == "lost" and recs["X2"]["close"] == "2026-03-04"
    assert recs["X2"]["customer"]["display"] == "Globex"  # matched by id


def test_dry_run_writes_nothing(crm: Api) -> None:
    app = crm.client.application
    before = db_snapshot(app)
    status, report = upload(crm, "/data/crm/deals/import", csv_bytes(CHINESE_ROWS), dry_run="true")
    assert status == 200
    assert report["inserted"] == 2 and report["dry_run"] is True and report["committed"] is False
    assert db_snapshot(app) == before
    assert crm.records("crm", "deals") == []


def test_upsert_by_unique_field(crm: Api) -> None:
    crm.ok("POST", "/data/crm/deals", {"fields": {"title": "Old title", "code": "C-1", "qty": 1, "note": "keep"}})
    rows = [["Code", "Title", "Quantity"], ["C-1", "New title", "5"], ["C-9", "Brand new", "2"]]
    status, report = upload(crm, "/data/crm/deals/import", csv_bytes(rows), mode="upsert", key_field="code")
    assert status == 200, report
    assert (report["inserted"], report["updated"]) == (1, 1)
    recs = {r["fields"]["code"]: r for r in crm.records("crm", "deals")}
    assert recs["C-1"]["fields"]["title"] == "New title" and recs["C-1"]["fields"]["qty"] == 5
    assert recs["C-1"]["fields"]["note"] == "keep"  # columns not in the file are left alone
    assert recs["C-1"]["version"] == 2
    hist = crm.ok("GET", f"/data/crm/deals/{recs['C-1']['id']}/history")["entries"]
    assert hist[0]["action"] == "update" and hist[0]["changes"]["title"] == {"old": "Old title", "new": "New title"}
    assert recs["C-9"]["fields"]["title"] == "Brand new"
    # a key repeated within the file is a row error
    rows = [["Code", "Title"], ["C-1", "A"], ["C-1", "B"]]
    status, report = upload(crm, "/data/crm/deals/import", csv_bytes(rows), mode="upsert", key_field="code")
    assert status == 422
    assert report["errors"] == [{"row": 3, "column": "Code", "field": "code", "message": "the same key as row 2"}]


def test_links_by_display_value_and_unknown_values(crm: Api) -> None:
    rows = [["Title", "Customer", "Partners"],
            ["ok", "Acme", "北京科技，Globex"],
            ["bad", "Nobody Inc", "Acme, Missing"]]
    status, report = upload(crm, "/data/crm/deals/import", csv_bytes(rows))
    assert status == 422
    assert report["errors"] == [
        {"row": 3, "column": "Customer", "field": "customer", "message": "no record 'Nobody Inc' in 'customers'"},
        {"row": 3, "column": "Partners", "field": "partners", "message": "no record 'Missing' in 'customers'"}]
    assert crm.records("crm", "deals") == []
    status, report = upload(crm, "/data/crm/deals/import", csv_bytes(rows[:2]))
    assert status == 200
    rec = by_title(crm)["ok"]
    assert rec["customer"]["id"] == customer_id(crm, "Acme")
    assert [p["display"] for p in rec["partners"]] == ["北京科技", "Globex"]


def test_row_errors_name_file_rows_and_nothing_is_written(crm: Api) -> None:
    app = crm.client.application
    data = (b"Title,Amount,Stage,Close date,Done\r\n"
            b"good,1,won,2026-01-01,yes\r\n"
            b"\r\n"
            b"\"two\nlines\",abc,won,2026-01-01,no\r\n"
            b",5,maybe,2026-02-30,perhaps\r\n")
    before = db_snapshot(app)
    status, report = upload(crm, "/data/crm/deals/import", data)
    assert status == 422
    assert report["error"]["code"] == "validation_error"
    assert "nothing was imported" in report["error"]["message"]
    assert (report["inserted"], report["updated"], report["skipped"], report["rows"]) == (0, 0, 3, 3)
    got = [(e["row"], e["column"], e["field"]) for e in report["errors"]]
    # the blank line counts; the quoted two-line cell is one spreadsheet row
    assert got == [(4, "Amount", "amount"), (5, "Title", "title"), (5, "Stage", "stage"),
                   (5, "Close date", "close"), (5, "Done", "done")]
    assert db_snapshot(app) == before
    # on_error=skip writes the good rows and reports the others
    status, report = upload(crm, "/data/crm/deals/import", data, on_error="skip")
    assert status == 200
    assert (report["inserted"], report["skipped"], report["committed"]) == (1, 2, True)
    assert list(by_title(crm)) == ["good"]


def test_unique_and_validation_rules_are_row_errors(crm: Api) -> None:
    crm.ok("PATCH", "/meta/apps/crm/tables/deals", {"validations": [
        {"condition": {"field": "qty", "op": "lte", "value": 100}, "message": "qty at most 100"}]})
    crm.ok("POST", "/data/crm/deals", {"fields": {"title": "existing", "code": "TAKEN", "qty": 1}})
    rows = [["Title", "Code", "Quantity"], ["a", "A", "1"], ["b", "TAKEN", "2"], ["c", "C", "500"],
            ["d", "A", "3"]]
    status, report = upload(crm, "/data/crm/deals/import", csv_bytes(rows))
    assert status == 422
    errs = {e["row"]: e for e in report["errors"]}
    assert set(errs) == {3, 4, 5}
    assert errs[3]["field"] == "code" and errs[3]["column"] == "Code"
    assert errs[4]["message"] == "qty at most 100"
    assert errs[5]["field"] == "code"
    assert len(crm.records("crm", "deals")) == 1


def test_read_only_columns_are_skipped_with_a_note(crm: Api) -> None:
    rows = [["Title", "Number", "Created"], ["a", "D-9999", "x"]]
    status, report = upload(crm, "/data/crm/deals/import", csv_bytes(rows), mapping=json.dumps({"Created": None}))
    assert status == 200, report
    assert report["notes"][0]["field"] == "num" and "read-only" in report["notes"][0]["message"]
    assert by_title(crm)["a"]["num"] == "D-0001"


def test_explicit_mapping(crm: Api) -> None:
    rows = [["客户名", "Whatever"], ["mapped", "Acme"]]
    status, report = upload(crm, "/data/crm/deals/import", csv_bytes(rows),
                            mapping=json.dumps({"客户名": "title", "whatever": "customer"}))
    assert status == 200, report
    assert by_title(crm)["mapped"]["customer"]["display"] == "Acme"


def _seed_for_export(api: Api) -> None:
    acme, bj, gx = (customer_id(api, n) for n in ("Acme", "北京科技", "Globex"))
    api.ok("POST", "/data/crm/deals", {"records": [
        {"fields": {"title": "Alpha", "code": "A1", "amount": "1234.56", "qty": -3, "stage": "won",
                    "tags": ["vip", "old"], "close": "2026-11-23", "done": True, "customer": acme,
                    "partners": [bj, gx], "owner": "admin", "note": "line1\nline2, with comma"}},
        {"fields": {"title": "=HYPERLINK(\"http://x\")", "code": "+86 138", "amount": 0, "stage": "lost",
                    "tags": [], "done": False, "customer": bj, "note": "@mention -minus"}},
        {"fields": {"title": "北京的单子", "qty": 10, "close": "2025-01-31", "partners": [acme]}},
    ]})


def _comparable(rec: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in rec.items() if k != "num"}
    for k in ("customer",):
        if out.get(k):
            out[k] = out[k]["id"]
    out["partners"] = sorted(p["id"] for p in out.get("partners", []))
    if out.get("owner"):
        out["owner"] = out["owner"]["id"]
    return out


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_export_then_import_round_trip(crm: Api, fmt: str) -> None:
    _seed_for_export(crm)
    crm.ok("POST", "/meta/apps/crm/tables", {"key": "copy", "label": "Copy", "fields": deal_fields("_copy")})
    status, data = fetch(crm, f"/data/crm/deals/export?format={fmt}")
    assert status == 200
    resp = crm.last
    assert "attachment" in resp.headers["Content-Disposition"]
    status, report = upload(crm, "/data/crm/copy/import", data, f"deals.{fmt}")
    assert status == 200, report
    assert report["inserted"] == 3 and report["errors"] == []
    assert [n["field"] for n in report["notes"]] == ["num"]
    original = {r["title"]: _comparable(r) for r in by_title(crm).values()}
    copied = {r["title"]: _comparable(r) for r in by_title(crm, "copy").values()}
    assert copied == original


def test_export_csv_content_labels_and_neutralisation(crm: Api) -> None:
    _seed_for_export(crm)
    status, data = fetch(crm, "/data/crm/deals/export?format=csv&sort=title")
    assert status == 200
    assert crm.last.headers["Content-Type"].startswith("text/csv")
    assert data.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))
    assert rows[0][:4] == ["Title", "Code", "Amount", "Quantity"]
    got = {r[0]: dict(zip(rows[0], r, strict=True)) for r in rows[1:]}
    alpha = got["Alpha"]
    assert alpha["Amount"] == "1234.56" and alpha["Quantity"] == "-3" and alpha["Stage"] == "won"
    assert alpha["Tags"] == "vip, old" and alpha["Close date"] == "2026-11-23" and alpha["Done"] == "TRUE"
    assert alpha["Customer"] == "Acme" and alpha["Partners"] == "北京科技, Globex" and alpha["Owner"] == "Admin"
    assert alpha["Number"] == "D-0001" and alpha["Note"] == "line1\nline2, with comma"
    evil = got["'=HYPERLINK(\"http://x\")"]
    assert evil["Code"] == "'+86 138" and evil["Note"] == "'@mention -minus"
    # the user's locale picks the header labels; header=keys gives keys
    engine = crm.client.application.extensions["formwork"].engine
    with db.transaction(engine) as c:
        c.execute(update(db.users).where(db.users.c.username == "admin").values(locale="zh-CN"))
    status, data = fetch(crm, "/data/crm/deals/export?fields=title,amount,stage")
    assert data.decode("utf-8-sig").splitlines()[0] == "标题,金额,阶段"
    status, data = fetch(crm, "/data/crm/deals/export?fields=title,amount&header=keys")
    assert data.decode("utf-8-sig").splitlines()[0] == "title,amount"
    with engine.connect() as c:
        assert c.execute(select(func.count()).select_from(db.audit).where(db.audit.c.action == "export")
                         ).scalar() == 3


def test_export_xlsx_is_neutralised_and_typed(crm: Api) -> None:
    _seed_for_export(crm)
    status, data = fetch(crm, "/data/crm/deals/export?format=xlsx&fields=title,amount,close,done&sort=-amount")
    assert status == 200
    ws = load_workbook(io.BytesIO(data), read_only=True).worksheets[0]
    rows = [[c.value for c in r] for r in ws.iter_rows()]
    assert rows[0] == ["Title", "Amount", "Close date", "Done"]
    assert rows[1][0] == "Alpha" and rows[1][1] == 1234.56 and rows[1][3] is True
    assert rows[1][2].date().isoformat() == "2026-11-23"
    assert rows[2][0] == "'=HYPERLINK(\"http://x\")"


def test_export_with_view_filter_sort_and_search(crm: Api) -> None:
    _seed_for_export(crm)
    crm.ok("POST", "/meta/apps/crm/tables/deals/views", {
        "key": "big", "label": "Big", "type": "grid", "fields": ["title", "qty"],
        "filter": {"field": "qty", "op": "is_not_empty"}, "sort": ["-qty"]})

    def titles(query: str) -> list[list[str]]:
        status, data = fetch(crm, "/data/crm/deals/export?" + query)
        assert status == 200, data
        return list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))

    assert titles("view=big&header=keys") == [["title", "qty"], ["北京的单子", "10"], ["Alpha", "-3"]]
    flt = quote(json.dumps({"field": "stage", "op": "eq", "value": "won"}))
    assert titles(f"fields=title&filter={flt}") == [["Title"], ["Alpha"]]
    assert titles("fields=title&sort=-close,title")[1:] == [["Alpha"], ["北京的单子"], ["'=HYPERLINK(\"http://x\")"]]
    assert titles("fields=title&search=北京") == [["Title"], ["北京的单子"]]
    for bad in ("format=pdf", "fields=nope", "sort=nope", "filter=%7B", "view=nope", "header=x", "limit=5"):
        status, err = crm.get("/data/crm/deals/export?" + bad)
        assert status in (400, 404), (bad, status)


def _xlsx_bomb() -> bytes:
    buf = io.BytesIO()
    zeros = b"0" * (1024 * 1024)
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr("[Content_Types].xml", b"<Types/>")
        zf.writestr("xl/workbook.xml", b"<workbook/>")
        with zf.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as member:
            for _ in range(250):
                member.write(zeros)
    return buf.getvalue()


@pytest.mark.parametrize("case", [
    "broken_encoding", "ragged", "bomb", "pdf", "no_file", "bad_mapping_json", "mapping_unknown_field",
    "mapping_unknown_column", "key_field_unknown", "key_field_missing", "bad_mode", "empty", "no_columns",
    "required_unmapped", "unknown_form_field"])
def test_bad_inputs_are_refused_and_change_nothing(crm: Api, case: str) -> None:
    good = csv_bytes([["Title", "Amount"], ["a", "1"]])
    form: dict[str, Any] = {}
    data: bytes | None = good
    name = "data.csv"
    expect = 400
    if case == "broken_encoding":
        data = "标题,金额\r\n好,1\r\n".encode() + b"\xff\xfe\xfa,2\r\n"
    elif case == "ragged":
        data = b"Title,Amount\r\na,1\r\nb,2,3\r\n"
    elif case == "bomb":
        data, name = _xlsx_bomb(), "deals.xlsx"
    elif case == "pdf":
        data = b"%PDF-1.7\n1 0 obj << >> endobj\n"
    elif case == "no_file":
        data = None
    elif case == "bad_mapping_json":
        form["mapping"] = "{not json"
    elif case == "mapping_unknown_field":
        form["mapping"], expect = json.dumps({"Title": "nope"}), 422
    elif case == "mapping_unknown_column":
        form["mapping"], expect = json.dumps({"Nope": "title"}), 422
    elif case == "key_field_unknown":
        form.update(mode="upsert", key_field="nope")
        expect = 422
    elif case == "key_field_missing":
        form.update(mode="upsert")
        expect = 422
    elif case == "bad_mode":
        form["mode"] = "replace"
    elif case == "empty":
        data = b""
    elif case == "no_columns":
        data, expect = csv_bytes([["Foo", "Bar"], ["1", "2"]]), 422
    elif case == "required_unmapped":
        data, expect = csv_bytes([["Amount"], ["1"]]), 422
    elif case == "unknown_form_field":
        form["dryrun"] = "true"
    app = crm.client.application
    before = db_snapshot(app)
    status, err = upload(crm, "/data/crm/deals/import", data, name, **form)
    assert status == expect, err
    assert err["error"]["message"]
    assert db_snapshot(app) == before
    assert list((Path(app.config["FILES_DIR"]) / "imports").glob("*")) == []


def test_errors_are_specific(crm: Api) -> None:
    status, err = upload(crm, "/data/crm/deals/import", b"Title,Amount\r\na,1\r\nb,2,3\r\n")
    assert status == 400 and "row 3" in err["error"]["message"]
    status, err = upload(crm, "/data/crm/deals/import", b"%PDF-1.4 ...", "report.csv")
    assert "PDF" in err["error"]["message"]
    status, err = upload(crm, "/data/crm/deals/import", None)
    assert "'file'" in err["error"]["message"]
    status, err = upload(crm, "/data/crm/deals/import", csv_bytes([["Title"], ["a"]]), mode="upsert",
                         key_field="nope")
    assert err["error"]["details"] == {"key_field": ["no field 'nope' in 'deals'"]}
    status, err = upload(crm, "/data/crm/deals/import", csv_bytes([["Title"], ["a"]]), mode="upsert",
                         key_field="done")
    assert status == 422 and "can't identify records" in err["error"]["details"]["key_field"][0]
    status, err = upload(crm, "/data/crm/nope/import", csv_bytes([["Title"], ["a"]]))
    assert status == 404


def _poll(api: Api, job_id: int, timeout: float = 240) -> tuple[dict[str, Any], list[tuple[str, int]]]:
    seen: list[tuple[str, int]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api.ok("GET", f"/jobs/{job_id}")["job"]
        seen.append((job["status"], job["progress"]))
        if job["status"] in ("done", "failed"):
            return job, seen
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {seen[-5:]}")


def test_big_import_runs_as_a_job(crm: Api) -> None:
    n = 20_000
    # links and unique fields (one query per row each) are covered above; this one is about the job
    lines = ["Title,Quantity,Stage,Amount"]
    lines += [f"Deal {i},{i % 97},{'won' if i % 2 else '线索'},\"{i},000.50\"" for i in range(n)]
    status, body = upload(crm, "/data/crm/deals/import", ("\r\n".join(lines) + "\r\n").encode())
    assert status == 202, body
    job = body["job"]
    assert job["status"] == "queued" and job["progress"] == 0 and job["total"] == n
    assert crm.last.headers["Location"] == f"/api/v1/jobs/{job['id']}"
    final, seen = _poll(crm, job["id"])
    assert final["status"] == "done", final
    assert final["progress"] == n and final["total"] == n
    assert final["result"]["inserted"] == n and final["result"]["errors"] == []
    progress = [p for _s, p in seen]
    assert progress == sorted(progress)
    assert any(s == "running" and 0 < p < n for s, p in seen), seen[:: max(1, len(seen) // 20)]
    assert len(crm.records("crm", "deals", limit=1000)) == 1000
    total = crm.ok("GET", "/data/crm/deals?count=true&limit=1&filter=" + quote(json.dumps(
        {"field": "stage", "op": "eq", "value": "lead"})))["total"]
    assert total == n // 2
    assert list((Path(crm.client.application.config["FILES_DIR"]) / "imports").glob("*")) == []
    # another user can't see the job
    other = _user_api(crm, "viewer", None)
    assert other.get(f"/jobs/{job['id']}")[0] == 404


def test_big_import_with_a_bad_row_fails_as_a_whole(crm: Api) -> None:
    app = crm.client.application
    app.config["IMPORT_JOB_ROWS"] = 50
    lines = ["Title,Quantity"] + [f"T{i},{'x' if i == 70 else i}" for i in range(120)]
    before = db_snapshot(app)
    status, body = upload(crm, "/data/crm/deals/import", "\n".join(lines).encode())
    assert status == 202
    final, _ = _poll(crm, body["job"]["id"])
    assert final["status"] == "failed" and "nothing was imported" in final["error"]
    assert final["result"]["errors"] == [
        {"row": 72, "column": "Quantity", "field": "qty", "message": "must be a number"}]
    after = db_snapshot(app)
    assert {k: v for k, v in after.items() if not k.startswith("fw_job")} == \
        {k: v for k, v in before.items() if not k.startswith("fw_job")}
    assert crm.records("crm", "deals") == []


def _user_api(admin: Api, username: str, perms: dict[str, Any] | None) -> Api:
    app = admin.client.application
    with db.transaction(app.extensions["formwork"].engine) as conn:
        uid = auth.create_user(conn, {"username": username, "name": username.title(), "password": "password-123"})
        if perms is not None:
            rid = conn.execute(insert(db.roles).values(key=f"role_{username}", doc={
                "key": f"role_{username}", "label": username, "permissions": perms}).returning(db.roles.c.id)
            ).scalar_one()
            conn.execute(insert(db.user_roles).values(user_id=uid, role_id=rid))
        token = auth.create_token(conn, uid, "t", None)["token"]
    return Api(admin.client, token)


def test_import_and_export_flags_are_enforced(crm: Api) -> None:
    _seed_for_export(crm)
    base = {"read": "all", "create": True, "update": "all"}
    plain = _user_api(crm, "plain", {"crm.deals": base, "crm.customers": {"read": "all"}})
    app = crm.client.application
    before = db_snapshot(app)
    status, err = upload(plain, "/data/crm/deals/import", csv_bytes([["Title"], ["x"]]))
    assert status == 403 and err["error"]["code"] == "forbidden"
    assert db_snapshot(app) == before
    assert fetch(plain, "/data/crm/deals/export")[0] == 403
    assert fetch(plain, "/data/crm/deals/export?format=xlsx")[0] == 403
    # with the flags, and a hidden field that the export leaves out and the import can't write
    allowed = _user_api(crm, "allowed", {"crm.deals": {**base, "import": True, "export": True,
                                                       "fields": {"note": "hidden"}},
                                         "crm.customers": {"read": "all"}})
    status, data = fetch(allowed, "/data/crm/deals/export?header=keys")
    assert status == 200
    header = data.decode("utf-8-sig").splitlines()[0].split(",")
    assert "note" not in header and "title" in header
    status, report = upload(allowed, "/data/crm/deals/import", csv_bytes([["Title", "note"], ["mine", "n"]]))
    assert status == 200, report
    assert report["inserted"] == 1 and report["notes"][0]["message"] == "matches no field; column skipped"
    # a role that can import but not see a table gets 404
    nosee = _user_api(crm, "nosee", {"crm.customers": {"read": "all"}})
    assert upload(nosee, "/data/crm/deals/import", csv_bytes([["Title"], ["x"]]))[0] == 404
    assert fetch(nosee, "/data/crm/deals/export")[0] == 404


def test_export_respects_row_scope(crm: Api) -> None:
    _seed_for_export(crm)
    own = _user_api(crm, "owner2", {"crm.deals": {"read": "own", "create": True, "export": True, "import": True},
                                    "crm.customers": {"read": "all"}})
    status, report = upload(own, "/data/crm/deals/import", csv_bytes([["Title", "Owner"], ["by owner2", "owner2"]]))
    assert status == 200 and report["inserted"] == 1
    status, data = fetch(own, "/data/crm/deals/export?fields=title&header=keys")
    assert status == 200
    assert data.decode("utf-8-sig").split() == ["title", "by", "owner2"]


def test_export_streams_many_pages(crm: Api) -> None:
    crm.ok("POST", "/data/crm/deals", {"records": [{"fields": {"title": f"T{i:04d}", "qty": i}} for i in range(1000)]})
    crm.ok("POST", "/data/crm/deals", {"records": [{"fields": {"title": f"T{i:04d}", "qty": i}}
                                                  for i in range(1000, 2500)][:1000]})
    resp = crm.client.get("/api/v1/data/crm/deals/export?fields=title,qty&sort=-qty",
                          headers={"Authorization": f"Bearer {crm.token}"})
    assert resp.is_streamed
    rows = list(csv.reader(io.StringIO(resp.get_data().decode("utf-8-sig"))))
    assert len(rows) == 2001
    assert rows[1] == ["T1999", "1999"] and rows[-1] == ["T0000", "0"]
