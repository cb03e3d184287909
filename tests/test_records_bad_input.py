"""Bad input to the records API: each gets a clear 4xx, nothing is half-written, the server keeps serving."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import insert

from formwork import db
from tests.helpers import Api, db_snapshot

WRITABLE = {  # field key → (definition extras, a value of the wrong type)
    "t": ({"type": "text"}, {"a": 1}),
    "lt": ({"type": "long_text"}, [1, 2]),
    "em": ({"type": "email"}, "not-an-email"),
    "ph": ({"type": "phone"}, "call me"),
    "u": ({"type": "url"}, "not a url"),
    "n": ({"type": "number"}, "abc"),
    "dec": ({"type": "decimal"}, True),
    "cur": ({"type": "currency"}, "12abc"),
    "pct": ({"type": "percent"}, [1]),
    "rat": ({"type": "rating", "options": {"max": 5}}, 11),
    "dur": ({"type": "duration"}, "soon"),
    "d": ({"type": "date"}, "2026-13-01"),
    "dtm": ({"type": "datetime"}, "yesterday-ish"),
    "cb": ({"type": "checkbox"}, "maybe"),
    "ss": ({"type": "single_select", "options": {"choices": [{"value": "a"}, {"value": "b"}]}}, "nope"),
    "ms": ({"type": "multi_select", "options": {"choices": [{"value": "a"}, {"value": "b"}]}}, ["a", "nope"]),
    "usr": ({"type": "user"}, 999999),
    "team": ({"type": "user", "options": {"multiple": True}}, ["nobody"]),
    "other": ({"type": "link", "options": {"table": "others"}}, 999999),
    "others": ({"type": "link", "options": {"table": "others", "multiple": True, "reverse_key": "back"}}, [1, "x"]),
    "att": ({"type": "attachment"}, ["no-such-token"]),
}
READ_ONLY = {
    "an": {"type": "autonumber"}, "ca": {"type": "created_at"}, "ua": {"type": "updated_at"},
    "cby": {"type": "created_by"}, "uby": {"type": "updated_by"},
    "lk": {"type": "lookup", "options": {"link": "other", "field": "name"}},
    "ru": {"type": "rollup", "options": {"link": "others", "function": "count"}},
    "fx": {"type": "formula", "options": {"formula": "{n} + 1"}},
}


@pytest.fixture
def setup(app: Any, admin: Api) -> dict[str, Any]:
    admin.ok("POST", "/meta/apps", {"key": "b", "label": "Bad"})
    admin.ok("POST", "/meta/apps/b/tables", {"key": "others", "label": "Others", "fields": [
        {"key": "name", "label": "Name", "type": "text"}]})
    fields = [{"key": "name", "label": "Name", "type": "text"}]
    fields += [{"key": k, "label": k, **d} for k, (d, _) in WRITABLE.items()]
    fields += [{"key": k, "label": k, **d} for k, d in READ_ONLY.items()]
    admin.ok("POST", "/meta/apps/b/tables", {"key": "items", "label": "Items", "fields": fields})
    other = admin.ok("POST", "/data/b/others", {"fields": {"name": "o1"}})["id"]
    with db.transaction(app.extensions["formwork"].engine) as conn:
        uploader = conn.execute(db.users.select().where(db.users.c.username == "admin")).first().id
        # as POST /files leaves it: only the uploader may attach the token
        conn.execute(insert(db.files).values(token="tok-1", name="a.pdf", size=10, mime="application/pdf",
                                             sha256="0" * 64, created_at=db.utcnow(), user_id=uploader))
    rec = admin.ok("POST", "/data/b/items", {"fields": {"name": "first", "n": 1, "other": other, "others": [other],
                                                        "att": ["tok-1"], "ms": ["a"], "usr": "admin"}})
    for i in range(3):
        admin.ok("POST", "/data/b/items", {"fields": {"name": f"r{i}", "n": i}})
    return {"id": rec["id"], "other": other}


def still_serving(admin: Api, rid: int) -> None:
    assert admin.ok("GET", f"/data/b/items/{rid}")["fields"]["name"] == "first"
    assert len(admin.records("b", "items", limit=10)) == 4


def test_every_field_type_rejects_a_wrong_value_naming_the_field(app: Any, admin: Api,
                                                                 setup: dict[str, Any]) -> None:
    rid = setup["id"]
    before = db_snapshot(app)
    for key, (_d, bad) in WRITABLE.items():
        for method, path in (("POST", "/data/b/items"), ("PATCH", f"/data/b/items/{rid}")):
            status, err = admin.call(method, path, {"fields": {"name": "x", key: bad}})
            assert status == 422, (key, method, status, err)
            assert set(err["error"]["details"]) == {key}, (key, err)
            assert err["error"]["message"].startswith(f"{key}: ")
    for key in READ_ONLY:
        status, err = admin.post("/data/b/items", {"fields": {"name": "x", key: 1}})
        assert status == 422 and err["error"]["details"] == {key: ["is read-only"]}
    # all at once: every invalid field is reported in one answer
    everything = {k: bad for k, (_d, bad) in WRITABLE.items()} | dict.fromkeys(READ_ONLY, 1) | {"zzz": 1}
    status, err = admin.post("/data/b/items", {"fields": everything})
    assert status == 422 and set(err["error"]["details"]) == set(everything)
    status, err = admin.patch("/data/b/items", {"records": [{"id": rid, "fields": everything}]})
    assert status == 422 and set(err["error"]["details"]) == {f"records/0/{k}" for k in everything}
    assert db_snapshot(app) == before
    still_serving(admin, rid)
    assert admin.ok("GET", f"/data/b/items/{rid}")["version"] == 1


def test_malformed_and_oversized_bodies(app: Any, admin: Api, setup: dict[str, Any]) -> None:
    rid = setup["id"]
    before = db_snapshot(app)
    for raw in (b"{", b"", b"\xff\xfe", b"[1, 2", b'{"fields": {"name": "x"}', b"null", b"[]", b'"text"',
                b'{"fields": [1]}', b'{"fields": "x"}', b'{"records": {"a": 1}}', b'{"records": [1]}'):
        status, err = admin.call("POST", "/data/b/items", raw=raw)
        assert status == 400, (raw, status, err)
        status, _ = admin.call("PATCH", f"/data/b/items/{rid}", raw=raw)
        assert status == 400, raw
    deep = b'{"fields": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"}"
    assert admin.call("POST", "/data/b/items", raw=deep)[0] in (400, 422)
    big = b'{"fields": {"name": "' + b"a" * (50 * 1024 * 1024) + b'"}}'
    status, err = admin.call("POST", "/data/b/items", raw=big)
    assert status == 413 and err["error"]["code"] == "too_large"
    assert db_snapshot(app) == before
    still_serving(admin, rid)


def test_bad_query_parameters(app: Any, admin: Api, setup: dict[str, Any]) -> None:
    rid = setup["id"]
    before = db_snapshot(app)
    bad = ["limit=100000", "limit=0", "limit=-1", "limit=abc", "offset=-1", "offset=x", "count=maybe",
           "sort=nope", "sort=-nope", "sort=ms", "sort=others", "sort=-", "sort=" + ",".join(["n"] * 11),
           "fields=nope", "fields=name,,", "bogus=1", "filter=%7B", "filter=%5B1%5D", "filter=3",
           "filter=" + quote(json.dumps({"field": "n", "op": "eq", "value": "abc"})),
           "filter=" + quote(json.dumps({"field": "nope", "op": "eq", "value": 1})),
           "filter=" + quote(json.dumps({"field": "other.nope", "op": "eq", "value": 1})),
           "filter=" + quote(json.dumps({"field": "n.x", "op": "eq", "value": 1})),
           "filter=" + quote(json.dumps({"field": "n", "op": "eq", "value": 1, "extra": 2})),
           "filter=" + quote(json.dumps({"and": {"field": "n"}})),
           "filter=" + quote(json.dumps({"field": "n", "op": "between", "value": [1]})),
           "filter=" + quote(json.dumps({"field": "n", "op": "in", "value": []})),
           "filter=" + quote(json.dumps({"field": "n", "op": "eq"})),
           "filter=" + quote(json.dumps({"field": "t", "op": "contains", "value": ""})),
           "filter=" + quote(json.dumps({"field": "ss", "op": "eq", "value": "zzz"})),
           "filter=" + quote(json.dumps({"field": "d", "op": "eq", "value": {"relative": "someday"}})),
           "filter=" + quote(json.dumps({"field": "t", "op": "eq", "value": {"var": "me"}})),
           "filter=" + quote(json.dumps({"or": [{"field": "n", "op": "eq", "value": 1}] * 600})),
           "search=" + "x" * 201, "view=nope", "cursor=abc", "cursor=" + "A" * 40]
    for q in bad:
        status, err = admin.get(f"/data/b/items?{q}")
        assert 400 <= status < 500, (q, status)
        assert err["error"]["message"], q
    assert admin.get("/data/b/items?sort=nope")[1]["error"]["message"].startswith("cannot sort by 'nope'")
    assert "bogus" in admin.get("/data/b/items?bogus=1")[1]["error"]["message"]
    assert db_snapshot(app) == before
    still_serving(admin, rid)


def test_deep_filters_are_400_not_500(app: Any, admin: Api, setup: dict[str, Any]) -> None:
    rid = setup["id"]
    before = db_snapshot(app)
    for depth in (40, 1000, 5000):
        text = '{"not": ' * depth + '{"field": "n", "op": "eq", "value": 1}' + "}" * depth
        status, err = admin.get(f"/data/b/items?filter={quote(text)}")
        assert status == 400, (depth, status)
        assert "filter" in err["error"]["message"]
        status, _ = admin.call("POST", "/data/b/items/bulk-update",
                               raw=b'{"fields": {"n": 5}, "filter": ' + text.encode() + b"}")
        assert status == 400, (depth, status)
        status, _ = admin.call("POST", "/data/b/items/bulk-delete", raw=b'{"filter": ' + text.encode() + b"}")
        assert status == 400
    assert db_snapshot(app) == before
    still_serving(admin, rid)


def test_tampered_and_foreign_cursors(app: Any, admin: Api, setup: dict[str, Any]) -> None:
    rid = setup["id"]
    page = admin.ok("GET", "/data/b/items?sort=n&limit=2")
    cursor = page["next_cursor"]
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    forged = base64.urlsafe_b64encode(raw[:12] + raw[12:].replace(b'"v":[', b'"v":[0,')).decode().rstrip("=")
    flipped = cursor[:-2] + ("A" if cursor[-2] != "A" else "B") + cursor[-1]
    for c in (forged, flipped, cursor[:10], cursor + "x", "!!!", "%00"):
        status, err = admin.get(f"/data/b/items?sort=n&limit=2&cursor={quote(c)}")
        assert status == 400 and "cursor" in err["error"]["message"], c
    assert admin.get(f"/data/b/items?sort=-n&limit=2&cursor={quote(cursor)}")[0] == 400
    assert admin.get(f"/data/b/items?sort=n&limit=2&cursor={quote(cursor)}&search=r")[0] == 400
    assert admin.get(f"/data/b/others?sort=n&limit=2&cursor={quote(cursor)}")[0] == 400
    assert admin.ok("GET", f"/data/b/items?sort=n&limit=2&cursor={quote(cursor)}")["records"]
    still_serving(admin, rid)


def test_ids_that_are_not_numbers_or_do_not_exist(app: Any, admin: Api, setup: dict[str, Any]) -> None:
    rid = setup["id"]
    before = db_snapshot(app)
    for bad in ("abc", "1.5", "-1", "0", "999999", "99999999999999999999999", "%20", "1e3"):
        for method, suffix in (("GET", ""), ("PATCH", ""), ("DELETE", ""), ("POST", "/restore"), ("GET", "/history")):
            body = {"fields": {"name": "x"}} if method == "PATCH" else None
            status, err = admin.call(method, f"/data/b/items/{bad}{suffix}", body)
            assert status == 404, (method, bad, suffix, status)
            assert err["error"]["code"] == "not_found"
    for bad_id in ("abc", None, 1.5, -3, 999999, [1], True):
        status, _ = admin.patch("/data/b/items", {"records": [{"id": bad_id, "fields": {"n": 2}}]})
        assert status in (400, 404), bad_id
    assert admin.patch("/data/b/items", {"records": [{"fields": {"n": 2}}]})[0] == 400
    assert admin.patch("/data/b/items", {"records": [{"id": rid, "fields": {"n": 2}},
                                                     {"id": rid, "fields": {"n": 3}}]})[0] == 400
    assert admin.get("/data/b/nope")[0] == 404 and admin.get("/data/nope/items")[0] == 404
    assert admin.post("/data/b/nope", {"fields": {}})[0] == 404
    assert db_snapshot(app) == before
    still_serving(admin, rid)


def test_operator_a_type_does_not_allow_names_the_condition(admin: Api, setup: dict[str, Any]) -> None:
    tree = {"and": [{"field": "n", "op": "gt", "value": 0}, {"or": [{"field": "cb", "op": "contains", "value": "x"}]}]}
    status, err = admin.get(f"/data/b/items?filter={quote(json.dumps(tree))}")
    assert status == 400
    msg = err["error"]["message"]
    assert msg.startswith("filter.and[1].or[0]: operator 'contains' is not allowed for 'cb'") and "eq, ne" in msg
    status, err = admin.get(f"/data/b/items?filter={quote(json.dumps({'field': 'n', 'op': 'like', 'value': 1}))}")
    assert status == 400 and "'like'" in err["error"]["message"]
