"""Global search and recently viewed records through Flask's test client (SQLite and PostgreSQL)."""

from __future__ import annotations

from typing import Any

from tests.helpers import Api
from tests.test_ui_pages import PASSWORD, XSS, build, html, login

HX = {"HX-Request": "true"}


def test_search_groups_by_table_with_row_and_field_permissions(app: Any, admin: Api) -> None:
    w = build(app, admin)
    boss, _ = login(app, "boss", PASSWORD)
    page = html(boss.get("/search?q=deal"))
    assert "<title>Results for “deal” · Formwork</title>" in page
    assert "Rita&#39;s deal" in page and "Someone else&#39;s deal" in page
    assert f'href="/apps/sales/deals/{w["mine"]["id"]}"' in page
    assert ">Deals <span" in page  # grouped under the table's name
    rep, _ = login(app, "rep", PASSWORD)
    page = html(rep.get("/search?q=deal", headers=HX))
    assert "Rita&#39;s deal" in page and "Someone else" not in page  # rows outside the rep's scope
    assert "Rita" not in html(rep.get("/search?q=TOPSECRET-1", headers=HX))  # a hidden field never matches
    assert "Nothing found" in html(rep.get("/search?q=TOPSECRET-1", headers=HX))
    assert "Rita&#39;s deal" in html(boss.get("/search?q=TOPSECRET-1", headers=HX))
    page = html(boss.get("/search?q=script", headers=HX))
    assert XSS not in page and "&lt;script&gt;" in page
    assert "Acme" in html(rep.get("/search?q=acm", headers=HX))


def test_recently_viewed_records(app: Any, admin: Api) -> None:
    w = build(app, admin)
    boss, csrf = login(app, "boss", PASSWORD)
    page = html(boss.get(f"/apps/sales/deals/{w['mine']['id']}"))
    assert 'hx-post="/search/recent"' in page
    for rid in (w["other"]["id"], w["mine"]["id"]):
        resp = boss.post("/search/recent", data={"app": "sales", "table": "deals", "rid": rid},
                         headers={"X-CSRF-Token": csrf, **HX})
        assert resp.status_code == 204
    page = html(boss.get("/search?q=", headers=HX))
    assert "Recently viewed" in page
    assert page.index("Rita&#39;s deal") < page.index("Someone else&#39;s deal")  # newest first
    assert boss.post("/search/recent", data={"app": "sales"}, headers={"X-CSRF-Token": csrf, **HX}).status_code \
        == 400
    # kept on the server for the person, not the browser: another device of the same user sees them, another
    # user sees nothing of the first one's
    phone, _ = login(app, "boss", PASSWORD)
    assert "Rita&#39;s deal" in html(phone.get("/search?q=", headers=HX))
    rep, csrf2 = login(app, "rep", PASSWORD)
    assert "Recently viewed" not in html(rep.get("/search?q=", headers=HX))
    # a record the reader may not see is left out even when the cookie names it
    rep.post("/search/recent", data={"app": "sales", "table": "deals", "rid": w["other"]["id"]},
             headers={"X-CSRF-Token": csrf2, **HX})
    assert "Someone else" not in html(rep.get("/search?q=", headers=HX))


def test_search_box_on_every_page_in_both_languages(app: Any, admin: Api) -> None:
    build(app, admin)
    boss, csrf = login(app, "boss", PASSWORD)
    page = html(boss.get("/"))
    assert 'role="search"' in page and 'aria-label="Search everything"' in page
    boss.post("/locale", data={"csrf_token": csrf, "locale": "zh-CN"})
    page = html(boss.get("/search?q=deal"))
    assert 'aria-label="全局搜索"' in page and "“deal”的搜索结果" in page
    assert "没有找到" in html(boss.get("/search?q=zzzz", headers=HX))
