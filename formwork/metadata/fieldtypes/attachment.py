"""Attachment fields: a list of uploaded files, referenced by the tokens that POST /files returns."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import Text, cast, select
from sqlalchemy.types import TypeEngine

from formwork.db import JsonType, files
from formwork.metadata.fieldtypes.base import FILE_OUT, FILES, FieldType, FieldValueError, WriteContext

if TYPE_CHECKING:
    from formwork.metadata.catalog import Catalog, FieldDef


class AttachmentType(FieldType):
    type = "attachment"
    label: ClassVar[dict[str, str]] = {"en": "Attachment", "zh-CN": "附件"}
    kind = FILES
    supports_unique = False
    supports_default = False
    input_kind = None
    cell_style = "files"
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "additionalProperties": False,
        "properties": {"max_size": {"type": "integer", "minimum": 1},
                       "mime_types": {"type": "array", "items": {"type": "string", "maxLength": 120}},
                       "max_files": {"type": "integer", "minimum": 1, "maximum": 100}},
    }

    def column_type(self, f: FieldDef) -> TypeEngine[Any]:
        return JsonType

    def coerce(self, value: Any, f: FieldDef, ctx: WriteContext) -> Any:
        if value is None or value == []:
            return None
        if not isinstance(value, list):
            value = [value]
        tokens: list[str] = []
        for item in value:
            tok = item.get("token") if isinstance(item, dict) else item
            if not isinstance(tok, str) or not tok:
                raise FieldValueError("must be a list of file tokens from POST /files")
            if tok not in tokens:
                tokens.append(tok)
        if len(tokens) > int(f.options.get("max_files") or 100):
            raise FieldValueError(f"takes at most {f.options.get('max_files') or 100} files")
        rows = {r.token: r for r in ctx.conn.execute(select(files).where(files.c.token.in_(tokens)))}
        out = []
        for tok in tokens:
            r = rows.get(tok)
            if r is None or not self._may_attach(r, f, ctx):
                raise FieldValueError(f"unknown file token '{tok[:40]}'")
            if f.options.get("max_size") and r.size > f.options["max_size"]:
                raise FieldValueError(f"'{r.name}' is larger than {f.options['max_size']} bytes")
            allowed = f.options.get("mime_types")
            if allowed and not any(r.mime == m or (m.endswith("/*") and r.mime.startswith(m[:-1]))
                                   for m in allowed):
                raise FieldValueError(f"'{r.name}' is not an allowed file type")
            out.append({"token": r.token, "name": r.name, "size": r.size, "mime": r.mime})
        return out

    @staticmethod
    def _may_attach(row: Any, f: FieldDef, ctx: WriteContext) -> bool:
        """A file the writer uploaded, or one already in this field on a record the writer can read.

        Tokens are not secrets to be guessed but they do travel (links, exports); attaching someone else's
        private upload to your own record would make it downloadable by you.
        """
        if ctx.user_id is None or row.user_id == ctx.user_id:
            return True
        from formwork.metadata.fieldtypes.link import writer_scope

        if not f.stored:
            return False
        t = ctx.catalog.table_by_id(f.table_id)
        conds = [cast(t.sa.c[f.column_name], Text).contains(row.token, autoescape=True)]
        scope = writer_scope(ctx, t, t.sa)
        if scope is not None:
            conds.append(scope)
        return ctx.conn.execute(select(t.sa.c.id).where(*conds).limit(1)).first() is not None

    def to_json(self, value: Any, f: FieldDef) -> Any:
        if not value:
            return []
        return [dict(v, url=f"/api/v1/files/{v['token']}") for v in value]

    def to_text(self, value: Any, f: FieldDef) -> str | None:
        return ", ".join(v["name"] for v in value) if value else None

    def value_schema(self, f: FieldDef, catalog: Catalog, mode: str = "out") -> dict[str, Any]:
        item = FILE_OUT if mode == "out" else {"type": "string", "description": "a token from POST /files"}
        return {"type": "array", "items": item}

    def export_text(self, value: Any, f: FieldDef) -> Any:
        return self.to_text(value, f) or None

    def convert_from(self, json_value: Any, source: FieldDef, f: FieldDef, ctx: WriteContext) -> Any:
        raise FieldValueError("cannot be converted to attachments")
