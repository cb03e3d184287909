"""Bounded caches that live as long as a catalog: schemas and select lists built for a request's field list.

A key such as a page's field list comes from the request, so the cache must not grow without bound; it
hangs off the catalog, so a schema change starts it afresh.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from formwork.metadata.catalog import Catalog


class BoundedCache:
    """A small thread-safe LRU cache."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
            return hit

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def get_or_build(self, key: Any, build: Callable[[], Any]) -> Any:
        hit = self.get(key)
        if hit is None:
            hit = build()
            self.put(key, hit)
        return hit


def catalog_cache(catalog: Catalog, name: str, size: int = 256) -> BoundedCache:
    """The catalog's bounded cache called ``name`` (created on first use)."""
    return catalog.cached(("lru", name), lambda: BoundedCache(size))
