"""The CRM's code hooks, registered at start-up (``formwork.metadata.portable.register_template_hooks``)."""

from __future__ import annotations


def register() -> None:
    from formwork_templates.crm import service, stock

    stock.register()
    service.register()
