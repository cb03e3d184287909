"""The automation pages: list, builder (form ↔ document, errors at the inputs, nothing lost), test (dry run),
run log and retry, manual-run buttons, incoming-webhook URLs, rights and CSRF; on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

from sqlalchemy import select, update

from formwork import db
from formwork.automation import forms
from formwork.automation.worker import Worker
from tests.helpers import Api, db_snapshot
from tests.test_automation_support import create_user, make_sales
from tests.test_ui_pages import login

ADMIN_PASSWORD = "admin-pass-1"
BASE = "/apps/sales/_automations"


class FormValues(HTMLParser):
    """The values a browser would post for the form ``form_id`` of a page (checked boxes, selected options)."""

    def __init__(self, form_id: str) -> None:
        super().__init__()
        self.form_id = form_id
        self.inside = False
        self.depth = 0
        self.values: list[tuple[str, str]] = []
        self._select: str | None = None
        self._select_multi = False
        self._options: list[tuple[str, bool]] = []
        self._textarea: str | None = None
        self._text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and a.get("id") == self.form_id:
            self.inside = True
            return
        if not self.inside:
            return
        name = a.get("name")
        if tag == "input" and name and a.get("type") not in ("button", "submit"):
            if a.get("type") in ("checkbox", "radio") and "checked" not in a:
                return
            self.values.append((name, a.get("value", "on" if a.get("type") == "checkbox" else "")))
        elif tag == "select" and name:
            self._select, self._select_multi, self._options = name, "multiple" in a, []
        elif tag == "option" and self._select is not None:
            self._options.append((a.get("value", ""), "selected" in a))
        elif tag == "textarea" and name:
            self._textarea, self._text = name, ""

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            self._text += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "form" and self.inside:
            self.inside = False
        if tag == "select" and self._select is not None:
            chosen = [v for v, s in self._options if s]
            if not chosen and not self._select_multi and self._options:
                chosen = [self._options[0][0]]
            self.values += [(self._select, v) for v in chosen]
            self._select = None
        if tag == "textarea" and self._textarea is not None:
            self.values.append((self._textarea, self._text.lstrip("\n")))
            self._textarea = None


def form_of(html: str, form_id: str = "auto-form") -> list[tuple[str, str]]:
    parser = FormValues(form_id)
    parser.feed(html)
    return parser.values


def multi(pairs: list[tuple[str, str]]) -> Any:
    from werkzeug.datastructures import MultiDict

    return MultiDict(pairs)


def setup(app: Any, admin: Api) -> tuple[Any, str]:
    make_sales(admin)
    return login(app, "admin", ADMIN_PASSWORD)


def base_form(csrf: str, **extra: Any) -> dict[str, Any]:
    return {"csrf_token": csrf, "label_en": "Big deals", "trigger_type": "record_created", "trigger_table": "deals",
            "_cond_table": "deals", "enabled": "1", **extra}


def test_the_list_needs_the_right_and_shows_rules_in_words(app: Any, admin: Api) -> None:
    c, _csrf = setup(app, admin)
    admin.ok("POST", "/meta/apps/sales/automations", {
        "key": "won", "label": {"en": "Won deals", "zh-CN": "赢单"}, "enabled": True,
        "trigger": {"type": "record_updated", "table": "deals", "changes": [{"field": "stage", "to": "won"}]},
        "condition": {"field": "amount", "op": "gt", "value": 1000},
        "actions": [{"type": "notify", "owner": True, "title": "Won {{ record.name }}"}]})
    page = c.get(BASE).get_data(as_text=True)
    assert "Won deals" in page and "When a record is updated in Deals, when Stage becomes won" in page
    assert "Amount" in page  # the condition in words
    assert 'href="/apps/sales/_automations"' in c.get("/apps/sales/deals").get_data(as_text=True)  # sidebar
    # in Chinese for a Chinese reader
    admin.ok("POST", "/admin/users", {"username": "li", "name": "李", "password": "correct-horse-9",
                                      "locale": "zh-CN", "roles": []})
    engine = app.extensions["formwork"].engine
    with db.transaction(engine) as conn:
        conn.execute(update(db.users).where(db.users.c.username == "li").values(is_admin=True))
    zh, _ = login(app, "li")
    page = zh.get(BASE).get_data(as_text=True)
    assert "在Deals中修改记录时" in page and "赢单" in page and "新建自动化" in page
    # someone who may not manage automations: no link, 403 on every page
    admin.ok("POST", "/admin/users", {"username": "rep", "name": "Rep", "password": "correct-horse-9", "roles": []})
    rep, rep_csrf = login(app, "rep")
    for url in (BASE, f"{BASE}/new", f"{BASE}/won/edit", f"{BASE}/runs"):
        assert rep.get(url).status_code in (403, 404), url
    assert rep.post(f"{BASE}/won/toggle", data={"csrf_token": rep_csrf}).status_code in (403, 404)
    assert admin.ok("GET", "/meta/apps/sales/automations/won")["enabled"] is True


def test_a_rule_built_in_the_form_is_the_api_document_and_survives_a_round_trip(app: Any, admin: Api) -> None:
    c, csrf = setup(app, admin)
    data = multi([
        ("csrf_token", csrf), ("label_en", "Stage watch"), ("label_zh", "阶段监控"), ("enabled", "1"),
        ("description", "watch the stage"), ("trigger_type", "record_updated"), ("trigger_table", "deals"),
        ("_cond_table", "deals"), ("trigger_fields", "stage"), ("ch_field", "stage"), ("ch_from", "lead"),
        ("ch_to", "won"), ("ch_field", ""), ("ch_from", ""), ("ch_to", ""),
        ("cond.conj", "and"), ("cond.x1.field", "amount"), ("cond.x1.op", "gt"), ("cond.x1.value", "100000"),
        ("only_changed", "amount"),
        ("a.0.type", "notify"), ("a.0._keep", "{}"), ("a.0.manager", "1"), ("a.0.users", "admin"),
        ("a.0.title", "Big: {{ record.name }}"), ("a.0.body", "Amount {{ record.amount }}"),
        ("a.1.type", "send_email"), ("a.1._keep", "{}"), ("a.1.owner", "1"), ("a.1.to", "a@example.com, b@example.com"),
        ("a.1.subject", "Hi {{ record.name }}"),
        ("a.2.type", "update_record"), ("a.2._keep", "{}"), ("a.2.ff", "status"), ("a.2.fv", "watched"),
        ("a.2.ff", ""), ("a.2.fv", ""),
        ("a.3.type", "create_record"), ("a.3._keep", "{}"), ("a.3.table", "tasks"), ("a.3.ff", "title"),
        ("a.3.fv", "Call {{ record.name }}"),
        ("a.4.type", "wait"), ("a.4._keep", "{}"), ("a.4.amount", "2"), ("a.4.unit", "hours"),
        ("a.5.type", "request_approval"), ("a.5._keep", "{}"), ("a.5.manager", "1"), ("a.5.mode", "all"),
        ("a.5.title", "Approve {{ record.name }}"),
        ("a.5.on_approve.0.type", "update_record"), ("a.5.on_approve.0._keep", "{}"),
        ("a.5.on_approve.0.ff", "stage"), ("a.5.on_approve.0.fv", "won"),
    ])
    resp = c.post(f"{BASE}/new", data=data)
    assert resp.status_code == 302, resp.get_data(as_text=True)[:3000]
    doc = admin.ok("GET", "/meta/apps/sales/automations/stage_watch")
    assert doc["label"] == {"en": "Stage watch", "zh-CN": "阶段监控"} and doc["description"] == "watch the stage"
    assert doc["trigger"] == {"type": "record_updated", "table": "deals", "fields": ["stage"],
                              "changes": [{"field": "stage", "from": "lead", "to": "won"}]}
    assert doc["condition"] == {"and": [{"field": "amount", "op": "gt", "value": 100000},
                                        {"field": "amount", "op": "changed"}]}
    assert doc["actions"] == [
        {"type": "notify", "users": ["admin"], "manager": True, "title": "Big: {{ record.name }}",
         "body": "Amount {{ record.amount }}"},
        {"type": "send_email", "to": ["a@example.com", "b@example.com"], "owner": True,
         "subject": "Hi {{ record.name }}"},
        {"type": "update_record", "fields": {"status": "watched"}},
        {"type": "create_record", "table": "tasks", "fields": {"title": "Call {{ record.name }}"}},
        {"type": "wait", "hours": 2},
        {"type": "request_approval", "approvers": {"manager": True}, "mode": "all",
         "title": "Approve {{ record.name }}",
         "on_approve": [{"type": "update_record", "fields": {"stage": "won"}}]},
    ]
    # the edit page posts back exactly the same document (nothing lost, nothing added)
    page = c.get(f"{BASE}/stage_watch/edit").get_data(as_text=True)
    again = c.post(f"{BASE}/stage_watch/edit", data=multi(form_of(page)))
    assert again.status_code == 302, again.get_data(as_text=True)[:3000]
    assert admin.ok("GET", "/meta/apps/sales/automations/stage_watch") == doc


def test_parts_the_builder_does_not_show_are_kept(app: Any, admin: Api) -> None:
    c, _csrf = setup(app, admin)
    admin.ok("POST", "/meta/apps/sales/automations", {
        "key": "odd", "label": "Odd", "run_as": "admin", "rate_limit_per_minute": 7,
        "trigger": {"type": "schedule", "schedule": {"every": "week", "weekday": "fri", "at": "17:30",
                                                     "timezone": "Asia/Shanghai"}},
        "actions": [{"type": "call_webhook", "url": "https://example.com/x", "secret": "s3cret",
                     "payload": {"a": "{{ now }}"}, "label": "ping", "key": "hook"}]})
    before = admin.ok("GET", "/meta/apps/sales/automations/odd")
    page = c.get(f"{BASE}/odd/edit").get_data(as_text=True)
    assert "s3cret" not in page
    assert c.post(f"{BASE}/odd/edit", data=multi(form_of(page))).status_code == 302
    assert admin.ok("GET", "/meta/apps/sales/automations/odd") == {**before, "enabled": True}  # the default, said
    engine = app.extensions["formwork"].engine
    with engine.connect() as conn:
        stored = conn.execute(select(db.automations.c.doc).where(db.automations.c.key == "odd")).scalar_one()
    assert stored["actions"][0]["secret"] == "s3cret"  # the write-only secret is kept, never shown


def test_errors_show_at_their_inputs_and_nothing_is_saved_or_lost(app: Any, admin: Api) -> None:
    c, csrf = setup(app, admin)
    before = db_snapshot(app)
    form = base_form(csrf, **{"a.0.type": "notify", "a.0._keep": "{}", "a.0.title": "",
                              "a.0.body": "typed text stays",
                              "a.1.type": "send_email", "a.1._keep": "{}", "a.1.subject": "{{ ''.__class__ }}",
                              "a.2.type": "call_webhook", "a.2._keep": "{}", "a.2.url": "http://127.0.0.1:9/x",
                              "cond.conj": "and", "cond.q.field": "amount", "cond.q.op": "gt",
                              "cond.q.value": "lots"})
    resp = c.post(f"{BASE}/new", data=form)
    page = resp.get_data(as_text=True)
    assert resp.status_code == 422
    assert db_snapshot(app) == before
    assert "typed text stays" in page and 'value="Big deals"' in page and 'value="lots"' in page
    # the condition's own error first (the rest is checked once the condition is right)
    assert "Enter a number" in page
    form["cond.q.value"] = "100000"
    page = c.post(f"{BASE}/new", data=form).get_data(as_text=True)
    errors = re.findall(r'<li class="action" id="(a-\d)">.*?</li>', page, re.S)
    assert errors == ["a-0", "a-1", "a-2"]
    blocks = dict(re.findall(r'<li class="action" id="(a-\d)">(.*?)</li>', page, re.S))
    assert "Choose at least one recipient" in blocks["a-0"] and "Fill this in." in blocks["a-0"]
    assert "This message cannot be used" in blocks["a-1"]
    assert "private network or this server" in blocks["a-2"]
    assert db_snapshot(app) == before
    assert admin.ok("GET", "/meta/apps/sales/automations")["automations"] == []


def test_private_webhook_urls_need_the_operators_allowance(app: Any, admin: Api) -> None:
    make_sales(admin)
    rule = {"key": "hook", "label": "Hook", "trigger": {"type": "record_created", "table": "deals"},
            "actions": [{"type": "call_webhook", "url": "http://localhost:8080/in"}]}
    for url in ("http://localhost:8080/in", "http://127.0.0.1/x", "http://10.1.2.3/x", "http://[::1]/x",
                "http://169.254.169.254/latest"):
        rule["actions"][0]["url"] = url
        status, err = admin.post("/meta/apps/sales/automations", rule)
        assert status == 422 and "/actions/0/url" in err["error"]["details"], url
    rule["actions"][0]["url"] = "https://hooks.example.com/x"
    admin.ok("POST", "/meta/apps/sales/automations", rule)
    app.config["WEBHOOK_ALLOW_PRIVATE"] = True
    admin.ok("PATCH", "/meta/apps/sales/automations/hook",
             {"actions": [{"type": "call_webhook", "url": "http://127.0.0.1:9/x"}]})


def test_adding_moving_and_removing_steps_keeps_what_was_typed(app: Any, admin: Api) -> None:
    c, csrf = setup(app, admin)
    h = {"HX-Request": "true"}
    form = base_form(csrf, **{"a.0.type": "notify", "a.0._keep": "{}", "a.0.owner": "1", "a.0.title": "first",
                              "_op": "add:a:send_email"})
    page = c.post(f"{BASE}/form", data=form, headers=h).get_data(as_text=True)
    values = multi(form_of(page))
    assert values["a.0.title"] == "first" and values["a.1.type"] == "send_email"
    values["a.1.subject"] = "second"
    page = c.post(f"{BASE}/form", data={**values.to_dict(flat=False), "_op": "up:a.1"}, headers=h)
    values = multi(form_of(page.get_data(as_text=True)))
    assert (values["a.0.type"], values["a.0.subject"], values["a.1.title"]) == ("send_email", "second", "first")
    page = c.post(f"{BASE}/form", data={**values.to_dict(flat=False), "_op": "remove:a.0"}, headers=h)
    values = multi(form_of(page.get_data(as_text=True)))
    assert values["a.0.type"] == "notify" and "a.1.type" not in values
    # a branch's nested lists take steps of their own
    page = c.post(f"{BASE}/form", data={**values.to_dict(flat=False), "_op": "add:a:branch"}, headers=h)
    values = multi(form_of(page.get_data(as_text=True)))
    page = c.post(f"{BASE}/form", data={**values.to_dict(flat=False), "_op": "add:a.1.then:wait"}, headers=h)
    values = multi(form_of(page.get_data(as_text=True)))
    assert values["a.1.then.0.type"] == "wait"
    assert admin.ok("GET", "/meta/apps/sales/automations")["automations"] == []  # nothing saved by any of it


def test_the_test_panel_runs_the_dry_run_without_side_effects(app: Any, admin: Api) -> None:
    c, csrf = setup(app, admin)
    deal = admin.ok("POST", "/data/sales/deals", {"fields": {"name": "Acme", "amount": 500000, "owner": "admin"}})
    small = admin.ok("POST", "/data/sales/deals", {"fields": {"name": "Tiny", "amount": 5}})
    form = base_form(csrf, **{"cond.conj": "and", "cond.q.field": "amount", "cond.q.op": "gt",
                              "cond.q.value": "100000",
                              "a.0.type": "notify", "a.0._keep": "{}", "a.0.owner": "1",
                              "a.0.title": "Big: {{ record.name }}",
                              "a.1.type": "update_record", "a.1._keep": "{}", "a.1.ff": "status", "a.1.fv": "seen",
                              "a.2.type": "send_email", "a.2._keep": "{}", "a.2.owner": "1",
                              "a.2.subject": "Deal {{ record.name }}", "test_record": str(deal["id"])})
    before = db_snapshot(app)
    page = c.post(f"{BASE}/test", data=form, headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "would run like this" in page and "Big: Acme" in page and "Deal Acme" in page
    assert "admin@example.com" in page and "seen" in page
    assert db_snapshot(app) == before
    assert admin.ok("GET", f"/data/sales/deals/{deal['id']}")["fields"]["status"] is None
    page = c.post(f"{BASE}/test", data={**form, "test_record": str(small["id"])},
                  headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "does not hold for this record" in page
    page = c.post(f"{BASE}/test", data={**form, "a.0.title": ""}, headers={"HX-Request": "true"})
    assert "Fill this in." in page.get_data(as_text=True)
    assert db_snapshot(app) == before


def test_switch_duplicate_and_delete_to_the_trash(app: Any, admin: Api) -> None:
    c, csrf = setup(app, admin)
    admin.ok("POST", "/meta/apps/sales/automations", {
        "key": "ping", "label": "Ping", "enabled": True, "trigger": {"type": "record_created", "table": "deals"},
        "actions": [{"type": "notify", "owner": True, "title": "x"}]})
    resp = c.post(f"{BASE}/ping/toggle", data={"csrf_token": csrf}, headers={"HX-Request": "true"})
    assert resp.status_code == 200 and "Switched off." in resp.get_data(as_text=True)
    assert admin.ok("GET", "/meta/apps/sales/automations/ping")["enabled"] is False
    c.post(f"{BASE}/ping/toggle", data={"csrf_token": csrf, "enabled": "1"}, headers={"HX-Request": "true"})
    assert admin.ok("GET", "/meta/apps/sales/automations/ping")["enabled"] is True
    resp = c.post(f"{BASE}/ping/duplicate", data={"csrf_token": csrf})
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/ping_copy/edit")
    copy = admin.ok("GET", "/meta/apps/sales/automations/ping_copy")
    assert copy["label"] == "Ping (copy)" and copy["enabled"] is False and copy["actions"] == [
        {"type": "notify", "owner": True, "title": "x"}]
    assert c.post(f"{BASE}/ping/delete", data={"csrf_token": csrf}).status_code == 302
    assert admin.get("/meta/apps/sales/automations/ping")[0] == 404
    trash = admin.ok("GET", "/meta/trash")
    entries = trash if isinstance(trash, list) else next(v for v in trash.values() if isinstance(v, list))
    assert any(e.get("kind") == "automation" and e.get("key") == "ping" for e in entries), trash
    # CSRF on every change
    assert c.post(f"{BASE}/ping_copy/delete", data={"csrf_token": "wrong"}).status_code == 403
    assert c.post(f"{BASE}/ping_copy/toggle", data={}).status_code == 403


def test_run_log_filters_opens_records_and_retries_failed_runs(app: Any, admin: Api) -> None:
    c, csrf = setup(app, admin)
    worker = Worker(app, worker_id="t")
    admin.ok("POST", "/meta/apps/sales/automations", {
        "key": "tell_boss", "label": "Tell the boss", "trigger": {"type": "record_created", "table": "deals"},
        "actions": [{"type": "notify", "manager": True, "title": "New {{ record.name }}"}]})
    deal = admin.ok("POST", "/data/sales/deals", {"fields": {"name": "Acme", "owner": "admin"}})
    worker.drain()
    page = c.get(f"{BASE}/runs").get_data(as_text=True)
    assert "Failed" in page and "no team manager" in page
    assert f'href="/apps/sales/deals/{deal["id"]}"' in page and "Acme" in page
    assert "Acme" not in c.get(f"{BASE}/runs?status=succeeded").get_data(as_text=True)
    assert "Acme" in c.get(f"{BASE}/runs?status=failed&automation=tell_boss").get_data(as_text=True)
    assert c.get(BASE).get_data(as_text=True).count("1 failed") == 1
    failed = admin.ok("GET", "/meta/apps/sales/automations/tell_boss/runs")["runs"][0]
    # the API: a run that did not fail or does not exist cannot be retried
    assert admin.post(f"/meta/apps/sales/automations/tell_boss/runs/{failed['id'] + 99}/retry")[0] == 404
    # fix the cause (a team with a manager), then retry from the page
    boss = create_user(app, "boss")
    engine = app.extensions["formwork"].engine
    with db.transaction(engine) as conn:
        team = conn.execute(db.teams.insert().values(key="east", name="East", manager_id=boss)
                            .returning(db.teams.c.id)).scalar_one()
        conn.execute(update(db.users).where(db.users.c.username == "admin").values(team_id=team))
    resp = c.post(f"{BASE}/tell_boss/runs/{failed['id']}/retry", data={"csrf_token": csrf, "back": f"{BASE}/runs"})
    assert resp.status_code == 302 and "retried=" in resp.headers["Location"]
    runs = admin.ok("GET", "/meta/apps/sales/automations/tell_boss/runs")["runs"]
    assert runs[0]["status"] == "waiting" and runs[0]["retry_of"] == failed["id"]
    worker.drain()
    runs = admin.ok("GET", "/meta/apps/sales/automations/tell_boss/runs")["runs"]
    assert runs[0]["status"] == "succeeded" and runs[0]["record_id"] == deal["id"]
    assert admin.post(f"/meta/apps/sales/automations/tell_boss/runs/{runs[0]['id']}/retry")[0] == 409
    status, body = admin.post(f"/meta/apps/sales/automations/tell_boss/runs/{failed['id']}/retry")
    assert status == 202 and body["retry_of"] == failed["id"] and body["status"] == "waiting"
    page = c.get(f"{BASE}/runs?status=succeeded").get_data(as_text=True)
    assert "Succeeded" in page and "(retry)" in page


def test_manual_rules_are_buttons_on_the_record_page(app: Any, admin: Api) -> None:
    c, csrf = setup(app, admin)
    admin.ok("POST", "/meta/apps/sales/automations", {
        "key": "escalate", "label": {"en": "Escalate", "zh-CN": "升级"},
        "trigger": {"type": "manual", "table": "deals"},
        "actions": [{"type": "update_record", "fields": {"status": "escalated"}}]})
    deal = admin.ok("POST", "/data/sales/deals", {"fields": {"name": "Acme"}})
    page = c.get(f"/apps/sales/deals/{deal['id']}").get_data(as_text=True)
    assert f'/apps/sales/deals/{deal["id"]}/automations' in page
    frag = c.get(f"/apps/sales/deals/{deal['id']}/automations", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "Escalate" in frag
    resp = c.post(f"/apps/sales/deals/{deal['id']}/automations/escalate/run", data={"csrf_token": csrf},
                  headers={"HX-Request": "true"})
    assert resp.status_code == 200 and "on its way" in resp.get_data(as_text=True)
    Worker(app, worker_id="t").drain()
    assert admin.ok("GET", f"/data/sales/deals/{deal['id']}")["fields"]["status"] == "escalated"
    # a record the user may not see: 404, nothing queued
    assert c.get(f"/apps/sales/deals/{deal['id'] + 50}/automations").status_code == 404


def test_webhook_url_is_shown_once_and_works(app: Any, admin: Api) -> None:
    c, csrf = setup(app, admin)
    admin.ok("POST", "/meta/apps/sales/automations", {
        "key": "inbound", "label": "Inbound", "trigger": {"type": "webhook", "table": "deals"},
        "actions": [{"type": "update_record", "fields": {"status": "from hook"}}]})
    edit = c.get(f"{BASE}/inbound/edit").get_data(as_text=True)
    assert "Create the URL" in edit
    frag = c.post(f"{BASE}/inbound/webhook-url", data={"csrf_token": csrf},
                  headers={"HX-Request": "true"}).get_data(as_text=True)
    url = re.search(r'value="(http[^"]+/api/v1/hooks/[^"]+)"', frag).group(1)  # type: ignore[union-attr]
    assert "shown only once" in frag
    assert url not in c.get(f"{BASE}/inbound/edit").get_data(as_text=True)
    path = url.split("localhost", 1)[-1]
    resp = Api(app.test_client()).post(path.replace("/api/v1", ""), {"fields": {"name": "Hooked"}})
    assert resp[0] == 202
    Worker(app, worker_id="t").drain()
    assert admin.records("sales", "deals", search="Hooked")[0]["fields"]["status"] == "from hook"


def test_schedule_and_date_triggers_are_picked_not_typed() -> None:
    from werkzeug.datastructures import MultiDict

    sched = forms.trigger_from_form(MultiDict({"trigger_type": "schedule", "sched_every": "month", "sched_day": "1",
                                               "sched_at": "09:00", "sched_tz": "Asia/Shanghai"}))
    assert sched == {"type": "schedule", "schedule": {"every": "month", "day": 1, "at": "09:00",
                                                      "timezone": "Asia/Shanghai"}}
    weekly = forms.trigger_from_form(MultiDict({"trigger_type": "schedule", "sched_every": "week",
                                                "sched_weekday": "mon", "sched_at": "08:30", "sched_tz": "UTC"}))
    assert weekly["schedule"] == {"every": "week", "weekday": "mon", "at": "08:30", "timezone": "UTC"}
    cron = forms.trigger_from_form(MultiDict({"trigger_type": "schedule", "sched_mode": "cron",
                                              "sched_cron": "0 9 * * 1-5", "sched_tz": "UTC"}))
    assert cron["schedule"] == {"cron": "0 9 * * 1-5", "timezone": "UTC"}
    date = forms.trigger_from_form(MultiDict({"trigger_type": "date_reached", "trigger_table": "contracts",
                                              "trigger_date_field": "end_date", "offset_n": "30",
                                              "offset_dir": "before", "trigger_at": "09:00",
                                              "trigger_tz": "Asia/Shanghai"}))
    assert date == {"type": "date_reached", "table": "contracts", "date_field": "end_date", "offset_days": -30,
                    "at": "09:00", "timezone": "Asia/Shanghai"}
    assert forms.key_from_label("Big deal alert!") == "big_deal_alert"
    assert forms.key_from_label("大额提醒", {"rule"}) == "rule_2"
    assert forms.input_name("/actions/1/on_approve/0/title") == "a.1.on_approve.0.title"
    assert forms.input_name("/actions/0/fields/status") == "a.0.fields.status"
    assert forms.input_name("/trigger/schedule") == "trigger.schedule"


def test_schedule_rules_saved_from_the_page(app: Any, admin: Api) -> None:
    c, csrf = setup(app, admin)
    form = {"csrf_token": csrf, "label_en": "Monday digest", "trigger_type": "schedule", "trigger_table": "",
            "sched_mode": "friendly", "sched_every": "week", "sched_weekday": "mon", "sched_at": "09:00",
            "sched_tz": "Asia/Shanghai", "a.0.type": "send_email", "a.0._keep": "{}", "a.0.to": "team@example.com",
            "a.0.subject": "Digest {{ today }}"}
    assert c.post(f"{BASE}/new", data=form).status_code == 302
    doc = admin.ok("GET", "/meta/apps/sales/automations/monday_digest")
    assert doc["trigger"] == {"type": "schedule", "schedule": {"every": "week", "weekday": "mon", "at": "09:00",
                                                               "timezone": "Asia/Shanghai"}}
    assert "Every Monday at 09:00 (Beijing, Shanghai (China))" in c.get(BASE).get_data(as_text=True)
    bad = c.post(f"{BASE}/new", data={**form, "label_en": "Bad", "sched_mode": "cron", "sched_cron": "61 * * *"})
    assert bad.status_code == 422 and "61 * * *" in bad.get_data(as_text=True)


def test_bad_input_is_a_clear_answer_never_a_500(app: Any, admin: Api) -> None:
    c, csrf = setup(app, admin)
    before = db_snapshot(app)
    bad_forms = [
        {"trigger_type": "no_such_trigger"},
        {"trigger_table": "no_such_table"},
        {"trigger_type": "date_reached", "trigger_date_field": "close_date", "offset_n": "abc",
         "offset_dir": "before"},
        {"trigger_type": "schedule", "trigger_table": "", "sched_every": "hour", "sched_minute": "99"},
        {"trigger_type": "schedule", "trigger_table": "", "sched_every": "month", "sched_day": "zz"},
        {"trigger_type": "schedule", "trigger_table": "", "sched_tz": "Mars/Base"},
        {"a.0.type": "no_such_action", "a.0._keep": "not json"},
        {"a.0.type": "wait", "a.0.amount": "abc", "a.0.unit": "hours"},
        {"a.0.type": "call_webhook", "a.0.url": "ftp://example.com", "a.0.timeout": "soon"},
        {"a.0.type": "update_record", "a.0.ff": "no_such_field", "a.0.fv": "x"},
        {"a.0.type": "create_record", "a.0.table": "nowhere"},
        {"a.0.type": "assign_owner", "a.0.who": ""},
        {"a.0.type": "branch", "a.0.condition_keep": "[1, 2]"},
        {"key": "Not A Key!"},
        {"_op": "remove:a.99"}, {"_op": "add:a.5.then:wait"}, {"_op": "garbage"},
    ]
    for extra in bad_forms:
        resp = c.post(f"{BASE}/new", data={**base_form(csrf), **extra})
        assert resp.status_code in (200, 422), (extra, resp.status_code)
        h = {"HX-Request": "true"}
        assert c.post(f"{BASE}/form", data={**base_form(csrf), **extra}, headers=h).status_code == 200, extra
        assert c.post(f"{BASE}/test", data={**base_form(csrf), **extra, "test_record": "x"},
                      headers=h).status_code == 200, extra
    assert db_snapshot(app) == before
    assert c.get(f"{BASE}/nope/edit").status_code == 404
    assert c.get(f"{BASE}/runs?status=bogus&before=x&automation=nope").status_code == 200
    assert c.post(f"{BASE}/nope/runs/1/retry", data={"csrf_token": csrf}).status_code == 404


def test_a_taken_key_is_refused_at_the_key_input(app: Any, admin: Api) -> None:
    c, csrf = setup(app, admin)
    form = base_form(csrf, **{"a.0.type": "notify", "a.0._keep": "{}", "a.0.owner": "1", "a.0.title": "x"})
    assert c.post(f"{BASE}/new", data=form).status_code == 302  # key made from the label: big_deals
    again = c.post(f"{BASE}/new", data={**form, "key": "big_deals"})
    page = again.get_data(as_text=True)
    assert again.status_code == 422 and "Another automation already uses this name." in page
    assert re.search(r'<details class="advanced" open>', page)
    second = c.post(f"{BASE}/new", data=form)  # no key typed: the next free one
    assert second.status_code == 302 and second.headers["Location"].endswith("saved=big_deals_2")


def test_an_if_else_step_has_its_own_condition_builder(app: Any, admin: Api) -> None:
    c, csrf = setup(app, admin)
    h = {"HX-Request": "true"}
    page = c.post(f"{BASE}/form", data={**base_form(csrf), "_op": "add:a:branch"}, headers=h).get_data(as_text=True)
    assert 'name="br_a_0.conj"' in page
    values = multi(form_of(page))
    values.setlist("br_a_0.k1.field", ["amount"])
    values.setlist("br_a_0.k1.op", ["gte"])
    values.setlist("br_a_0.k1.value", ["500"])
    page = c.post(f"{BASE}/form", data={**values.to_dict(flat=False), "_op": "add:a.0.then:update_record"},
                  headers=h).get_data(as_text=True)
    values = multi(form_of(page))
    assert values["a.0.then.0.type"] == "update_record" and "500" in values.getlist(
        next(k for k in values if k.startswith("br_a_0.") and k.endswith(".value")))
    values.setlist("a.0.then.0.ff", ["status"])
    values.setlist("a.0.then.0.fv", ["big"])
    assert c.post(f"{BASE}/new", data=values.to_dict(flat=False)).status_code == 302
    doc = admin.ok("GET", "/meta/apps/sales/automations/big_deals")
    assert doc["actions"] == [{"type": "branch", "condition": {"and": [{"field": "amount", "op": "gte", "value": 500}]},
                               "then": [{"type": "update_record", "fields": {"status": "big"}}]}]
    # a wrong value in the branch's condition: shown there, nothing saved
    values.setlist("key", ["other"])
    bad = {k: v for k, v in values.to_dict(flat=False).items()}
    key = next(k for k in bad if k.startswith("br_a_0.") and k.endswith(".value"))
    bad[key] = ["lots"]
    resp = c.post(f"{BASE}/new", data=bad)
    assert resp.status_code == 422 and "Enter a number" in resp.get_data(as_text=True)
    assert admin.get("/meta/apps/sales/automations/other")[0] == 404
