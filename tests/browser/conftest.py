"""Browser tests wait for the page's own signals (a heading, a row, the settle counter), never a fixed sleep.
The waits' ceiling is generous so that a loaded CI machine (four workers, PostgreSQL beside them) slows a
test down instead of failing it; a page that never shows what is awaited still fails, after 30 s."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def patient_expectations() -> Iterator[None]:
    from playwright.sync_api import expect

    expect.set_options(timeout=30_000)
    yield
