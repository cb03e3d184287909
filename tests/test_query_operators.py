"""Every filter operator of every field type, against a small fixed dataset, through the HTTP API.

Each case asserts the exact set of matching records, so a wrong operator (or one that silently
matches everything) fails. A coverage check proves that no (field type, operator) pair is left out.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import insert

from formwork import db
from formwork.metadata.fieldtypes.base import OPERATORS_BY_KIND
from tests.helpers import Api

ALL_OPS = ("eq", "ne", "lt", "lte", "gt", "gte", "between", "in", "not_in", "contains", "not_contains",
           "starts_with", "ends_with", "is_empty", "is_not_empty", "has_any", "has_all", "has_none")
NAMES = ("alpha", "Beta", "gamma", "北京客户", "empty")
A, B, G, Z, E = NAMES


def make_user(app: Any, username: str, timezone: str = "UTC") -> tuple[int, Api]:
    from formwork.runtime import auth

    with db.transaction(app.extensions["formwork"].engine) as conn:
        uid = auth.create_user(conn, {"username": username, "name": username.title(), "password": "pass-word-99",
                                      "timezone": timezone}, is_admin=True)
        token = auth.create_token(conn, uid, "tests", None)["token"]
    return uid, Api(app.test_client(), token)


def names(api: Api, table: str, flt: Any, app_key: str = "q") -> set[str]:
    recs = api.records(app_key, table, filter=flt, fields="name", limit=1000)
    return {r["fields"]["name"] for r in recs}


def ids_by_name(api: Api, table: str) -> dict[str, int]:
    return {r["fields"]["name"]: r["id"] for r in api.records("q", table, fields="name", limit=1000)}


FIELDS: list[dict[str, Any]] = [
    {"key": "name", "label": "Name", "type": "text"},
    {"key": "t", "label": "Text", "type": "text"},
    {"key": "lt", "label": "Long", "type": "long_text"},
    {"key": "em", "label": "Email", "type": "email"},
    {"key": "ph", "label": "Phone", "type": "phone"},
    {"key": "u", "label": "URL", "type": "url"},
    {"key": "n", "label": "Number", "type": "number"},
    {"key": "dec", "label": "Decimal", "type": "decimal"},
    {"key": "cur", "label": "Currency", "type": "currency", "options": {"currency": "CNY"}},
    {"key": "pct", "label": "Percent", "type": "percent"},
    {"key": "rat", "label": "Rating", "type": "rating", "options": {"max": 5}},
    {"key": "dur", "label": "Duration", "type": "duration"},
    {"key": "an", "label": "No.", "type": "autonumber", "options": {"prefix": "T-", "digits": 3}},
    {"key": "d", "label": "Date", "type": "date"},
    {"key": "dtm", "label": "When", "type": "datetime"},
    {"key": "ca", "label": "Created", "type": "created_at"},
    {"key": "ua", "label": "Updated", "type": "updated_at"},
    {"key": "cb", "label": "Done", "type": "checkbox"},
    {"key": "ss", "label": "Stage", "type": "single_select", "options": {"choices": [
        {"value": "lead"}, {"value": "qualified"}, {"value": "won"}, {"value": "lost"}]}},
    {"key": "ms", "label": "Colours", "type": "multi_select", "options": {"choices": [
        {"value": "red"}, {"value": "green"}, {"value": "blue"}]}},
    {"key": "usr", "label": "Owner", "type": "user"},
    {"key": "team", "label": "Team", "type": "user", "options": {"multiple": True}},
    {"key": "cby", "label": "Created by", "type": "created_by"},
    {"key": "uby", "label": "Updated by", "type": "updated_by"},
    {"key": "customer", "label": "Customer", "type": "link", "options": {"table": "customers",
                                                                          "reverse_key": "things"}},
    {"key": "tags", "label": "Tags", "type": "link", "options": {"table": "tags", "multiple": True,
                                                                  "reverse_key": "things"}},
    {"key": "cust_level", "label": "Level", "type": "lookup", "options": {"link": "customer", "field": "level"}},
    {"key": "tag_labels", "label": "Tag labels", "type": "lookup", "options": {"link": "tags", "field": "label"}},
    {"key": "tag_weight", "label": "Weight", "type": "rollup",
     "options": {"link": "tags", "field": "weight", "function": "sum"}},
    {"key": "double", "label": "Double", "type": "formula", "options": {"formula": "{n} * 2"}},
    {"key": "shout", "label": "Shout", "type": "formula", "options": {"formula": "{name} & \"!\""}},
    {"key": "big", "label": "Big", "type": "formula", "options": {"formula": "{n} > 15"}},
    {"key": "att", "label": "Files", "type": "attachment"},
]

# the value kind each field of the dataset has (it decides which operators apply)
KIND = {"name": "text", "t": "text", "lt": "text", "em": "text", "ph": "text", "u": "text", "n": "number",
        "dec": "number", "cur": "number", "pct": "number", "rat": "number", "dur": "number", "an": "number",
        "d": "date", "dtm": "datetime", "ca": "datetime", "ua": "datetime", "cb": "bool", "ss": "select",
        "ms": "multi", "usr": "user", "team": "multi", "cby": "user", "uby": "user", "customer": "link_one",
        "tags": "link_many", "cust_level": "select", "tag_labels": "text", "tag_weight": "number",
        "double": "number", "shout": "text", "big": "bool", "att": "files"}


def build(app: Any, admin: Api) -> dict[str, Any]:
    """The dataset: 5 things (one nearly empty), 3 customers, 4 tags (one in the trash)."""
    bob_id, bob = make_user(app, "bob")
    admin.ok("POST", "/meta/apps", {"key": "q", "label": "Query"})
    admin.ok("POST", "/meta/apps/q/tables", {"key": "customers", "label": "Customers", "fields": [
        {"key": "name", "label": "Name", "type": "text"},
        {"key": "level", "label": "Level", "type": "single_select",
         "options": {"choices": [{"value": "A"}, {"value": "B"}, {"value": "C"}]}}]})
    admin.ok("POST", "/meta/apps/q/tables", {"key": "tags", "label": "Tags", "fields": [
        {"key": "name", "label": "Name", "type": "text"},
        {"key": "label", "label": "Label", "type": "text"},
        {"key": "weight", "label": "Weight", "type": "number"}]})
    admin.ok("POST", "/meta/apps/q/tables", {"key": "things", "label": "Things", "fields": FIELDS})
    cust = admin.ok("POST", "/data/q/customers", {"records": [
        {"fields": {"name": "Acme", "level": "A"}}, {"fields": {"name": "Beta Co", "level": "B"}},
        {"fields": {"name": "Cathay"}}]})["records"]
    c1, c2, c3 = (c["id"] for c in cust)
    tags = admin.ok("POST", "/data/q/tags", {"records": [
        {"fields": {"name": "t1", "label": "vip", "weight": 5}},
        {"fields": {"name": "t2", "label": "new", "weight": 2}},
        {"fields": {"name": "t3", "label": "cold", "weight": 1}},
        {"fields": {"name": "t4", "label": "gone", "weight": 100}}]})["records"]
    t1, t2, t3, t4 = (t["id"] for t in tags)
    with db.transaction(app.extensions["formwork"].engine) as conn:
        uploader = conn.execute(db.users.select().where(db.users.c.username == "admin")).first().id
        # as POST /files leaves it: only the uploader may attach the token
        conn.execute(insert(db.files).values(token="tok-1", name="a.pdf", size=10, mime="application/pdf",
                                             sha256="0" * 64, created_at=db.utcnow(), user_id=uploader))
    admin_id = admin.ok("GET", "/me")["id"]
    first = admin.ok("POST", "/data/q/things", {"records": [
        {"fields": {"name": A, "t": "Hello World", "lt": "line one\nline two", "em": "a@x.com",
                    "ph": "+86 138 0000", "u": "https://a.example.com", "n": 10, "dec": 1.5, "cur": "100.25",
                    "pct": 12.5, "rat": 3, "dur": 3600, "d": "2026-03-10", "dtm": "2026-03-10T08:00:00Z",
                    "cb": True, "ss": "lead", "ms": ["red", "blue"], "usr": admin_id, "team": [admin_id, "bob"],
                    "customer": c1, "tags": [t1, t2], "att": ["tok-1"]}},
        {"fields": {"name": B, "t": "hello 世界", "lt": "第二行", "em": "B@Y.org", "ph": "010-1234",
                    "u": "http://b.example.org/x", "n": 20, "dec": 2.25, "cur": -5, "pct": 50, "rat": 5,
                    "dur": 60, "d": "2026-03-15", "dtm": "2026-03-15T23:30:00Z", "cb": False, "ss": "won",
                    "ms": ["red"], "usr": "bob", "team": ["bob"], "customer": c2, "tags": [t2]}},
        {"fields": {"name": G, "t": "100%_off", "n": 30, "dec": "0.1", "cur": 0, "rat": 1, "d": "2026-04-01",
                    "dtm": "2026-04-01T00:00:00Z", "ss": "lost", "ms": ["green"], "usr": admin_id,
                    "customer": c1, "tags": [t3, t4]}},
    ]})["records"]
    bob.ok("POST", "/data/q/things", {"records": [
        {"fields": {"name": Z, "t": "北京烤鸭", "n": -1, "d": "2025-12-31", "dtm": "2025-12-31T16:30:00Z",
                    "ss": "won", "customer": c3, "em": "z@x.com"}},
        {"fields": {"name": E}}]})
    bob.ok("PATCH", f"/data/q/things/{first[0]['id']}", {"fields": {"cb": True}})
    admin.ok("DELETE", f"/data/q/tags/{t4}")
    return {"admin_id": admin_id, "bob_id": bob_id, "bob": bob, "c": (c1, c2, c3), "t": (t1, t2, t3, t4)}


def cases(ctx: dict[str, Any]) -> list[tuple[str, str, Any, set[str]]]:
    c1, c2, c3 = ctx["c"]
    t1, t2, t3, t4 = ctx["t"]
    me, bob = {"var": "me"}, ctx["bob_id"]
    everyone = set(NAMES)
    today, yesterday = {"relative": "today"}, {"relative": "yesterday"}
    return [
        # text: case-insensitive, Chinese text, LIKE wildcards taken literally
        ("t", "eq", "hello world", {A}), ("t", "eq", "北京烤鸭", {Z}), ("t", "eq", "hello", set()),
        ("t", "ne", "HELLO WORLD", {B, G, Z, E}),
        ("t", "in", ["HELLO WORLD", "北京烤鸭"], {A, Z}), ("t", "not_in", ["hello world"], {B, G, Z, E}),
        ("t", "contains", "HELLO", {A, B}), ("t", "contains", "世界", {B}), ("t", "contains", "%", {G}),
        ("t", "contains", "_", {G}), ("t", "contains", "l%", set()), ("t", "contains", "0%_o", {G}),
        ("t", "not_contains", "hello", {G, Z, E}), ("t", "not_contains", "%", {A, B, Z, E}),
        ("t", "starts_with", "HEL", {A, B}), ("t", "starts_with", "_", set()), ("t", "starts_with", "北京", {Z}),
        ("t", "ends_with", "WORLD", {A}), ("t", "ends_with", "%", set()), ("t", "ends_with", "_off", {G}),
        ("t", "is_empty", None, {E}), ("t", "is_not_empty", None, {A, B, G, Z}),
        ("name", "eq", "beta", {B}), ("name", "contains", "客户", {Z}),
        ("lt", "eq", "第二行", {B}), ("lt", "ne", "第二行", {A, G, Z, E}), ("lt", "in", ["第二行"], {B}),
        ("lt", "not_in", ["第二行"], {A, G, Z, E}), ("lt", "contains", "LINE TWO", {A}),
        ("lt", "not_contains", "line", {B, G, Z, E}), ("lt", "starts_with", "第二", {B}),
        ("lt", "ends_with", "two", {A}), ("lt", "is_empty", None, {G, Z, E}), ("lt", "is_not_empty", None, {A, B}),
        ("em", "eq", "b@y.ORG", {B}), ("em", "ne", "a@x.com", {B, G, Z, E}),
        ("em", "in", ["a@x.com", "z@x.com"], {A, Z}),
        ("em", "not_in", ["a@x.com"], {B, G, Z, E}), ("em", "contains", "@X.", {A, Z}),
        ("em", "not_contains", "x.com", {B, G, E}), ("em", "starts_with", "b@", {B}),
        ("em", "ends_with", ".org", {B}), ("em", "is_empty", None, {G, E}), ("em", "is_not_empty", None, {A, B, Z}),
        ("ph", "eq", "010-1234", {B}), ("ph", "ne", "010-1234", {A, G, Z, E}), ("ph", "in", ["+86 138 0000"], {A}),
        ("ph", "not_in", ["+86 138 0000"], {B, G, Z, E}), ("ph", "contains", "138", {A}),
        ("ph", "not_contains", "-", {A, G, Z, E}), ("ph", "starts_with", "+86", {A}), ("ph", "ends_with", "1234", {B}),
        ("ph", "is_empty", None, {G, Z, E}), ("ph", "is_not_empty", None, {A, B}),
        ("u", "eq", "HTTPS://A.EXAMPLE.COM", {A}), ("u", "ne", "https://a.example.com", {B, G, Z, E}),
        ("u", "in", ["http://b.example.org/x"], {B}), ("u", "not_in", ["http://b.example.org/x"], {A, G, Z, E}),
        ("u", "contains", "example", {A, B}), ("u", "not_contains", "https", {B, G, Z, E}),
        ("u", "starts_with", "http://", {B}), ("u", "ends_with", ".com", {A}), ("u", "is_empty", None, {G, Z, E}),
        ("u", "is_not_empty", None, {A, B}),
        # numbers
        ("n", "eq", 20, {B}), ("n", "eq", "20", {B}), ("n", "ne", 20, {A, G, Z, E}), ("n", "lt", 10, {Z}),
        ("n", "lte", 10, {A, Z}), ("n", "gt", 20, {G}), ("n", "gte", 20, {B, G}), ("n", "between", [10, 20], {A, B}),
        ("n", "in", [10, 30], {A, G}), ("n", "not_in", [10, 30], {B, Z, E}), ("n", "is_empty", None, {E}),
        ("n", "is_not_empty", None, {A, B, G, Z}),
        ("dec", "eq", 2.25, {B}), ("dec", "ne", "2.25", {A, G, Z, E}), ("dec", "lt", 1.5, {G}),
        ("dec", "lte", 1.5, {A, G}), ("dec", "gt", 1.5, {B}), ("dec", "gte", "0.1", {A, B, G}),
        ("dec", "between", [0.1, 1.5], {A, G}), ("dec", "in", [0.1, 2.25], {B, G}),
        ("dec", "not_in", [0.1], {A, B, Z, E}),
        ("dec", "is_empty", None, {Z, E}), ("dec", "is_not_empty", None, {A, B, G}),
        ("cur", "eq", 100.25, {A}), ("cur", "ne", 0, {A, B, Z, E}), ("cur", "lt", 0, {B}), ("cur", "lte", 0, {B, G}),
        ("cur", "gt", 0, {A}), ("cur", "gte", -5, {A, B, G}), ("cur", "between", [-5, 0], {B, G}),
        ("cur", "in", ["100.25", -5], {A, B}), ("cur", "not_in", [0], {A, B, Z, E}), ("cur", "is_empty", None, {Z, E}),
        ("cur", "is_not_empty", None, {A, B, G}),
        ("pct", "eq", 50, {B}), ("pct", "ne", 50, {A, G, Z, E}), ("pct", "lt", 50, {A}), ("pct", "lte", 50, {A, B}),
        ("pct", "gt", 12.5, {B}), ("pct", "gte", 12.5, {A, B}), ("pct", "between", [10, 20], {A}),
        ("pct", "in", [12.5], {A}), ("pct", "not_in", [12.5], {B, G, Z, E}), ("pct", "is_empty", None, {G, Z, E}),
        ("pct", "is_not_empty", None, {A, B}),
        ("rat", "eq", 3, {A}), ("rat", "ne", 3, {B, G, Z, E}), ("rat", "lt", 3, {G}), ("rat", "lte", 3, {A, G}),
        ("rat", "gt", 3, {B}), ("rat", "gte", 3, {A, B}), ("rat", "between", [2, 5], {A, B}),
        ("rat", "in", [1, 5], {B, G}),
        ("rat", "not_in", [1, 5], {A, Z, E}), ("rat", "is_empty", None, {Z, E}),
        ("rat", "is_not_empty", None, {A, B, G}),
        ("dur", "eq", 60, {B}), ("dur", "ne", 60, {A, G, Z, E}), ("dur", "lt", 3600, {B}), ("dur", "lte", 3600, {A, B}),
        ("dur", "gt", 60, {A}), ("dur", "gte", 60, {A, B}), ("dur", "between", [0, 100], {B}),
        ("dur", "in", [3600], {A}),
        ("dur", "not_in", [3600], {B, G, Z, E}), ("dur", "is_empty", None, {G, Z, E}),
        ("dur", "is_not_empty", None, {A, B}),
        ("an", "eq", "T-002", {B}), ("an", "eq", 2, {B}), ("an", "ne", 2, {A, G, Z, E}), ("an", "lt", 2, {A}),
        ("an", "lte", "T-002", {A, B}), ("an", "gt", 4, {E}), ("an", "gte", 4, {Z, E}),
        ("an", "between", [2, 3], {B, G}),
        ("an", "in", [1, "T-005"], {A, E}), ("an", "not_in", [1], {B, G, Z, E}), ("an", "is_empty", None, set()),
        ("an", "is_not_empty", None, everyone),
        # dates
        ("d", "eq", "2026-03-15", {B}), ("d", "ne", "2026-03-15", {A, G, Z, E}), ("d", "lt", "2026-03-15", {A, Z}),
        ("d", "lte", "2026-03-15", {A, B, Z}), ("d", "gt", "2026-03-15", {G}), ("d", "gte", "2026-03-15", {B, G}),
        ("d", "between", ["2026-03-01", "2026-03-31"], {A, B}), ("d", "is_empty", None, {E}),
        ("d", "is_not_empty", None, {A, B, G, Z}), ("d", "eq", "2026年3月15日", {B}),
        ("dtm", "eq", "2026-03-15", {B}), ("dtm", "eq", "2026-03-10T08:00:00Z", {A}),
        ("dtm", "eq", "2026-03-10T16:00:00+08:00", {A}), ("dtm", "ne", "2026-03-15", {A, G, Z, E}),
        ("dtm", "lt", "2026-03-15T23:30:00Z", {A, Z}), ("dtm", "lte", "2026-03-15T23:30:00Z", {A, B, Z}),
        ("dtm", "gt", "2026-03-15T23:30:00Z", {G}), ("dtm", "gte", "2026-03-15T23:30:00Z", {B, G}),
        ("dtm", "lt", "2026-03-15", {A, Z}), ("dtm", "lte", "2026-03-15", {A, B, Z}), ("dtm", "gt", "2026-03-15", {G}),
        ("dtm", "between", ["2026-03-10", "2026-03-15"], {A, B}), ("dtm", "is_empty", None, {E}),
        ("dtm", "is_not_empty", None, {A, B, G, Z}), ("dtm", "eq", "2025-12-31", {Z}),
        ("ca", "eq", today, everyone), ("ca", "ne", today, set()), ("ca", "lt", today, set()),
        ("ca", "lte", today, everyone), ("ca", "gt", today, set()), ("ca", "gte", yesterday, everyone),
        ("ca", "between", [yesterday, today], everyone), ("ca", "is_empty", None, set()),
        ("ca", "is_not_empty", None, everyone),
        ("ua", "eq", today, everyone), ("ua", "ne", yesterday, everyone), ("ua", "lt", yesterday, set()),
        ("ua", "lte", yesterday, set()), ("ua", "gt", yesterday, everyone), ("ua", "gte", today, everyone),
        ("ua", "between", [yesterday, yesterday], set()), ("ua", "is_empty", None, set()),
        ("ua", "is_not_empty", None, everyone),
        # checkbox: unset counts as false
        ("cb", "eq", True, {A}), ("cb", "eq", False, {B, G, Z, E}), ("cb", "ne", True, {B, G, Z, E}),
        ("cb", "ne", False, {A}),
        # selects
        ("ss", "eq", "won", {B, Z}), ("ss", "ne", "won", {A, G, E}), ("ss", "in", ["lead", "lost"], {A, G}),
        ("ss", "not_in", ["won"], {A, G, E}), ("ss", "is_empty", None, {E}), ("ss", "is_not_empty", None, {A, B, G, Z}),
        ("ms", "has_any", ["blue", "green"], {A, G}), ("ms", "has_all", ["red", "blue"], {A}),
        ("ms", "has_all", ["red"], {A, B}), ("ms", "has_none", ["red"], {G, Z, E}), ("ms", "eq", ["red"], {B}),
        ("ms", "eq", ["blue", "red"], {A}), ("ms", "eq", "green", {G}), ("ms", "is_empty", None, {Z, E}),
        ("ms", "is_not_empty", None, {A, B, G}),
        # people
        ("usr", "eq", me, {A, G}), ("usr", "eq", "bob", {B}), ("usr", "ne", me, {B, Z, E}), ("usr", "in", [bob], {B}),
        ("usr", "not_in", [me], {B, Z, E}), ("usr", "is_empty", None, {Z, E}), ("usr", "is_not_empty", None, {A, B, G}),
        ("team", "has_any", [me], {A}), ("team", "has_any", ["bob"], {A, B}), ("team", "has_all", [me, bob], {A}),
        ("team", "has_none", ["bob"], {G, Z, E}), ("team", "eq", [bob], {B}), ("team", "is_empty", None, {G, Z, E}),
        ("team", "is_not_empty", None, {A, B}),
        ("cby", "eq", me, {A, B, G}), ("cby", "ne", me, {Z, E}), ("cby", "in", [bob], {Z, E}),
        ("cby", "not_in", ["bob"], {A, B, G}), ("cby", "is_empty", None, set()),
        ("cby", "is_not_empty", None, everyone),
        ("uby", "eq", me, {B, G}), ("uby", "ne", me, {A, Z, E}), ("uby", "in", ["bob"], {A, Z, E}),
        ("uby", "not_in", [bob], {B, G}), ("uby", "is_empty", None, set()), ("uby", "is_not_empty", None, everyone),
        # links, a path through a to-one link
        ("customer", "eq", c1, {A, G}), ("customer", "ne", c1, {B, Z, E}), ("customer", "in", [c2, c3], {B, Z}),
        ("customer", "not_in", [c1], {B, Z, E}), ("customer", "is_empty", None, {E}),
        ("customer", "is_not_empty", None, {A, B, G, Z}),
        ("customer.level", "eq", "A", {A, G}), ("customer.level", "in", ["B", "C"], {B}),
        ("customer.level", "is_empty", None, {Z, E}), ("customer.name", "contains", "CO", {B}),
        ("tags", "has_any", [t1, t3], {A, G}), ("tags", "has_all", [t1, t2], {A}),
        ("tags", "has_none", [t2], {G, Z, E}),
        ("tags", "has_any", [t4], set()), ("tags", "is_empty", None, {Z, E}), ("tags", "is_not_empty", None, {A, B, G}),
        ("tags.label", "eq", "new", {A, B}), ("tags.weight", "gte", 5, {A}),
        # lookups (to-one and to-many), rollups and formulas filter like columns
        ("cust_level", "eq", "A", {A, G}), ("cust_level", "ne", "A", {B, Z, E}), ("cust_level", "in", ["B"], {B}),
        ("cust_level", "not_in", ["A"], {B, Z, E}), ("cust_level", "is_empty", None, {Z, E}),
        ("cust_level", "is_not_empty", None, {A, B, G}),
        ("tag_labels", "eq", "NEW", {A, B}), ("tag_labels", "eq", "gone", set()),
        ("tag_labels", "ne", "new", {G, Z, E}),
        ("tag_labels", "in", ["vip", "cold"], {A, G}), ("tag_labels", "not_in", ["vip"], {B, G, Z, E}),
        ("tag_labels", "contains", "e", {A, B}), ("tag_labels", "not_contains", "ol", {A, B, Z, E}),
        ("tag_labels", "starts_with", "co", {G}), ("tag_labels", "ends_with", "ip", {A}),
        ("tag_labels", "is_empty", None, {Z, E}), ("tag_labels", "is_not_empty", None, {A, B, G}),
        ("tag_weight", "eq", 2, {B}), ("tag_weight", "ne", 2, {A, G, Z, E}), ("tag_weight", "lt", 2, {G, Z, E}),
        ("tag_weight", "lte", 2, {B, G, Z, E}), ("tag_weight", "gt", 2, {A}), ("tag_weight", "gte", 2, {A, B}),
        ("tag_weight", "between", [1, 2], {B, G}), ("tag_weight", "in", [0], {Z, E}),
        ("tag_weight", "not_in", [0], {A, B, G}), ("tag_weight", "is_empty", None, set()),
        ("tag_weight", "is_not_empty", None, everyone),
        ("double", "eq", 40, {B}), ("double", "ne", 40, {A, G, Z, E}), ("double", "lt", 20, {Z}),
        ("double", "lte", 20, {A, Z}), ("double", "gt", 40, {G}), ("double", "gte", 40, {B, G}),
        ("double", "between", [0, 40], {A, B}), ("double", "in", [-2, 60], {G, Z}),
        ("double", "not_in", [20], {B, G, Z, E}),
        ("double", "is_empty", None, {E}), ("double", "is_not_empty", None, {A, B, G, Z}),
        ("shout", "eq", "ALPHA!", {A}), ("shout", "ne", "alpha!", {B, G, Z, E}), ("shout", "in", ["beta!"], {B}),
        ("shout", "not_in", ["beta!"], {A, G, Z, E}), ("shout", "contains", "A!", {A, B, G}),
        ("shout", "not_contains", "a!", {Z, E}), ("shout", "starts_with", "北京", {Z}),
        ("shout", "ends_with", "y!", {E}),
        ("shout", "is_empty", None, set()), ("shout", "is_not_empty", None, everyone),
        ("big", "eq", True, {B, G}), ("big", "ne", True, {A, Z, E}),
        ("att", "is_empty", None, {B, G, Z, E}), ("att", "is_not_empty", None, {A}),
    ]


def test_every_operator_of_every_field_type(app: Any, admin: Api) -> None:
    ctx = build(app, admin)
    failures = []
    covered: dict[tuple[str, str], set[str]] = {}
    types = {f["key"]: f["type"] for f in FIELDS}
    for field, op, value, expected in cases(ctx):
        cond = {"field": field, "op": op} | ({} if op in ("is_empty", "is_not_empty") else {"value": value})
        got = names(admin, "things", cond)
        if got != expected:
            failures.append(f"{field} {op} {value!r}: expected {sorted(expected)}, got {sorted(got)}")
        if "." not in field:
            covered.setdefault((types[field], KIND[field]), set()).add(op)
    assert not failures, "\n".join(failures)
    listed = {ft["type"]: ft for ft in admin.ok("GET", "/meta/field-types")}
    assert set(listed) == set(types.values())
    for (ftype, kind), ops in covered.items():
        assert ops == set(OPERATORS_BY_KIND[kind]), (ftype, kind, set(OPERATORS_BY_KIND[kind]) - ops)
        if not listed[ftype]["computed"] and kind == listed[ftype]["kind"]:
            assert set(listed[ftype]["operators"]) == ops, ftype


def test_operators_a_type_does_not_allow_are_rejected(app: Any, admin: Api) -> None:
    build(app, admin)
    for field, kind in KIND.items():
        for op in ALL_OPS:
            if op in OPERATORS_BY_KIND[kind]:
                continue
            cond = {"and": [{"field": "name", "op": "is_not_empty"}, {"field": field, "op": op, "value": 1}]}
            status, err = admin.get(f"/data/q/things?filter={quote(json.dumps(cond))}")
            assert status == 400, (field, op, status)
            assert "filter.and[1]" in err["error"]["message"] and f"'{field}'" in err["error"]["message"]


def test_nested_groups(app: Any, admin: Api) -> None:
    ctx = build(app, admin)
    c1 = ctx["c"][0]
    tree = {"and": [
        {"or": [{"field": "n", "op": "gte", "value": 20}, {"field": "customer", "op": "eq", "value": c1}]},
        {"not": {"field": "ss", "op": "eq", "value": "lost"}},
    ]}
    assert names(admin, "things", tree) == {A, B}
    assert names(admin, "things", {"not": tree}) == {G, Z, E}
    assert names(admin, "things", {"or": []}) == set(NAMES)
    assert names(admin, "things", {"not": {"not": {"field": "t", "op": "is_empty"}}}) == {E}
    deep: Any = {"field": "n", "op": "eq", "value": 10}
    for i in range(10):
        deep = {"and": [deep]} if i % 2 else {"or": [deep]}
    assert names(admin, "things", deep) == {A}


def test_reverse_links_and_paths_from_the_other_side(app: Any, admin: Api) -> None:
    build(app, admin)
    ids = ids_by_name(admin, "things")
    assert names(admin, "customers", {"field": "things", "op": "has_any", "value": [ids[A]]}) == {"Acme"}
    assert names(admin, "customers", {"field": "things", "op": "is_empty"}) == set()
    assert names(admin, "customers", {"field": "things.n", "op": "gt", "value": 15}) == {"Acme", "Beta Co"}
    assert names(admin, "tags", {"field": "things", "op": "has_none", "value": [ids[A]]}) == {"t3"}


def test_me_variable_follows_the_caller(app: Any, admin: Api) -> None:
    ctx = build(app, admin)
    bob = ctx["bob"]
    me = {"var": "me"}
    assert names(bob, "things", {"field": "cby", "op": "eq", "value": me}) == {Z, E}
    assert names(bob, "things", {"field": "usr", "op": "eq", "value": me}) == {B}
    assert names(bob, "things", {"field": "team", "op": "has_any", "value": [me]}) == {A, B}
    assert names(admin, "things", {"field": "team", "op": "has_any", "value": [me]}) == {A}


# --- relative dates in the user's time zone ---------------------------------------------------------------
def _week_start(d: dt.date) -> dt.date:
    return d - dt.timedelta(days=d.weekday())


def expected_in(spec: dict[str, Any], d: dt.date, today: dt.date) -> bool:
    """An oracle written independently of the compiler: calendar comparisons, not ranges."""
    name, n = spec["relative"], spec.get("n", 7)
    prev_month = (today.year - 1, 12) if today.month == 1 else (today.year, today.month - 1)
    return {
        "today": d == today,
        "yesterday": d == today - dt.timedelta(days=1),
        "tomorrow": d == today + dt.timedelta(days=1),
        "this_week": _week_start(d) == _week_start(today),
        "last_week": _week_start(d) == _week_start(today) - dt.timedelta(days=7),
        "this_month": (d.year, d.month) == (today.year, today.month),
        "last_month": (d.year, d.month) == prev_month,
        "this_quarter": (d.year, (d.month - 1) // 3) == (today.year, (today.month - 1) // 3),
        "this_year": d.year == today.year,
        "last_n_days": 0 <= (today - d).days <= n,
        "next_n_days": 0 <= (d - today).days <= n,
    }[name]


SPECS = [{"relative": r} for r in ("today", "yesterday", "tomorrow", "this_week", "last_week", "this_month",
                                   "last_month", "this_quarter", "this_year")] + [
    {"relative": "last_n_days", "n": 7}, {"relative": "next_n_days", "n": 3}, {"relative": "last_n_days", "n": 0},
    {"relative": "next_n_days", "n": 40}]


@pytest.mark.parametrize("tz", ["UTC", "Asia/Shanghai"])
def test_relative_dates_on_date_and_datetime_fields(app: Any, admin: Api, tz: str) -> None:
    _uid, user = make_user(app, "zoe", tz)
    admin.ok("POST", "/meta/apps", {"key": "q", "label": "Query"})
    admin.ok("POST", "/meta/apps/q/tables", {"key": "events", "label": "Events", "fields": [
        {"key": "name", "label": "Name", "type": "text"}, {"key": "d", "label": "Day", "type": "date"},
        {"key": "at", "label": "At", "type": "datetime"}]})
    zone = ZoneInfo(tz)
    today = dt.datetime.now(zone).date()
    days = [today + dt.timedelta(days=k) for k in range(-100, 101)]
    records = []
    for day in days:
        start = dt.datetime(day.year, day.month, day.day, tzinfo=zone)
        # the first and the last minute of the day in the user's zone, written as UTC instants
        for edge, instant in (("first", start), ("last", start + dt.timedelta(hours=23, minutes=59))):
            utc = instant.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            records.append({"fields": {"name": f"{day.isoformat()} {edge}", "d": day.isoformat(), "at": utc}})
    admin.ok("POST", "/data/q/events", {"records": records})
    failures = []
    for spec in SPECS:
        want = {r["fields"]["name"] for r in records
                if expected_in(spec, dt.date.fromisoformat(r["fields"]["d"]), today)}
        for field in ("d", "at"):
            got = names(user, "events", {"field": field, "op": "eq", "value": spec}, "q")
            if got != want:
                failures.append(f"{tz} {field} {spec}: "
                                f"missing {sorted(want - got)[:4]}, extra {sorted(got - want)[:4]}")
        outside = names(user, "events", {"field": "at", "op": "ne", "value": spec}, "q")
        if outside != {r["fields"]["name"] for r in records} - want:
            failures.append(f"{tz} at ne {spec}")
    assert not failures, "\n".join(failures)


def test_a_day_means_the_users_day_near_midnight(app: Any, admin: Api) -> None:
    """00:30 on 1 January in Shanghai is still 31 December in UTC."""
    _uid, sh = make_user(app, "li", "Asia/Shanghai")
    admin.ok("POST", "/meta/apps", {"key": "q", "label": "Query"})
    admin.ok("POST", "/meta/apps/q/tables", {"key": "events", "label": "Events", "fields": [
        {"key": "name", "label": "Name", "type": "text"}, {"key": "at", "label": "At", "type": "datetime"}]})
    admin.ok("POST", "/data/q/events", {"records": [
        {"fields": {"name": "sh-early", "at": "2025-12-31T16:30:00Z"}},
        {"fields": {"name": "sh-late", "at": "2026-01-01T15:59:00Z"}},
        {"fields": {"name": "utc-late", "at": "2026-01-01T23:30:00Z"}}]})
    day = {"field": "at", "op": "eq", "value": "2026-01-01"}
    assert names(sh, "events", day) == {"sh-early", "sh-late"}
    assert names(admin, "events", day) == {"sh-late", "utc-late"}
    between = {"field": "at", "op": "between", "value": ["2025-12-31", "2025-12-31"]}
    assert names(sh, "events", between) == set()
    assert names(admin, "events", between) == {"sh-early"}
    local = {"field": "at", "op": "lt", "value": "2026-01-01T00:30:00"}  # no offset: the user's zone
    assert names(sh, "events", local) == set()
    assert names(sh, "events", {"field": "at", "op": "lte", "value": "2026-01-01T00:30:00"}) == {"sh-early"}
    assert names(admin, "events", local) == {"sh-early"}


def test_relative_date_errors_are_400(app: Any, admin: Api) -> None:
    build(app, admin)
    for value in ({"relative": "next_decade"}, {"relative": "last_n_days", "n": -1},
                  {"relative": "last_n_days", "n": "7"}, {"var": "someone"}):
        cond = {"field": "d", "op": "eq", "value": value}
        status, err = admin.get(f"/data/q/things?filter={quote(json.dumps(cond))}")
        assert status == 400, value
        assert "'d'" in err["error"]["message"]
