"""Shared set-up for the automation tests: a small sales app, rule helpers and an in-process worker."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from formwork import db
from formwork.automation.worker import Worker
from tests.helpers import Api

SALES_TABLES: list[dict[str, Any]] = [
    {"key": "companies", "label": "Companies", "fields": [
        {"key": "name", "label": "Name", "type": "text", "required": True},
        {"key": "level", "label": "Level", "type": "single_select",
         "options": {"choices": [{"value": "A"}, {"value": "B"}]}},
        {"key": "note", "label": "Note", "type": "text"},
    ]},
    {"key": "deals", "label": "Deals", "fields": [
        {"key": "name", "label": "Name", "type": "text", "required": True},
        {"key": "amount", "label": "Amount", "type": "currency", "options": {"currency": "CNY"}},
        {"key": "stage", "label": "Stage", "type": "single_select",
         "options": {"choices": [{"value": "lead"}, {"value": "won"}, {"value": "lost"}]}},
        {"key": "owner", "label": "Owner", "type": "user"},
        {"key": "company", "label": "Company", "type": "link",
         "options": {"table": "companies", "reverse_key": "deals", "reverse_label": "Deals"}},
        {"key": "close_date", "label": "Close", "type": "date"},
        {"key": "status", "label": "Status", "type": "text"},
        {"key": "counter", "label": "Counter", "type": "number"},
    ]},
    {"key": "tasks", "label": "Tasks", "fields": [
        {"key": "title", "label": "Title", "type": "text", "required": True},
        {"key": "note", "label": "Note", "type": "text"},
    ]},
]


def make_sales(admin: Api) -> None:
    admin.ok("POST", "/meta/apps", {"key": "sales", "label": {"en": "Sales", "zh-CN": "销售"}})
    for t in SALES_TABLES:
        admin.ok("POST", "/meta/apps/sales/tables", t)


def add_rule(admin: Api, doc: dict[str, Any]) -> dict[str, Any]:
    return admin.ok("POST", "/meta/apps/sales/automations", {"label": doc["key"], "run_as": "admin", **doc})


def runs(admin: Api, key: str) -> list[dict[str, Any]]:
    return admin.ok("GET", f"/meta/apps/sales/automations/{key}/runs")["runs"]  # type: ignore[no-any-return]


def create_user(app: Any, username: str, **extra: Any) -> int:
    from formwork.runtime import auth

    with db.transaction(app.extensions["formwork"].engine) as conn:
        return auth.create_user(conn, {"username": username, "name": username.title(), "password": "pass-word-1",
                                       "email": f"{username}@example.com", **extra})


def token_for(app: Any, user_id: int) -> str:
    from formwork.runtime import auth

    with db.transaction(app.extensions["formwork"].engine) as conn:
        return str(auth.create_token(conn, user_id, "t", None)["token"])


def outbox_rows(app: Any) -> list[Any]:
    with app.extensions["formwork"].engine.connect() as conn:
        return conn.execute(select(db.outbox).order_by(db.outbox.c.id)).all()


@pytest.fixture
def sales(admin: Api) -> Api:
    make_sales(admin)
    return admin


@pytest.fixture
def worker(app: Any) -> Worker:
    app.config["AUTOMATION_RETRY_BASE"] = 0.01
    app.config["AUTOMATION_RETRY_CAP"] = 0.05
    app.config["WEBHOOK_ALLOW_PRIVATE"] = True
    return Worker(app, worker_id="test-worker")


def race(workers: list[Worker], body: Callable[[Worker], None], timeout: float) -> list[BaseException]:
    """Run ``body`` for each worker in its own thread, all released at once; what they raised."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(workers))

    def run(w: Worker) -> None:
        try:
            barrier.wait()
            body(w)
        except BaseException as e:  # noqa: BLE001 - reported to the caller
            errors.append(e)

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    return errors
