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
from formwork.metadata.conversion import ReadValues
from formwork.runtime.permissions import Access
from formwork.runtime.records import RecordReader


def record_values(access: Access) -> ReadValues:
    """Every record's value of one field as JSON, in id order, read for ``access``'s user."""

    def read(catalog: Catalog, conn: Connection, t: TableDef, f: FieldDef) -> Iterator[tuple[int, Any]]:
        return RecordReader(catalog, conn, user_id=access.user_id).iter_field_values(t, f)

    return read
