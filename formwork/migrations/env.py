"""Alembic environment: runs on the connection that formwork.migrations.upgrade hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy.schema import SchemaItem

from formwork.db import platform_md


def include_object(obj: SchemaItem, name: str | None, type_: str, reflected: bool,
                   compare_to: SchemaItem | None) -> bool:
    """Autogenerate compares only the platform's own tables and indexes."""
    # user tables (t_*, j_*) are managed by the SchemaEditor, not by migrations
    if type_ == "table" and name and not name.startswith("fw_") and name != "alembic_version":
        return False
    return not (type_ == "index" and name and (name.startswith(("ix_t_", "ux_t_", "ix_j_", "tg_t_"))))


def run() -> None:
    conn = context.config.attributes.get("connection")
    if conn is None:
        raise RuntimeError("run migrations through formwork.migrations.upgrade (or `formwork db upgrade`)")
    context.configure(connection=conn, target_metadata=platform_md, include_object=include_object,
                      render_as_batch=True, transactional_ddl=True)
    context.run_migrations()


run()
