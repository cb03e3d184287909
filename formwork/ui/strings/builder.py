"""Words of the builder pages (apps, tables, fields, views, select options, formulas)."""

STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "builder_name": "Name", "builder_advanced": "Advanced",
        "builder_name_other": "Name in Chinese",
        "builder_key": "Key (API name)",
        "builder_key_help": "Left empty, it is made from the name. Lower-case letters, digits and _.",
        "builder_first_field_default": "Name", "builder_label_needed": "Give it a name.",
    },
    "zh-CN": {
        "builder_name": "名称", "builder_advanced": "高级设置",
        "builder_name_other": "英文名称",
        "builder_key": "标识（接口名）",
        "builder_key_help": "留空时根据名称自动生成。只能用小写字母、数字和下划线。",
        "builder_first_field_default": "名称", "builder_label_needed": "请填写名称。",
    },
}
