"""Automation routes added to the /api/v1 blueprint (see formwork.runtime.api)."""

from __future__ import annotations

from formwork.runtime.api import api

__all__ = ["api"]
