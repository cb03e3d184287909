"""Approvals and notifications in a real browser, in both languages: approve a deal from the inbox, reject
one with the required comment (the error next to the comment box first), open a notification's record."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import update

from formwork import create_app, db
from formwork.automation.worker import Worker
from formwork.runtime import auth
from tests.browser.test_ui_browser import pytestmark, serving, settled  # noqa: F401 - fixtures and marks
from tests.helpers import Api

PASSWORD = "browser-pass-1"
WORDS = {
    "en": {"inbox": "My approvals", "approve": "Approve", "reject": "Reject", "comment": "Comment",
           "approved": "Approved", "rejected": "Rejected", "bell": "Notifications", "required": "a comment is required",
           "title": "Approve deal {}", "note": "New deal: {}"},
    "zh-CN": {"inbox": "待我审批", "approve": "同意", "reject": "驳回", "comment": "审批意见",
              "approved": "已通过", "rejected": "已驳回", "bell": "通知", "required": "驳回或退回需要审批意见",
              "title": "审批商机 {}", "note": "新商机：{}"},
}
USERS = {"en": "ann", "zh-CN": "zoe"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from formwork.runtime.ratelimit import form_limiter, login_limiter

    folder = tmp_path_factory.mktemp("browser_appr")
    app = create_app({"DATABASE_URL": f"sqlite:///{folder / 'ui.db'}", "SECRET_KEY": "browser-secret",
                      "TESTING": True, "FILES_DIR": str(folder / "files")})
    login_limiter.reset()
    form_limiter.reset()
    with db.transaction(app.extensions["formwork"].engine) as conn:
        uid = auth.create_user(conn, {"username": "admin", "name": "Ada Admin", "password": PASSWORD},
                               is_admin=True)
        token = auth.create_token(conn, uid, "setup", None)["token"]
    api = Api(app.test_client(), token)
    api.ok("POST", "/meta/apps", {"key": "sales", "label": {"en": "Sales", "zh-CN": "销售"}})
    api.ok("POST", "/meta/apps/sales/tables", {"key": "deals", "label": {"en": "Deals", "zh-CN": "商机"}, "fields": [
        {"key": "name", "label": {"en": "Name", "zh-CN": "名称"}, "type": "text", "required": True},
        {"key": "amount", "label": {"en": "Amount", "zh-CN": "金额"}, "type": "currency",
         "options": {"currency": "CNY"}},
        {"key": "status", "label": {"en": "Status", "zh-CN": "状态"}, "type": "single_select", "options": {
            "choices": [{"value": "draft", "label": {"en": "Draft", "zh-CN": "草稿"}},
                        {"value": "pending", "label": {"en": "Pending", "zh-CN": "审批中"}},
                        {"value": "approved", "label": {"en": "Signed off", "zh-CN": "已批准"}},
                        {"value": "rejected", "label": {"en": "Turned down", "zh-CN": "被驳回"}}]}}]})
    api.ok("POST", "/admin/roles", {"key": "deal_reader", "label": "Deal reader", "permissions": {
        "sales.deals": {"read": "all", "create": False, "update": "none", "delete": "none"}}})
    for username, locale in (("ann", "en"), ("zoe", "zh-CN")):
        user = api.ok("POST", "/admin/users", {"username": username, "name": username.title(), "password": PASSWORD,
                                               "roles": ["deal_reader"]})
        with db.transaction(app.extensions["formwork"].engine) as conn:
            conn.execute(update(db.users).where(db.users.c.id == user["id"]).values(locale=locale))
    api.ok("POST", "/meta/apps/sales/automations", {
        "key": "deal_ok", "label": "Deal approval", "run_as": "admin",
        "trigger": {"type": "record_created", "table": "deals"},
        "actions": [{"type": "request_approval", "approvers": {"users": ["{{ record.name.split('-')[0] }}"]},
                     "status": {"field": "status"},
                     "title": {"en": "Approve deal {{ record.name }}", "zh-CN": "审批商机 {{ record.name }}"}}]})
    api.ok("POST", "/meta/apps/sales/automations", {
        "key": "deal_note", "label": "New deal notice", "run_as": "admin",
        "trigger": {"type": "record_created", "table": "deals"},
        "actions": [{"type": "notify", "users": ["{{ record.name.split('-')[0] }}"],
                     "title": {"en": "New deal: {{ record.name }}", "zh-CN": "新商机：{{ record.name }}"}}]})
    worker = Worker(app, worker_id="browser-worker")
    with serving(app) as url:
        try:
            yield {"url": url, "api": api, "app": app, "worker": worker}
        finally:
            app.extensions["formwork"].engine.dispose()


@pytest.fixture(params=["en", "zh-CN"])
def lang(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def page(browser: Any, server: dict[str, Any], lang: str) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 860}, locale=lang)
    ctx.set_default_timeout(30000)
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(f"console: {m.text} {m.location.get('url')}")
          if m.type == "error" and "422" not in m.text and "409" not in m.text else None)
    try:
        yield pg
    finally:
        ctx.close()
    assert not errors, errors


def _log_in(page: Any, url: str, username: str) -> None:
    page.goto(url + "/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(url + "/")


def test_approve_and_reject_from_the_inbox_then_open_a_notification(page: Any, server: dict[str, Any],
                                                                    lang: str) -> None:
    from playwright.sync_api import expect

    url, api, w = server["url"], server["api"], WORDS[lang]
    user = USERS[lang]
    tag = uuid.uuid4().hex[:6]
    good, bad = f"{user}-good-{tag}", f"{user}-bad-{tag}"
    for name in (good, bad):
        api.ok("POST", "/data/sales/deals", {"fields": {"name": name, "amount": 120000}})
    server["worker"].drain()
    _log_in(page, url, user)

    page.get_by_role("link", name=w["inbox"]).click()
    good_card = page.get_by_role("article", name=w["title"].format(good))
    expect(good_card).to_be_visible()
    expect(good_card.get_by_text("120,000").or_(good_card.get_by_text("120000"))).to_be_visible()
    with settled(page):
        good_card.get_by_role("button", name=w["approve"]).click()
    good_card = page.get_by_role("article", name=w["title"].format(good))
    expect(good_card.get_by_text(w["approved"], exact=True)).to_be_visible()
    expect(good_card.get_by_role("button", name=w["approve"])).to_have_count(0)

    bad_card = page.get_by_role("article", name=w["title"].format(bad))
    with settled(page):
        bad_card.get_by_role("button", name=w["reject"]).click()  # no comment yet
    bad_card = page.get_by_role("article", name=w["title"].format(bad))
    comment = bad_card.get_by_label(w["comment"])
    expect(comment).to_have_attribute("aria-invalid", "true")
    expect(bad_card.get_by_role("alert")).to_contain_text(w["required"])
    comment.fill("价格太高 / too expensive")
    with settled(page):
        bad_card.get_by_role("button", name=w["reject"]).click()
    bad_card = page.get_by_role("article", name=w["title"].format(bad))
    expect(bad_card.get_by_text(w["rejected"], exact=True)).to_be_visible()
    expect(bad_card.get_by_text("价格太高 / too expensive")).to_be_visible()
    assert api.ok("GET", "/data/sales/deals", None)["records"] is not None

    # the bell: the notification in the reader's language opens its record
    with settled(page):
        page.get_by_role("button", name=w["bell"]).click()
    note = page.get_by_role("link", name=w["note"].format(good))
    expect(note).to_be_visible()
    note.click()
    page.wait_for_url("**/apps/sales/deals/*")
    expect(page.get_by_role("heading", name=good, exact=True, level=1)).to_be_visible()
    panel = page.get_by_role("region", name={"en": "Approvals", "zh-CN": "审批"}[lang])
    expect(panel.get_by_text(w["approved"], exact=True)).to_be_visible()
