"""The guides' screenshots, taken from the pages the real-browser tests drive (both languages, 1280 px and,
where a test takes one, 390 px): ``python -m tests.browser.screenshots`` runs those tests with
``FORMWORK_SHOTS`` set to a scratch folder, then copies every image docs/*.md shows (``img/<name>.png``)
into docs/img. It fails, copying nothing, when a test fails or an image the guides show was not taken."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
TESTS = ["tests/browser/test_builder_browser.py", "tests/browser/test_forms_designer_browser.py",
         "tests/browser/test_form_files_browser.py", "tests/browser/test_grid_views_browser.py"]


def shown() -> set[str]:
    """The image files the guides show."""
    return {m for doc in DOCS.glob("*.md") for m in re.findall(r"\(img/([\w.-]+\.png)\)", doc.read_text("utf-8"))}


def main() -> int:
    with tempfile.TemporaryDirectory() as shots:
        env = {**os.environ, "FORMWORK_SHOTS": shots}
        code = subprocess.call([sys.executable, "-m", "pytest", "-q", *TESTS], cwd=ROOT, env=env)
        if code:
            return code
        missing = sorted(name for name in shown() if not (Path(shots) / name).is_file())
        if missing:
            print("not taken by the tests:", ", ".join(missing), file=sys.stderr)
            return 1
        for name in sorted(shown()):
            shutil.copyfile(Path(shots) / name, DOCS / "img" / name)
            print("docs/img/" + name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
