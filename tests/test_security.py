"""Regression tests for the security review: each reproduces a finding that a user could exploit.

The world is the permission matrix's CRM (tests.test_permissions.build): account managers am1/am2/am3 read
only their own customers and opportunities and never see credit_limit; c1/o1/t1 are am1's, o4 is am1's
opportunity on am3's customer c3, o5 is am2's opportunity on am1's customer c1.
"""

from __future__ import annotations

import base64
import io
import json
import os
import pathlib
import re
import stat
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import select
from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

from formwork import db
from formwork.automation.engine import AutomationEngine
from formwork.automation.rules import SECRET_MASK
from formwork.automation.settings import Settings
from formwork.runtime import auth
from tests.helpers import Api, db_snapshot
from tests.test_permissions import PASSWORD, World, build, token_for


def q(value: Any) -> str:
    return quote(json.dumps(value))


def cursor_text(cursor: str) -> str:
    """The sort values a keyset cursor carries (it is signed, not encrypted)."""
    return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))[12:].decode()


def engine(app: Any) -> Any:
    return app.extensions["formwork"].engine


def customer_of(admin: Api, opp_id: int) -> Any:
    return (admin.ok("GET", f"/data/crm/opportunities/{opp_id}")["fields"].get("customer") or {}).get("id")


def hide_secret_note(admin: Api, w: World) -> None:
    """A text field on customers hidden from account managers, with a distinctive value on c1."""
    admin.ok("POST", "/meta/apps/crm/tables/customers/fields", {"key": "secret_note", "label": "Secret",
                                                                 "type": "text"})
    role = admin.ok("GET", "/admin/roles/account_manager")
    role["permissions"]["crm.customers"]["fields"]["secret_note"] = "hidden"
    admin.ok("PATCH", "/admin/roles/account_manager", {"permissions": role["permissions"]})
    for key, note in (("c1", "alpha-sekret"), ("c2", "beta-sekret"), ("c3", "gamma-sekret")):
        admin.ok("PATCH", f"/data/crm/customers/{w.ids[key]}", {"fields": {"secret_note": note}})


def automator(app: Any, admin: Api) -> Api:
    """A user who may manage automations but reads only their own customers (credit_limit hidden)."""
    admin.ok("POST", "/admin/roles", {"key": "automator", "label": "A", "manage_automations": True,
                                      "permissions": {"crm.customers": {"read": "own", "create": True,
                                                                        "update": "own",
                                                                        "fields": {"credit_limit": "hidden"}}}})
    admin.ok("POST", "/admin/users", {"username": "auto", "name": "Auto", "password": PASSWORD,
                                      "roles": ["automator"]})
    return token_for(app, "auto")


# --- 1. run_as and the dry run ----------------------------------------------------------------------
RULE = {"key": "steal", "label": "s", "trigger": {"type": "manual", "table": "customers"},
        "actions": [{"type": "update_record", "fields": {"name": "{{ record.name }} ({{ record.credit_limit }})"}}]}


def test_only_admins_may_set_run_as_to_someone_else(app: Any, admin: Api) -> None:
    w = build(app, admin)
    auto = automator(app, admin)
    before = db_snapshot(app)
    status, err = auto.post("/meta/apps/crm/automations", {**RULE, "run_as": "admin"})
    assert status == 422 and "/run_as" in err["error"]["details"]
    assert db_snapshot(app) == before
    assert auto.post("/meta/apps/crm/automations", {**RULE, "key": "mine", "run_as": "auto"})[0] == 201
    # an administrator may pin a rule to another user; a manager may then not save it unchanged
    admin.ok("POST", "/meta/apps/crm/automations", {**RULE, "key": "pinned", "run_as": "admin"})
    status, err = auto.patch("/meta/apps/crm/automations/pinned", {"label": "renamed"})
    assert status == 422 and "/run_as" in err["error"]["details"]
    # a rule without run_as acts as whoever saved it last: editing an admin's rule borrows no rights
    admin.ok("POST", "/meta/apps/crm/automations", {**RULE, "key": "plain"})
    auto.ok("PATCH", "/meta/apps/crm/automations/plain", {"label": "edited by auto"})
    eng = AutomationEngine(engine(app), app.extensions["formwork"].catalogs, Settings.from_config(app.config))
    with db.transaction(engine(app)) as conn:
        cat = app.extensions["formwork"].catalogs.get(conn)
        rule = next(r for r in cat.app("crm").automations if r["key"] == "plain")
        acting = eng.access_for(conn, rule)
    assert acting.username == "auto" and not acting.is_admin
    assert w.ids["c3"]


def test_dry_run_only_looks_at_records_the_caller_can_read(app: Any, admin: Api) -> None:
    w = build(app, admin)
    auto = automator(app, admin)
    own = auto.ok("POST", "/data/crm/customers", {"fields": {"name": "Mine", "owner": "auto"}})["id"]
    auto.ok("POST", "/meta/apps/crm/automations", {**RULE, "key": "mine"})
    out = auto.ok("POST", "/meta/apps/crm/automations/mine/test",
                  {"record_ids": [w.ids["c3"], 999999, own]})
    by_id = {r["record_id"]: r for r in out["results"]}
    hidden, missing = by_id[w.ids["c3"]], by_id[999999]
    assert {k: v for k, v in hidden.items() if k != "record_id"} == \
        {k: v for k, v in missing.items() if k != "record_id"} == {"matched": False, "error": "no such record"}
    assert out["matched"] == [own]
    assert "C3 Corp" not in json.dumps(out) and "4000" not in json.dumps(out)
    # without ids: only the caller's own records are candidates
    out = auto.ok("POST", "/meta/apps/crm/automations/mine/test", {})
    assert {r["record_id"] for r in out["results"]} == {own}


# --- 2. reverse links stay within the writer's scope --------------------------------------------------
def test_reverse_link_write_does_not_touch_hidden_records(app: Any, admin: Api) -> None:
    w = build(app, admin)
    am1 = w.clients["am1"]
    before = db_snapshot(app)
    status, err = am1.patch(f"/data/crm/customers/{w.ids['c1']}", {"fields": {"opportunities": [w.ids["o1"],
                                                                                                 w.ids["o2"]]}})
    assert status == 422 and f"no record with id {w.ids['o2']}" in err["error"]["details"]["opportunities"][0]
    assert db_snapshot(app) == before and customer_of(admin, w.ids["o2"]) == w.ids["c2"]
    # saving the visible links (o1 only) keeps o5 (am2's, invisible to am1) on c1
    am1.ok("PATCH", f"/data/crm/customers/{w.ids['c1']}", {"fields": {"opportunities": [w.ids["o1"]]}})
    assert customer_of(admin, w.ids["o5"]) == w.ids["c1"]
    # unlinking o1 from the customer's side is an update of o1: it gets history and an event
    am1.ok("PATCH", f"/data/crm/customers/{w.ids['c1']}", {"fields": {"opportunities": []}})
    assert customer_of(admin, w.ids["o1"]) is None and customer_of(admin, w.ids["o5"]) == w.ids["c1"]
    hist = admin.ok("GET", f"/data/crm/opportunities/{w.ids['o1']}/history")["entries"]
    assert hist[0]["action"] == "update" and hist[0]["user"]["id"] == w.users["am1"]
    assert hist[0]["changes"]["customer"]["old"]["id"] == w.ids["c1"] and hist[0]["changes"]["customer"]["new"] is None
    with engine(app).connect() as conn:
        events = conn.execute(select(db.outbox.c.record_id, db.outbox.c.event).where(
            db.outbox.c.record_id == w.ids["o1"], db.outbox.c.event == "record_updated")).all()
    assert events


def test_reverse_link_needs_update_right_on_the_moved_record(app: Any, admin: Api) -> None:
    w = build(app, admin)
    admin.ok("POST", "/admin/roles", {"key": "linker", "label": "L", "permissions": {
        "crm.customers": {"read": "all", "update": "all"},
        "crm.opportunities": {"read": "all", "update": "own"}}})
    admin.ok("POST", "/admin/users", {"username": "linker", "password": PASSWORD, "roles": ["linker"]})
    linker = token_for(app, "linker")
    before = db_snapshot(app)
    status, _ = linker.patch(f"/data/crm/customers/{w.ids['c3']}", {"fields": {"opportunities": [
        w.ids["o3"], w.ids["o4"], w.ids["o2"]]}})
    assert status == 403
    assert db_snapshot(app) == before and customer_of(admin, w.ids["o2"]) == w.ids["c2"]


def test_to_many_links_to_hidden_records_survive_a_save(app: Any, admin: Api) -> None:
    w = build(app, admin)
    admin.ok("POST", "/meta/apps/crm/tables/customers/fields", {
        "key": "partners", "label": "Partners", "type": "link",
        "options": {"table": "customers", "multiple": True, "reverse_key": "partner_of"}})
    admin.ok("PATCH", f"/data/crm/customers/{w.ids['c1']}", {"fields": {"partners": [w.ids["c2"], w.ids["c3"]]}})
    am1 = w.clients["am1"]
    assert am1.ok("GET", f"/data/crm/customers/{w.ids['c1']}")["fields"]["partners"] == []
    am1.ok("PATCH", f"/data/crm/customers/{w.ids['c1']}", {"fields": {"partners": [w.ids["c1"]]}})
    got = {x["id"] for x in admin.ok("GET", f"/data/crm/customers/{w.ids['c1']}")["fields"]["partners"]}
    assert got == {w.ids["c1"], w.ids["c2"], w.ids["c3"]}


# --- 3. a link to a record you can't read is a link to nothing ---------------------------------------
def test_linking_to_an_unreadable_record_reads_as_missing(app: Any, admin: Api) -> None:
    w = build(app, admin)
    am1 = w.clients["am1"]
    before = db_snapshot(app)
    answers = {}
    for rid in (w.ids["c3"], 999999):
        status, err = am1.post("/data/crm/tickets", {"fields": {"subject": "x", "customer": rid}})
        answers[rid] = (status, err["error"]["details"]["customer"][0].replace(str(rid), "N"))
    assert answers[w.ids["c3"]] == answers[999999] == (422, "no record with id N in customers")
    assert db_snapshot(app) == before
    assert am1.post("/data/crm/tickets", {"fields": {"subject": "ok", "customer": w.ids["c1"]}})[0] == 201


# --- 4. search does not look into hidden fields ------------------------------------------------------
def test_search_ignores_fields_hidden_from_the_reader(app: Any, admin: Api) -> None:
    w = build(app, admin)
    hide_secret_note(admin, w)
    am1 = w.clients["am1"]
    assert am1.ok("GET", "/data/crm/customers?search=sekret")["records"] == []
    assert am1.ok("GET", "/data/crm/customers/aggregate?metrics=count&search=sekret")["groups"] in ([], [{
        "key": {}, "count": 0}])
    assert [r["id"] for r in am1.ok("GET", "/data/crm/customers?search=C1")["records"]] == [w.ids["c1"]]
    assert [r["id"] for r in admin.ok("GET", "/data/crm/customers?search=alpha-sek")["records"]] == [w.ids["c1"]]


# --- 5. automation secrets ---------------------------------------------------------------------------
HOOK = {"key": "hook", "label": "h", "trigger": {"type": "record_created", "table": "tickets"},
        "actions": [{"type": "call_webhook", "url": "https://hooks.example.com/x", "secret": "TOPSECRET-hmac"}]}


def stored_rule(app: Any, key: str) -> dict[str, Any]:
    with engine(app).connect() as conn:
        return conn.execute(select(db.automations.c.doc).where(db.automations.c.key == key)).scalar_one()


def test_webhook_secret_is_write_only_and_rules_are_for_their_managers(app: Any, admin: Api) -> None:
    w = build(app, admin)
    created = admin.ok("POST", "/meta/apps/crm/automations", HOOK)
    assert created["actions"][0]["secret"] == SECRET_MASK
    am1, sys_ = w.clients["am1"], w.clients["sys"]
    assert am1.ok("GET", "/meta/apps/crm/automations")["automations"] == []
    assert am1.get("/meta/apps/crm/automations/hook")[0] == 404
    assert am1.ok("GET", "/meta/apps/crm")["automations"] == []
    for path in ("/meta/apps/crm/automations", "/meta/apps/crm/automations/hook", "/meta/apps/crm"):
        body = json.dumps(sys_.ok("GET", path), ensure_ascii=False)
        assert "TOPSECRET" not in body and SECRET_MASK in body, path
    # sending the document back (mask included) keeps the stored secret; a new one replaces it
    doc = sys_.ok("GET", "/meta/apps/crm/automations/hook")
    sys_.ok("PATCH", "/meta/apps/crm/automations/hook", {"label": "renamed", "actions": doc["actions"]})
    assert stored_rule(app, "hook")["actions"][0]["secret"] == "TOPSECRET-hmac"
    sys_.ok("PATCH", "/meta/apps/crm/automations/hook", {"actions": [{"type": "call_webhook",
                                                                       "url": "https://hooks.example.com/y"}]})
    assert stored_rule(app, "hook")["actions"][0]["secret"] == "TOPSECRET-hmac"
    sys_.ok("PATCH", "/meta/apps/crm/automations/hook", {"actions": [{"type": "call_webhook",
                                                                       "url": "https://hooks.example.com/y",
                                                                       "secret": "NEW-secret"}]})
    assert stored_rule(app, "hook")["actions"][0]["secret"] == "NEW-secret"
    with engine(app).connect() as conn:
        log = json.dumps([[r.before, r.after] for r in conn.execute(select(db.meta_changes))], default=str)
        audit = json.dumps([r.details for r in conn.execute(select(db.audit))], default=str)
    assert "TOPSECRET" not in log and "NEW-secret" not in log and "NEW-secret" not in audit
    exported = admin.ok("GET", "/meta/apps/crm/export")
    assert "NEW-secret" not in json.dumps(exported) and "secret" in " ".join(exported["notes"])


# --- 6. sorts and cursors -----------------------------------------------------------------------------
def test_view_sort_on_a_hidden_field_is_not_applied(app: Any, admin: Api) -> None:
    w = build(app, admin)
    big = admin.ok("POST", "/data/crm/customers", {"fields": {"name": "C4 Corp", "owner": "am1",
                                                              "credit_limit": 987654}})["id"]
    admin.ok("POST", "/meta/apps/crm/tables/customers/views", {"key": "by_credit", "label": "x", "type": "grid",
                                                                "sort": ["-credit_limit"]})
    am1 = w.clients["am1"]
    page = am1.ok("GET", "/data/crm/customers?view=by_credit&limit=1")
    assert page["records"][0]["id"] == w.ids["c1"] and "987654" not in cursor_text(page["next_cursor"])
    assert [r["id"] for r in admin.ok("GET", "/data/crm/customers?view=by_credit")["records"]][0] == big
    assert am1.get("/data/crm/customers?sort=-credit_limit")[0] == 400


def test_link_sort_does_not_reveal_unreadable_targets(app: Any, admin: Api) -> None:
    w = build(app, admin)
    am1 = w.clients["am1"]
    page = am1.ok("GET", "/data/crm/opportunities?sort=-customer&limit=1")
    assert page["records"][0]["id"] == w.ids["o1"]
    assert "C3" not in cursor_text(page["next_cursor"])


# --- 7 and 8. history and displays ------------------------------------------------------------------------
def test_history_does_not_show_unreadable_linked_records(app: Any, admin: Api) -> None:
    w = build(app, admin)
    hist = w.clients["am1"].ok("GET", f"/data/crm/opportunities/{w.ids['o4']}/history")["entries"]
    created = next(e for e in hist if e["action"] == "create")
    assert created["changes"]["customer"]["new"] == {"id": w.ids["c3"], "display": None}
    assert "C3 Corp" not in json.dumps(hist)
    own = w.clients["am1"].ok("GET", f"/data/crm/opportunities/{w.ids['o1']}/history")["entries"]
    assert own[-1]["changes"]["customer"]["new"]["display"] == "C1 Corp"


def test_link_display_never_comes_from_a_hidden_field(app: Any, admin: Api) -> None:
    w = build(app, admin)
    hide_secret_note(admin, w)
    admin.ok("PATCH", "/meta/apps/crm/tables/customers", {"display_field": "secret_note"})
    am1 = w.clients["am1"]
    c1 = w.ids["c1"]
    opps = {r["id"]: r["fields"] for r in am1.records("crm", "opportunities")}
    assert opps[w.ids["o1"]]["customer"] == {"id": c1, "display": f"#{c1}"}
    tickets = am1.records("crm", "tickets")
    assert tickets[0]["fields"]["customer"] == {"id": c1, "display": f"#{c1}"}
    groups = am1.ok("GET", "/data/crm/opportunities/aggregate?group_by=customer")["groups"]
    page = am1.ok("GET", "/data/crm/opportunities?sort=customer&limit=1")
    admin.ok("PATCH", f"/data/crm/tickets/{w.ids['t1']}", {"fields": {"subject": "touched"}})
    admin.ok("PATCH", f"/data/crm/customers/{c1}", {"fields": {"secret_note": "alpha-sekret-2"}})
    hist = am1.ok("GET", f"/data/crm/opportunities/{w.ids['o1']}/history")
    text = json.dumps([opps, tickets, groups, hist]) + cursor_text(page["next_cursor"])
    assert "sekret" not in text
    assert "alpha-sekret" in json.dumps(admin.records("crm", "opportunities"))


# --- 9 and 12. login redirect and response headers -----------------------------------------------------
@pytest.mark.parametrize("target", ["/\t/evil.com", "/\n/evil.com", "/\r/evil.com", "/ /evil.com",
                                    "//evil.com", "/\\evil.com", "https://evil.com", "/\x7f/evil.com"])
def test_login_never_redirects_off_site(app: Any, admin: Api, target: str) -> None:
    client = app.test_client()
    page = client.get("/login").data.decode()
    token = re.search(r'name="form_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    resp = client.post("/login", data={"username": "admin", "password": "admin-pass-1", "form_token": token,
                                       "next": target})
    assert resp.status_code == 302 and resp.headers["Location"] == "/"
    assert 'value="/"' in client.get("/login", query_string={"next": target}).data.decode()


def test_pages_carry_security_headers(app: Any, admin: Api) -> None:
    resp = app.test_client().get("/login")
    assert resp.headers["X-Frame-Options"] == "DENY"
    csp = dict(part.strip().split(" ", 1) for part in resp.headers["Content-Security-Policy"].split(";"))
    assert csp["frame-ancestors"] == "'none'" and csp["object-src"] == "'none'" and csp["base-uri"] == "'none'"
    script = csp["script-src"].split()
    assert script[0] == "'self'" and script[1].startswith("'nonce-") and len(script) == 2  # no unsafe-*
    again = app.test_client().get("/login").headers["Content-Security-Policy"]
    assert again != resp.headers["Content-Security-Policy"]  # a fresh nonce per response
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Referrer-Policy"] == "same-origin"
    admin.ok("GET", "/me")
    assert admin.last.headers["X-Content-Type-Options"] == "nosniff"


def test_the_login_form_token_is_bound_to_its_browser(app: Any, admin: Api) -> None:
    """Login CSRF: a token taken from the attacker's own login page doesn't work in the victim's browser
    (it is bound to a cookie only that page set), so nobody can be signed into someone else's account."""
    attacker, victim = app.test_client(), app.test_client()
    page = attacker.get("/login").data.decode()
    token = re.search(r'name="form_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    form = {"username": "admin", "password": "admin-pass-1", "form_token": token, "next": "/"}
    refused = victim.post("/login", data=form)
    assert refused.status_code == 400 and "fw_session" not in refused.headers.get("Set-Cookie", "")
    victim.get("/login")  # the victim's own cookie doesn't match the attacker's token either
    assert victim.post("/login", data=form).status_code == 400
    ok = attacker.post("/login", data=form)
    assert ok.status_code == 302 and ok.headers["Location"] == "/"


def test_no_template_holds_inline_script_or_handlers() -> None:
    """The policy forbids inline handlers and scripts without the nonce; a template with one would break in
    the browser, so none may have one (behaviour lives in static/*.js, declared by data- attributes)."""
    from pathlib import Path

    import formwork.ui

    folder = Path(formwork.ui.__file__).parent / "templates"
    handler = re.compile(r"\son[a-z]+\s*=|hx-on[:-]|javascript:", re.I)
    script = re.compile(r"<script(?![^>]*\ssrc=)(?![^>]*type=\"application/json\")(?![^>]*nonce=)", re.I)
    found = [f"{p.name}: {m.group(0)}" for p in sorted(folder.glob("*.html"))
             for rx in (handler, script) for m in rx.finditer(p.read_text())]
    assert not found, found


# --- 10. bad input is a 4xx that changes nothing --------------------------------------------------------
def test_unstorable_input_is_refused_without_changes(app: Any, admin: Api) -> None:
    w = build(app, admin)
    c1 = w.ids["c1"]
    big = "9" * 25
    raw_cases = [
        ("POST", "/data/crm/customers", b'{"fields": {"name": "x", "credit_limit": 1' + b"0" * 5000 + b"}}"),
        ("POST", "/data/crm/customers", b'{"fields": {"name": "\\ud800"}}'),
        ("PATCH", f"/data/crm/customers/{c1}", b'{"fields": {"name": "a\\u0000b"}}'),
        ("POST", "/data/crm/customers", b'{"fields": {"owner": ' + str(2**63).encode() + b"}}"),
        ("POST", "/data/crm/customers", b'{"fields": {"owner": 1' + b"0" * 400 + b"}}"),
        ("POST", "/data/crm/customers", b'{"fields": {"credit_limit": NaN}}'),
        ("POST", "/data/crm/customers", b'{"fields": {"owner": {}}}'),
        ("POST", "/auth/login", b'{"username": "a\\u0000b", "password": "xxxxxxxxxx"}'),
        ("POST", "/admin/users", b'{"username": "a\\u0000b", "password": "xxxxxxxxxx"}'),
        ("POST", "/auth/tokens", b'{"name": "a\\u0000b"}'),
        ("POST", "/meta/apps/crm/tables/customers/views", b'{"key": "v1", "label": "a\\u0000", "type": "grid"}'),
        ("POST", "/meta/apps", b'{"key": "zz", "label": "x\\ud800"}'),
    ]
    url_cases = [
        ("GET", "/data/crm/customers?filter=" + q({"field": "name", "op": "eq", "value": "a\x00b"})),
        ("GET", "/data/crm/customers?filter=" + q({"field": "owner", "op": "eq", "value": 10**30})),
        ("GET", "/data/crm/customers?filter=" + quote('{"field": "credit_limit", "op": "gt", "value": 1'
                                                     + "0" * 5000 + "}")),
        ("GET", "/data/crm/customers?filter=" + q({"field": "opportunities", "op": "has_any", "value": [2**63]})),
        ("GET", "/data/crm/customers?search=a%00b"),
        ("GET", "/data/crm/customers/aggregate?search=a%00b"),
        ("GET", "/admin/users?q=a%00b"),
        ("GET", f"/data/crm/customers/{big}"),
        ("GET", f"/admin/users/{big}"),
        ("GET", f"/jobs/{big}"),
        ("DELETE", f"/auth/tokens/{big}"),
        ("POST", f"/notifications/{big}/read"),
        ("GET", f"/data/crm/customers/{big}/history"),
    ]
    before = db_snapshot(app)
    for method, path, raw in raw_cases:
        status, err = admin.call(method, path, raw=raw)
        assert 400 <= status < 500, (path, raw[:80], status, err)
    for method, path in url_cases:
        status, err = admin.call(method, path)
        assert 400 <= status < 500, (path, status, err)
    status, _ = admin.post(f"/approvals/{big}/decide", {"decision": "approve"})
    assert status == 404
    assert admin.post("/meta/apps/crm/automations/x/test", {"record_ids": [10**30]})[0] == 400
    assert db_snapshot(app) == before
    assert admin.ok("GET", f"/data/crm/customers/{c1}")["fields"]["name"] == "C1 Corp"


def test_login_form_with_a_nul_character_is_a_400(app: Any, admin: Api) -> None:
    client = app.test_client()
    token = re.search(r'name="form_token" value="([^"]+)"',  # type: ignore[union-attr]
                      client.get("/login").data.decode()).group(1)
    resp = client.post("/login", data={"username": "a\x00b", "password": "xxxxxxxxxx", "form_token": token})
    assert resp.status_code == 400


# --- 13. definitions of hidden fields, attachment tokens, the secret key file, exports ------------------
def test_hidden_field_definitions_are_not_listed(app: Any, admin: Api) -> None:
    w = build(app, admin)
    am1 = w.clients["am1"]
    assert am1.get("/meta/apps/crm/tables/customers/fields/credit_limit")[0] == 404
    assert am1.get("/meta/apps/crm/tables/customers/fields/name")[0] == 200
    for path in ("/meta/apps/crm/tables/customers", "/meta/apps/crm/tables", "/meta/apps/crm"):
        assert '"credit_limit"' not in json.dumps(am1.ok("GET", path)), path
    assert '"credit_limit"' in json.dumps(admin.ok("GET", "/meta/apps/crm/tables/customers"))


def upload(api: Api, data: bytes) -> str:
    boundary, raw = encode_multipart({"file": FileStorage(io.BytesIO(data), "note.txt", content_type="text/plain")})
    resp = api.client.post("/api/v1/files", data=raw, headers={"Authorization": f"Bearer {api.token}"},
                           content_type=f"multipart/form-data; boundary={boundary}")
    assert resp.status_code == 201, resp.get_json()
    return str(resp.get_json()["token"])


def test_attachment_tokens_of_others_cannot_be_attached(app: Any, admin: Api) -> None:
    w = build(app, admin)
    admin.ok("POST", "/meta/apps/crm/tables/customers/fields", {"key": "docs", "label": "Docs",
                                                                 "type": "attachment"})
    am1, am2 = w.clients["am1"], w.clients["am2"]
    token = upload(am1, b"am1's private notes")
    before = db_snapshot(app)
    status, err = am2.patch(f"/data/crm/customers/{w.ids['c2']}", {"fields": {"docs": [token]}})
    assert status == 422 and "docs" in err["error"]["details"]
    assert db_snapshot(app) == before
    assert am2.get(f"/files/{token}")[0] == 404
    am1.ok("PATCH", f"/data/crm/customers/{w.ids['c1']}", {"fields": {"docs": [token]}})
    # once on a record, whoever can read that record may keep it there (or attach it again)
    admin.ok("PATCH", f"/data/crm/customers/{w.ids['c1']}", {"fields": {"name": "C1 Corp", "docs": [token]}})
    got = am1.ok("GET", f"/data/crm/customers/{w.ids['c1']}")["fields"]["docs"]
    assert [d["token"] for d in got] == [token]


def test_generated_secret_key_file_is_owner_only(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from formwork import config

    monkeypatch.delenv("FORMWORK_SECRET_KEY", raising=False)
    monkeypatch.setenv("FORMWORK_INSTANCE", str(tmp_path))
    # owner-only from the moment it exists: a chmod after writing leaves a window where others can read
    # the key, so the file must come out 0600 without any later chmod
    monkeypatch.setattr(pathlib.Path, "chmod", lambda self, mode, **kw: None)
    old = os.umask(0o022)
    try:
        key = config._secret_key()
    finally:
        os.umask(old)
    path = tmp_path / "secret_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(key) > 40 and config._secret_key() == key


def test_full_width_formula_characters_are_neutralized_in_exports(app: Any, admin: Api) -> None:
    build(app, admin)
    for i, text in enumerate(("＝HYPERLINK(\"http://x\")", "＋1", "－1", "＠SUM(A1)")):
        admin.ok("POST", "/data/crm/customers", {"fields": {"name": text, "credit_limit": i}})
    resp = admin.client.get("/api/v1/data/crm/customers/export?format=csv&fields=name",
                            headers={"Authorization": f"Bearer {admin.token}"})
    assert resp.status_code == 200
    cells = resp.data.decode("utf-8-sig").splitlines()
    for text in ("＝HYPERLINK", "＋1", "－1", "＠SUM"):
        assert any(c.lstrip('"').startswith("'" + text) for c in cells), (text, cells)


def test_lockout_is_per_address_and_answers_like_a_wrong_password(app: Any, admin: Api) -> None:
    admin.ok("POST", "/admin/users", {"username": "bob", "password": PASSWORD, "roles": []})
    attacker = app.test_client()
    for _ in range(auth.MAX_FAILURES + 1):
        resp = attacker.post("/api/v1/auth/login", json={"username": "bob", "password": "guess-guess"},
                             environ_base={"REMOTE_ADDR": "203.0.113.9"})
        assert resp.status_code == 401
    bob = app.test_client().post("/api/v1/auth/login", json={"username": "bob", "password": PASSWORD})
    assert bob.status_code == 200
