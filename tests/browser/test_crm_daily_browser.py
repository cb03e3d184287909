"""The CRM's daily work in a real browser, in both languages, as the demo users (issue 16): a new customer
is the creator's, the pool's buttons, a pipeline board that refuses a skipped stage, a comment that
mentions a manager."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import update

from formwork import create_app, db
from formwork.runtime import auth
from formwork.runtime.demo import demo_password
from tests.browser.test_ui_browser import pytestmark, serving  # noqa: F401 - fixtures and marks
from tests.browser.test_ui_browser import settled as _settled
from tests.crm_support import crm_database
from tests.helpers import Api

settled = _settled
WORDS = {
    "en": {"owner": "Owner", "name": "Name", "create": "Create", "claim": "Claim", "release": "Release to pool",
           "assign": "Assign", "assign_to": "Assign to", "move_to": "Move to", "mention": "Mention",
           "comment": "Comment", "post": "Post comment", "lead": "Lead", "qualified": "Qualified", "won": "Won"},
    "zh-CN": {"owner": "负责人", "name": "客户名称", "create": "创建", "claim": "领取", "release": "退回公海",
              "assign": "分配", "assign_to": "分配给", "move_to": "移动到", "mention": "提及",
              "comment": "评论内容", "post": "发表评论", "lead": "线索", "qualified": "已确认", "won": "赢单"},
}


@pytest.fixture(scope="module")
def crm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from formwork.runtime.ratelimit import form_limiter, login_limiter

    folder = tmp_path_factory.mktemp("crm_browser")
    copies = crm_database("sqlite", tmp_path_factory)
    app = create_app({"DATABASE_URL": next(copies), "SECRET_KEY": "browser-secret",
                      "TESTING": True, "FILES_DIR": str(folder / "files")})
    login_limiter.reset()
    form_limiter.reset()
    with db.transaction(app.extensions["formwork"].engine) as conn:
        from sqlalchemy import select
        users = {r.username: r.id for r in conn.execute(select(db.users.c.username, db.users.c.id))}
        token = auth.create_token(conn, users["admin"], "setup", None)["token"]
    api = Api(app.test_client(), token)
    with serving(app) as url:
        try:
            yield {"url": url, "api": api, "app": app, "users": users}
        finally:
            app.extensions["formwork"].engine.dispose()
            copies.close()


@pytest.fixture(params=["en", "zh-CN"])
def lang(request: pytest.FixtureRequest, crm_server: dict[str, Any]) -> Iterator[str]:
    """Every demo user reads the pages in this language for the test."""
    with db.transaction(crm_server["app"].extensions["formwork"].engine) as conn:
        conn.execute(update(db.users).values(locale=request.param))
    yield request.param


def pages_as(browser: Any, url: str, tolerated: str | None = None) -> Iterator[Any]:
    """A logged-in page per demo user; any page or console error fails the test (except console errors
    containing ``tolerated``, e.g. a refusal the test provokes on purpose)."""
    contexts: list[Any] = []
    errors: list[str] = []

    def on_console(m: Any) -> None:
        if m.type == "error" and not (tolerated and tolerated in m.text):
            errors.append(f"console: {m.text}")

    def open_page(username: str) -> Any:
        ctx = browser.new_context(viewport={"width": 1280, "height": 900})
        ctx.set_default_timeout(30000)
        contexts.append(ctx)
        pg = ctx.new_page()
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.on("console", on_console)
        pg.goto(url + "/login")
        pg.fill("input[name=username]", username)
        pg.fill("input[name=password]", demo_password())
        pg.click("button[type=submit]")
        pg.wait_for_url(url + "/")
        return pg

    try:
        yield open_page
    finally:
        for ctx in contexts:
            ctx.close()
    assert not errors, errors


@pytest.fixture
def open_as(browser: Any, crm_server: dict[str, Any]) -> Iterator[Any]:
    yield from pages_as(browser, crm_server["url"])


def _unique(prefix: str) -> str:
    import uuid
    return f"{prefix} {uuid.uuid4().hex[:6]}"


def test_a_new_customer_is_owned_by_its_creator(open_as: Any, crm_server: dict[str, Any], lang: str) -> None:
    from playwright.sync_api import expect

    w, url = WORDS[lang], crm_server["url"]
    page = open_as("am1")
    page.goto(url + "/apps/crm/customers/new")
    owner = page.get_by_label(w["owner"], exact=True)
    expect(owner).to_have_value(str(crm_server["users"]["am1"]))
    name = _unique("自建客户 Own")
    page.get_by_label(re.compile("^" + re.escape(w["name"]) + r"\*?$")).fill(name)
    page.get_by_role("button", name=w["create"], exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(name)
    rec = crm_server["api"].records("crm", "customers", search=name)[0]
    assert rec["fields"]["owner"]["id"] == crm_server["users"]["am1"]


def test_pool_claim_release_and_a_manager_assigns(open_as: Any, crm_server: dict[str, Any], lang: str) -> None:
    from playwright.sync_api import expect

    w, url, api = WORDS[lang], crm_server["url"], crm_server["api"]
    rid = api.ok("POST", "/data/crm/customers", {"fields": {"name": _unique("公海 Pool"), "owner": None}})["id"]
    page = open_as("am1")
    page.goto(f"{url}/apps/crm/customers/{rid}")
    expect(page.get_by_role("button", name=w["assign"], exact=True)).to_have_count(0)
    page.get_by_role("button", name=w["claim"], exact=True).click()
    expect(page.get_by_role("button", name=w["release"], exact=True)).to_be_visible()
    assert api.ok("GET", f"/data/crm/customers/{rid}")["fields"]["owner"]["id"] == crm_server["users"]["am1"]
    page.get_by_role("button", name=w["release"], exact=True).click()
    expect(page.get_by_role("button", name=w["release"], exact=True)).to_have_count(0)
    assert api.ok("GET", f"/data/crm/customers/{rid}")["fields"]["owner"] is None
    boss = open_as("manager1")
    boss.goto(f"{url}/apps/crm/customers/{rid}")
    boss.get_by_label(w["assign_to"], exact=True).select_option(str(crm_server["users"]["am2"]))
    boss.get_by_role("button", name=w["assign"], exact=True).click()
    expect(boss.get_by_role("status")).to_be_visible()
    assert api.ok("GET", f"/data/crm/customers/{rid}")["fields"]["owner"]["id"] == crm_server["users"]["am2"]


def test_the_pipeline_refuses_a_skipped_stage_for_a_rep(open_as: Any, crm_server: dict[str, Any],
                                                         lang: str) -> None:
    from playwright.sync_api import expect

    w, url, api = WORDS[lang], crm_server["url"], crm_server["api"]
    name = _unique("看板 Deal")
    opp = api.ok("POST", "/data/crm/opportunities", {"fields": {"name": name, "owner": crm_server["users"]["am1"]}})
    page = open_as("am1")
    page.goto(f"{url}/apps/crm/opportunities?view=pipeline&search={name.split()[-1]}")
    card = page.locator(f'article.card[data-id="{opp["id"]}"]')
    move = card.get_by_label(w["move_to"], exact=True)
    expect(move.locator("option")).to_have_count(3)  # stay, one step on, or lost
    won = page.get_by_role("region", name=w["won"], exact=True)
    card.drag_to(won)  # the won column takes no drop from a lead
    expect(won.locator(f'article.card[data-id="{opp["id"]}"]')).to_have_count(0)
    assert api.ok("GET", f"/data/crm/opportunities/{opp['id']}")["fields"]["stage"] == "lead"
    with settled(page):
        card.drag_to(page.get_by_role("region", name=w["qualified"], exact=True))
    qualified = page.get_by_role("region", name=w["qualified"], exact=True)
    expect(qualified.locator(f'article.card[data-id="{opp["id"]}"]')).to_have_count(1)
    assert api.ok("GET", f"/data/crm/opportunities/{opp['id']}")["fields"]["stage"] == "qualified"


def test_a_comment_mentions_the_manager(open_as: Any, crm_server: dict[str, Any], lang: str) -> None:
    from playwright.sync_api import expect

    w, url, api = WORDS[lang], crm_server["url"], crm_server["api"]
    cname = _unique("评论 Comment")
    rid = api.ok("POST", "/data/crm/customers", {"fields": {"name": cname,
                                                            "owner": crm_server["users"]["am1"]}})["id"]
    page = open_as("am1")
    page.goto(f"{url}/apps/crm/customers/{rid}")
    page.get_by_label(w["mention"], exact=True).select_option("manager1")
    box = page.get_by_label(w["comment"], exact=True).first
    expect(box).to_have_value(re.compile(r"@manager1 $"))
    box.press("End")
    box.type("请看看报价")
    page.get_by_role("button", name=w["post"], exact=True).click()
    expect(page.locator(".tl-comment .comment-body").first).to_have_text("@manager1 请看看报价")
    boss = open_as("manager1")
    boss.goto(url + "/notifications")
    expect(boss.locator("body")).to_contain_text(cname)
    with db.transaction(crm_server["app"].extensions["formwork"].engine) as conn:
        from sqlalchemy import select
        n = conn.execute(select(db.notifications.c.link).where(
            db.notifications.c.user_id == crm_server["users"]["manager1"], db.notifications.c.kind == "mention")
            .order_by(db.notifications.c.id.desc())).first()
    assert n is not None and n.link["record_id"] == rid
