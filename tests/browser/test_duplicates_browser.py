"""Duplicates in a real browser (issue 16): a rep creating a customer that already exists is warned with a
link to it, creates it anyway, then merges the two on the merge page; the contact of the merged record
moves to the one kept."""

from __future__ import annotations

import re
import uuid
from typing import Any

from tests.browser.test_crm_daily_browser import crm_server, lang, open_as  # noqa: F401 - fixtures
from tests.browser.test_ui_browser import pytestmark  # noqa: F401 - same skip rules

WORDS = {
    "en": {"name": "Name", "create": "Create", "anyway": "Create anyway", "warning": "This may already exist",
           "merge": "Merge…", "compare": "Compare and merge", "do_merge": "Merge records", "keep": "Keep this one",
           "merged": "The records were merged."},
    "zh-CN": {"name": "客户名称", "create": "创建", "anyway": "仍然创建", "warning": "可能已存在相同记录",
              "merge": "合并…", "compare": "对比并合并", "do_merge": "合并记录", "keep": "保留这一条",
              "merged": "记录已合并。"},
}


def test_a_duplicate_customer_is_flagged_then_merged(open_as: Any, crm_server: dict[str, Any],  # noqa: F811
                                                     lang: str) -> None:  # noqa: F811
    from playwright.sync_api import expect

    w, url, api = WORDS[lang], crm_server["url"], crm_server["api"]
    tag = uuid.uuid4().hex[:6]
    first = f"重复测试{tag}科技有限公司"
    am1 = crm_server["users"]["am1"]
    old = api.ok("POST", "/data/crm/customers", {"fields": {"name": first, "owner": am1}})
    page = open_as("am1")
    page.goto(url + "/apps/crm/customers/new")
    page.get_by_label(re.compile("^" + re.escape(w["name"]) + r"\*?$")).fill(f"  重复测试{tag.upper()}科技 ")
    page.get_by_role("button", name=w["create"], exact=True).click()
    warning = page.get_by_role("alert").filter(has_text=w["warning"])
    expect(warning).to_be_visible()
    expect(warning.get_by_role("link", name=first)).to_have_attribute("href", re.compile(f"/customers/{old['id']}$"))
    assert len(api.records("crm", "customers", search=f"重复测试{tag}")) == 1  # nothing was created yet
    page.get_by_role("button", name=w["anyway"], exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"重复测试{tag.upper()}科技")
    new_id = int(page.url.rstrip("/").rsplit("/", 1)[-1])
    contact = api.ok("POST", "/data/crm/contacts", {"fields": {"name": f"联系人{tag}", "customer": new_id,
                                                              "owner": am1}, "allow_duplicates": True})
    page.get_by_role("link", name=w["merge"], exact=True).click()
    candidate = page.get_by_role("listitem").filter(has=page.get_by_role("link", name=first))
    candidate.get_by_role("link", name=w["compare"], exact=True).click()
    page.get_by_role("link", name=w["keep"], exact=True).click()  # keep the older record (the other column)
    expect(page.get_by_role("link", name=w["keep"], exact=True)).to_have_attribute("href", re.compile("keep=a$"))
    page.get_by_role("button", name=w["do_merge"], exact=True).click()
    expect(page.get_by_role("status")).to_have_text(w["merged"])
    expect(page.get_by_role("heading", level=1)).to_have_text(first)
    assert f"/customers/{old['id']}?merged=1" in page.url
    assert api.get(f"/data/crm/customers/{new_id}")[0] == 404
    assert api.ok("GET", f"/data/crm/contacts/{contact['id']}")["fields"]["customer"]["id"] == old["id"]
