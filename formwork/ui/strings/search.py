"""The global search's words (formwork/ui/search.py)."""

STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "sr_label": "Search everything", "sr_placeholder": "Search everything…",
        "sr_title": "Search", "sr_results_for": "Results for “{q}”",
        "sr_nothing": "Nothing found for “{q}”.", "sr_more_in": "More in {table}…",
        "sr_recent": "Recently viewed", "sr_hint": "Type to search every table you can see.",
    },
    "zh-CN": {
        "sr_label": "全局搜索", "sr_placeholder": "搜索全部…",
        "sr_title": "搜索", "sr_results_for": "“{q}”的搜索结果",
        "sr_nothing": "没有找到“{q}”。", "sr_more_in": "在{table}中查看更多…",
        "sr_recent": "最近查看", "sr_hint": "输入文字，搜索您能看到的所有数据表。",
    },
}
