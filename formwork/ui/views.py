"""Pages for the browser."""

from __future__ import annotations

from flask import Blueprint

ui = Blueprint("ui", __name__)
