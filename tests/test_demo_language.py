"""Demo data reads naturally in one language (issue 14): installed in English, no Chinese name or text
appears in the CRM's records or its demo people; installed in Chinese, the people and products are Chinese.
The zh-CN install is what every other CRM test uses (tests/crm_support.py)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import select

from formwork import db
from tests.helpers import Api

pytestmark = pytest.mark.one_backend  # the words shown do not depend on the database

CJK = re.compile(r"[\u4e00-\u9fff]")


def _texts(app: Any, tables: tuple[str, ...]) -> list[str]:
    p = app.extensions["formwork"]
    out: list[str] = []
    with db.transaction(p.engine) as conn:
        cat = p.catalogs.get(conn)
        for key in tables:
            t = cat.app("crm").table(key)
            cols = [t.sa.c[f.column_name] for f in t.fields if f.stored and f.ftype.kind == "text"]
            for row in conn.execute(select(*cols)):
                out += [v for v in row if isinstance(v, str)]
        out += [r.name for r in conn.execute(select(db.users.c.name))]
        out += [r.name for r in conn.execute(select(db.teams.c.name))]
    return out


def test_the_demo_in_english_has_no_chinese(app: Any, admin: Api) -> None:
    admin.ok("POST", "/meta/templates/crm/install", {"demo_data": True, "language": "en"})
    texts = _texts(app, ("customers", "contacts", "products", "warehouses", "activities", "tickets", "campaigns",
                         "articles", "opportunities"))
    assert len(texts) > 500
    chinese = [t for t in texts if CJK.search(t)]
    assert not chinese, chinese[:10]
    with db.transaction(app.extensions["formwork"].engine) as conn:
        locales = {r.username: r.locale for r in conn.execute(select(db.users.c.username, db.users.c.locale))}
    assert locales["am1"] == "en" and locales["manager1"] == "en"


def test_the_demo_in_chinese_names_people_and_products_in_chinese(app: Any, admin: Api) -> None:
    admin.ok("POST", "/meta/templates/crm/install", {"demo_data": True, "language": "zh-CN"})
    with db.transaction(app.extensions["formwork"].engine) as conn:
        people = {r.username: r.name for r in conn.execute(select(db.users.c.username, db.users.c.name))}
    assert people["am1"] == "李娜" and all(CJK.search(people[u]) for u in ("manager1", "manager2", "am2", "exec1"))
    products = _texts(app, ("products",))
    assert "云端CRM企业版" in products and "Edge server" not in products
    assert admin.post("/meta/templates/crm/install", {"key": "crm2", "demo_data": True, "language": "fr"})[0] == 400
