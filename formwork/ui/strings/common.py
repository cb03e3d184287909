"""Words several page areas share."""

STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "my_account": "My account", "administration": "Administration", "automations": "Automations",
        "approval_inbox": "My approvals", "new_dashboard": "New dashboard",
        "close": "Close", "menu": "Menu", "select_all_rows": "Select all rows",
        "remove_condition": "Remove this condition",
    },
    "zh-CN": {
        "my_account": "我的账号", "administration": "系统管理", "automations": "自动化",
        "approval_inbox": "待我审批", "new_dashboard": "新建仪表盘",
        "close": "关闭", "menu": "菜单", "select_all_rows": "全选", "remove_condition": "删除该条件",
    },
}
