"""The automation builder in a real browser, in both languages: build "when an opportunity is created with an
amount over 100,000, notify the owner's team manager and email them" in the CRM entirely through the pages,
create such an opportunity, let the worker run, and find the run in the run log (then open its record)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from formwork import create_app, db
from formwork.automation.worker import Worker
from formwork.runtime import auth
from tests.browser.test_ui_browser import PASSWORD, QUIET, pytestmark, serving, settled  # noqa: F401 - fixtures and marks
from tests.helpers import Api
from tests.peers import SmtpSink

WORDS = {
    "en": {"automations": "Automations", "new": "New automation", "label": "Label (English)", "table": "Table",
           "opportunities": "Opportunities", "add_condition": "Add condition", "field": "Field",
           "amount": "Amount", "comparison": "Comparison", "value": "Value", "add_step": "+ Add a step",
           "notify": "Notify people", "email": "Send an email", "manager": "The owner's team manager",
           "owner_rcpt": "The record's owner",
           "title": "Title", "subject": "Subject", "insert": "Insert", "name_var": "Name", "save": "Save",
           "saved": "Saved.", "run_log": "Run log", "succeeded": "Succeeded", "rule": "Big opportunity alert",
           "record_name": "Name", "stage": "Stage", "owner": "Owner", "create": "Create", "try": "Try it",
           "test_record": "Record to try it on", "would": "would run like this"},
    "zh-CN": {"automations": "自动化", "new": "新建自动化", "label": "名称（中文）", "table": "数据表",
              "opportunities": "销售机会", "add_condition": "添加条件", "field": "字段", "amount": "预计金额",
              "comparison": "比较方式", "value": "值", "add_step": "+ 添加步骤", "notify": "发送站内通知",
              "email": "发送邮件", "manager": "负责人所在团队的主管", "owner_rcpt": "记录负责人",
              "title": "标题", "subject": "主题",
              "insert": "插入变量", "name_var": "机会名称", "save": "保存", "saved": "已保存", "run_log": "运行日志",
              "succeeded": "成功", "rule": "大额商机提醒", "record_name": "机会名称", "stage": "阶段",
              "owner": "负责人", "create": "创建", "try": "试运行", "test_record": "试运行的记录",
              "would": "自动化将这样运行"},
}


@pytest.fixture(scope="module")
def crm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The CRM (no demo data) on a live server, a sales team whose manager has an email address, a rep
    in it, a mail sink, and a worker the test drives step by step."""
    from formwork.runtime.ratelimit import form_limiter, login_limiter

    folder = tmp_path_factory.mktemp("autobrowser")
    sink = SmtpSink()
    sink.__enter__()
    app = create_app({"DATABASE_URL": f"sqlite:///{folder / 'ui.db'}", "SECRET_KEY": "browser-secret",
                      "TESTING": True, "FILES_DIR": str(folder / "files"), "SMTP_HOST": sink.host,
                      "SMTP_PORT": sink.port})
    login_limiter.reset()
    form_limiter.reset()
    with db.transaction(app.extensions["formwork"].engine) as conn:
        uid = auth.create_user(conn, {"username": "admin", "name": "Ada Admin", "password": PASSWORD,
                                      "email": "ada@example.com"}, is_admin=True)
        token = auth.create_token(conn, uid, "setup", None)["token"]
    api = Api(app.test_client(), token)
    api.ok("POST", "/meta/templates/crm/install", {"demo_data": False})
    api.ok("POST", "/admin/users", {"username": "boss", "name": "Bo Boss", "email": "boss@example.com",
                                    "password": PASSWORD, "roles": []})
    api.ok("POST", "/admin/users", {"username": "rep", "name": "Rep Liu", "email": "rep@example.com",
                                    "password": PASSWORD, "roles": []})
    api.ok("POST", "/admin/teams", {"key": "east", "name": "East", "manager": "boss", "members": ["rep"]})
    with serving(app) as url:
        try:
            yield {"url": url, "api": api, "app": app, "sink": sink,
                   "worker": Worker(app, worker_id="browser-test-worker")}
        finally:
            sink.__exit__(None, None, None)
            app.extensions["formwork"].engine.dispose()


@pytest.fixture
def page(browser: Any, crm_server: dict[str, Any]) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    ctx.set_default_timeout(30000)
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(f"console: {m.text} {m.location.get('url')}")
          if m.type == "error" else None)
    try:
        yield pg
    finally:
        ctx.close()
    assert not errors, errors


def log_in(page: Any, url: str, locale: str) -> None:
    page.goto(url + "/")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(url + "/")
    with page.expect_navigation():
        page.select_option("select[name=locale]", locale)
    page.wait_for_function("l => document.documentElement.lang === l", arg=locale)


@pytest.mark.parametrize("locale", ["en", "zh-CN"])
def test_build_a_rule_in_the_pages_and_watch_it_run(page: Any, crm_server: dict[str, Any], locale: str) -> None:
    from playwright.sync_api import expect

    w = WORDS[locale]
    url, sink, worker = crm_server["url"], crm_server["sink"], crm_server["worker"]
    name = f"Mega deal {locale} {len(sink.messages)}"
    log_in(page, url, locale)
    page.goto(url + "/apps/crm")
    page.get_by_role("link", name=w["automations"], exact=True).click()
    page.get_by_role("link", name=w["new"]).click()
    expect(page.get_by_role("heading", name=w["new"])).to_be_visible()
    rule_label = f"{w['rule']} {locale}"
    page.get_by_label(w["label"]).fill(rule_label)
    # the trigger: a record is created (the default) in Opportunities; the page follows the table
    with settled(page):
        page.get_by_role("combobox", name=w["table"], exact=True).select_option(label=w["opportunities"])
    # the condition, with the shared condition builder: amount > 100000
    with settled(page):
        page.get_by_role("button", name=f"+ {w['add_condition']}", exact=True).click()
    with settled(page):
        page.get_by_role("combobox", name=w["field"], exact=True).select_option(label=w["amount"])
    with settled(page):
        page.get_by_role("combobox", name=w["comparison"]).select_option("gt")
    page.get_by_role("textbox", name=w["value"], exact=True).fill("100000")
    # step 1: notify the owner's team manager, the title with a variable from the picker
    page.get_by_text(w["add_step"]).click()
    with settled(page):
        page.get_by_role("button", name=w["notify"], exact=True).click()
    step1 = page.get_by_role("group", name=f"1. {w['notify']}")
    step1.get_by_label(w["owner_rcpt"], exact=True).uncheck()
    step1.get_by_label(w["manager"], exact=True).check()
    title = step1.get_by_role("textbox", name=re.compile(rf"^{w['title']}\*?$"))
    title.fill("Big opportunity: ")
    step1.get_by_role("combobox", name=w["insert"], exact=True).select_option(label=w["name_var"])
    step1.get_by_role("button", name=w["insert"].replace("变量", ""), exact=True).click()
    expect(title).to_have_value("Big opportunity: {{ record.name }}")
    # step 2: email them
    page.get_by_text(w["add_step"]).click()
    with settled(page):
        page.get_by_role("button", name=w["email"], exact=True).click()
    step2 = page.get_by_role("group", name=f"2. {w['email']}")
    step2.get_by_label(w["owner_rcpt"], exact=True).uncheck()
    step2.get_by_label(w["manager"], exact=True).check()
    subject = step2.get_by_role("textbox", name=re.compile(rf"^{w['subject']}\*?$"))
    subject.fill("Big opportunity {{ record.name }} ({{ record.amount }})")
    # what was typed survived the re-rendering that adding the step did
    expect(page.get_by_role("group", name=f"1. {w['notify']}").get_by_label(w["manager"], exact=True)).to_be_checked()
    expect(page.get_by_role("textbox", name=w["value"], exact=True)).to_have_value("100000")
    page.screenshot(path=f"/tmp/shots-auto/builder-{locale}.png", full_page=True)
    page.get_by_role("button", name=w["save"], exact=True).click()
    expect(page.get_by_role("status")).to_contain_text(w["saved"])
    expect(page.get_by_role("link", name=rule_label, exact=True)).to_be_visible()
    page.screenshot(path=f"/tmp/shots-auto/list-{locale}.png", full_page=True)

    # an opportunity over 100,000 owned by the rep, created in the record page
    page.goto(url + "/apps/crm/opportunities/new")
    page.get_by_label(re.compile(rf"^{w['record_name']}\*?$")).fill(name)
    page.get_by_label(re.compile(rf"^{w['stage']}\*?$")).select_option("lead")
    page.get_by_label(re.compile(rf"^{w['amount']}\*?$")).fill("150000")
    page.get_by_label(re.compile(rf"^{w['owner']}\*?$")).select_option(label="Rep Liu")
    page.get_by_role("button", name=w["create"], exact=True).click()
    expect(page.get_by_role("heading", name=name)).to_be_visible()
    before = len(sink.messages)
    worker.drain()
    mails = sink.wait_for(before + 1)
    mine = [m for m in mails[before:] if name in str(m["Subject"])]
    assert mine and mine[0].envelope_to == ["boss@example.com"]

    # the run log, filtered to the rule: the run succeeded, on that record, which opens
    page.goto(url + "/apps/crm")
    page.get_by_role("link", name=w["automations"], exact=True).click()
    page.get_by_role("link", name=w["run_log"]).click()
    page.wait_for_url(re.compile(r"/_automations/runs"))
    page.wait_for_function(QUIET)  # the page's scripts are live: choosing a rule submits the filter form
    with page.expect_navigation():
        page.get_by_role("combobox", name=w["automations"], exact=True).select_option(label=rule_label)
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name=re.compile(re.escape(name))))
    expect(row).to_contain_text(w["succeeded"])
    page.screenshot(path=f"/tmp/shots-auto/runs-{locale}.png", full_page=True)
    row.get_by_role("link").click()
    expect(page.get_by_role("heading", name=name)).to_be_visible()
    # the manager got the notification
    api = crm_server["api"]
    boss = Api(api.client, _token(crm_server["app"], "boss"))
    titles = [n["title"] for n in boss.ok("GET", "/notifications")["notifications"]]
    assert f"Big opportunity: {name}" in titles
    # the pages on a phone
    page.set_viewport_size({"width": 390, "height": 844})
    for shot, path in (("list", "/apps/crm/_automations"), ("runs", "/apps/crm/_automations/runs"),
                       ("editor", "/apps/crm/_automations/new")):
        page.goto(url + path)
        page.screenshot(path=f"/tmp/shots-auto/{shot}-390-{locale}.png", full_page=True)


def _token(app: Any, username: str) -> str:
    from sqlalchemy import select

    with db.transaction(app.extensions["formwork"].engine) as conn:
        uid = conn.execute(select(db.users.c.id).where(db.users.c.username == username)).scalar_one()
        return str(auth.create_token(conn, uid, "t", None)["token"])
