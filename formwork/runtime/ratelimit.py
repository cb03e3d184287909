"""A small in-process sliding-window limiter (per key), for login attempts and public forms."""

from __future__ import annotations

import threading
import time
from collections import deque

from formwork.errors import RateLimited


class SlidingWindow:
    def __init__(self, limit: int, seconds: float) -> None:
        self.limit = limit
        self.seconds = seconds
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, key: str) -> None:
        now = time.monotonic()
        with self._lock:
            q = self._hits.setdefault(key, deque())
            while q and q[0] <= now - self.seconds:
                q.popleft()
            if len(q) >= self.limit:
                raise RateLimited("too many requests; wait a minute and try again")
            q.append(now)
            if len(self._hits) > 100_000:  # bound memory under a flood of distinct keys
                self._hits = {k: v for k, v in self._hits.items() if v and v[-1] > now - self.seconds}

    def reset(self) -> None:
        with self._lock:
            self._hits.clear()


login_limiter = SlidingWindow(limit=30, seconds=60)
form_limiter = SlidingWindow(limit=20, seconds=60)
