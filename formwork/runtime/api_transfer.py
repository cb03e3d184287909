"""Routes added to the /api/v1 blueprint (see formwork.runtime.api): import, export, jobs and files."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from flask import Flask, Response, current_app, request, send_file

from formwork import db
from formwork.errors import BadRequest, reject_unknown_args
from formwork.runtime import auth, files, jobs, transfer
from formwork.runtime.api import api, bool_arg, ok, parse_filter_arg, secret
from formwork.runtime.permissions import Access
from formwork.runtime.records import RecordReader
from formwork.runtime.tabular import TabularError, write_csv, write_xlsx
from formwork.web import client_ip, current_access, platform, unit

__all__ = ["api"]

JOB_ROWS = 5000
JOB_BYTES = 2 * 1024 * 1024
EXPORT_ARGS = {"format", "view", "filter", "sort", "fields", "search", "header"}
XLSX_MIME = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _files_dir() -> Path:
    return Path(current_app.config["FILES_DIR"])


def _upload() -> Any:
    part = request.files.get("file")
    if part is None:
        raise BadRequest("send the file as multipart/form-data in a part named 'file'")
    return part


def _save_import(part: Any) -> tuple[Path, int]:
    """Keep the upload on disk (imports may outlive the request as a job); returns (path, size)."""
    folder = _files_dir() / "imports"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / uuid.uuid4().hex
    size = 0
    with path.open("wb") as out:
        while chunk := part.stream.read(files.CHUNK):
            size += len(chunk)
            out.write(chunk)
    return path, size


def _target(table: str) -> str:
    return f"table:{table}"


# --- import ------------------------------------------------------------------------------------------
@api.post("/data/<app_key>/<table_key>/import")
def import_records(app_key: str, table_key: str) -> Response:
    access = current_access()
    part = _upload()
    opts = transfer.ImportOptions.parse(request.form)
    with unit(write=False) as (_conn, cat):
        t = cat.table(app_key, table_key)
        access.require(cat, t, "import")
    name = files.safe_name(part.filename)
    path, size = _save_import(part)
    keep = False
    try:
        try:
            fh, reader = transfer.open_file(path, name)
            with fh, reader:
                transfer.plan_import(cat, t, access, reader.header, opts)
            rows = None if size > current_app.config.get("IMPORT_JOB_BYTES", JOB_BYTES) \
                else transfer.count_rows(path, name)
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
            _audit_import(conn, access, t.key, app_key, name, opts, report)
        return _import_response(report)
    finally:
        if not keep:
            path.unlink(missing_ok=True)


def _audit_import(conn: Any, access: Access, table_key: str, app_key: str, name: str,
                  opts: transfer.ImportOptions, report: dict[str, Any], ip: str | None = None) -> None:
    auth.audit(conn, "import", user_id=access.user_id, username=access.username,
               target=_target(f"{app_key}.{table_key}"), ip=ip if ip is not None else client_ip(),
               details={"file": name, "mode": opts.mode, "dry_run": opts.dry_run, "on_error": opts.on_error,
                        "rows": report["rows"], "inserted": report["inserted"], "updated": report["updated"],
                        "skipped": report["skipped"], "errors": len(report["errors"]),
                        "committed": report["committed"]})


def _failure_message(report: dict[str, Any]) -> str:
    n = len({e["row"] for e in report["errors"]})
    more = "+" if report.get("errors_truncated") else ""
    return f"{n}{more} row{'s' if n != 1 else ''} of the file have errors; nothing was imported"


def _failed(report: dict[str, Any]) -> bool:
    """An all-or-nothing import that found errors (a dry run only reports them)."""
    return bool(report["errors"]) and not report["committed"] and not report["dry_run"]


def _import_response(report: dict[str, Any]) -> Response:
    """A failed all-or-nothing import is a 422 that still carries the whole report."""
    if _failed(report):
        return ok({"error": {"code": "validation_error", "message": _failure_message(report)}, **report}, 422)
    return ok(report)


@jobs.handler("import")
def _import_job(app: Flask, ctx: jobs.JobContext) -> dict[str, Any]:
    p = ctx.params
    path = Path(p["path"])
    opts = transfer.ImportOptions.from_params(p["options"])
    plat = app.extensions["formwork"]
    try:
        total = ctx.runner.live.get(ctx.job_id, (0, None))[1]
        if total is None:
            total = transfer.count_rows(path, p["name"])
            ctx.progress(0, total)
        with db.transaction(plat.engine) as conn:
            cat = plat.catalogs.get(conn)
            if ctx.user_id is None:
                raise jobs.JobFailed("the job has no user")
            access = Access.for_user(conn, ctx.user_id)
            t = cat.table(p["app"], p["table"])
            report = transfer.run_import(conn, cat, access, t, path, p["name"], opts,
                                         str(app.config["SECRET_KEY"]).encode(), progress=ctx.progress)
            _audit_import(conn, access, t.key, p["app"], p["name"], opts, report, ip="")
    except TabularError as e:
        raise jobs.JobFailed(e.message) from None
    finally:
        path.unlink(missing_ok=True)
    if _failed(report):
        raise jobs.JobFailed(_failure_message(report), report)
    return report


@api.get("/jobs/<int:job_id>")
def get_job(job_id: int) -> Response:
    access = current_access()
    with unit() as (conn, _cat):
        return ok({"job": jobs.get_job(conn, access, job_id, current_app._get_current_object())})  # type: ignore[attr-defined]


# --- export ------------------------------------------------------------------------------------------
@api.get("/data/<app_key>/<table_key>/export")
def export_records(app_key: str, table_key: str) -> Response:
    access = current_access()
    reject_unknown_args(request.args, EXPORT_ARGS)
    fmt = request.args.get("format", "csv")
    if fmt not in ("csv", "xlsx"):
        raise BadRequest("format must be csv or xlsx")
    header = request.args.get("header", "labels")
    if header not in ("labels", "keys"):
        raise BadRequest("header must be labels or keys")
    key = secret()
    with unit(write=True) as (conn, cat):
        t = cat.table(app_key, table_key)
        access.require(cat, t, "export")
        view_key = request.args.get("view")
        spec = transfer.ExportSpec(filter_tree=parse_filter_arg(), sort=request.args.get("sort"),
                                   search=request.args.get("search"), fields=request.args.get("fields"),
                                   view=t.view(view_key) if view_key else None, header=header)
        reader = RecordReader(cat, conn, access, secret=key)
        fields, names = transfer.export_columns(cat, t, access, reader, spec)
        reader.list(t, filter_tree=spec.filter_tree, sort=spec.sort, search=spec.search,
                    fields=[f.key for f in fields] or None, limit=1, view=spec.view)  # 400s before streaming
        auth.audit(conn, "export", user_id=access.user_id, username=access.username,
                   target=_target(f"{app_key}.{table_key}"), ip=client_ip(),
                   details={"format": fmt, "view": view_key, "filter": spec.filter_tree, "sort": spec.sort,
                            "search": spec.search, "fields": [f.key for f in fields]})
        if fmt == "xlsx":
            out = tempfile.TemporaryFile()
            try:
                write_xlsx(names, transfer.iter_export(reader, t, fields, spec, fmt), t.key, out=out)
            except TabularError as e:
                out.close()
                raise BadRequest(e.message) from None
            except BaseException:
                out.close()
                raise
            size = out.tell()
            out.seek(0)
            resp = Response(_chunks(out), mimetype=XLSX_MIME)
            resp.headers["Content-Length"] = str(size)
            resp.headers["Content-Disposition"] = f'attachment; filename="{t.key}.xlsx"'
            resp.headers["X-Content-Type-Options"] = "nosniff"
            return resp
    engine = platform().engine

    def stream() -> Iterator[bytes]:
        with db.transaction(engine, write=False) as c:
            r = RecordReader(cat, c, access, secret=key)
            yield from write_csv(names, transfer.iter_export(r, t, fields, spec, fmt))

    resp = Response(stream(), mimetype="text/csv")
    resp.headers["Content-Type"] = "text/csv; charset=utf-8"
    resp.headers["Content-Disposition"] = f'attachment; filename="{t.key}.csv"'
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


def _chunks(fh: IO[bytes]) -> Iterator[bytes]:
    """Stream a temporary file and close it at the end (or when the response is dropped)."""
    try:
        while chunk := fh.read(files.CHUNK):
            yield chunk
    finally:
        fh.close()


# --- files -------------------------------------------------------------------------------------------
@api.post("/files")
def upload_file() -> Response:
    access = current_access()
    part = _upload()
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    with unit(write=True) as (conn, _cat):
        data = files.store_upload(conn, part.stream, part.filename, part.mimetype, access.user_id,
                                  _files_dir(), limit)
    return ok(data, 201)


@api.get("/files/<token>")
def download_file(token: str) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        row, path = files.find_for_download(conn, cat, access, _files_dir(), token)
    inline = bool_arg("inline") and row.mime.startswith("image/") and row.mime != "image/svg+xml"
    resp = send_file(path, mimetype=row.mime, as_attachment=not inline, download_name=row.name,
                     conditional=True, max_age=0)
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    resp.headers["Cache-Control"] = "private, no-store"
    return resp


@api.errorhandler(TabularError)
def _tabular_error(err: TabularError) -> Response:
    return ok({"error": {"code": "bad_request", "message": err.message}}, 400)

