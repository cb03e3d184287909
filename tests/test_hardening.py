"""Regression tests for issue 10's "input that escapes validation", availability and account findings.

Each test reproduces an attack of the outside review: the answer must be a clear 4xx or a correct result,
never a 500, and a refused write leaves nothing behind.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest

from formwork.automation.worker import Worker
from tests import peers
from tests import test_automation_support as support
from tests.helpers import Api, db_snapshot
from tests.peers import SmtpSink
from tests.test_ui_pages import login as ui_login

worker = support.worker
smtp_sink = peers.smtp_sink


def q(value: Any) -> str:
    return quote(json.dumps(value))


# --- keys with a trailing newline ------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["name\n", "name\r\n", "na\nme", "name\u2028"])
def test_keys_with_a_trailing_newline_are_refused(app: Any, admin: Api, bad: str) -> None:
    before = db_snapshot(app)
    status, body = admin.post("/meta/apps", {"key": bad, "label": "A"})
    assert status == 422, body
    assert db_snapshot(app) == before
    admin.ok("POST", "/meta/apps", {"key": "a", "label": "A"})
    before = db_snapshot(app)
    status, body = admin.post("/meta/apps/a/tables", {"key": bad, "label": "T", "fields": [
        {"key": "name", "label": "Name", "type": "text"}]})
    assert status == 422, body
    status, body = admin.post("/meta/apps/a/tables", {"key": "t", "label": "T", "fields": [
        {"key": bad, "label": "Name", "type": "text"}]})
    assert status == 422, body
    assert db_snapshot(app) == before
    admin.ok("POST", "/meta/apps/a/tables", {"key": "t", "label": "T", "fields": [
        {"key": "name", "label": "Name", "type": "text"}]})
    before = db_snapshot(app)
    status, body = admin.post("/meta/apps/a/tables/t/fields", {"key": bad, "label": "N", "type": "number"})
    assert status == 422, body
    status, body = admin.post("/meta/apps/a/tables/t/views", {"key": bad, "label": "V", "type": "grid"})
    assert status == 422, body
    status, body = admin.post("/meta/apps/a/tables/t/views", {"key": "v", "label": "V", "type": "grid",
                                                              "sort": ["name\n"]})
    assert status == 422, body
    assert db_snapshot(app) == before


# --- extreme numbers and dates ----------------------------------------------------------------------
NUMERIC = ("n", "dec", "cur", "pct")


@pytest.fixture
def extremes(app: Any, admin: Api) -> Api:
    admin.ok("POST", "/meta/apps", {"key": "x", "label": "X"})
    admin.ok("POST", "/meta/apps/x/tables", {"key": "items", "label": "Items", "fields": [
        {"key": "name", "label": "Name", "type": "text"},
        {"key": "n", "label": "N", "type": "number"},
        {"key": "dec", "label": "Dec", "type": "decimal"},
        {"key": "cur", "label": "Cur", "type": "currency"},
        {"key": "pct", "label": "Pct", "type": "percent"},
        {"key": "d", "label": "D", "type": "date"},
        {"key": "dt", "label": "Dt", "type": "datetime"},
    ]})
    admin.ok("POST", "/data/x/items", {"fields": {"name": "plain", "n": 1, "dec": "2.5", "d": "2026-01-02",
                                                  "dt": "2026-01-02T03:04:05Z"}})
    return admin


@pytest.mark.parametrize("field", NUMERIC)
@pytest.mark.parametrize("value", ["1e999999999", "-1e999999999", 1e308, "NaN", "nan", "Infinity", "-inf",
                                   "1e-999999999", "9" * 400])
def test_huge_numbers_are_refused_not_500(app: Any, extremes: Api, field: str, value: Any) -> None:
    before = db_snapshot(app)
    status, body = extremes.post("/data/x/items", {"fields": {"name": "big", field: value}})
    if status < 300:  # a value the field can hold (e.g. a tiny number rounded to 0) reads back
        got = extremes.ok("GET", f"/data/x/items/{body['id']}")["fields"][field]
        assert got is None or abs(float(got)) < 1e300
        return
    assert status in (400, 422), body
    assert db_snapshot(app) == before


@pytest.mark.parametrize("field", NUMERIC)
@pytest.mark.parametrize("value", ["1e999999999", "NaN", "Infinity", "-1e999999999", 1e308, "9" * 400])
@pytest.mark.parametrize("op", ["eq", "gt", "lt", "between"])
def test_huge_numbers_in_filters_are_refused_or_answered(extremes: Api, field: str, value: Any, op: str) -> None:
    arg = [value, value] if op == "between" else value
    status, body = extremes.get(f"/data/x/items?filter={q({field: {op: arg}})}")
    assert status in (200, 400, 422), body


DATES = ["9999-12-31", "0001-01-01", "10000-01-01", "0000-01-01"]
DATETIMES = ["9999-12-31T23:59:59Z", "9999-12-31T23:59:59-05:00", "9999-12-31T23:59:59+14:00",
             "0001-01-01T00:00:00Z", "0001-01-01T00:00:00+05:00", "0001-01-01T00:00:00-05:00",
             "9999-12-31T23:59:59.999999", "0001-01-01T00:00:00"]


@pytest.mark.parametrize("value", DATES + DATETIMES)
@pytest.mark.parametrize("field", ["d", "dt"])
def test_dates_at_the_ends_of_the_range(extremes: Api, field: str, value: str) -> None:
    status, body = extremes.post("/data/x/items", {"fields": {"name": "edge", field: value}})
    assert status < 300 or status in (400, 422), body
    if status < 300:
        extremes.ok("GET", f"/data/x/items/{body['id']}")
    for op in ("eq", "gt", "lt", "gte", "lte", "neq"):
        status, body = extremes.get(f"/data/x/items?filter={q({field: {op: value}})}")
        assert status in (200, 400, 422), body
    status, body = extremes.get(f"/data/x/items?filter={q({field: {'between': [value, value]}})}")
    assert status in (200, 400, 422), body
    for sort in (field, "-" + field):
        page = extremes.ok("GET", f"/data/x/items?sort={sort}&limit=1")
        if page.get("next_cursor"):
            extremes.ok("GET", f"/data/x/items?sort={sort}&limit=1&cursor={page['next_cursor']}")


@pytest.mark.parametrize("tz", ["America/New_York", "Pacific/Kiritimati", "UTC"])
def test_pages_show_dates_at_the_ends_of_the_range(app: Any, extremes: Api, tz: str) -> None:
    import datetime as dt

    from sqlalchemy import update

    from formwork import db

    assert extremes.post("/data/x/items", {"fields": {"name": "x", "dt": "0001-01-01T00:00:00Z"}})[0] == 422
    ids = [extremes.ok("POST", "/data/x/items", {"fields": {"name": n, "d": d, "dt": t}})["id"] for n, d, t in (
        ("lo", "0001-01-01", "0001-01-02T00:00:00Z"), ("hi", "9998-12-31", "9998-12-31T23:59:59-12:00"))]
    plat = app.extensions["formwork"]
    with db.transaction(plat.engine) as conn:  # as an older version let it be written: shown, not a 500
        t = plat.catalogs.get(conn).table("x", "items")
        conn.execute(update(t.sa).where(t.sa.c.id == ids[0]).values(
            {t.fields_by_key["dt"].column_name: dt.datetime(1, 1, 1)}))
    uid = extremes.ok("GET", "/me")["id"]
    extremes.ok("PATCH", f"/admin/users/{uid}", {"timezone": tz})
    extremes.ok("POST", "/meta/apps/x/tables/items/views", {"key": "cal", "label": "C", "type": "calendar",
                                                            "options": {"date_field": "dt"}})
    client, _csrf = ui_login(app, "admin", "admin-pass-1")
    pages = ["/apps/x/items", "/apps/x/items/rows?sort=dt", "/apps/x/items/rows?sort=-dt"]
    pages += [f"/apps/x/items/{i}" for i in ids]
    pages += [f"/apps/x/items?view=cal&month={m}" for m in ("0001-01", "9998-12", "9999-12", "0000-12", "10000-01")]
    for page in pages:
        assert client.get(page).status_code < 500, page
    assert [r["fields"]["name"] for r in extremes.records("x", "items", sort="dt")][:2] == ["lo", "plain"]


# --- formulas that fail at run time -----------------------------------------------------------------
EMPTY = ["{n} / 0", "{n} / ({n} - {n})", "MOD({n}, 0)", "SQRT(-1)",
         "VALUE(\"abc\")", "VALUE({t})", "ROUND({n}, 400)", "{d} - DATE(1, 1, 1)", "{d} + 100000000",
         "DATEADD({d}, 100000000, \"day\")", "DATE(99999, 1, 1)"]
ANSWERED = ["POWER(10, 400)", "POWER({n}, 1000)", "{big} * {big} * {big} * {big}", "{n} * 1e300 * 1e300",
            "INT(1e300)", "{int} * {int} * {int}",
            "DATEADD({dt}, {big}, \"second\")", "DATEADD({d}, 9999, \"year\")", "LEFT({t}, {big})",
            "MID({t}, {big}, {big})", "TEXT({big} * {big})", "AVERAGE(1e308, 1e308)", "VALUE(\"1e999999\")",
            "YEAR(DATEADD({dt}, 5000000, \"day\"))", "DATE(2020, 99999999999, 1)"]


@pytest.mark.parametrize("formula", EMPTY + ANSWERED)
def test_a_formula_failing_at_run_time_empties_its_cell_not_the_page(app: Any, admin: Api, formula: str) -> None:
    admin.ok("POST", "/meta/apps", {"key": "f", "label": "F"})
    admin.ok("POST", "/meta/apps/f/tables", {"key": "t", "label": "T", "fields": [
        {"key": "name", "label": "Name", "type": "text"},
        {"key": "n", "label": "N", "type": "number", "options": {"precision": 2}},
        {"key": "int", "label": "I", "type": "number"},
        {"key": "big", "label": "B", "type": "number", "options": {"precision": 2}},
        {"key": "t", "label": "Tx", "type": "text"},
        {"key": "d", "label": "D", "type": "date"},
        {"key": "dt", "label": "Dt", "type": "datetime"}]})
    rid = admin.ok("POST", "/data/f/t", {"fields": {
        "name": "r", "n": 5, "int": 999999999999999, "big": "999999999999999", "t": "abc",
        "d": "9998-12-30", "dt": "9998-12-30T00:00:00Z"}})["id"]
    status, body = admin.post("/meta/apps/f/tables/t/fields", {"key": "fx", "label": "Fx", "type": "formula",
                                                                  "options": {"formula": formula}})
    if status >= 300:  # refused when saved: as good as an empty cell
        assert status == 422, body
        return
    listed = admin.records("f", "t")[0]["fields"]["fx"]
    one = admin.ok("GET", f"/data/f/t/{rid}")["fields"]["fx"]
    assert listed == one
    if formula in EMPTY:
        assert one is None, one
    client, _csrf = ui_login(app, "admin", "admin-pass-1")
    for page in ("/apps/f/t", f"/apps/f/t/{rid}", "/apps/f/t/rows?sort=-fx", "/apps/f/t/rows?sort=fx"):
        assert client.get(page).status_code == 200, page


# --- one bad email must not stop the others ---------------------------------------------------------
def _mail_rule(admin: Api, worker: Worker, smtp_sink: SmtpSink, titles: tuple[str, ...]) -> dict[str, int]:
    """Tasks with these titles, each mailed by a rule; the worker's round; the runs counted by status."""
    support.make_sales(admin)
    worker.settings.smtp.port = smtp_sink.port
    support.add_rule(admin, {"key": "mail", "trigger": {"type": "record_created", "table": "tasks"},
                             "actions": [{"type": "send_email", "to": ["admin@example.com"],
                                          "subject": "Task {{ record.title }}", "body": "see {{ record.title }}"}]})
    for title in titles:
        admin.ok("POST", "/data/sales/tasks", {"fields": {"title": title}})
    worker.drain()
    by_status: dict[str, int] = {}
    for run in support.runs(admin, "mail"):
        by_status[run["status"]] = by_status.get(run["status"], 0) + 1
        if run["status"] == "failed":
            assert run["steps"][0]["status"] == "failed" and run["steps"][0]["error"], run
    return by_status


def test_an_invalid_email_header_fails_only_its_delivery(admin: Api, worker: Worker, smtp_sink: SmtpSink) -> None:
    titles = ("first\u2028Bcc: victim@example.com", "second", "thi\x85rd", "fourth", "fi\x0bfth", "si\x1cxth")
    by_status = _mail_rule(admin, worker, smtp_sink, titles)
    assert sorted(m["Subject"] for m in smtp_sink.wait_for(2)) == ["Task fourth", "Task second"]
    assert all("victim" not in str(m) for m in smtp_sink.messages)
    assert by_status == {"succeeded": 2, "failed": 4}
    worker.drain()  # the failed ones are settled: nothing is tried again
    assert len(smtp_sink.messages) == 2


def test_an_unexpected_sending_error_fails_only_its_delivery(admin: Api, worker: Worker, smtp_sink: SmtpSink,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    from formwork.automation import dispatch

    real = dispatch.send_email

    def flaky(settings: Any, to: Any, subject: str, *args: Any, **kw: Any) -> Any:
        if "boom" in subject:
            raise ValueError("Header values may not contain linefeed or carriage return characters")
        return real(settings, to, subject, *args, **kw)

    monkeypatch.setattr(dispatch, "send_email", flaky)
    with caplog.at_level("WARNING", logger="formwork.automation.dispatch"):
        by_status = _mail_rule(admin, worker, smtp_sink, ("boom", "fine", "boom again", "also fine"))
    assert sorted(m["Subject"] for m in smtp_sink.wait_for(2)) == ["Task also fine", "Task fine"]
    assert by_status == {"succeeded": 2, "failed": 2}
    assert "Header values may not contain" in caplog.text
    errors = [r["steps"][0]["error"] for r in support.runs(admin, "mail") if r["status"] == "failed"]
    assert all("Header values may not contain" in e for e in errors), errors


# --- jobs of a killed process -----------------------------------------------------------------------
def test_jobs_left_running_by_a_gone_process_are_failed_on_start_up(app: Any, admin: Api) -> None:
    import socket
    import subprocess
    import sys

    from sqlalchemy import insert, select

    from formwork import db
    from formwork.runtime import jobs

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    host = socket.gethostname()
    owners = {"killed": f"{host}:{int(dead.stdout)}:abc", "legacy": None, "alive": jobs.process_owner(),
              "sibling": f"{host}:1:def", "elsewhere": "other-host:12345:xyz"}
    uid = admin.ok("GET", "/me")["id"]
    engine = app.extensions["formwork"].engine
    ids = {}
    with db.transaction(engine) as conn:
        for name, owner in owners.items():
            ids[name] = conn.execute(insert(db.jobs).values(
                kind="import", user_id=uid, status="running", progress=40, total=100, params={},
                created_at=db.utcnow(), owner=owner).returning(db.jobs.c.id)).scalar_one()
    app.extensions.pop("formwork_jobs", None)  # a new process's first use of the jobs module
    jobs.runner(app)
    with engine.connect() as conn:
        status = {name: conn.execute(select(db.jobs.c.status).where(db.jobs.c.id == jid)).scalar_one()
                  for name, jid in ids.items()}
    assert status == {"killed": "failed", "legacy": "failed", "alive": "running", "sibling": "running",
                      "elsewhere": "running"}
    job = admin.ok("GET", f"/jobs/{ids['killed']}")["job"]
    assert job["status"] == "failed" and job["finished_at"]
    assert "stopped before it finished" in job["error"] and "40 of 100" in job["error"]
    assert "nothing of it was committed" in job["error"]
