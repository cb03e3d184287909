"""The CRM's contract approval in a real browser, in both languages: a rep asks, the sales manager approves
one contract and rejects another (the comment required first) from the inbox, then opens the approval
request's notification, which leads to the contract."""

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
           "approved": "Approved", "rejected": "Rejected", "bell": "Notifications",
           "required": "a comment is required", "asked": "Waiting for your approval"},
    "zh-CN": {"inbox": "待我审批", "approve": "同意", "reject": "驳回", "comment": "审批意见",
              "approved": "已通过", "rejected": "已驳回", "bell": "通知", "required": "驳回或退回需要审批意见",
              "asked": "待你审批"},
}


@pytest.fixture(scope="module")
def crm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from formwork.runtime.ratelimit import form_limiter, login_limiter

    folder = tmp_path_factory.mktemp("browser_crm")
    app = create_app({"DATABASE_URL": f"sqlite:///{folder / 'crm.db'}", "SECRET_KEY": "browser-secret",
                      "TESTING": True, "FILES_DIR": str(folder / "files")})
    login_limiter.reset()
    form_limiter.reset()
    with db.transaction(app.extensions["formwork"].engine) as conn:
        uid = auth.create_user(conn, {"username": "admin", "name": "Ada Admin", "password": PASSWORD},
                               is_admin=True)
        token = auth.create_token(conn, uid, "setup", None)["token"]
    api = Api(app.test_client(), token)
    api.ok("POST", "/meta/templates/crm/install", {"demo_data": False})
    reps: dict[str, tuple[Api, int]] = {}
    for lang, suffix in (("en", "en"), ("zh-CN", "zh")):
        boss = api.ok("POST", "/admin/users", {"username": f"boss_{suffix}", "name": f"Boss {suffix}",
                                               "password": PASSWORD, "roles": ["sales_manager"]})
        rep = api.ok("POST", "/admin/users", {"username": f"rep_{suffix}", "name": f"Rep {suffix}",
                                              "password": PASSWORD, "roles": ["account_manager"]})
        api.ok("POST", "/admin/teams", {"key": f"team_{suffix}", "name": f"Team {suffix}", "manager": boss["id"],
                                        "members": [rep["id"]]})
        with db.transaction(app.extensions["formwork"].engine) as conn:
            conn.execute(update(db.users).where(db.users.c.id.in_([boss["id"], rep["id"]])).values(locale=lang))
            reps[lang] = (Api(app.test_client(), auth.create_token(conn, rep["id"], "rep", None)["token"]), rep["id"])
    worker = Worker(app, worker_id="browser-crm-worker")
    with serving(app) as url:
        try:
            yield {"url": url, "api": api, "reps": reps, "worker": worker}
        finally:
            app.extensions["formwork"].engine.dispose()


@pytest.fixture(params=["en", "zh-CN"])
def lang(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def page(browser: Any, lang: str) -> Iterator[Any]:  # noqa: F811
    ctx = browser.new_context(viewport={"width": 1280, "height": 860}, locale=lang)
    ctx.set_default_timeout(30000)
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(f"console: {m.text} {m.location.get('url')}")
          if m.type == "error" and "422" not in m.text else None)
    try:
        yield pg
    finally:
        ctx.close()
    assert not errors, errors


def test_a_sales_manager_approves_and_rejects_contracts_from_the_inbox(page: Any, crm_server: dict[str, Any],
                                                                        lang: str) -> None:
    from playwright.sync_api import expect

    url, w = crm_server["url"], WORDS[lang]
    rep, rep_id = crm_server["reps"][lang]
    tag = uuid.uuid4().hex[:6]
    titles = {"ok": f"Service {tag} A", "no": f"Service {tag} B"}
    ids = {}
    for k, title in titles.items():
        c = rep.ok("POST", "/data/crm/contracts", {"fields": {"title": title, "amount": 120000, "owner": rep_id}})
        rep.ok("PATCH", f"/data/crm/contracts/{c['id']}", {"fields": {"approval_status": "pending"}})
        ids[k] = c["id"]
    crm_server["worker"].drain()

    page.goto(url + "/login")
    page.fill("input[name=username]", f"boss_{'en' if lang == 'en' else 'zh'}")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(url + "/")
    page.get_by_role("link", name=w["inbox"]).click()

    ok_card = page.get_by_role("article").filter(has_text=titles["ok"])
    expect(ok_card).to_have_count(1)
    with settled(page):
        ok_card.get_by_role("button", name=w["approve"]).click()
    ok_card = page.get_by_role("article").filter(has_text=titles["ok"])
    expect(ok_card.locator(".appr-head").get_by_text(w["approved"], exact=True)).to_be_visible()

    no_card = page.get_by_role("article").filter(has_text=titles["no"])
    with settled(page):
        no_card.get_by_role("button", name=w["reject"]).click()
    no_card = page.get_by_role("article").filter(has_text=titles["no"])
    expect(no_card.get_by_label(w["comment"])).to_have_attribute("aria-invalid", "true")
    expect(no_card.get_by_role("alert")).to_contain_text(w["required"])
    no_card.get_by_label(w["comment"]).fill("金额需要复核 / check the amount")
    with settled(page):
        no_card.get_by_role("button", name=w["reject"]).click()
    no_card = page.get_by_role("article").filter(has_text=titles["no"])
    expect(no_card.locator(".appr-head").get_by_text(w["rejected"], exact=True)).to_be_visible()
    assert rep.ok("GET", f"/data/crm/contracts/{ids['ok']}")["fields"]["approval_status"] == "approved"
    assert rep.ok("GET", f"/data/crm/contracts/{ids['no']}")["fields"]["approval_status"] == "rejected"

    with settled(page):
        page.get_by_role("button", name=w["bell"]).click()
    note = page.get_by_role("link").filter(has_text=titles["ok"]).filter(has_text=w["asked"])
    expect(note).to_have_count(1)
    note.click()
    page.wait_for_url(f"**/apps/crm/contracts/{ids['ok']}")
    expect(page.get_by_role("heading", level=1)).to_be_visible()
