"""Copy pinned front-end files from node_modules into the static folder (run by `make setup`)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
VENDOR = Path(__file__).resolve().parent / "static" / "vendor"
FILES = {
    "htmx.org/dist/htmx.min.js": "htmx.min.js",
    "echarts/dist/echarts.min.js": "echarts.min.js",
    "sortablejs/Sortable.min.js": "Sortable.min.js",
}


def main() -> int:
    VENDOR.mkdir(parents=True, exist_ok=True)
    for src, dst in FILES.items():
        path = ROOT / "node_modules" / src
        if not path.is_file():
            print(f"missing {path}: run `npm ci` first", file=sys.stderr)
            return 1
        shutil.copyfile(path, VENDOR / dst)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
