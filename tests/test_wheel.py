"""The built wheel holds what an installed Formwork needs outside the checkout: the bundled templates
(app.json and demo.py), the pages' templates and static files (htmx included), the JSON Schemas and the
migrations. Built offline from a copy of the sources (pip wheel --no-deps --no-build-isolation --no-index)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from importlib.metadata import version
from importlib.util import find_spec
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("formwork", "formwork_templates")


def _can_build() -> bool:
    major, minor = (int(x) for x in version("setuptools").split(".")[:2])
    return (major, minor) >= (70, 1) or find_spec("wheel") is not None


pytestmark = [pytest.mark.slow]
if not _can_build() and not os.environ.get("CI"):
    pytestmark.append(pytest.mark.skip(reason="building a wheel offline needs setuptools>=70.1 (`make setup` "
                                              "installs it); in CI (CI set) this test fails instead"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    src = tmp_path_factory.mktemp("src")
    shutil.copy(ROOT / "pyproject.toml", src)
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--wheel-dir", str(out), str(src)], check=True, capture_output=True, text=True)
    (path,) = out.glob("formwork-*.whl")
    with zipfile.ZipFile(path) as zf:
        yield zf


def _files(folder: Path, pattern: str) -> set[str]:
    return {p.relative_to(ROOT).as_posix() for p in folder.glob(pattern) if p.is_file()}


def test_the_wheel_ships_templates_pages_schemas_and_migrations(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    bundled = {p.parent.name for p in (ROOT / "formwork_templates").glob("*/app.json")}
    assert "crm" in bundled
    expected = {"formwork_templates/__init__.py", "formwork_templates/crm/demo.py",
                "formwork/ui/static/vendor/htmx.min.js", "formwork/ui/static/app.js", "formwork/ui/static/app.css",
                "formwork/ui/static/vendor/echarts.min.js", "formwork/ui/static/vendor/Sortable.min.js",
                "formwork/ui/static/dashboards.js", "formwork/ui/static/dashboards.css",
                "formwork/migrations/env.py", "formwork/migrations/script.py.mako"}
    expected |= {f"formwork_templates/{name}/app.json" for name in bundled}
    expected |= _files(ROOT / "formwork/ui/templates", "**/*.html")
    expected |= _files(ROOT / "formwork/metadata/schemas", "*.json")
    expected |= _files(ROOT / "formwork/migrations/versions", "*.py")
    expected |= _files(ROOT / "formwork", "**/*.py") | _files(ROOT / "formwork_templates", "**/*.py")
    assert not expected - names, sorted(expected - names)
    assert not [n for n in names if n.startswith(("tests/", "bench/", "node_modules/")) or "__pycache__" in n]
    info = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "formwork = formwork.cli:main" in wheel.read(info).decode()


def test_the_unpacked_wheel_finds_the_crm_and_its_demo_outside_the_checkout(wheel: zipfile.ZipFile,
                                                                             tmp_path: Path) -> None:
    site = tmp_path / "site"
    wheel.extractall(site)
    probe = ("from formwork.metadata import portable; from formwork.runtime import demo; "
             "print(portable.templates_dir()); print(portable.load_template('crm')['app']['key']); "
             "print(demo.load_generator('crm').__file__)")
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, check=True, capture_output=True,
                         text=True).stdout.split("\n")
    assert out[0] == str(site / "formwork_templates")
    assert out[1] == "crm"
    assert out[2] == str(site / "formwork_templates" / "crm" / "demo.py")
