"""The browser UI (htmx pages)."""

from formwork.ui.views import ui

__all__ = ["ui"]
