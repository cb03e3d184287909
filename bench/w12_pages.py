"""W12: the pages a person waits on — the grid page, a record page with its related list, a kanban board and
a dashboard — as the browser asks for them: the page, then every fragment it loads on arrival
(``hx-trigger="load"``: the record count, the summary row, the buttons…), one after another.

The target is absolute (issue 17: server time p50 ≤ 50 ms at 1M rows), so the baseline is only the empty
Flask request, for scale. Fragments are fetched in sequence, which overstates what a browser (it asks for
them in parallel) waits for.
"""

from __future__ import annotations

import html
import re
from typing import Any

from sqlalchemy import func, select

from bench.harness import Result, alternate

LOADED = re.compile(r'<[^>]*hx-get="([^"]+)"[^>]*hx-trigger="load[^"]*"[^>]*>|'
                    r'<[^>]*hx-trigger="load[^"]*"[^>]*hx-get="([^"]+)"[^>]*>')


class PagesWorkloads:
    client: Any
    headers: dict[str, str]
    engine: Any
    deals: Any
    iterations: int
    rows: int

    def result(self, name: str, target: str, note: str = "") -> Result:  # provided by Bench
        raise NotImplementedError

    def empty(self) -> None:  # provided by Bench
        raise NotImplementedError

    def _page(self, url: str, needle: bytes) -> int:
        """GET the page and the fragments it loads on arrival; the number of requests made."""
        r = self.client.get(url, headers=self.headers)
        assert r.status_code == 200 and needle in r.data, (url, r.status_code, r.data[:300])
        n = 1
        for m in LOADED.finditer(r.get_data(as_text=True)):
            frag = html.unescape(m.group(1) or m.group(2))
            if not frag.startswith("/"):
                continue
            fr = self.client.get(frag, headers={**self.headers, "HX-Request": "true"})
            assert fr.status_code == 200, (frag, fr.status_code, fr.data[:300])
            n += 1
        return n

    def w12(self) -> list[Result]:
        post = self.client.post
        r = post("/api/v1/meta/apps/bench/tables/deals/views", headers=self.headers, json={
            "key": "w12_board", "label": "Board", "type": "kanban",
            "options": {"group_field": "stage", "sum_field": "amount"}})
        assert r.status_code in (201, 409), r.data[:300]
        r = post("/api/v1/meta/apps/bench/dashboards", headers=self.headers, json={
            "key": "w12", "label": "Pipeline", "widgets": [
                {"key": "n", "type": "kpi", "table": "deals"},
                {"key": "total", "type": "kpi", "table": "deals", "metrics": ["sum:amount"], "format": "currency"},
                {"key": "by_stage", "type": "bar", "table": "deals", "group_by": ["stage"]},
                {"key": "by_month", "type": "line", "table": "deals", "group_by": ["close_date:month"]}]})
        assert r.status_code in (201, 409), r.data[:300]
        comps = self.deals.fields_by_key["company"]
        with self.engine.connect() as conn:  # a typical company: the one with the median number of deals
            col = self.deals.sa.c[comps.column_name]
            counts = conn.execute(select(col, func.count()).where(col.is_not(None)).group_by(col)
                                  .order_by(func.count(), col)).all()
        company, n_deals = counts[len(counts) // 2]
        pages = [
            ("W12 grid page + its fragments", "/apps/bench/deals?view=open_by_amount", b"<tr", ""),
            ("W12 record page, related list", f"/apps/bench/companies/{int(company)}", b"<main",
             f"a company with {n_deals} deals"),
            ("W12 kanban page", "/apps/bench/deals?view=w12_board", b"<main", "grouped by stage, sums of amount"),
            ("W12 dashboard page", "/apps/bench/dashboards/w12", b"<main", "4 widgets, no filter"),
        ]
        out = []
        for name, url, needle, note in pages:
            n = self._page(url, needle)
            res = alternate(self.result(name, "p50 ≤ 50 ms at 1M",
                                        note=f"{n} requests; baseline = empty Flask request" + (f"; {note}" if note
                                                                                               else "")),
                            lambda url=url, needle=needle: self._page(url, needle), self.empty,
                            iterations=self.iterations)
            out.append(res)
        return out
