"""The form designer: fields chosen and ordered, sections, help, required, hidden prefilled values (fixed
or from the link), a success message or a redirect (http/https only), the public link with its QR code;
the saved design validates like the API; public forms refuse a filled honeypot and are rate-limited."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.helpers import Api
from tests.test_ui_pages import PASSWORD, html, login


@pytest.fixture
def world(app: Any, admin: Api) -> dict[str, Any]:
    admin.ok("POST", "/meta/apps", {"key": "crm", "label": "CRM"})
    admin.ok("POST", "/meta/apps/crm/tables", {"key": "orgs", "label": "Orgs",
                                               "fields": [{"key": "name", "label": "Name", "type": "text"}]})
    admin.ok("POST", "/meta/apps/crm/tables", {"key": "leads", "label": {"en": "Leads", "zh-CN": "线索"}, "fields": [
        {"key": "name", "label": {"en": "Name", "zh-CN": "姓名"}, "type": "text"},
        {"key": "email", "label": {"en": "Email", "zh-CN": "邮箱"}, "type": "email"},
        {"key": "source", "label": {"en": "Source", "zh-CN": "来源"}, "type": "text"},
        {"key": "campaign", "label": "Campaign", "type": "text"},
        {"key": "org", "label": "Org", "type": "link", "options": {"table": "orgs"}},
        {"key": "cv", "label": "CV", "type": "attachment", "options": {"max_files": 1, "max_size": 1000}},
    ], "views": [{"key": "signup", "label": "Sign up", "type": "form"}]})
    admin.ok("POST", "/admin/users", {"username": "boss", "name": "Boss", "password": PASSWORD, "is_admin": True})
    client, csrf = login(app, "boss")
    return {"client": client, "csrf": csrf, "design": "/apps/crm/leads/forms/signup/design"}


def design_form(csrf: str, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "csrf_token": csrf, "title_en": "Join us", "title_zh": "加入我们", "description": "Tell us about you.",
        "row": ["s:a", "f:email", "f:name", "s:b", "f:source", "f:campaign", "f:org", "f:cv"],
        "sec_a": "About you", "sechelp_a": "Who are you?", "sec_b": "More",
        "on_email": "1", "req_email": "1", "help_email": "We reply here",
        "on_name": "1",
        "on_source": "1", "hid_source": "1", "url_source": "1",
        "on_campaign": "1", "hid_campaign": "1", "val_campaign": "spring",
        "on_cv": "1",
        "success_en": "Welcome aboard", "success_zh": "欢迎加入", "public": "1"}
    data.update(extra)
    return data


def test_design_save_and_fill(app: Any, admin: Api, world: dict[str, Any]) -> None:
    c, csrf = world["client"], world["csrf"]
    page = html(c.get(world["design"]))
    assert "Sortable.min.js" in page and 'name="row" value="f:name"' in page
    resp = c.post(world["design"], data=design_form(csrf))
    assert resp.status_code == 302, resp.get_data(as_text=True)[:2000]
    view = admin.ok("GET", "/meta/apps/crm/tables/leads/views/signup")
    view = view.get("data", view)
    assert view["label"] == {"en": "Join us", "zh-CN": "加入我们"}
    assert view["fields"] == ["email", "name", "source", "campaign", "cv"]
    layout = view["options"]["layout"]
    assert layout[0] == {"section": "About you", "help": "Who are you?"}
    assert layout[1] == {"field": "email", "help": "We reply here", "required": True}
    assert {"field": "campaign", "hidden": True, "value": "spring"} in layout
    assert {"field": "source", "hidden": True, "from_url": True} in layout
    assert view["options"]["public"] is True
    # the designer shows the public link and its QR code (an SVG drawn on the server)
    page = html(c.get(world["design"] + "?saved=1"))
    assert "/f/crm/leads/signup" in page and "qr.svg" in page
    qr = c.get("/apps/crm/leads/forms/signup/qr.svg")
    assert qr.status_code == 200 and qr.mimetype == "image/svg+xml" and b"<svg" in qr.data
    # the public form: sections, order, help; hidden fields are not inputs a visitor sees
    anon = app.test_client()
    form = html(anon.get("/f/crm/leads/signup?source=newsletter&campaign=hack"))
    assert form.index("About you") < form.index('for="in-email"') < form.index('for="in-name"') < form.index("More")
    assert "We reply here" in form and 'name="campaign"' not in form
    assert 'type="hidden" name="source" value="newsletter"' in form
    token = re.search(r'name="form_token" value="([^"]+)"', form).group(1)  # type: ignore[union-attr]
    # required by the form: refused next to the field, nothing created
    bad = html(anon.post("/f/crm/leads/signup", data={"form_token": token, "name": "Ann", "source": "newsletter"}),
               422)
    assert "Fill in this field." in bad and admin.records("crm", "leads") == []
    ok = html(anon.post("/f/crm/leads/signup", data={"form_token": token, "name": "Ann", "email": "a@example.com",
                                                     "source": "newsletter", "campaign": "hack"}))
    assert "Welcome aboard" in ok
    rec = admin.records("crm", "leads")[0]["fields"]
    assert rec["source"] == "newsletter" and rec["campaign"] == "spring"  # a fixed value is not the visitor's
    # the honeypot: the robot is thanked (it learns nothing) and nothing is created
    robot = anon.post("/f/crm/leads/signup", data={"form_token": token, "name": "Bot", "email": "b@example.com",
                                                   "website": "http://spam.example"})
    assert robot.status_code == 200 and len(admin.records("crm", "leads")) == 1
    # the internal form offers a record picker for the link field when it is on the form
    c.post(world["design"], data=design_form(csrf, on_org="1"))
    inner = html(c.get("/apps/crm/leads/forms/signup"))
    assert "link-search/org" in inner
    public = html(anon.get("/f/crm/leads/signup"))
    assert "link-search" not in public


def test_redirect_and_bad_input(app: Any, admin: Api, world: dict[str, Any]) -> None:
    c, csrf = world["client"], world["csrf"]
    before = admin.ok("GET", "/meta/apps/crm/tables/leads/views/signup")
    for url in ("javascript:alert(1)", "ftp://example.com/x", "//evil.example", "https://ex ample.com"):
        text = html(c.post(world["design"], data=design_form(csrf, redirect_url=url)), 422)
        assert "http://" in text and "https://" in text
        assert url.replace("&", "&amp;") in text or "javascript" in url  # what was typed is kept
    # a prefilled value that doesn't fit its field is refused next to it (an email field takes an address)
    text = html(c.post(world["design"], data=design_form(csrf, val_email="not an address")), 422)
    assert "fit the field" in text and 'value="not an address"' in text
    text = html(c.post(world["design"], data=design_form(csrf, title_en="", title_zh="")), 422)
    assert "Give the form a title." in text
    text = html(c.post(world["design"], data={**design_form(csrf), "row": ["s:a"]}), 422)
    assert "at least one field" in text
    assert admin.ok("GET", "/meta/apps/crm/tables/leads/views/signup") == before
    assert c.post(world["design"], data=design_form(csrf, redirect_url="https://example.com/thanks")).status_code == 302
    anon = app.test_client()
    form = html(anon.get("/f/crm/leads/signup"))
    token = re.search(r'name="form_token" value="([^"]+)"', form).group(1)  # type: ignore[union-attr]
    resp = anon.post("/f/crm/leads/signup", data={"form_token": token, "email": "x@example.com"})
    assert resp.status_code == 303 and resp.headers["Location"] == "https://example.com/thanks"
    # the API refuses what the designer refuses, and a layout naming a missing field
    code, body = admin.patch("/meta/apps/crm/tables/leads/views/signup",
                             {"options": {"redirect_url": "javascript:alert(1)"}})
    assert code == 422
    code, body = admin.patch("/meta/apps/crm/tables/leads/views/signup", {"options": {"layout": [{"field": "nope"}]}})
    assert code == 422 and "/options/layout/0/field" in str(body)
    # switching the public link off: the public address is gone
    assert c.post(world["design"], data={k: v for k, v in design_form(csrf).items() if k != "public"}
                  ).status_code == 302
    assert anon.get("/f/crm/leads/signup").status_code == 404
    assert c.get("/apps/crm/leads/forms/signup/qr.svg").status_code == 404


def test_old_documents_and_rights(app: Any, admin: Api, world: dict[str, Any]) -> None:
    # a form saved before the designer (fields only) still shows and designs
    admin.ok("POST", "/meta/apps/crm/tables/leads/views", {"key": "old", "label": "Old", "type": "form",
                                                           "fields": ["name", "email"],
                                                           "options": {"public": True}})
    c = world["client"]
    page = html(c.get("/apps/crm/leads/forms/old/design"))
    assert page.index('value="f:name"') < page.index('value="f:email"') < page.index('value="f:source"')
    assert 'name="on_source" value="1" checked' not in page
    anon = app.test_client()
    assert 'for="in-name"' in html(anon.get("/f/crm/leads/old"))
    # the designer is for builders only
    admin.ok("POST", "/admin/roles", {"key": "rep", "label": "Rep", "permissions": {"crm.leads": {"read": "all",
                                                                                                 "create": True}}})
    admin.ok("POST", "/admin/users", {"username": "rep", "name": "Rep", "password": PASSWORD, "roles": ["rep"]})
    rep, rcsrf = login(app, "rep")
    assert rep.get(world["design"]).status_code == 403
    assert rep.post(world["design"], data=design_form(rcsrf)).status_code == 403
    assert rep.get("/apps/crm/leads/forms/old/qr.svg").status_code == 403


def test_a_renamed_field_stays_on_the_form(app: Any, admin: Api, world: dict[str, Any]) -> None:
    c, csrf = world["client"], world["csrf"]
    assert c.post(world["design"], data=design_form(csrf)).status_code == 302
    admin.ok("PATCH", "/meta/apps/crm/tables/leads/fields/email", {"key": "mail"})
    view = admin.ok("GET", "/meta/apps/crm/tables/leads/views/signup")
    layout = view.get("data", view)["options"]["layout"]
    assert {"field": "mail", "help": "We reply here", "required": True} in layout
    # the generic view editor keeps the design when it saves the form view
    page = html(c.get("/apps/crm/leads/views/signup/edit"))
    assert "/forms/signup/design" in page
    resp = c.post("/apps/crm/leads/views/signup/edit", data={
        "csrf_token": csrf, "key": "signup", "label_en": "Join us", "type": "form", "public": "1",
        "fields": ["mail", "name", "source", "campaign"]})
    assert resp.status_code == 302, resp.get_data(as_text=True)[:500]
    view = admin.ok("GET", "/meta/apps/crm/tables/leads/views/signup")
    layout = view.get("data", view)["options"]["layout"]
    assert [i.get("field") for i in layout if "field" in i] == ["mail", "name", "source", "campaign"]
    assert {"section": "About you", "help": "Who are you?"} in layout



def test_help_texts_and_section_titles_in_both_languages(app: Any, admin: Api, world: dict[str, Any]) -> None:
    c, csrf = world["client"], world["csrf"]
    data = design_form(csrf)
    for legacy in ("sec_a", "sechelp_a", "sec_b", "help_email"):
        data.pop(legacy)
    data.update({"sec_a.en": "About you", "sec_a.zh": "关于你", "sechelp_a.en": "", "sechelp_a.zh": "请介绍一下",
                 "sec_b.en": "More", "sec_b.zh": "", "help_email.en": "We reply here",
                 "help_email.zh": "我们会回复到这里", "help_name.en": "", "help_name.zh": "全名"})
    resp = c.post(world["design"], data=data)
    assert resp.status_code == 302, resp.get_data(as_text=True)[:2000]
    layout = admin.ok("GET", "/meta/apps/crm/tables/leads/views/signup")["options"]["layout"]
    assert layout[0] == {"section": {"en": "About you", "zh-CN": "关于你"}, "help": "请介绍一下"}
    assert layout[1] == {"field": "email", "help": {"en": "We reply here", "zh-CN": "我们会回复到这里"},
                         "required": True}
    assert layout[2] == {"field": "name", "help": "全名"} and layout[3] == {"section": "More"}
    # the designer shows each text in its language's box
    page = html(c.get(world["design"]))
    assert 'name="sec_s1.en" value="About you"' in page and 'name="sec_s1.zh" value="关于你"' in page
    assert 'name="sechelp_s1.en" value=""' in page and 'name="sechelp_s1.zh" value="请介绍一下"' in page
    assert 'name="help_name.en" value=""' in page and 'name="help_name.zh" value="全名"' in page
    assert 'name="sec_s2.en" value="More"' in page
    # a visitor reads their language (Accept-Language), the other where one is missing
    anon = app.test_client()
    en = html(anon.get("/f/crm/leads/signup", headers={"Accept-Language": "en-US,en;q=0.9"}))
    assert "About you" in en and "We reply here" in en and "请介绍一下" in en and "全名" in en
    assert "关于你" not in en and "我们会回复到这里" not in en
    zh = html(anon.get("/f/crm/leads/signup", headers={"Accept-Language": "zh-CN,zh;q=0.9"}))
    assert "关于你" in zh and "我们会回复到这里" in zh and "More" in zh
    assert "About you" not in zh and "We reply here" not in zh
    # the signed-in form follows the account's language
    c.post("/locale", data={"locale": "zh-CN", "next": "/", "csrf_token": csrf})
    inner = html(c.get("/apps/crm/leads/forms/signup"))
    assert "关于你" in inner and "我们会回复到这里" in inner and "About you" not in inner
    # a save with no title in either language for a section drops that section; nothing else is lost
    data.update({"sec_b.en": "", "sec_b.zh": ""})
    assert c.post(world["design"], data=data).status_code == 302
    layout = admin.ok("GET", "/meta/apps/crm/tables/leads/views/signup")["options"]["layout"]
    assert {"section": "More"} not in layout and layout[0]["section"] == {"en": "About you", "zh-CN": "关于你"}
    # a success message in Chinese only stays in the Chinese box
    assert c.post(world["design"], data={**data, "success_en": ""}).status_code == 302
    page = html(c.get(world["design"]))
    assert 'name="success_zh" value="欢迎加入"' in page and 'name="success_en" value=""' in page
