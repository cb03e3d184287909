"""The automation document kind: metadata stores automation rules, this layer knows what they mean.

It wraps the save-time checks, the schema generated from the action and trigger registries and the
handling of write-only secrets of ``formwork.automation.rules``; create_app() registers it with
``register_document_kinds(AutomationDocument)``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from formwork import db
from formwork.automation.rules import (
    automation_schema,
    check_automation,
    keep_secrets,
    mask_secrets,
    strip_secrets,
)
from formwork.metadata.documents import MANAGE_AUTOMATIONS, DocumentContext, DocumentKind


class AutomationDocument(DocumentKind):
    kind = "automation"
    schema = "automation"
    storage = db.automations
    parent = "app"
    right = MANAGE_AUTOMATIONS
    private = True

    def check_refs(self, ctx: DocumentContext, doc: dict[str, Any]) -> None:
        """Tables, fields, filters and actions must exist; only an administrator may name another run_as."""
        assert ctx.app is not None, "an automation belongs to an app"
        check_automation(ctx.catalog, ctx.app, doc, ctx.conn, ctx.actor)

    def json_schema(self) -> dict[str, Any]:
        """automation.json with its action and trigger definitions generated from the registries."""
        return automation_schema()

    def public(self, doc: Any) -> Any:
        """Webhook secrets are write-only: every reader and the change log see the mask."""
        return mask_secrets(doc)

    def incoming(self, doc: Any, stored: Callable[[], dict[str, Any] | None]) -> Any:
        """An action sent back with the masked secret (or without it) keeps the stored action's secret."""
        if not isinstance(doc, dict) or "actions" not in doc:
            return doc
        return {**doc, "actions": keep_secrets(doc["actions"], (stored() or {}).get("actions") or [])}

    def exported(self, doc: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """Secrets never leave the instance: the export says which ones to set again after import."""
        out = copy.deepcopy(doc)
        return out, strip_secrets(out)
