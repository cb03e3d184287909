"""What a type-change preview (and the conversion after it) reads: the record reader's values.

MetadataService converts a field's values but may not import the runtime; its caller hands it this
reader through the Actor (``access.actor(ip, record_values(access))``), so users and links read as
readers see them, and the reader's row scope and hidden fields can apply to previews.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy.engine import Connection

from formwork.metadata.catalog import Catalog, FieldDef, TableDef
from formwork.metadata.conversion import PreviewScope, ReadValues
from formwork.metadata.service import Actor
from formwork.runtime.permissions import Access
from formwork.runtime.records import RecordReader


def record_values(access: Access) -> ReadValues:
    """Every record's value of one field as JSON, in id order, read for ``access``'s user."""

    def read(catalog: Catalog, conn: Connection, t: TableDef, f: FieldDef) -> Iterator[tuple[int, Any]]:
        return RecordReader(catalog, conn, user_id=access.user_id).iter_field_values(t, f)

    return read


def preview_scope(access: Access) -> PreviewScope:
    """What a type-change preview may show ``access``'s user: the rows they may read (the record reader's
    own conditions) and the field only if it is shown to them on every row."""

    def scope(catalog: Catalog, conn: Connection, t: TableDef, f: FieldDef) -> tuple[Any, bool]:
        if access.is_admin:
            return None, True
        rows = RecordReader(catalog, conn, access).read_scope(t, t.sa)
        shown = access.field_visibility(catalog, t, t.sa).get(f.id, True) is True
        return rows, shown

    return scope


def builder_actor(access: Access, ip: str | None) -> Actor:
    """``access``'s user as MetadataService's caller, previews reading and showing what they may see."""
    return access.actor(ip, record_values(access), preview_scope(access))
