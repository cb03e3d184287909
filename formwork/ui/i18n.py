"""UI strings per locale. Labels of apps, tables and fields come from their definitions instead."""

from __future__ import annotations

import importlib
import pkgutil

LOCALES = {"en": "English", "zh-CN": "中文"}

STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "app_name": "Formwork",
        "login": "Log in", "logout": "Log out", "username": "Username", "password": "Password",
        "wrong_password": "Wrong username or password.",
        "locked": "Too many attempts. Wait a few minutes and try again.",
        "login_required": "Enter your username and password.",
        "apps": "Apps", "no_apps": "No apps yet.", "tables": "Tables", "views": "Views",
        "dashboards": "Dashboards", "new_app": "New app", "new_table": "New table", "new_view": "New view",
        "new_field": "New field", "new_record": "New record", "edit_view": "Edit view",
        "search": "Search…", "filter": "Filter", "add_condition": "Add condition", "apply": "Apply",
        "clear": "Clear", "records": "records", "load_more": "Load more", "no_records": "No records.",
        "delete_selected": "Delete selected", "confirm_delete": "Delete the selected records?",
        "deleted_n": "Deleted {n} records.", "save": "Save", "cancel": "Cancel", "delete": "Delete",
        "restore": "Restore", "edit": "Edit", "back": "Back", "open": "Open", "create": "Create",
        "quick_add": "Add a record…", "add": "Add",
        "stale": "Changed by someone else — reload to see the current values.", "reload": "Reload",
        "fix_errors": "Please correct the highlighted fields.", "saved": "Saved.",
        "history": "History", "no_history": "No changes yet.", "created": "created", "updated": "updated",
        "deleted": "deleted", "restored": "restored", "system": "System",
        "linked_records": "Linked records", "approvals": "Approvals", "pending": "pending",
        "approved": "approved", "rejected": "rejected", "returned": "returned", "approvers": "Approvers",
        "move_to": "Move to", "empty_group": "(empty)", "today": "Today", "prev": "Previous", "next": "Next",
        "more": "more", "board_show_more": "Show more ({n} left)", "record_deleted": "This record is in the trash.",
        "field": "Field", "operator": "Operator", "value": "Value", "type": "Type", "key": "Key",
        "label": "Label", "label_en": "Label (English)", "label_zh": "Label (中文)", "required": "Required",
        "unique": "Unique", "description": "Description", "options": "Options",
        "choices": "Choices", "choices_help": "One per line: value | label | colour",
        "link_table": "Linked table", "multiple": "Allow several", "lookup_link": "Through link field",
        "lookup_field": "Field in the linked table", "rollup_function": "Function",
        "formula": "Formula", "formula_help": "Reference fields as {key}, e.g. {amount} * 0.1",
        "precision": "Decimal places", "min": "Minimum", "max": "Maximum", "currency": "Currency code",
        "prefix": "Prefix", "digits": "Digits",
        "type_change": "Changing the type converts every value.",
        "preview": "Preview of the conversion", "rows": "Rows", "converted": "Converted",
        "emptied": "Would be emptied", "before": "Before", "after": "After",
        "confirm_loss": "I understand that {n} values will be emptied.",
        "confirm_delete_field": "Move this field to the trash?", "fields": "Fields",
        "trash": "Trash", "trash_empty": "The trash is empty.", "deleted_at": "Deleted",
        "kind": "Kind", "view_type": "View type", "grid": "Grid", "kanban": "Kanban", "calendar": "Calendar",
        "gallery": "Gallery", "form": "Form", "visible_fields": "Visible fields", "sort": "Sort",
        "sort_help": "Field keys separated by commas; - for descending, e.g. -amount,name",
        "filter_json": "Filter (JSON filter tree)", "group_field": "Group by (kanban)",
        "date_field": "Date field (calendar)", "end_field": "End date field (calendar)",
        "title_field": "Title field", "cover_field": "Cover field (gallery)", "public": "Public form",
        "success_message": "Success message", "submit_label": "Submit button label",
        "submit": "Submit", "thanks": "Thank you! Your answer was recorded.",
        "form_link": "Public link", "save_as_view": "Save as view",
        "notifications": "Notifications", "no_notifications": "No notifications.", "mark_read": "Mark read",
        "not_found": "Not found", "forbidden": "Not allowed", "error": "Something went wrong",
        "go_home": "Back to apps", "language": "Language", "count_more": "{n}+",
        "none": "—", "yes": "Yes", "no": "No", "choose": "Choose…", "search_records": "Search records…",
        "all_records": "All records", "build": "Build", "edit_fields": "Fields", "dashboard_empty":
        "This dashboard has no widgets.", "widget_forbidden": "You may not see this data.",
        "widget_invalid": "This widget no longer fits its table.", "total": "Total",
        "worker_missing": "Automations are not running: no worker has been seen since {since}. "
                          "Start one with {cmd} (or use {run}).",
        "worker_never_seen": "Automations are not running: no worker has been seen yet. "
                             "Start one with {cmd} (or use {run}).",
        "month_names": "January,February,March,April,May,June,July,August,September,October,November,December",
        "weekdays": "Mon,Tue,Wed,Thu,Fri,Sat,Sun", "month_title": "{month} {year}", "attachments": "files",
        "delete_record": "Move this record to the trash?",
        "rate_limited": "Too many submissions. Wait a minute and try again.",
        "form_expired": "This form has expired. Reload the page and submit again.",
        "table_created": "Table created.", "app_key_help": "Lower-case letters, digits and _",
        "first_field": "First field label", "view_saved": "View saved.",
        "delete_view": "Delete this view?", "build_hint": "Add fields, views and tables here.",
        "no_tables": "This app has no tables yet.",
    },
    "zh-CN": {
        "app_name": "Formwork",
        "login": "登录", "logout": "退出", "username": "用户名", "password": "密码",
        "wrong_password": "用户名或密码错误。", "locked": "尝试次数过多，请稍后再试。",
        "login_required": "请输入用户名和密码。",
        "apps": "应用", "no_apps": "还没有应用。", "tables": "数据表", "views": "视图", "dashboards": "仪表盘",
        "new_app": "新建应用", "new_table": "新建数据表", "new_view": "新建视图", "new_field": "新建字段",
        "new_record": "新建记录", "edit_view": "编辑视图",
        "search": "搜索…", "filter": "筛选", "add_condition": "添加条件", "apply": "应用", "clear": "清除",
        "records": "条记录", "load_more": "加载更多", "no_records": "没有记录。",
        "delete_selected": "删除所选", "confirm_delete": "确定删除所选记录？", "deleted_n": "已删除 {n} 条记录。",
        "save": "保存", "cancel": "取消", "delete": "删除", "restore": "恢复", "edit": "编辑", "back": "返回",
        "open": "打开", "create": "创建", "quick_add": "添加一条记录…", "add": "添加",
        "stale": "该记录已被他人修改，请刷新查看最新内容。", "reload": "刷新",
        "fix_errors": "请修正标出的字段。", "saved": "已保存。",
        "history": "修改历史", "no_history": "暂无修改。", "created": "创建", "updated": "修改",
        "deleted": "删除", "restored": "恢复", "system": "系统",
        "linked_records": "关联记录", "approvals": "审批", "pending": "待审批", "approved": "已通过",
        "rejected": "已驳回", "returned": "已退回", "approvers": "审批人",
        "move_to": "移动到", "empty_group": "（空）", "today": "今天", "prev": "上一页", "next": "下一页",
        "more": "更多", "board_show_more": "显示更多（还有 {n} 条）", "record_deleted": "该记录在回收站中。",
        "field": "字段", "operator": "条件", "value": "值", "type": "类型", "key": "标识",
        "label": "名称", "label_en": "名称（英文）", "label_zh": "名称（中文）", "required": "必填",
        "unique": "唯一", "description": "说明", "options": "选项",
        "choices": "选项列表", "choices_help": "每行一个：值 | 名称 | 颜色",
        "link_table": "关联的数据表", "multiple": "允许多个", "lookup_link": "通过关联字段",
        "lookup_field": "关联表中的字段", "rollup_function": "汇总方式",
        "formula": "公式", "formula_help": "用 {key} 引用字段，例如 {amount} * 0.1",
        "precision": "小数位数", "min": "最小值", "max": "最大值", "currency": "币种代码",
        "prefix": "前缀", "digits": "位数",
        "type_change": "修改类型会转换所有已有的值。",
        "preview": "转换预览", "rows": "行数", "converted": "可转换", "emptied": "将被清空",
        "before": "转换前", "after": "转换后", "confirm_loss": "我已知晓将清空 {n} 个值。",
        "confirm_delete_field": "将该字段移到回收站？", "fields": "字段",
        "trash": "回收站", "trash_empty": "回收站是空的。", "deleted_at": "删除时间",
        "kind": "种类", "view_type": "视图类型", "grid": "表格", "kanban": "看板", "calendar": "日历",
        "gallery": "画册", "form": "表单", "visible_fields": "显示的字段", "sort": "排序",
        "sort_help": "字段标识，用逗号分隔；降序加 -，例如 -amount,name",
        "filter_json": "筛选条件（JSON）", "group_field": "分组字段（看板）",
        "date_field": "日期字段（日历）", "end_field": "结束日期字段（日历）",
        "title_field": "标题字段", "cover_field": "封面字段（画册）", "public": "公开表单",
        "success_message": "提交成功提示", "submit_label": "提交按钮文字",
        "submit": "提交", "thanks": "谢谢！已收到您的提交。",
        "form_link": "公开链接", "save_as_view": "另存为视图",
        "notifications": "通知", "no_notifications": "暂无通知。", "mark_read": "标为已读",
        "not_found": "未找到", "forbidden": "无权访问", "error": "出错了",
        "go_home": "返回应用列表", "language": "语言", "count_more": "{n}+",
        "none": "—", "yes": "是", "no": "否", "choose": "请选择…", "search_records": "搜索记录…",
        "all_records": "全部记录", "build": "搭建", "edit_fields": "字段", "dashboard_empty": "该仪表盘还没有组件。",
        "widget_forbidden": "您无权查看这些数据。", "widget_invalid": "该组件与数据表不再匹配。", "total": "合计",
        "worker_missing": "自动化未在运行：自 {since} 起没有看到后台任务进程。请用 {cmd} 启动一个（或使用 {run}）。",
        "worker_never_seen": "自动化未在运行：还没有看到后台任务进程。请用 {cmd} 启动一个（或使用 {run}）。",
        "month_names": "一月,二月,三月,四月,五月,六月,七月,八月,九月,十月,十一月,十二月",
        "weekdays": "周一,周二,周三,周四,周五,周六,周日", "month_title": "{year}年{n}月", "attachments": "个文件",
        "delete_record": "将该记录移到回收站？", "rate_limited": "提交过于频繁，请一分钟后再试。",
        "form_expired": "表单已过期，请刷新页面后重新提交。",
        "table_created": "数据表已创建。", "app_key_help": "小写字母、数字和下划线",
        "first_field": "第一个字段的名称", "view_saved": "视图已保存。",
        "delete_view": "删除该视图？", "build_hint": "在这里添加字段、视图和数据表。",
        "no_tables": "该应用还没有数据表。",
    },
}

# operator names shown in the filter builder
OPERATORS: dict[str, dict[str, str]] = {
    "en": {"eq": "is", "ne": "is not", "lt": "<", "lte": "≤", "gt": ">", "gte": "≥", "between": "between",
           "in": "is any of", "not_in": "is none of", "contains": "contains", "not_contains": "does not contain",
           "starts_with": "starts with", "ends_with": "ends with", "is_empty": "is empty",
           "is_not_empty": "is not empty", "has_any": "has any of", "has_all": "has all of",
           "has_none": "has none of"},
    "zh-CN": {"eq": "等于", "ne": "不等于", "lt": "小于", "lte": "小于等于", "gt": "大于", "gte": "大于等于",
              "between": "介于", "in": "是其中之一", "not_in": "不是其中之一", "contains": "包含",
              "not_contains": "不包含", "starts_with": "开头是", "ends_with": "结尾是", "is_empty": "为空",
              "is_not_empty": "不为空", "has_any": "包含任一", "has_all": "包含全部", "has_none": "都不包含"},
}


CONFLICTS: list[str] = []  # keys an area catalog defines again (tests/test_i18n.py fails on any)


def _area_catalogs() -> None:
    """Merge the per-area catalogs (``formwork/ui/strings/<area>.py``, each a ``STRINGS`` dict of the same
    shape as the one above) into ``STRINGS``; each page area keeps its own words in its own file. A key
    defined twice is a mistake that tests/test_i18n.py reports, not something resolved silently here."""
    from formwork.ui import strings

    for mod in pkgutil.iter_modules(strings.__path__):
        catalog = importlib.import_module(f"{strings.__name__}.{mod.name}").STRINGS
        for locale, table in catalog.items():
            for key, text in table.items():
                if key in STRINGS[locale]:
                    CONFLICTS.append(f"{mod.name}.{key}")
                    continue
                STRINGS[locale][key] = text


def normalize(locale: str | None) -> str:
    if locale and locale.lower().startswith("zh"):
        return "zh-CN"
    return "en"


def translate(locale: str, key: str, **kw: object) -> str:
    table = STRINGS[normalize(locale)]
    text = table.get(key) or STRINGS["en"].get(key) or key
    return text.format(**kw) if kw else text


def operator_label(locale: str, op: str) -> str:
    return OPERATORS[normalize(locale)].get(op, op)


_area_catalogs()
