"""Reading and writing records of user tables.

- :mod:`.reader`: ``RecordReader``, one SELECT per page (computed fields, link displays and permissions
  included) plus one batched query per to-many field.
- :mod:`.writer`: ``RecordService``, the only writer of user tables: permissions, coercion and validation
  through the field types, the row, its links, its history and its outbox events in the caller's transaction.
- :mod:`.schemas`: the marshmallow schemas generated per table (and cached per schema version) that turn
  SQL values into JSON and JSON into coerced values.
- :mod:`.params`: record ids and page and batch sizes as callers pass them; :mod:`.cache`: bounded
  per-catalog caches.
"""

from formwork.runtime.records.params import MAX_BATCH, MAX_LIMIT, parse_id, parse_limit
from formwork.runtime.records.reader import RecordReader, query_signature
from formwork.runtime.records.writer import RecordService

__all__ = ["MAX_BATCH", "MAX_LIMIT", "RecordReader", "RecordService", "parse_id", "parse_limit", "query_signature"]
