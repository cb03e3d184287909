"""Incoming webhooks: the secret URL that starts a ``webhook`` rule, and what a call to it does.

A rule has at most one token; only its hash is stored, so a lost token is replaced, never shown again.
A call creates a record in the rule's table (or updates the one whose ``match_field`` holds the sent
value) as the rule's user, and queues a ``webhook`` event naming the rule; the worker runs it.
"""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Connection

from formwork import db
from formwork.automation.intake import emit_event
from formwork.automation.runs import RuleRunner, StepFailed, find_rule
from formwork.automation.triggers.events import Webhook
from formwork.errors import Conflict, NotFound
from formwork.metadata.catalog import Catalog
from formwork.runtime import auth
from formwork.runtime.permissions import Access
from formwork.runtime.records import RecordService

TOKEN_PREFIX = "fwh_"
MAX_TOKEN = 200


def token_hash(token: str) -> str:
    """What is stored (and rate-limited) for a token; 404 for one that cannot be ours."""
    if len(token) > MAX_TOKEN:
        raise NotFound("no such hook")
    return auth.sha256(token)


def create_token(conn: Connection, access: Access, rule: dict[str, Any]) -> str:
    """A new token for a webhook rule, replacing its old one (audited); 409 for other triggers."""
    if rule["trigger"]["type"] != Webhook.type:
        raise Conflict(f"automation '{rule['key']}' is not started by an incoming webhook")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    conn.execute(delete(db.hook_tokens).where(db.hook_tokens.c.automation_id == rule["id"]))
    conn.execute(insert(db.hook_tokens).values(automation_id=rule["id"], token_hash=auth.sha256(token),
                                               prefix=token[:12], created_at=db.utcnow()))
    auth.audit(conn, "hook_token_created", user_id=access.user_id, username=access.username,
               target=f"automation:{rule['id']}")
    return token


def receive(runner: RuleRunner, conn: Connection, cat: Catalog, hashed: str, body: dict[str, Any],
            secret: bytes) -> tuple[int, bool]:
    """Upsert the record ``body["fields"]`` describes and queue the rule's event; returns (record id, created).

    404 unless the token belongs to an enabled webhook rule; 409 when the rule's user cannot act.
    """
    aid = conn.execute(select(db.hook_tokens.c.automation_id).where(db.hook_tokens.c.token_hash == hashed)).scalar()
    found = find_rule(cat, aid) if aid is not None else None
    if found is None or found[1]["trigger"]["type"] != Webhook.type or not found[1].get("enabled", True):
        raise NotFound("no such hook")
    app, rule = found
    t = app.table(rule["trigger"]["table"])
    try:
        access = runner.access_for(conn, rule)
    except StepFailed as e:
        raise Conflict(str(e)) from None
    svc = RecordService(cat, conn, access, secret=secret)
    fields = body["fields"]
    match = rule["trigger"].get("match_field")
    existing = None
    if match and fields.get(match) is not None:
        conds = svc.reader.where(t, {"field": match, "op": "eq", "value": fields[match]})
        existing = conn.execute(select(t.sa.c.id).where(*conds).order_by(t.sa.c.id).limit(1)).scalar()
    rec = svc.update(t, existing, fields) if existing else svc.create(t, fields)
    emit_event(conn, t, rec["id"], Webhook.type, user_id=access.user_id,
               payload={"automation_id": rule["id"], "data": body})
    return rec["id"], existing is None
