"""Every screenshot the guides show is in docs/img and is taken by a real-browser test that drives that page
(``python -m tests.browser.screenshots`` takes them all again)."""

from __future__ import annotations

import re

from tests.browser.screenshots import ROOT, TESTS, shown


def test_the_guides_screenshots_are_taken_by_the_browser_tests() -> None:
    sources = "".join((ROOT / t).read_text("utf-8") for t in TESTS)
    names = shown()
    assert {"kanban-card-fields-en.png", "grid-files-zh-CN-1280.png", "form-designer-zh-CN.png"} <= names
    for name in sorted(names):
        assert (ROOT / "docs" / "img" / name).is_file(), name
        stem = name.removesuffix(".png")
        written = {stem, re.sub(r"-(en|zh-CN)(?=-|$)", "-{locale}", stem)}
        assert any(f'"{w}' in sources for w in written), f"{name} is taken by none of {TESTS}"
