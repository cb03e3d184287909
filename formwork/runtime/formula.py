"""Spreadsheet-style formula language compiled to SQLAlchemy Core expressions.

A formula such as ``IF({amount} > 1000, "big", "small")`` is parsed into a small
syntax tree (:func:`parse`) and compiled (:func:`compile_formula`) into one SQL
expression that behaves the same on SQLite and PostgreSQL, so computed fields can
be filtered, sorted and aggregated by the database.

Safety rules: user text never becomes SQL text. Every literal is a bound
parameter and every function is a ``func.*`` call or another Core construct.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

__all__ = [
    "FUNCTIONS",
    "MAX_DEPTH",
    "MAX_LENGTH",
    "TYPES",
    "Binary",
    "Call",
    "Field",
    "FormulaError",
    "Literal",
    "Node",
    "Unary",
    "compile_formula",
    "find_cycle",
    "parse",
    "references",
]

MAX_LENGTH = 10_000
"""Longest accepted formula, in characters."""

MAX_DEPTH = 100
"""Deepest accepted nesting of operators and function calls."""

MAX_SQL_NODES = 50_000
"""Largest accepted compiled expression (counted as rendered, repeats included)."""

MAX_SQL_DEPTH = 400
"""Deepest accepted compiled expression tree."""

TYPES = ("number", "text", "boolean", "date", "datetime")
"""Value types a formula or a field can have."""

Resolver = Callable[[str], tuple[ColumnElement[Any], str]]


class FormulaError(Exception):
    """A formula could not be parsed or compiled.

    ``position`` is the 0-based character offset in the formula text where the
    problem was found, or ``None`` when it is not tied to one place.
    """

    def __init__(self, message: str, position: int | None = None) -> None:
        super().__init__(message, position)
        self.message = message
        self.position = position

    def __str__(self) -> str:
        if self.position is None:
            return self.message
        return f"{self.message} at position {self.position}"


# ---------------------------------------------------------------------------
# Syntax tree
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    """Base class of syntax tree nodes; ``pos`` is the 0-based start offset."""

    pos: int


@dataclass(frozen=True)
class Literal(Node):
    """A constant: ``kind`` is "number" (Decimal), "text", "boolean" or "blank"."""

    kind: str
    value: Decimal | str | bool | None


@dataclass(frozen=True)
class Field(Node):
    """A field reference written as ``{key}``."""

    key: str


@dataclass(frozen=True)
class Call(Node):
    """A function call; ``name`` is upper-case."""

    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True)
class Unary(Node):
    """A prefix operator: "-", "+" or "NOT"."""

    op: str
    operand: Node


@dataclass(frozen=True)
class Binary(Node):
    """An infix operator such as "+", "&", "=", "AND"."""

    op: str
    left: Node
    right: Node


def _children(node: Node) -> tuple[Node, ...]:
    """Direct sub-nodes of ``node``."""
    if isinstance(node, Call):
        return node.args
    if isinstance(node, Unary):
        return (node.operand,)
    if isinstance(node, Binary):
        return (node.left, node.right)
    return ()


def _walk(node: Node) -> Iterator[tuple[Node, int]]:
    """Yield every node with its depth (root is 1), without recursion."""
    stack = [(node, 1)]
    while stack:
        current, depth = stack.pop()
        yield current, depth
        stack.extend((child, depth + 1) for child in _children(current))


def references(node: Node) -> set[str]:
    """Return the field keys referenced as ``{key}`` anywhere in ``node``."""
    return {n.key for n, _ in _walk(node) if isinstance(n, Field)}


# ---------------------------------------------------------------------------
# Function table: name -> (minimum args, maximum args or None for "any")
# ---------------------------------------------------------------------------

FUNCTIONS: dict[str, tuple[int, int | None]] = {
    "IF": (3, 3),
    "SWITCH": (3, None),
    "AND": (1, None),
    "OR": (1, None),
    "NOT": (1, 1),
    "ISBLANK": (1, 1),
    "BLANK": (0, 0),
    "ROUND": (1, 2),
    "ROUNDUP": (1, 2),
    "ROUNDDOWN": (1, 2),
    "FLOOR": (1, 2),
    "CEILING": (1, 2),
    "INT": (1, 1),
    "ABS": (1, 1),
    "MIN": (1, None),
    "MAX": (1, None),
    "SUM": (1, None),
    "AVERAGE": (1, None),
    "MOD": (2, 2),
    "POWER": (2, 2),
    "SQRT": (1, 1),
    "CONCAT": (1, None),
    "LEN": (1, 1),
    "LOWER": (1, 1),
    "UPPER": (1, 1),
    "TRIM": (1, 1),
    "LEFT": (1, 2),
    "RIGHT": (1, 2),
    "MID": (3, 3),
    "SUBSTITUTE": (3, 3),
    "FIND": (2, 2),
    "CONTAINS": (2, 2),
    "TEXT": (1, 1),
    "VALUE": (1, 1),
    "TODAY": (0, 0),
    "NOW": (0, 0),
    "YEAR": (1, 1),
    "MONTH": (1, 1),
    "DAY": (1, 1),
    "WEEKDAY": (1, 1),
    "HOUR": (1, 1),
    "MINUTE": (1, 1),
    "DATE": (3, 3),
    "DATEADD": (3, 3),
    "DATEDIF": (3, 3),
}
"""Every supported function with its accepted argument count."""


def _arity_message(name: str, got: int) -> str:
    """Human message for a call with the wrong number of arguments."""
    low, high = FUNCTIONS[name]
    if high is None:
        wanted = f"at least {low} argument{'s' if low != 1 else ''}"
    elif low == high == 0:
        wanted = "no arguments"
    elif low == high:
        wanted = f"{low} argument{'s' if low != 1 else ''}"
    else:
        wanted = f"{low} or {high} arguments"
    return f"{name} expects {wanted}, got {got}"


# ---------------------------------------------------------------------------
# Tokenizer and parser
# ---------------------------------------------------------------------------


class _Tok(NamedTuple):
    kind: str  # number, string, field, ident, op, eof
    value: str
    pos: int


_NUMBER_RE = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEY_RE = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*")
_OPERATORS = ("<=", ">=", "<>", "!=", "==", "+", "-", "*", "/", "%", "&", "=", "<", ">", "(", ")", ",")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'"}
_FULL_WIDTH = {
    "（": "(", "）": ")", "，": ",", "“": '"', "”": '"', "‘": "'", "’": "'",
    "｛": "{", "｝": "}", "＝": "=", "＞": ">", "＜": "<", "＋": "+", "－": "-",
    "＊": "*", "／": "/", "＆": "&", "％": "%",
}  # fmt: skip
_MAX_NUMBER_CHARS = 40


def _tokenize(text: str) -> list[_Tok]:
    """Split formula text into tokens."""
    tokens: list[_Tok] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if ch in "0123456789" or (ch == "." and i + 1 < n and text[i + 1] in "0123456789"):
            m = _NUMBER_RE.match(text, i)
            assert m is not None
            if m.end() - i > _MAX_NUMBER_CHARS:
                raise FormulaError(f"number is too long (max {_MAX_NUMBER_CHARS} characters)", i)
            tokens.append(_Tok("number", m.group(), i))
            i = m.end()
            continue
        if ch in "\"'":
            value, end = _read_string(text, i)
            tokens.append(_Tok("string", value, i))
            i = end
            continue
        if ch == "{":
            close = text.find("}", i + 1)
            if close < 0:
                raise FormulaError("unclosed field reference '{'", i)
            key = text[i + 1 : close]
            if not _KEY_RE.fullmatch(key):
                raise FormulaError(
                    f"invalid field reference {{{key}}} (keys look like {{amount}} or {{customer.name}})", i
                )
            tokens.append(_Tok("field", key, i))
            i = close + 1
            continue
        m = _IDENT_RE.match(text, i)
        if m:
            tokens.append(_Tok("ident", m.group(), i))
            i = m.end()
            continue
        for op in _OPERATORS:
            if text.startswith(op, i):
                tokens.append(_Tok("op", op, i))
                i += len(op)
                break
        else:
            if ch in _FULL_WIDTH:
                raise FormulaError(f"unexpected full-width character '{ch}' (type '{_FULL_WIDTH[ch]}' instead)", i)
            raise FormulaError(f"unexpected character {ch!r}", i)
    tokens.append(_Tok("eof", "", n))
    return tokens


def _read_string(text: str, start: int) -> tuple[str, int]:
    """Read a quoted string starting at ``start``; return (value, end offset)."""
    quote = text[start]
    out: list[str] = []
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            out.append(_ESCAPES.get(nxt, nxt))
            i += 2
            continue
        if ch == quote:
            return "".join(out), i + 1
        out.append(ch)
        i += 1
    raise FormulaError("unclosed text: missing closing quote", start)


_BINARY_PRECEDENCE = {
    "OR": 1,
    "AND": 2,
    "=": 4, "!=": 4, "<": 4, "<=": 4, ">": 4, ">=": 4,
    "&": 5,
    "+": 6, "-": 6,
    "*": 7, "/": 7, "%": 7,
}  # fmt: skip
_PREC_NOT = 3
_PREC_UNARY = 8
_CONSTANTS = {"TRUE", "FALSE", "NULL"}


class _Parser:
    """Precedence-climbing parser producing :class:`Node` trees."""

    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.i = 0

    def peek(self, ahead: int = 0) -> _Tok:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def advance(self) -> _Tok:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def binary_op(self, tok: _Tok) -> str | None:
        """Return the normalised binary operator ``tok`` stands for, if any."""
        if tok.kind == "op":
            op = {"<>": "!=", "==": "="}.get(tok.value, tok.value)
            return op if op in _BINARY_PRECEDENCE else None
        if tok.kind == "ident" and tok.value.upper() in ("AND", "OR"):
            return tok.value.upper()
        return None

    def expect(self, value: str) -> _Tok:
        tok = self.peek()
        if tok.kind != "op" or tok.value != value:
            raise FormulaError(f"expected '{value}' but found {_describe(tok)}", tok.pos)
        return self.advance()

    def parse(self) -> Node:
        node = self.expression(0, 1)
        tok = self.peek()
        if tok.kind != "eof":
            raise FormulaError(f"unexpected {_describe(tok)}", tok.pos)
        return node

    def expression(self, min_prec: int, depth: int) -> Node:
        if depth > MAX_DEPTH:
            raise FormulaError(f"formula is nested too deeply (max {MAX_DEPTH} levels)", self.peek().pos)
        left = self.prefix(depth)
        while True:
            tok = self.peek()
            op = self.binary_op(tok)
            if op is None or _BINARY_PRECEDENCE[op] < min_prec:
                return left
            self.advance()
            right = self.expression(_BINARY_PRECEDENCE[op] + 1, depth + 1)
            left = Binary(tok.pos, op, left, right)

    def prefix(self, depth: int) -> Node:
        tok = self.advance()
        if tok.kind == "number":
            return Literal(tok.pos, "number", Decimal(tok.value))
        if tok.kind == "string":
            return Literal(tok.pos, "text", tok.value)
        if tok.kind == "field":
            return Field(tok.pos, tok.value)
        if tok.kind == "op" and tok.value == "(":
            inner = self.expression(0, depth + 1)
            self.expect(")")
            return inner
        if tok.kind == "op" and tok.value in ("-", "+"):
            return Unary(tok.pos, tok.value, self.expression(_PREC_UNARY, depth + 1))
        if tok.kind == "ident":
            name = tok.value.upper()
            nxt = self.peek()
            if nxt.kind == "op" and nxt.value == "(":
                return self.call(tok, depth)
            if name == "NOT":
                return Unary(tok.pos, "NOT", self.expression(_PREC_NOT, depth + 1))
            if name in _CONSTANTS:
                if name == "NULL":
                    return Literal(tok.pos, "blank", None)
                return Literal(tok.pos, "boolean", name == "TRUE")
            hint = f" (did you mean {{{tok.value}}}?)" if _KEY_RE.fullmatch(tok.value) else ""
            if name in FUNCTIONS:
                hint = f" (did you mean {name}(...)?)"
            raise FormulaError(f"unknown name {tok.value}{hint}", tok.pos)
        if tok.kind == "eof":
            raise FormulaError("unexpected end of formula", tok.pos)
        raise FormulaError(f"unexpected {_describe(tok)}", tok.pos)

    def call(self, name_tok: _Tok, depth: int) -> Node:
        name = name_tok.value.upper()
        if name not in FUNCTIONS:
            raise FormulaError(f"unknown function {name_tok.value}", name_tok.pos)
        self.expect("(")
        args: list[Node] = []
        if not (self.peek().kind == "op" and self.peek().value == ")"):
            while True:
                args.append(self.expression(0, depth + 1))
                if self.peek().kind == "op" and self.peek().value == ",":
                    self.advance()
                    continue
                break
        self.expect(")")
        low, high = FUNCTIONS[name]
        if len(args) < low or (high is not None and len(args) > high):
            raise FormulaError(_arity_message(name, len(args)), name_tok.pos)
        return Call(name_tok.pos, name, tuple(args))


def _describe(tok: _Tok) -> str:
    """Short description of a token for error messages."""
    if tok.kind == "eof":
        return "end of formula"
    if tok.kind == "string":
        return "text"
    if tok.kind == "field":
        return f"{{{tok.value}}}"
    return f"'{tok.value}'"


def parse(text: str) -> Node:
    """Parse formula ``text`` into a syntax tree or raise :class:`FormulaError`."""
    if not isinstance(text, str):
        raise FormulaError("formula must be text")
    if len(text) > MAX_LENGTH:
        raise FormulaError(f"formula is too long (max {MAX_LENGTH} characters)", MAX_LENGTH)
    if not text.strip():
        raise FormulaError("formula is empty", 0)
    node = _Parser(text).parse()
    for current, depth in _walk(node):
        if depth > MAX_DEPTH:
            raise FormulaError(f"formula is nested too deeply (max {MAX_DEPTH} levels)", current.pos)
    return node


# ---------------------------------------------------------------------------
# Cycle detection
# ---------------------------------------------------------------------------


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """Return a dependency cycle such as ``["a", "b", "a"]``, or ``None``.

    ``graph`` maps each formula field to the keys its formula references; keys
    that are not in ``graph`` are plain (non-formula) fields and end a path.
    """
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    for root in sorted(graph):
        if state.get(root):
            continue
        path = [root]
        state[root] = 1
        stack = [iter(sorted(graph[root]))]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                stack.pop()
                state[path.pop()] = 2
                continue
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt in graph and not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


# ---------------------------------------------------------------------------
# Compiler
# ---------------------------------------------------------------------------


class _V(NamedTuple):
    """A compiled value: SQL expression, formula type ("blank" for BLANK()) and position."""

    expr: ColumnElement[Any]
    type: str
    pos: int


_ARTICLE = {"number": "a number", "text": "text", "boolean": "a boolean", "date": "a date", "datetime": "a date"}
_DATE_UNITS = {
    "day": "days", "days": "days", "week": "weeks", "weeks": "weeks",
    "month": "months", "months": "months", "year": "years", "years": "years",
    "hour": "hours", "hours": "hours", "minute": "minutes", "minutes": "minutes",
    "second": "seconds", "seconds": "seconds",
}  # fmt: skip
# DATEADD amounts are clamped so results stay inside PostgreSQL's date range.
_DATEADD_LIMITS = {
    "days": 1_460_000, "weeks": 208_000, "months": 48_000, "years": 4_000,
    "hours": 35_000_000, "minutes": 2_100_000_000, "seconds": 2_100_000_000,
}  # fmt: skip
_SECONDS = {"days": 86_400, "weeks": 604_800, "hours": 3_600, "minutes": 60, "seconds": 1}
_NUMBER_PATTERN = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,3})?$"
_INT_LIMIT = 1_000_000_000
_MIN_DATE = dt.date(1, 1, 1)
_MAX_DATE = dt.date(9999, 12, 31)
_MIN_DATETIME = dt.datetime(1, 1, 1)
_MAX_DATETIME = dt.datetime(9999, 12, 31, 23, 59, 59, 999999)


def compile_formula(
    node: Node,
    resolve: Resolver,
    dialect: str,
    today: dt.date,
    now: dt.datetime,
) -> tuple[ColumnElement[Any], str]:
    """Compile a parsed formula into ``(sql_expression, type)``.

    ``resolve(key)`` returns ``(sql_expression, type)`` for a field or raises
    :class:`FormulaError`. ``dialect`` is "sqlite" or "postgresql". ``today`` and
    ``now`` (naive UTC) are bound as parameters for TODAY() and NOW().
    """
    if dialect not in ("sqlite", "postgresql"):
        raise ValueError(f"unsupported dialect {dialect!r}")
    if isinstance(today, dt.datetime) or not isinstance(today, dt.date):
        raise ValueError("today must be a datetime.date")
    if not isinstance(now, dt.datetime):
        raise ValueError("now must be a datetime.datetime")
    if now.tzinfo is not None:
        now = now.astimezone(dt.UTC).replace(tzinfo=None)
    compiler = _Compiler(resolve, dialect, today, now)
    value = compiler.compile(node)
    kind = "text" if value.type == "blank" else value.type
    expr = compiler.coerce(value, kind)
    _check_complexity(expr, compiler.leaves)
    return _retype(expr, compiler.sqltype(kind)), kind


def _retype(expr: ColumnElement[Any], type_: sa.types.TypeEngine[Any]) -> ColumnElement[Any]:
    """Give ``expr`` a SQLAlchemy type without SQL changes; bound values keep theirs."""
    if isinstance(expr, sa.BindParameter):
        return expr
    return sa.type_coerce(expr, type_)


def _check_complexity(expr: ColumnElement[Any], leaves: set[int]) -> None:
    """Reject compiled expressions that would render huge or too deep SQL."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    stack: list[tuple[Any, bool]] = [(expr, False)]
    while stack:
        element, done = stack.pop()
        key = id(element)
        if key in size:
            continue
        if key in leaves:
            size[key], depth[key] = 1, 1
            continue
        children = list(element.get_children())
        if not done:
            stack.append((element, True))
            stack.extend((child, False) for child in children if id(child) not in size)
            continue
        size[key] = 1 + sum(size[id(c)] for c in children)
        depth[key] = 1 + max((depth[id(c)] for c in children), default=0)
        if size[key] > MAX_SQL_NODES or depth[key] > MAX_SQL_DEPTH:
            raise FormulaError("formula is too complex; split it into several formula fields")


class _Compiler:
    """Turns syntax trees into dialect-specific SQLAlchemy expressions."""

    def __init__(self, resolve: Resolver, dialect: str, today: dt.date, now: dt.datetime) -> None:
        self.resolve = resolve
        self.pg = dialect == "postgresql"
        self.today = today
        self.now = now
        self.fields: dict[str, _V] = {}
        self.leaves: set[int] = set()

    # -- helpers ----------------------------------------------------------

    def sqltype(self, kind: str) -> sa.types.TypeEngine[Any]:
        """SQLAlchemy type used for values of formula type ``kind``."""
        if kind == "number":
            return sa.Numeric() if self.pg else sa.Float()
        return {
            "text": sa.Text(),
            "boolean": sa.Boolean(),
            "date": sa.Date(),
            "datetime": sa.DateTime(),
        }.get(kind, sa.Text())

    def lit(self, value: Any, kind: str) -> ColumnElement[Any]:
        """Bound parameter for a Python value of formula type ``kind``."""
        if kind == "number":
            if self.pg:
                return sa.literal(Decimal(value), sa.Numeric())
            if isinstance(value, int) or (isinstance(value, Decimal) and _is_small_int(value)):
                return sa.literal(int(value), sa.Integer())
            return sa.literal(float(value), sa.Float())
        return sa.literal(value, self.sqltype(kind))

    def ilit(self, value: int) -> ColumnElement[Any]:
        """Bound integer parameter for internal constants."""
        return sa.literal(value, sa.BigInteger() if abs(value) > 2**31 - 1 else sa.Integer())

    def tlit(self, value: str) -> ColumnElement[Any]:
        """Bound text parameter for internal constants."""
        return sa.literal(value, sa.Text())

    def typed_null(self, kind: str) -> ColumnElement[Any]:
        """A NULL with an explicit SQL type, so PostgreSQL can infer types."""
        return sa.cast(sa.null(), self.sqltype(kind))

    def numeric(self, expr: ColumnElement[Any]) -> ColumnElement[Any]:
        """Type an expression that already yields a number of the right SQL type."""
        return _retype(expr, self.sqltype("number"))

    def to_numeric(self, expr: ColumnElement[Any]) -> ColumnElement[Any]:
        """Type an integer-valued expression as a number (NUMERIC on PostgreSQL)."""
        if self.pg:
            return sa.cast(expr, sa.Numeric())
        return self.numeric(expr)

    def coerce(self, value: _V, kind: str) -> ColumnElement[Any]:
        """Expression of ``value`` as ``kind``; only blank and date->datetime convert."""
        if value.type == "blank":
            return self.typed_null(kind)
        if value.type == "date" and kind == "datetime":
            return self.date_to_datetime(value.expr)
        return value.expr

    def expect(self, value: _V, kinds: str | tuple[str, ...], what: str) -> ColumnElement[Any]:
        """Check ``value`` has one of ``kinds`` (or is blank) and return its expression."""
        kinds = (kinds,) if isinstance(kinds, str) else kinds
        if value.type == "blank":
            return self.typed_null(kinds[0])
        if value.type not in kinds:
            raise FormulaError(f"{what} expects {_ARTICLE[kinds[0]]}, got {value.type}", value.pos)
        return value.expr

    def common_type(self, values: list[_V], what: str) -> str:
        """The shared type of ``values`` (blank fits anything, date widens to datetime)."""
        kinds = {v.type for v in values} - {"blank"}
        if kinds == {"date", "datetime"}:
            return "datetime"
        if len(kinds) > 1:
            first = next(v for v in values if v.type != "blank")
            other = next(v for v in values if v.type not in ("blank", first.type))
            raise FormulaError(f"{what} values must have the same type, got {first.type} and {other.type}", other.pos)
        return kinds.pop() if kinds else "blank"

    def int_arg(self, expr: ColumnElement[Any], low: int, high: int) -> ColumnElement[Any]:
        """Truncate a number toward zero and clamp it into [low, high] as an integer."""
        if self.pg:
            truncated = sa.func.trunc(expr)
        else:
            truncated = sa.cast(expr, sa.Integer())
        clamped = sa.case(
            (truncated < self.ilit(low), self.ilit(low)),
            (truncated > self.ilit(high), self.ilit(high)),
            else_=truncated,
        )
        return sa.cast(clamped, sa.BigInteger() if max(abs(low), abs(high)) > 2**31 - 1 else sa.Integer())

    def floor(self, expr: ColumnElement[Any]) -> ColumnElement[Any]:
        """floor(x) that works on SQLite without math functions."""
        if self.pg:
            return sa.func.floor(expr)
        truncated = sa.cast(expr, sa.Integer())
        return truncated - sa.case((expr < truncated, 1), else_=0)

    def ceiling(self, expr: ColumnElement[Any]) -> ColumnElement[Any]:
        """ceil(x) that works on SQLite without math functions."""
        if self.pg:
            return sa.func.ceil(expr)
        truncated = sa.cast(expr, sa.Integer())
        return truncated + sa.case((expr > truncated, 1), else_=0)

    def denoise(self, expr: ColumnElement[Any]) -> ColumnElement[Any]:
        """On SQLite, round away binary floating-point noise before floor/ceil."""
        return expr if self.pg else sa.func.round(expr, 9)

    def divide(self, left: ColumnElement[Any], right: ColumnElement[Any]) -> ColumnElement[Any]:
        """True division that yields NULL when dividing by zero."""
        zero = self.ilit(0)
        if self.pg:
            return sa.cast(left, sa.Numeric()) / sa.func.nullif(right, zero)
        return sa.cast(left, sa.Float()) / sa.func.nullif(right, zero)

    def as_text(self, value: _V) -> ColumnElement[Any]:
        """Convert any value to text the same way on both engines."""
        x, kind = value.expr, value.type
        if kind == "blank":
            return self.typed_null("text")
        if kind == "text":
            return x
        if kind == "number":
            if self.pg:
                return sa.cast(sa.func.trim_scale(x), sa.Text())
            as_int = sa.cast(x, sa.Integer())
            return sa.case((x == as_int, sa.cast(as_int, sa.Text())), else_=sa.cast(x, sa.Text()))
        if kind == "boolean":
            return sa.case((x, self.tlit("TRUE")), (sa.not_(x), self.tlit("FALSE")), else_=self.typed_null("text"))
        if kind == "date":
            if self.pg:
                return sa.func.to_char(x, self.tlit("YYYY-MM-DD"), type_=sa.Text())
            return sa.func.strftime(self.tlit("%Y-%m-%d"), x, type_=sa.Text())
        if self.pg:
            return sa.func.to_char(x, self.tlit("YYYY-MM-DD HH24:MI:SS"), type_=sa.Text())
        return sa.func.strftime(self.tlit("%Y-%m-%d %H:%M:%S"), x, type_=sa.Text())

    def date_to_datetime(self, x: ColumnElement[Any]) -> ColumnElement[Any]:
        """Widen a date to a datetime at midnight."""
        if self.pg:
            return sa.cast(x, sa.DateTime())
        return _retype(sa.func.date(x, type_=sa.Text()).concat(self.tlit(" 00:00:00.000000")), sa.DateTime())

    def sqlite_fraction(self, x: ColumnElement[Any]) -> ColumnElement[Any]:
        """The '.ffffff' part of a SQLite datetime string (zeros when absent)."""
        digits = sa.func.substr(sa.func.substr(x, 21, type_=sa.Text()).concat(self.tlit("000000")), 1, 6, type_=sa.Text())
        return self.tlit(".").concat(digits)

    def in_range(self, x: ColumnElement[Any], kind: str) -> ColumnElement[Any]:
        """NULL instead of dates outside years 1-9999 (Python cannot load them)."""
        if not self.pg:
            # SQLite yields NULL after year 9999 but happily formats negative years.
            return _retype(sa.case((x >= self.tlit("0001-01-01"), x)), self.sqltype(kind))
        if kind == "date":
            low, high = self.lit(_MIN_DATE, "date"), self.lit(_MAX_DATE, "date")
        else:
            low, high = self.lit(_MIN_DATETIME, "datetime"), self.lit(_MAX_DATETIME, "datetime")
        return sa.case((x.between(low, high), x), else_=self.typed_null(kind))

    def date_part(self, x: ColumnElement[Any], part: str) -> ColumnElement[Any]:
        """Integer year/month/day/hour/minute of a date or datetime."""
        if self.pg:
            return sa.extract(part, x)
        fmt = {"year": "%Y", "month": "%m", "day": "%d", "hour": "%H", "minute": "%M"}[part]
        return sa.cast(sa.func.strftime(self.tlit(fmt), x), sa.Integer())

    def epoch(self, x: ColumnElement[Any]) -> ColumnElement[Any]:
        """Whole seconds since 1970-01-01 of a datetime."""
        if self.pg:
            return sa.cast(sa.func.floor(sa.extract("epoch", x)), sa.BigInteger())
        return sa.cast(sa.func.strftime(self.tlit("%s"), x), sa.BigInteger())

    # -- dispatch ---------------------------------------------------------

    def compile(self, node: Node) -> _V:
        """Compile one syntax tree node."""
        if isinstance(node, Literal):
            if node.kind == "blank":
                return _V(sa.null(), "blank", node.pos)
            if node.kind == "boolean":
                return _V(sa.true() if node.value else sa.false(), "boolean", node.pos)
            return _V(self.lit(node.value, node.kind), node.kind, node.pos)
        if isinstance(node, Field):
            return self.field(node)
        if isinstance(node, Unary):
            return self.unary(node)
        if isinstance(node, Binary):
            return self.binary(node)
        if isinstance(node, Call):
            handler = getattr(self, f"fn_{node.name.lower()}")
            if node.name in ("DATEADD", "DATEDIF"):
                return handler(node)
            return handler(node, [self.compile(arg) for arg in node.args])
        raise FormulaError(f"unsupported syntax node {type(node).__name__}", getattr(node, "pos", None))

    def field(self, node: Field) -> _V:
        """Resolve and normalise a field reference (cached per key)."""
        cached = self.fields.get(node.key)
        if cached is not None:
            return cached._replace(pos=node.pos)
        try:
            expr, kind = self.resolve(node.key)
        except FormulaError as exc:
            raise FormulaError(exc.message, node.pos if exc.position is None else exc.position) from None
        except KeyError:
            raise FormulaError(f"unknown field {{{node.key}}}", node.pos) from None
        if kind not in TYPES:
            raise FormulaError(f"field {{{node.key}}} has unsupported type {kind}", node.pos)
        self.leaves.add(id(expr))
        if kind == "number" and self.pg:
            normalised = sa.cast(expr, sa.Numeric())
        else:
            normalised = _retype(expr, self.sqltype(kind))
        value = _V(normalised, kind, node.pos)
        self.fields[node.key] = value
        return value

    def unary(self, node: Unary) -> _V:
        """Compile -x, +x and NOT x."""
        operand = self.compile(node.operand)
        if node.op == "NOT":
            return _V(sa.not_(self.expect(operand, "boolean", "NOT")), "boolean", node.pos)
        if operand.type not in ("number", "blank"):
            raise FormulaError(f"{node.op} expects a number, got {operand.type}", operand.pos)
        if node.op == "+":
            return operand._replace(pos=node.pos)
        if isinstance(node.operand, Literal) and node.operand.kind == "number":
            assert isinstance(node.operand.value, Decimal)
            return _V(self.lit(-node.operand.value, "number"), "number", node.pos)
        return _V(-self.expect(operand, "number", "-"), "number", node.pos)

    def binary(self, node: Binary) -> _V:
        """Compile infix operators."""
        left, right = self.compile(node.left), self.compile(node.right)
        op = node.op
        if op in ("AND", "OR"):
            parts = [self.expect(left, "boolean", op), self.expect(right, "boolean", op)]
            return _V(sa.and_(*parts) if op == "AND" else sa.or_(*parts), "boolean", node.pos)
        if op == "&":
            return _V(self.concat([left, right]), "text", node.pos)
        if op in ("+", "-", "*", "/", "%"):
            for side in (left, right):
                if side.type not in ("number", "blank"):
                    hint = " (use & to join text)" if side.type == "text" and op == "+" else ""
                    if side.type in ("date", "datetime"):
                        hint = " (use DATEADD or DATEDIF for dates)"
                    raise FormulaError(f"{op} expects numbers, got {side.type}{hint}", side.pos)
            a, b = self.expect(left, "number", op), self.expect(right, "number", op)
            if op == "+":
                expr = a + b
            elif op == "-":
                expr = a - b
            elif op == "*":
                expr = a * b
            elif op == "/":
                expr = self.divide(a, b)
            else:
                expr = self.modulo(a, b)
            return _V(self.numeric(expr), "number", node.pos)
        return self.compare(op, left, right, node.pos)

    def compare(self, op: str, left: _V, right: _V, pos: int) -> _V:
        """Compile a comparison; ``= BLANK()`` and ``!= BLANK()`` test for blank."""
        if "blank" in (left.type, right.type):
            other = right if left.type == "blank" else left
            if op == "=":
                return _V(other.expr.is_(None), "boolean", pos)
            if op == "!=":
                return _V(other.expr.is_not(None), "boolean", pos)
            return _V(self.typed_null("boolean"), "boolean", pos)
        kind = self.common_type([left, right], "compared")
        if kind == "boolean" and op not in ("=", "!="):
            raise FormulaError(f"cannot use {op} on booleans (only = and !=)", pos)
        a, b = self.coerce(left, kind), self.coerce(right, kind)
        if kind == "text" and self.pg and op not in ("=", "!="):
            a = a.collate("C")
        expr = {
            "=": lambda: a == b,
            "!=": lambda: a != b,
            "<": lambda: a < b,
            "<=": lambda: a <= b,
            ">": lambda: a > b,
            ">=": lambda: a >= b,
        }[op]()
        return _V(expr, "boolean", pos)

    def modulo(self, a: ColumnElement[Any], b: ColumnElement[Any]) -> ColumnElement[Any]:
        """Remainder with the sign of the divisor (like spreadsheets); NULL for 0."""
        return a - b * self.floor(self.denoise(self.divide(a, b)))

    def concat(self, values: list[_V]) -> ColumnElement[Any]:
        """Join values as text, treating blanks as empty text."""
        parts = [sa.func.coalesce(self.as_text(v), self.tlit("")) for v in values]
        expr = parts[0]
        for part in parts[1:]:
            expr = expr.concat(part)
        return _retype(expr, sa.Text())

    # -- logic ------------------------------------------------------------

    def fn_if(self, node: Call, args: list[_V]) -> _V:
        """IF(condition, then, else)."""
        cond = self.expect(args[0], "boolean", "IF condition")
        kind = self.common_type(args[1:], "IF")
        if kind == "blank":
            return _V(sa.null(), "blank", node.pos)
        expr = sa.case((cond, self.coerce(args[1], kind)), else_=self.coerce(args[2], kind))
        return _V(_retype(expr, self.sqltype(kind)), kind, node.pos)

    def fn_switch(self, node: Call, args: list[_V]) -> _V:
        """SWITCH(value, match1, result1, ..., [default])."""
        subject, rest = args[0], args[1:]
        pairs = [(rest[i], rest[i + 1]) for i in range(0, len(rest) - 1, 2)]
        default = rest[-1] if len(rest) % 2 else None
        match_kind = self.common_type([subject] + [m for m, _ in pairs], "SWITCH match")
        results = [r for _, r in pairs] + ([default] if default else [])
        kind = self.common_type(results, "SWITCH result")
        if kind == "blank":
            return _V(sa.null(), "blank", node.pos)
        whens = [(self.coerce(m, match_kind), self.coerce(r, kind)) for m, r in pairs if m.type != "blank"]
        else_ = self.coerce(default, kind) if default else None
        if not whens:
            expr = else_ if else_ is not None else self.typed_null(kind)
            return _V(expr, kind, node.pos)
        expr = sa.case(*whens, value=self.coerce(subject, match_kind), else_=else_)
        return _V(_retype(expr, self.sqltype(kind)), kind, node.pos)

    def fn_and(self, node: Call, args: list[_V]) -> _V:
        """AND(a, b, ...)."""
        return _V(sa.and_(*[self.expect(a, "boolean", "AND") for a in args]), "boolean", node.pos)

    def fn_or(self, node: Call, args: list[_V]) -> _V:
        """OR(a, b, ...)."""
        return _V(sa.or_(*[self.expect(a, "boolean", "OR") for a in args]), "boolean", node.pos)

    def fn_not(self, node: Call, args: list[_V]) -> _V:
        """NOT(a)."""
        return _V(sa.not_(self.expect(args[0], "boolean", "NOT")), "boolean", node.pos)

    def fn_isblank(self, node: Call, args: list[_V]) -> _V:
        """ISBLANK(x): true for blank values and for empty text."""
        value = args[0]
        if value.type == "blank":
            return _V(sa.true(), "boolean", node.pos)
        expr = value.expr.is_(None)
        if value.type == "text":
            expr = sa.or_(expr, value.expr == self.tlit(""))
        return _V(expr, "boolean", node.pos)

    def fn_blank(self, node: Call, args: list[_V]) -> _V:
        """BLANK(): an empty value."""
        return _V(sa.null(), "blank", node.pos)

    # -- numbers ----------------------------------------------------------

    def number_args(self, node: Call, args: list[_V]) -> list[ColumnElement[Any]]:
        """Check that every argument is a number."""
        return [self.expect(a, "number", node.name) for a in args]

    def digits(self, node: Call) -> int:
        """The constant digits argument of ROUND/ROUNDUP/ROUNDDOWN (default 0)."""
        if len(node.args) < 2:
            return 0
        arg = node.args[1]
        sign = 1
        if isinstance(arg, Unary) and arg.op in ("-", "+"):
            sign = -1 if arg.op == "-" else 1
            arg = arg.operand
        if isinstance(arg, Literal) and arg.kind == "number":
            assert isinstance(arg.value, Decimal)
            value = arg.value * sign
            if value == value.to_integral_value() and -15 <= value <= 15:
                return int(value)
        raise FormulaError(f"{node.name} digits must be a whole number from -15 to 15", node.args[1].pos)

    def fn_round(self, node: Call, args: list[_V]) -> _V:
        """ROUND(x, [digits]): round half away from zero."""
        x = self.number_args(node, args[:1])[0]
        n = self.digits(node)
        if self.pg:
            expr = sa.func.round(x, self.ilit(n))
        elif n >= 0:
            expr = sa.func.round(x, self.ilit(n))
        else:
            scale = self.ilit(10**-n)
            expr = sa.func.round(sa.cast(x, sa.Float()) / scale) * scale
        return _V(self.numeric(expr), "number", node.pos)

    def rounded_toward(self, node: Call, args: list[_V], away: bool) -> _V:
        """Shared code of ROUNDUP (away from zero) and ROUNDDOWN (toward zero)."""
        x = self.number_args(node, args[:1])[0]
        n = self.digits(node)
        if self.pg:
            scale = self.lit(Decimal(10) ** n, "number")
            scaled = x * scale
            if away:
                whole = sa.case((x < 0, sa.func.floor(scaled)), else_=sa.func.ceil(scaled))
            else:
                whole = sa.func.trunc(scaled)
            return _V(self.numeric(whole / scale), "number", node.pos)
        scale = self.lit(Decimal(10) ** n, "number")
        scaled = sa.func.round(sa.cast(x, sa.Float()) * scale, 9)
        truncated = sa.cast(scaled, sa.Integer())
        if away:
            whole = sa.case(
                (scaled == truncated, truncated),
                (scaled > 0, truncated + 1),
                else_=truncated - 1,
            )
        else:
            whole = truncated
        return _V(self.numeric(sa.cast(whole, sa.Float()) / scale), "number", node.pos)

    def fn_roundup(self, node: Call, args: list[_V]) -> _V:
        """ROUNDUP(x, [digits]): round away from zero."""
        return self.rounded_toward(node, args, away=True)

    def fn_rounddown(self, node: Call, args: list[_V]) -> _V:
        """ROUNDDOWN(x, [digits]): round toward zero."""
        return self.rounded_toward(node, args, away=False)

    def stepped(self, node: Call, args: list[_V], up: bool) -> _V:
        """Shared code of FLOOR and CEILING with an optional step."""
        values = self.number_args(node, args)
        x = values[0]
        op = self.ceiling if up else self.floor
        if len(values) == 1:
            return _V(self.numeric(op(x)), "number", node.pos)
        step = values[1]
        expr = op(self.denoise(self.divide(x, step))) * step
        return _V(self.numeric(expr), "number", node.pos)

    def fn_floor(self, node: Call, args: list[_V]) -> _V:
        """FLOOR(x, [step]): round down to a multiple of step (default 1)."""
        return self.stepped(node, args, up=False)

    def fn_ceiling(self, node: Call, args: list[_V]) -> _V:
        """CEILING(x, [step]): round up to a multiple of step (default 1)."""
        return self.stepped(node, args, up=True)

    def fn_int(self, node: Call, args: list[_V]) -> _V:
        """INT(x): the largest whole number not above x."""
        return _V(self.numeric(self.floor(self.number_args(node, args)[0])), "number", node.pos)

    def fn_abs(self, node: Call, args: list[_V]) -> _V:
        """ABS(x)."""
        return _V(self.numeric(sa.func.abs(self.number_args(node, args)[0])), "number", node.pos)

    def fn_mod(self, node: Call, args: list[_V]) -> _V:
        """MOD(a, b): remainder with the sign of b; blank when b is 0."""
        a, b = self.number_args(node, args)
        return _V(self.numeric(self.modulo(a, b)), "number", node.pos)

    def fn_power(self, node: Call, args: list[_V]) -> _V:
        """POWER(base, exponent); blank when the result is not a real number."""
        base, exponent = self.number_args(node, args)
        whole = sa.func.trunc(exponent) if self.pg else sa.cast(exponent, sa.Integer())
        zero = self.ilit(0)
        expr = sa.case(
            (sa.and_(base < zero, exponent != whole), self.typed_null("number")),
            (sa.and_(base == zero, exponent < zero), self.typed_null("number")),
            else_=sa.func.power(base, exponent),
        )
        return _V(self.numeric(expr), "number", node.pos)

    def fn_sqrt(self, node: Call, args: list[_V]) -> _V:
        """SQRT(x); blank for negative x."""
        x = self.number_args(node, args)[0]
        expr = sa.case((x < self.ilit(0), self.typed_null("number")), else_=sa.func.sqrt(x))
        return _V(self.numeric(expr), "number", node.pos)

    def fn_sum(self, node: Call, args: list[_V]) -> _V:
        """SUM(a, b, ...): blanks count as 0."""
        values = [sa.func.coalesce(v, self.ilit(0)) for v in self.number_args(node, args)]
        expr = values[0]
        for value in values[1:]:
            expr = expr + value
        return _V(self.numeric(expr), "number", node.pos)

    def fn_average(self, node: Call, args: list[_V]) -> _V:
        """AVERAGE(a, b, ...): mean of the non-blank values."""
        values = self.number_args(node, args)
        total: ColumnElement[Any] = sa.func.coalesce(values[0], self.ilit(0))
        count: ColumnElement[Any] = sa.case((values[0].is_(None), 0), else_=1)
        for value in values[1:]:
            total = total + sa.func.coalesce(value, self.ilit(0))
            count = count + sa.case((value.is_(None), 0), else_=1)
        return _V(self.numeric(self.divide(total, count)), "number", node.pos)

    def extreme(self, node: Call, args: list[_V], largest: bool) -> _V:
        """Shared code of MIN and MAX, which ignore blanks."""
        present = [a for a in args if a.type != "blank"]
        if not present:
            return _V(sa.null(), "blank", node.pos)
        kind = self.common_type(present, node.name)
        if kind == "boolean":
            raise FormulaError(f"{node.name} expects numbers, text or dates, got boolean", present[0].pos)
        values = [self.coerce(v, kind) for v in present]
        if len(values) == 1:
            return _V(values[0], kind, node.pos)
        if self.pg:
            if kind == "text":
                values = [v.collate("C") for v in values]
            expr = (sa.func.greatest if largest else sa.func.least)(*values)
        else:
            filled = [sa.func.coalesce(v, *[o for o in values if o is not v]) for v in values]
            expr = (sa.func.max if largest else sa.func.min)(*filled)
        return _V(_retype(expr, self.sqltype(kind)), kind, node.pos)

    def fn_min(self, node: Call, args: list[_V]) -> _V:
        """MIN(a, b, ...): smallest non-blank value."""
        return self.extreme(node, args, largest=False)

    def fn_max(self, node: Call, args: list[_V]) -> _V:
        """MAX(a, b, ...): largest non-blank value."""
        return self.extreme(node, args, largest=True)

    def fn_value(self, node: Call, args: list[_V]) -> _V:
        """VALUE(text): the number written in text, blank when it is not a number."""
        text = sa.func.trim(self.expect(args[0], "text", "VALUE"))
        looks_numeric = text.regexp_match(self.tlit(_NUMBER_PATTERN))
        if not self.pg:
            looks_numeric = sa.and_(looks_numeric, text.op("NOT GLOB", is_comparison=True)(self.tlit("*[^0-9.eE+-]*")))
        expr = sa.case((looks_numeric, sa.cast(text, sa.Numeric())), else_=self.typed_null("number"))
        return _V(self.numeric(expr), "number", node.pos)

    # -- text ---------------------------------------------------------------

    def text_arg(self, node: Call, value: _V) -> ColumnElement[Any]:
        """Check that ``value`` is text."""
        return self.expect(value, "text", node.name)

    def fn_concat(self, node: Call, args: list[_V]) -> _V:
        """CONCAT(a, b, ...): join as text, blanks count as empty."""
        return _V(self.concat(args), "text", node.pos)

    def fn_text(self, node: Call, args: list[_V]) -> _V:
        """TEXT(x): convert any value to text."""
        return _V(_retype(self.as_text(args[0]), sa.Text()), "text", node.pos)

    def fn_len(self, node: Call, args: list[_V]) -> _V:
        """LEN(text): number of characters."""
        return _V(self.to_numeric(sa.func.length(self.text_arg(node, args[0]))), "number", node.pos)

    def fn_lower(self, node: Call, args: list[_V]) -> _V:
        """LOWER(text)."""
        return _V(sa.func.lower(self.text_arg(node, args[0]), type_=sa.Text()), "text", node.pos)

    def fn_upper(self, node: Call, args: list[_V]) -> _V:
        """UPPER(text)."""
        return _V(sa.func.upper(self.text_arg(node, args[0]), type_=sa.Text()), "text", node.pos)

    def fn_trim(self, node: Call, args: list[_V]) -> _V:
        """TRIM(text): remove leading and trailing spaces."""
        return _V(sa.func.trim(self.text_arg(node, args[0]), type_=sa.Text()), "text", node.pos)

    def count_arg(self, node: Call, args: list[_V], index: int, default: int) -> ColumnElement[Any]:
        """A character count/position argument as a clamped integer."""
        if len(args) <= index:
            return self.ilit(default)
        low = 1 if node.name == "MID" and index == 1 else 0
        return self.int_arg(self.expect(args[index], "number", node.name), low, _INT_LIMIT)

    def fn_left(self, node: Call, args: list[_V]) -> _V:
        """LEFT(text, [count]): the first count characters (default 1)."""
        text = self.text_arg(node, args[0])
        count = self.count_arg(node, args, 1, 1)
        return _V(sa.func.substr(text, self.ilit(1), count, type_=sa.Text()), "text", node.pos)

    def fn_right(self, node: Call, args: list[_V]) -> _V:
        """RIGHT(text, [count]): the last count characters (default 1)."""
        text = self.text_arg(node, args[0])
        count = self.count_arg(node, args, 1, 1)
        if self.pg:
            expr = sa.func.right(text, count, type_=sa.Text())
        else:
            expr = sa.case(
                (count == 0, sa.func.substr(text, 1, 0)),
                else_=sa.func.substr(text, -count),
            )
        return _V(_retype(expr, sa.Text()), "text", node.pos)

    def fn_mid(self, node: Call, args: list[_V]) -> _V:
        """MID(text, start, count): count characters from 1-based start."""
        text = self.text_arg(node, args[0])
        start = self.count_arg(node, args, 1, 1)
        count = self.count_arg(node, args, 2, 0)
        return _V(sa.func.substr(text, start, count, type_=sa.Text()), "text", node.pos)

    def fn_substitute(self, node: Call, args: list[_V]) -> _V:
        """SUBSTITUTE(text, old, new): replace every occurrence of old."""
        text, old, new = (self.text_arg(node, a) for a in args)
        return _V(sa.func.replace(text, old, new, type_=sa.Text()), "text", node.pos)

    def position(self, haystack: ColumnElement[Any], needle: ColumnElement[Any]) -> ColumnElement[Any]:
        """1-based position of needle in haystack, 0 when missing."""
        if self.pg:
            return sa.func.strpos(haystack, needle)
        return sa.func.instr(haystack, needle)

    def fn_find(self, node: Call, args: list[_V]) -> _V:
        """FIND(needle, haystack): 1-based position, 0 when not found."""
        needle, haystack = (self.text_arg(node, a) for a in args)
        return _V(self.to_numeric(self.position(haystack, needle)), "number", node.pos)

    def fn_contains(self, node: Call, args: list[_V]) -> _V:
        """CONTAINS(text, needle): whether needle occurs in text (case-sensitive)."""
        text, needle = (self.text_arg(node, a) for a in args)
        return _V(self.position(text, needle) > self.ilit(0), "boolean", node.pos)

    # -- dates ----------------------------------------------------------------

    def date_arg(self, node: Call, value: _V) -> ColumnElement[Any]:
        """Check that ``value`` is a date or datetime."""
        return self.expect(value, ("date", "datetime"), node.name)

    def fn_today(self, node: Call, args: list[_V]) -> _V:
        """TODAY(): the current date in the user's time zone."""
        return _V(self.lit(self.today, "date"), "date", node.pos)

    def fn_now(self, node: Call, args: list[_V]) -> _V:
        """NOW(): the current date and time (UTC)."""
        return _V(self.lit(self.now, "datetime"), "datetime", node.pos)

    def part(self, node: Call, args: list[_V], part: str, widen: bool = False) -> _V:
        """Shared code of YEAR, MONTH, DAY, HOUR and MINUTE."""
        x = self.date_arg(node, args[0])
        if widen and args[0].type == "date":
            x = self.date_to_datetime(x)
        return _V(self.numeric(self.date_part(x, part)), "number", node.pos)

    def fn_year(self, node: Call, args: list[_V]) -> _V:
        """YEAR(date)."""
        return self.part(node, args, "year")

    def fn_month(self, node: Call, args: list[_V]) -> _V:
        """MONTH(date): 1-12."""
        return self.part(node, args, "month")

    def fn_day(self, node: Call, args: list[_V]) -> _V:
        """DAY(date): day of the month, 1-31."""
        return self.part(node, args, "day")

    def fn_hour(self, node: Call, args: list[_V]) -> _V:
        """HOUR(datetime): 0-23 (UTC)."""
        return self.part(node, args, "hour", widen=True)

    def fn_minute(self, node: Call, args: list[_V]) -> _V:
        """MINUTE(datetime): 0-59."""
        return self.part(node, args, "minute", widen=True)

    def fn_weekday(self, node: Call, args: list[_V]) -> _V:
        """WEEKDAY(date): 1 = Monday ... 7 = Sunday."""
        x = self.date_arg(node, args[0])
        if self.pg:
            expr = sa.extract("isodow", x)
        else:
            sunday_based = sa.cast(sa.func.strftime(self.tlit("%w"), x), sa.Integer())
            expr = (sunday_based + 6) % 7 + 1
        return _V(self.to_numeric(expr), "number", node.pos)

    def fn_date(self, node: Call, args: list[_V]) -> _V:
        """DATE(year, month, day); out-of-range months and days roll over."""
        y, m, d = self.number_args(node, args)
        year = self.int_arg(y, 0, 10_000)
        months = self.int_arg(m, -120_000, 120_000) - 1
        days = self.int_arg(d, -3_660_000, 3_660_000) - 1
        valid_year = year.between(self.ilit(1), self.ilit(9999))
        if self.pg:
            start = sa.func.make_date(year, 1, 1)
            built = sa.cast(start + sa.func.make_interval(0, months, 0, days), sa.Date())
        else:
            start = sa.func.printf(self.tlit("%04d-01-01"), year)
            built = sa.func.date(
                start,
                sa.cast(months, sa.Text()).concat(self.tlit(" months")),
                sa.cast(days, sa.Text()).concat(self.tlit(" days")),
            )
        expr = sa.case((valid_year, self.in_range(built, "date")), else_=self.typed_null("date"))
        return _V(_retype(expr, sa.Date()), "date", node.pos)

    def unit(self, node: Call, index: int) -> str:
        """The constant unit argument of DATEADD/DATEDIF, normalised."""
        arg = node.args[index]
        if isinstance(arg, Literal) and arg.kind == "text":
            assert isinstance(arg.value, str)
            unit = _DATE_UNITS.get(arg.value.strip().lower())
            if unit:
                return unit
        raise FormulaError(
            f"{node.name} unit must be one of 'days', 'weeks', 'months', 'years', 'hours', 'minutes', 'seconds'",
            arg.pos,
        )

    def fn_dateadd(self, node: Call) -> _V:
        """DATEADD(date, amount, unit): shift a date; month ends are clamped."""
        unit = self.unit(node, 2)
        base = self.compile(node.args[0])
        amount = self.compile(node.args[1])
        x = self.date_arg(node, base)
        limit = _DATEADD_LIMITS[unit]
        n = self.int_arg(self.expect(amount, "number", node.name), -limit, limit)
        kind = "datetime" if base.type == "datetime" or unit in ("hours", "minutes", "seconds") else "date"
        if base.type == "blank":
            kind = "datetime" if unit in ("hours", "minutes", "seconds") else "date"
        if kind == "datetime" and base.type != "datetime":
            x = self.date_to_datetime(x)
        expr = self.pg_dateadd(x, n, unit, kind) if self.pg else self.sqlite_dateadd(x, n, unit, kind)
        return _V(_retype(self.in_range(expr, kind), self.sqltype(kind)), kind, node.pos)

    def pg_dateadd(self, x: ColumnElement[Any], n: ColumnElement[Any], unit: str, kind: str) -> ColumnElement[Any]:
        """DATEADD on PostgreSQL using make_interval()."""
        slots = {"years": 0, "months": 1, "weeks": 2, "days": 3, "hours": 4, "minutes": 5, "seconds": 6}
        interval_args: list[Any] = [0] * 7
        interval_args[slots[unit]] = n
        shifted = x + sa.func.make_interval(*interval_args, type_=sa.Interval())
        return sa.cast(shifted, self.sqltype(kind))

    def sqlite_dateadd(self, x: ColumnElement[Any], n: ColumnElement[Any], unit: str, kind: str) -> ColumnElement[Any]:
        """DATEADD on SQLite using date modifiers, clamping month ends like PostgreSQL."""
        if unit in ("months", "years"):
            months = n * 12 if unit == "years" else n
            first = sa.func.date(x, self.tlit("start of month"), sa.cast(months, sa.Text()).concat(self.tlit(" months")))
            last_day = sa.cast(
                sa.func.strftime(self.tlit("%d"), first, self.tlit("+1 months"), self.tlit("-1 days")), sa.Integer()
            )
            day = sa.func.min(sa.cast(sa.func.strftime(self.tlit("%d"), x), sa.Integer()), last_day)
            shifted = sa.func.date(first, sa.cast(day - 1, sa.Text()).concat(self.tlit(" days")))
            if kind == "date":
                return shifted
            clock = sa.func.strftime(self.tlit(" %H:%M:%S"), x, type_=sa.Text()).concat(self.sqlite_fraction(x))
            return _retype(shifted, sa.Text()).concat(clock)
        if unit == "weeks":
            n, unit = n * 7, "days"
        modifier = sa.cast(n, sa.Text()).concat(self.tlit(f" {unit}"))
        if kind == "date":
            return sa.func.date(x, modifier)
        shifted = sa.func.strftime(self.tlit("%Y-%m-%d %H:%M:%S"), x, modifier, type_=sa.Text())
        return shifted.concat(self.sqlite_fraction(x))

    def fn_datedif(self, node: Call) -> _V:
        """DATEDIF(start, end, unit): whole units from start to end (negative if end is earlier)."""
        unit = self.unit(node, 2)
        start_v, end_v = self.compile(node.args[0]), self.compile(node.args[1])
        start, end = self.date_arg(node, start_v), self.date_arg(node, end_v)
        if start_v.type != "datetime":
            start = self.date_to_datetime(start)
        if end_v.type != "datetime":
            end = self.date_to_datetime(end)
        if unit in _SECONDS:
            seconds = self.epoch(end) - self.epoch(start)
            expr = seconds // self.ilit(_SECONDS[unit]) if unit != "seconds" else seconds
            return _V(self.to_numeric(expr), "number", node.pos)
        months = self.month_index(end) - self.month_index(start)
        end_clock, start_clock = self.day_clock(end), self.day_clock(start)
        months = months + sa.case(
            (sa.and_(months > 0, end_clock < start_clock), -1),
            (sa.and_(months < 0, end_clock > start_clock), 1),
            else_=0,
        )
        if unit == "years":
            months = months // self.ilit(12)
        return _V(self.to_numeric(months), "number", node.pos)

    def month_index(self, x: ColumnElement[Any]) -> ColumnElement[Any]:
        """year * 12 + month, as an integer."""
        if self.pg:
            return sa.cast(sa.extract("year", x) * 12 + sa.extract("month", x), sa.Integer())
        return sa.cast(self.date_part(x, "year") * 12 + self.date_part(x, "month"), sa.Integer())

    def day_clock(self, x: ColumnElement[Any]) -> ColumnElement[Any]:
        """DDHHMMSS of a datetime as an integer, for comparing positions within months."""
        if self.pg:
            return sa.cast(sa.func.to_char(x, self.tlit("DDHH24MISS")), sa.Integer())
        return sa.cast(sa.func.strftime(self.tlit("%d%H%M%S"), x), sa.Integer())


def _is_small_int(value: Decimal) -> bool:
    """Whether a Decimal is a whole number that fits in a 64-bit integer."""
    try:
        return value == value.to_integral_value() and abs(value) < 2**63
    except InvalidOperation:
        return False
