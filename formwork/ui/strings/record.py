"""Words of the record pages: new records, pool buttons, state flows, comments."""

STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "rec_created_elsewhere": "Created. The record belongs to someone else now, so it is not in your list.",
        "rec_assign_to": "Assign to", "rec_button_done": "Done: {label}",
        "rec_add_related": "Add: {what}", "rec_comments": "Comments", "rec_comment_label": "Comment",
        "rec_mention": "Mention", "rec_comment_send": "Post comment", "rec_timeline": "Timeline",
        "rec_mention_hint": "Write @username (or pick someone) to notify a person who can see this record.",
        "rec_commented": "commented", "rec_edited": "edited", "rec_edit_comment": "Edit comment",
        "rec_delete_comment": "Delete comment", "rec_delete_comment_q": "Delete this comment?",
    },
    "zh-CN": {
        "rec_created_elsewhere": "已创建。该记录现在归属他人，因此不在你的列表中。",
        "rec_assign_to": "分配给", "rec_button_done": "已完成：{label}",
        "rec_add_related": "新增：{what}", "rec_comments": "评论", "rec_comment_label": "评论内容",
        "rec_mention": "提及", "rec_comment_send": "发表评论", "rec_timeline": "动态",
        "rec_mention_hint": "输入 @用户名（或从列表选择）可通知能查看此记录的人。",
        "rec_commented": "发表了评论", "rec_edited": "已编辑", "rec_edit_comment": "编辑评论",
        "rec_delete_comment": "删除评论", "rec_delete_comment_q": "确定删除这条评论？",
    },
}
