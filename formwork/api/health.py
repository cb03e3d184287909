"""GET /api/v1/health: is the database reachable, and is a worker running the automations?

No login: load balancers, uptime checks and `formwork run`'s users ask it. It tells nothing about the
data, only the state of the database and of the worker heartbeat (formwork.automation.heartbeat).
"""

from __future__ import annotations

import logging

from flask import Response
from sqlalchemy.exc import SQLAlchemyError

from formwork.api.common import ok
from formwork.automation.heartbeat import MISSING, worker_status
from formwork.web import RouteSet, unit

routes = RouteSet()
log = logging.getLogger("formwork.health")


@routes.get("/health")
def health() -> Response:
    """Health of the database and the automation worker (no login needed)."""
    try:
        with unit(write=False) as (conn, cat):
            worker = worker_status(conn, cat)
    except SQLAlchemyError as e:
        log.warning("health: the database is unreachable: %s", str(e).splitlines()[0][:300])
        resp = ok({"status": "unavailable", "database": {"ok": False},
                   "worker": {"status": "unknown", "last_seen": None}}, 503)
    else:
        resp = ok({"status": "degraded" if worker.status == MISSING else "ok", "database": {"ok": True},
                   "worker": worker.to_dict()})
    resp.headers["Cache-Control"] = "no-store"
    return resp
