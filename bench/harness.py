"""Benchmark harness: alternate platform and raw baseline in one process, report p50/p95 and the ratio.

Machines are shared and noisy, so every workload runs its raw baseline in the same run, alternating
baseline/platform after warm-ups (see shared/BENCH.md); ratios are the targets.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Result:
    workload: str
    backend: str
    size: int
    platform: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)
    note: str = ""
    target: str = ""

    @staticmethod
    def pct(xs: list[float], p: float) -> float:
        if not xs:
            return float("nan")
        s = sorted(xs)
        k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
        return s[k]

    @property
    def ratio(self) -> float:
        b = statistics.median(self.baseline) if self.baseline else float("nan")
        return statistics.median(self.platform) / b if b else float("nan")

    def row(self) -> str:
        ms = 1000.0
        return (f"| {self.workload} | {self.backend} | {self.size:,} | "
                f"{self.pct(self.platform, 50) * ms:.2f} | {self.pct(self.platform, 95) * ms:.2f} | "
                f"{self.pct(self.baseline, 50) * ms:.2f} | {self.pct(self.baseline, 95) * ms:.2f} | "
                f"{self.ratio:.2f} | {self.target} | {self.note} |")


HEADER = ("| workload | db | rows | platform p50 ms | platform p95 ms | baseline p50 ms | baseline p95 ms | "
          "ratio | target | note |\n|---|---|---|---|---|---|---|---|---|---|")


def alternate(result: Result, platform: Callable[[], Any], baseline: Callable[[], Any], *,
              iterations: int = 20, warmup: int = 5) -> Result:
    for _ in range(warmup):
        baseline()
        platform()
    for _ in range(iterations):
        t0 = time.perf_counter()
        baseline()
        t1 = time.perf_counter()
        platform()
        t2 = time.perf_counter()
        result.baseline.append(t1 - t0)
        result.platform.append(t2 - t1)
    return result
