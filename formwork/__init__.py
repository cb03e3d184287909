"""Formwork: a zero-code business-app platform. ``create_app()`` wires everything; importing starts nothing."""

from __future__ import annotations

from typing import Any

from flask import Flask


def create_app(config: dict[str, Any] | None = None) -> Flask:
    from formwork import config as cfg
    from formwork.automation.actions import register_actions
    from formwork.metadata.fieldtypes import register_field_types
    from formwork.web import init_web

    app = Flask(__name__, template_folder="ui/templates", static_folder="ui/static")
    app.config.update(cfg.from_env() if config is None or "SECRET_KEY" not in config else {})
    if config:
        app.config.update(config)
    app.config.setdefault("MAX_CONTENT_LENGTH", 50 * 1024 * 1024)
    register_field_types()
    register_actions()
    init_web(app)
    return app
