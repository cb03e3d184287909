"""MetadataService called directly: it checks rights itself; the field-type and document-kind registries
each keep their whole contract; metadata imports no layer above it."""

from __future__ import annotations

import ast
import pathlib
from collections.abc import Iterator
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from sqlalchemy import Table
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeEngine

from formwork import db
from formwork.errors import Forbidden
from formwork.metadata.catalog import Catalog, FieldDef
from formwork.metadata.documents import RIGHTS, DocumentContext, DocumentKind, document_kinds
from formwork.metadata.fieldtypes import FieldType, field_types
from formwork.metadata.fieldtypes.base import (
    CELL_STYLES,
    INPUT_KINDS,
    OPERATORS_BY_KIND,
    OPTIONS_FORMS,
    USERS,
    FieldValueError,
    QueryContext,
    WriteContext,
)
from formwork.metadata.service import Actor, MetadataService

BUILDER = Actor(7, can_build=True, can_manage_automations=True)
NOBODY = Actor(8)
AUTOMATOR = Actor(9, can_manage_automations=True)


@pytest.fixture
def conn(app: Any) -> Iterator[Any]:
    with db.transaction(app.extensions["formwork"].engine) as c:
        yield c


def service(conn: Any, actor: Actor) -> MetadataService:
    return MetadataService(conn, actor, Catalog.load(conn))


def make_app(conn: Any) -> None:
    svc = service(conn, Actor.system())
    svc.create_app({"key": "crm", "label": "CRM", "tables": [
        {"key": "items", "label": "Items", "fields": [{"key": "name", "label": "Name", "type": "text"}]}]})


# --- authorization inside the service ---------------------------------------------------------------
BUILD_CHANGES = [
    ("create_app", lambda s: s.create_app({"key": "other", "label": "Other"})),
    ("update_app", lambda s: s.update_app("crm", {"label": "CRM 2"})),
    ("delete_app", lambda s: s.delete_app("crm")),
    ("create_table", lambda s: s.create_table("crm", {"key": "more", "label": "More"})),
    ("update_table", lambda s: s.update_table("crm", "items", {"label": "Things"})),
    ("delete_table", lambda s: s.delete_table("crm", "items")),
    ("create_field", lambda s: s.create_field("crm", "items", {"key": "n", "label": "N", "type": "number"})),
    ("update_field", lambda s: s.update_field("crm", "items", "name", {"label": "Title"})),
    ("preview_field", lambda s: s.update_field("crm", "items", "name", {"type": "number"}, dry_run=True)),
    ("delete_field", lambda s: s.delete_field("crm", "items", "name")),
    ("create_view", lambda s: s.create_doc("view", "crm", {"key": "all", "label": "All", "type": "grid"}, "items")),
    ("create_dashboard", lambda s: s.create_doc("dashboard", "crm", {"key": "d", "label": "D", "widgets": []})),
    ("trash", lambda s: s.trash()),
    ("restore", lambda s: s.restore("table-1")),
]
AUTOMATION = {"key": "hello", "label": "Hello", "trigger": {"type": "record_created", "table": "items"},
              "actions": [{"type": "update_record", "fields": {"name": "x"}}]}


@pytest.mark.parametrize("name,change", BUILD_CHANGES, ids=[n for n, _ in BUILD_CHANGES])
def test_definition_changes_need_the_build_right(conn: Any, name: str, change: Any) -> None:
    make_app(conn)
    for actor in (NOBODY, AUTOMATOR):
        with pytest.raises(Forbidden, match="you may not change app definitions"):
            change(service(conn, actor))


@pytest.mark.parametrize("name,change", [c for c in BUILD_CHANGES if c[0] != "restore"],
                         ids=[n for n, _ in BUILD_CHANGES if n != "restore"])
def test_builders_and_administrators_may_change_definitions(conn: Any, name: str, change: Any) -> None:
    make_app(conn)
    change(service(conn, BUILDER))
    make = service(conn, Actor(1, is_admin=True))
    make.create_app({"key": "again", "label": "Again"})


def test_automations_need_the_automation_right_not_the_build_right(conn: Any) -> None:
    make_app(conn)
    with pytest.raises(Forbidden, match="you may not manage automations"):
        service(conn, NOBODY).create_doc("automation", "crm", dict(AUTOMATION))
    doc = service(conn, AUTOMATOR).create_doc("automation", "crm", dict(AUTOMATION))
    assert doc["key"] == "hello"
    with pytest.raises(Forbidden, match="you may not manage automations"):
        service(conn, NOBODY).update_doc("automation", "crm", "hello", {"label": "Hi"})
    assert service(conn, AUTOMATOR).update_doc("automation", "crm", "hello", {"label": "Hi"})["label"] == "Hi"
    with pytest.raises(Forbidden, match="you may not manage automations"):
        service(conn, NOBODY).delete_doc("automation", "crm", "hello")
    service(conn, AUTOMATOR).delete_doc("automation", "crm", "hello")


def test_the_access_of_a_user_builds_an_actor_with_its_rights() -> None:
    from formwork.runtime.permissions import Access

    builder = Access(5, roles=[{"key": "b", "build": True}]).actor("10.0.0.1")
    assert (builder.user_id, builder.ip, builder.can_build, builder.can_manage_automations) == \
        (5, "10.0.0.1", True, True)
    automator = Access(6, roles=[{"key": "a", "manage_automations": True}]).actor()
    assert (automator.can_build, automator.can_manage_automations) == (False, True)
    assert not Access(7).actor().has("build")
    assert Access.system().actor().has("build") and Actor.system().has("manage_automations")


# --- the field-type contract ---------------------------------------------------------------------------
#: one field document per registered type (a new type adds its sample here)
SAMPLES: dict[str, dict[str, Any]] = {
    "text": {}, "long_text": {}, "email": {}, "phone": {}, "url": {},
    "number": {}, "decimal": {}, "currency": {}, "percent": {}, "rating": {}, "duration": {}, "autonumber": {},
    "date": {}, "datetime": {}, "created_at": {}, "updated_at": {},
    "checkbox": {}, "single_select": {"choices": [{"value": "a"}]}, "multi_select": {"choices": [{"value": "a"}]},
    "user": {}, "created_by": {}, "updated_by": {},
    "link": {"table": "others", "multiple": True},
    "lookup": {"link": "f_link", "field": "title"},
    "rollup": {"link": "f_link", "function": "count"},
    "formula": {"formula": "1 + 1"},
    "attachment": {},
}
SQL_TEXT_FORMS = (None, "copy", "number_text", "checkbox_text")


def test_every_registered_type_has_a_sample() -> None:
    assert sorted(ft.type for ft in field_types.all()) == sorted(SAMPLES)


@pytest.fixture
def sample_fields(app: Any, conn: Any) -> tuple[Catalog, dict[str, FieldDef]]:
    svc = service(conn, Actor.system())
    svc.create_app({"key": "types", "label": "Types", "tables": [
        {"key": "others", "label": "Others", "fields": [{"key": "title", "label": "Title", "type": "text"}]}]})
    order = sorted(SAMPLES, key=lambda t: field_types.get(t).creation_order)
    svc.create_table("types", {"key": "all", "label": "All", "fields": [
        {"key": f"f_{t}", "label": t, "type": t, "options": SAMPLES[t]} for t in order]})
    cat = Catalog.load(conn)
    t = cat.table("types", "all")
    return cat, {f.type: f for f in t.fields if f.key.startswith("f_")}


@pytest.mark.parametrize("type_name", sorted(SAMPLES))
def test_field_type_implements_the_whole_contract(sample_fields: Any, conn: Any, type_name: str) -> None:
    cat, fields = sample_fields
    ft = field_types.get(type_name)
    f = fields[type_name]
    cls = type(ft)
    assert isinstance(ft, FieldType) and ft.type == type_name
    assert cls.coerce is not FieldType.coerce and cls.column_type is not FieldType.column_type
    assert isinstance(ft.label, dict) and ft.label.get("en") and ft.label.get("zh-CN")
    assert ft.kind in OPERATORS_BY_KIND
    Draft202012Validator.check_schema(ft.options_schema)
    for flag in ("read_only", "computed", "searchable", "supports_unique", "supports_default", "is_link",
                 "holds_users", "has_choices", "uses_counter", "number_searchable", "strips_whitespace"):
        assert isinstance(getattr(ft, flag), bool), flag
    assert isinstance(ft.creation_order, int) and ft.cycle_pointer.startswith("/options")
    assert ft.computed or not ft.read_only or ft.uses_counter, "a read-only stored value is set by the platform"
    # metadata
    assert ft.value_kind(f, cat) in OPERATORS_BY_KIND
    assert set(ft.operators(f, cat)) <= {op for ops in OPERATORS_BY_KIND.values() for op in ops}
    assert isinstance(ft.options_to_api(f, cat), dict)
    assert all(isinstance(i, int) for i in ft.dependencies(f, cat))
    assert ft.cycle_edges(f, cat) >= set() and all(isinstance(i, int) for i in ft.cycle_edges(f, cat))
    renamed = ft.options_after_rename(f, "nothing_named_so", "other")
    assert renamed is None or isinstance(renamed, dict)
    assert ft.stands_on_live(f, set(cat.tables_by_id), cat.fields_by_id) is True
    shown = ft.shown_field(f, cat)
    assert shown is None or isinstance(shown, FieldDef)
    for hook in (ft.is_many_lookup(f, cat), ft.sortable(f, cat), ft.can_own_records(f), ft.needs_junction(f),
                 ft.options_affect_data(f, f), ft.accepts_sql_text(f), ft.accepts_sql_number(f)):
        assert isinstance(hook, bool)
    assert ft.options_affect_data(f, f) is False
    assert ft.sql_text_form(f) in SQL_TEXT_FORMS
    # storage
    ct = ft.column_type(f)
    assert ct is None or isinstance(ct, TypeEngine)
    assert (ct is None) == (not f.stored) and (not ft.computed or ct is None)
    assert len(ft.columns(f)) == (0 if ct is None else 1)
    assert isinstance(ft.indexes(f, cat.table("types", "all").sa), list)
    # values
    assert ft.is_empty(None) and ft.to_text(None, f) in (None, "false")
    assert ft.filter_value(3, f) == 3
    # reading: how a page selects, serializes and lists the values
    for hook in (ft.varies_by_reader(f), ft.many_values(f, cat), ft.stored_as_links(f), ft.lists_related(f)):
        assert isinstance(hook, bool)
    assert not ft.stored_as_links(f) or not f.stored, "link rows are not a column of the table"
    embedded = ft.embeds_field(f, cat)
    assert embedded is None or isinstance(embedded, FieldDef)
    through = ft.looked_up_through(f, cat)
    assert through is None or all(isinstance(x, FieldDef) for x in through) and len(through) == 2
    serialize = ft.serializer(f, cat)
    assert callable(serialize)
    serialize(None)
    ctx = QueryContext(catalog=cat, dialect=conn.dialect.name)
    if not ft.many_values(f, cat):  # a list is read by its own query, never as a page column
        expr = ft.read_expression(f, cat.table("types", "all").sa, ctx)
        assert isinstance(expr, ColumnElement)
        match = ft.match_text(f, expr, "1", cat)
        assert match is None or isinstance(match, ColumnElement)
    schema = ft.value_schema(f, cat, "out")
    assert isinstance(schema, dict) and isinstance(ft.value_schema(f, cat, "in"), dict)
    Draft202012Validator.check_schema(schema)
    # writing, importing and exporting
    refs = ft.ids_to_check(None, f)
    assert refs is None or refs[1] == set()
    refs = ft.ids_to_check([1, 2], f) if ft.is_link or ft.holds_users else None
    assert refs is None or (refs[0] == USERS or isinstance(refs[0], int)) and refs[1] <= {1, 2}

    class NoRecords:
        def resolve(self, f: FieldDef, value: Any) -> int | list[int]:
            raise FieldValueError("no record")

    wctx = WriteContext(catalog=cat, conn=conn, user_id=None, lenient=True)
    try:  # an empty cell is a value or a message for the row, never another error
        ft.from_cell("", f, wctx, NoRecords())
    except FieldValueError:
        pass
    assert callable(ft.export_text)
    # the UI: which input, cell style and options editor it uses
    assert ft.input_kind is None or ft.input_kind in INPUT_KINDS
    assert ft.input_kind is None or not ft.read_only, "a read-only type has no form input"
    assert ft.cell_style in CELL_STYLES
    assert ft.options_form is None or ft.options_form in OPTIONS_FORMS


def test_the_field_type_hooks_answer_for_the_types_they_describe(sample_fields: Any) -> None:
    cat, fields = sample_fields
    assert {t for t, f in fields.items() if f.ftype.is_link} == {"link"}
    assert {t for t, f in fields.items() if f.ftype.holds_users} == {"user", "created_by", "updated_by"}
    assert {t for t, f in fields.items() if f.ftype.can_own_records(f)} == {"user"}
    assert {t for t, f in fields.items() if f.ftype.has_choices} == {"single_select", "multi_select"}
    assert {t for t, f in fields.items() if f.ftype.uses_counter} == {"autonumber"}
    assert {t for t, f in fields.items() if f.ftype.needs_junction(f)} == {"link"}
    assert {t for t, f in fields.items() if f.ftype.is_many_lookup(f, cat)} == {"lookup"}
    assert fields["lookup"].ftype.shown_field(fields["lookup"], cat).key == "title"  # type: ignore[union-attr]
    assert fields["formula"].ftype.cycle_pointer == "/options/formula"
    formula = FieldDef(fields["formula"].id, fields["formula"].table_id, "g", "formula",
                       {"options": {"formula": '{f_text} & "{f_text}"'}}, 0)
    assert formula.ftype.options_after_rename(formula, "f_text", "t") == {"formula": '{t} & "{f_text}"'}
    assert formula.ftype.cycle_edges(formula, cat) == {fields["text"].id}
    live = {fid: f for fid, f in cat.fields_by_id.items() if f.key != "title"}
    assert not fields["lookup"].ftype.stands_on_live(fields["lookup"], set(cat.tables_by_id), live)
    assert not fields["link"].ftype.stands_on_live(fields["link"], set(), cat.fields_by_id)
    # reading, writing and the UI
    assert {t for t, f in fields.items() if f.ftype.many_values(f, cat)} == {"link", "lookup"}
    assert {t for t, f in fields.items() if f.ftype.stored_as_links(f)} == {"link"}
    assert {t for t, f in fields.items() if f.ftype.looked_up_through(f, cat)} == {"lookup"}
    assert {t for t, f in fields.items() if f.ftype.varies_by_reader(f)} == {"formula"}
    assert {t for t, f in fields.items() if f.ftype.embeds_field(f, cat)} == {"lookup"}
    reverse = cat.table("types", "others").fields_by_key
    assert [k for k, f in reverse.items() if f.ftype.lists_related(f)] == ["all"]
    assert {t for t, f in fields.items() if f.ftype.input_kind is None} == {
        "attachment", "autonumber", "created_at", "updated_at", "created_by", "updated_by", "lookup", "rollup",
        "formula"}
    assert fields["user"].ftype.ids_to_check([3, "x"], fields["user"]) == (USERS, {3})
    assert fields["link"].ftype.ids_to_check([3], fields["link"]) == (fields["link"].options["target"], {3})
    assert fields["created_by"].ftype.ids_to_check(3, fields["created_by"]) is None
    exports = {"multi_select": ["a", "b"], "user": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
               "link": [{"id": 1, "display": "a"}, {"id": 2, "display": "b"}],
               "attachment": [{"token": "t", "name": "a"}, {"token": "u", "name": "b"}], "lookup": ["a", "b"],
               "text": "a, b"}
    for t, value in exports.items():
        assert fields[t].ftype.export_text(value, fields[t]) == "a, b", t


# --- the document-kind contract ------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["view", "dashboard", "automation", "role"])
def test_document_kind_implements_the_whole_contract(app: Any, conn: Any, kind: str) -> None:
    dk = document_kinds.get(kind)
    assert isinstance(dk, DocumentKind) and dk.kind == kind
    assert type(dk).check_refs is not DocumentKind.check_refs
    assert isinstance(dk.storage, Table) and dk.parent in ("table", "app", None) and dk.right in RIGHTS
    if dk.parent is not None:
        assert f"{dk.parent}_id" in dk.storage.c
    from formwork.metadata import validation

    assert validation.schema(dk.schema)["type"] == "object"
    make_app(conn)
    cat = Catalog.load(conn)
    ctx = DocumentContext(cat, cat.app("crm"), cat.table("crm", "items"), conn, Actor.system())
    good = {"view": {"key": "v", "label": "V", "type": "grid", "fields": ["name"]},
            "dashboard": {"key": "d", "label": "D", "widgets": []},
            "automation": AUTOMATION,
            "role": {"key": "r", "label": "R", "permissions": {"crm.items": {"read": "all"}}}}[kind]
    validation.validate(dk.schema, good)
    dk.check_refs(ctx, good)
    assert dk.public(good) == good


def test_every_registered_kind_is_covered_and_readers_never_see_secrets() -> None:
    assert sorted(dk.kind for dk in document_kinds.all()) == ["automation", "dashboard", "role", "view"]
    doc = {**AUTOMATION, "actions": [{"type": "webhook", "url": "https://x.test", "secret": "s3cret"}]}
    assert document_kinds.get("automation").public(doc)["actions"][0]["secret"] != "s3cret"


# --- the layer rule for metadata -------------------------------------------------------------------------
UPPER = ("formwork.runtime", "formwork.automation", "formwork.api", "formwork.ui", "formwork.web")
#: moved out by the ui stream (the demo generator of a template)
KNOWN = {("portable.py", "formwork.runtime.demo")}


def _runtime_imports(tree: ast.AST) -> Iterator[str]:
    """Imported module names, skipping ``if TYPE_CHECKING:`` blocks."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING":
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        else:
            yield from _runtime_imports(node)


def test_metadata_imports_no_layer_above_it() -> None:
    root = pathlib.Path(__file__).resolve().parent.parent / "formwork" / "metadata"
    bad = [(p.name, m) for p in sorted(root.rglob("*.py"))
           for m in _runtime_imports(ast.parse(p.read_text("utf-8")))
           if m.startswith(UPPER) and (p.name, m) not in KNOWN]
    assert bad == []
