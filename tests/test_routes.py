"""The route table: every URL comes from a module listed in ``formwork.route_table()``, importing a route
module registers nothing, and no endpoint is lost or renamed (tests/data/routes.json, taken before the
routes moved into formwork/api/)."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import formwork.api
from formwork import route_table
from formwork.web import RouteSet

SNAPSHOT = Path(__file__).parent / "data" / "routes.json"


def _api_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(formwork.api.__path__, "formwork.api."))


def test_every_module_in_the_table_declares_a_route_set() -> None:
    for blueprint, modules in route_table().items():
        for module in modules:
            routes = getattr(module, "routes", None)
            assert isinstance(routes, RouteSet), f"{module.__name__} (table '{blueprint}') has no RouteSet"
            assert routes.rules, f"{module.__name__} declares no route"


def test_every_api_module_with_routes_is_in_the_table() -> None:
    listed = {m.__name__ for m in route_table()["api"]}
    for name in _api_modules():
        module = __import__(name, fromlist=["routes"])
        if isinstance(getattr(module, "routes", None), RouteSet):
            assert name in listed, f"{name} declares routes but the route table does not list it"


def test_importing_route_modules_registers_nothing() -> None:
    """In a fresh interpreter: import every formwork.api module, then no blueprint exists anywhere and no
    job kind is registered; create_app alone wires them."""
    code = (
        "import gc, importlib, sys\n"
        "from flask import Blueprint\n"
        f"for name in {_api_modules()!r}:\n"
        "    importlib.import_module(name)\n"
        "from formwork.runtime import jobs\n"
        "bps = [b.name for b in gc.get_objects() if isinstance(b, Blueprint)]\n"
        "assert not bps, bps\n"
        "assert not jobs.HANDLERS, jobs.HANDLERS\n"
        "assert 'formwork.ui' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).parent.parent)
    assert done.returncode == 0, done.stderr[-2000:]


def test_every_url_rule_belongs_to_a_module_in_the_table(app: Any) -> None:
    table = route_table()
    declared: dict[str, Any] = {}
    for blueprint, modules in table.items():
        for module in modules:
            for _rule, endpoint, view, _options in module.routes.rules:
                key = f"{blueprint}.{endpoint}"
                assert key not in declared, f"{key} is declared twice"
                declared[key] = view
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        view = app.view_functions[rule.endpoint]
        assert rule.endpoint in declared, f"{rule.rule} ({rule.endpoint}) comes from no module of the route table"
        assert view is declared[rule.endpoint], rule.endpoint
    assert set(declared) <= set(app.view_functions), set(declared) - set(app.view_functions)


def test_no_endpoint_is_lost_or_renamed(app: Any) -> None:
    expected = {(e, r, tuple(m)) for e, r, m in json.loads(SNAPSHOT.read_text())}
    actual = {(r.endpoint, r.rule, tuple(sorted(r.methods or ()))) for r in app.url_map.iter_rules()}
    assert actual - expected == set(), "routes that were not there before"
    assert expected - actual == set(), "routes lost or renamed"


def write_snapshot() -> None:
    """`python -m tests.test_routes` rewrites the snapshot after routes were added on purpose."""
    from formwork import create_app

    app = create_app({"DATABASE_URL": "sqlite://", "SECRET_KEY": "snapshot", "TESTING": True})
    rows = sorted([r.endpoint, r.rule, sorted(r.methods or ())] for r in app.url_map.iter_rules())
    rows.sort(key=lambda row: (row[1], row[0]))
    SNAPSHOT.write_text("[\n" + ",\n".join(" " + json.dumps(row, ensure_ascii=False) for row in rows) + "\n]\n")


if __name__ == "__main__":
    write_snapshot()
