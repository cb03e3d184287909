"""Chart data for dashboard widgets, drawn in the browser by Apache ECharts (static/dashboards.js).

The server computes the numbers and every word (labels in the reader's language, from field labels and
choice labels); the page carries each chart as JSON in a ``data-chart`` attribute (htmx drops ``<script>``
blocks from what it swaps in), never as executable script. Numbers are formatted on the client for the UI
language (¥1.2万 / ¥12K).
"""

from __future__ import annotations

from typing import Any

from formwork.metadata.catalog import TableDef
from formwork.ui.render import PALETTE_HEX, choice_map, format_currency, format_number

CHARTS = ("bar", "stacked_bar", "line", "area", "pie", "donut", "funnel", "gauge")


def number_text(value: Any, fmt: str | None = None) -> str:
    if value is None:
        return "—"
    if fmt == "currency":
        return format_currency(value, "CNY", 0)
    if fmt == "percent":
        return format_number(float(value) * 100, 1) + "%"
    if isinstance(value, float) and not value.is_integer():
        return format_number(value, 2)
    return format_number(value, 0)


def bucket_label(p: Any, bucket: str | None, value: str) -> str:
    """A date bucket's key in words: Mar 2026 / 2026年3月, 2026 Q1 / 2026年第1季度."""
    zh = p.locale == "zh-CN"
    try:
        if bucket == "month":
            y, m = value.split("-")
            return f"{y}年{int(m)}月" if zh else f"{p.t('dash_month_' + str(int(m)))} {y}"
        if bucket == "quarter":
            y, q = value.split("-Q")
            return f"{y}年第{q}季度" if zh else f"Q{q} {y}"
        if bucket == "week":
            y, w = value.split("-W")
            return f"{y}年第{int(w)}周" if zh else f"W{int(w)} {y}"
        if bucket == "year":
            return f"{value}年" if zh else value
    except ValueError:
        pass
    return value


def field_label(p: Any, t: TableDef | None, spec: str) -> str:
    key, _, bucket = spec.partition(":")
    f = t.fields_by_key.get(key) if t is not None else None
    name = p.label(f.label) if f is not None else key
    return p.t("dash_bucketed", field=name, bucket=p.t(f"dash_bucket_{bucket}")) if bucket else name


def metric_label(p: Any, t: TableDef | None, spec: str) -> str:
    """count → "Count"; sum:amount → "Sum of Amount" / "金额合计"."""
    fn, _, key = spec.partition(":")
    if not key:
        return p.t("dash_m_count")
    f = t.fields_by_key.get(key) if t is not None else None
    return p.t(f"dash_m_{fn}", field=p.label(f.label) if f is not None else key)


def key_text(p: Any, t: TableDef | None, spec: str, v: Any) -> str:
    """One group key's value as the reader reads it: choice labels, user names, link displays, (empty)."""
    name, _, bucket = spec.partition(":")
    if v is None:
        return str(p.t("empty_group"))
    if isinstance(v, dict):
        return str(v.get("name") or v.get("display") or v.get("id"))
    f = t.fields_by_key.get(name) if t is not None else None
    if f is not None and f.ftype.has_choices:
        return choice_map(f, p.locale).get(str(v), (str(v), ""))[0]
    if isinstance(v, bool):
        return str(p.t("yes") if v else p.t("no"))
    if bucket:
        return bucket_label(p, bucket, str(v))
    return str(v)


def series_format(metric: str, fmt: str | None) -> str:
    """Counts are plain numbers whatever the widget's format; a ratio of counts is a share."""
    if metric.startswith("count"):
        return "number"
    return fmt or "number"


def _shift_key(bucket: str | None, value: Any) -> Any:
    """A bucket key one year later (2025-03 → 2026-03): lines a year-ago series up with this year's."""
    if not isinstance(value, str) or not bucket or not value[:4].isdigit():
        return value
    return str(int(value[:4]) + 1) + value[4:]


def chart_spec(p: Any, t: TableDef | None, w: dict[str, Any], data: dict[str, Any],
               drill: list[str], fmt: str | None) -> dict[str, Any]:
    """What dashboards.js needs to draw one chart: categories, series, drill links and words."""
    typ = w["type"]
    spec: dict[str, Any] = {"type": typ, "format": fmt or "number", "locale": p.locale,
                            "colors": list(w.get("colors") or PALETTE_HEX), "drill": drill,
                            "words": {"target": p.t("dash_target"), "empty": p.t("dash_no_data")}}
    if typ == "gauge":
        spec.update(value=data.get("value"), goal=data.get("goal"), name=p.label(w.get("label") or w["key"]))
        return spec
    group_by = data.get("group_by") or []
    metrics = data.get("metrics") or ["count"]
    groups = data.get("groups") or []
    value_of = "value" if (w.get("ratio") or w.get("ratio_of")) else None
    if typ == "stacked_bar" and len(group_by) == 2:
        g0, g1 = group_by
        cats: dict[str, int] = {}
        stacks: dict[str, int] = {}
        for g in groups:
            cats.setdefault(key_text(p, t, g0, g["key"].get(g0.split(":")[0])), len(cats))
            stacks.setdefault(key_text(p, t, g1, g["key"].get(g1.split(":")[0])), len(stacks))
        matrix: list[list[Any]] = [[None] * len(cats) for _ in stacks]
        links: list[list[str]] = [[""] * len(cats) for _ in stacks]
        m = value_of or metrics[0]
        for i, g in enumerate(groups):
            c = cats[key_text(p, t, g0, g["key"].get(g0.split(":")[0]))]
            s = stacks[key_text(p, t, g1, g["key"].get(g1.split(":")[0]))]
            matrix[s][c] = g.get(m)
            links[s][c] = drill[i] if i < len(drill) else ""
        spec.update(categories=list(cats), drill=links, axis=field_label(p, t, g0),
                    series=[{"name": name, "data": matrix[j], "stack": "all", "format": series_format(m, fmt)}
                            for name, j in stacks.items()])
        return spec
    labels = [" / ".join(key_text(p, t, s, g["key"].get(s.split(":")[0])) for s in group_by) for g in groups]
    shown = [value_of] if value_of else metrics[:3 if typ in ("bar", "line", "area") else 1]
    series = [{"name": p.t("dash_ratio") if m == "value" else metric_label(p, t, m), "data": [g.get(m) for g in groups],
               "format": series_format(m, fmt)} for m in shown]
    if "targets" in data:
        tg = data["targets"]
        if "by_owner" in tg and group_by:
            name = group_by[0].split(":")[0]
            series.append({"name": p.t("dash_target"), "target": True, "format": fmt or "number", "data": [
                tg["by_owner"].get(str(g["key"][name]["id"]) if isinstance(g["key"].get(name), dict) else "")
                for g in groups]})
        elif tg.get("total") is not None:
            spec["goal"] = tg["total"]
    cmp = data.get("compare")
    if cmp and typ in ("line", "area") and shown:
        m = shown[0]
        before = cmp.get("groups") or []
        if cmp["kind"] == "previous_year" and group_by:
            g0 = group_by[0]
            name, _, bucket = g0.partition(":")
            by_key = {_shift_key(bucket, g["key"].get(name)): g.get(m) for g in before}
            values = [by_key.get(g["key"].get(name)) for g in groups]
        else:
            values = [g.get(m) for g in before][: len(groups)]
            values += [None] * (len(groups) - len(values))
        series.append({"name": p.t(f"dash_cmp_{cmp['kind']}"), "data": values, "compare": True,
                       "format": series_format(m, fmt)})
    spec.update(categories=labels, series=series, axis=" / ".join(field_label(p, t, s) for s in group_by))
    return spec
