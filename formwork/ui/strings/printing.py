"""Words of the print page (a record on paper: a quote, an order)."""

STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "print_button": "Print", "print_open": "Print view", "print_back": "Back to the record",
        "print_printed_at": "Printed {when}", "print_no_lines": "No lines",
    },
    "zh-CN": {
        "print_button": "打印", "print_open": "打印预览", "print_back": "返回记录",
        "print_printed_at": "打印时间 {when}", "print_no_lines": "暂无明细",
    },
}
