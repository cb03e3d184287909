"""Attachments on a record's page: the files of each attachment field with thumbnails, a preview and a
download; adding files (button, drag-and-drop, paste) and removing one, both as ordinary record updates so
the record's history shows them. Files are served only to readers who can see the record and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Response, current_app, redirect, request, send_file, url_for
from sqlalchemy import select

from formwork import db
from formwork.errors import Conflict, Forbidden, NotFound, TooLarge, ValidationFailed
from formwork.metadata.catalog import AppDef, FieldDef, TableDef
from formwork.metadata.fieldtypes.base import FILES
from formwork.runtime import files
from formwork.ui.context import Page, make_page, visible_app, visible_table
from formwork.ui.engine_messages import refusal
from formwork.web import RouteSet, current_access, unit

routes = RouteSet()


def size_text(n: int | None) -> str:
    n = int(n or 0)
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.1f} MB"
    return f"{max(1, round(n / 1024))} KB"


def limits(f: FieldDef, public: bool = False) -> dict[str, Any]:
    from formwork.ui.forms import file_limits

    return file_limits(f, public)


def file_url(app_key: str, t: TableDef, rid: int, f: FieldDef, token: str, **args: Any) -> str:
    return url_for("ui.attachment_get", app_key=app_key, table_key=t.key, rid=rid, field_key=f.key, token=token,
                   **args)


def panels(p: Page, app: AppDef, t: TableDef, rec: dict[str, Any], fields: list[FieldDef],
           errors: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
    """One panel per attachment field the viewer sees on this record: its files and, where the viewer may
    change the field, the upload box with the field's limits."""
    out = []
    can_update = _allowed(p, t, rec["id"], "update")
    for f in fields:
        if f.ftype.kind != FILES or not f.stored or f.key not in rec["fields"]:
            continue
        items = []
        for v in rec["fields"].get(f.key) or []:
            kind = files.preview_kind(v.get("mime") or "")
            items.append({"token": v["token"], "name": v["name"], "size": size_text(v.get("size")),
                          "mime": v.get("mime"), "kind": kind,
                          "view": file_url(app.key, t, rec["id"], f, v["token"], inline=1) if kind else None,
                          "thumb": file_url(app.key, t, rec["id"], f, v["token"], thumb=1) if kind == "image"
                          else None,
                          "download": file_url(app.key, t, rec["id"], f, v["token"])})
        editable = can_update and not f.ftype.read_only and f.stored and p.access.field_writable(p.cat, t, f)
        out.append({"f": f, "items": items, "editable": editable, "limits": limits(f),
                    "errors": (errors or {}).get(f.key) or [],
                    "upload": url_for("ui.attachment_upload", app_key=app.key, table_key=t.key, rid=rec["id"],
                                      field_key=f.key)})
    return out


def _allowed(p: Page, t: TableDef, rid: int, op: str) -> bool:
    scope = p.access.scope(p.cat, t, t.sa, op)
    q = select(t.sa.c.id).where(t.sa.c.id == rid, t.sa.c.deleted_at.is_(None))
    if scope is not None:
        q = q.where(scope)
    return p.conn.execute(q).first() is not None


def file_field(t: TableDef, field_key: str) -> FieldDef:
    f = t.fields_by_key.get(field_key)
    if f is None or f.ftype.kind != FILES or not f.stored:
        raise NotFound(f"no attachment field '{field_key}'")
    return f


def check_parts(p: Page, f: FieldDef, parts: list[Any], already: int, public: bool = False) -> list[str]:
    """What is wrong with these uploads before anything is stored: too many files, a disallowed type
    (each message names the limit); sizes are checked while storing."""
    lim = limits(f, public)
    if already + len(parts) > lim["max_files"]:
        return [p.t("files_too_many", n=lim["max_files"], have=already)] if already else \
            [p.t("builder_file_count", n=lim["max_files"])]
    out = []
    for part in parts:
        mime = files.guess_mime(files.safe_name(part.filename), part.mimetype)
        if not files.type_allowed(mime, lim["types"]):
            out.append(p.t("builder_file_type", name=files.safe_name(part.filename), types=", ".join(lim["types"])))
    return out


def store_parts(p: Page, f: FieldDef, parts: list[Any], user_id: int | None, created: list[Path],
                public: bool = False) -> tuple[list[str], list[str]]:
    """Store the uploads (in the caller's transaction); returns (tokens, errors naming the size limit)."""
    lim = limits(f, public)
    folder = current_app.config["FILES_DIR"]
    cap = lim["max_size"] or current_app.config.get("MAX_CONTENT_LENGTH")
    tokens: list[str] = []
    errors: list[str] = []
    for part in parts:
        try:
            tokens.append(files.store_upload(p.conn, part.stream, part.filename, part.mimetype, user_id, folder,
                                             cap, created)["token"])
        except TooLarge:
            mb = lim["max_mb"] or size_text(cap)
            errors.append(p.t("builder_file_size", name=files.safe_name(part.filename), mb=mb))
    return tokens, errors


def _back(app_key: str, table_key: str, rid: int, f: FieldDef, **args: Any) -> Response:
    return redirect(url_for("ui.record_page", app_key=app_key, table_key=table_key, rid=rid,  # type: ignore[return-value]
                            _anchor=f"att-{f.key}", **args))


def _again(p: Page, app: AppDef, t: TableDef, rid: int, errors: dict[str, list[str]], status: int) -> Response:
    from formwork.ui.context import render
    from formwork.ui.record import record_context

    rec = p.reader().get(t, rid)
    return render(p, "record.html", status, **record_context(p, app, t, rec, att_errors=errors), errors={})


def add_files(p: Page, t: TableDef, rid: int, f: FieldDef, parts: list[Any]) -> list[str]:
    """Add uploads to a record's attachment field as one record update (so the history names it): all of
    them or none, a refused file leaving nothing behind. 403 unless the user may change the field on this
    record. Returns what was refused, each message naming the limit broken (empty: saved)."""
    rec = p.reader().get(t, rid)
    if f.key not in rec["fields"]:
        raise NotFound(f"no attachment field '{f.key}'")
    if not p.access.field_writable(p.cat, t, f) or not _allowed(p, t, rid, "update"):
        raise Forbidden("you may not change this field")
    current = [v["token"] for v in rec["fields"].get(f.key) or []]
    errors = [p.t("files_none")] if not parts else check_parts(p, f, parts, len(current))
    created: list[Path] = []
    if not errors:
        try:
            with p.conn.begin_nested():
                tokens, errors = store_parts(p, f, parts, p.access.user_id, created)
                if errors:
                    raise ValidationFailed.from_details({f.key: errors})
                p.service().update(t, rid, {f.key: current + tokens})
        except (ValidationFailed, Conflict) as e:
            files.discard(p.conn, created)
            errors = errors or refusal(e, p.locale)
    return errors


def posted_files() -> list[Any]:
    return [x for x in request.files.getlist("files") if x and x.filename]


@routes.post("/apps/<app_key>/<table_key>/<int:rid>/files/<field_key>")
def attachment_upload(app_key: str, table_key: str, rid: int, field_key: str) -> Response:
    """Add files to a record's attachment field: all of them or none (a refused file leaves nothing behind)."""
    access = current_access()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        app = visible_app(p, app_key)
        t = visible_table(p, app_key, table_key)
        f = file_field(t, field_key)
        errors = add_files(p, t, rid, f, posted_files())
        if errors:
            return _again(p, app, t, rid, {f.key: errors}, 422)
    return _back(app_key, table_key, rid, f, saved=1)


@routes.post("/apps/<app_key>/<table_key>/<int:rid>/files/<field_key>/<token>/remove")
def attachment_remove(app_key: str, table_key: str, rid: int, field_key: str, token: str) -> Response:
    """Take one file off the record: an update like any other, so the history shows the file went."""
    access = current_access()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        visible_app(p, app_key)
        t = visible_table(p, app_key, table_key)
        f = file_field(t, field_key)
        rec = p.reader().get(t, rid)
        current = [v["token"] for v in rec["fields"].get(f.key) or []]
        if f.key not in rec["fields"] or token not in current:
            raise NotFound("no such file")
        if not p.access.field_writable(cat, t, f) or not _allowed(p, t, rid, "update"):
            raise Forbidden("you may not change this field")
        with conn.begin_nested():
            p.service().update(t, rid, {f.key: [x for x in current if x != token]})
    return _back(app_key, table_key, rid, f, saved=1)


@routes.get("/apps/<app_key>/<table_key>/<int:rid>/files/<field_key>/<token>")
def attachment_get(app_key: str, table_key: str, rid: int, field_key: str, token: str) -> Response:
    """A file of a record, to a reader who sees the record and the field (404 otherwise). ``?inline=1``
    shows a picture or a PDF in the browser (sandboxed, never as a page of this site); else a download."""
    access = current_access()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        visible_app(p, app_key)
        t = visible_table(p, app_key, table_key)
        f = file_field(t, field_key)
        rec = p.reader().get(t, rid)
        if token not in [v["token"] for v in rec["fields"].get(f.key) or []]:
            raise NotFound("no such file")
        row = conn.execute(select(db.files).where(db.files.c.token == token)).first()
        if row is None:
            raise NotFound("no such file")
    folder = current_app.config["FILES_DIR"]
    path = files.blob_path(folder, row.sha256)
    if not path.is_file():
        raise NotFound("the file's content is missing from storage")
    kind = files.preview_kind(row.mime)
    inline = request.args.get("inline") == "1" and kind is not None
    mime = row.mime
    if request.args.get("thumb") == "1" and kind == "image":
        small = files.thumbnail(folder, row.sha256, row.mime)
        if small is not None:
            path, mime = small
        inline = True
    resp = send_file(path, mimetype=mime, as_attachment=not inline, download_name=row.name, conditional=True,
                     max_age=0)
    resp.headers["X-Content-Type-Options"] = "nosniff"
    # a picture in a sandbox; a PDF without one (a sandbox stops the browser's PDF viewer) but with no scripts
    resp.headers["Content-Security-Policy"] = "default-src 'none'; sandbox" if kind != "pdf" or not inline \
        else "default-src 'none'; object-src 'self'"
    resp.headers["Cache-Control"] = "private, max-age=300"
    resp.headers["Cross-Origin-Resource-Policy"] = "same-origin"
    return resp


def take_files(p: Page, fields: list[FieldDef], public: bool, user_id: int | None, values: dict[str, Any],
               errors: dict[str, list[str]], created: list[Path]) -> None:
    """Store the files posted under each file field's key (a form, the new-record page) in the caller's
    transaction and put their tokens into ``values``; a file breaking a limit is named in ``errors``.
    The caller rolls back and calls :func:`files.discard` on ``created`` when anything was refused."""
    for f in fields:
        if f.ftype.kind != FILES:
            continue
        parts = [x for x in request.files.getlist(f.key) if x and x.filename]
        if not parts:
            continue
        errs = check_parts(p, f, parts, 0, public)
        if not errs:
            tokens, errs = store_parts(p, f, parts, user_id, created, public)
            if not errs:
                values[f.key] = tokens
        if errs:
            errors.setdefault(f.key, []).extend(errs)
