"""What every record operation parses from its caller: record ids, page sizes, batch sizes."""

from __future__ import annotations

from typing import Any

from formwork.errors import BadRequest, NotFound

MAX_LIMIT = 1000  # records in one page
MAX_BATCH = 1000  # records in one batched write (and ids in one IN list)


def parse_id(value: Any) -> int:
    """A record id: a whole number (or its digits as text); anything else names no record."""
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value > 2**62:
        raise NotFound(f"no record '{str(value)[:40]}'")
    return value


def parse_limit(value: Any, default: int = 50) -> int:
    """A page size: a whole number from 1 to MAX_LIMIT; the default when absent."""
    if value is None or value == "":
        return default
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise BadRequest("limit must be a whole number") from None
    if n < 1 or n > MAX_LIMIT:
        raise BadRequest(f"limit must be between 1 and {MAX_LIMIT}")
    return n
