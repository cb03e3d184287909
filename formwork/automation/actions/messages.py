"""Actions that tell someone: email and webhooks (queued, sent after commit) and in-app notifications."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from formwork.automation.actions.base import (
    KEY,
    LOCALIZED_TEMPLATE,
    TEMPLATE,
    TEMPLATES,
    Action,
    CheckContext,
    RunContext,
)
from formwork.automation.actions.people import (
    addresses,
    emails,
    manager_of_owner,
    manager_of_parent_owner,
    owner_id,
    parent_link_problem,
    resolve_users,
    users_by_role,
)
from formwork.automation.delivery import private_url_problem
from formwork.automation.runs import StepFailed, plain
from formwork.metadata.catalog import label_text
from formwork.runtime import notifications

ROLES: dict[str, Any] = {"type": "array", "maxItems": 50, "items": KEY}
#: whether a saved webhook URL may name a private or loopback host: the operator's allowance
#: (FORMWORK_WEBHOOK_ALLOW_PRIVATE), set for each request by create_app(); off outside requests
allow_private_urls: ContextVar[bool] = ContextVar("allow_private_urls", default=False)


def _recipient_checks(a: dict[str, Any], pointer: str, chk: CheckContext) -> None:
    for name in ("owner", "manager", "parent_manager"):
        if a.get(name) and chk.table is None:
            chk.err(f"{pointer}/{name}", "needs a triggering record")
    if a.get("parent_manager") and chk.table is not None:
        problem = parent_link_problem(chk.table, chk.cat, a["parent_manager"])
        if problem:
            chk.err(f"{pointer}/parent_manager", problem)


class SendEmail(Action):
    type = "send_email"
    label = "Send an email"
    properties = {"to": TEMPLATES, "cc": TEMPLATES, "subject": TEMPLATE, "body": TEMPLATE, "html": TEMPLATE,
                  "roles": ROLES, "owner": {"type": "boolean"}, "manager": {"type": "boolean"},
                  "parent_manager": KEY}

    def check(self, a: dict[str, Any], pointer: str, chk: CheckContext) -> None:
        if not (a.get("to") or a.get("roles") or a.get("owner") or a.get("manager") or a.get("parent_manager")):
            chk.err(f"{pointer}/to", "needs at least one recipient ('to', 'roles', 'owner' or 'manager': true)")
        _recipient_checks(a, pointer, chk)
        for name in ("to", "cc", "subject", "body", "html"):
            chk.templated(a.get(name), f"{pointer}/{name}")
        if not a.get("subject"):
            chk.err(f"{pointer}/subject", "is required")

    def run(self, a: dict[str, Any], path: list[Any], ex: RunContext) -> Any:
        to = addresses(ex.render(a.get("to") or []))
        for role in a.get("roles") or []:
            to += emails(ex.conn, users_by_role(ex.conn, role))
        if a.get("owner"):
            owner = owner_id(ex)
            to += emails(ex.conn, [owner] if owner is not None else [])
        if a.get("manager"):
            to += emails(ex.conn, [manager_of_owner(ex)])
        if a.get("parent_manager"):
            to += emails(ex.conn, [manager_of_parent_owner(ex, a["parent_manager"])])
        to = list(dict.fromkeys(to))
        if not to:
            raise StepFailed("the email has no recipient (the 'to' templates rendered empty and no role member "
                             "or owner has an email address)")
        request = {"to": to, "cc": addresses(ex.render(a.get("cc") or [])),
                   "subject": str(ex.render(a["subject"]) or ""), "body": str(ex.render(a.get("body") or "")),
                   "html": ex.render(a["html"]) if a.get("html") else None}
        return ex.queue_delivery("email", request, path)


class CallWebhook(Action):
    """POST JSON to a URL, signed with the action's secret (write-only: never shown back)."""

    type = "call_webhook"
    label = "Call a webhook"
    properties = {"url": TEMPLATE, "secret": {"type": "string", "maxLength": 500}, "payload": True,
                  "timeout": {"type": "number", "minimum": 0.1, "maximum": 30}}
    secrets = ("secret",)

    def check(self, a: dict[str, Any], pointer: str, chk: CheckContext) -> None:
        if not a.get("url"):
            chk.err(f"{pointer}/url", "is required")
        else:
            chk.template(f"{pointer}/url", a["url"])
            if not a["url"].lower().startswith(("http://", "https://", "{{")):
                chk.err(f"{pointer}/url", "must start with http:// or https://")
            elif "{" not in a["url"] and not allow_private_urls.get():
                problem = private_url_problem(a["url"])
                if problem:
                    chk.err(f"{pointer}/url", f"calls to private or local addresses are refused ({problem}); "
                                              "the operator may allow them with FORMWORK_WEBHOOK_ALLOW_PRIVATE=1")
        if "payload" in a:
            chk.templated(a["payload"], f"{pointer}/payload")

    def run(self, a: dict[str, Any], path: list[Any], ex: RunContext) -> Any:
        payload = ex.render(a["payload"]) if "payload" in a else plain(
            {"rule": ex.rule["key"], "trigger": ex.req.trigger_ctx, "record": ex.record() or None})
        request = {"url": str(ex.render(a["url"])), "payload": payload, "secret": a.get("secret"),
                   "timeout": float(a.get("timeout") or 10)}
        return ex.queue_delivery("webhook", request, path)


class Notify(Action):
    type = "notify"
    label = "Notify users in the app"
    properties = {"users": TEMPLATES, "roles": ROLES, "owner": {"type": "boolean"}, "manager": {"type": "boolean"},
                  "parent_manager": KEY, "title": LOCALIZED_TEMPLATE, "body": LOCALIZED_TEMPLATE}

    def check(self, a: dict[str, Any], pointer: str, chk: CheckContext) -> None:
        if not (a.get("users") or a.get("roles") or a.get("owner") or a.get("manager") or a.get("parent_manager")):
            chk.err(f"{pointer}/users", "name 'users', 'roles', 'owner': true or 'manager': true")
        _recipient_checks(a, pointer, chk)
        if not a.get("title"):
            chk.err(f"{pointer}/title", "is required")
        for name in ("users", "title", "body"):
            chk.templated(a.get(name), f"{pointer}/{name}")

    def run(self, a: dict[str, Any], path: list[Any], ex: RunContext) -> Any:
        users = resolve_users(ex.conn, addresses(ex.render(a.get("users") or [])))
        for role in a.get("roles") or []:
            users += users_by_role(ex.conn, role)
        if a.get("owner"):
            owner = owner_id(ex)
            if owner is not None:
                users.append(owner)
        if a.get("manager"):
            users.append(manager_of_owner(ex))
        if a.get("parent_manager"):
            users.append(manager_of_parent_owner(ex, a["parent_manager"]))
        # a title (and body) may be given per language: each reader then sees theirs only
        raw_title, raw_body = a["title"], a.get("body") or ""
        message = None
        if isinstance(raw_title, dict) or isinstance(raw_body, dict):
            locales = [k for k in ("en", "zh-CN") if (isinstance(raw_title, dict) and k in raw_title)
                       or (isinstance(raw_body, dict) and k in raw_body)]
            titles = {k: str(ex.render(label_text(raw_title, k))) for k in locales}
            bodies = {k: str(ex.render(label_text(raw_body, k))) for k in locales}
            message = notifications.localized(titles, bodies)
            title, body = titles.get("en") or titles[locales[0]], bodies.get("en") or bodies[locales[0]]
        else:
            title, body = str(ex.render(raw_title)), str(ex.render(raw_body))
        link = {"app": ex.app.key, "table": ex.t.key if ex.t else None, "record_id": ex.rid}
        if not ex.dry:
            notifications.notify(ex.conn, users, "automation", title, body, link, message=message)
        return {"users": sorted(set(users)), "title": title}
