"""The CRM's code hooks, registered at start-up (``formwork.metadata.portable.register_template_hooks``)."""

from __future__ import annotations

from typing import Any


def register() -> None:
    from formwork_templates.crm import service, stock

    stock.register()
    service.register()


def upgrade(svc: Any, app: Any, report: dict[str, Any]) -> None:
    """Data moved by the upgrade to version 2 (formwork.metadata.upgrade): typed stock becomes opening stock
    movements into a main warehouse, typed quote totals become one quote line each, typed campaign revenue
    gives way to the won opportunities linked to the campaign. The typed fields then go to the trash."""
    from formwork_templates.crm import stock

    stock.upgrade_data(svc, app, report)
