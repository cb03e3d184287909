"""Messages the record writer gives people (state flows, parent scopes), in the reader's language.

The API's error ``message`` and ``details`` carry them as they are, so a page shows them next to the
input that caused them without translating again.
"""

from __future__ import annotations

from typing import Any

MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        "parent_locked": "you may not add or change records under this {field}",
        "flow_start": "a new record cannot start as “{to}” (it starts as {allowed})",
        "flow_move": "cannot move from “{frm}” to “{to}” (allowed: {allowed})",
        "flow_move_none": "cannot move from “{frm}”: it is a final state",
        "flow_who": "you may not move it from “{frm}” to “{to}”",
        "flow_required": "is required when {state} is “{to}”",
        "nothing": "nothing",
    },
    "zh-CN": {
        "parent_locked": "你无权在该{field}下新增或修改记录",
        "flow_start": "新记录不能以“{to}”开始（可用：{allowed}）",
        "flow_move": "不能从“{frm}”变更为“{to}”（允许：{allowed}）",
        "flow_move_none": "“{frm}”是最终状态，不能再变更",
        "flow_who": "你无权从“{frm}”变更为“{to}”",
        "flow_required": "{state}为“{to}”时必填",
        "nothing": "无",
    },
}


def msg(locale: str | None, key: str, **kw: Any) -> str:
    table = MESSAGES.get(locale or "en") or MESSAGES["en"]
    return table.get(key, MESSAGES["en"][key]).format(**kw)
