"""Shared fixtures: a real database per backend (SQLite always, PostgreSQL when configured)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, delete, insert, inspect, text

from formwork import create_app, db
from tests.helpers import Api

PG_URL = os.environ.get("FORMWORK_TEST_DATABASE_URL")


def backends() -> list[str]:
    return ["sqlite", "postgresql"] if PG_URL else ["sqlite"]


@pytest.fixture(scope="session", params=backends())
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"
        return
    assert PG_URL is not None
    name = f"fw_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    base = PG_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as c:
            c.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name})
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


def reset_database(engine: Any) -> None:
    """Drop user tables and empty the platform tables: each test starts from a fresh database."""
    names = inspect(engine).get_table_names()
    with db.transaction(engine) as conn:
        for name in names:
            if name.startswith(("t_", "j_")):
                conn.execute(text(f'DROP TABLE IF EXISTS "{name}"'))
        for table in reversed(db.platform_md.sorted_tables):
            conn.execute(delete(table))
        conn.execute(insert(db.state).values(name=db.SCHEMA_VERSION, value=1))


_APPS: dict[str, Any] = {}


@pytest.fixture
def app(database_url: str, tmp_path: Any) -> Iterator[Any]:
    """The Flask app on a freshly emptied database.

    One app per database is built and reused: building one compiles ~380 URL rules (a quarter of a
    second), which over the whole suite cost minutes. Each test gets a clean database, a fresh catalog,
    its own files folder and the configuration restored afterwards.
    """
    application = _APPS.get(database_url)
    if application is None:
        application = create_app({"DATABASE_URL": database_url, "SECRET_KEY": "test-secret", "TESTING": True,
                                  "SMTP_HOST": "127.0.0.1"})
        _APPS[database_url] = application
    config = dict(application.config)
    application.config["FILES_DIR"] = str(tmp_path / "files")
    engine = application.extensions["formwork"].engine
    reset_database(engine)
    application.extensions["formwork"].catalogs.invalidate()
    from formwork.runtime.ratelimit import form_limiter, login_limiter

    login_limiter.reset()
    form_limiter.reset()
    try:
        yield application
    finally:
        jobs = application.extensions.pop("formwork_jobs", None)
        if jobs is not None:
            jobs.wait()  # a job's thread must not hold a connection past the engine's disposal
        application.config.clear()
        application.config.update(config)
        from formwork.metadata.schema_editor import wait_for_search_indexes

        wait_for_search_indexes()  # search indexes built after a commit, in the background
        engine.dispose()


@pytest.fixture
def backend(database_url: str) -> str:
    return "postgresql" if database_url.startswith("postgresql") else "sqlite"


@pytest.fixture
def admin(app: Any) -> Api:
    """An API client logged in (by token) as the first administrator."""
    from formwork.runtime import auth

    with db.transaction(app.extensions["formwork"].engine) as conn:
        uid = auth.create_user(conn, {"username": "admin", "name": "Admin", "password": "admin-pass-1",
                                      "email": "admin@example.com"}, is_admin=True)
        token = auth.create_token(conn, uid, "tests", None)["token"]
    return Api(app.test_client(), token)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``one_backend`` check what no database changes (the language of every page, of the demo
    data): they run on SQLite only, so the PostgreSQL half of the suite spends its time on SQL."""
    dropped = [item for item in items if item.get_closest_marker("one_backend") and getattr(
        item, "callspec", None) is not None and item.callspec.params.get("database_url") == "postgresql"]
    if dropped:
        gone = {id(item) for item in dropped}
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if id(item) not in gone]


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The run's controller (not an xdist worker) drops the PostgreSQL template the CRM tests copy from."""
    if PG_URL is None or hasattr(session.config, "workerinput"):
        return
    from tests.crm_support import template_name

    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is None:
        return
    name = template_name(factory.getbasetemp())
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name})
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    finally:
        admin.dispose()
