"""The table builder's duplicate rules: which fields of a table say two records are the same (a company's
name, a phone, an email…) and how each is compared, picked from lists, rules added and removed on the page.

The page is one form: "add a rule", "add a field", "remove…" post it back and show it again with the
change (nothing typed is lost, no script needed); "save" checks each rule (a name, a field chosen in every
row, no field twice in a rule) and writes ``duplicate_rules`` through the metadata service, whose refusals
are shown next to the input they concern."""

from __future__ import annotations

from typing import Any

from flask import Response, redirect, request, url_for

from formwork.errors import BadRequest, Conflict, ValidationFailed
from formwork.metadata.catalog import TableDef
from formwork.metadata.keys import derive_key
from formwork.metadata.service import DUPLICATE_COMPARABLE
from formwork.runtime.duplicates import MATCHES
from formwork.ui.builder import builder_page, label_parts
from formwork.ui.context import Page, render, visible_app, visible_dashboards, visible_tables
from formwork.ui.engine_messages import say
from formwork.web import RouteSet, current_access, unit

routes = RouteSet()

MAX_RULES, MAX_PARTS = 20, 5  # as the table schema allows


def _guess(f: Any) -> str:
    """The comparison a field's type suggests for a new row."""
    return {"phone": "phone", "email": "email"}.get(f.type, "name" if f.key in ("name", "company") else "exact")


def _rows_from_doc(t: TableDef) -> list[dict[str, Any]]:
    rows = []
    for r in t.doc.get("duplicate_rules") or []:
        en, zh = label_parts(r.get("label"))
        rows.append({"key": r.get("key", ""), "label_en": en, "label_zh": zh,
                     "parts": [{"field": p.get("field", ""), "match": p.get("match", "exact")}
                               for p in r.get("fields") or []]})
    return rows


def _rows_from_form(form: Any) -> list[dict[str, Any]]:
    rows = []
    for i in range(MAX_RULES):
        if f"r{i}_present" not in form:
            continue
        parts = []
        for j in range(MAX_PARTS):
            if f"r{i}_f{j}_present" in form:
                match = form.get(f"r{i}_f{j}_match") or "exact"
                parts.append({"field": (form.get(f"r{i}_f{j}_field") or "").strip(),
                              "match": match if match in MATCHES else "exact"})
        rows.append({"key": (form.get(f"r{i}_key") or "").strip(),
                     "label_en": (form.get(f"r{i}_label_en") or "").strip(),
                     "label_zh": (form.get(f"r{i}_label_zh") or "").strip(), "parts": parts})
    return rows


def _apply(action: str, rows: list[dict[str, Any]], fields: list[Any]) -> None:
    """A button other than save: change the rows shown (``add_rule``, ``add_field:i``, ``remove_rule:i``,
    ``remove_field:i:j``)."""
    name, _, rest = action.partition(":")
    nums = [int(x) for x in rest.split(":") if x.isdigit()]
    first = fields[0] if fields else None
    blank = {"field": first.key if first is not None else "", "match": _guess(first) if first is not None else "exact"}
    if name == "add_rule" and len(rows) < MAX_RULES:
        rows.append({"key": "", "label_en": "", "label_zh": "", "parts": [dict(blank)]})
    elif name == "add_field" and nums and nums[0] < len(rows) and len(rows[nums[0]]["parts"]) < MAX_PARTS:
        rows[nums[0]]["parts"].append(dict(blank))
    elif name == "remove_rule" and nums and nums[0] < len(rows):
        rows.pop(nums[0])
    elif name == "remove_field" and len(nums) == 2 and nums[0] < len(rows) and nums[1] < len(rows[nums[0]]["parts"]):
        rows[nums[0]]["parts"].pop(nums[1])
    else:
        raise BadRequest("unknown action")


def _docs(p: Page, t: TableDef, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    """The rules to save, and the page's own refusals by input name."""
    errors: dict[str, list[str]] = {}
    taken = {r["key"] for r in rows if r["key"]}
    docs = []
    for i, r in enumerate(rows):
        label: Any = {"en": r["label_en"], "zh-CN": r["label_zh"]} if r["label_en"] and r["label_zh"] \
            else r["label_en"] or r["label_zh"]
        if not label:
            errors[f"r{i}_label"] = [p.t("dr_err_name")]
        if not r["parts"]:
            errors[f"r{i}"] = [p.t("dr_err_no_field")]
        seen: set[str] = set()
        for j, part in enumerate(r["parts"]):
            f = t.fields_by_key.get(part["field"])
            if f is None or f.type not in DUPLICATE_COMPARABLE:
                errors[f"r{i}_f{j}_field"] = [p.t("dr_err_field")]
            elif part["field"] in seen:
                errors[f"r{i}_f{j}_field"] = [p.t("dr_err_twice")]
            seen.add(part["field"])
        key = r["key"]
        if not key:
            key = derive_key(label or f"rule {i + 1}", taken, "rule")
            taken.add(key)
            r["key"] = key
        doc: dict[str, Any] = {"key": key, "fields": [dict(part) for part in r["parts"]]}
        if label:
            doc["label"] = label
        docs.append(doc)
    return docs, errors


def _service_errors(p: Page, e: Exception) -> dict[str, list[str]]:
    """The metadata service's refusals (``/duplicate_rules/<i>/fields/<j>/field``…) by input name."""
    out: dict[str, list[str]] = {}
    for ptr, msgs in (getattr(e, "details", None) or {"": [getattr(e, "message", str(e))]}).items():
        parts = [x for x in str(ptr).split("/") if x]
        if parts[:1] == ["duplicate_rules"] and len(parts) >= 2 and parts[1].isdigit():
            name = f"r{parts[1]}"
            if len(parts) >= 5 and parts[2] == "fields" and parts[3].isdigit():
                name = f"r{parts[1]}_f{parts[3]}_field"
            elif len(parts) >= 3 and parts[2] == "label":
                name = f"r{parts[1]}_label"
        else:
            name = ""
        out.setdefault(name, []).extend(say(m, p.locale) for m in (msgs if isinstance(msgs, list) else [msgs]))
    return out


@routes.route("/apps/<app_key>/<table_key>/duplicate-rules", methods=["GET", "POST"])
def duplicate_rules_page(app_key: str, table_key: str) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        p, svc = builder_page(conn, cat, access)
        app = visible_app(p, app_key)
        t = app.table(table_key)
        fields = [f for f in t.fields if f.type in DUPLICATE_COMPARABLE and f.stored]
        rows = _rows_from_doc(t)
        errors: dict[str, list[str]] = {}
        status = 200
        if request.method == "POST":
            rows = _rows_from_form(request.form)
            action = request.form.get("action") or "save"
            if action != "save":
                _apply(action, rows, fields)
            else:
                docs, errors = _docs(p, t, rows)
                if not errors:
                    try:
                        with conn.begin_nested():
                            svc.update_table(app_key, table_key, {"duplicate_rules": docs})
                        return redirect(url_for("ui.duplicate_rules_page", app_key=app_key,  # type: ignore[return-value]
                                                table_key=table_key, saved=1))
                    except (ValidationFailed, Conflict, BadRequest) as e:
                        errors = _service_errors(p, e)
                status = 422 if errors else 200
        matches = [(m, p.t(f"dr_match_{m}")) for m in MATCHES]
        return render(p, "builder_duplicates.html", status, app=app, t=t, tables=visible_tables(p, app),
                      dashboards=visible_dashboards(p, app), rows=rows, fields=fields, matches=matches,
                      errors=errors, saved=request.args.get("saved") == "1", max_rules=MAX_RULES,
                      max_parts=MAX_PARTS)
