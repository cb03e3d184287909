"""Duplicate rules (normalised name, phone, email) and merging two records with everything related."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from formwork import db
from formwork.runtime import auth
from formwork.runtime.duplicates import normalise_email, normalise_name, normalise_phone
from tests.helpers import Api, db_snapshot
from tests.test_files import post_file


@pytest.mark.parametrize(("a", "b"), [
    ("北京云端科技有限公司", "北京云端科技"), ("  Acme Co., Ltd. ", "ACME"), ("ＡＣＭＥ　Ｉｎｃ", "acme inc."),
    ("上海海纳股份有限公司", "上海海纳公司"), ("Foo Bar Limited", "foo bar"), ("Globex Corporation", "GLOBEX CORP")])
def test_names_compare_without_case_width_and_company_suffixes(a: str, b: str) -> None:
    assert normalise_name(a) == normalise_name(b) is not None


@pytest.mark.parametrize(("a", "b"), [
    ("+86 138-0013-8000", "13800138000"), ("0086 13800138000", "138 0013 8000"), ("8613800138000", "13800138000"),
    ("(010) 6552-1234", "+86 10 65521234"), ("+1 415 555 0100", "415-555-0100")])
def test_phones_compare_by_digits_without_country_code(a: str, b: str) -> None:
    assert normalise_phone(a) == normalise_phone(b) is not None


def test_different_values_do_not_match() -> None:
    assert normalise_name("云端科技") != normalise_name("云海科技")
    assert normalise_phone("13800138000") != normalise_phone("13800138001")
    assert normalise_email(" Li@Example.COM ") == "li@example.com"
    assert normalise_name("公司") == "公司" and normalise_name("") is None and normalise_name(" . ") is None


def build(admin: Api) -> dict[str, int]:
    admin.ok("POST", "/meta/apps", {"key": "crm", "label": "CRM"})
    admin.ok("POST", "/meta/apps/crm/tables", {"key": "customers", "label": "Customers", "fields": [
        {"key": "name", "label": "Name", "type": "text"},
        {"key": "phone", "label": "Phone", "type": "phone"},
        {"key": "email", "label": "Email", "type": "email"},
        {"key": "note", "label": "Note", "type": "text"},
        {"key": "owner", "label": "Owner", "type": "user"},
        {"key": "files", "label": "Files", "type": "attachment"}]})
    admin.ok("PATCH", "/meta/apps/crm/tables/customers", {"duplicate_rules": [
        {"key": "same_name", "fields": [{"field": "name", "match": "name"}]},
        {"key": "same_phone", "fields": [{"field": "phone", "match": "phone"}]}]})
    admin.ok("POST", "/meta/apps/crm/tables", {"key": "contacts", "label": "Contacts", "fields": [
        {"key": "name", "label": "Name", "type": "text"},
        {"key": "customer", "label": "Customer", "type": "link", "options": {"table": "customers"}}]})
    admin.ok("POST", "/meta/apps/crm/tables", {"key": "campaigns", "label": "Campaigns", "fields": [
        {"key": "name", "label": "Name", "type": "text"},
        {"key": "customers", "label": "Customers", "type": "link",
         "options": {"table": "customers", "multiple": True}}]})
    ids = {}
    ids["a"] = admin.ok("POST", "/data/crm/customers", {"fields": {
        "name": "北京云端科技有限公司", "phone": "+86 138-0013-8000", "note": "keep"}})["id"]
    ids["other"] = admin.ok("POST", "/data/crm/customers", {"fields": {
        "name": "上海海纳", "phone": "021-5555 0000"}})["id"]
    return ids


def test_a_duplicate_create_is_refused_until_confirmed(admin: Api, app: Any) -> None:
    ids = build(admin)
    before = db_snapshot(app)
    status, body = admin.post("/data/crm/customers", {"fields": {"name": "北京云端科技", "phone": "13800138000"}})
    assert status == 409 and body["error"]["code"] == "duplicate"
    m = body["error"]["details"]["matches"]
    assert [x["id"] for x in m] == [ids["a"]] and set(m[0]["rules"]) == {"same_name", "same_phone"}
    assert m[0]["display"] == "北京云端科技有限公司" and body["error"]["details"]["hidden"] == 0
    assert db_snapshot(app) == before
    found = admin.ok("POST", "/data/crm/customers/duplicates", {"fields": {"phone": "0086 13800138000"}})
    assert [x["id"] for x in found["matches"]] == [ids["a"]]
    assert admin.ok("POST", "/data/crm/customers/duplicates", {"fields": {"phone": "0086 13800138000"},
                                                               "exclude": ids["a"]})["matches"] == []
    rec = admin.ok("POST", "/data/crm/customers", {"fields": {"name": "北京云端科技", "phone": "13800138000"},
                                                   "allow_duplicates": True})
    assert rec["id"] > ids["other"]
    # a batch reports each row; rows duplicating each other are caught too
    status, body = admin.post("/data/crm/customers", {"records": [
        {"fields": {"name": "New One"}}, {"fields": {"name": "NEW ONE Ltd."}},
        {"fields": {"name": "上海海纳有限公司"}}]})
    assert status == 409 and set(body["error"]["details"]) == {"records/1", "records/2"}
    assert body["error"]["details"]["records/1"]["same_batch"] == [0]
    admin.ok("POST", "/data/crm/customers", {"fields": {"name": "Unrelated"}})


def test_a_rep_sees_that_a_hidden_record_matches_but_not_which(app: Any, admin: Api) -> None:
    ids = build(admin)
    admin.ok("POST", "/admin/roles", {"key": "rep", "label": "Rep", "permissions": {
        "crm.customers": {"read": "own", "create": True, "update": "own", "delete": "none"}}})
    admin.ok("POST", "/admin/users", {"username": "rep", "name": "Rep", "password": "pass-word-99", "roles": ["rep"]})
    rep = token_for(app, "rep")
    status, body = rep.post("/data/crm/customers", {"fields": {"name": "北京云端科技"}})
    assert status == 409 and body["error"]["details"] == {"matches": [], "hidden": 1}
    status, _ = rep.post(f"/data/crm/customers/{ids['a']}/merge", {"other": ids["other"]})
    assert status == 404


def token_for(app: Any, username: str) -> Api:
    with db.transaction(app.extensions["formwork"].engine) as conn:
        uid = conn.execute(select(db.users.c.id).where(db.users.c.username == username)).scalar_one()
        return Api(app.test_client(), auth.create_token(conn, uid, "tests", None)["token"])


def test_merge_moves_related_records_and_writes_history(admin: Api, app: Any) -> None:
    ids = build(admin)
    dup = admin.ok("POST", "/data/crm/customers", {"fields": {"name": "云端科技", "phone": "13800138000",
                                                              "email": "it@yun.cn", "note": "drop"},
                                                   "allow_duplicates": True})["id"]
    c1 = admin.ok("POST", "/data/crm/contacts", {"fields": {"name": "王芳", "customer": dup}})["id"]
    c2 = admin.ok("POST", "/data/crm/contacts", {"fields": {"name": "李雷", "customer": ids["a"]}})["id"]
    camp = admin.ok("POST", "/data/crm/campaigns", {"fields": {"name": "展会", "customers": [dup, ids["a"]]}})["id"]
    camp2 = admin.ok("POST", "/data/crm/campaigns", {"fields": {"name": "网络", "customers": [dup]}})["id"]
    admin.ok("POST", f"/data/crm/customers/{dup}/comments", {"body": "called them"})
    tok_a = post_file(admin, b"a", "a.txt")[1]["token"]
    tok_b = post_file(admin, b"b", "b.txt")[1]["token"]
    admin.ok("PATCH", f"/data/crm/customers/{ids['a']}", {"fields": {"files": [tok_a]}})
    admin.ok("PATCH", f"/data/crm/customers/{dup}", {"fields": {"files": [tok_b]}})
    out = admin.ok("POST", f"/data/crm/customers/{ids['a']}/merge", {"other": dup, "take": ["email"]})
    rec = out["record"]
    assert rec["fields"]["email"] == "it@yun.cn" and rec["fields"]["note"] == "keep"
    assert [f["token"] for f in rec["fields"]["files"]] == [tok_a, tok_b]
    assert out["moved"] == {"contacts.customer": 1, "campaigns.customers": 2} and out["comments"] == 1
    assert admin.ok("GET", f"/data/crm/contacts/{c1}")["fields"]["customer"]["id"] == ids["a"]
    assert admin.ok("GET", f"/data/crm/contacts/{c2}")["fields"]["customer"]["id"] == ids["a"]
    assert [x["id"] for x in admin.ok("GET", f"/data/crm/campaigns/{camp}")["fields"]["customers"]] == [ids["a"]]
    assert [x["id"] for x in admin.ok("GET", f"/data/crm/campaigns/{camp2}")["fields"]["customers"]] == [ids["a"]]
    assert admin.get(f"/data/crm/customers/{dup}")[0] == 404
    comments = admin.ok("GET", f"/data/crm/customers/{ids['a']}/comments")
    assert any(c["body"] == "called them" for c in comments["comments"])
    hist = admin.ok("GET", f"/data/crm/customers/{ids['a']}/history")["entries"]
    assert hist[0]["action"] == "merge" and hist[0]["changes"]["email"]["new"] == "it@yun.cn"
    contact_hist = admin.ok("GET", f"/data/crm/contacts/{c1}/history")["entries"]
    assert contact_hist[0]["changes"]["customer"]["new"]["id"] == ids["a"]
    with app.extensions["formwork"].engine.connect() as conn:
        loser = conn.execute(select(db.history.c.action, db.history.c.changes).where(
            db.history.c.record_id == dup).order_by(db.history.c.id.desc())).first()
    assert loser is not None and loser.action == "merge" and loser.changes["_merged_into"]["new"]["id"] == ids["a"]
    # the merged record is in the trash and can be restored (its related records stay with the survivor)
    admin.ok("POST", f"/data/crm/customers/{dup}/restore")


def test_records_moved_by_a_merge_raise_the_events_of_an_update(admin: Api, app: Any) -> None:
    ids = build(admin)
    dup = admin.ok("POST", "/data/crm/customers", {"fields": {"name": "云端", "phone": "13800138000"},
                                                   "allow_duplicates": True})["id"]
    c1 = admin.ok("POST", "/data/crm/contacts", {"fields": {"name": "王芳", "customer": dup}})["id"]
    c2 = admin.ok("POST", "/data/crm/contacts", {"fields": {"name": "李雷", "customer": ids["a"]}})["id"]
    camp = admin.ok("POST", "/data/crm/campaigns", {"fields": {"name": "展会", "customers": [dup]}})["id"]
    o = db.outbox
    with app.extensions["formwork"].engine.connect() as conn:
        last = conn.execute(select(func.max(o.c.id))).scalar() or 0
    admin.ok("POST", f"/data/crm/customers/{ids['a']}/merge", {"other": dup})
    with app.extensions["formwork"].engine.connect() as conn:
        tables = {r.key: r.id for r in conn.execute(select(db.tables.c.key, db.tables.c.id))}
        rows = conn.execute(select(o.c.table_id, o.c.record_id, o.c.event, o.c.payload, o.c.user_id).where(
            o.c.id > last).order_by(o.c.id)).all()
    updated = {(r.table_id, r.record_id): r for r in rows if r.event == "record_updated"}
    assert set(updated) == {(tables["contacts"], c1), (tables["campaigns"], camp)}  # c2 did not move
    contact = updated[(tables["contacts"], c1)].payload
    assert contact["changes"]["customer"]["old"]["id"] == dup and contact["changes"]["customer"]["new"] == {
        "id": ids["a"], "display": "北京云端科技有限公司"}
    assert contact["fields"]["name"] == "王芳" and contact["fields"]["customer"]["id"] == ids["a"]
    campaign = updated[(tables["campaigns"], camp)].payload
    assert [x["id"] for x in campaign["changes"]["customers"]["new"]] == [ids["a"]]
    assert [(r.event, r.record_id) for r in rows if r.event != "record_updated"] == [("record_deleted", dup)]
    assert c2 not in {r.record_id for r in rows if r.table_id == tables["contacts"]}


def test_the_sql_prefilter_finds_the_same_matches_as_reading_every_record(admin: Api, app: Any) -> None:
    import unicodedata

    from formwork.runtime import duplicates

    for ch in duplicates._CJK_PUNCT:  # plain punctuation never normalises into a letter, digit or ideograph
        assert not any(duplicates._probe_char(c) for c in unicodedata.normalize("NFKC", ch).casefold()), ch
    build(admin)
    admin.ok("POST", "/meta/apps/crm/tables/customers/fields", {"key": "size", "label": "Size", "type": "number",
                                                                "options": {"precision": 2}})
    admin.ok("PATCH", "/meta/apps/crm/tables/customers", {"duplicate_rules": [
        {"key": "same_name", "fields": [{"field": "name", "match": "name"}]},
        {"key": "same_phone", "fields": [{"field": "phone", "match": "phone"}]},
        {"key": "same_size", "fields": [{"field": "size", "match": "exact"}, {"field": "name", "match": "exact"}]}]})
    stored = ["ＡＣＭＥ　Ｉｎｃ", "Acme Co., Ltd.", "acme", "ACME-Trading", "Café Mélange", "cafe melange",
              "北京云端（上海）科技有限公司", "北京云端上海科技", "㈱北京", "Straße GmbH", "STRASSE",
              "Ｏｍｅｇａ", "omega ltd", "Ωmega", "云端", "Sp%cial_Co"]
    phones = ["+86 138-0013-8000", "(010) 6552-1234", "8613800138000", "021 5555 0000", "415.555.0100",
              "+1 415 555 0100", "13800138000"]
    for i, name in enumerate(stored):
        admin.ok("POST", "/data/crm/customers", {"fields": {"name": name, "phone": phones[i % len(phones)],
                                                            "size": [12, 12.5, 1200][i % 3]}, "allow_duplicates": True})
    probes = [{"name": n} for n in [*stored, "acme inc", "北京云端上海科技股份有限公司", "strasse", "omega",
                                    "sp%cial", "nothing like it"]]
    probes += [{"phone": p} for p in [*phones, "１３８００１３８０００", "010 65521234", "999"]]
    probes += [{"size": n, "name": m} for n in (12, 12.5, 1200, 7) for m in ("acme", "ACME", "omega ltd")]
    p = app.extensions["formwork"]
    with db.transaction(p.engine) as conn:
        t = p.catalogs.get(conn).table("crm", "customers")
        everything = duplicates.DuplicateIndex.build(conn, t)
        total = len(everything.seen)
        read = []
        for v in probes:
            narrow = duplicates.DuplicateIndex.build(conn, t, [v])
            assert narrow.lookup(v) == everything.lookup(v), v
            read.append(len(narrow.seen))
    assert any(everything.lookup(v) for v in probes)
    assert sum(read) < total * len(probes) / 2  # most records are never read


def test_a_unique_value_can_be_taken_from_the_merged_record(admin: Api) -> None:
    ids = build(admin)
    admin.ok("PATCH", "/meta/apps/crm/tables/customers/fields/email", {"unique": True})
    admin.ok("PATCH", f"/data/crm/customers/{ids['other']}", {"fields": {"email": "hi@haina.cn"}})
    out = admin.ok("POST", f"/data/crm/customers/{ids['a']}/merge", {"other": ids["other"], "take": ["email", "name"]})
    assert out["record"]["fields"]["email"] == "hi@haina.cn" and out["record"]["fields"]["name"] == "上海海纳"


def test_a_failed_merge_changes_nothing(admin: Api, app: Any) -> None:
    ids = build(admin)
    admin.ok("POST", "/data/crm/contacts", {"fields": {"name": "王芳", "customer": ids["other"]}})
    before = db_snapshot(app)
    status, _ = admin.post(f"/data/crm/customers/{ids['a']}/merge", {"other": ids["other"], "take": ["nope"]})
    assert status == 422
    status, _ = admin.post(f"/data/crm/customers/{ids['a']}/merge", {"other": ids["a"]})
    assert status == 400
    status, _ = admin.post(f"/data/crm/customers/{ids['a']}/merge", {"other": 99999})
    assert status == 404
    assert db_snapshot(app) == before


def test_merge_needs_the_right_to_update_both(app: Any, admin: Api) -> None:
    ids = build(admin)
    admin.ok("POST", "/admin/roles", {"key": "rep", "label": "Rep", "permissions": {
        "crm.customers": {"read": "all", "create": True, "update": "own", "delete": "none"},
        "crm.contacts": {"read": "all", "create": True, "update": "own", "delete": "none"}}})
    uid = admin.ok("POST", "/admin/users", {"username": "rep", "name": "Rep", "password": "pass-word-99",
                                            "roles": ["rep"]})["id"]
    admin.ok("PATCH", f"/data/crm/customers/{ids['a']}", {"fields": {"owner": uid}})
    rep = token_for(app, "rep")
    before = db_snapshot(app)
    status, _ = rep.post(f"/data/crm/customers/{ids['a']}/merge", {"other": ids["other"]})
    assert status == 403
    assert db_snapshot(app) == before
    admin.ok("PATCH", f"/data/crm/customers/{ids['other']}", {"fields": {"owner": uid}})
    assert rep.ok("POST", f"/data/crm/customers/{ids['a']}/merge", {"other": ids["other"]})["merged"] == ids["other"]


def test_rules_must_name_comparable_fields(admin: Api) -> None:
    build(admin)
    status, body = admin.patch("/meta/apps/crm/tables/customers", {"duplicate_rules": [
        {"key": "x", "fields": [{"field": "nope", "match": "name"}]}]})
    assert status == 422 and "/duplicate_rules/0/fields/0/field" in body["error"]["details"]
    status, _ = admin.patch("/meta/apps/crm/tables/customers", {"duplicate_rules": [
        {"key": "x", "fields": [{"field": "files"}]}]})
    assert status == 422


def test_import_reports_duplicates_per_row_and_can_skip_them(admin: Api) -> None:
    from tests.test_transfer import csv_bytes, upload

    ids = build(admin)
    data = csv_bytes([["Name", "Phone"], ["北京云端科技", ""], ["Fresh Ltd", ""], ["FRESH", "13900000000"],
                      ["Other", "+86 13800138000"], ["Brand new", ""]])
    status, rep = upload(admin, "/data/crm/customers/import", data, dry_run="true")
    assert status == 200, rep
    dups = {d["row"]: d for d in rep["duplicates"]}
    assert set(dups) == {2, 4, 5}
    assert dups[2]["records"] == [ids["a"]] and dups[2]["rules"] == ["same_name"]
    assert dups[4]["rows"] == [3] and dups[4]["records"] == []
    assert dups[5]["records"] == [ids["a"]] and dups[5]["rules"] == ["same_phone"]
    assert rep["inserted"] == 5 and not dups[2]["skipped"]
    status, rep = upload(admin, "/data/crm/customers/import", data, duplicates="skip")
    assert status == 200 and rep["inserted"] == 2 and rep["duplicates_skipped"] == 3 and rep["skipped"] == 3
    names = {r["fields"]["name"] for r in admin.records("crm", "customers")}
    assert {"Fresh Ltd", "Brand new"} <= names and "FRESH" not in names
    status, rep = upload(admin, "/data/crm/customers/import", data, duplicates="allow", dry_run="true")
    assert status == 200 and "duplicates" not in rep and rep["inserted"] == 5
    status, _ = upload(admin, "/data/crm/customers/import", data, duplicates="maybe")
    assert status == 400


@pytest.fixture(scope="module")
def crm(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.crm_support import installed_crm

    yield from installed_crm(database_url, tmp_path_factory)


def test_the_crm_checks_customers_and_contacts_and_shares_the_lead_source(crm: Any) -> None:
    admin, am1 = crm.admin, crm.api("am1")
    some = admin.records("crm", "customers", limit=1)[0]["fields"]
    status, body = am1.post("/data/crm/customers", {"fields": {"name": f" {some['name'].upper()} "}})
    assert status == 409 and body["error"]["code"] == "duplicate"
    assert len(body["error"]["details"]["matches"]) + body["error"]["details"]["hidden"] >= 1
    mine = am1.ok("POST", "/data/crm/customers", {"fields": {
        "name": "查重样例科技有限公司", "phone": "+86 139 1234 5678", "owner": crm.users["am1"]}})
    status, body = am1.post("/data/crm/customers", {"fields": {"name": "另一家", "phone": "13912345678"}})
    assert status == 409 and mine["id"] in [m["id"] for m in body["error"]["details"]["matches"]]
    twin = am1.ok("POST", "/data/crm/customers", {"fields": {"name": "查重样例科技", "owner": crm.users["am1"]},
                                                  "allow_duplicates": True})
    contact = am1.ok("POST", "/data/crm/contacts", {"fields": {"name": "赵六", "email": "Zhao@Example.cn",
                                                               "customer": twin["id"], "owner": crm.users["am1"]}})
    status, body = am1.post("/data/crm/contacts", {"fields": {"name": "赵六", "email": "zhao@example.cn"}})
    assert status == 409 and contact["id"] in [m["id"] for m in body["error"]["details"]["matches"]]
    out = am1.ok("POST", f"/data/crm/customers/{mine['id']}/merge", {"other": twin["id"]})
    assert out["moved"].get("contacts.customer") == 1
    assert am1.ok("GET", f"/data/crm/contacts/{contact['id']}")["fields"]["customer"]["id"] == mine["id"]
    for table in ("customers", "opportunities"):
        f = admin.ok("GET", f"/meta/apps/crm/tables/{table}/fields/source")
        assert f["options"]["list"] == "lead_source" and len(f["options"]["choices"]) == 7
