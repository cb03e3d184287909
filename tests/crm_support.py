"""Shared set-up of the CRM tests: one installed CRM with demo data per test module (a copy of one install
per backend and run; tests in a module share it and only add records of their own)."""

from __future__ import annotations

import fcntl
import hashlib
import os
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, delete, select, text

from formwork import create_app, db
from formwork.runtime import auth
from tests.conftest import PG_URL, reset_database
from tests.helpers import Api


@dataclass
class Crm:
    app: Any
    admin: Api
    users: dict[str, int]

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


ADMIN_PASSWORD = "admin-pass-1"


def _shared_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder every pytest-xdist worker of this run shares (the run's own base folder without xdist)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def _pg(url: str, statement: str, **params: Any) -> None:
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.execute(text(statement), params)
    finally:
        admin.dispose()


def template_name(root: Path) -> str:
    """The PostgreSQL database holding this run's installed CRM (dropped by the run's controller at the end)."""
    return "fw_crmtpl_" + hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12]


def _install(database_url: str, folder: Path) -> None:
    application = create_app({"DATABASE_URL": database_url, "SECRET_KEY": "test-secret", "TESTING": True,
                              "FILES_DIR": str(folder / "files"), "SMTP_HOST": "127.0.0.1"})
    p = application.extensions["formwork"]
    try:
        reset_database(p.engine)
        p.catalogs.invalidate()
        with db.transaction(p.engine) as conn:
            uid = auth.create_user(conn, {"username": "admin", "name": "Admin", "password": ADMIN_PASSWORD,
                                          "email": "admin@example.com"}, is_admin=True)
            token = auth.create_token(conn, uid, "tests", None)["token"]
        app_doc = Api(application.test_client(), token).ok("POST", "/meta/templates/crm/install",
                                                           {"demo_data": True, "language": "zh-CN"})
        assert app_doc["key"] == "crm"
        with db.transaction(p.engine) as conn:
            conn.execute(delete(db.api_tokens))
    finally:
        p.engine.dispose()


def crm_database(backend_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database of its own holding the CRM installed with demo data and an administrator ``admin``.

    Installing takes seconds per backend, so the first test module of the run that needs one installs it once
    into a template (a SQLite file, or a PostgreSQL template database) under a lock the xdist workers share;
    every module then gets a copy, which takes a fraction of a second. The demo data is generated once per
    run, so modules see the same rows."""
    root = _shared_root(tmp_path_factory)
    sqlite = backend_url.startswith("sqlite")
    ready = root / ("crm-template-sqlite.done" if sqlite else "crm-template-pg.done")
    copy_id = uuid.uuid4().hex[:10]
    with open(root / "crm-template.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if sqlite:
                template = root / "crm-template.db"
                if not ready.exists():
                    _install(f"sqlite:///{template}", root / "crm-template-files")
                    ready.touch()
                target = tmp_path_factory.mktemp("crm") / "crm.db"
                with closing(sqlite3.connect(template)) as src, closing(sqlite3.connect(target)) as dst:
                    src.backup(dst)
                url = f"sqlite:///{target}"
            else:
                assert PG_URL is not None
                base, name = PG_URL.rsplit("/", 1)[0], template_name(root)
                if not ready.exists():
                    _pg(PG_URL, f'DROP DATABASE IF EXISTS "{name}"')
                    _pg(PG_URL, f'CREATE DATABASE "{name}"')
                    _install(f"{base}/{name}", root / "crm-template-files")
                    ready.touch()
                copy = f"fw_crm_{copy_id}"
                _pg(PG_URL, f'CREATE DATABASE "{copy}" TEMPLATE "{name}"')
                url = f"{base}/{copy}"
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    try:
        yield url
    finally:
        if not sqlite:
            _pg(PG_URL or "", "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n",
                n=f"fw_crm_{copy_id}")
            _pg(PG_URL or "", f'DROP DATABASE IF EXISTS "fw_crm_{copy_id}"')


def installed_crm(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Crm]:
    """The CRM with demo data in a database of its own for one test module (``database_url`` picks the
    backend)."""
    folder = tmp_path_factory.mktemp("crm_files")
    for url in crm_database(database_url, tmp_path_factory):
        application = create_app({"DATABASE_URL": url, "SECRET_KEY": "test-secret", "TESTING": True,
                                  "FILES_DIR": str(folder / "files"), "SMTP_HOST": "127.0.0.1"})
        p = application.extensions["formwork"]
        with db.transaction(p.engine) as conn:
            users = {r.username: r.id for r in conn.execute(select(db.users.c.username, db.users.c.id))}
            token = auth.create_token(conn, users["admin"], "tests", None)["token"]
        try:
            yield Crm(application, Api(application.test_client(), token), users)
        finally:
            p.engine.dispose()
