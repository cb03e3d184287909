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


#: a static asset the live server had opened for a request the browser then dropped (it navigated on) is
#: closed only when collected, which may surface as an "unraisable" ResourceWarning in whatever runs next;
#: it is the test server's file handle, not something a test did, so browser tests don't fail on it
STATIC_HANDLE = (r"ignore:Exception ignored in. <_io\.(FileIO|BufferedReader) name='[^']*formwork/ui/static/"
                 r":pytest.PytestUnraisableExceptionWarning")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/browser/" in str(item.fspath):
            item.add_marker(pytest.mark.filterwarnings(STATIC_HANDLE))
