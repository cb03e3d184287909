"""Words of the record pages: new records, pool buttons, state flows, comments."""

STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "rec_created_elsewhere": "Created. The record belongs to someone else now, so it is not in your list.",
        "rec_assign_to": "Assign to", "rec_button_done": "Done: {label}",
    },
    "zh-CN": {
        "rec_created_elsewhere": "已创建。该记录现在归属他人，因此不在你的列表中。",
        "rec_assign_to": "分配给", "rec_button_done": "已完成：{label}",
    },
}
