"""Automation actions, registered explicitly: adding an action is one new class plus one line here."""

from formwork.automation.actions.base import Action, ActionRegistry, action_types
from formwork.automation.actions.flow import Branch, RequestApproval, Wait
from formwork.automation.actions.messages import CallWebhook, Notify, SendEmail
from formwork.automation.actions.pool import RecycleToPool
from formwork.automation.actions.records import AssignOwner, CreateRecord, UpdateRecord, UpdateRelated

ALL_ACTIONS: tuple[type[Action], ...] = (
    UpdateRecord, CreateRecord, UpdateRelated, SendEmail, CallWebhook, Notify, AssignOwner, RequestApproval,
    Wait, Branch, RecycleToPool,
)


def register_actions(registry: ActionRegistry = action_types) -> ActionRegistry:
    """Called once by create_app() (and the worker); importing this module registers nothing.

    With the default registry it also registers the triggers (the automation document's schema,
    formwork.automation.document, is generated from both registries) and the approvals' write guard
    (formwork.runtime.guards)."""
    from formwork.automation.triggers import register_triggers

    for cls in ALL_ACTIONS:
        if cls.type not in registry:
            registry.register(cls())
    if registry is action_types:
        from formwork.automation.approvals import register_guards
        from formwork.metadata.portable import register_template_hooks

        register_triggers()
        register_guards()
        register_template_hooks()
    return registry


__all__ = ["Action", "ActionRegistry", "action_types", "register_actions"]
