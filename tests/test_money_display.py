"""Money computed from money shows as money: a formula reading an amount, a rollup summing amounts and a
board's column total all show the currency's symbol like the amounts themselves (a builder may choose
another format for a formula)."""

from __future__ import annotations

import re
from typing import Any

from formwork.runtime import auth
from tests.helpers import Api
from tests.test_ui_pages import login


def _world(app: Any, admin: Api) -> Any:
    admin.ok("POST", "/meta/apps", {"key": "s", "label": "Sales"})
    admin.ok("POST", "/meta/apps/s/tables", {"key": "orders", "label": "Orders", "fields": [
        {"key": "name", "label": "Name", "type": "text"},
        {"key": "stage", "label": "Stage", "type": "single_select", "options": {"choices": [{"value": "open"}]}}]})
    admin.ok("POST", "/meta/apps/s/tables", {"key": "lines", "label": "Lines", "fields": [
        {"key": "item", "label": "Item", "type": "text"},
        {"key": "price", "label": "Price", "type": "currency", "options": {"currency": "CNY", "precision": 2}},
        {"key": "qty", "label": "Qty", "type": "number"},
        {"key": "order", "label": "Order", "type": "link", "options": {"table": "orders"}},
        {"key": "total", "label": "Total", "type": "formula", "options": {"formula": "{qty} * {price}"}},
        {"key": "share", "label": "Share", "type": "formula", "options": {"formula": "{qty} * 10",
                                                                          "format": "percent"}},
        {"key": "plain", "label": "Plain", "type": "formula", "options": {"formula": "{qty} * {price}",
                                                                          "format": "number", "precision": 1}}]})
    rev = _reverse(admin)
    admin.ok("POST", "/meta/apps/s/tables/orders/fields", {
        "key": "amount", "label": "Amount", "type": "rollup", "options": {"link": rev, "field": "price",
                                                                          "function": "sum"}})
    admin.ok("POST", "/meta/apps/s/tables/orders/fields", {
        "key": "lines_n", "label": "Line count", "type": "rollup", "options": {"link": rev, "function": "count"}})
    order = admin.ok("POST", "/data/s/orders", {"fields": {"name": "A", "stage": "open"}})
    admin.ok("POST", "/data/s/lines", {"fields": {"item": "x", "price": 1234.5, "qty": 3, "order": order["id"]}})
    admin.ok("POST", "/data/s/lines", {"fields": {"item": "y", "price": 100, "qty": 1, "order": order["id"]}})
    with app.extensions["formwork"].engine.begin() as conn:
        auth.create_user(conn, {"username": "ann", "name": "Ann", "password": "correct-horse-9"}, is_admin=True)
    return login(app, "ann", "correct-horse-9")[0]


def _reverse(admin: Api) -> str:
    fields = admin.ok("GET", "/meta/apps/s/tables/orders")["fields"]
    return next(f["key"] for f in fields if f["type"] == "link")


def test_formulas_rollups_and_board_totals_show_the_currency(app: Any, admin: Api) -> None:
    client = _world(app, admin)
    lines = client.get("/apps/s/lines").get_data(as_text=True)
    assert "¥3,703.50" in lines  # {qty} * {price}: money, the price's precision
    assert "30%" in lines  # chosen: a percentage
    assert "3,703.5<" in lines and "¥3,703.5<" not in lines  # chosen: a plain number, one decimal
    orders = client.get("/apps/s/orders").get_data(as_text=True)
    assert "¥1,334.50" in orders  # a sum of prices
    assert "¥2" not in orders and ">2<" in orders.replace("</span>", "<")  # a count stays a count
    admin.ok("POST", "/meta/apps/s/tables/orders/views", {"key": "board", "label": "Board", "type": "kanban",
                                                          "options": {"group_field": "stage", "sum_field": "amount"}})
    board = client.get("/apps/s/orders?view=board").get_data(as_text=True)
    assert "¥1,334.50" in board


def test_the_builder_picks_a_formulas_format(app: Any, admin: Api) -> None:
    client = _world(app, admin)
    page = client.get("/apps/s/lines/fields/plain/edit").get_data(as_text=True)
    assert '<option value="number" selected>' in page
    assert 'name="precision" type="number" min="0" max="10" value="1"' in page
    csrf = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    resp = client.post("/apps/s/lines/fields/plain/edit", data={
        "csrf_token": csrf, "label_en": "Plain", "type": "formula", "formula": "{Qty} * {Price}", "format": "currency",
        "currency": "usd", "precision": "0"})
    assert resp.status_code == 302, re.findall(r"role=\"alert\"[^<]*<[^<]*", resp.get_data(as_text=True))
    assert admin.ok("GET", "/meta/apps/s/tables/lines/fields/plain")["options"] == {
        "formula": "{qty} * {price}", "format": "currency", "currency": "USD", "precision": 0}
    assert "$3,704<" in client.get("/apps/s/lines").get_data(as_text=True)
