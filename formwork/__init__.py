"""Formwork: a zero-code business-app platform. ``create_app()`` wires everything; importing starts nothing.

``create_app`` runs in this order: configuration → engine and migrations (``web.init_web``) → registries
(field types, background job kinds) → the route table (:func:`route_table`) → blueprints.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from flask import Flask


def route_table() -> dict[str, tuple[ModuleType, ...]]:
    """Every route module, by the blueprint that holds its ``routes`` (a ``web.RouteSet``).

    The one place where a URL is found: the modules of ``formwork.api`` and ``formwork.ui`` that declare a
    route set, in name order (a module plugs in by declaring ``routes = RouteSet()``; importing one
    registers nothing). A module without routes serves nothing.
    """
    import formwork.api
    import formwork.ui

    return {"api": _route_modules(formwork.api), "ui": _route_modules(formwork.ui)}


def _route_modules(package: ModuleType) -> tuple[ModuleType, ...]:
    import importlib
    import pkgutil

    from formwork.web import RouteSet

    found = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.ispkg:
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        if isinstance(getattr(module, "routes", None), RouteSet):
            found.append(module)
    return tuple(found)


def register_job_kinds() -> None:
    """The kinds of background job the web process runs (see formwork.runtime.jobs)."""
    from formwork.runtime import jobs, transfer

    jobs.register("import", transfer.import_job)
    jobs.register("template", transfer.template_job)
    jobs.register("export", transfer.export_job)


def _no_flask_session() -> Any:
    from flask.sessions import SecureCookieSessionInterface

    class NoFlaskSession(SecureCookieSessionInterface):
        """Flask's signed-cookie session is unused (logins live in fw_session): don't open or save one."""

        def open_session(self, app: Flask, request: Any) -> Any:
            return self.make_null_session(app)

        def save_session(self, app: Flask, session: Any, response: Any) -> None:
            return None

    return NoFlaskSession()


def create_app(config: dict[str, Any] | None = None) -> Flask:
    from formwork import config as cfg
    from formwork.api import URL_PREFIX, make_blueprint
    from formwork.automation.actions import register_actions
    from formwork.automation.actions.messages import allow_private_urls
    from formwork.automation.document import AutomationDocument
    from formwork.metadata.documents import register_document_kinds
    from formwork.metadata.fieldtypes import register_field_types
    from formwork.ui import make_blueprint as make_ui_blueprint
    from formwork.web import init_web

    app = Flask(__name__, template_folder="ui/templates", static_folder="ui/static")
    app.config.update(cfg.from_env() if config is None or "SECRET_KEY" not in config else {})
    if config:
        app.config.update(config)
    app.config.setdefault("MAX_CONTENT_LENGTH", 50 * 1024 * 1024)
    app.session_interface = _no_flask_session()  # sessions are server-side (fw_session); nothing to sign per request
    init_web(app)
    # the operator's allowance of webhook calls to private addresses, for the checks made when a rule is saved
    @app.before_request
    def _webhook_allowance() -> None:
        allow_private_urls.set(bool(app.config.get("WEBHOOK_ALLOW_PRIVATE")))

    register_field_types()
    register_actions()
    register_document_kinds(AutomationDocument)
    register_job_kinds()
    from formwork.runtime import jobs

    jobs.runner(app)  # jobs left running by a process that is gone are marked failed now, not on first use
    table = route_table()
    app.register_blueprint(make_blueprint(m.routes for m in table["api"]), url_prefix=URL_PREFIX)
    app.register_blueprint(make_ui_blueprint(m.routes for m in table["ui"]))
    return app
