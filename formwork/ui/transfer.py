"""The import wizard and export from a view.

The wizard: upload (CSV or XLSX, checked as a whole before anything else) → match columns to fields
(suggested by name in either language; a picker per column; optionally a new field with a guessed type)
→ check (a dry run through the same importer as the API) → import as a background job whose page shows a
progress bar (htmx polling; the page may be left and opened again) → the report, and the rejected rows
as a file with their reasons. The engine is :mod:`formwork.runtime.transfer`; its messages are English,
so :func:`say` puts the ones a person meets into their language.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flask import Response, current_app, redirect, request, send_file, url_for

from formwork.errors import BadRequest, Conflict, Forbidden, FormworkError, NotFound, ValidationFailed
from formwork.metadata.catalog import FieldDef, TableDef
from formwork.metadata.fieldtypes import field_types
from formwork.metadata.service import MetadataService
from formwork.runtime import files, jobs, transfer
from formwork.runtime.previews import builder_actor
from formwork.runtime.tabular import TabularError, neutralize
from formwork.ui import gridlayout
from formwork.ui.context import (
    GridState,
    Page,
    htmx,
    make_page,
    render,
    secret,
    visible_app,
    visible_dashboards,
    visible_table,
    visible_tables,
)
from formwork.ui.merge import import_duplicates
from formwork.web import RouteSet, client_ip, current_access, unit

routes = RouteSet()
PREVIEW_ROWS = 2000
EXPORT_JOB_ROWS = 20000
SAMPLE_ROWS = 8
MAX_PROBLEMS_SHOWN = 200
UPLOAD_DAYS = 7
_UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")
NEW = "__new__"


# --- messages in the user's language ------------------------------------------------------------------
_FILE_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^the file is empty$|^the sheet \".*\" is empty$"), "tr_err_empty"),
    (re.compile(r"^this file is .*, which cannot be imported"), "tr_err_not_sheet"),
    (re.compile(r"^row \d+: the header has \"(?P<name>.*)\" twice \(columns (?P<a>\w+) and (?P<b>\w+)\)$"),
     "tr_err_dup_header"),
    (re.compile(r"^row \d+: column (?P<col>\w+) of the header has no name$"), "tr_err_header_blank"),
    (re.compile(r"unpacks to"), "tr_err_bomb"),
    (re.compile(r"password-protected"), "tr_err_password"),
    (re.compile(r"damaged|could not be read|has no worksheets"), "tr_err_damaged"),
    (re.compile(r"^row (?P<row>\d+): the file is not valid .* text"), "tr_err_encoding"),
    (re.compile(r"^row \d+ has (?P<used>\d+) cells, the header has (?P<width>\d+)$"), "tr_err_ragged"),
    (re.compile(r"^row \d+: the cell in column (?P<col>\w+) has (?P<n>[\d,]+) characters; the limit is "
                r"(?P<limit>[\d,]+)$"), "tr_err_cell_long"),
    (re.compile(r"larger than|more than .* data rows"), "tr_err_too_big"),
    (re.compile(r"^(?P<n>\d+)\+? rows? of the file have errors; nothing was imported$"), "tr_err_failed_all"),
    (re.compile(r"internal error"), "tr_err_internal"),
]
_CELL_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^is required"), "tr_err_required"),
    (re.compile(r"^the key column is empty$"), "tr_err_required"),
    (re.compile(r"^the same key as row (?P<row>\d+)$"), "tr_err_same_key"),
    (re.compile(r"number|whole number|out of range"), "tr_err_not_number"),
    (re.compile(r"date"), "tr_err_not_date"),
    (re.compile(r"^'(?P<value>.*)' is not one of"), "tr_err_not_choice"),
    (re.compile(r"^no record '(?P<value>.*)' in"), "tr_err_no_record"),
    (re.compile(r"^no active user '(?P<value>.*)'"), "tr_err_no_user"),
    (re.compile(r"true or false"), "tr_err_not_bool"),
    (re.compile(r"at most \d+ characters"), "tr_err_too_long"),
    (re.compile(r"already used"), "tr_err_unique"),
]
_ORPHAN = re.compile(r"^the process running this job .* stopped before it finished"
                     r"(?: \(it had reached (?P<done>\d+) of (?P<total>\d+)\))?")


def say(p: Page, message: str | None) -> str:
    """An engine message about a file or a job in the user's language (the English one when unknown)."""
    text = message or ""
    m = _ORPHAN.match(text)
    if m:
        got = p.t("tr_err_interrupted_at", done=m["done"], total=m["total"]) if m["total"] else ""
        return p.t("tr_err_interrupted", got=got)
    for pattern, key in _FILE_PATTERNS:
        m = pattern.search(text)
        if m:
            return p.t(key, **m.groupdict())
    return text


def say_row_error(p: Page, err: dict[str, Any]) -> str:
    """One row error of an import report, naming the column, in the user's language."""
    message, column = str(err.get("message") or ""), err.get("column")
    if column is None:
        return say(p, message)
    for pattern, key in _CELL_PATTERNS:
        m = pattern.search(message)
        if m:
            return p.t(key, column=column, **m.groupdict())
    return p.t("tr_err_cell", column=column, detail=message)


def number_ranges(numbers: list[int]) -> str:
    """Row numbers for a person: ``2-5, 9, 12-14``."""
    out: list[str] = []
    nums = sorted(set(numbers))
    i = 0
    while i < len(nums):
        j = i
        while j + 1 < len(nums) and nums[j + 1] == nums[j] + 1:
            j += 1
        out.append(str(nums[i]) if i == j else f"{nums[i]}-{nums[j]}")
        i = j + 1
    return ", ".join(out)


# --- stored uploads ---------------------------------------------------------------------------------
def uploads_dir() -> Path:
    return Path(current_app.config["FILES_DIR"]) / "imports"


def _forget_old_uploads(folder: Path) -> None:
    """Uploads the wizard keeps (for its steps and the rejected-rows file) are removed after a week."""
    limit = time.time() - UPLOAD_DAYS * 86400
    for path in folder.glob("*"):
        try:
            if path.stat().st_mtime < limit:
                path.unlink(missing_ok=True)
        except OSError:
            continue


def store_upload(part: Any, user_id: int | None, app_key: str, table_key: str) -> tuple[str, Path]:
    folder = uploads_dir()
    folder.mkdir(parents=True, exist_ok=True)
    _forget_old_uploads(folder)
    upload = uuid.uuid4().hex
    path = folder / upload
    with path.open("wb") as out:
        while chunk := part.stream.read(files.CHUNK):
            out.write(chunk)
    meta = {"user": user_id, "name": files.safe_name(part.filename), "app": app_key, "table": table_key}
    (folder / f"{upload}.json").write_text(json.dumps(meta))
    return upload, path


def load_upload(upload: str, user_id: int | None, app_key: str, table_key: str) -> tuple[Path, str]:
    """A stored upload of this user for this table: (path, file name); 404 otherwise."""
    if not _UPLOAD_ID.match(upload):
        raise NotFound("no such upload")
    folder = uploads_dir()
    try:
        meta = json.loads((folder / f"{upload}.json").read_text())
    except (OSError, ValueError):
        raise NotFound("no such upload") from None
    path = folder / upload
    if meta.get("user") != user_id or meta.get("app") != app_key or meta.get("table") != table_key \
            or not path.exists():
        raise NotFound("no such upload")
    return path, str(meta.get("name") or "")


def drop_upload(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".json").unlink(missing_ok=True)


def frame(p: Page, app: Any) -> dict[str, Any]:
    """What app_layout.html's sidebar needs."""
    return {"app": app, "tables": visible_tables(p, app), "dashboards": visible_dashboards(p, app)}


def import_table(p: Page, app_key: str, table_key: str) -> TableDef:
    t = visible_table(p, app_key, table_key)
    p.access.require(p.cat, t, "import")
    return t


# --- step 1: upload ---------------------------------------------------------------------------------
@routes.route("/apps/<app_key>/<table_key>/import", methods=["GET", "POST"])
def import_start(app_key: str, table_key: str) -> Response:
    access = current_access()
    with unit(write=False) as (conn, cat):
        p = make_page(conn, cat, access)
        app = visible_app(p, app_key)
        t = import_table(p, app_key, table_key)
        error = None
        if request.method == "POST":
            part = request.files.get("file")
            if part is None or not part.filename:
                error = p.t("tr_choose_file")
            else:
                upload, path = store_upload(part, access.user_id, app_key, table_key)
                try:
                    transfer.sample_file(path, part.filename, n=1, guess_rows=1)
                except TabularError as e:
                    drop_upload(path)
                    error = say(p, e.message)
                else:
                    return redirect(url_for("ui.import_map", app_key=app_key, table_key=t.key,  # type: ignore[return-value]
                                            upload=upload))
        return render(p, "import_upload.html", 200, **frame(p, app), t=t, error=error, step=1)


# --- step 2: match columns (and, on continuing, the new fields and the check) ----------------------------
def mapping_context(p: Page, t: TableDef, sample: transfer.FileSample, form: dict[str, str]) -> dict[str, Any]:
    fields = transfer.importable_fields(p.cat, t, p.access)
    suggested = transfer.suggest_mapping(fields, sample.header)
    columns = []
    for i, name in enumerate(sample.header):
        values = [str(cells[i]) for _n, cells, bad in sample.rows if not bad and i < len(cells)
                  and cells[i] not in (None, "")][:3]
        columns.append({"index": i, "name": name, "samples": values,
                        "choice": form.get(f"col.{i}", suggested[i] or ""),
                        "type": form.get(f"type.{i}", sample.guesses[i]),
                        "label": form.get(f"label.{i}", name)})
    return {"fields": fields, "columns": columns, "key_fields": transfer.key_fields(p.cat, fields),
            "types": list(type_names(p).items()),
            "mode": form.get("mode", "insert"), "key_field": form.get("key_field", ""),
            "on_error": form.get("on_error", "skip"), "can_build": p.access.can_build(),
            "duplicates": form.get("duplicates", "warn"), "has_dup_rules": bool(t.doc.get("duplicate_rules"))}


def type_names(p: Page) -> dict[str, str]:
    """The types a new field may take, by name in the user's language."""
    return {x: p.label(field_types.get(x).label) for x in transfer.GUESSABLE_TYPES}


def check_mapping(p: Page, t: TableDef, header: list[str], form: Any,
                  fields: list[FieldDef]) -> tuple[dict[str, str | None], list[int], dict[str, str]]:
    """The posted pickers → (mapping by column name, the columns wanting a new field, errors by input)."""
    by_key = {f.key: f for f in fields}
    mapping: dict[str, str | None] = {}
    new_cols: list[int] = []
    errors: dict[str, str] = {}
    chosen: dict[str, list[int]] = {}
    for i, name in enumerate(header):
        choice = (form.get(f"col.{i}") or "").strip()
        if choice == NEW:
            new_cols.append(i)
            mapping[name] = None
        elif choice and choice in by_key:
            mapping[name] = choice
            chosen.setdefault(choice, []).append(i)
        else:
            mapping[name] = None
    for cols in chosen.values():
        if len(cols) > 1:
            for i in cols:
                errors[f"col.{i}"] = p.t("tr_err_twice", columns=", ".join(header[c] for c in cols))
    if new_cols and not p.access.can_build():
        for i in new_cols:
            errors[f"col.{i}"] = p.t("tr_err_no_build")
    if not chosen and not new_cols:
        errors["col.0"] = p.t("tr_err_nothing_mapped")
    mode = form.get("mode") if form.get("mode") in transfer.MODES else "insert"
    if mode == "insert":
        for f in t.fields:
            if f.required and f.key not in chosen and f.doc.get("default") is None and f in fields:
                errors.setdefault("", "")
                errors[""] = (errors[""] + " " if errors[""] else "") + p.t("tr_err_required_missing",
                                                                            field=p.label(f.label))
    else:
        key = form.get("key_field") or ""
        if key not in by_key:
            errors["key_field"] = p.t("tr_err_key_missing")
        elif key not in chosen:
            errors["key_field"] = p.t("tr_err_key_unmapped", field=p.label(by_key[key].label))
    return mapping, new_cols, {k: v for k, v in errors.items() if v}


def new_field_key(name: str, taken: set[str], index: int) -> str:
    base = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_")[:40]
    if not base or not base[0].isalpha():
        base = f"column_{index + 1}" if not base else f"f_{base}"
    key, n = base, 2
    while key in taken:
        key, n = f"{base}_{n}", n + 1
    return key


@routes.route("/apps/<app_key>/<table_key>/import/<upload>", methods=["GET", "POST"])
def import_map(app_key: str, table_key: str, upload: str) -> Response:
    access = current_access()
    form: dict[str, str] = dict(request.form.items()) if request.method == "POST" else {}
    errors: dict[str, str] = {}
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        app = visible_app(p, app_key)
        t = import_table(p, app_key, table_key)
        path, name = load_upload(upload, access.user_id, app_key, table_key)
        try:
            sample = transfer.sample_file(path, name, n=SAMPLE_ROWS)
        except TabularError as e:
            drop_upload(path)
            raise BadRequest(say(p, e.message)) from None
        if request.method == "POST":
            fields = transfer.importable_fields(cat, t, access)
            mapping, new_cols, errors = check_mapping(p, t, sample.header, request.form, fields)
            if not errors and new_cols:
                svc = MetadataService(conn, builder_actor(access, client_ip()), cat)
                taken = {f.key for f in t.fields}
                for i in new_cols:
                    col = sample.header[i]
                    ftype = form.get(f"type.{i}") if form.get(f"type.{i}") in transfer.GUESSABLE_TYPES else "text"
                    key = new_field_key(col, taken, i)
                    label = (form.get(f"label.{i}") or col).strip()[:200] or col
                    try:
                        with conn.begin_nested():
                            svc.create_field(app_key, t.key, {"key": key, "label": label, "type": ftype})
                    except (ValidationFailed, Conflict, BadRequest, NotFound, Forbidden) as e:
                        errors[f"col.{i}"] = p.t("tr_err_field_create", column=col, detail=e.message)
                        break
                    taken.add(key)
                    form[f"col.{i}"] = key
                    mapping[col] = key
            if not errors:
                query: dict[str, Any] = {"mode": form.get("mode", "insert"), "key_field": form.get("key_field", ""),
                         "on_error": form.get("on_error", "skip"), "mapping": json.dumps(mapping),
                         "duplicates": form.get("duplicates", "warn")}
                target = url_for("ui.import_check", app_key=app_key, table_key=t.key, upload=upload, **query)
                return redirect(target)  # type: ignore[return-value]
        ctx = mapping_context(p, t, sample, form)
        return render(p, "import_map.html", 200, **frame(p, app), t=t, upload=upload, name=name,
                      sample=sample, errors=errors, step=2, **ctx)


def options_from_args(args: Any) -> transfer.ImportOptions:
    try:
        mapping = json.loads(args.get("mapping") or "{}")
    except ValueError:
        raise BadRequest("mapping is not valid") from None
    if not isinstance(mapping, dict):
        raise BadRequest("mapping is not valid")
    mode = args.get("mode") if args.get("mode") in transfer.MODES else "insert"
    on_error = args.get("on_error") if args.get("on_error") in transfer.ON_ERROR else "skip"
    key = (args.get("key_field") or "").strip() or None
    dups = args.get("duplicates") if args.get("duplicates") in transfer.DUPLICATES else "warn"
    return transfer.ImportOptions({str(k): (str(v) if v else None) for k, v in mapping.items()}, mode,
                                  key if mode == "upsert" else None, False, on_error, dups)


# --- step 3: check (a dry run) ------------------------------------------------------------------------
@routes.get("/apps/<app_key>/<table_key>/import/<upload>/check")
def import_check(app_key: str, table_key: str, upload: str) -> Response:
    access = current_access()
    with unit(write=True) as (conn, cat):
        p = make_page(conn, cat, access)
        app = visible_app(p, app_key)
        t = import_table(p, app_key, table_key)
        path, name = load_upload(upload, access.user_id, app_key, table_key)
        opts = options_from_args(request.args)
        opts.dry_run = True
        back = url_for("ui.import_map", app_key=app_key, table_key=t.key, upload=upload)
        try:
            sample = transfer.sample_file(path, name, n=SAMPLE_ROWS)
            report = transfer.run_import(conn, cat, access, t, path, name, opts, secret(), limit=PREVIEW_ROWS)
        except TabularError as e:
            raise BadRequest(say(p, e.message)) from None
        except (ValidationFailed, BadRequest) as e:
            details = e.details or {}
            message = "; ".join(str(m) for v in details.values() for m in (v if isinstance(v, list) else [v])) \
                or e.message
            return render(p, "import_check.html", 422, **frame(p, app), t=t, upload=upload, name=name, back=back,
                          failure=message, step=3)
        problems = report_problems(p, report)
        keys = [(i, col, opts.mapping.get(col) if opts.mapping else None) for i, col in enumerate(sample.header)]
        mapped = [(i, col, t.fields_by_key[k]) for i, col, k in keys if k and k in t.fields_by_key]
        bad = {e["row"] for e in report["errors"]}
        return render(p, "import_check.html", **frame(p, app), t=t, upload=upload, name=name, back=back, failure=None,
                      report=report, problems=problems, sample=sample, mapped=mapped, bad=bad,
                      dups=import_duplicates(p, t, report),
                      partial=sample.total > PREVIEW_ROWS, preview_rows=PREVIEW_ROWS, opts=opts,
                      run_args=request.args, step=3)


def report_problems(p: Page, report: dict[str, Any]) -> list[dict[str, Any]]:
    """Row errors of a report, one entry per row (its problems in words), in row order."""
    by_row: dict[int, list[str]] = {}
    for err in report.get("errors") or []:
        by_row.setdefault(int(err["row"]), []).append(say_row_error(p, err))
    return [{"row": n, "messages": msgs} for n, msgs in sorted(by_row.items())]


# --- step 4: the import as a job ----------------------------------------------------------------------
@routes.post("/apps/<app_key>/<table_key>/import/<upload>/run")
def import_run(app_key: str, table_key: str, upload: str) -> Response:
    access = current_access()
    with unit(write=True) as (conn, cat):
        p = make_page(conn, cat, access)
        t = import_table(p, app_key, table_key)
        path, name = load_upload(upload, access.user_id, app_key, table_key)
        opts = options_from_args(request.form)
        try:
            total = transfer.count_rows(path, name, lenient=opts.on_error == "skip")
            fh, reader = transfer.open_file(path, name, lenient=opts.on_error == "skip")
            with fh, reader:
                transfer.plan_import(cat, t, access, reader.header, opts)
        except TabularError as e:
            raise BadRequest(say(p, e.message)) from None
        params = {"app": app_key, "table": t.key, "path": str(path), "name": name, "options": opts.to_params(),
                  "keep_file": True, "wizard": True}
        job = jobs.enqueue(conn, "import", access.user_id, params, total=total)
    jobs.kick(current_app._get_current_object())  # type: ignore[attr-defined]
    return redirect(url_for("ui.import_job_page", app_key=app_key, table_key=t.key,  # type: ignore[return-value]
                            job_id=job["id"]))


def wizard_job(p: Page, app_key: str, t: TableDef, job_id: int) -> dict[str, Any]:
    job = jobs.get_job(p.conn, p.access, job_id, current_app._get_current_object())  # type: ignore[attr-defined]
    if job["kind"] != "import":
        raise NotFound("no such job")
    return job


@routes.get("/apps/<app_key>/<table_key>/import/jobs/<int:job_id>")
def import_job_page(app_key: str, table_key: str, job_id: int) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        app = visible_app(p, app_key)
        t = import_table(p, app_key, table_key)
        job = wizard_job(p, app_key, t, job_id)
        ctx = job_context(p, job)
        template = "_import_progress.html" if htmx else "import_job.html"
        return render(p, template, **frame(p, app), t=t, job=job, step=4,
                      dups=import_duplicates(p, t, ctx["result"]), **ctx)


def job_context(p: Page, job: dict[str, Any]) -> dict[str, Any]:
    result = job.get("result") or {}
    problems = report_problems(p, result) if result else []
    skipped = sorted({int(e["row"]) for e in result.get("errors") or []})
    total = job.get("total")
    pct = int(100 * (job.get("progress") or 0) / total) if total else 0
    return {"result": result, "problems": problems[:MAX_PROBLEMS_SHOWN], "skipped_rows": number_ranges(skipped),
            "inserted_rows": ranges_text(result.get("row_ranges", {}).get("inserted")),
            "updated_rows": ranges_text(result.get("row_ranges", {}).get("updated")),
            "percent": min(pct, 100), "error": say(p, job.get("error")) if job.get("error") else None,
            "more_problems": max(0, len(problems) - MAX_PROBLEMS_SHOWN)}


def ranges_text(ranges: Any) -> str:
    if not ranges:
        return ""
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


@routes.get("/apps/<app_key>/<table_key>/import/jobs/<int:job_id>/rejected.csv")
def import_rejected(app_key: str, table_key: str, job_id: int) -> Response:
    """The rows the import skipped, as the file held them, with the row number and the reasons first."""
    access = current_access()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        t = import_table(p, app_key, table_key)
        job = wizard_job(p, app_key, t, job_id)
        from sqlalchemy import select

        from formwork import db

        params = conn.execute(select(db.jobs.c.params).where(db.jobs.c.id == job["id"])).scalar_one()
        result = job.get("result") or {}
        reasons: dict[int, list[str]] = {}
        for err in result.get("errors") or []:
            reasons.setdefault(int(err["row"]), []).append(say_row_error(p, err))
        path = Path(params.get("path") or "")
        if not reasons or path.parent != uploads_dir() or not path.exists():
            raise NotFound(p.t("tr_err_upload_gone"))
        try:
            header, rows = transfer.rejected_rows(path, params.get("name"), set(reasons))
        except TabularError as e:
            raise BadRequest(say(p, e.message)) from None
        head = [p.t("tr_rejected_row"), p.t("tr_rejected_reason"), *header]

    def body() -> Iterator[bytes]:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(head)
        yield "\ufeff".encode() + buf.getvalue().encode()
        for number, cells in rows:
            buf.seek(0)
            buf.truncate()
            writer.writerow([neutralize(x) if x is not None else ""
                             for x in [number, " / ".join(reasons.get(number, [])), *cells]])
            yield buf.getvalue().encode()

    resp = Response(body(), mimetype="text/csv")
    resp.headers["Content-Type"] = "text/csv; charset=utf-8"
    resp.headers["Content-Disposition"] = f'attachment; filename="{t.key}-rejected-rows.csv"'
    return resp


# --- export from a view ---------------------------------------------------------------------------------
@routes.get("/apps/<app_key>/<table_key>/transfer-buttons")
def transfer_buttons(app_key: str, table_key: str) -> Response:
    """The table page's Import and Export buttons, as far as this viewer has those rights."""
    access = current_access()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        app = visible_app(p, app_key)
        t = visible_table(p, app_key, table_key)
        return render(p, "_transfer_menu.html", app=app, t=t, state=GridState.from_request(),
                      can_export=access.can(cat, t, "export"),
                      can_import=access.can(cat, t, "import") and (access.can(cat, t, "create")
                                                                   or access.can(cat, t, "update")))


@routes.get("/apps/<app_key>/<table_key>/export")
def export_view(app_key: str, table_key: str) -> Response:
    """What the table page shows (view, quick filters, search, sort, the view's columns, the reader's rights)
    as a CSV or Excel file: sent at once, or for a large table made by a job whose page shows progress."""
    access = current_access()
    fmt = request.args.get("format", "csv")
    if fmt not in transfer.EXPORT_FORMATS:
        fmt = "csv"
    from formwork.web import platform

    with unit(write=True) as (conn, cat):
        p = make_page(conn, cat, access)
        t = visible_table(p, app_key, table_key)
        access.require(cat, t, "export")
        state = GridState.from_request()
        view = gridlayout.resolve_view(p, t, state.view)
        spec = transfer.ExportSpec(filter_tree=state.tree(p, t), sort=state.sort or None,
                                   search=state.search or None, view=view)
        limit = int(current_app.config.get("EXPORT_JOB_ROWS", EXPORT_JOB_ROWS))
        try:
            size = transfer.export_size(conn, cat, access, t, spec, secret(), cap=limit + 1)
        except FormworkError as e:
            raise BadRequest(e.message) from None
        if size > limit:
            folder = Path(current_app.config["FILES_DIR"]) / "exports"
            folder.mkdir(parents=True, exist_ok=True)
            _forget_old_uploads(folder)
            params = {"app": app_key, "table": t.key, "format": fmt, "path": str(folder / f"{uuid.uuid4().hex}.{fmt}"),
                      "spec": {"filter": spec.filter_tree, "sort": spec.sort, "search": spec.search,
                               "view": view["key"] if view else None,
                               "view_doc": view if view and gridlayout.is_personal(view["key"]) else None}}
            job = jobs.enqueue(conn, "export", access.user_id, params)
        else:
            job = None
            try:
                out = transfer.export_records(conn, cat, access, t, spec, fmt, secret(), platform().engine,
                                              client_ip())
            except FormworkError as e:
                raise BadRequest(e.message) from None
    if job is not None:
        jobs.kick(current_app._get_current_object())  # type: ignore[attr-defined]
        return redirect(url_for("ui.export_job_page", app_key=app_key, table_key=t.key,  # type: ignore[return-value]
                                job_id=job["id"]))
    resp = Response(out.chunks, mimetype=out.mimetype)
    if out.mimetype == "text/csv":
        resp.headers["Content-Type"] = "text/csv; charset=utf-8"
    if out.size is not None:
        resp.headers["Content-Length"] = str(out.size)
    resp.headers["Content-Disposition"] = f'attachment; filename="{out.filename}"'
    return resp


def export_job_of(p: Page, job_id: int) -> dict[str, Any]:
    job = jobs.get_job(p.conn, p.access, job_id, current_app._get_current_object())  # type: ignore[attr-defined]
    if job["kind"] != "export":
        raise NotFound("no such job")
    return job


@routes.get("/apps/<app_key>/<table_key>/export/jobs/<int:job_id>")
def export_job_page(app_key: str, table_key: str, job_id: int) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        app = visible_app(p, app_key)
        t = visible_table(p, app_key, table_key)
        job = export_job_of(p, job_id)
        total = job.get("total")
        pct = min(100, int(100 * (job.get("progress") or 0) / total)) if total else 0
        template = "_export_progress.html" if htmx else "export_job.html"
        return render(p, template, **frame(p, app), t=t, job=job, percent=pct,
                      error=say(p, job.get("error")) if job.get("error") else None)


@routes.get("/apps/<app_key>/<table_key>/export/jobs/<int:job_id>/file")
def export_job_file(app_key: str, table_key: str, job_id: int) -> Response:
    """The file an export job made (to the user who started it, or an administrator)."""
    access = current_access()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        visible_table(p, app_key, table_key)
        job = export_job_of(p, job_id)
        from sqlalchemy import select

        from formwork import db

        params = conn.execute(select(db.jobs.c.params).where(db.jobs.c.id == job["id"])).scalar_one()
    path = Path(params.get("path") or "")
    folder = Path(current_app.config["FILES_DIR"]) / "exports"
    if job["status"] != "done" or path.parent != folder or not path.exists():
        raise NotFound(p.t("tr_err_export_gone"))
    result = job.get("result") or {}
    mime = transfer.XLSX_MIME if params.get("format") == "xlsx" else "text/csv; charset=utf-8"
    resp = send_file(path, mimetype=mime, as_attachment=True, download_name=str(result.get("filename") or path.name),
                     max_age=0)
    resp.headers["Cache-Control"] = "private, no-store"
    return resp
