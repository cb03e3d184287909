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
from sqlalchemy.sql import elements as sa_elements
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

MAX_SQL_NODES = 20_000
"""Largest accepted compiled expression (counted as rendered, repeats included)."""

MAX_SQL_DEPTH = 150
"""Deepest accepted compiled expression tree (SQLAlchemy compiles recursively)."""

SQLITE_STACK_BUDGET = 60
"""Estimated SQLite parser stack a formula may use; SQLite 3.40 stops at 100 in total."""

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


_REFERENCE_TOKEN = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|\{([a-z][a-z0-9_.]*)\}')


def rename_reference(formula: str, old: str, new: str) -> str:
    """The formula text with every ``{old}`` reference (not text inside string literals) now ``{new}``."""
    def sub(m: re.Match[str]) -> str:
        return "{" + new + "}" if m.group(1) == old else m.group(0)

    return _REFERENCE_TOKEN.sub(sub, formula)


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
_MAX_EXPONENT = 100


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
            key = text[i + 1 : close].strip()
            if not _KEY_RE.fullmatch(key):
                raise FormulaError(
                    f"invalid field reference {{{key}}} (keys look like {{amount}} or {{company.name}})", i
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
                raise FormulaError(
                    f"unexpected full-width character '{ch}' (type '{_FULL_WIDTH[ch]}' instead)", i
                )
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
            value = Decimal(tok.value)
            if value and not -_MAX_EXPONENT <= value.adjusted() <= _MAX_EXPONENT:
                raise FormulaError(
                    f"number is out of range (1e-{_MAX_EXPONENT} to 1e{_MAX_EXPONENT})", tok.pos
                )
            return Literal(tok.pos, "number", value)
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


_ARTICLE = {
    "number": "a number",
    "text": "text",
    "boolean": "a boolean",
    "date": "a date",
    "datetime": "a date",
}
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
_NUMBER_PATTERN = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,3})?"
_INT_LIMIT = 1_000_000_000
_SQLITE_BELOW_MIN = "0001-01-00"  # sorts after every year-0 value and before 0001-01-01
# Functions that read some arguments as constants and compile the others themselves.
_CONSTANT_ARG_FUNCTIONS = frozenset({"DATEADD", "DATEDIF", "ROUND", "ROUNDUP", "ROUNDDOWN"})


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
    ``now`` (naive UTC) are bound as parameters for TODAY() and NOW(). A formula
    that is only ``BLANK()`` has type "text".
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
    expr = _retype(compiler.coerce(value, kind), compiler.sqltype(kind))
    _check_complexity(expr, compiler.leaves, dialect)
    return expr, kind


def _retype(expr: ColumnElement[Any], type_: sa.types.TypeEngine[Any]) -> ColumnElement[Any]:
    """Give ``expr`` a SQLAlchemy type without changing the SQL; bound values keep theirs."""
    if isinstance(expr, sa.BindParameter) or type(expr.type) is type(type_):
        return expr
    return sa.type_coerce(expr, type_)


def _edges(element: Any) -> list[tuple[Any, int]]:
    """Children of a Core element with the SQLite parser stack each one adds.

    The weights approximate how many grammar symbols SQLite keeps on its fixed
    parser stack while reading the child, e.g. ``f(`` keeps two and every
    argument after the first keeps two more.
    """
    if isinstance(element, sa.FunctionElement):
        return [(child, 2) for child in element.get_children()]
    if isinstance(element, sa_elements.BinaryExpression):
        return [(element.left, 0), (element.right, 2)]
    if isinstance(element, sa_elements.Grouping):
        return [(element.element, 1)]
    if isinstance(element, sa_elements.Cast):
        return [(element.clause, 2)]
    if isinstance(element, sa_elements.TypeCoerce):
        return [(element.clause, 0)]
    if isinstance(element, sa_elements.Case):
        edges = [(element.value, 1)] if element.value is not None else []
        for condition, result in element.whens:
            edges += [(condition, 4), (result, 6)]
        if element.else_ is not None:
            edges.append((element.else_, 4))
        return edges
    if isinstance(element, sa_elements.UnaryExpression):
        return [(element.element, 2 if element.operator is not None else 0)]
    if isinstance(element, (sa_elements.ClauseList, sa_elements.ExpressionClauseList)):
        return [(child, 2 if i else 0) for i, child in enumerate(element.clauses)]
    return [(child, 2) for child in element.get_children()]


def _measure(expr: ColumnElement[Any], leaves: set[int]) -> tuple[int, int, int]:
    """Return (rendered size, tree depth, estimated SQLite parser stack) of ``expr``.

    Shared sub-expressions are visited once but counted every time they render.
    Elements whose ``id`` is in ``leaves`` (resolved fields) count as one node.
    """
    metrics: dict[int, tuple[int, int, int]] = {}
    todo: list[tuple[Any, bool]] = [(expr, False)]
    while todo:
        element, expanded = todo.pop()
        key = id(element)
        if key in metrics:
            continue
        if key in leaves:
            metrics[key] = (1, 1, 1)
            continue
        edges = _edges(element)
        if not expanded:
            todo.append((element, True))
            todo.extend((child, False) for child, _ in edges if id(child) not in metrics)
            continue
        children = [(metrics[id(child)], weight) for child, weight in edges]
        metrics[key] = (
            1 + sum(m[0] for m, _ in children),
            1 + max((m[1] for m, _ in children), default=0),
            max((weight + m[2] for m, weight in children), default=1),
        )
        if metrics[key][0] > MAX_SQL_NODES:
            return metrics[key]
    return metrics[id(expr)]


def _check_complexity(expr: ColumnElement[Any], leaves: set[int], dialect: str) -> None:
    """Reject expressions that would render huge SQL, nest too deeply for
    SQLAlchemy's recursive compiler, or overflow SQLite's parser stack."""
    size, depth, stack = _measure(expr, leaves)
    too_deep = depth > MAX_SQL_DEPTH or (dialect == "sqlite" and stack > SQLITE_STACK_BUDGET)
    if size > MAX_SQL_NODES or too_deep:
        raise FormulaError("formula is too complex; split it into several formula fields")


def _is_small_int(value: Decimal) -> bool:
    """Whether a Decimal is a whole number that fits in a 64-bit integer."""
    try:
        return value == value.to_integral_value() and abs(value) < 2**63
    except InvalidOperation:
        return False


class _Compiler:
    """Turns syntax trees into dialect-specific SQLAlchemy expressions."""

    def __init__(self, resolve: Resolver, dialect: str, today: dt.date, now: dt.datetime) -> None:
        self.resolve = resolve
        self.pg = dialect == "postgresql"
        self.today = today
        self.now = now
        self.fields: dict[str, _V] = {}
        self.leaves: set[int] = set()

    # -- typing and literals ----------------------------------------------

    def sqltype(self, kind: str) -> sa.types.TypeEngine[Any]:
        """SQLAlchemy type used for values of formula type ``kind``."""
        if kind == "number":
            return sa.Numeric() if self.pg else sa.Float()
        types: dict[str, sa.types.TypeEngine[Any]] = {
            "text": sa.Text(),
            "boolean": sa.Boolean(),
            "date": sa.Date(),
            "datetime": sa.DateTime(),
        }
        return types.get(kind, sa.Text())

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
            raise FormulaError(
                f"{what} values must have the same type, got {first.type} and {other.type}", other.pos
            )
        return kinds.pop() if kinds else "blank"

    # -- dialect helpers ----------------------------------------------------

    def int_arg(self, expr: ColumnElement[Any], low: int, high: int) -> ColumnElement[Any]:
        """Truncate a number toward zero and clamp it into [low, high] as an integer."""
        int_type = sa.BigInteger() if max(abs(low), abs(high)) > 2**31 - 1 else sa.Integer()
        if self.pg:
            clamped = sa.func.least(sa.func.greatest(sa.func.trunc(expr), self.ilit(low)), self.ilit(high))
            return sa.case((expr.is_(None), sa.cast(sa.null(), int_type)), else_=sa.cast(clamped, int_type))
        return sa.cast(sa.func.min(sa.func.max(expr, self.ilit(low)), self.ilit(high)), int_type)

    def floor(self, expr: ColumnElement[Any]) -> ColumnElement[Any]:
        """floor(x); on SQLite built from round(), which every build has.

        SQLAlchemy replaces SQLite's floor() with a Python function that fails on
        NULL, and CAST(x AS INTEGER) saturates above 2**63, so neither is used.
        """
        if self.pg:
            return sa.func.floor(expr)
        nearest = sa.func.round(expr)
        return sa.case((nearest <= expr, nearest), else_=nearest - 1)

    def ceiling(self, expr: ColumnElement[Any]) -> ColumnElement[Any]:
        """ceil(x); on SQLite built from round() like :meth:`floor`."""
        if self.pg:
            return sa.func.ceil(expr)
        nearest = sa.func.round(expr)
        return sa.case((nearest >= expr, nearest), else_=nearest + 1)

    def denoise(self, expr: ColumnElement[Any]) -> ColumnElement[Any]:
        """On SQLite, drop binary floating-point noise before floor/ceil.

        SQLite prints REAL values with 15 significant digits, so a text round trip
        turns 72.99999999999999 (7.3 / 0.1) back into 73.0.
        """
        if self.pg:
            return expr
        return sa.cast(sa.cast(expr, sa.Text()), sa.Float())

    def divide(self, left: ColumnElement[Any], right: ColumnElement[Any]) -> ColumnElement[Any]:
        """True division that yields NULL when dividing by zero."""
        divisor = sa.func.nullif(right, self.ilit(0))
        if self.pg:
            return sa.cast(left, sa.Numeric()) / divisor
        return _retype(left * sa.literal(1.0, sa.Float()), sa.Float()) / divisor

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
            # text -> NUMERIC turns "3.0" into the integer 3, so 3.0 prints as "3".
            return sa.cast(sa.cast(sa.cast(x, sa.Text()), sa.Numeric()), sa.Text())
        if kind == "boolean":
            return sa.case(
                (x, self.tlit("TRUE")), (sa.not_(x), self.tlit("FALSE")), else_=self.typed_null("text")
            )
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
        midnight = sa.func.date(x, type_=sa.Text()).concat(self.tlit(" 00:00:00.000000"))
        return _retype(midnight, sa.DateTime())

    def in_range(self, x: ColumnElement[Any], kind: str) -> ColumnElement[Any]:
        """NULL instead of dates outside years 1-9999 (Python cannot load them)."""
        if not self.pg:
            # SQLite yields NULL after year 9999 but formats years <= 0; map those to NULL.
            sentinel = self.tlit(_SQLITE_BELOW_MIN)
            return _retype(sa.func.nullif(sa.func.max(x, sentinel), sentinel), self.sqltype(kind))
        # Clamp into [just below year 1, year 10000] and turn both sentinels into NULL,
        # so x is rendered once (nested DATEADD calls would otherwise grow exponentially).
        if kind == "date":
            low = sa.func.make_date(self.ilit(-1), self.ilit(12), self.ilit(31))
            high = sa.func.make_date(self.ilit(10_000), self.ilit(1), self.ilit(1))
        else:
            ints = [self.ilit(v) for v in (-1, 12, 31, 23, 59)]
            low = sa.func.make_timestamp(*ints, sa.literal(59.999999, sa.Float()))
            high = sa.func.make_timestamp(*[self.ilit(v) for v in (10_000, 1, 1, 0, 0, 0)])
        clamped = sa.func.least(sa.func.greatest(x, low), high)
        return sa.func.nullif(sa.func.nullif(clamped, low), high, type_=self.sqltype(kind))

    def date_part(self, x: ColumnElement[Any], part: str) -> ColumnElement[Any]:
        """Integer year/month/day/hour/minute of a date or datetime."""
        if self.pg:
            return sa.extract(part, x)
        fmt = {"year": "%Y", "month": "%m", "day": "%d", "hour": "%H", "minute": "%M"}[part]
        return sa.cast(sa.func.strftime(self.tlit(fmt), x), sa.Integer())

    def epoch(self, x: ColumnElement[Any]) -> ColumnElement[Any]:
        """Whole seconds since 1970-01-01 of a date or datetime."""
        if self.pg:
            return sa.cast(sa.func.floor(sa.extract("epoch", x)), sa.BigInteger())
        return sa.cast(sa.func.strftime(self.tlit("%s"), x), sa.BigInteger())

    def text_cat(self, left: ColumnElement[Any], right: ColumnElement[Any]) -> ColumnElement[Any]:
        """``(left) || right`` for SQLite modifier strings built from numbers.

        The explicit parentheses matter: SQLite binds ``||`` tighter than ``-``.
        """
        return sa.type_coerce(sa_elements.Grouping(left), sa.Text()).concat(right)

    # -- dispatch -------------------------------------------------------------

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
            if node.name == "IF":
                return self.if_chain(node)
            handler = getattr(self, f"fn_{node.name.lower()}")
            if node.name in _CONSTANT_ARG_FUNCTIONS:
                return handler(node)
            return handler(node, [self.compile(arg) for arg in node.args])
        raise FormulaError(f"unsupported syntax node {type(node).__name__}", getattr(node, "pos", None))

    def field(self, node: Field) -> _V:
        """Resolve and normalise a field reference (resolved once per key)."""
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
        normalised: ColumnElement[Any]
        if kind == "number" and self.pg:
            normalised = sa.cast(expr, sa.Numeric())
        else:
            normalised = _retype(expr, self.sqltype(kind))
        value = _V(normalised, kind, node.pos)
        self.fields[node.key] = value
        return value

    def unary(self, node: Unary) -> _V:
        """Compile -x, +x and NOT x."""
        if node.op == "-" and isinstance(node.operand, Literal) and node.operand.kind == "number":
            assert isinstance(node.operand.value, Decimal)
            return _V(self.lit(-node.operand.value, "number"), "number", node.pos)
        operand = self.compile(node.operand)
        if node.op == "NOT":
            return _V(sa.not_(self.expect(operand, "boolean", "NOT")), "boolean", node.pos)
        expr = self.expect(operand, "number", node.op)
        if node.op == "+":
            return _V(expr, "number", node.pos)
        return _V(self.numeric(-expr), "number", node.pos)

    def binary(self, node: Binary) -> _V:
        """Compile infix operators."""
        if node.op == "&":
            return _V(self.concat([self.compile(n) for n in _flatten(node, "&")]), "text", node.pos)
        left, right = self.compile(node.left), self.compile(node.right)
        op = node.op
        if op in ("AND", "OR"):
            parts = [self.expect(left, "boolean", op), self.expect(right, "boolean", op)]
            return _V(sa.and_(*parts) if op == "AND" else sa.or_(*parts), "boolean", node.pos)
        if op in ("+", "-", "*", "/", "%"):
            for side in (left, right):
                if side.type not in ("number", "blank"):
                    hint = ""
                    if side.type == "text" and op == "+":
                        hint = " (use & to join text)"
                    elif side.type in ("date", "datetime"):
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
        if {left.type, right.type} != {"date", "datetime"} and left.type != right.type:
            raise FormulaError(f"cannot compare {left.type} with {right.type}", pos)
        kind = self.common_type([left, right], "compared")
        if kind == "boolean" and op not in ("=", "!="):
            raise FormulaError(f"cannot use {op} on booleans (only = and !=)", pos)
        a, b = self.coerce(left, kind), self.coerce(right, kind)
        if kind == "text" and self.pg and op not in ("=", "!="):
            a = a.collate("C")
        comparisons: dict[str, Callable[[], ColumnElement[Any]]] = {
            "=": lambda: a == b,
            "!=": lambda: a != b,
            "<": lambda: a < b,
            "<=": lambda: a <= b,
            ">": lambda: a > b,
            ">=": lambda: a >= b,
        }
        return _V(comparisons[op](), "boolean", pos)

    def modulo(self, a: ColumnElement[Any], b: ColumnElement[Any]) -> ColumnElement[Any]:
        """Remainder with the sign of the divisor (like spreadsheets); NULL for 0."""
        return a - b * self.floor(self.denoise(self.divide(a, b)))

    def concat(self, values: list[_V]) -> ColumnElement[Any]:
        """Join values as text, treating blanks as empty text."""
        parts = [sa.func.coalesce(self.as_text(v), self.tlit(""), type_=sa.Text()) for v in values]
        expr: ColumnElement[Any] = parts[0]
        for part in parts[1:]:
            expr = expr.concat(part)
        return _retype(expr, sa.Text())

    # -- logic ------------------------------------------------------------------

    def if_chain(self, node: Call) -> _V:
        """IF(cond, then, else); an IF in the else branch joins the same CASE."""
        branches: list[tuple[_V, _V]] = []
        current: Node = node
        while isinstance(current, Call) and current.name == "IF":
            branches.append((self.compile(current.args[0]), self.compile(current.args[1])))
            current = current.args[2]
        otherwise = self.compile(current)
        conditions = [self.expect(cond, "boolean", "IF condition") for cond, _ in branches]
        results = [then for _, then in branches] + [otherwise]
        kind = self.common_type(results, "IF")
        if kind == "blank":
            return _V(sa.null(), "blank", node.pos)
        whens = [
            (cond, self.coerce(then, kind)) for cond, (_, then) in zip(conditions, branches, strict=True)
        ]
        expr = sa.case(*whens, else_=self.coerce(otherwise, kind))
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
        else_ = self.coerce(default, kind) if default else self.typed_null(kind)
        if not whens or subject.type == "blank":
            return _V(else_, kind, node.pos)
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
        expr: ColumnElement[Any] = value.expr.is_(None)
        if value.type == "text":
            expr = sa.or_(expr, value.expr == self.tlit(""))
        return _V(expr, "boolean", node.pos)

    def fn_blank(self, node: Call, args: list[_V]) -> _V:
        """BLANK(): an empty value."""
        return _V(sa.null(), "blank", node.pos)

    # -- numbers ------------------------------------------------------------------

    def number_args(self, node: Call, args: list[_V]) -> list[ColumnElement[Any]]:
        """Check that every argument is a number."""
        return [self.expect(a, "number", node.name) for a in args]

    def digits(self, node: Call) -> int:
        """The constant digits argument of ROUND/ROUNDUP/ROUNDDOWN (default 0)."""
        if len(node.args) < 2:
            return 0
        value = _constant_number(node.args[1])
        if value is not None and value == value.to_integral_value() and -15 <= value <= 15:
            return int(value)
        raise FormulaError(f"{node.name} digits must be a whole number from -15 to 15", node.args[1].pos)

    def fn_round(self, node: Call) -> _V:
        """ROUND(x, [digits]): round half away from zero."""
        x = self.expect(self.compile(node.args[0]), "number", node.name)
        n = self.digits(node)
        expr: ColumnElement[Any]
        if self.pg or n >= 0:
            expr = sa.func.round(x, self.ilit(n))
        else:
            scale = self.ilit(10**-n)
            expr = sa.func.round(self.divide(x, scale)) * scale
        return _V(self.numeric(expr), "number", node.pos)

    def rounded_toward(self, node: Call, away: bool) -> _V:
        """Shared code of ROUNDUP (away from zero) and ROUNDDOWN (toward zero)."""
        x = self.expect(self.compile(node.args[0]), "number", node.name)
        n = self.digits(node)
        if self.pg:
            scaled = x * self.lit(Decimal(10) ** n, "number")
            whole: ColumnElement[Any]
            if away:
                whole = sa.case((x < 0, sa.func.floor(scaled)), else_=sa.func.ceil(scaled))
            else:
                whole = sa.func.trunc(scaled)
            return _V(self.numeric(whole * self.lit(Decimal(10) ** -n, "number")), "number", node.pos)
        scale = self.lit(Decimal(10) ** n, "number")
        scaled = self.denoise(x * scale)
        nearest = sa.func.round(scaled)
        if away:
            whole = sa.case(
                (sa.func.abs(nearest) >= sa.func.abs(scaled), nearest),
                (scaled > 0, nearest + 1),
                else_=nearest - 1,
            )
        else:
            whole = sa.case(
                (sa.func.abs(nearest) <= sa.func.abs(scaled), nearest),
                (scaled > 0, nearest - 1),
                else_=nearest + 1,
            )
        return _V(self.numeric(self.divide(whole, scale)), "number", node.pos)

    def fn_roundup(self, node: Call) -> _V:
        """ROUNDUP(x, [digits]): round away from zero."""
        return self.rounded_toward(node, away=True)

    def fn_rounddown(self, node: Call) -> _V:
        """ROUNDDOWN(x, [digits]): round toward zero."""
        return self.rounded_toward(node, away=False)

    def stepped(self, node: Call, args: list[_V], up: bool) -> _V:
        """Shared code of FLOOR and CEILING with an optional step."""
        values = self.number_args(node, args)
        op = self.ceiling if up else self.floor
        if len(values) == 1:
            return _V(self.numeric(op(values[0])), "number", node.pos)
        x, step = values
        return _V(self.numeric(op(self.denoise(self.divide(x, step))) * step), "number", node.pos)

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
        expr: ColumnElement[Any] = values[0]
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
        values = list({id(e): e for e in (self.coerce(v, kind) for v in present)}.values())
        if len(values) == 1:
            return _V(values[0], kind, node.pos)
        if self.pg:
            if kind == "text":
                values = [v.collate("C") for v in values]
            expr = (sa.func.greatest if largest else sa.func.least)(*values)
        else:
            # SQLite's multi-argument min()/max() return NULL if any argument is NULL,
            # so blanks become a sentinel that never wins, and a sentinel result is NULL.
            # SQLite orders numbers < text < blobs, so -inf loses every max() and an
            # empty blob loses every min(), whatever the type of the values.
            if largest:
                sentinel = sa.literal(float("-inf"), sa.Float())
            else:
                sentinel = sa.literal(b"", sa.LargeBinary())
            filled = [sa.func.coalesce(v, sentinel) for v in values]
            extreme = (sa.func.max if largest else sa.func.min)(*filled)
            expr = sa.func.nullif(extreme, sentinel)
        return _V(_retype(expr, self.sqltype(kind)), kind, node.pos)

    def fn_min(self, node: Call, args: list[_V]) -> _V:
        """MIN(a, b, ...): smallest non-blank value."""
        return self.extreme(node, args, largest=False)

    def fn_max(self, node: Call, args: list[_V]) -> _V:
        """MAX(a, b, ...): largest non-blank value."""
        return self.extreme(node, args, largest=True)

    def fn_value(self, node: Call, args: list[_V]) -> _V:
        """VALUE(text): the number written in text, blank when it is not a number."""
        text = sa.func.trim(self.expect(args[0], "text", "VALUE"), type_=sa.Text())
        # PostgreSQL's "$" only matches at the very end; Python's needs "\Z" for that.
        pattern = _NUMBER_PATTERN + ("$" if self.pg else r"\Z")
        looks_numeric = text.regexp_match(self.tlit(pattern))
        expr = sa.case((looks_numeric, sa.cast(text, sa.Numeric())), else_=self.typed_null("number"))
        return _V(self.numeric(expr), "number", node.pos)

    # -- text -------------------------------------------------------------------

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

    def count_arg(self, node: Call, args: list[_V], index: int, low: int) -> ColumnElement[Any]:
        """A character count or position argument (default 1) as a clamped integer."""
        if len(args) <= index:
            return self.ilit(1)
        return self.int_arg(self.expect(args[index], "number", node.name), low, _INT_LIMIT)

    def fn_left(self, node: Call, args: list[_V]) -> _V:
        """LEFT(text, [count]): the first count characters (default 1)."""
        text = self.text_arg(node, args[0])
        count = self.count_arg(node, args, 1, 0)
        return _V(sa.func.substr(text, self.ilit(1), count, type_=sa.Text()), "text", node.pos)

    def fn_right(self, node: Call, args: list[_V]) -> _V:
        """RIGHT(text, [count]): the last count characters (default 1)."""
        text = self.text_arg(node, args[0])
        count = self.count_arg(node, args, 1, 0)
        if self.pg:
            return _V(sa.func.right(text, count, type_=sa.Text()), "text", node.pos)
        expr = sa.case(
            (count > self.ilit(0), sa.func.substr(text, -count)),
            else_=sa.func.substr(text, self.ilit(1), count),
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
        expr: ColumnElement[Any] = sa.func.replace(text, old, new, type_=sa.Text())
        if not self.pg:
            # SQLite returns the text unchanged when old is "" even if new is NULL;
            # appending "" (or NULL) makes it NULL-strict like PostgreSQL.
            expr = expr.concat(sa.func.substr(new, self.ilit(1), self.ilit(0), type_=sa.Text()))
        return _V(expr, "text", node.pos)

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

    # -- dates --------------------------------------------------------------------

    def date_arg(self, node: Call, value: _V) -> ColumnElement[Any]:
        """Check that ``value`` is a date or datetime."""
        return self.expect(value, ("date", "datetime"), node.name)

    def fn_today(self, node: Call, args: list[_V]) -> _V:
        """TODAY(): the current date in the user's time zone."""
        return _V(self.lit(self.today, "date"), "date", node.pos)

    def fn_now(self, node: Call, args: list[_V]) -> _V:
        """NOW(): the current date and time (UTC)."""
        return _V(self.lit(self.now, "datetime"), "datetime", node.pos)

    def part(self, node: Call, args: list[_V], part: str) -> _V:
        """Shared code of YEAR, MONTH, DAY, HOUR and MINUTE."""
        x = self.date_arg(node, args[0])
        if self.pg and part in ("hour", "minute") and args[0].type != "datetime":
            x = self.date_to_datetime(x)
        return _V(self.to_numeric(self.date_part(x, part)), "number", node.pos)

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
        return self.part(node, args, "hour")

    def fn_minute(self, node: Call, args: list[_V]) -> _V:
        """MINUTE(datetime): 0-59."""
        return self.part(node, args, "minute")

    def fn_weekday(self, node: Call, args: list[_V]) -> _V:
        """WEEKDAY(date): 1 = Monday ... 7 = Sunday."""
        x = self.date_arg(node, args[0])
        if self.pg:
            return _V(self.to_numeric(sa.extract("isodow", x)), "number", node.pos)
        sunday_based = sa.cast(sa.func.strftime(self.tlit("%w"), x), sa.Integer())
        return _V(self.to_numeric((sunday_based + 6) % 7 + 1), "number", node.pos)

    def fn_date(self, node: Call, args: list[_V]) -> _V:
        """DATE(year, month, day); out-of-range months and days roll over."""
        y, m, d = self.number_args(node, args)
        year: ColumnElement[Any] = self.int_arg(y, 0, 10_000)
        # About 2000 years each way, so even year 1 stays inside PostgreSQL's range.
        months = self.int_arg(m, -24_000, 24_000) - 1
        days = self.int_arg(d, -730_000, 730_000) - 1
        expr: ColumnElement[Any]
        built: ColumnElement[Any]
        if self.pg:
            valid_year = year.between(self.ilit(1), self.ilit(9999))
            start = sa.func.make_date(year, self.ilit(1), self.ilit(1))
            built = sa.cast(start + sa.func.make_interval(0, months, 0, days), sa.Date())
            expr = sa.case((valid_year, self.in_range(built, "date")), else_=self.typed_null("date"))
        else:
            # Years 0 and 10000 become NULL; printf() would render NULL as 0, so
            # "+ year * 0" below makes the whole date NULL instead.
            year = sa.func.nullif(sa.func.nullif(year, self.ilit(0)), self.ilit(10_000))
            start = sa.func.printf(self.tlit("%04d-01-01"), year)
            built = sa.func.date(
                start,
                self.text_cat(months, self.tlit(" months")),
                self.text_cat(days + year * 0, self.tlit(" days")),
            )
            expr = self.in_range(built, "date")
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
        x = self.date_arg(node, base)
        limit = _DATEADD_LIMITS[unit]
        constant = _constant_number(node.args[1])
        if constant is not None:
            n = self.ilit(max(-limit, min(limit, int(constant))))
        else:
            amount = self.compile(node.args[1])
            n = self.int_arg(self.expect(amount, "number", node.name), -limit, limit)
        clock_unit = unit in ("hours", "minutes", "seconds")
        kind = "datetime" if base.type == "datetime" or clock_unit else "date"
        if kind == "datetime" and base.type != "datetime":
            x = self.date_to_datetime(x)
        if self.pg:
            expr = self.in_range(self.pg_dateadd(x, n, unit, kind), kind)
        else:
            expr = self.sqlite_dateadd(x, n, unit, kind)
            # SQLite already yields NULL past year 9999; only going back can leave the range.
            if constant is None or constant < 0:
                expr = self.in_range(expr, kind)
        return _V(_retype(expr, self.sqltype(kind)), kind, node.pos)

    def pg_dateadd(
        self, x: ColumnElement[Any], n: ColumnElement[Any], unit: str, kind: str
    ) -> ColumnElement[Any]:
        """DATEADD on PostgreSQL using make_interval()."""
        slots = ("years", "months", "weeks", "days", "hours", "minutes", "seconds")
        interval_args: list[Any] = [self.ilit(0)] * len(slots)
        interval_args[slots.index(unit)] = n
        shifted = x + sa.func.make_interval(*interval_args, type_=sa.Interval())
        return sa.cast(shifted, self.sqltype(kind))

    def sqlite_dateadd(
        self, x: ColumnElement[Any], n: ColumnElement[Any], unit: str, kind: str
    ) -> ColumnElement[Any]:
        """DATEADD on SQLite using date modifiers, clamping month ends like PostgreSQL."""
        if unit in ("months", "years"):
            months = self.text_cat(n * 12 if unit == "years" else n, self.tlit(" months"))
            # SQLite rolls 2024-01-31 + 1 month over to 2024-03-02; when the day of
            # the month changed, step back to the last day of the intended month.
            shifted = sa.func.date(x, months, type_=sa.Text())
            day = self.tlit("%d")
            same_day = sa.func.strftime(day, x) == sa.func.strftime(day, shifted)
            month_end = sa.func.date(shifted, self.tlit("start of month"), self.tlit("-1 days"))
            clamped = sa.case((same_day, shifted), else_=month_end)
            if kind == "date":
                return clamped
            return _retype(clamped, sa.Text()).concat(sa.func.substr(x, self.ilit(11), type_=sa.Text()))
        if unit == "weeks":
            n, unit = n * 7, "days"
        modifier = self.text_cat(n, self.tlit(f" {unit}"))
        if kind == "date":
            return sa.func.date(x, modifier, type_=sa.Text())
        shifted = sa.func.strftime(self.tlit("%Y-%m-%d %H:%M:%S"), x, modifier, type_=sa.Text())
        fraction = sa.func.substr(self.text_cat(x, self.tlit(".000000")), self.ilit(20), self.ilit(7))
        return shifted.concat(fraction)

    def fn_datedif(self, node: Call) -> _V:
        """DATEDIF(start, end, unit): whole units from start to end (negative if end is earlier)."""
        unit = self.unit(node, 2)
        start = self.date_arg(node, self.compile(node.args[0]))
        end = self.date_arg(node, self.compile(node.args[1]))
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
        return sa.cast(self.date_part(x, "year") * 12 + self.date_part(x, "month"), sa.Integer())

    def day_clock(self, x: ColumnElement[Any]) -> ColumnElement[Any]:
        """DDHHMMSS of a date or datetime, comparable within a month."""
        if self.pg:
            return sa.func.to_char(x, self.tlit("DDHH24MISS"), type_=sa.Text())
        return sa.func.strftime(self.tlit("%d%H%M%S"), x, type_=sa.Text())


def _constant_number(node: Node) -> Decimal | None:
    """The value of a number literal such as ``3`` or ``-2.5``, else ``None``."""
    sign = 1
    if isinstance(node, Unary) and node.op in ("-", "+"):
        sign = -1 if node.op == "-" else 1
        node = node.operand
    if isinstance(node, Literal) and node.kind == "number":
        assert isinstance(node.value, Decimal)
        return node.value * sign
    return None


def _flatten(node: Binary, op: str) -> list[Node]:
    """Operands of a left-nested chain such as ``a & b & c``, left to right."""
    operands: list[Node] = []
    current: Node = node
    while isinstance(current, Binary) and current.op == op:
        operands.append(current.right)
        current = current.left
    operands.append(current)
    return operands[::-1]
