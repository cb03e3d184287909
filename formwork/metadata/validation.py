"""JSON Schema (Draft 2020-12) validation of metadata documents, with errors keyed by JSON pointer."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError as JsonSchemaError
from referencing import Registry, Resource

from formwork.errors import ValidationFailed
from formwork.metadata.documents import document_kinds
from formwork.metadata.fieldtypes import field_types

KINDS = ("app", "table", "field", "view", "automation", "dashboard", "role")
MAX_DOC_BYTES = 1_000_000
RESERVED_FIELD_KEYS = {"id", "version", "fields", "display", "created", "updated", "deleted"}
BASE = "https://formwork.dev/schemas/"


@functools.cache
def _python_pattern(pattern: str) -> re.Pattern[str]:
    """An ECMA-262 pattern as Python must read it: ``$`` ends the input (``\\Z``), it does not match before a
    final newline as Python's ``$`` does (a key ``"name\\n"`` passed ``^[a-z]+$``)."""
    out, in_class, i = [], False, 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            out.append(pattern[i:i + 2])
            i += 2
            continue
        if ch == "[":
            in_class = True
        elif ch == "]":
            in_class = False
        out.append(r"\Z" if ch == "$" and not in_class else ch)
        i += 1
    return re.compile("".join(out))


def _full_pattern(validator: Any, pattern: str, instance: Any, schema: dict[str, Any]) -> Iterator[JsonSchemaError]:
    """The ``pattern`` keyword with ECMA anchors: the one place every schema pattern is checked."""
    if validator.is_type(instance, "string") and not _python_pattern(pattern).search(instance):
        yield JsonSchemaError(f"{instance!r} does not match {pattern!r}")


_Validator = validators.extend(Draft202012Validator, {"pattern": _full_pattern})


def _load(name: str) -> dict[str, Any]:
    """A document kind's schema as its kind builds it (``DocumentKind.json_schema``), else the static file."""
    for dk in document_kinds.all():
        if dk.schema == name:
            built = dk.json_schema()
            if built is not None:
                return built
    text = resources.files("formwork.metadata").joinpath("schemas", f"{name}.json").read_text("utf-8")
    return dict(json.loads(text))


def field_schema() -> dict[str, Any]:
    """The field document schema, with one options schema per registered type (if/then per type)."""
    types = [ft.type for ft in field_types.all()]
    per_type = [
        {"if": {"properties": {"type": {"const": ft.type}}, "required": ["type"]},
         "then": {"properties": {"options": ft.options_schema}}}
        for ft in field_types.all()
    ]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": BASE + "field.json",
        "title": "Field",
        "type": "object",
        "required": ["key", "label", "type"],
        "properties": {
            "key": {"$ref": "common.json#/$defs/key"},
            "label": {"$ref": "common.json#/$defs/label"},
            "type": {"enum": types},
            "required": {"type": "boolean"},
            "unique": {"type": "boolean"},
            "default": True,
            "description": {"$ref": "common.json#/$defs/description"},
            "options": {"type": "object"},
            "position": {"type": "integer", "minimum": 0},
        },
        "additionalProperties": False,
        "allOf": per_type,
    }


def _registry() -> Registry:
    """The schemas as of the registered document kinds (a kind registered later gets fresh ones)."""
    return _registry_at(document_kinds.generation)


@functools.cache
def _registry_at(generation: int) -> Registry:
    reg: Registry = Registry()
    for name in ("common", "app", "table", "view", "automation", "dashboard", "role"):
        reg = reg.with_resource(BASE + f"{name}.json", Resource.from_contents(_load(name)))
    return reg.with_resource(BASE + "field.json", Resource.from_contents(field_schema()))


def schema(kind: str) -> dict[str, Any]:
    if kind == "field":
        return field_schema()
    return _load(kind)


def _validator(kind: str) -> Any:
    return _validator_at(kind, document_kinds.generation)


@functools.cache
def _validator_at(kind: str, generation: int) -> Any:
    return _Validator(schema(kind), registry=_registry_at(generation))


@functools.cache
def _field_base_validator() -> Any:
    base = {k: v for k, v in field_schema().items() if k != "allOf"}
    return _Validator(base, registry=_registry())


@functools.cache
def _options_validator(ftype: str) -> Any:
    schema = {"$id": BASE + f"options-{ftype}.json", **field_types.get(ftype).options_schema}
    return _Validator(schema, registry=_registry())


def _field_errors(doc: Any) -> list[JsonSchemaError]:
    """The same verdict as the served field schema, without evaluating its 27 if/then branches:
    the base document first, then the options against the one type's options schema."""
    errors = list(_field_base_validator().iter_errors(doc))
    if isinstance(doc, dict) and doc.get("type") in field_types and isinstance(doc.get("options", {}), dict):
        for err in _options_validator(doc["type"]).iter_errors(doc.get("options", {})):
            err.path.appendleft("options")
            errors.append(err)
    return sorted(errors, key=lambda e: list(e.absolute_path))


def _pointer(err: JsonSchemaError) -> str:
    return "/" + "/".join(str(p) for p in err.absolute_path) if err.absolute_path else ""


def _message(err: JsonSchemaError) -> str:
    if err.validator == "pattern" and err.absolute_path and err.absolute_path[-1] == "key":
        return f"{json.dumps(err.instance, ensure_ascii=False)[:80]} is not a valid key: use lower-case " \
               "letters, digits and _ , starting with a letter (at most 63)"
    if err.validator == "additionalProperties":
        return str(err.message)[:300]
    if err.validator == "oneOf" and err.context:
        best = min(err.context, key=lambda e: len(list(e.absolute_path)) * -1)
        return _message(best)
    msg = str(err.message)
    return msg if len(msg) <= 300 else msg[:297] + "..."


def _forget_field_types() -> None:
    """The field schema lists the registered types: a type registered after start-up rebuilds it."""
    _registry_at.cache_clear()
    _validator_at.cache_clear()
    _field_base_validator.cache_clear()
    _options_validator.cache_clear()


field_types.on_change(_forget_field_types)


def validate(kind: str, doc: Any, prefix: str = "") -> None:
    """Raise ValidationFailed (422) naming every problem by JSON pointer."""
    if kind not in KINDS:
        raise ValueError(kind)
    if len(json.dumps(doc, ensure_ascii=False)) > MAX_DOC_BYTES:
        raise ValidationFailed(f"the {kind} document is larger than 1 MB", {prefix or "/": ["too large"]})
    if kind == "field":
        errors = _field_errors(doc)
    else:
        errors = sorted(_validator(kind).iter_errors(doc), key=lambda e: list(e.absolute_path))
    details: dict[str, list[str]] = {}
    for err in errors[:50]:
        details.setdefault(prefix + _pointer(err) or "/", []).append(_message(err))
    if kind == "field" and isinstance(doc, dict) and doc.get("key") in RESERVED_FIELD_KEYS:
        details.setdefault(prefix + "/key", []).append(f"'{doc['key']}' is reserved")
    if details:
        raise ValidationFailed.from_details(details)
