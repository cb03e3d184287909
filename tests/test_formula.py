"""Tests for the formula language (formwork.metadata.formula).

Every value test runs the compiled SQL on SQLite and, when the environment
variable FORMWORK_TEST_DATABASE_URL points at a PostgreSQL database, on
PostgreSQL too, and checks the values the database actually returns.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.pool import StaticPool

from formwork.metadata.formula import (
    MAX_DEPTH,
    MAX_LENGTH,
    Binary,
    Call,
    Field,
    FormulaError,
    Literal,
    compile_formula,
    find_cycle,
    parse,
    references,
)

PG_URL = os.environ.get("FORMWORK_TEST_DATABASE_URL")
TODAY = dt.date(2024, 3, 15)
NOW = dt.datetime(2024, 3, 15, 1, 30, 45, 123456)
FIELD_TYPES = {
    "num": "number",
    "cnt": "number",
    "txt": "text",
    "flag": "boolean",
    "d": "date",
    "d2": "date",
    "dt": "datetime",
}
ROWS: list[dict[str, Any]] = [
    {
        "id": 1,
        "num": 7.5,
        "cnt": 7,
        "txt": "你好世界abc",
        "flag": True,
        "d": dt.date(2024, 1, 31),
        "d2": dt.date(2024, 3, 1),
        "dt": dt.datetime(2024, 1, 31, 22, 15, 5, 250000),
    },
    {"id": 2, "num": None, "cnt": None, "txt": None, "flag": None, "d": None, "d2": None, "dt": None},
    {
        "id": 3,
        "num": -2.5,
        "cnt": -7,
        "txt": "  Hello World  ",
        "flag": False,
        "d": dt.date(2024, 2, 29),
        "d2": dt.date(2023, 12, 31),
        "dt": dt.datetime(2023, 12, 31, 23, 59, 59),
    },
]


@dataclass
class Database:
    """A database with a small typed table of sample rows."""

    engine: sa.Engine
    table: sa.Table

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def resolve(self, key: str) -> tuple[sa.ColumnElement[Any], str]:
        if key not in FIELD_TYPES:
            raise FormulaError(f"unknown field {{{key}}}")
        return self.table.c[key], FIELD_TYPES[key]

    def compile(self, formula: str) -> tuple[sa.ColumnElement[Any], str]:
        return compile_formula(parse(formula), self.resolve, self.dialect, TODAY, NOW)

    def evaluate(self, formula: str, row: int = 1) -> tuple[Any, str]:
        expr, kind = self.compile(formula)
        with self.engine.connect() as conn:
            value = conn.execute(sa.select(expr).where(self.table.c.id == row)).scalar_one()
        return value, kind


BACKENDS = [
    "sqlite",
    pytest.param(
        "postgresql",
        marks=pytest.mark.skipif(not PG_URL, reason="FORMWORK_TEST_DATABASE_URL is not set"),
    ),
]


@pytest.fixture(scope="module", params=BACKENDS)
def db(request: pytest.FixtureRequest) -> Iterator[Database]:
    if request.param == "sqlite":
        engine = sa.create_engine("sqlite://", poolclass=StaticPool)
    else:
        assert PG_URL is not None
        engine = sa.create_engine(PG_URL)
    metadata = sa.MetaData()
    table = sa.Table(
        f"formula_test_{uuid.uuid4().hex[:12]}",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("num", sa.Numeric(18, 6).with_variant(sa.Float(), "sqlite")),
        sa.Column("cnt", sa.BigInteger),
        sa.Column("txt", sa.Text),
        sa.Column("flag", sa.Boolean),
        sa.Column("d", sa.Date),
        sa.Column("d2", sa.Date),
        sa.Column("dt", sa.DateTime),
    )
    metadata.create_all(engine)
    try:
        with engine.begin() as conn:
            conn.execute(table.insert(), ROWS)
        yield Database(engine, table)
    finally:
        metadata.drop_all(engine)
        engine.dispose()


def assert_value(actual: Any, expected: Any) -> None:
    """Compare a database value with the expected one (numbers approximately)."""
    if expected is None:
        assert actual is None
    elif isinstance(expected, bool):
        assert actual is expected
    elif isinstance(expected, int | float | Decimal):
        assert isinstance(actual, int | float | Decimal) and not isinstance(actual, bool), actual
        assert float(actual) == pytest.approx(float(expected), rel=1e-9, abs=1e-9)
    elif isinstance(expected, dt.datetime):
        assert type(actual) is dt.datetime and actual == expected
    elif isinstance(expected, dt.date):
        assert type(actual) is dt.date and actual == expected
    else:
        assert actual == expected


# (formula, expected value for row 1, result type)
ROW1_CASES: list[tuple[str, Any, str]] = [
    # arithmetic and operator precedence
    ("1 + 2", 3, "number"),
    ("2 + 3 * 4", 14, "number"),
    ("(2 + 3) * 4", 20, "number"),
    ("-2 * -3", 6, "number"),
    ("10 - 2 - 3", 5, "number"),
    ("7 / 2", 3.5, "number"),
    ("{cnt} / 2", 3.5, "number"),
    ("1 / 3 * 3", 1, "number"),
    ("1 / 0", None, "number"),
    ("{num} / ({cnt} - 7)", None, "number"),
    ("-{num}", -7.5, "number"),
    ("{num} * {cnt}", 52.5, "number"),
    ("{cnt} * {cnt} * 1000000000000000000", 4.9e19, "number"),
    ("7 % 3", 1, "number"),
    ("-7 % 3", 2, "number"),
    ("7 % -3", -2, "number"),
    ("7.5 % 2", 1.5, "number"),
    ("5 % 0", None, "number"),
    ("1.5e3 + .5", 1500.5, "number"),
    # number functions
    ("ROUND(2.5)", 3, "number"),
    ("ROUND(-2.5)", -3, "number"),
    ("ROUND(3.14159, 2)", 3.14, "number"),
    ("ROUND(1234.5, -2)", 1200, "number"),
    ("ROUND({num})", 8, "number"),
    ("ROUNDUP(1.21, 1)", 1.3, "number"),
    ("ROUNDUP(-1.21, 1)", -1.3, "number"),
    ("ROUNDUP(5)", 5, "number"),
    ("ROUNDUP(0.29, 2)", 0.29, "number"),
    ("ROUNDUP(1201, -2)", 1300, "number"),
    ("ROUNDDOWN(1.29, 1)", 1.2, "number"),
    ("ROUNDDOWN(-1.29, 1)", -1.2, "number"),
    ("ROUNDDOWN(0.29, 2)", 0.29, "number"),
    ("ROUNDDOWN(1299, -2)", 1200, "number"),
    ("FLOOR(2.7)", 2, "number"),
    ("FLOOR(-2.1)", -3, "number"),
    ("FLOOR(-2)", -2, "number"),
    ("FLOOR(7.3, 0.5)", 7, "number"),
    ("FLOOR(5, 0)", None, "number"),
    ("CEILING(2.1)", 3, "number"),
    ("CEILING(-2.7)", -2, "number"),
    ("CEILING(7.3, 5)", 10, "number"),
    ("INT(-7.5)", -8, "number"),
    ("INT({num})", 7, "number"),
    ("ABS(-3)", 3, "number"),
    ("MIN(3, 1, 2)", 1, "number"),
    ("MAX(3, 1, 2)", 3, "number"),
    ("MIN({num}, BLANK(), 10)", 7.5, "number"),
    ("MAX({num}, {cnt})", 7.5, "number"),
    ("SUM(1, 2, BLANK())", 3, "number"),
    ("SUM({num}, {cnt})", 14.5, "number"),
    ("AVERAGE(1, 2, BLANK())", 1.5, "number"),
    ("AVERAGE(BLANK())", None, "number"),
    ("MOD(10, 3)", 1, "number"),
    ("MOD(-10, 3)", 2, "number"),
    ("MOD(10, 0)", None, "number"),
    ("POWER(2, 10)", 1024, "number"),
    ("POWER(2, 0.5)", 1.4142135623730951, "number"),
    ("POWER(-2, 3)", -8, "number"),
    ("POWER(-8, 1 / 3)", None, "number"),
    ("POWER(0, -1)", None, "number"),
    ("SQRT(16)", 4, "number"),
    ("SQRT(-1)", None, "number"),
    ('VALUE("42")', 42, "number"),
    ('VALUE(" -3.5e2 ")', -350, "number"),
    ('VALUE(".5")', 0.5, "number"),
    ('VALUE("12abc")', None, "number"),
    ('VALUE("1,000")', None, "number"),
    ('VALUE("")', None, "number"),
    ('VALUE("12\\n")', None, "number"),
    # text
    ("LEN({txt})", 7, "number"),
    ('LEN("")', 0, "number"),
    ('"a" & "b"', "ab", "text"),
    ('"n=" & 7 / 2', "n=3.5", "text"),
    ('"x" & BLANK() & "y"', "xy", "text"),
    ('CONCAT("a", 1, TRUE, BLANK())', "a1TRUE", "text"),
    ('"d:" & {d}', "d:2024-01-31", "text"),
    ("{txt} & {cnt}", "你好世界abc7", "text"),
    ("TEXT({dt})", "2024-01-31 22:15:05", "text"),
    ("TEXT({num})", "7.5", "text"),
    ("TEXT(3.0)", "3", "text"),
    ("TEXT(0.1 + 0.2)", "0.3", "text"),
    ("TEXT(1 / 4)", "0.25", "text"),
    ("TEXT(-2.50)", "-2.5", "text"),
    ("TEXT(FALSE)", "FALSE", "text"),
    ('LOWER("ABC")', "abc", "text"),
    ("UPPER({txt})", "你好世界ABC", "text"),
    ('TRIM("  x y  ")', "x y", "text"),
    ("LEFT({txt}, 2)", "你好", "text"),
    ("LEFT({txt})", "你", "text"),
    ("LEFT({txt}, 0)", "", "text"),
    ("LEFT({txt}, -1)", "", "text"),
    ("LEFT({txt}, 2.9)", "你好", "text"),
    ("LEFT({txt}, 1e40)", "你好世界abc", "text"),
    ("RIGHT({txt}, 3)", "abc", "text"),
    ("RIGHT({txt}, 5)", "世界abc", "text"),
    ("RIGHT({txt}, 0)", "", "text"),
    ('RIGHT("abc", 0.5)', "", "text"),
    ("RIGHT({txt}, 100)", "你好世界abc", "text"),
    ("MID({txt}, 3, 2)", "世界", "text"),
    ("MID({txt}, 0, 2)", "你好", "text"),
    ("MID({txt}, 6, 100)", "bc", "text"),
    ('MID("abc", 2, -1)', "", "text"),
    ('SUBSTITUTE("a-b-c", "-", "+")', "a+b+c", "text"),
    ('SUBSTITUTE({txt}, "世界", "🌍")', "你好🌍abc", "text"),
    ('FIND("世", {txt})', 3, "number"),
    ('FIND("z", {txt})', 0, "number"),
    ('FIND("", "abc")', 1, "number"),
    ('CONTAINS({txt}, "abc")', True, "boolean"),
    ('CONTAINS({txt}, "ABC")', False, "boolean"),
    ('"it\'s" & \'say "hi"\' & "\\\\"', 'it\'ssay "hi"\\', "text"),
    # comparisons
    ("1 < 2", True, "boolean"),
    ("2 <= 2", True, "boolean"),
    ("3 >= 4", False, "boolean"),
    ("1 != 2", True, "boolean"),
    ("1 <> 1", False, "boolean"),
    ("1 == 1", True, "boolean"),
    ('"a" < "b"', True, "boolean"),
    ('"B" < "a"', True, "boolean"),
    ('"abc" = "ABC"', False, "boolean"),
    ("TRUE = {flag}", True, "boolean"),
    ("{num} = BLANK()", False, "boolean"),
    ("{num} != BLANK()", True, "boolean"),
    ("{num} > BLANK()", None, "boolean"),
    # logic
    ('IF({flag}, "yes", "no")', "yes", "text"),
    ('IF({num} > 10, "big", IF({num} > 5, "mid", "small"))', "mid", "text"),
    ('IF({num} > 1, IF({cnt} > 100, "a", "b"), "c")', "b", "text"),
    ("IF({flag}, 1, BLANK())", 1, "number"),
    ("IF(BLANK(), 1, 2)", 2, "number"),
    ("AND(TRUE, FALSE)", False, "boolean"),
    ("OR(FALSE, TRUE, FALSE)", True, "boolean"),
    ("NOT(TRUE)", False, "boolean"),
    ("TRUE and not FALSE", True, "boolean"),
    ("{num} > 5 AND {cnt} < 10", True, "boolean"),
    ("1 = 1 or 1 / 0 = 1", True, "boolean"),
    ("not 1 = 2", True, "boolean"),
    ('ISBLANK("")', True, "boolean"),
    ("ISBLANK({txt})", False, "boolean"),
    ("ISBLANK(BLANK())", True, "boolean"),
    ("ISBLANK(NULL)", True, "boolean"),
    ('SWITCH({cnt}, 1, "one", 7, "seven", "other")', "seven", "text"),
    ('SWITCH("x", "a", 1, 2)', 2, "number"),
    ('SWITCH(3, 1, "a")', None, "text"),
    # dates
    ("YEAR({d})", 2024, "number"),
    ("MONTH({d})", 1, "number"),
    ("DAY({d})", 31, "number"),
    ("WEEKDAY({d})", 3, "number"),
    ("WEEKDAY(DATE(2024, 3, 3))", 7, "number"),
    ("WEEKDAY(DATE(2024, 3, 4))", 1, "number"),
    ("WEEKDAY({dt})", 3, "number"),
    ("HOUR({dt})", 22, "number"),
    ("MINUTE({dt})", 15, "number"),
    ("HOUR({d})", 0, "number"),
    ("TODAY()", TODAY, "date"),
    ("NOW()", NOW, "datetime"),
    ("YEAR(TODAY()) * 100 + MONTH(TODAY())", 202403, "number"),
    ("DATE(2024, 2, 29)", dt.date(2024, 2, 29), "date"),
    ("DATE(2023, 2, 29)", dt.date(2023, 3, 1), "date"),
    ("DATE(2024, 13, 1)", dt.date(2025, 1, 1), "date"),
    ("DATE(2024, 1, 0)", dt.date(2023, 12, 31), "date"),
    ("DATE(0, 1, 1)", None, "date"),
    ("DATE(10000, 1, 1)", None, "date"),
    ('DATEADD({d}, 1, "days")', dt.date(2024, 2, 1), "date"),
    ('DATEADD({d}, 1.9, "days")', dt.date(2024, 2, 1), "date"),
    ('DATEADD({d}, 2, "weeks")', dt.date(2024, 2, 14), "date"),
    ('DATEADD({d}, 1, "months")', dt.date(2024, 2, 29), "date"),
    ('DATEADD({d}, 13, "Months")', dt.date(2025, 2, 28), "date"),
    ('DATEADD({d}, -1, "months")', dt.date(2023, 12, 31), "date"),
    ('DATEADD({d}, -2, "month")', dt.date(2023, 11, 30), "date"),
    ('DATEADD(DATE(2024, 2, 29), 1, "years")', dt.date(2025, 2, 28), "date"),
    ('DATEADD({dt}, 2, "hours")', dt.datetime(2024, 2, 1, 0, 15, 5, 250000), "datetime"),
    ('DATEADD({dt}, -30, "minutes")', dt.datetime(2024, 1, 31, 21, 45, 5, 250000), "datetime"),
    ('DATEADD({dt}, 55, "seconds")', dt.datetime(2024, 1, 31, 22, 16, 0, 250000), "datetime"),
    ('DATEADD({dt}, 1, "months")', dt.datetime(2024, 2, 29, 22, 15, 5, 250000), "datetime"),
    ('DATEADD({d}, 90, "minutes")', dt.datetime(2024, 1, 31, 1, 30), "datetime"),
    ('DATEADD(DATEADD({d}, 1, "months"), -1, "days")', dt.date(2024, 2, 28), "date"),
    ('DATEADD({d}, -5000, "years")', None, "date"),
    ('DATEADD(DATE(9999, 12, 31), 1, "days")', None, "date"),
    ('DATEDIF({d}, {d2}, "days")', 30, "number"),
    ('DATEDIF({d2}, {d}, "days")', -30, "number"),
    ('DATEDIF({d}, {d2}, "weeks")', 4, "number"),
    ('DATEDIF({d}, {d2}, "months")', 1, "number"),
    ('DATEDIF({d2}, {d}, "months")', -1, "number"),
    ('DATEDIF({d}, DATE(2024, 2, 29), "months")', 0, "number"),
    ('DATEDIF(DATE(2024, 1, 15), DATE(2024, 2, 15), "months")', 1, "number"),
    ('DATEDIF(DATE(2023, 12, 31), DATE(2024, 1, 1), "months")', 0, "number"),
    ('DATEDIF(DATE(2020, 2, 29), DATE(2024, 2, 28), "years")', 3, "number"),
    ('DATEDIF(DATE(2020, 2, 29), DATE(2024, 2, 29), "years")', 4, "number"),
    ('DATEDIF({dt}, {d2}, "hours")', 697, "number"),
    ('DATEDIF({d}, {dt}, "minutes")', 22 * 60 + 15, "number"),
    ('DATEDIF({d}, TODAY(), "days")', 44, "number"),
    ("{d} < {d2}", True, "boolean"),
    ("{d} = DATE(2024, 1, 31)", True, "boolean"),
    ("{d} < {dt}", True, "boolean"),
    ('{d} = DATEADD({d}, 0, "hours")', True, "boolean"),
    ("{dt} < NOW()", True, "boolean"),
    ("MIN({d}, {d2})", dt.date(2024, 1, 31), "date"),
    ("MAX({d}, {dt})", dt.datetime(2024, 1, 31, 22, 15, 5, 250000), "datetime"),
    ("IF({flag}, {d}, {dt})", dt.datetime(2024, 1, 31), "datetime"),
    ('TEXT(DATEADD({d}, 1, "months"))', "2024-02-29", "text"),
    # literals and safety
    ("BLANK()", None, "text"),
    ('"\'; DROP TABLE x; --"', "'; DROP TABLE x; --", "text"),
    ("'Robert\\'); DROP TABLE students;--'", "Robert'); DROP TABLE students;--", "text"),
    ('"{txt}"', "{txt}", "text"),
]

# Row 2 holds only blanks.
BLANK_ROW_CASES: list[tuple[str, Any, str]] = [
    ("{num} + 1", None, "number"),
    ("{num} * 0", None, "number"),
    ("SUM({num}, 1)", 1, "number"),
    ('{txt} & "x"', "x", "text"),
    ("CONCAT({txt}, {num}, {d})", "", "text"),
    ("LEN({txt})", None, "number"),
    ("ISBLANK({txt})", True, "boolean"),
    ("ISBLANK({num})", True, "boolean"),
    ("{num} = BLANK()", True, "boolean"),
    ("IF({flag}, 1, 2)", 2, "number"),
    ("NOT {flag}", None, "boolean"),
    ("{flag} = TRUE", None, "boolean"),
    ("{num} > 1", None, "boolean"),
    ("{num} > 1 OR TRUE", True, "boolean"),
    ("{num} > 1 AND FALSE", False, "boolean"),
    ("YEAR({d})", None, "number"),
    ("WEEKDAY({d})", None, "number"),
    ("HOUR({dt})", None, "number"),
    ('DATEADD({d}, 1, "months")', None, "date"),
    ('DATEADD({dt}, 1, "hours")', None, "datetime"),
    ('DATEADD(TODAY(), {num}, "days")', None, "date"),
    ('DATEDIF({d}, TODAY(), "days")', None, "number"),
    ('DATEDIF({d}, TODAY(), "months")', None, "number"),
    ("MIN({num}, 3)", 3, "number"),
    ('MAX("", {txt})', "", "text"),
    ('MIN({txt}, "b")', "b", "text"),
    ("MIN({d}, TODAY())", TODAY, "date"),
    ("MAX({d}, {d2})", None, "date"),
    ("MAX({dt}, {d}, NOW())", NOW, "datetime"),
    ("MAX({num}, {cnt})", None, "number"),
    ("AVERAGE({num}, {cnt})", None, "number"),
    ("AVERAGE({num}, 4, 6)", 5, "number"),
    ("TEXT({flag})", None, "text"),
    ("TEXT({d})", None, "text"),
    ("UPPER({txt})", None, "text"),
    ("VALUE({txt})", None, "number"),
    ("LEFT({txt}, 2)", None, "text"),
    ('LEFT("abc", {num})', None, "text"),
    ('RIGHT("abc", {num})', None, "text"),
    ('MID("abc", {num}, 1)', None, "text"),
    ("DATE({cnt}, 1, 1)", None, "date"),
    ('SWITCH({cnt}, 1, "a", "other")', "other", "text"),
    ("ROUND({num}, 2)", None, "number"),
    ("ROUNDUP({num}, 1)", None, "number"),
    ("FLOOR({num})", None, "number"),
    ("MOD({num}, 2)", None, "number"),
    ("POWER({num}, 2)", None, "number"),
    ("{num} / 0", None, "number"),
]

ROW3_CASES: list[tuple[str, Any, str]] = [
    ("TRIM({txt})", "Hello World", "text"),
    ("LEN({txt})", 15, "number"),
    ('LOWER({txt}) = "  hello world  "', True, "boolean"),
    ("WEEKDAY({d})", 4, "number"),
    ('DATEADD({d}, 1, "years")', dt.date(2025, 2, 28), "date"),
    ('DATEADD({d}, 1, "months")', dt.date(2024, 3, 29), "date"),
    ("IF({flag}, 1, 2)", 2, "number"),
    ("NOT {flag}", True, "boolean"),
    ("INT({num})", -3, "number"),
    ("ROUND({num})", -3, "number"),
    ("MOD({cnt}, 3)", 2, "number"),
    ("ABS({cnt})", 7, "number"),
    ("TEXT({num})", "-2.5", "text"),
    ('DATEDIF({dt}, {d}, "days")', 59, "number"),
    ('DATEDIF({d2}, {d}, "months")', 1, "number"),
    ('DATEDIF({dt}, {d}, "months")', 1, "number"),
    ("YEAR({dt})", 2023, "number"),
    ("{d2} < {dt}", True, "boolean"),
]


@pytest.mark.parametrize(("formula", "expected", "kind"), ROW1_CASES)
def test_values(db: Database, formula: str, expected: Any, kind: str) -> None:
    value, result_kind = db.evaluate(formula, row=1)
    assert result_kind == kind
    assert_value(value, expected)


@pytest.mark.parametrize(("formula", "expected", "kind"), BLANK_ROW_CASES)
def test_blank_values(db: Database, formula: str, expected: Any, kind: str) -> None:
    value, result_kind = db.evaluate(formula, row=2)
    assert result_kind == kind
    assert_value(value, expected)


@pytest.mark.parametrize(("formula", "expected", "kind"), ROW3_CASES)
def test_more_values(db: Database, formula: str, expected: Any, kind: str) -> None:
    value, result_kind = db.evaluate(formula, row=3)
    assert result_kind == kind
    assert_value(value, expected)


def test_filter_sort_and_aggregate(db: Database) -> None:
    condition, kind = db.compile("{num} * 2 > 0 OR ISBLANK({txt})")
    assert kind == "boolean"
    sort_key, _ = db.compile("DATEDIF({d}, TODAY(), 'days')")
    total, _ = db.compile("SUM({num}, 1)")
    t = db.table
    with db.engine.connect() as conn:
        ids = conn.execute(sa.select(t.c.id).where(condition).order_by(t.c.id)).scalars().all()
        ordered = conn.execute(sa.select(t.c.id).order_by(sort_key.desc().nulls_last())).scalars().all()
        summed = conn.execute(sa.select(sa.func.sum(total))).scalar_one()
        bucket = sort_key > 40
        grouped = conn.execute(sa.select(bucket, sa.func.count()).group_by(bucket)).all()
    assert ids == [1, 2]
    assert ordered == [1, 3, 2]
    assert float(summed) == pytest.approx(8.5 + 1 - 1.5)
    assert sorted(grouped, key=lambda r: (r[0] is None, r[0])) == [(False, 1), (True, 1), (None, 1)]


def test_deterministic_time_functions_are_bound(db: Database) -> None:
    expr, _ = db.compile("TEXT(TODAY()) & ' ' & TEXT(NOW())")
    sql = str(expr.compile(dialect=db.engine.dialect))
    assert "2024" not in sql
    with db.engine.connect() as conn:
        assert conn.execute(sa.select(expr)).scalar_one() == "2024-03-15 2024-03-15 01:30:45"


def test_aware_now_is_converted_to_utc(db: Database) -> None:
    aware = dt.datetime(2024, 3, 15, 9, 30, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    expr, kind = compile_formula(parse("NOW()"), db.resolve, db.dialect, TODAY, aware)
    with db.engine.connect() as conn:
        assert conn.execute(sa.select(expr)).scalar_one() == dt.datetime(2024, 3, 15, 1, 30)


def test_injection_looking_text_is_a_bound_value(db: Database) -> None:
    evil = "x' OR '1'='1'; DROP TABLE formula_test; --"
    formula = '{txt} = "' + evil.replace('"', '\\"') + '"'
    expr, _ = db.compile(formula)
    sql = str(expr.compile(dialect=db.engine.dialect))
    assert "DROP" not in sql and "OR '1'" not in sql
    with db.engine.connect() as conn:
        matches = conn.execute(sa.select(sa.func.count()).where(expr)).scalar_one()
        rows = conn.execute(sa.select(sa.func.count()).select_from(db.table)).scalar_one()
    assert matches == 0
    assert rows == len(ROWS)


def test_same_formula_compiles_to_same_sql(db: Database) -> None:
    first, _ = db.compile('IF({num} > 1, "a", "b")')
    second, _ = db.compile('IF({num} > 1, "a", "b")')
    dialect = db.engine.dialect
    assert str(first.compile(dialect=dialect)) == str(second.compile(dialect=dialect))


def nest(template: str, inner: str, times: int) -> str:
    """Wrap ``inner`` ``times`` times in ``template`` (``@`` marks the hole)."""
    for _ in range(times):
        inner = template.replace("@", inner)
    return inner


def test_deep_but_allowed_formula_runs(db: Database) -> None:
    formula = nest("IF({flag}, @, 0)", "{num}", 8)
    expr, _ = db.compile(formula)
    t = db.table
    with db.engine.connect() as conn:
        # Embed the formula the way list views do: filter, sort and count in a subquery.
        inner = sa.select(t.c.id).where(sa.and_(t.c.id > 0, expr > 1)).order_by(expr).subquery()
        assert conn.execute(sa.select(sa.func.count()).select_from(inner)).scalar_one() == 1


@pytest.mark.parametrize(
    "formula",
    [
        nest("ROUND(@, 1)", "{num}", 90),
        nest("MOD({num}, @)", "{num}", 12),
        nest('DATEADD(@, 1, "months")', "{d}", 30),
        nest("ABS(@)", "{num}", 90),
        nest("TEXT(VALUE(@))", "{txt}", 30),
    ],
)
def test_too_complex_formulas_are_rejected(db: Database, formula: str) -> None:
    with pytest.raises(FormulaError, match="too complex"):
        db.compile(formula)


def test_sqlite_parser_limit_is_checked_before_running() -> None:
    column = sa.column("x", sa.Float())
    node = parse(nest("IF({x} > 0, @, 0)", "{x}", 12))
    with pytest.raises(FormulaError, match="too complex"):
        compile_formula(node, lambda key: (column, "number"), "sqlite", TODAY, NOW)
    expr, _ = compile_formula(node, lambda key: (column, "number"), "postgresql", TODAY, NOW)
    assert str(expr.compile(dialect=postgresql.dialect())).count("CASE") == 12


# (formula, message fragment, position)
SYNTAX_ERRORS = [
    ("1 +", "unexpected end of formula", 3),
    ("FOO(1)", "unknown function FOO", 0),
    ("1 + foo(2)", "unknown function foo", 4),
    ("IF(TRUE, 1)", "IF expects 3 arguments, got 2", 0),
    ("ROUND()", "ROUND expects 1 or 2 arguments, got 0", 0),
    ("TODAY(1)", "TODAY expects no arguments, got 1", 0),
    ("SUM()", "SUM expects at least 1 argument, got 0", 0),
    ('"abc', "unclosed text", 0),
    ("1 & 'abc", "unclosed text", 4),
    ("{Name}", "invalid field reference {Name}", 0),
    ("{a b}", "invalid field reference", 0),
    ("{abc", "unclosed field reference", 0),
    ("(1 + 2", "expected ')' but found end of formula", 6),
    ("1 2", "unexpected '2'", 2),
    ("SUM(1,)", "unexpected ')'", 6),
    ("1 ＋ 2", "full-width character '＋'", 2),
    ("IF（TRUE, 1, 2)", "full-width character '（'", 2),
    ("1 $ 2", "unexpected character '$'", 2),
    ("amount + 1", "unknown name amount (did you mean {amount}?)", 0),
    ("today + 1", "did you mean TODAY(...)?", 0),
    ("", "formula is empty", 0),
    ("   ", "formula is empty", 0),
    ("1" * 41, "number is too long", 0),
    ("1e999", "number is out of range", 0),
    ("*2", "unexpected '*'", 0),
]


@pytest.mark.parametrize(("formula", "message", "position"), SYNTAX_ERRORS)
def test_syntax_errors(formula: str, message: str, position: int) -> None:
    with pytest.raises(FormulaError) as info:
        parse(formula)
    assert message in info.value.message
    assert info.value.position == position
    assert str(info.value) == f"{info.value.message} at position {position}"


def test_length_and_depth_limits() -> None:
    with pytest.raises(FormulaError, match="too long"):
        parse("1" + " " * MAX_LENGTH)
    parse("(" * (MAX_DEPTH - 1) + "1" + ")" * (MAX_DEPTH - 1))
    with pytest.raises(FormulaError, match="nested too deeply"):
        parse("(" * (MAX_DEPTH + 1) + "1" + ")" * (MAX_DEPTH + 1))
    with pytest.raises(FormulaError, match="nested too deeply"):
        parse("+".join(["1"] * (MAX_DEPTH + 5)))
    with pytest.raises(FormulaError, match="nested too deeply"):
        parse(nest("ABS(@)", "1", MAX_DEPTH + 1))


# (formula, message, position)
TYPE_ERRORS = [
    ("ROUND({txt}, 1)", "ROUND expects a number, got text", 6),
    ("ROUND({num}, {cnt})", "ROUND digits must be a whole number from -15 to 15", 13),
    ("ROUND({num}, 1.5)", "ROUND digits must be a whole number from -15 to 15", 13),
    ("IF({num}, 1, 2)", "IF condition expects a boolean, got number", 3),
    ('IF({flag}, 1, "a")', "IF values must have the same type, got number and text", 14),
    ('IF({flag}, 1, IF(TRUE, 2, "x"))', "IF values must have the same type, got number and text", 26),
    ("{num} + {txt}", "+ expects numbers, got text (use & to join text)", 8),
    ("{d} + 1", "+ expects numbers, got date (use DATEADD or DATEDIF for dates)", 0),
    ("{d} > 5", "cannot compare date with number", 4),
    ('{num} = "7"', "cannot compare number with text", 6),
    ("{flag} < TRUE", "cannot use < on booleans (only = and !=)", 7),
    ("{missing} + 1", "unknown field {missing}", 0),
    ("1 + {link.missing}", "unknown field {link.missing}", 4),
    ('DATEADD({d}, 1, "fortnights")', "DATEADD unit must be one of", 16),
    ("DATEADD({d}, 1, {txt})", "DATEADD unit must be one of", 16),
    ('DATEADD({d}, "1", "days")', "DATEADD expects a number, got text", 13),
    ('DATEDIF({d}, 5, "days")', "DATEDIF expects a date, got number", 13),
    ("LEN(5)", "LEN expects text, got number", 4),
    ('YEAR("2024-01-01")', "YEAR expects a date, got text", 5),
    ("MIN(TRUE, FALSE)", "MIN expects numbers, text or dates, got boolean", 4),
    ('MAX(1, "a")', "MAX values must have the same type, got number and text", 7),
    ('SWITCH({cnt}, "a", 1)', "SWITCH match values must have the same type, got number and text", 14),
    ('SWITCH({cnt}, 1, "a", 2)', "SWITCH result values must have the same type, got text and number", 22),
    ("NOT 5", "NOT expects a boolean, got number", 4),
    ('"a" and TRUE', "AND expects a boolean, got text", 0),
    ('-"a"', "- expects a number, got text", 1),
    ("AND({flag}, 1)", "AND expects a boolean, got number", 12),
]


@pytest.mark.parametrize(("formula", "message", "position"), TYPE_ERRORS)
def test_type_errors(db: Database, formula: str, message: str, position: int) -> None:
    with pytest.raises(FormulaError) as info:
        db.compile(formula)
    assert message in info.value.message
    assert info.value.position == position


def test_resolver_type_is_validated() -> None:
    column = sa.column("x", sa.Numeric())
    with pytest.raises(FormulaError, match="unsupported type money"):
        compile_formula(parse("{x}"), lambda key: (column, "money"), "sqlite", TODAY, NOW)


def test_compile_rejects_bad_arguments() -> None:
    node = parse("1")
    with pytest.raises(ValueError, match="dialect"):
        compile_formula(node, lambda key: (sa.column(key), "number"), "mysql", TODAY, NOW)
    with pytest.raises(ValueError, match="today"):
        compile_formula(node, lambda key: (sa.column(key), "number"), "sqlite", NOW, NOW)


def test_parse_tree_shape() -> None:
    node = parse("1 + 2 * {a} & IF(TRUE, 1, 2)")
    assert isinstance(node, Binary) and node.op == "&" and node.pos == 12
    assert isinstance(node.left, Binary) and node.left.op == "+"
    assert isinstance(node.left.right, Binary) and node.left.right.op == "*"
    assert node.left.right.right == Field(8, "a")
    assert isinstance(node.right, Call) and node.right.name == "IF" and node.right.pos == 14
    assert node.right.args[0] == Literal(17, "boolean", True)
    assert node.right.args[1] == Literal(23, "number", Decimal(1))


def test_keywords_are_case_insensitive() -> None:
    assert parse("not TRUE AND false Or True") == parse("NOT TRUE and FALSE OR TRUE")
    assert parse("if(true, 1, 2)") == parse("IF(TRUE, 1, 2)")
    assert parse("{ amount }") == Field(0, "amount")


def test_references() -> None:
    node = parse('IF({a} > 1, {customer.name} & {b_2}, TEXT({a})) & "{not_a_field}"')
    assert references(node) == {"a", "customer.name", "b_2"}
    assert references(parse("1 + 2")) == set()


def test_find_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b", "plain"}, "b": {"a"}}) == ["a", "b", "a"]
    assert find_cycle({"a": {"a"}}) == ["a", "a"]
    cycle = find_cycle({"x": {"y"}, "y": {"z"}, "z": {"x", "w"}, "w": set()})
    assert cycle is not None and cycle[0] == cycle[-1] and set(cycle) == {"x", "y", "z"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"b"}}) == ["b", "c", "b"]
    assert find_cycle({}) is None


def test_error_without_position() -> None:
    error = FormulaError("formula is too complex")
    assert error.position is None
    assert str(error) == "formula is too complex"
