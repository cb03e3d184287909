"""The bundled CRM installed with demo data: structure and data consistency, what each role may do,
every dashboard widget against an independent computation over direct SQL, export → import, bulk demo."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from formwork import db
from formwork.errors import BadRequest
from formwork.metadata.portable import load_template
from formwork.runtime.demo import generate_demo
from tests.crm_support import Crm, installed_crm
from tests.helpers import db_snapshot


@pytest.fixture(scope="module")
def crm(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Crm]:
    yield from installed_crm(database_url, tmp_path_factory)


def rows(crm: Crm, table: str) -> list[dict[str, Any]]:
    """Every live row of a CRM table by field key, straight from its physical table (no platform reader)."""
    def read(conn: Any, cat: Any, app: Any) -> list[dict[str, Any]]:
        t = app.table(table)
        stored = [f for f in t.fields if f.stored]
        out = []
        for r in conn.execute(select(t.sa).where(t.sa.c.deleted_at.is_(None)).order_by(t.sa.c.id)):
            m = r._mapping
            rec = {f.key: Decimal(str(m[f.column_name])) if isinstance(m[f.column_name], float)
                   else m[f.column_name] for f in stored}
            rec.update(id=m["id"], created_at=m["created_at"], created_by=m["created_by"])
            out.append(rec)
        return out
    return crm.sql(read)  # type: ignore[no-any-return]


def test_install_gives_a_working_crm_with_consistent_demo_data(crm: Crm) -> None:
    doc = load_template("crm")
    app = crm.admin.ok("GET", "/meta/apps/crm")
    assert [t["key"] for t in app["tables"]] == [t["key"] for t in doc["tables"]]
    assert len(app["automations"]) == len(doc["automations"]) >= 10
    assert len(app["dashboards"]) == len(doc["dashboards"]) >= 6
    assert {"am1", "am2", "am3", "am4", "manager1", "manager2", "exec1", "sysadmin"} <= set(crm.users)
    counts = {t["key"]: len(rows(crm, t["key"])) for t in doc["tables"]}
    assert all(n >= 10 for k, n in counts.items() if k != "warehouses") and counts["warehouses"] >= 3, counts
    assert counts["customers"] == 150 and counts["order_lines"] > 300
    customers = {r["id"]: r for r in rows(crm, "customers")}
    contacts = {r["id"]: r for r in rows(crm, "contacts")}
    products = {r["id"]: r for r in rows(crm, "products")}
    for o in rows(crm, "orders"):
        assert o["order_date"] >= customers[o["customer"]]["created_at"].date()
    for a in rows(crm, "activities"):
        assert contacts[a["contact"]]["customer"] == a["customer"]
        assert a["date"] >= customers[a["customer"]]["created_at"]
    for line in rows(crm, "order_lines"):
        assert line["product"] in products and line["unit_price"] <= products[line["product"]]["price"]
    for o in rows(crm, "opportunities"):
        if o["stage"] in ("proposal", "negotiation", "won"):
            assert o["amount"] is not None and o["expected_close"] is not None
        assert (o["stage"] == "lost") == (o["lost_reason"] is not None)
    for tk in rows(crm, "tickets"):
        assert (tk["satisfaction"] is not None) == (tk["status"] in ("feedback", "archived"))
        assert tk["sla_due"] > tk["created_at"]
    churned = {c for c, r in customers.items() if r["status"] == "churned"}
    assert churned and churned <= {r["customer"] for r in rows(crm, "lost_customers")}
    members = rows(crm, "campaign_members")
    assert {m["status"] for m in members} == {"invited", "responded", "converted"}
    owners = {r["owner"] for r in customers.values()}
    assert None in owners and {crm.users[f"am{i}"] for i in range(1, 5)} <= owners
    # the demo rows are history: they wake no automation
    with crm.app.extensions["formwork"].engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(db.outbox)
                            .where(db.outbox.c.status == "pending")).scalar() == 0


def test_demo_is_reproducible_and_bulk_mode_keeps_counters_and_links(crm: Crm) -> None:
    before_orders = len(rows(crm, "orders"))
    top = crm.admin.records("crm", "orders", sort="-number", limit=1)[0]["fields"]["number"]
    out = crm.sql(lambda conn, cat, app: generate_demo(conn, cat, "crm", "crm", scale=40, bulk=True, seed=7))
    again = crm.sql(lambda conn, cat, app: generate_demo(conn, cat, "crm", "crm", scale=40, bulk=True, seed=7))
    assert out["mode"] == "bulk" and out["tables"] == again["tables"] and out["rows_per_second"] > 0
    assert len(rows(crm, "orders")) == before_orders + 2 * out["tables"]["orders"]
    numbers = [r["fields"]["number"] for r in crm.admin.records("crm", "orders", sort="-number", limit=3)]
    assert numbers[0] == f"SO-{int(top[3:]) + 2 * out['tables']['orders']:06d}"
    # the sequences moved past the explicit ids: a normal insert still works
    c = crm.admin.ok("POST", "/data/crm/customers", {"fields": {"name": "Bulk check 批量"}})
    assert c["id"] == max(r["id"] for r in rows(crm, "customers"))
    order = crm.admin.records("crm", "orders", sort="-number", limit=1)[0]
    assert order["fields"]["customer"]["display"] and order["fields"]["order_total"] > 0
    for bad in ({"size": "huge"}, {"scale": 0}):
        with pytest.raises(BadRequest):
            crm.sql(lambda conn, cat, app, bad=bad: generate_demo(conn, cat, "crm", "crm", **bad))
    with pytest.raises(BadRequest):
        crm.sql(lambda conn, cat, app: generate_demo(conn, cat, "crm", "no_such_template"))


def test_a_second_demo_run_through_the_services_reuses_the_reference_data(crm: Crm) -> None:
    products = len(rows(crm, "products"))
    out = crm.sql(lambda conn, cat, app: generate_demo(conn, cat, "crm", "crm", scale=3, bulk=False, seed=11))
    assert out["mode"] == "records" and out["tables"]["customers"] == 3
    assert out["tables"].get("products", 0) == 0 and len(rows(crm, "products")) == products


# --- permissions ---------------------------------------------------------------------------------------
def _ids(records: list[dict[str, Any]]) -> set[int]:
    return {r["id"] for r in records}


def test_account_manager_sees_own_customers_and_the_pool(crm: Crm) -> None:
    am1, am3 = crm.users["am1"], crm.users["am3"]
    api = crm.api("am1")
    custs = rows(crm, "customers")
    seen = _ids(api.records("crm", "customers", limit=1000))
    assert seen == {r["id"] for r in custs if r["owner"] in (am1, None)}
    other = next(r["id"] for r in custs if r["owner"] == am3)
    pooled = next(r["id"] for r in custs if r["owner"] is None)
    before = db_snapshot(crm.app)
    assert api.get(f"/data/crm/customers/{other}")[0] == 404
    assert api.patch(f"/data/crm/customers/{other}", {"fields": {"level": "A"}})[0] == 404
    assert api.patch(f"/data/crm/customers/{pooled}", {"fields": {"level": "A"}})[0] == 403  # claim it first
    assert api.post("/data/crm/products", {"fields": {"name": "x"}})[0] == 403
    assert api.get("/data/crm/customers/pool")[0] == 200
    assert db_snapshot(crm.app) == before
    mine = api.ok("POST", "/data/crm/customers", {"fields": {"name": "客户经理新建客户", "owner": am1, "level": "B"}})
    assert api.ok("PATCH", f"/data/crm/customers/{mine['id']}", {"fields": {"level": "A"}})["fields"]["level"] == "A"
    assert api.delete(f"/data/crm/customers/{mine['id']}")[0] == 403
    status, err = api.patch(f"/data/crm/customers/{mine['id']}", {"fields": {"credit_limit": 1}})
    assert status == 422 and "credit_limit" in err["error"]["details"]
    opps = rows(crm, "opportunities")
    assert _ids(api.records("crm", "opportunities", limit=1000)) == {o["id"] for o in opps if o["owner"] == am1}
    opp = api.ok("POST", "/data/crm/opportunities", {"fields": {"name": "新机会", "owner": am1, "stage": "lead"}})
    status, err = api.patch(f"/data/crm/opportunities/{opp['id']}", {"fields": {"stage": "proposal"}})
    assert status == 422 and "stage" in err["error"]["details"]  # one step at a time
    api.ok("PATCH", f"/data/crm/opportunities/{opp['id']}", {"fields": {"stage": "qualified"}})
    status, err = api.patch(f"/data/crm/opportunities/{opp['id']}", {"fields": {"stage": "proposal"}})
    assert status == 422 and "stage_gate" in err["error"]["details"]  # amount and close date first
    api.ok("PATCH", f"/data/crm/opportunities/{opp['id']}",
           {"fields": {"stage": "proposal", "amount": 50000, "expected_close": "2027-01-15"}})


def test_sales_manager_sees_the_team_and_assigns(crm: Crm) -> None:
    team = {crm.users[u] for u in ("manager1", "am1", "am2")}
    api = crm.api("manager1")
    custs = rows(crm, "customers")
    assert _ids(api.records("crm", "customers", limit=1000)) == {r["id"] for r in custs
                                                                 if r["owner"] in team or r["owner"] is None}
    south = next(r["id"] for r in custs if r["owner"] == crm.users["am4"])
    assert api.get(f"/data/crm/customers/{south}")[0] == 404
    east = next(r for r in custs if r["owner"] == crm.users["am1"])
    moved = api.ok("PATCH", f"/data/crm/customers/{east['id']}", {"fields": {"owner": crm.users["am2"]}})
    assert moved["fields"]["owner"]["id"] == crm.users["am2"]
    assert len(api.records("crm", "tickets", limit=1000)) == len(rows(crm, "tickets"))
    assert api.ok("GET", "/meta/apps/crm/dashboards/sales_funnel/data")["widgets"][0]["groups"]
    # the account manager role switches dashboards off (view_dashboards: false): none listed, none computed
    rep = crm.api("am1")
    assert rep.get("/meta/apps/crm/dashboards/sales_funnel/data")[0] == 403
    assert rep.ok("GET", "/meta/apps/crm")["dashboards"] == []


def test_executive_reads_everything_and_changes_nothing(crm: Crm) -> None:
    api = crm.api("exec1")
    for table in ("customers", "orders", "tickets", "lost_customers"):
        assert len(api.records("crm", table, limit=1000)) == len(rows(crm, table))
    before = db_snapshot(crm.app)
    assert api.post("/data/crm/customers", {"fields": {"name": "no"}})[0] == 403
    cid = rows(crm, "customers")[0]["id"]
    assert api.patch(f"/data/crm/customers/{cid}", {"fields": {"level": "C"}})[0] == 403
    assert api.post("/admin/users", {"username": "x1", "password": "pass-word-1"})[0] == 403
    assert api.post("/meta/apps", {"key": "nope", "label": "no"})[0] == 403
    assert db_snapshot(crm.app) == before
    for d in load_template("crm")["dashboards"]:
        data = api.ok("GET", f"/meta/apps/crm/dashboards/{d['key']}/data")
        assert all("error" not in w for w in data["widgets"]), data


def test_system_admin_manages_users_and_apps(crm: Crm) -> None:
    api = crm.api("sysadmin")
    user = api.ok("POST", "/admin/users", {"username": "am5", "name": "新客户经理", "password": "pass-word-1",
                                           "roles": ["system_admin"]})
    assert user["username"] == "am5"
    assert api.ok("POST", "/meta/apps", {"key": "scratch", "label": "Scratch"})["key"] == "scratch"
    assert len(api.records("crm", "customers", limit=1000)) == len(rows(crm, "customers"))
    assert crm.api("am1").post("/admin/users", {"username": "x2", "password": "pass-word-1"})[0] == 403


# --- dashboards against an independent computation ------------------------------------------------------
PROB = {"lead": 10, "qualified": 25, "proposal": 50, "negotiation": 75, "won": 100, "lost": 0}


def _computed(crm: Crm) -> dict[str, list[dict[str, Any]]]:
    """Raw rows plus the template's computed fields, computed here in Python from the same SQL rows."""
    data = {t: rows(crm, t) for t in ("customers", "orders", "order_lines", "opportunities", "tickets",
                                      "lost_customers", "campaigns", "campaign_members")}
    totals: dict[int, Decimal] = {}
    for line in data["order_lines"]:
        if line["quantity"] is not None and line["unit_price"] is not None:
            totals[line["order"]] = totals.get(line["order"], Decimal(0)) + line["quantity"] * line["unit_price"]
    for o in data["orders"]:
        o["order_total"] = totals.get(o["id"], Decimal(0))
    today = dt.datetime.now(dt.UTC).date()
    for o in data["opportunities"]:
        p = PROB[o["stage"]]
        o["weighted_amount"] = None if o["amount"] is None else round(o["amount"] * p / 100, 2)
        o["days_in_stage"] = None if o["stage_changed_at"] is None else \
            int((dt.datetime.combine(today, dt.time()) - o["stage_changed_at"]).total_seconds() / 86400)
    for t in data["tickets"]:
        t["created_time"] = t["created_at"]
    members = data["campaign_members"]
    for c in data["campaigns"]:
        ms = [m for m in members if m["campaign"] == c["id"]]
        c["leads"] = len(ms)
        c["conversions"] = len([m for m in ms if m["status"] == "converted"])
        c["won_revenue"] = sum((o["amount"] for o in data["opportunities"]  # a rollup: won opportunities
                                if o.get("campaign") == c["id"] and o["stage"] == "won" and o["amount"] is not None),
                               Decimal(0))
        c["roi"] = None if not c["cost"] else round((c["won_revenue"] - c["cost"]) * 100 / c["cost"], 1)
    return data


def _match(row: dict[str, Any], tree: Any) -> bool:
    if not tree:
        return True
    if "and" in tree:
        return all(_match(row, c) for c in tree["and"])
    if "or" in tree:
        return any(_match(row, c) for c in tree["or"])
    v, op, want = row.get(tree["field"]), tree["op"], tree.get("value")
    if isinstance(want, dict) and want.get("var") == "now":
        want = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    if op == "is_empty":
        return v is None
    if op == "eq":
        return bool(v == want) if not isinstance(want, bool) else bool(v or False) == want
    if op == "ne":
        return v != want
    if op == "in":
        return v in want
    if op == "not_in":
        return v not in want
    if op == "lt":
        return v is not None and v < want
    raise AssertionError(f"the test's evaluator lacks {op}")


def _key(row: dict[str, Any], spec: str) -> Any:
    name, _, bucket = spec.partition(":")
    v = row.get(name)
    if bucket and v is not None:
        return v.strftime({"month": "%Y-%m", "year": "%Y", "day": "%Y-%m-%d"}[bucket])
    return v


def _metric(items: list[dict[str, Any]], spec: str) -> Any:
    if spec == "count":
        return len(items)
    fn, _, name = spec.partition(":")
    values = [r[name] for r in items if r.get(name) is not None]
    if fn == "sum":
        return sum(values, Decimal(0))
    if fn == "avg":
        return sum(Decimal(str(v)) for v in values) / len(values) if values else None
    if fn == "count_distinct":
        return len(set(values))
    raise AssertionError(fn)


def _close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(Decimal(str(a)) - Decimal(str(b))) <= Decimal("0.01")


def _api_key(v: Any) -> Any:
    return v["id"] if isinstance(v, dict) else v


def test_every_dashboard_widget_matches_direct_sql(crm: Crm) -> None:
    data = _computed(crm)
    checked = 0
    for d in load_template("crm")["dashboards"]:
        result = {w["key"]: w for w in crm.admin.ok("GET", f"/meta/apps/crm/dashboards/{d['key']}/data")["widgets"]}
        for w in d["widgets"]:
            got = result[w["key"]]
            assert "error" not in got, got
            items = [r for r in data[w["table"]] if _match(r, w.get("filter"))]
            metrics = w.get("metrics") or ["count"]
            where = f"{d['key']}.{w['key']}"
            if w.get("ratio"):
                num = _metric([r for r in items if _match(r, w["ratio"]["numerator"])], metrics[0])
                den = _metric([r for r in items if _match(r, w["ratio"]["denominator"])], metrics[0])
                assert got["numerator"] == num and got["denominator"] == den, where
                assert _close(got["value"], Decimal(num) / Decimal(den)), where
            elif w["type"] in ("kpi", "gauge"):
                assert _close(got["value"], _metric(items, metrics[0])), (where, got["value"])
                if w.get("target"):  # no period chosen: the goal is every target's amount
                    goal = sum(Decimal(str(r[w["target"]["amount"]])) for r in rows(crm, w["target"]["table"]))
                    assert _close(got["goal"], goal), (where, got["goal"], goal)
            else:
                groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
                for r in items:
                    groups.setdefault(tuple(_key(r, g) for g in w["group_by"]), []).append(r)
                expected = {k: {m: _metric(v, m) for m in metrics} for k, v in groups.items()}
                api = {tuple(_api_key(g["key"][s.partition(":")[0]]) for s in w["group_by"]): g for g in got["groups"]}
                if w.get("limit") and len(expected) > w["limit"]:
                    assert len(api) == w["limit"], where
                    order = w["sort"].lstrip("-")
                    cut = min(Decimal(str(g[order])) for g in api.values())
                    assert all(Decimal(str(v[order])) <= cut + Decimal("0.01") for k, v in expected.items()
                               if k not in api), where
                else:
                    assert set(api) == set(expected), (where, sorted(map(str, api)), sorted(map(str, expected)))
                for k, g in api.items():
                    for m in metrics:
                        assert _close(g[m], expected[k][m]), (where, k, m, g[m], expected[k][m])
                assert len(api) > 1 or w["type"] == "table", where  # meaningful: more than one group
            checked += 1
    assert checked == sum(len(d["widgets"]) for d in load_template("crm")["dashboards"])


# --- export / import --------------------------------------------------------------------------------------
def test_export_import_round_trips(crm: Crm) -> None:
    exported = crm.admin.ok("GET", "/meta/apps/crm/export")
    crm.admin.ok("POST", "/meta/apps/import?key=crm_copy", exported)
    again = crm.admin.ok("GET", "/meta/apps/crm_copy/export")
    assert again["app"].pop("key") == "crm_copy" and exported["app"].pop("key") == "crm"
    assert json.dumps(again, sort_keys=True) == json.dumps(exported, sort_keys=True)
    template = load_template("crm")
    assert [a["key"] for a in exported["automations"]] == [a["key"] for a in template["automations"]]
    assert exported["tables"][0]["pool"] == template["tables"][0]["pool"]
