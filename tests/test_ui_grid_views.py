"""The grid as business users expect it (through Flask's test client; the browser test is
tests/browser/test_grid_views_browser.py): no record ids shown, columns shown/hidden/reordered/resized/frozen
and the row height kept per user, rows grouped with counts and sums, personal and shared views, TSV paste
through the normal update path, and kanban covers."""

from __future__ import annotations

import json
import re
from typing import Any

from tests.helpers import Api
from tests.test_ui_pages import build, html, login

BASE = "/apps/sales/deals"
GRID = {"HX-Request": "true", "HX-Target": "grid"}


def header_keys(page: str) -> list[str]:
    thead = page.split("<thead>", 1)[1].split("</thead>", 1)[0]
    return re.findall(r'<th data-f="([a-z_]+)"', thead)


def test_no_record_ids_and_the_primary_cell_opens_the_record(app: Any, admin: Api) -> None:
    world = build(app, admin)
    c, _csrf = login(app, "boss")
    page = html(c.get(f"{BASE}?view=all"))
    assert 'class="rid"' not in page and ">#<" not in page
    rid = world["other"]["id"]
    assert f'<a class="primary-link" href="/apps/sales/deals/{rid}">Someone else&#39;s deal</a>' in page
    assert 'data-label="Amount"' in page  # phones show each value under its column's name
    assert "<script>" not in page.split("<tbody", 1)[1]  # the XSS name is escaped in the link too


def test_columns_are_kept_per_user_and_never_leak_hidden_fields(app: Any, admin: Api) -> None:
    build(app, admin)
    boss, bcsrf = login(app, "boss")
    rep, rcsrf = login(app, "rep")
    order = ["amount", "name", "stage", "close", "hot", "owner", "account", "tags", "secret"]
    form = {"csrf_token": bcsrf, "view": "all", "order": order, "show": ["amount", "name", "stage"],
            "freeze": "1", "height": "tall", "group": ""}
    page = html(boss.post(f"{BASE}/grid-layout", data=form, headers=GRID))
    assert header_keys(page) == ["amount", "name", "stage"]
    assert 'data-freeze="1"' in page and "h-tall" in page
    # kept: a fresh load shows the same, and a resize is stored quietly
    assert header_keys(html(boss.get(f"{BASE}?view=all"))) == ["amount", "name", "stage"]
    assert boss.post(f"{BASE}/grid-layout", data={"csrf_token": bcsrf, "view": "all", "quiet": "1",
                                                  "w.name": "260"}).status_code == 204
    page = html(boss.get(f"{BASE}?view=all"))
    assert 'data-f="name" class="" style="width:260px' in page and header_keys(page) == ["amount", "name", "stage"]
    # another user's grid is untouched, and the view document too
    assert header_keys(html(rep.get(f"{BASE}?view=all")))[:2] == ["name", "amount"]
    assert "fields" not in admin.ok("GET", "/meta/apps/sales/tables/deals/views/all")
    # a reader naming a field hidden from them gets nothing of it; bad values are clamped
    page = html(rep.post(f"{BASE}/grid-layout", data={"csrf_token": rcsrf, "view": "all", "order": ["secret", "stage"],
                                                      "show": ["secret", "stage"], "freeze": "99", "height": "huge",
                                                      "w.stage": "nope", "group": "secret"}, headers=GRID))
    assert "secret" not in header_keys(page) and "TOPSECRET" not in page and "Secret note" not in page
    assert header_keys(page)[0] == "stage" and 'data-freeze="3"' in page and "h-short" in page
    # reset gives the view's layout back
    page = html(boss.post(f"{BASE}/grid-layout", data={"csrf_token": bcsrf, "view": "all", "reset": "1"},
                          headers=GRID))
    assert header_keys(page)[:3] == ["name", "amount", "stage"]


def test_a_builder_saves_the_layout_into_the_shared_view(app: Any, admin: Api) -> None:
    build(app, admin)
    boss, bcsrf = login(app, "boss")
    rep, rcsrf = login(app, "rep")
    form = {"csrf_token": bcsrf, "view": "all", "order": ["stage", "name", "amount"], "show": ["stage", "name"],
            "freeze": "2", "height": "medium", "w.name": "300", "group": "stage"}
    resp = boss.post(f"{BASE}/grid-layout/to-view", data=form, headers={"HX-Request": "true"})
    assert "Saved to the view" in html(resp)
    view = admin.ok("GET", "/meta/apps/sales/tables/deals/views/all")
    assert view["fields"][:2] == ["stage", "name"] and view["group_by"] == ["stage"]
    assert view["options"]["frozen_columns"] == 2 and view["options"]["row_height"] == "medium"
    assert view["options"]["column_widths"] == {"name": 300}
    assert header_keys(html(rep.get(f"{BASE}?view=all")))[:2] == ["stage", "name"]
    # a reader may not change the shared view
    resp = rep.post(f"{BASE}/grid-layout/to-view", data={**form, "csrf_token": rcsrf}, headers={"HX-Request": "true"})
    assert resp.status_code == 403
    assert admin.ok("GET", "/meta/apps/sales/tables/deals/views/all")["options"]["row_height"] == "medium"


def test_rows_grouped_with_counts_and_sums(app: Any, admin: Api) -> None:
    build(app, admin)
    boss, csrf = login(app, "boss")
    admin.ok("POST", "/data/sales/deals", {"fields": {"name": "Third lead", "amount": 10, "stage": "lead"}})
    form = {"csrf_token": csrf, "view": "all", "group": "stage"}
    page = html(boss.post(f"{BASE}/grid-layout", data=form, headers=GRID))
    heads = re.findall(r'<tr class="group-head" data-g="([a-z]*)">(.*?)</tr>', page, re.S)
    assert [g for g, _ in heads] == sorted({g for g, _ in heads}, key=[g for g, _ in heads].index)
    by = dict(heads)
    assert "3 records" in by["lead"] and "1,244.50" in by["lead"]  # 1234.5 + 10, over every matching record
    assert "1 records" in by["won"] and "99.00" in by["won"]
    assert 'aria-expanded="true"' in by["lead"] and "Show or hide the group Lead" in by["lead"]
    assert len(re.findall(r'<tr data-id="\d+" data-v="\d+" data-g="lead"', page)) == 3
    # the picker offers only fields a grid can group by; a multi-select or a hidden field is refused
    picker = page.split('class="group-pick"', 1)[1].split("</select>", 1)[0]
    assert '<option value="stage" selected>' in picker and '"tags"' not in picker and '"owner"' in picker
    rep, rcsrf = login(app, "rep")
    page = html(rep.post(f"{BASE}/grid-layout", data={"csrf_token": rcsrf, "view": "all", "group": "secret"},
                         headers=GRID))
    assert "group-head" not in page


def test_personal_views_are_their_creators_only_and_shared_ones_everyones(app: Any, admin: Api) -> None:
    build(app, admin)
    rep, rcsrf = login(app, "rep")
    boss, bcsrf = login(app, "boss")
    q = {"view": "all", "filter.conj": "and", "filter.a.field": "stage", "filter.a.op": "eq", "filter.a.value": "lead",
         "sort": "-name"}
    html(rep.post(f"{BASE}/grid-layout", data={"csrf_token": rcsrf, "view": "all", "group": "stage",
                                               "order": ["name", "close"], "show": ["name", "close"]}, headers=GRID))
    # "share" from a reader is not honoured: the view is theirs alone
    resp = rep.post(f"{BASE}/views/save", data={**q, "csrf_token": rcsrf, "label": "My leads", "share": "1"},
                    headers={"HX-Request": "true"})
    assert resp.status_code == 204
    target = resp.headers["HX-Redirect"]
    key = target.split("view=")[1]
    assert key.startswith("my-")
    page = html(rep.get(target))
    assert "My leads" in page and "Only you see this view" in page and "Someone else" not in page
    assert header_keys(page)[:2] == ["name", "close"] and "group-head" in page
    assert [v["key"] for v in admin.ok("GET", "/meta/apps/sales/tables/deals/views")["views"]].count(key) == 0
    # exporting it gives what it shows (its filter and columns), at once or through a job
    admin.ok("PATCH", "/admin/roles/rep", {"permissions": {
        "sales.deals": {"read": "own", "create": True, "update": "own", "delete": "own", "export": True,
                        "fields": {"secret": "hidden"}}, "sales.accounts": {"read": "all"}}})
    csv = rep.get(f"{BASE}/export?view={key}&format=csv")
    assert csv.status_code == 200, csv.get_data(as_text=True)[:300]
    lines = csv.get_data(as_text=True).lstrip("\ufeff").splitlines()
    assert len(lines) > 1 and all("Someone else" not in line for line in lines)
    app.config["EXPORT_JOB_ROWS"] = 0
    try:
        job = rep.get(f"{BASE}/export?view={key}&format=csv")
        assert job.status_code == 302 and "/export/jobs/" in job.headers["Location"]
    finally:
        app.config.pop("EXPORT_JOB_ROWS", None)
    assert boss.get(f"{BASE}/export?view={key}&format=csv").status_code == 404
    # nobody else sees it, nor opens it by its key
    assert "My leads" not in html(boss.get(BASE))
    assert boss.get(f"{BASE}?view={key}").status_code == 404
    assert boss.get(f"{BASE}/rows?view={key}").status_code == 404
    # the same name again is said next to the input; no name neither
    again = html(rep.post(f"{BASE}/views/save", data={**q, "csrf_token": rcsrf, "label": "My leads"},
                          headers={"HX-Request": "true"}))
    assert "already have a view with this name" in again and 'role="alert"' in again and 'value="My leads"' in again
    assert "Give the view a name" in html(rep.post(f"{BASE}/views/save", data={**q, "csrf_token": rcsrf, "label": " "},
                                                   headers={"HX-Request": "true"}))
    # a filter a link carried in that does not work is said, and nothing is kept
    bad = html(rep.post(f"{BASE}/views/save", data={"csrf_token": rcsrf, "view": "all", "label": "Broken",
                                                    "filter": json.dumps({"field": "nope", "op": "eq", "value": 1})},
                        headers={"HX-Request": "true"}))
    assert 'role="alert"' in bad and "nope" in bad and "Broken" not in html(rep.get(BASE)).split("<main", 1)[1]
    # its layout changes go into the view itself
    html(rep.post(f"{BASE}/grid-layout", data={"csrf_token": rcsrf, "view": key, "order": ["close", "name"],
                                               "show": ["close", "name"], "group": ""}, headers=GRID))
    page = html(rep.get(target))
    assert header_keys(page) == ["close", "name"] and "group-head" not in page
    # a builder shares a view: a view document everyone who reads the table sees
    resp = boss.post(f"{BASE}/views/save", data={**q, "csrf_token": bcsrf, "label": "Open leads", "share": "1"},
                     headers={"HX-Request": "true"})
    shared = resp.headers["HX-Redirect"].split("view=")[1]
    doc = admin.ok("GET", f"/meta/apps/sales/tables/deals/views/{shared}")
    assert doc["filter"] == {"field": "stage", "op": "eq", "value": "lead"} and doc["sort"] == ["-name"]
    assert "Open leads" in html(rep.get(BASE)) and "All records" in html(rep.get(BASE))
    # deleting a personal view: only one's own
    assert boss.post(f"{BASE}/views/{key}/forget", data={"csrf_token": bcsrf}).status_code == 400
    assert rep.post(f"{BASE}/views/{key}/forget", data={"csrf_token": rcsrf}).status_code == 302
    assert "My leads" not in html(rep.get(BASE))


def test_paste_writes_through_the_update_path_a_bad_row_changes_nothing(app: Any, admin: Api) -> None:
    world = build(app, admin)
    boss, csrf = login(app, "boss")
    a, b = world["mine"]["id"], world["other"]["id"]
    data = {"csrf_token": csrf, "view": "all",
            "cell": [f"{a}:name", f"{a}:stage", f"{a}:amount", f"{b}:name", f"{b}:amount"],
            "value": ["Renamed", "Won", "2,000", "Half applied?", "lots"]}
    resp = boss.post(f"{BASE}/paste", data=data, headers={"HX-Request": "true"})
    body = json.loads(html(resp))
    assert list(body["rows"]) == [str(a)] and "Renamed" in body["rows"][str(a)]
    assert body["errors"] == {str(b): {"amount": ["“lots” is not a number."]}}
    rec_a = admin.ok("GET", f"/data/sales/deals/{a}")["fields"]
    assert rec_a["name"] == "Renamed" and rec_a["stage"] == "won" and float(rec_a["amount"]) == 2000
    assert admin.ok("GET", f"/data/sales/deals/{b}")["fields"]["name"] == "Someone else's deal"  # nothing half-done
    # an option not in the list, a required field emptied: that row's error next to its cell
    body = json.loads(html(boss.post(f"{BASE}/paste", data={"csrf_token": csrf, "cell": [f"{a}:stage", f"{b}:name"],
                                                            "value": ["Maybe", ""]})))
    assert body["errors"][str(a)] == {"stage": ["“Maybe” is not an option of this field."]}
    assert list(body["errors"][str(b)]) == ["name"] and body["rows"] == {}
    # a reader: a hidden field is refused, others' records are not theirs to change
    rep, rcsrf = login(app, "rep")
    body = json.loads(html(rep.post(f"{BASE}/paste", data={"csrf_token": rcsrf, "cell": [f"{a}:secret", f"{b}:name"],
                                                           "value": ["leak", "mine now"]})))
    assert str(a) in body["errors"] and str(b) in body["errors"] and body["rows"] == {}
    assert admin.ok("GET", f"/data/sales/deals/{b}")["fields"]["name"] == "Someone else's deal"
    assert admin.ok("GET", f"/data/sales/deals/{a}")["fields"]["secret"] == "TOPSECRET-1"
    # bad requests change nothing and are not 500s
    assert rep.post(f"{BASE}/paste", data={"csrf_token": rcsrf, "cell": ["x:name"], "value": ["y"]}).status_code == 400
    assert rep.post(f"{BASE}/paste", data={"csrf_token": rcsrf, "cell": [f"{a}:nope"],
                                           "value": ["y"]}).status_code == 400


def test_grid_pages_in_chinese(app: Any, admin: Api) -> None:
    build(app, admin)
    boss, csrf = login(app, "boss")
    assert boss.post("/locale", data={"csrf_token": csrf, "locale": "zh-CN"}).status_code in (302, 303)
    page = html(boss.get(f"{BASE}?view=all"))
    for text in ("列设置", "分组", "保存为视图", "行高", "冻结前几列", "打开记录"):
        assert text in page
    page = html(boss.post(f"{BASE}/grid-layout", data={"csrf_token": csrf, "view": "all", "group": "stage"},
                          headers=GRID))
    assert "条记录" in page and "线索" in page


PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d4944415478"
                    "9c6360000002000154a24f5d0000000049454e44ae426082")


def test_kanban_and_gallery_covers_from_an_attachment_field(app: Any, admin: Api) -> None:
    from tests.test_files import post_file

    world = build(app, admin)
    admin.ok("POST", "/meta/apps/sales/tables/deals/fields", {"key": "photo", "label": "Photo", "type": "attachment"})
    status, pic = post_file(admin, PNG, "shop.png", "image/png")
    assert status == 201
    admin.ok("PATCH", f"/data/sales/deals/{world['other']['id']}", {"fields": {"photo": [pic["token"]]}})
    admin.ok("PATCH", "/meta/apps/sales/tables/deals/views/board", {"options": {"group_field": "stage",
                                                                               "cover_field": "photo"}})
    boss, _csrf = login(app, "boss")
    board = html(boss.get(f"{BASE}?view=board"))
    src = f'/api/v1/files/{pic["token"]}?inline=1'
    assert f"<img src=\"{src}\"" in board
    assert board.count('class="card-cover"') == 1
    resp = boss.get(src)
    assert resp.status_code == 200 and resp.mimetype == "image/png" and resp.data == PNG
    resp.close()
    gallery = html(boss.get(f"{BASE}?view=cards"))
    assert f'<img src="{src}"' in gallery


BOARD = {"HX-Request": "true", "HX-Target": "board"}


def card_keys(page: str, title: str) -> list[str]:
    """The labels of the fields one card shows, in order."""
    card = page.split(f">{title}</a>", 1)[1].split("</article>", 1)[0]
    return re.findall(r'<span class="k">([^<]+)</span>', card)


def test_kanban_card_fields_and_empty_columns_per_user_or_into_the_view(app: Any, admin: Api) -> None:
    build(app, admin)
    rep, rcsrf = login(app, "rep")
    boss, bcsrf = login(app, "boss")
    page = html(rep.get(f"{BASE}?view=board"))
    # the board's own settings: a "Card fields" panel with a box per field a card may show (never a hidden one)
    assert ">Card fields</summary>" in page and 'hx-post="/apps/sales/deals/board-settings"' in page
    assert 'value="secret"' not in page.split('id="board-settings"', 1)[1].split("</form>", 1)[0]
    assert "Save to the view for everyone" not in page  # not a builder
    assert card_keys(page, "Rita&#39;s deal") == ["Amount", "Tags", "Close date", "Hot", "Owner", "Account"]
    assert 'data-value="won"' in page
    # the rep picks two fields in their order and hides empty columns (the rep sees no won deal): kept for
    # them only; a field hidden from them is ignored
    form = {"csrf_token": rcsrf, "view": "board", "order": ["close", "secret", "amount", "tags"],
            "show": ["close", "secret", "amount"], "hide_empty": "1"}
    page = html(rep.post(f"{BASE}/board-settings", data=form, headers=BOARD))
    assert card_keys(page, "Rita&#39;s deal") == ["Close date", "Amount"]
    assert 'data-value="won"' not in page and "TOPSECRET" not in page
    assert "These settings are kept for you only." in page and "<details class=\"col-pop board-pop\" open>" in page
    page = html(rep.get(f"{BASE}?view=board"))
    assert card_keys(page, "Rita&#39;s deal") == ["Close date", "Amount"] and 'data-value="won"' not in page
    other = html(boss.get(f"{BASE}?view=board"))
    assert card_keys(other, "Rita&#39;s deal")[:2] == ["Amount", "Tags"] and 'data-value="won"' in other
    view = admin.ok("GET", "/meta/apps/sales/tables/deals/views/board")
    assert "fields" not in view and "hide_empty" not in view["options"]
    # only a builder saves into the shared view
    assert rep.post(f"{BASE}/board-settings", data={**form, "to_view": "1"}, headers=BOARD).status_code == 403
    assert "fields" not in admin.ok("GET", "/meta/apps/sales/tables/deals/views/board")
    # back to the view's settings
    page = html(rep.post(f"{BASE}/board-settings", data={**form, "reset": "1"}, headers=BOARD))
    assert card_keys(page, "Rita&#39;s deal")[:2] == ["Amount", "Tags"] and 'data-value="won"' in page
    # a builder saves theirs into the view: everyone without their own choice sees it
    page = html(boss.post(f"{BASE}/board-settings", headers=BOARD, data={
        "csrf_token": bcsrf, "view": "board", "order": ["hot", "amount", "name"], "show": ["hot", "amount"],
        "hide_empty": "1", "to_view": "1"}))
    assert "Saved to the view." in page
    view = admin.ok("GET", "/meta/apps/sales/tables/deals/views/board")
    assert view["fields"] == ["hot", "amount"] and view["options"] == {"group_field": "stage", "hide_empty": True}
    page = html(rep.get(f"{BASE}?view=board"))
    assert card_keys(page, "Rita&#39;s deal") == ["Hot", "Amount"] and 'data-value="won"' not in page
    # bad input changes nothing: a grid view is no board
    assert rep.post(f"{BASE}/board-settings", data={**form, "view": "all"}, headers=BOARD).status_code == 400
    rep.post("/locale", data={"locale": "zh-CN", "next": "/", "csrf_token": rcsrf})
    page = html(rep.get(f"{BASE}?view=board"))
    assert ">卡片字段</summary>" in page and "隐藏空列" in page
