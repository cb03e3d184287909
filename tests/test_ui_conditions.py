"""The visual condition builder (formwork/ui/conditions.py): a tree shown as inputs and posted back is the
same tree; each type gets fitting inputs; mistakes come back next to their input in the user's language;
hidden fields are neither offered nor accepted; the htmx fragments add and re-fit conditions."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

import pytest
from flask import render_template_string
from werkzeug.datastructures import MultiDict

from formwork import db
from formwork.runtime.permissions import Access
from formwork.ui import conditions
from formwork.ui.context import make_page
from formwork.web import unit
from tests.helpers import Api
from tests.test_ui_pages import build, html, login

MACRO = '{% from "_conditions.html" import condition_builder %}<form>{{ condition_builder(cb) }}</form>'


class FormFields(HTMLParser):
    """What a browser would post from a form: named inputs, checked boxes, selected options."""

    def __init__(self) -> None:
        super().__init__()
        self.data: list[tuple[str, str]] = []
        self._select: str | None = None
        self._multiple = False
        self._options: list[tuple[str, bool]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "input" and a.get("name") and a.get("name") != "_q":
            if a.get("type") in ("checkbox", "radio") and "checked" not in a:
                return
            self.data.append((a["name"], a.get("value", "")))
        elif tag == "select":
            self._select, self._multiple, self._options = a.get("name"), "multiple" in a, []
        elif tag == "option" and self._select is not None:
            self._options.append((a.get("value", ""), "selected" in a))

    def handle_endtag(self, tag: str) -> None:
        if tag == "select" and self._select:
            chosen = [v for v, s in self._options if s]
            if not chosen and not self._multiple and self._options:
                chosen = [self._options[0][0]]
            self.data += [(self._select, v) for v in chosen]
            self._select = None


def posted(markup: str) -> MultiDict[str, str]:
    parser = FormFields()
    parser.feed(markup)
    return MultiDict(parser.data)


@pytest.fixture
def world(app: Any, admin: Api) -> dict[str, Any]:
    return build(app, admin)


def _user(app: Any, username: str) -> int:
    with db.transaction(app.extensions["formwork"].engine) as conn:
        return int(conn.execute(db.users.select().where(db.users.c.username == username)).first().id)


def _round_trip(app: Any, username: str, tree: Any, locale: str = "en") -> tuple[str, Any]:
    with app.test_request_context("/"):
        with unit(write=False) as (conn, cat):
            access = Access.for_user(conn, _user(app, username))
            p = make_page(conn, cat, access)
            p.locale = locale
            t = cat.app("sales").table("deals")
            cb = conditions.builder(p, t, tree)
            markup = render_template_string(MACRO, cb=cb)
            return markup, conditions.parse(p, t, posted(markup))


TREE = {"and": [
    {"field": "stage", "op": "in", "value": ["lead", "won"]},
    {"or": [{"field": "amount", "op": "between", "value": [1000, 5000]},
            {"field": "close", "op": "eq", "value": {"relative": "last_n_days", "n": 30}},
            {"field": "close", "op": "lt", "value": "2026-05-01"}]},
    {"field": "owner", "op": "eq", "value": {"var": "me"}},
    {"field": "hot", "op": "eq", "value": False},
    {"field": "tags", "op": "has_any", "value": ["vip"]},
    {"field": "name", "op": "contains", "value": "deal"},
    {"field": "secret", "op": "is_not_empty"},
]}


def test_a_tree_shown_and_posted_back_is_the_same_tree(app: Any, world: dict[str, Any]) -> None:
    markup, tree = _round_trip(app, "boss", TREE)
    assert tree == TREE
    assert "<script" not in markup and "onclick" not in markup
    # labels, not keys: the field picker and the option chips speak the user's language
    assert ">Stage</option>" in markup and ">Lead</label>" in markup.replace("\n", "")
    _zh_markup, zh_tree = _round_trip(app, "boss", TREE, locale="zh-CN")
    assert zh_tree == TREE
    assert "阶段" in _zh_markup and "以下所有条件" in _zh_markup


def test_links_and_paths_through_them(app: Any, world: dict[str, Any]) -> None:
    tree = {"and": [{"field": "account", "op": "eq", "value": world["acme"]},
                    {"field": "account.name", "op": "starts_with", "value": "Ac"}]}
    markup, back = _round_trip(app, "boss", tree)
    assert back == tree
    assert "Acme" in markup and "Account › Name" in markup  # the chosen record by its name, the path in words


def test_hidden_fields_are_not_offered_and_not_accepted(app: Any, world: dict[str, Any]) -> None:
    markup, _ = _round_trip(app, "rep", {"field": "name", "op": "contains", "value": "x"})
    assert "Secret note" not in markup
    with app.test_request_context("/"):
        with unit(write=False) as (conn, cat):
            p = make_page(conn, cat, Access.for_user(conn, _user(app, "rep")))
            t = cat.app("sales").table("deals")
            form = MultiDict([("filter.conj", "and"), ("filter.a1.field", "secret"), ("filter.a1.op", "eq"),
                              ("filter.a1.value", "TOPSECRET-1")])
            with pytest.raises(conditions.ConditionError) as err:
                conditions.parse(p, t, form)
            assert set(err.value.errors) == {"filter.a1.field"}


def test_mistakes_are_reported_next_to_their_inputs_in_the_users_language(app: Any, world: dict[str, Any]) -> None:
    form = MultiDict([("filter.conj", "or"), ("filter.a1.field", "amount"), ("filter.a1.op", "gt"),
                      ("filter.a1.value", "lots"), ("filter.b2.conj", "and"), ("filter.b2.c3.field", "stage"),
                      ("filter.b2.c3.op", "in"), ("filter.b2.c4.field", ""),
                      ("filter.d5.field", "close"), ("filter.d5.op", "eq"), ("filter.d5.mode", "date"),
                      ("filter.d5.value", "2026-13-45")])
    with app.test_request_context("/"):
        with unit(write=False) as (conn, cat):
            p = make_page(conn, cat, Access.for_user(conn, _user(app, "boss")))
            p.locale = "zh-CN"
            t = cat.app("sales").table("deals")
            with pytest.raises(conditions.ConditionError) as err:
                conditions.parse(p, t, form)
            errors = err.value.errors
            assert set(errors) == {"filter.a1.value", "filter.b2.c3.value", "filter.d5.value"}
            assert "数字" in errors["filter.a1.value"] and "选项" in errors["filter.b2.c3.value"]
            # shown again from what was posted, with the messages beside the inputs and nothing lost
            cb = conditions.builder(p, t, None, form=form, errors=errors)
            markup = render_template_string(MACRO, cb=cb)
            assert 'value="lots"' in markup and 'value="2026-13-45"' in markup
            assert markup.count('role="alert"') == 3 and 'aria-invalid="true"' in markup
            # an empty builder is no condition at all
            assert conditions.parse(p, t, MultiDict([("filter.conj", "and")])) is None


def test_the_condition_in_words(app: Any, world: dict[str, Any]) -> None:
    with app.test_request_context("/"):
        with unit(write=False) as (conn, cat):
            p = make_page(conn, cat, Access.for_user(conn, _user(app, "boss")))
            t = cat.app("sales").table("deals")
            text = conditions.describe(p, t, {"and": [
                {"field": "stage", "op": "in", "value": ["lead", "won"]},
                {"or": [{"field": "amount", "op": "gt", "value": 100000},
                        {"field": "owner", "op": "eq", "value": {"var": "me"}}]}]})
            assert text == "Stage is any of Lead, Won and (Amount > 100000 or Owner is Me (whoever is looking))"
            p.locale = "zh-CN"
            assert conditions.describe(p, t, {"field": "close", "op": "eq", "value": {"relative": "this_month"}}) \
                == "Close date 等于 本月"
            assert conditions.describe(p, t, None) == "全部记录"


def test_fragments_add_and_refit_conditions(app: Any, world: dict[str, Any]) -> None:
    c, _csrf = login(app, "boss")
    base = "/apps/sales/deals/conditions/node"
    row = html(c.get(base, query_string={"name": "filter", "prefix": "filter", "kind": "cond"}))
    assert 'name="filter.' in row and ".field" in row and "Choose a field" in row
    group = html(c.get(base, query_string={"name": "filter", "prefix": "filter", "kind": "group"}))
    assert group.count("<fieldset") == 1 and ".conj" in group
    refit = html(c.get(base, query_string={"name": "filter", "prefix": "filter.x1", "kind": "refit",
                                           "filter.x1.field": "stage", "filter.x1.op": "contains"}))
    assert 'name="filter.x1.op"' in refit and '>is any of</option>' in refit and "contains" not in refit
    dated = html(c.get(base, query_string={"name": "filter", "prefix": "filter.x1", "kind": "refit",
                                           "filter.x1.field": "close", "filter.x1.op": "eq",
                                           "filter.x1.mode": "relative", "filter.x1.rel": "next_n_days"}))
    assert 'name="filter.x1.n"' in dated and 'name="filter.x1.rel"' in dated
    assert c.get(base, query_string={"name": "filter", "prefix": "other.x", "kind": "cond"}).status_code == 400
    assert c.get(base, query_string={"name": "bad name", "prefix": "x"}).status_code == 400
    rep, _ = login(app, "rep")
    hidden = rep.get(base, query_string={"name": "filter", "prefix": "filter.x1", "kind": "refit",
                                         "filter.x1.field": "secret"})
    assert hidden.status_code == 404


def test_conditions_a_link_carries_in_show_in_the_grids_builder(app: Any, world: dict[str, Any]) -> None:
    """Older ff/fo/fv links and a dashboard's drill-down tree land in the filter panel as editable
    conditions, so applying another filter or exporting keeps them; what the builder can't say exactly is
    carried along in hidden inputs instead of being dropped."""
    c, _csrf = login(app, "boss")
    page = html(c.get("/apps/sales/deals", query_string={"ff": "stage", "fo": "eq", "fv": "won"}))
    assert 'name="filter.' in page and '<option value="won" selected>' in page
    drill = html(c.get("/apps/sales/deals", query_string={
        "filter": '{"and":[{"field":"stage","op":"in","value":["lead"]}]}'}))
    assert 'value="lead" checked' in drill and "Someone else" not in drill
    odd = html(c.get("/apps/sales/deals", query_string={"filter": '{"not":{"field":"stage","op":"eq","value":"won"}}'}))
    assert 'type="hidden" name="filter" value="' in odd and "Someone else" not in odd
