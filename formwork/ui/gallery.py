"""The template gallery and app copies: install a bundled template (the CRM) as a new app, with or without
demo data, as a job with a progress bar; save an app to a file and make a new app from such a file.

The same services as the API's ``/meta/templates`` and ``/meta/apps/.../export|import``: the build right,
MetadataService (which checks it again), the portable app format.
"""

from __future__ import annotations

import json
import re
from typing import Any

from flask import Response, current_app, make_response, redirect, request, url_for
from sqlalchemy import select

from formwork import db
from formwork.errors import Forbidden, FormworkError, NotFound
from formwork.metadata import portable
from formwork.metadata.catalog import Catalog
from formwork.metadata.service import MetadataService
from formwork.runtime import auth, jobs
from formwork.runtime.previews import builder_actor
from formwork.ui.context import Page, htmx, make_page, render, visible_app
from formwork.web import RouteSet, client_ip, current_access, unit

routes = RouteSet()
KEY = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
MAX_APP_FILE = 10 * 1024 * 1024


def require_build(p: Page) -> None:
    if not p.access.can_build():
        raise Forbidden(p.t("gl_no_build"))


def free_key(cat: Catalog, base: str) -> str:
    """``base``, or ``base_2``, ``base_3``… when an app already has it."""
    taken = {a.key for a in cat.apps}
    key, n = base, 2
    while key in taken:
        key, n = f"{base}_{n}", n + 1
    return key


def check_key(p: Page, key: str) -> str | None:
    """What is wrong with a new app's key, in words, or None."""
    if not KEY.match(key):
        return p.t("gl_err_key")
    if any(a.key == key for a in p.cat.apps):
        return p.t("gl_err_key_taken", app_key=key)
    return None


def gallery_context(p: Page, form: dict[str, str] | None = None) -> dict[str, Any]:
    templates = []
    for tpl in portable.list_templates():
        templates.append({**tpl, "suggested": (form or {}).get(f"key.{tpl['name']}") or free_key(p.cat, tpl["name"])})
    return {"templates": templates, "apps": [a for a in p.cat.apps], "form": form or {},
            "import_key": (form or {}).get("import_key", "")}


@routes.get("/templates")
def gallery_page() -> Response:
    access = current_access()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        require_build(p)
        return render(p, "gallery.html", errors={}, **gallery_context(p))


@routes.post("/templates/<name>/install")
def gallery_install(name: str) -> Response:
    access = current_access()
    with unit(write=True) as (conn, cat):
        p = make_page(conn, cat, access)
        require_build(p)
        portable.template_dir(name)  # 404 for an unknown template
        form = dict(request.form.items())
        key = (form.get(f"key.{name}") or "").strip()
        error = check_key(p, key)
        if error:
            return render(p, "gallery.html", 200, errors={f"key.{name}": error}, **gallery_context(p, form))
        job = jobs.enqueue(conn, "template", access.user_id,
                           {"template": name, "key": key, "demo": form.get(f"demo.{name}") == "1",
                            "language": p.locale})
    jobs.kick(current_app._get_current_object())  # type: ignore[attr-defined]
    return redirect(url_for("ui.gallery_job_page", job_id=job["id"]))  # type: ignore[return-value]


@routes.get("/templates/jobs/<int:job_id>")
def gallery_job_page(job_id: int) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        job = jobs.get_job(conn, access, job_id, current_app._get_current_object())  # type: ignore[attr-defined]
        if job["kind"] != "template":
            raise NotFound("no such job")
        total = job.get("total") or 0
        percent = min(100, int(100 * (job.get("progress") or 0) / total)) if total else 0
        new_app = (job.get("result") or {}).get("app")
        if new_app and not any(a.key == new_app for a in cat.apps) and conn.execute(
                select(db.apps.c.id).where(db.apps.c.key == new_app, db.apps.c.deleted_at.is_(None))).first() is None:
            # (the catalog this request loaded may predate the job's commit: the database has the last word)
            new_app = None
        error = job.get("error")
        if error and error.startswith("the process running this job"):
            error = p.t("gl_err_interrupted")
        template = "_gallery_progress.html" if htmx else "gallery_job.html"
        return render(p, template, job=job, percent=percent, new_app=new_app, error=error)


# --- app copies -------------------------------------------------------------------------------------------
@routes.get("/apps/<app_key>/export-file")
def app_export_file(app_key: str) -> Response:
    """The app's definition as a file (no records), to make a copy here or elsewhere."""
    access = current_access()
    with unit(write=True) as (conn, cat):
        p = make_page(conn, cat, access)
        require_build(p)
        app = visible_app(p, app_key)
        doc = portable.export_app(conn, cat, app.key)
        portable.exported_documents(doc)
        auth.audit(conn, "app_exported", user_id=access.user_id, username=access.username, target=f"app:{app.key}",
                   ip=client_ip())
    resp = make_response(json.dumps(doc, ensure_ascii=False, indent=1))
    resp.headers["Content-Type"] = "application/json; charset=utf-8"
    resp.headers["Content-Disposition"] = f'attachment; filename="{app.key}.formwork.json"'
    return resp


@routes.post("/apps/import-file")
def app_import_file() -> Response:
    """A new app from a file saved by "Save to a file" (here or on another Formwork)."""
    access = current_access()
    with unit(write=True) as (conn, cat):
        p = make_page(conn, cat, access)
        require_build(p)
        form = dict(request.form.items())
        key = (form.get("import_key") or "").strip()
        errors: dict[str, str] = {}
        part = request.files.get("app_file")
        doc: Any = None
        if part is None or not part.filename:
            errors["app_file"] = p.t("gl_err_choose_file")
        else:
            raw = part.stream.read(MAX_APP_FILE + 1)
            try:
                doc = json.loads(raw) if len(raw) <= MAX_APP_FILE else None
            except (ValueError, RecursionError):
                doc = None
            if not isinstance(doc, dict) or doc.get("format") != portable.FORMAT:
                errors["app_file"] = p.t("gl_err_not_app")
        if key:
            why = check_key(p, key)
            if why:
                errors["import_key"] = why
        elif isinstance(doc, dict):
            key = free_key(cat, str((doc.get("app") or {}).get("key") or "app"))
        if not errors:
            svc = MetadataService(conn, builder_actor(access, client_ip()), cat)
            try:
                with conn.begin_nested():
                    app = portable.import_app(svc, doc, key)
            except FormworkError as e:
                detail = "; ".join(f"{k}: {', '.join(map(str, v)) if isinstance(v, list) else v}"
                                   for k, v in (e.details or {}).items())
                errors["app_file"] = p.t("gl_err_import", detail=detail or e.message)
            else:
                return redirect(url_for("ui.app_page", app_key=app.key))  # type: ignore[return-value]
        return render(p, "gallery.html", 200, errors=errors, **gallery_context(p, form))
