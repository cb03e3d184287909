"""Small helpers for API tests."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy import func, literal, select, text, union_all


class Api:
    """A JSON client: every call returns (status, body) and checks the error shape on failures."""

    def __init__(self, client: Any, token: str | None = None, csrf: str | None = None) -> None:
        self.client = client
        self.token = token
        self.csrf = csrf

    def _headers(self, extra: dict[str, str] | None) -> dict[str, str]:
        h: dict[str, str] = {}
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        if self.csrf:
            h["X-CSRF-Token"] = self.csrf
        h.update(extra or {})
        return h

    def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
             raw: bytes | None = None, **kw: Any) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        resp = self.client.open("/api/v1" + path, method=method, data=data, headers=self._headers(headers),
                                content_type="application/json" if data is not None else None, **kw)
        try:
            payload = resp.get_json()
        except Exception:  # noqa: BLE001 - non-JSON bodies (files) are returned raw
            payload = resp.data
        if resp.status_code >= 400:
            assert isinstance(payload, dict) and "error" in payload, (resp.status_code, resp.data[:300])
            assert resp.status_code < 500, payload
        self.last = resp
        return resp.status_code, payload

    def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        return self.call("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        return self.call("POST", path, body, **kw)

    def patch(self, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        return self.call("PATCH", path, body, **kw)

    def delete(self, path: str, **kw: Any) -> tuple[int, Any]:
        return self.call("DELETE", path, **kw)

    def ok(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        status, payload = self.call(method, path, body, **kw)
        assert status < 300, (status, payload)
        return payload

    def records(self, app: str, table: str, **params: Any) -> list[dict[str, Any]]:
        qs = "&".join(f"{k}={quote(json.dumps(v) if isinstance(v, dict | list) else str(v))}"
                      for k, v in params.items())
        return self.ok("GET", f"/data/{app}/{table}" + (f"?{qs}" if qs else ""))["records"]


SNAPSHOT_SKIPS = ("fw_audit", "fw_session", "fw_user", "fw_login_attempt", "alembic_version")  # sign-ins


def db_snapshot(app: Any) -> dict[str, Any]:
    """Every table's row count and columns and the schema version: to prove a failed request changed nothing.

    Two statements whatever the number of tables (the catalog's columns, then every count in one UNION ALL):
    reflecting table by table cost PostgreSQL a second per snapshot."""
    engine = app.extensions["formwork"].engine
    if engine.dialect.name == "postgresql":
        cols_sql = ("SELECT table_name, column_name FROM information_schema.columns "
                    "WHERE table_schema = current_schema()")
    else:
        cols_sql = ("SELECT m.name, p.name FROM sqlite_master m JOIN pragma_table_info(m.name) p "
                    "WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'")
    out: dict[str, Any] = {}
    with engine.connect() as conn:
        columns: dict[str, list[str]] = {}
        for table, column in conn.execute(text(cols_sql)).all():
            if table not in SNAPSHOT_SKIPS:
                columns.setdefault(table, []).append(column)
        names = sorted(columns)
        if names:
            union = union_all(*(select(literal(i), func.count()).select_from(sa.table(name))
                                for i, name in enumerate(names)))
            for i, n in conn.execute(union).all():
                out[names[i]] = n
        for name in names:
            out[name + ".columns"] = sorted(columns[name])
    return out
