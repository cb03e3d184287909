"""The automation document kind: metadata stores automation rules, this layer knows what they mean.

It wraps the save-time checks and the secret masking of ``formwork.automation.rules``; create_app()
registers it with ``register_document_kinds(AutomationDocument)``.
"""

from __future__ import annotations

from typing import Any

from formwork import db
from formwork.automation.rules import check_automation, mask_secrets
from formwork.metadata.documents import MANAGE_AUTOMATIONS, DocumentContext, DocumentKind


class AutomationDocument(DocumentKind):
    kind = "automation"
    schema = "automation"
    storage = db.automations
    parent = "app"
    right = MANAGE_AUTOMATIONS

    def check_refs(self, ctx: DocumentContext, doc: dict[str, Any]) -> None:
        """Tables, fields, filters and actions must exist; only an administrator may name another run_as."""
        assert ctx.app is not None, "an automation belongs to an app"
        check_automation(ctx.catalog, ctx.app, doc, ctx.conn, ctx.actor)

    def public(self, doc: Any) -> Any:
        """Webhook secrets are write-only: every reader and the change log see the mask."""
        return mask_secrets(doc)
