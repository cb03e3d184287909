"""Administration in a real browser (issue 12): an administrator creates a user, a team and a role in the role
editor, and the user sees only what the role allows; the CRM's demo system administrator onboards an account
manager (in Chinese), who sees no dashboards; a user changes their password and their other session ends."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

import pytest

from formwork import create_app, db
from formwork.runtime import auth
from formwork.runtime.demo import demo_password
from tests.browser.test_ui_browser import CHROMIUM, PASSWORD, serving, settled  # noqa: F401 - fixtures and marks
from tests.helpers import Api

pytestmark = pytest.mark.browser
if not os.path.exists(CHROMIUM) and not os.environ.get("CI"):
    pytestmark = [pytest.mark.browser, pytest.mark.skip(reason=f"{CHROMIUM} is missing")]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from formwork.runtime.ratelimit import form_limiter, login_limiter

    folder = tmp_path_factory.mktemp("admin-browser")
    app = create_app({"DATABASE_URL": f"sqlite:///{folder / 'ui.db'}", "SECRET_KEY": "browser-secret",
                      "TESTING": True, "FILES_DIR": str(folder / "files"), "SMTP_HOST": "127.0.0.1"})
    login_limiter.reset()
    form_limiter.reset()
    with db.transaction(app.extensions["formwork"].engine) as conn:
        uid = auth.create_user(conn, {"username": "admin", "name": "Ada Admin", "password": PASSWORD},
                               is_admin=True)
        token = auth.create_token(conn, uid, "setup", None)["token"]
    api = Api(app.test_client(), token)
    api.ok("POST", "/meta/templates/crm/install", {"demo_data": False})
    from formwork.runtime.demo import generate_demo

    p = app.extensions["formwork"]
    with db.transaction(p.engine) as conn:  # the demo people (sysadmin, ...) with a few records: fast
        generate_demo(conn, p.catalogs.get(conn), "crm", "crm", scale=5)
    p.catalogs.invalidate()
    api.ok("POST", "/meta/apps", {"key": "shop", "label": {"en": "Shop", "zh-CN": "商店"}})
    api.ok("POST", "/meta/apps/shop/tables", {"key": "gadgets", "label": {"en": "Gadgets", "zh-CN": "小工具"},
                                              "fields": [
        {"key": "name", "label": {"en": "Name", "zh-CN": "名称"}, "type": "text"},
        {"key": "owner", "label": {"en": "Owner", "zh-CN": "负责人"}, "type": "user"},
        {"key": "secret", "label": {"en": "Secret note", "zh-CN": "机密备注"}, "type": "text"}],
        "views": [{"key": "all", "label": {"en": "All gadgets", "zh-CN": "全部"}, "type": "grid"}]})
    with serving(app) as url:
        try:
            yield {"url": url, "api": api, "app": app}
        finally:
            app.extensions["formwork"].engine.dispose()


#: a form sent back with its errors answers 422, which Chromium reports on the console; the tests check that
#: the error is shown next to its input instead
FORM_ERROR = re.compile(r"Failed to load resource: the server responded with a status of 422")


class Contexts:
    """Browser contexts (one per person or session) that fail the test on any page or console error."""

    def __init__(self, browser: Any) -> None:
        self.browser = browser
        self.contexts: list[Any] = []
        self.errors: list[str] = []

    def page(self, locale: str = "en-US", width: int = 1280) -> Any:
        ctx = self.browser.new_context(viewport={"width": width, "height": 900}, locale=locale)
        ctx.set_default_timeout(30000)
        self.contexts.append(ctx)
        pg = ctx.new_page()
        pg.on("pageerror", lambda e: self.errors.append(str(e)))
        pg.on("console", lambda m: self.errors.append(f"console: {m.text}")
              if m.type == "error" and not FORM_ERROR.search(m.text) else None)
        return pg


@pytest.fixture
def people(browser: Any) -> Iterator[Contexts]:
    c = Contexts(browser)
    try:
        yield c
    finally:
        for ctx in c.contexts:
            ctx.close()
    assert not c.errors, c.errors


def log_in(page: Any, url: str, username: str, password: str) -> None:
    page.goto(url + "/login")
    page.locator("input[name=username]").fill(username)
    page.locator("input[name=password]").fill(password)
    page.locator("button[type=submit]").click()
    page.wait_for_url(url + "/")


def shot(page: Any, name: str) -> None:
    folder = "/tmp/shots-admin"
    if os.path.isdir(folder):
        page.screenshot(path=f"{folder}/{name}.png", full_page=True)


def test_admin_makes_user_team_and_role_and_the_user_sees_only_what_it_allows(
        people: Contexts, server: dict[str, Any]) -> None:
    from playwright.sync_api import expect

    url, api = server["url"], server["api"]
    n = len(api.ok("GET", "/admin/users?limit=1000")["users"])
    username = f"tess{n}"
    page = people.page()
    log_in(page, url, "admin", PASSWORD)
    page.get_by_role("link", name="Administration").click()
    page.get_by_role("link", name="New user").click()
    page.get_by_label("Name", exact=True).fill("Tess Tester")
    page.get_by_label("Username").fill(username)
    page.get_by_label("New password").fill("password")
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_text("This is one of the most common passwords")).to_be_visible()
    expect(page.get_by_label("Name", exact=True)).to_have_value("Tess Tester")  # nothing typed is lost
    page.get_by_label("New password").fill("tess-secret-42")
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_text("The user Tess Tester was created.")).to_be_visible()
    shot(page, "user-en")
    user_id = int(page.url.split("/admin/users/")[1].split("?")[0])
    # a team with Tess in it
    page.get_by_role("link", name="Teams").click()
    page.get_by_label("Team name").fill(f"Team {n}")
    page.get_by_role("button", name="Create").click()
    page.get_by_label("Manager").select_option(str(user_id))
    page.get_by_role("checkbox", name="Tess Tester").check()
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Saved.")).to_be_visible()
    # a role made in the role editor: gadgets, their own only, the secret note hidden
    page.get_by_role("link", name="Roles").click()
    page.get_by_label("Name (English)").fill(f"Gadget rep {n}")
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_text(f"The role Gadget rep {n} was created.")).to_be_visible()
    page.get_by_label("Read · Gadgets").select_option("own")
    page.get_by_label("Update · Gadgets").select_option("own")
    page.get_by_label("Create · Gadgets").check()
    page.locator("tr", has=page.get_by_label("Read · Gadgets")).get_by_text("Field rules").click()
    page.get_by_label("Secret note · Gadgets").select_option("hidden")
    page.get_by_role("switch", name="View dashboards").uncheck()
    shot(page, "role-editor-en")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("The role was saved.")).to_be_visible()
    role_key = page.url.split("/admin/roles/")[1].split("?")[0]
    # give Tess the role
    page.goto(f"{url}/admin/users/{user_id}")
    page.get_by_role("checkbox", name=f"Gadget rep {n}").check()
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Saved.")).to_be_visible()
    api.ok("POST", "/data/shop/gadgets", {"fields": {"name": f"Tess gadget {n}", "owner": user_id,
                                                     "secret": "HIDDEN-1"}})
    api.ok("POST", "/data/shop/gadgets", {"fields": {"name": f"Other gadget {n}", "secret": "HIDDEN-2"}})
    # preview as this role, then "why can Tess see it?"
    page.goto(f"{url}/admin/roles/{role_key}")
    page.get_by_label(re.compile("^Table")).select_option("shop.gadgets")
    page.get_by_label("As member").select_option(str(user_id))
    with settled(page):
        page.get_by_role("button", name="Show").click()
    preview = page.locator("#role-preview")
    expect(preview).to_contain_text(f"Tess gadget {n}")
    expect(preview).not_to_contain_text(f"Other gadget {n}")
    expect(preview).to_contain_text("Hidden columns: Secret note")
    page.get_by_role("link", name="Why can they see it?").click()
    page.get_by_label("Person").select_option(str(user_id))
    page.get_by_label(re.compile("^Table")).select_option("shop.gadgets")
    page.wait_for_load_state("load")
    page.get_by_label("Field (optional)").select_option("secret")
    page.get_by_role("button", name="Explain").click()
    expect(page.get_by_text(f"Tess Tester may see it: role “Gadget rep {n}” (their own records).")).to_be_visible()
    expect(page.get_by_text("The field Secret note is hidden from Tess Tester")).to_be_visible()
    # Tess logs in and sees her gadget, not the other one, and no secret column
    tess = people.page()
    log_in(tess, url, username, "tess-secret-42")
    tess.goto(url + "/apps/shop/gadgets")
    expect(tess.locator("#rows")).to_contain_text(f"Tess gadget {n}")
    expect(tess.locator("#rows")).not_to_contain_text(f"Other gadget {n}")
    expect(tess.locator("table.grid thead")).not_to_contain_text("Secret note")
    expect(tess.locator("body")).not_to_contain_text("HIDDEN-1")
    # every change is in the audit log, which opens the thing changed
    page.get_by_role("link", name="Audit log").click()
    page.get_by_label("Action").select_option("role_updated")
    page.get_by_role("button", name="Apply").click()
    page.get_by_role("link", name=role_key).first.click()
    expect(page.get_by_label("Read · Gadgets")).to_have_value("own")


def test_demo_system_administrator_onboards_an_account_manager_in_chinese(
        people: Contexts, server: dict[str, Any]) -> None:
    from playwright.sync_api import expect

    url, api = server["url"], server["api"]
    n = len(api.ok("GET", "/admin/users?limit=1000")["users"])
    page = people.page(locale="zh-CN")
    log_in(page, url, "sysadmin", demo_password())
    page.get_by_role("link", name="系统管理", exact=True).click()
    page.get_by_role("link", name="新建用户").click()
    page.get_by_label("姓名").fill(f"新客户经理 {n}")
    page.get_by_label("用户名").fill(f"manager{n}")
    page.get_by_role("checkbox", name="客户经理").check()
    expect(page.get_by_role("checkbox", name="管理员", exact=True)).to_have_count(0)  # only admins make admins
    page.get_by_label("新密码").fill(f"manager{n}")
    page.get_by_role("button", name="创建").click()
    expect(page.get_by_text("密码不能与用户名相同。")).to_be_visible()
    page.get_by_label("新密码").fill("am-secret-42")
    page.get_by_role("button", name="创建").click()
    expect(page.get_by_text(f"已创建用户 新客户经理 {n}。")).to_be_visible()
    shot(page, "user-zh")
    created = api.ok("GET", f"/admin/users?q=manager{n}")["users"][0]
    assert created["roles"] == ["account_manager"]
    # the account manager's role has dashboards switched off: none in the navigation, 403 from the API
    am = people.page(locale="zh-CN")
    log_in(am, url, f"manager{n}", "am-secret-42")
    am.goto(url + "/apps/crm")
    expect(am.locator("body")).not_to_contain_text("仪表盘")
    resp = am.request.get(url + "/api/v1/meta/apps/crm/dashboards/sales_funnel/data")
    assert resp.status in (403, 404), resp.status


def test_changing_my_password_ends_my_other_session(people: Contexts, server: dict[str, Any]) -> None:
    from playwright.sync_api import expect

    url, api = server["url"], server["api"]
    n = len(api.ok("GET", "/admin/users?limit=1000")["users"])
    api.ok("POST", "/admin/users", {"username": f"wang{n}", "name": "王小明", "password": "wang-secret-1",
                                    "locale": "zh-CN"})
    first, second = people.page(locale="zh-CN"), people.page(locale="zh-CN", width=390)
    log_in(first, url, f"wang{n}", "wang-secret-1")
    log_in(second, url, f"wang{n}", "wang-secret-1")
    first.get_by_role("link", name="王小明").click()
    first.get_by_label("当前密码").fill("wang-secret-1")
    first.get_by_label("新密码", exact=True).fill("12345678")
    first.get_by_label("再次输入新密码").fill("12345678")
    first.get_by_role("button", name="修改密码").click()
    expect(first.get_by_text("这是最常见的密码之一，请换一个。")).to_be_visible()
    first.get_by_label("当前密码").fill("wang-secret-1")
    first.get_by_label("新密码", exact=True).fill("wang-secret-2")
    first.get_by_label("再次输入新密码").fill("wang-secret-2")
    first.get_by_role("button", name="修改密码").click()
    expect(first.get_by_text("密码已修改。你的其他会话（1 个）已结束。")).to_be_visible()
    shot(first, "account-zh")
    second.goto(url + "/account")
    second.wait_for_url(lambda u: "/login" in u)
    shot(second, "login-after-390")
    first.goto(url + "/account")
    expect(first.get_by_role("heading", name="我的账号")).to_be_visible()


def test_role_scope_built_with_the_condition_builder(people: Contexts, server: dict[str, Any]) -> None:
    from playwright.sync_api import expect

    url, api = server["url"], server["api"]
    n = len(api.ok("GET", "/admin/roles")["roles"])
    api.ok("POST", "/admin/roles", {"key": f"picky{n}", "label": f"Picky {n}", "permissions": {}})
    api.ok("POST", "/data/shop/gadgets", {"fields": {"name": f"Blue gadget {n}"}})
    api.ok("POST", "/data/shop/gadgets", {"fields": {"name": f"Red gadget {n}"}})
    page = people.page()
    log_in(page, url, "admin", PASSWORD)
    page.goto(f"{url}/admin/roles/picky{n}")
    with settled(page):
        page.get_by_label("Read · Gadgets").select_option("custom")
    box = page.get_by_role("region", name="Gadgets · Read")
    with settled(page):
        box.get_by_role("button", name="Add condition").click()
    with settled(page):
        box.get_by_label("Field").select_option("name")
    with settled(page):
        box.get_by_label("Comparison").select_option("contains")
    box.get_by_label("Value").fill(f"Blue gadget {n}")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("The role was saved.")).to_be_visible()
    expect(page.get_by_label("Read · Gadgets")).to_have_value("custom")
    page.get_by_label(re.compile("^Table")).select_option("shop.gadgets")
    with settled(page):
        page.get_by_role("button", name="Show").click()
    expect(page.locator("#role-preview")).to_contain_text(f"Blue gadget {n}")
    expect(page.locator("#role-preview")).not_to_contain_text(f"Red gadget {n}")
