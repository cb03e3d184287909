"""The benchmark dataset (fixed seed): companies (10k) and deals with every common field type.

Definitions go through the MetadataService like a user's would; rows are bulk-loaded straight into the
physical tables (loading is set-up, not a measured workload).
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.engine import Engine

from formwork import db
from formwork.metadata.service import Actor, MetadataService
from formwork.runtime import auth

STAGES = ["lead", "qualified", "proposal", "negotiation", "won"]
TAGS = ["vip", "new", "renewal", "partner", "urgent", "upsell"]
INDUSTRIES = ["manufacturing", "retail", "finance", "education", "health", "software", "energy"]
WORDS = ["华为", "阿里", "腾讯", "Acme", "Globex", "Initech", "Umbrella", "Stark", "Wayne", "小米", "京东", "百度",
         "Hooli", "Vandelay", "Soylent", "Tyrell", "字节", "美团", "网易", "Cyberdyne"]


def define(engine: Engine) -> dict[str, Any]:
    """Create app 'bench' with tables companies and deals; return the admin's token and user id."""
    with db.transaction(engine) as conn:
        uid = auth.create_user(conn, {"username": "bench", "name": "Bench Admin", "password": "bench-password"},
                               is_admin=True)
        others = [auth.create_user(conn, {"username": f"rep{i}", "name": f"Rep {i}", "password": "bench-password"})
                  for i in range(8)]
        token = auth.create_token(conn, uid, "bench", None)["token"]
        svc = MetadataService(conn, Actor(uid, True))
        svc.create_app({"key": "bench", "label": "Bench"})
        svc.create_table("bench", {"key": "companies", "label": "Companies", "fields": [
            {"key": "name", "label": "Name", "type": "text"},
            {"key": "industry", "label": "Industry", "type": "text"},
            {"key": "employees", "label": "Employees", "type": "number"},
        ]})
        svc.create_table("bench", {"key": "deals", "label": "Deals", "fields": [
            {"key": "title", "label": "Title", "type": "text"},
            {"key": "email", "label": "Email", "type": "email"},
            {"key": "notes", "label": "Notes", "type": "long_text"},
            {"key": "stage", "label": "Stage", "type": "single_select",
             "options": {"choices": [{"value": s} for s in STAGES]}},
            {"key": "tags", "label": "Tags", "type": "multi_select",
             "options": {"choices": [{"value": s} for s in TAGS]}},
            {"key": "quantity", "label": "Quantity", "type": "number"},
            {"key": "amount", "label": "Amount", "type": "currency", "options": {"currency": "CNY"}},
            {"key": "close_date", "label": "Close date", "type": "date"},
            {"key": "touched_at", "label": "Touched", "type": "datetime"},
            {"key": "closed", "label": "Closed", "type": "checkbox"},
            {"key": "owner", "label": "Owner", "type": "user"},
            {"key": "company", "label": "Company", "type": "link", "options": {"table": "companies",
                                                                               "reverse_key": "deals"}},
        ]})
        svc.create_field("bench", "deals", {"key": "industry", "label": "Industry", "type": "lookup",
                                            "options": {"link": "company", "field": "industry"}})
        svc.create_field("bench", "companies", {"key": "pipeline", "label": "Pipeline", "type": "rollup",
                                                "options": {"link": "deals", "field": "amount", "function": "sum"}})
        svc.create_field("bench", "deals", {"key": "company_size", "label": "Company size", "type": "rollup",
                                            "options": {"link": "company", "field": "employees",
                                                        "function": "max"}})
        svc.create_doc("view", "bench", {"key": "open_by_amount", "label": "Open by amount", "type": "grid",
                                         "filter": {"field": "stage", "op": "in",
                                                    "value": ["proposal", "negotiation"]},
                                         "sort": ["-amount"]}, table_key="deals")
    return {"token": token, "user_id": uid, "owners": [uid, *others]}


def load(engine: Engine, deals: int, companies: int, owners: list[int], seed: int = 7,
         batch: int = 5000) -> None:
    """Bulk-load rows with a fixed seed, straight into the physical tables."""
    from formwork.metadata.catalog import Catalog

    rnd = random.Random(seed)
    with engine.connect() as conn:
        cat = Catalog.load(conn)
    comp = cat.table("bench", "companies")
    deal = cat.table("bench", "deals")
    cf = {f.key: f.column_name for f in comp.fields if f.stored}
    df = {f.key: f.column_name for f in deal.fields if f.stored}
    now = dt.datetime(2026, 11, 1, 9, 0, 0)
    with db.transaction(engine) as conn:
        rows = []
        for i in range(1, companies + 1):
            rows.append({"id": i, "version": 1, "created_at": now, "updated_at": now, "created_by": owners[0],
                         "updated_by": owners[0], cf["name"]: f"{rnd.choice(WORDS)} {i}",
                         cf["industry"]: rnd.choice(INDUSTRIES), cf["employees"]: rnd.randint(5, 50000)})
            if len(rows) >= batch:
                conn.execute(insert(comp.sa), rows)
                rows = []
        if rows:
            conn.execute(insert(comp.sa), rows)
    base = dt.date(2025, 1, 1)
    done = 0
    while done < deals:
        n = min(batch, deals - done)
        rows = []
        for j in range(done + 1, done + n + 1):
            rows.append({
                "id": j, "version": 1, "created_at": now, "updated_at": now, "created_by": owners[0],
                "updated_by": owners[0],
                df["title"]: f"{rnd.choice(WORDS)} deal {j}",
                df["email"]: f"buyer{j}@example.com",
                df["notes"]: "follow up next week" if j % 3 else "客户要求报价",
                df["stage"]: STAGES[rnd.randrange(5)],
                df["tags"]: rnd.sample(TAGS, rnd.randint(0, 2)) or None,
                df["quantity"]: rnd.randint(1, 500),
                df["amount"]: round(rnd.uniform(100, 1_000_000), 2),
                df["close_date"]: base + dt.timedelta(days=rnd.randrange(730)),
                df["touched_at"]: now - dt.timedelta(minutes=rnd.randrange(500_000)),
                df["closed"]: rnd.random() < 0.3,
                df["owner"]: rnd.choice(owners),
                df["company"]: rnd.randint(1, companies),
            })
        with db.transaction(engine) as conn:
            conn.execute(insert(deal.sa), rows)
        done += n
    # statistics must be committed (a rolled-back ANALYZE leaves the planner guessing: full scans + sorts)
    if engine.dialect.name == "postgresql":
        with engine.begin() as c:
            for t in (comp.sa, deal.sa):
                top = c.execute(select(func.max(t.c.id))).scalar()
                c.execute(select(func.setval(func.pg_get_serial_sequence(t.name, "id"), top)))
                c.exec_driver_sql("ANALYZE " + c.dialect.identifier_preparer.quote(t.name))
    else:
        with engine.begin() as c:
            c.exec_driver_sql("ANALYZE")
