"""The engine's refusals in the reader's language (formwork.ui.engine_messages): every message the field
types raise has a wording in each language, and a zh-CN page shows a refused record's errors in Chinese
next to their inputs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sqlalchemy import update

from formwork import db
from formwork.ui.engine_messages import known, say
from tests.helpers import Api
from tests.test_ui_pages import login

ROOT = Path(__file__).resolve().parent.parent / "formwork"


def _raised() -> set[str]:
    """The field-value messages the field types and the writer raise, with f-string holes filled in."""
    found: set[str] = set()
    for path in [*(ROOT / "metadata" / "fieldtypes").glob("*.py"), *(ROOT / "runtime" / "records").glob("*.py")]:
        for m in re.finditer(r'FieldValueError\(f?"([^"]+)"', path.read_text("utf-8")):
            found.add(re.sub(r"\{[^}]*\}", "7", m.group(1)).replace("'7'", "'x'"))
    return found


def test_every_field_message_has_both_wordings() -> None:
    messages = _raised()
    assert len(messages) > 30
    unknown = sorted(m for m in messages if not known(m))
    assert not unknown, unknown
    for m in messages:
        assert re.search(r"[\u4e00-\u9fff]", say(m, "zh-CN")), m
        assert not re.search(r"[\u4e00-\u9fff]", say(m, "en")), m
    assert say("must be at least 0", "zh-CN") == "不能小于 0"
    assert say("'a.pdf' is larger than 2097152 bytes", "zh-CN") == "“a.pdf”超过了大小上限 2 MB"
    assert say("no record with id 17 in customers", "en") == "the chosen record no longer exists; choose again"
    assert say("something new", "zh-CN") == "something new"  # unknown: shown as the engine wrote it


def test_a_refused_record_in_zh_cn(app: Any, admin: Api) -> None:
    admin.ok("POST", "/meta/apps", {"key": "kehu", "label": {"zh-CN": "客户管理", "en": "Accounts"}})
    admin.ok("POST", "/meta/apps/kehu/tables", {"key": "kh", "label": {"zh-CN": "客户", "en": "Accounts"}, "fields": [
        {"key": "mc", "label": {"zh-CN": "名称", "en": "Name"}, "type": "text", "required": True},
        {"key": "je", "label": {"zh-CN": "金额", "en": "Amount"}, "type": "number", "options": {"min": 0}},
        {"key": "yx", "label": {"zh-CN": "邮箱", "en": "E-mail"}, "type": "email"},
        {"key": "rq", "label": {"zh-CN": "日期", "en": "Date"}, "type": "date"}]})
    client, csrf = login_zh(app)
    resp = client.post("/apps/kehu/kh/new", data={"csrf_token": csrf, "mc": "", "je": "-5", "yx": "not-mail",
                                                   "rq": "2026-13-45"})
    page = resp.get_data(as_text=True)
    assert resp.status_code == 422
    for said in ("必填", "不能小于 0", "必须是有效的邮箱地址", "不是有效的日期"):
        assert f'role="alert">{said}</div>' in page, said
    assert "must be" not in page and "is required" not in page
    assert 'value="not-mail"' in page  # nothing typed is lost


def login_zh(app: Any) -> tuple[Any, str]:
    from formwork.runtime import auth

    with db.transaction(app.extensions["formwork"].engine) as conn:
        auth.create_user(conn, {"username": "wang", "name": "王芳", "password": "correct-horse-9"}, is_admin=True)
        conn.execute(update(db.users).values(locale="zh-CN"))
    return login(app, "wang")  # type: ignore[no-any-return]


def _filled(fstring: str) -> str:
    """An f-string's text with each hole filled (``{{{node.key}}}`` → ``{7}``, ``{n}`` → ``7``)."""
    text = re.sub(r"\{\{\{[^}]*\}\}\}", lambda _m: "<7>", fstring).replace("{{", "<").replace("}}", ">")
    return re.sub(r"\{[^}]*\}", "7", text).replace("<", "{").replace(">", "}")


def test_every_formula_message_has_a_chinese_wording() -> None:
    """The parser's and type checker's refusals (with their f-string holes filled) each have one."""
    source = (ROOT / "metadata" / "formula.py").read_text("utf-8")
    messages = {_filled(m.group(1)) for m in re.finditer(r'FormulaError\(\s*f?"([^"]+)"', source)}
    messages = {m for m in messages if not m.startswith(("unsupported syntax", "7"))}  # internal / passed through
    assert len(messages) > 20
    missing = sorted(m for m in messages if not re.search(r"[\u4e00-\u9fff]", say(m, "zh-CN")))
    assert not missing, missing
    assert say("expected ')' but found end of formula", "zh-CN") == "公式不完整：缺少“)”"
    assert say("IF expects 2 or 3 arguments, got 1", "zh-CN") == "IF 需要 2 或 3 个参数，实际有 1 个"
    assert say("cannot compare number with text", "zh-CN") == "不能比较数字和文本"
