"""Alembic migrations of the platform's own tables (user tables are derived from metadata instead)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

HERE = Path(__file__).parent


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the platform tables to ``revision``; safe to call on every start."""
    from formwork import db

    cfg = alembic_config()
    with db.transaction(engine) as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
        if conn.execute(select(db.state.c.name).where(db.state.c.name == db.SCHEMA_VERSION)).first() is None:
            conn.execute(insert(db.state).values(name=db.SCHEMA_VERSION, value=1))
