"""Words of the record pages: new records, pool buttons, state flows, comments."""

STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "rec_created_elsewhere": "Created. The record belongs to someone else now, so it is not in your list.",
    },
    "zh-CN": {
        "rec_created_elsewhere": "已创建。该记录现在归属他人，因此不在你的列表中。",
    },
}
