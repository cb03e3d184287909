"""Automation triggers, registered explicitly: adding a trigger is one new class plus one line here."""

from formwork.automation.triggers.base import Firer, Trigger, TriggerCheck, TriggerRegistry, trigger_types
from formwork.automation.triggers.events import (
    FormSubmitted,
    Manual,
    RecordCreated,
    RecordDeleted,
    RecordUpdated,
    Webhook,
)
from formwork.automation.triggers.timed import DateReached, Schedule

ALL_TRIGGERS: tuple[type[Trigger], ...] = (
    RecordCreated, RecordUpdated, RecordDeleted, FormSubmitted, Schedule, DateReached, Manual, Webhook,
)


def register_triggers(registry: TriggerRegistry = trigger_types) -> TriggerRegistry:
    """Called once at start-up (by ``register_actions()``); importing this module registers nothing."""
    for cls in ALL_TRIGGERS:
        if cls.type not in registry:
            registry.register(cls())
    return registry


__all__ = ["ALL_TRIGGERS", "Firer", "Trigger", "TriggerCheck", "TriggerRegistry", "register_triggers",
           "trigger_types"]
