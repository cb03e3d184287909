"""The public pool's scheduled clean-up as an action (see formwork.runtime.pool)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from formwork.automation.actions.base import KEY, Action, CheckContext, RunContext
from formwork.automation.runs import naive
from formwork.runtime.pool import pool_problems, recycle


class RecycleToPool(Action):
    type = "recycle_to_pool"
    label = "Return stale records to the pool"
    properties = {"table": KEY}

    def check(self, a: dict[str, Any], pointer: str, chk: CheckContext) -> None:
        target = chk.app.tables_by_key.get(a.get("table", ""))
        if target is None:
            chk.err(f"{pointer}/table", f"no table '{a.get('table')}' in app '{chk.app.key}'")
            return
        for ptr, msgs in pool_problems(target, chk.cat).items():
            for m in msgs:
                chk.err(f"{pointer}/table", f"{ptr}: {m}")

    def run(self, a: dict[str, Any], path: list[Any], ex: RunContext) -> Any:
        """Stale records go back as of the firing time (a late tick recycles what was due then)."""
        due = ex.req.trigger_ctx.get("due_at")
        now = naive(dt.datetime.fromisoformat(due)) if isinstance(due, str) else None
        return recycle(ex.conn, ex.cat, ex.app.table(a["table"]), now=now, origin=ex.rule["key"],
                       depth=ex.req.depth + 1, dry=ex.dry)
