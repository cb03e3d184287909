"""Shared set-up of the CRM tests: one installed CRM with demo data per test module (installing takes
seconds, so tests in a module share it and only add records of their own)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from formwork import create_app, db
from formwork.runtime import auth
from tests.conftest import reset_database
from tests.helpers import Api


@dataclass
class Crm:
    app: Any
    admin: Api
    users: dict[str, int]
    install_seconds: float

    def api(self, username: str) -> Api:
        with db.transaction(self.app.extensions["formwork"].engine) as conn:
            token = auth.create_token(conn, self.users[username], "tests", None)["token"]
        return Api(self.app.test_client(), token)

    def sql(self, fn: Any) -> Any:
        """Run ``fn(conn, catalog, app)`` in a transaction: direct SQL on the physical tables."""
        p = self.app.extensions["formwork"]
        with db.transaction(p.engine) as conn:
            cat = p.catalogs.get(conn)
            return fn(conn, cat, cat.app("crm"))


def installed_crm(database_url: str, tmp: Any) -> Iterator[Crm]:
    application = create_app({"DATABASE_URL": database_url, "SECRET_KEY": "test-secret", "TESTING": True,
                              "FILES_DIR": str(tmp / "files"), "SMTP_HOST": "127.0.0.1"})
    p = application.extensions["formwork"]
    reset_database(p.engine)
    p.catalogs.invalidate()
    with db.transaction(p.engine) as conn:
        uid = auth.create_user(conn, {"username": "admin", "name": "Admin", "password": "admin-pass-1",
                                      "email": "admin@example.com"}, is_admin=True)
        token = auth.create_token(conn, uid, "tests", None)["token"]
    admin = Api(application.test_client(), token)
    started = time.perf_counter()
    app_doc = admin.ok("POST", "/meta/templates/crm/install", {"demo_data": True})
    seconds = time.perf_counter() - started
    assert app_doc["key"] == "crm"
    with p.engine.connect() as conn:
        users = {r.username: r.id for r in conn.execute(select(db.users.c.username, db.users.c.id))}
    yield Crm(application, admin, users, seconds)
    p.engine.dispose()
