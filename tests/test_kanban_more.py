"""A kanban column shows its first cards and a "show more" button that loads the next ones by cursor, until
every card of the column has been shown once (the count in the button says how many are left)."""

from __future__ import annotations

import html
import re
from typing import Any

from formwork.runtime import auth
from tests.helpers import Api
from tests.test_ui_pages import login


def test_show_more_walks_a_long_column(app: Any, admin: Api) -> None:
    admin.ok("POST", "/meta/apps", {"key": "s", "label": "Sales"})
    admin.ok("POST", "/meta/apps/s/tables", {"key": "deals", "label": "Deals", "fields": [
        {"key": "name", "label": "Name", "type": "text"},
        {"key": "stage", "label": "Stage", "type": "single_select",
         "options": {"choices": [{"value": "lead", "label": "Lead"}, {"value": "won", "label": "Won"}]}}]})
    admin.ok("POST", "/meta/apps/s/tables/deals/views", {"key": "board", "label": "Board", "type": "kanban",
                                                         "options": {"group_field": "stage"}})
    admin.ok("POST", "/data/s/deals", {"records": [{"fields": {"name": f"Deal {i:02d}", "stage": "lead"}}
                                                   for i in range(45)]})
    admin.ok("POST", "/data/s/deals", {"fields": {"name": "Won one", "stage": "won"}})
    with app.extensions["formwork"].engine.begin() as conn:
        auth.create_user(conn, {"username": "ann", "name": "Ann", "password": "correct-horse-9"}, is_admin=True)
    client, _csrf = login(app, "ann", "correct-horse-9")
    page = client.get("/apps/s/deals?view=board").get_data(as_text=True)
    lead = page.split('data-value="lead"', 1)[1].split('<section class="column"', 1)[0]
    seen = re.findall(r'class="card-title" href="/apps/s/deals/(\d+)"', lead)
    assert len(seen) == 20
    assert "Show more (25 left)" in lead
    assert "Show more" not in page.split('data-value="won"', 1)[1]
    for left in (5, None):
        url = html.unescape(re.search(r'hx-get="([^"]*/kanban/more[^"]*)"', lead).group(1))  # type: ignore[union-attr]
        lead = client.get(url, headers={"HX-Request": "true"}).get_data(as_text=True)
        seen += re.findall(r'class="card-title" href="/apps/s/deals/(\d+)"', lead)
        if left:
            assert f"Show more ({left} left)" in lead
        else:
            assert "Show more" not in lead
    assert len(seen) == 45 == len(set(seen))
    bad = client.get("/apps/s/deals/kanban/more?view=board&value=nope", headers={"HX-Request": "true"})
    assert bad.status_code == 404
