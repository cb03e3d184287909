"""The engine's refusals said in the reader's language.

The record engine (field types, writers, state flows) words its errors in English for the API, where
clients read them. Pages show the same refusals next to the input that caused them, so each known wording is
matched here and said again in the page's language; English pages get a plainer wording only where the
engine's names a key or an id. A message no pattern knows is shown as the engine wrote it (and
tests/test_engine_messages.py checks every message the field types raise is known)."""

from __future__ import annotations

import re
from typing import Any

#: (pattern over the engine's English, Chinese wording, English wording or None to keep the engine's)
PATTERNS: tuple[tuple[str, str, str | None], ...] = (
    (r"is required", "必填", None),
    (r"must be a whole number", "必须是整数", None),
    (r"must be a finite number", "必须是有效的数字", None),
    (r"must be a number smaller than 10\^15", "数字太大（必须小于 10 的 15 次方）", None),
    (r"must be a number or a number with the field's prefix", "必须是数字（可以带该字段的前缀）", None),
    (r"must be a number", "必须是数字", None),
    (r"must be at least (?P<n>\S+)", "不能小于 {n}", None),
    (r"must be at most (?P<n>\d+) characters", "最多 {n} 个字符", None),
    (r"must be at most (?P<n>\S+)", "不能大于 {n}", None),
    (r"must be between 0 and (?P<n>\S+)", "必须在 0 到 {n} 之间", None),
    (r"must be an email address", "必须是有效的邮箱地址", None),
    (r"must be a phone number", "必须是有效的电话号码", None),
    (r"must be a URL starting with http:// or https://", "必须是以 http:// 或 https:// 开头的网址", None),
    (r"must be a date like (?P<d>\S+)", "必须是日期，例如 {d}", None),
    (r"must be a date and time like \S+", "必须是日期和时间，例如 2026-11-23 09:30", "must be a date and time"),
    (r"is not a valid calendar date", "不是有效的日期", None),
    (r"is out of range", "超出允许的范围", None),
    (r"must be true or false", "只能是“是”或“否”", None),
    (r"must be text", "必须是文本", None),
    (r"must not contain NUL characters", "不能包含空字符", None),
    (r"must match the pattern (?P<p>.+)", "格式不正确（应符合 {p}）", None),
    (r"'(?P<v>.*)' is not one of: (?P<s>.+)", "“{v}”不是可选项，可选：{s}", None),
    (r"must be one of the choices \(a string\)", "必须是可选项之一", "must be one of the choices"),
    (r"must be a list of choices", "必须是可选项的列表", None),
    (r"is read-only", "只读，不能修改", None),
    (r"is computed", "由公式计算，不能修改", None),
    (r"is maintained by the platform", "由系统维护，不能修改", None),
    (r"autonumbers are assigned by the platform", "编号由系统自动分配", None),
    (r"no active user '(?P<u>.*)'", "没有名为“{u}”的在职用户", "no active user named “{u}”"),
    (r"must be a user id or username", "请选择一个用户", "choose a user"),
    (r"takes one user", "只能选择一个用户", "choose one user"),
    (r"takes one record id", "只能选择一条记录", "choose one record"),
    (r"must be a record id or a list of record ids", "请选择记录", "choose records"),
    (r"no record with id .+", "所选记录不存在或已被删除，请重新选择",
     "the chosen record no longer exists; choose again"),
    (r"'(?P<n>.+)' is larger than (?P<b>\d+) bytes", "“{n}”超过了大小上限 {size}",
     "“{n}” is larger than the limit of {size}"),
    (r"'(?P<n>.+)' is not an allowed file type", "“{n}”的文件类型不被允许", None),
    (r"takes at most (?P<n>\d+) files", "最多只能上传 {n} 个文件", None),
    (r"unknown file token .*", "文件已失效，请重新上传", "the file has expired; upload it again"),
    (r"must be a list of file tokens from POST /files", "请上传文件", "upload files"),
    (r"computed fields are nested too deeply", "计算字段嵌套层级过深", None),
    (r"cannot be converted to a link", "不能转换为关联", None),
    (r"cannot be converted to attachments", "不能转换为附件", None),
    (r"(?:\S+: )?the value is already used.*", "该值已被其他记录使用", "this value is already used by another record"),
    (r"a unique value is already used by another record", "某个唯一值已被其他记录使用", None),
    (r"is required when (?P<state>.+) is “(?P<to>.+)”", "{state}为“{to}”时必填", None),
    (r"cannot move from “(?P<frm>.+)”: it is a final state", "“{frm}”是最终状态，不能再变更", None),
    (r"cannot move from “(?P<frm>.+)” to “(?P<to>.+)” \(allowed: (?P<allowed>.+)\)",
     "不能从“{frm}”直接变为“{to}”（可以变为：{allowed}）", None),
    (r"record \d+ was changed by someone else.*", "这条记录刚被其他人修改过，请刷新后再试",
     "someone else changed this record just now; reload it and try again"),
    (r"you may not (?P<op>update|delete|create|restore) this record", "你无权{op_zh}这条记录",
     "you may not {op} this record"),
    (r"record \d+ is still linked from '[^']*'; unlink it first", "其他记录仍关联着这条记录，请先解除关联",
     "Other records still link to this one; unlink them first"),
)
#: the formula parser's and type checker's refusals (the editor marks the position; this says why)
FORMULA_PATTERNS: tuple[tuple[str, str, str | None], ...] = (
    (r"formula is empty", "公式为空", None),
    (r"formula must be text", "公式必须是文本", None),
    (r"formula is too long \(max (?P<n>\d+) characters\)", "公式太长（最多 {n} 个字符）", None),
    (r"formula is nested too deeply \(max (?P<n>\d+) levels\)", "公式嵌套太深（最多 {n} 层）", None),
    (r"formula is too complex.*", "公式太复杂，请拆分成几个公式字段", None),
    (r"number is too long \(max (?P<n>\d+) characters\)", "数字太长（最多 {n} 位）", None),
    (r"number is out of range.*", "数字超出范围", None),
    (r"unclosed field reference '\{'", "字段引用缺少右花括号 }}", None),
    (r"invalid field reference \{(?P<k>.*)\} .*", "字段引用 {{{k}}} 无效", None),
    (r"unexpected full-width character '(?P<c>.)' \(type '(?P<h>.)' instead\)",
     "这里不能用全角字符“{c}”，请改用半角的“{h}”", None),
    (r"unexpected character '(?P<c>.+)'", "无法识别的字符“{c}”", None),
    (r"unclosed text: missing closing quote", "文本缺少结尾的引号", None),
    (r"expected '(?P<want>.+)' but found end of formula", "公式不完整：缺少“{want}”", None),
    (r"expected '(?P<want>.+)' but found (?P<got>.+)", "这里应为“{want}”，却是 {got}", None),
    (r"unexpected end of formula", "公式不完整", None),
    (r"unexpected (?P<got>.+)", "这里不应出现 {got}", None),
    (r"unknown name (?P<n>\S+) \(did you mean (?P<h>.+)\?\)", "未知的名称 {n}（是不是想写 {h}？）", None),
    (r"unknown name (?P<n>\S+)", "未知的名称 {n}", None),
    (r"unknown function (?P<n>\S+)", "未知的函数 {n}", None),
    (r"unknown field \{(?P<k>.+)\}", "未知的字段 {{{k}}}", None),
    (r"field \{(?P<k>.+)\} has unsupported type (?P<t>\S+)", "字段 {{{k}}} 的类型不能用在公式里", None),
    (r"(?P<f>\S+) expects at least (?P<n>\d+) arguments?, got (?P<g>\d+)",
     "{f} 至少需要 {n} 个参数，实际有 {g} 个", None),
    (r"(?P<f>\S+) expects no arguments, got (?P<g>\d+)", "{f} 不需要参数，实际有 {g} 个", None),
    (r"(?P<f>\S+) expects (?P<n>\d+) or (?P<m>\d+) arguments, got (?P<g>\d+)",
     "{f} 需要 {n} 或 {m} 个参数，实际有 {g} 个", None),
    (r"(?P<f>\S+) expects (?P<n>\d+) arguments?, got (?P<g>\d+)", "{f} 需要 {n} 个参数，实际有 {g} 个", None),
    (r"(?P<f>.+) expects numbers, got (?P<t>\w+).*", "{f} 需要数字，但这里是{t_zh}", None),
    (r"(?P<f>.+) expects numbers, text or dates, got boolean", "{f} 需要数字、文本或日期，但这里是是/否值", None),
    (r"(?P<f>.+) expects (?:a |an )?(?P<a>number|text|boolean|date|datetime|date or datetime), got (?P<t>\w+)",
     "{f} 需要{a_zh}，但这里是{t_zh}", None),
    (r"(?P<f>.+) values must have the same type, got (?P<a>\w+) and (?P<t>\w+)",
     "{f} 的各个值类型必须一致（这里有{a_zh}和{t_zh}）", None),
    (r"cannot compare (?P<a>\w+) with (?P<t>\w+)", "不能比较{a_zh}和{t_zh}", None),
    (r"cannot use (?P<op>\S+) on booleans.*", "是/否值不能用 {op} 比较（只能用 = 和 !=）", None),
    (r"(?P<f>\S+) digits must be a whole number from -15 to 15", "{f} 的位数必须是 -15 到 15 之间的整数", None),
    (r"(?P<f>\S+) unit must be one of .*",
     "{f} 的单位必须是 days、weeks、months、years、hours、minutes 或 seconds", None),
)
_TYPES_ZH = {"number": "数字", "text": "文本", "boolean": "是/否值", "date": "日期", "datetime": "日期时间",
             "blank": "空值", "date or datetime": "日期或日期时间"}
_COMPILED = [(re.compile(rf"^{pat}$", re.S), zh, en) for pat, zh, en in PATTERNS + FORMULA_PATTERNS]
_OPS_ZH = {"update": "修改", "delete": "删除", "create": "新建", "restore": "恢复"}


def _size(n: int) -> str:
    for unit, step in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= step:
            return f"{n / step:.3g} {unit}"
    return f"{n} B"


def known(message: str) -> bool:
    return any(rx.match(message.strip()) for rx, _zh, _en in _COMPILED)


def say(message: Any, locale: str) -> str:
    """One engine message in the reader's language (unknown ones unchanged)."""
    text = str(message).strip()
    for rx, zh, en in _COMPILED:
        m = rx.match(text)
        if m is None:
            continue
        values = {k: v for k, v in m.groupdict().items() if v is not None}
        if "b" in values:
            values["size"] = _size(int(values["b"]))
        if "op" in values:
            values["op_zh"] = _OPS_ZH.get(values["op"], values["op"])
        for k in ("a", "t"):
            if k in values:
                values[f"{k}_zh"] = _TYPES_ZH.get(values[k], values[k])
        if "got" in values:
            got = values["got"]
            values["got"] = "公式结尾" if got == "end of formula" else "文本" if got == "text" else got
        template = zh if locale.startswith("zh") else en
        return template.format(**values) if template else text
    return text


def refusal(err: Any, locale: str) -> list[str]:
    """A refused write's messages (its per-field details, else its message) in the reader's language, each once,
    in the order the engine gave them."""
    details = getattr(err, "details", None) or {}
    raw = [m for v in details.values() for m in (v if isinstance(v, list) else [v])] or [getattr(err, "message", "")]
    out: list[str] = []
    for m in raw:
        text = say(m, locale)
        if text == str(m).strip() and ": " in text:  # "stage: cannot move …": the reason without the key
            head, _, rest = text.partition(": ")
            if re.fullmatch(r"[a-z][a-z0-9_.]*", head) and say(rest, locale) != rest:
                text = say(rest, locale)
        if text not in out:
            out.append(text)
    return out


def say_all(errors: dict[str, Any] | None, locale: str) -> dict[str, list[str]]:
    """A field → messages map (as the engine's ``details``) said in the reader's language."""
    out: dict[str, list[str]] = {}
    for key, msgs in (errors or {}).items():
        items = msgs if isinstance(msgs, list) else [msgs]
        out[key] = [say(m, locale) for m in items]
    return out
