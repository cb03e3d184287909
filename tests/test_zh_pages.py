"""One language at a time (issue 14): a zh-CN administrator walks every page reachable from the navigation
of the CRM (installed without demo data, so the only user data are the people's names) and of an app built
with Chinese names only, and no page shows English words: not in text, not in a button's or input's
accessible name, not in a placeholder or a tooltip."""

from __future__ import annotations

import re
from collections import Counter
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urldefrag, urlsplit

import pytest
from sqlalchemy import update

from formwork import db
from tests.helpers import Api
from tests.test_ui_pages import login

pytestmark = pytest.mark.one_backend  # the words shown do not depend on the database

#: words that are the same in Chinese UIs: product and format names, units, protocol names
ALLOWED = {"Formwork", "CRM", "CSV", "XLSX", "Excel", "API", "URL", "JSON", "SMTP", "HTTP", "HTTPS", "UTC", "SLA",
           "PDF", "QR", "Webhook", "webhook", "Token", "ROI", "KPI", "IP", "ECharts", "GMT", "ID", "TSV", "Bearer",
           "SKU", "VIP", "IT", "ERP", "AAA", "Alt", "Ctrl", "Shift", "Enter", "Esc", "Tab",
           "English"}  # the language picker names each language in itself
#: links the walk does not follow: downloads, sign-out, files
SKIP = re.compile(r"/(logout|export-file|export\.|audit\.csv|files/|static/)|\.(csv|xlsx|png|svg|json)(\?|$)")
URLISH = re.compile(r"(https?://\S+|(?<![\w])/[\w/.?=&%-]+|\.\w{2,5}\b)")  # addresses, file suffixes
WORD = re.compile(r"[A-Za-z][A-Za-z'’-]+[A-Za-z]")


class VisibleText(HTMLParser):
    """What a person reads on the page or hears from a screen reader: text outside scripts and styles,
    and the accessible names and hints carried by attributes."""

    ATTRS = ("aria-label", "title", "placeholder", "alt")

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.links: list[str] = []
        self._skip = 0
        self._user = 0  # inside an element marked as user data (names, e-mails, typed values)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag in ("script", "style", "template", "textarea", "code", "kbd"):
            self._skip += 1
        if tag == "a" and a.get("href"):
            self.links.append(a["href"] or "")
        if tag in ("input", "option") and a.get("type") not in ("submit", "button"):
            return  # a typed or stored value is the user's
        if not self._skip:
            self.parts.extend(v for k, v in attrs if k in self.ATTRS and v)
            if tag == "input" and a.get("type") in ("submit", "button") and a.get("value"):
                self.parts.append(a["value"] or "")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "template", "textarea", "code", "kbd") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip and data.strip():
            self.parts.append(data)


def english_words(page: str, user_data: set[str]) -> set[str]:
    parser = VisibleText()
    parser.feed(page)
    found: set[str] = set()
    for part in parser.parts:
        for name in sorted(user_data, key=len, reverse=True):  # an e-mail before the name inside it
            part = part.replace(name, " ")
        part = URLISH.sub(" ", part)
        found.update(w for w in WORD.findall(part) if w not in ALLOWED)
    return found


def crawl(client: Any, start: list[str], user_data: set[str], limit: int = 160) -> dict[str, set[str]]:
    """Every page reachable from ``start`` (each URL shape at most twice: /apps/crm/customers/7 and /8 are one
    shape), with the English words each shows."""
    seen: set[str] = set()
    shapes: Counter[str] = Counter()
    todo = list(start)
    leaks: dict[str, set[str]] = {}
    while todo and len(seen) < limit:
        url = todo.pop(0)
        if url in seen:
            continue
        seen.add(url)
        resp = client.get(url)
        assert resp.status_code < 500, (url, resp.status_code)
        if resp.status_code != 200 or not resp.content_type.startswith("text/html"):
            continue
        page = resp.get_data(as_text=True)
        words = english_words(page, user_data)
        if words:
            leaks[url] = words
        parser = VisibleText()
        parser.feed(page)
        for href in parser.links:
            href = urldefrag(href)[0]
            parts = urlsplit(href)
            if parts.scheme or parts.netloc or not href.startswith("/") or SKIP.search(href):
                continue
            shape = re.sub(r"\d+", "N", parts.path) + ("?" if parts.query else "")
            if href not in seen and shapes[shape] < 2:
                shapes[shape] += 1
                todo.append(href)
    return leaks


def test_every_page_in_zh_cn_shows_no_english(app: Any, admin: Api) -> None:
    admin.ok("POST", "/meta/templates/crm/install", {"demo_data": False})
    admin.ok("POST", "/meta/apps", {"key": "kehu", "label": {"zh-CN": "客户管理"}})
    admin.ok("POST", "/meta/apps/kehu/tables", {"key": "kh", "label": {"zh-CN": "客户"}, "fields": [
        {"key": "mc", "label": {"zh-CN": "名称"}, "type": "text", "required": True},
        {"key": "je", "label": {"zh-CN": "金额"}, "type": "number"},
        {"key": "rq", "label": {"zh-CN": "日期"}, "type": "date"},
        {"key": "jd", "label": {"zh-CN": "阶段"}, "type": "single_select", "options": {"choices": [
            {"value": "a", "label": {"zh-CN": "初步接触"}}, {"value": "b", "label": {"zh-CN": "成交"}}]}}]})
    admin.ok("POST", "/data/kehu/kh", {"fields": {"mc": "华为", "je": 1250, "rq": "2026-05-01", "jd": "a"}})
    admin.ok("POST", "/admin/users", {"username": "lina", "name": "李娜", "email": "lina@example.com",
                                      "password": "correct-horse-9", "roles": []})
    with db.transaction(app.extensions["formwork"].engine) as conn:
        conn.execute(update(db.users).values(locale="zh-CN", timezone="Asia/Shanghai"))
        people = {r.username: r for r in conn.execute(db.users.select())}
        conn.execute(update(db.users).where(db.users.c.username == "lina").values(is_admin=True))
    user_data = {p.name for p in people.values()} | {p.username for p in people.values()} | {
        p.email for p in people.values() if p.email}
    client, _ = login(app, "lina")
    leaks = crawl(client, ["/", "/apps/crm", "/apps/kehu", "/admin", "/account", "/templates", "/search"],
                  user_data)
    audit = client.get("/admin/audit").get_data(as_text=True)  # design changes said in words, not addresses
    assert "/api/v1" not in audit and "安装模板「客户关系管理」" in audit and "新建：客户管理 · 数据表" in audit
    assert not leaks, "\n".join(f"{url}: {sorted(words)}" for url, words in sorted(leaks.items()))

