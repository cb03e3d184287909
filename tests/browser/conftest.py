"""Browser tests wait for the page's own signals (a heading, a row, the settle counter), never a fixed sleep.
The waits' ceiling is generous so that a loaded CI machine (four workers, PostgreSQL beside them) slows a
test down instead of failing it; a page that never shows what is awaited still fails, after 30 s."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="session", autouse=True)
def patient_expectations() -> Iterator[None]:
    from playwright.sync_api import expect

    expect.set_options(timeout=30_000)
    yield


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium driven by Playwright, one per test module."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()
