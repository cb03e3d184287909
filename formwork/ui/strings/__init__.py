"""Per-area UI strings: each module holds ``STRINGS = {"en": {...}, "zh-CN": {...}}`` for one part of the
pages (automations, administration, dashboards, ...). ``formwork.ui.i18n`` merges them at import; keys are
global, so prefix them with the area (``auto_``, ``admin_``, ...)."""
