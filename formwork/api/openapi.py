"""The OpenAPI document of this API; built by formwork.runtime.openapi from the live metadata."""

from __future__ import annotations

from flask import Response, current_app

from formwork.api.common import ok
from formwork.runtime.openapi import document
from formwork.web import RouteSet, current_access, unit

routes = RouteSet()


@routes.get("/openapi.json")
def openapi_document() -> Response:
    """The OpenAPI 3.1 document of this API as the caller sees it."""
    access = current_access()
    with unit() as (_conn, cat):
        doc = document(current_app._get_current_object(), cat, access)  # type: ignore[attr-defined]
    return ok(doc)
