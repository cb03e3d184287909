"""Sandboxed Jinja templates for automation actions (email text, webhook payloads).

Templates are written by end users, so rendering must be safe against both code
execution and resource exhaustion:

* ``ImmutableSandboxedEnvironment`` blocks private/internal attributes and mutation.
  On top of that only an allow-list of filters and methods is available, ``str.format``
  and ``%`` string formatting are refused, and the default globals (``cycler``,
  ``lipsum``, ``namespace`` ...) are removed; only ``range`` (capped by the sandbox)
  remains.
* Anything that is not plain data (functions, classes, template internals) refuses
  to render instead of showing its ``repr``.
* Size and work are bounded: template length, length of any value produced by
  ``~``/``+``/``*``/``join``/``replace``, total output, total loop iterations and
  wall-clock time per render.  Constructs that could grow values without bound
  (macros, call blocks, ``{% set %}`` / ``{% filter %}`` blocks, recursive loops,
  includes/imports) are refused when the template is checked.

Missing attributes render as an empty string (and ``None`` renders as empty),
because users' records often have empty fields; an unknown top-level name is an
error because it is almost always a typo.
"""

from __future__ import annotations

import datetime as dt
import functools
import time
import types
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import Template, nodes
from jinja2.exceptions import TemplateError as JinjaTemplateError
from jinja2.exceptions import TemplateSyntaxError
from jinja2.meta import find_undeclared_variables
from jinja2.runtime import ChainableUndefined, LoopContext, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment, safe_range
from jinja2.visitor import NodeTransformer

__all__ = [
    "MAX_ITERATIONS",
    "MAX_OUTPUT_CHARS",
    "MAX_RENDER_SECONDS",
    "MAX_TEMPLATE_CHARS",
    "TemplateError",
    "render_template",
    "render_value",
    "validate_template",
]

MAX_TEMPLATE_CHARS = 20_000
MAX_OUTPUT_CHARS = 1_000_000
MAX_ITERATIONS = 200_000
MAX_RENDER_SECONDS = 2.0
_MAX_INT_BITS = 4096
_MAX_DATE_FORMAT_CHARS = 100

_STR_METHODS = frozenset(
    {
        "capitalize", "casefold", "count", "endswith", "find", "isalnum", "isalpha",
        "isdigit", "islower", "isnumeric", "isspace", "isupper", "lower", "lstrip",
        "removeprefix", "removesuffix", "rfind", "rsplit", "rstrip", "split",
        "splitlines", "startswith", "strip", "swapcase", "title", "upper",
    }
)
_MAPPING_METHODS = frozenset({"get", "items", "keys", "values"})
_SEQUENCE_METHODS = frozenset({"count", "index"})
_LOOP_METHODS = frozenset({"cycle", "changed"})

# Built-in filters whose output is at most proportional to their input.
_SAFE_BUILTIN_FILTERS = (
    "abs", "capitalize", "count", "dictsort", "e", "escape", "filesizeformat", "first",
    "float", "forceescape", "groupby", "int", "items", "last", "length", "list", "lower",
    "map", "max", "min", "reject", "rejectattr", "reverse", "round", "safe", "select",
    "selectattr", "sort", "string", "striptags", "sum", "title", "tojson", "trim",
    "truncate", "unique", "upper", "urlencode", "wordcount", "wordwrap", "attr",
)

# Statements refused at validation time, with the reason shown to the user.
_FORBIDDEN_NODES: dict[type[nodes.Node], str] = {
    nodes.Macro: "macros are not supported",
    nodes.CallBlock: "call blocks are not supported",
    nodes.Extends: "template inheritance is not supported",
    nodes.Include: "includes are not supported",
    nodes.Import: "imports are not supported",
    nodes.FromImport: "imports are not supported",
    nodes.Block: "blocks are not supported",
    nodes.AssignBlock: "{% set %} blocks are not supported; use {% set name = ... %}",
    nodes.FilterBlock: "{% filter %} blocks are not supported; apply the filter to a value",
}


class TemplateError(Exception):
    """A user-facing problem with a template; ``message`` is safe to show."""

    def __init__(self, message: str, *, lineno: int | None = None) -> None:
        self.message = f"Line {lineno}: {message}" if lineno else message
        self.lineno = lineno
        super().__init__(self.message)


@dataclass
class _Budget:
    """Work allowance for one render, shared by all hooks via a context variable."""

    deadline: float
    iterations: int = 0

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise TemplateError(f"Template took longer than {MAX_RENDER_SECONDS:g} seconds to render")

    def tick(self) -> None:
        self.iterations += 1
        if self.iterations > MAX_ITERATIONS:
            raise TemplateError(f"Template loops ran more than {MAX_ITERATIONS:,} times")
        if self.iterations % 256 == 0:
            self.check_time()


_budget: ContextVar[_Budget | None] = ContextVar("formwork_template_budget", default=None)


def _current_budget() -> _Budget:
    budget = _budget.get()
    if budget is None:
        # Only reachable if a hook runs outside a render; give it a fresh allowance.
        budget = _Budget(deadline=time.monotonic() + MAX_RENDER_SECONDS)
    return budget


def _check_size(length: int, what: str = "Value") -> None:
    if length > MAX_OUTPUT_CHARS:
        raise TemplateError(f"{what} would be longer than the {MAX_OUTPUT_CHARS:,} character limit")


_PLAIN_SCALARS = (str, int, float, Decimal, dt.date, dt.time, dt.timedelta)


def _ensure_plain(value: object, depth: int = 0) -> None:
    """Refuse anything but plain data, so no Python object ``repr`` leaks into output."""
    if value is None or isinstance(value, _PLAIN_SCALARS) or isinstance(value, Undefined):
        return
    if depth < 20 and isinstance(value, list | tuple):
        for item in value:
            _ensure_plain(item, depth + 1)
        return
    if depth < 20 and isinstance(value, dict):
        for key, item in value.items():
            _ensure_plain(key, depth + 1)
            _ensure_plain(item, depth + 1)
        return
    if isinstance(value, types.GeneratorType):
        raise TemplateError("A sequence cannot be inserted directly; add |join(', ') or |list")
    if isinstance(value, type | types.FunctionType | types.BuiltinFunctionType | types.MethodType):
        raise TemplateError("A function or method cannot be inserted into text; did you forget '()'?")
    raise TemplateError(f"A value of type {type(value).__name__!r} cannot be inserted into text")


def _to_text(value: object) -> str:
    _ensure_plain(value)
    if value is None:
        return ""
    text = str(value)
    _check_size(len(text))
    return text


def _finalize(value: object) -> object:
    """Applied to every ``{{ ... }}`` result: plain data only, ``None`` shows as empty."""
    _current_budget().check_time()
    _ensure_plain(value)
    if value is None:
        return ""
    if isinstance(value, str):
        _check_size(len(value))
    return value


class _Undefined(ChainableUndefined):
    """Missing attributes chain and render as empty text."""

    __slots__ = ()


# ---------------------------------------------------------------------------
# Filters
# ---------------------------------------------------------------------------


def _filter_default(value: object, default_value: object = "", boolean: bool = False) -> object:
    """Like Jinja's ``default`` but also treats ``None`` (an empty record field) as missing."""
    if isinstance(value, Undefined) or value is None or (boolean and not value):
        return default_value
    return value


def _filter_date(value: object, fmt: str = "%Y-%m-%d", tz: str | None = None) -> str:
    """Format a date/datetime (or ISO string); aware datetimes can be shown in ``tz``."""
    if value is None or isinstance(value, Undefined) or value == "":
        return ""
    if not isinstance(fmt, str) or len(fmt) > _MAX_DATE_FORMAT_CHARS:
        raise TemplateError(f"date format must be text of at most {_MAX_DATE_FORMAT_CHARS} characters")
    if isinstance(value, str):
        text = value
        try:
            value = dt.datetime.fromisoformat(text.strip())
        except ValueError:
            raise TemplateError(f"date filter cannot read {text[:40]!r} as a date") from None
    if not isinstance(value, dt.date):
        raise TemplateError(f"date filter needs a date, got {type(value).__name__!r}")
    if tz is not None:
        if not isinstance(value, dt.datetime):
            raise TemplateError("date filter can only convert time zones for date-times")
        try:
            zone = ZoneInfo(str(tz))
        except (ZoneInfoNotFoundError, ValueError):
            raise TemplateError(f"Unknown time zone {str(tz)[:60]!r}") from None
        value = (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).astimezone(zone)
    try:
        return value.strftime(fmt)
    except (ValueError, OverflowError) as exc:
        raise TemplateError(f"date filter could not format the value: {exc}") from None


def _filter_money(value: object, symbol: str = "") -> str:
    """Two decimals with thousands separators, e.g. ``-1,234.50`` (rounded half up)."""
    if value is None or isinstance(value, Undefined) or value == "":
        return ""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
        raise TemplateError(f"money filter needs a number, got {type(value).__name__!r}")
    try:
        amount = Decimal(str(value).strip().replace(",", ""))
        amount = amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    except (InvalidOperation, ValueError):
        raise TemplateError(f"money filter needs a number, got {str(value)[:40]!r}") from None
    if not amount.is_finite():
        raise TemplateError("money filter needs a finite number")
    sign = "-" if amount < 0 else ""
    return f"{sign}{symbol}{abs(amount):,.2f}"


def _filter_join(value: object, separator: str = "", attribute: str | int | None = None) -> str:
    """``join`` that checks the result size before building it."""
    if value is None or isinstance(value, Undefined):
        return ""
    if not isinstance(value, Iterable) or isinstance(value, str | Mapping):
        raise TemplateError("join filter needs a list")
    items: list[str] = []
    total = 0
    sep = _to_text(separator)
    for item in value:
        _current_budget().tick()
        if attribute is not None:
            for part in str(attribute).split("."):
                item = _ENV.getitem(item, int(part) if part.isdigit() else part)
        text = _to_text(item)
        total += len(text) + (len(sep) if items else 0)
        _check_size(total)
        items.append(text)
    return sep.join(items)


def _filter_replace(value: object, old: str, new: str, count: int | None = None) -> str:
    """``replace`` that checks the result size before building it."""
    text, old_text, new_text = _to_text(value), _to_text(old), _to_text(new)
    occurrences = text.count(old_text) if old_text else len(text) + 1
    if count is not None:
        occurrences = min(occurrences, max(int(count), 0))
    _check_size(len(text) + occurrences * max(len(new_text) - len(old_text), 0))
    return text.replace(old_text, new_text, -1 if count is None else max(int(count), 0))


def _filter_iterate(value: object) -> Iterator[object]:
    """Inserted around every ``{% for %}`` iterable to count iterations (see _Guard)."""
    if value is None or isinstance(value, Undefined):
        return
    budget = _current_budget()
    try:
        iterator = iter(value)  # type: ignore[call-overload]
    except TypeError:
        raise TemplateError(f"Cannot loop over a value of type {type(value).__name__!r}") from None
    for item in iterator:
        budget.tick()
        yield item


def _filter_concat(values: list[object]) -> str:
    """Replacement for ``~`` that checks the result size and renders ``None`` as empty."""
    parts: list[str] = []
    total = 0
    for value in values:
        text = _to_text(value)
        total += len(text)
        _check_size(total)
        parts.append(text)
    return "".join(parts)


def _template_range(*args: int) -> range:
    _current_budget().check_time()
    try:
        return safe_range(*args)
    except OverflowError:
        raise TemplateError("range() is limited to 100,000 numbers") from None


# ---------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------


class _Environment(ImmutableSandboxedEnvironment):
    """Sandbox with allow-listed calls, size-checked operators and record-friendly lookups."""

    intercepted_binops = frozenset({"+", "*", "**", "%"})

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if not super().is_safe_attribute(obj, attr, value):
            return False
        if callable(value) and not isinstance(value, Undefined):
            return _is_allowed_method(value)
        return True

    def wrap_str_format(self, value: Any) -> None:
        # str.format / format_map are not on the method allow-list at all.
        return None

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        raise TemplateError(f"Access to {attribute!r} is not allowed in templates")

    def getattr(self, obj: Any, attribute: str) -> Any:
        # Record fields win over dict methods, so a field named "items" or "values" works.
        if isinstance(obj, Mapping) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def is_safe_callable(self, obj: Any) -> bool:
        return obj is _template_range or _is_allowed_method(obj)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        # Double underscores (as in Jinja) keep user keyword arguments from colliding.
        if not __self.is_safe_callable(__obj):
            raise TemplateError("Calling this value is not allowed in templates")
        _current_budget().check_time()
        return __context.call(__obj, *args, **kwargs)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _current_budget().check_time()
        if operator == "%" and isinstance(left, str):
            raise TemplateError("Text formatting with '%' is not supported; use ~ to join text")
        if operator == "+" and isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
            _check_size(len(left) + len(right))
        if operator == "*":
            _check_product(left, right)
        if operator == "**" and isinstance(left, int) and isinstance(right, int):
            if abs(left) > 1 and right > 0 and left.bit_length() * right > _MAX_INT_BITS:
                raise TemplateError("Number is too large")
        try:
            return super().call_binop(context, operator, left, right)
        except OverflowError:
            raise TemplateError("Number is too large") from None


def _check_product(left: Any, right: Any) -> None:
    sequences = (str, list, tuple)
    if isinstance(left, sequences) and isinstance(right, int):
        _check_size(len(left) * max(right, 0))
    elif isinstance(right, sequences) and isinstance(left, int):
        _check_size(len(right) * max(left, 0))
    elif isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() > _MAX_INT_BITS:
            raise TemplateError("Number is too large")


def _is_allowed_method(obj: Any) -> bool:
    if not isinstance(obj, types.BuiltinMethodType | types.MethodType):
        return False
    owner, name = getattr(obj, "__self__", None), getattr(obj, "__name__", "")
    if isinstance(owner, str):
        return name in _STR_METHODS
    if isinstance(owner, Mapping):
        return name in _MAPPING_METHODS
    if isinstance(owner, list | tuple):
        return name in _SEQUENCE_METHODS
    if isinstance(owner, LoopContext):
        return name in _LOOP_METHODS
    return False


def _build_environment() -> _Environment:
    env = _Environment(
        autoescape=False,
        undefined=_Undefined,
        finalize=_finalize,
        optimized=False,
        auto_reload=False,
        cache_size=0,
    )
    builtin = env.filters
    env.filters = {name: builtin[name] for name in _SAFE_BUILTIN_FILTERS}
    env.filters.update(
        {
            "default": _filter_default,
            "d": _filter_default,
            "date": _filter_date,
            "money": _filter_money,
            "join": _filter_join,
            "replace": _filter_replace,
            "_fw_iterate": _filter_iterate,
            "_fw_concat": _filter_concat,
        }
    )
    env.globals.clear()
    env.globals["range"] = _template_range
    return env


_ENV = _build_environment()
_GLOBAL_NAMES = frozenset(_ENV.globals)


class _Guard(NodeTransformer):
    """Refuse unsafe statements and route loops and ``~`` through checked filters."""

    def generic_visit(self, node: nodes.Node, *args: Any, **kwargs: Any) -> nodes.Node:
        for node_type, reason in _FORBIDDEN_NODES.items():
            if isinstance(node, node_type):
                raise TemplateError(reason[0].upper() + reason[1:], lineno=node.lineno)
        return super().generic_visit(node, *args, **kwargs)

    def visit_For(self, node: nodes.For) -> nodes.Node:
        if node.recursive:
            raise TemplateError("Recursive loops are not supported", lineno=node.lineno)
        node = self.generic_visit(node)  # type: ignore[assignment]
        node.iter = nodes.Filter(node.iter, "_fw_iterate", [], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        node = self.generic_visit(node)  # type: ignore[assignment]
        items = nodes.List(list(node.nodes), lineno=node.lineno)
        return nodes.Filter(items, "_fw_concat", [], [], None, None, lineno=node.lineno)


@dataclass(frozen=True)
class _Compiled:
    template: Template
    names: frozenset[str]
    expression: Template | None  # compiled "fw_value = <expr>" when the text is exactly one {{ expr }}


def _syntax_error(exc: JinjaTemplateError) -> TemplateError:
    lineno = getattr(exc, "lineno", None)
    message = getattr(exc, "message", None) or str(exc)
    return TemplateError(f"Template syntax error: {message}", lineno=lineno)


@functools.lru_cache(maxsize=512)
def _compile(text: str) -> _Compiled:
    if len(text) > MAX_TEMPLATE_CHARS:
        raise TemplateError(f"Template is longer than the {MAX_TEMPLATE_CHARS:,} character limit")
    try:
        ast = _ENV.parse(text)
        names = frozenset(find_undeclared_variables(ast)) - _GLOBAL_NAMES
        is_single = _single_expression(ast) is not None
        ast = _Guard().visit(ast)
        ast.set_environment(_ENV)
        template = _ENV.from_string(ast)
        expression = None
        if is_single:
            # A fresh tree, so the two compiled templates share no nodes.
            single = _single_expression(_ENV.parse(text))
            assert single is not None  # the same text parsed to one expression just above
            assign = nodes.Assign(nodes.Name("fw_value", "store"), single, lineno=single.lineno)
            expr_ast = nodes.Template([assign], lineno=1)
            expr_ast = _Guard().visit(expr_ast)
            expr_ast.set_environment(_ENV)
            expression = _ENV.from_string(expr_ast)
    except TemplateError:
        raise
    except TemplateSyntaxError as exc:
        raise _syntax_error(exc) from None
    except JinjaTemplateError as exc:
        raise TemplateError(f"Template error: {exc.message or exc}") from None
    except (RecursionError, MemoryError):
        raise TemplateError("Template is too deeply nested") from None
    return _Compiled(template, names, expression)


def _single_expression(ast: nodes.Template) -> nodes.Expr | None:
    if len(ast.body) != 1 or not isinstance(ast.body[0], nodes.Output):
        return None
    children = ast.body[0].nodes
    if len(children) != 1 or isinstance(children[0], nodes.TemplateData):
        return None
    return children[0]


def _check_names(compiled: _Compiled, available: Iterable[str]) -> None:
    unknown = sorted(compiled.names - set(available))
    if unknown:
        known = ", ".join(sorted(available)) or "none"
        raise TemplateError(f"Unknown name {unknown[0]!r} in template (available: {known})")


def _compile_checked(text: object) -> _Compiled:
    if not isinstance(text, str):
        raise TemplateError("Template must be text")
    return _compile(text)


def validate_template(text: str, *, names: Iterable[str] | None = None) -> None:
    """Check a template when it is saved, so users see mistakes before a rule runs.

    ``names``, when given, are the top-level names the template will be rendered
    with; unknown names are then reported too.
    """
    compiled = _compile_checked(text)
    _refuse_unsafe(text)
    if names is not None:
        _check_names(compiled, names)


_ALL_METHODS = _STR_METHODS | _MAPPING_METHODS | _SEQUENCE_METHODS | _LOOP_METHODS


@functools.lru_cache(maxsize=512)
def _refuse_unsafe(text: str) -> None:
    """Save-time mirror of the runtime sandbox: internal names and non-allow-listed calls are refused.

    The sandbox would refuse these when the rule runs; refusing them when the rule is saved tells the
    author at once instead of failing later in the worker.
    """
    ast = _ENV.parse(text)
    for node in ast.find_all((nodes.Getattr, nodes.Getitem, nodes.Const, nodes.Call)):
        if isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
            raise TemplateError(f"Access to {node.attr!r} is not allowed in templates", lineno=node.lineno)
        if isinstance(node, nodes.Const) and isinstance(node.value, str) and "__" in node.value:
            raise TemplateError("Names with double underscores are not allowed in templates", lineno=node.lineno)
        if isinstance(node, nodes.Call):
            func = node.node
            if isinstance(func, nodes.Name) and func.name == "range":
                continue
            if isinstance(func, nodes.Getattr) and func.attr in _ALL_METHODS:
                continue
            raise TemplateError("Calling this value is not allowed in templates", lineno=node.lineno)


def _run(compiled: _Compiled, context: Mapping[str, object], *, expression: bool) -> object:
    _check_names(compiled, context)
    token = _budget.set(_Budget(deadline=time.monotonic() + MAX_RENDER_SECONDS))
    try:
        if expression:
            assert compiled.expression is not None  # callers ask for expression mode only when it was compiled
            module = compiled.expression.make_module(dict(context))
            value = getattr(module, "fw_value", None)
            _ensure_plain(value)
            return None if isinstance(value, Undefined) else value
        parts: list[str] = []
        total = 0
        for chunk in compiled.template.generate(dict(context)):
            total += len(chunk)
            _check_size(total, "Rendered text")
            parts.append(chunk)
        return "".join(parts)
    except TemplateError:
        raise
    except TemplateSyntaxError as exc:
        raise _syntax_error(exc) from None
    except JinjaTemplateError as exc:
        raise TemplateError(f"Template error: {exc.message or exc}") from None
    except (RecursionError, MemoryError):
        raise TemplateError("Template needs too many resources to render") from None
    except Exception as exc:  # user templates can raise anything (ZeroDivisionError, TypeError, ...)
        raise TemplateError(f"Template error: {type(exc).__name__}: {exc}"[:500]) from None
    finally:
        _budget.reset(token)


def render_template(text: str, context: dict[str, object]) -> str:
    """Render ``text`` with ``context`` (plain data) in the sandbox; raises TemplateError."""
    result = _run(_compile_checked(text), context, expression=False)
    assert isinstance(result, str)
    return result


def template_names(value: object) -> frozenset[str]:
    """The top-level names the templates inside a JSON-like value read (``record``, ``trigger``, ...).

    A caller can leave out of the context what no template reads (the executor then does not load the
    record for a constant value). Text that does not compile reads nothing here; rendering it reports
    the error.
    """
    if isinstance(value, str):
        try:
            return _compile(value).names
        except TemplateError:
            return frozenset()
    if isinstance(value, Mapping):
        return frozenset().union(*(template_names(v) for v in value.values()))
    if isinstance(value, list | tuple):
        return frozenset().union(*(template_names(v) for v in value))
    return frozenset()


def render_value(value: object, context: Mapping[str, object]) -> object:
    """Render templates inside a JSON-like value (e.g. a webhook payload).

    A string that is exactly one ``{{ expr }}`` yields the raw value, so numbers stay
    numbers and ``None`` stays ``None``; other strings render to text.  Dict keys are
    kept as they are.
    """
    if isinstance(value, str):
        compiled = _compile(value)
        if compiled.expression is not None:
            return _run(compiled, context, expression=True)
        return _run(compiled, context, expression=False)
    if isinstance(value, Mapping):
        return {key: render_value(item, context) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [render_value(item, context) for item in value]
    return value
