"""Helpers every /api/v1 resource module shares: the JSON answer, query arguments, who may see what.

Nothing here registers a route; the resource modules (auth, meta, records, ...) use these so that no
private helper has to travel between them.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Response, current_app, g, jsonify, request
from sqlalchemy.engine import Connection

from formwork.errors import BadRequest, Forbidden, NotFound
from formwork.metadata.catalog import AppDef, Catalog, TableDef
from formwork.metadata.service import MetadataService
from formwork.runtime import auth
from formwork.runtime.permissions import Access
from formwork.runtime.previews import builder_actor
from formwork.runtime.records import RecordReader, RecordService
from formwork.web import check_input, client_ip, platform

MAX_JSON = 20 * 1024 * 1024


def ok(data: Any, status: int = 200) -> Response:
    """A JSON answer with the given status."""
    resp = jsonify(data)
    resp.status_code = status
    return resp


def secret() -> bytes:
    """The key that signs file tokens in record values."""
    return str(current_app.config["SECRET_KEY"]).encode()


def bool_arg(name: str) -> bool:
    """A true/false query argument (absent is false); 400 for anything else."""
    v = request.args.get(name, "false").lower()
    if v not in ("true", "false", "1", "0", ""):
        raise BadRequest(f"{name} must be true or false")
    return v in ("true", "1")


def parse_filter_arg() -> Any:
    """The ``filter`` query argument as a JSON filter tree (None when absent)."""
    raw = request.args.get("filter")
    if raw in (None, ""):
        return None
    if len(raw) > 100_000:
        raise BadRequest("the filter is too long")
    try:
        tree = json.loads(raw)
    except (ValueError, RecursionError):  # JSONDecodeError is a ValueError, as is a 4300+ digit number
        raise BadRequest("filter must be a JSON filter tree") from None
    check_input(tree, "the filter")
    return tree


def requested_view(t: TableDef) -> dict[str, Any] | None:
    """The view named by the ``view`` query argument (404 for an unknown one), or None."""
    key = request.args.get("view")
    return t.view(key) if key else None


def record_reader(conn: Connection, cat: Catalog, access: Access) -> RecordReader:
    reader = RecordReader(cat, conn, access, secret=secret())
    if "auth_version" in g:  # users' names from the process's cache, valid at this request's auth version
        reader.shared_names = platform().auth.user_names(g.auth_version)
    return reader


def record_service(conn: Connection, cat: Catalog, access: Access) -> RecordService:
    svc = RecordService(cat, conn, access, secret=secret())
    if "auth_version" in g:  # the records it reads back show users' names from the process's cache too
        svc.reader.shared_names = platform().auth.user_names(g.auth_version)
    return svc


# --- metadata: who may see and change definitions ----------------------------------------------------
def require_meta_right(access: Access, kind: str = "app") -> None:
    """403 unless the caller may change definitions of this kind: automations need the automation right,
    everything else (apps, tables, fields, views, dashboards, trash, export) the build right.

    The one place routes check these rights; it goes once MetadataService checks them itself.
    """
    if kind == "automation":
        if not access.can_manage_automations():
            raise Forbidden("you may not manage automations")
    elif not access.can_build():
        raise Forbidden("you may not change app definitions")


def meta_service(conn: Connection, cat: Catalog, access: Access) -> MetadataService:
    """The metadata service acting as the caller; a changing request leaves an audit row."""
    if request.method not in ("GET", "HEAD"):
        auth.audit_meta_change(conn, access, request.method, request.path, client_ip())
    return MetadataService(conn, builder_actor(access, client_ip()), cat)


def visible_app(cat: Catalog, access: Access, app_key: str) -> AppDef:
    """The app if the caller may see it (builders and admins see all, others need one visible table)."""
    app = cat.app(app_key)
    if not (access.is_admin or access.can_build() or any(access.can_see_table(cat, t) for t in app.tables)):
        raise NotFound(f"no app '{app_key}'")
    return app


def visible_table(cat: Catalog, access: Access, app_key: str, table_key: str) -> TableDef:
    """The table if the caller may see it (builders see all)."""
    t = cat.table(app_key, table_key)
    if not access.can_see_table(cat, t) and not access.can_build():
        raise NotFound(f"no table '{table_key}' in app '{app_key}'")
    return t


def shown_field_ids(cat: Catalog, access: Access, t: TableDef) -> set[int] | None:
    """Ids of the fields this caller may see defined (None: all, for builders and admins)."""
    if access.can_build():
        return None
    vis = access.field_visibility(cat, t, t.sa)
    return {f.id for f in t.fields if vis.get(f.id, True) is not False}


def table_for(cat: Catalog, access: Access, t: TableDef, data: dict[str, Any]) -> dict[str, Any]:
    """A table document without the definitions of fields hidden from the caller."""
    shown = shown_field_ids(cat, access, t)
    if shown is None:
        return data
    hidden = {f.key for f in t.fields if f.id not in shown} | access.unreadable_fields(cat, t)
    out = {**data, "fields": [f for f in data.get("fields", []) if f.get("id") in shown]}
    out["views"] = [access.visible_view(cat, t, v) for v in data.get("views", [])]
    for name in ("display_field", "owner_field"):
        if out.get(name) in hidden:
            out[name] = None
    if "validations" in out:
        out["validations"] = [v for v in out["validations"] if isinstance(v, dict) and all(
            access.visible_filter(cat, t, v.get(k)) == v.get(k) for k in ("condition", "when"))]
    return out
