"""Import and export of records, background jobs, file upload and download."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from flask import Response, current_app, request, send_file

from formwork.api.common import bool_arg, ok, parse_filter_arg, secret
from formwork.errors import BadRequest, reject_unknown_args
from formwork.runtime import files, jobs, transfer
from formwork.runtime.tabular import TabularError
from formwork.web import RouteSet, client_ip, current_access, platform, unit

routes = RouteSet()
JOB_ROWS = 5000
JOB_BYTES = 2 * 1024 * 1024
EXPORT_ARGS = {"format", "view", "filter", "sort", "fields", "search", "header"}


def files_dir() -> Path:
    return Path(current_app.config["FILES_DIR"])


def uploaded_file() -> Any:
    """The multipart part named ``file``; 400 without one."""
    part = request.files.get("file")
    if part is None:
        raise BadRequest("send the file as multipart/form-data in a part named 'file'")
    return part


def save_import(part: Any) -> tuple[Path, int]:
    """Keep the upload on disk (imports may outlive the request as a job); returns (path, size)."""
    folder = files_dir() / "imports"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / uuid.uuid4().hex
    size = 0
    with path.open("wb") as out:
        while chunk := part.stream.read(files.CHUNK):
            size += len(chunk)
            out.write(chunk)
    return path, size


def import_response(report: dict[str, Any]) -> Response:
    """A failed all-or-nothing import is a 422 that still carries the whole report."""
    if transfer.import_failed(report):
        message = transfer.import_failure_message(report)
        return ok({"error": {"code": "validation_error", "message": message}, **report}, 422)
    return ok(report)


# --- import ------------------------------------------------------------------------------------------
@routes.post("/data/<app_key>/<table_key>/import")
def import_records(app_key: str, table_key: str) -> Response:
    access = current_access()
    part = uploaded_file()
    opts = transfer.ImportOptions.parse(request.form)
    with unit(write=False) as (_conn, cat):
        t = cat.table(app_key, table_key)
        access.require(cat, t, "import")
    name = files.safe_name(part.filename)
    path, size = save_import(part)
    keep = False
    try:
        try:
            fh, reader = transfer.open_file(path, name, lenient=opts.on_error == "skip")
            with fh, reader:
                transfer.plan_import(cat, t, access, reader.header, opts)
            rows = None if size > current_app.config.get("IMPORT_JOB_BYTES", JOB_BYTES) \
                else transfer.count_rows(path, name, lenient=opts.on_error == "skip")
        except TabularError as e:
            raise BadRequest(e.message) from None
        if rows is None or rows > current_app.config.get("IMPORT_JOB_ROWS", JOB_ROWS):
            params = {"app": app_key, "table": table_key, "path": str(path), "name": name, "size": size,
                      "options": opts.to_params()}
            with unit(write=True) as (conn, _cat):
                job = jobs.enqueue(conn, "import", access.user_id, params, total=rows)
            keep = True
            jobs.kick(current_app._get_current_object())  # type: ignore[attr-defined]
            resp = ok({"job": job}, 202)
            resp.headers["Location"] = f"/api/v1/jobs/{job['id']}"
            return resp
        with unit(write=True) as (conn, cat):
            t = cat.table(app_key, table_key)
            try:
                report = transfer.run_import(conn, cat, access, t, path, name, opts, secret())
            except TabularError as e:
                raise BadRequest(e.message) from None
            transfer.audit_import(conn, access, app_key, t.key, name, opts, report, client_ip())
        return import_response(report)
    finally:
        if not keep:
            path.unlink(missing_ok=True)


@routes.get("/jobs/<int:job_id>")
def get_job(job_id: int) -> Response:
    access = current_access()
    with unit() as (conn, _cat):
        return ok({"job": jobs.get_job(conn, access, job_id, current_app._get_current_object())})  # type: ignore[attr-defined]


# --- export ------------------------------------------------------------------------------------------
@routes.get("/data/<app_key>/<table_key>/export")
def export_records(app_key: str, table_key: str) -> Response:
    access = current_access()
    reject_unknown_args(request.args, EXPORT_ARGS)
    fmt = request.args.get("format", "csv")
    if fmt not in transfer.EXPORT_FORMATS:
        raise BadRequest("format must be csv or xlsx")
    header = request.args.get("header", "labels")
    if header not in ("labels", "keys"):
        raise BadRequest("header must be labels or keys")
    with unit(write=True) as (conn, cat):
        t = cat.table(app_key, table_key)
        access.require(cat, t, "export")  # before the arguments: no right is a 403 whatever they hold
        view_key = request.args.get("view")
        spec = transfer.ExportSpec(filter_tree=parse_filter_arg(), sort=request.args.get("sort"),
                                   search=request.args.get("search"), fields=request.args.get("fields"),
                                   view=t.view(view_key) if view_key else None, header=header)
        out = transfer.export_records(conn, cat, access, t, spec, fmt, secret(), platform().engine, client_ip())
    resp = Response(out.chunks, mimetype=out.mimetype)
    if out.mimetype == "text/csv":
        resp.headers["Content-Type"] = "text/csv; charset=utf-8"
    if out.size is not None:
        resp.headers["Content-Length"] = str(out.size)
    resp.headers["Content-Disposition"] = f'attachment; filename="{out.filename}"'
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


# --- files -------------------------------------------------------------------------------------------
@routes.post("/files")
def upload_file() -> Response:
    access = current_access()
    part = uploaded_file()
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    with unit(write=True) as (conn, _cat):
        data = files.store_upload(conn, part.stream, part.filename, part.mimetype, access.user_id,
                                  files_dir(), limit)
    return ok(data, 201)


@routes.get("/files/<token>")
def download_file(token: str) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        row, path = files.find_for_download(conn, cat, access, files_dir(), token)
    inline = bool_arg("inline") and row.mime.startswith("image/") and row.mime != "image/svg+xml"
    resp = send_file(path, mimetype=row.mime, as_attachment=not inline, download_name=row.name,
                     conditional=True, max_age=0)
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    resp.headers["Cache-Control"] = "private, no-store"
    return resp
