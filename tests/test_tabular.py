"""Tests for formwork.runtime.tabular: streaming CSV/XLSX reading and writing."""

from __future__ import annotations

import codecs
import io
import time
import tracemalloc
import zipfile
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from openpyxl import Workbook, load_workbook

from formwork.runtime.tabular import (
    TabularError,
    TabularReader,
    neutralize,
    open_tabular,
    write_csv,
    write_xlsx,
)

CHINESE = "客户名称,金额\n华为技术,1200\n"


class NonSeekable(io.RawIOBase):
    """A forward-only stream, like a socket or a WSGI input, returning short reads."""

    def __init__(self, data: bytes, step: int = 1000) -> None:
        self._data = data
        self._pos = 0
        self._step = step

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        size = min(len(buffer), self._step, len(self._data) - self._pos)
        buffer[:size] = self._data[self._pos : self._pos + size]
        self._pos += size
        return size


def read_all(data: bytes, filename: str | None = None, **kwargs: object) -> tuple[TabularReader, list]:
    reader = open_tabular(io.BytesIO(data), filename, **kwargs)  # type: ignore[arg-type]
    return reader, list(reader.rows())


def xlsx_bytes(header: list[str], rows: list[list[object]], **kwargs: object) -> bytes:
    out = io.BytesIO()
    write_xlsx(header, rows, out=out, **kwargs)  # type: ignore[arg-type]
    return out.getvalue()


# --------------------------------------------------------------------------
# CSV: encodings, delimiters, structure
# --------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gbk", "gb18030", "utf-16"])
@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_csv_encodings_and_delimiters(encoding: str, delimiter: str) -> None:
    data = CHINESE.replace(",", delimiter).encode(encoding)
    reader, rows = read_all(data)
    assert reader.format == "csv"
    assert reader.delimiter == delimiter
    assert reader.header == ["客户名称", "金额"]
    assert rows == [(2, ["华为技术", "1200"])]


@pytest.mark.parametrize(
    ("encoding", "expected"),
    [("utf-8", "utf-8"), ("utf-8-sig", "utf-8-sig"), ("gbk", "gb18030"), ("utf-16", "utf-16")],
)
def test_detected_encoding_is_reported(encoding: str, expected: str) -> None:
    reader, _ = read_all(CHINESE.encode(encoding))
    assert reader.encoding == expected


def test_utf16_without_bom() -> None:
    reader, rows = read_all("name,amount\nHuawei,1200\n".encode("utf-16-le"))
    assert reader.header == ["name", "amount"]
    assert rows == [(2, ["Huawei", "1200"])]


def test_gbk_after_a_long_ascii_prefix_is_detected_late() -> None:
    lines = ["id,name\r\n"] + [f"{i},customer {i}\r\n" for i in range(10_000)] + ["10000,华为技术\r\n"]
    data = "".join(lines).encode("gbk")
    assert data[:65536].isascii()
    reader, rows = read_all(data)
    assert rows[-1] == (10_002, ["10000", "华为技术"])
    assert reader.encoding == "gb18030"


def test_explicit_encoding_override() -> None:
    data = "Name;City\nJosé;Zürich\n".encode("cp1252")
    with pytest.raises(TabularError, match=r"row 2: .*not valid UTF-8 or GB18030"):
        read_all(data)
    _, rows = read_all(data, encoding="cp1252")
    assert rows == [(2, ["José", "Zürich"])]


def test_unknown_encoding_override() -> None:
    with pytest.raises(TabularError, match="not a known text encoding"):
        read_all(b"a\n1\n", encoding="no-such-codec")


def test_quoted_newlines_keep_spreadsheet_row_numbers() -> None:
    data = b'name,note\r\n"Acme","line 1\r\nline 2\nline 3"\r\nBeta,plain\r\n"Gam\nma",x\n'
    _, rows = read_all(data)
    assert rows == [
        (2, ["Acme", "line 1\r\nline 2\nline 3"]),
        (3, ["Beta", "plain"]),
        (4, ["Gam\nma", "x"]),
    ]


def test_quoted_delimiters_and_doubled_quotes() -> None:
    _, rows = read_all(b'a,b\n"x, y","say ""hi"""\n')
    assert rows == [(2, ["x, y", 'say "hi"'])]


def test_blank_lines_are_skipped_but_counted() -> None:
    data = b"\n\na,b\n1,2\n\n , \n,,\n3,4\n"
    _, rows = read_all(data)
    assert rows == [(4, ["1", "2"]), (8, ["3", "4"])]


def test_short_rows_are_padded_and_empty_cells_are_none() -> None:
    _, rows = read_all(b"a,b,c\n1\n1,,3\n")
    assert rows == [(2, ["1", None, None]), (3, ["1", None, "3"])]


def test_extra_empty_cells_are_ignored() -> None:
    _, rows = read_all(b"a,b\n1,2,,\n3,4, \n")
    assert rows == [(2, ["1", "2"]), (3, ["3", "4"])]


def test_ragged_row_with_extra_data_names_the_row() -> None:
    reader = open_tabular(io.BytesIO(b"a,b,c,d\n1,2,3,4\n" + b"1,2,3,4\n" * 14 + b"1,2,3,4,5\n"))
    rows = reader.rows()
    with pytest.raises(TabularError) as info:
        for _ in rows:
            pass
    assert info.value.message == "row 17 has 5 cells, the header has 4"
    assert info.value.row == 17


def test_header_is_trimmed_and_bom_stripped() -> None:
    data = codecs.BOM_UTF8 + "\ufeff 客户名称 ,\t金额 ,,\n华为,1\n".encode()
    reader, rows = read_all(data)
    assert reader.header == ["客户名称", "金额"]
    assert rows == [(2, ["华为", "1"])]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"a,,c\n1,2,3\n", "row 1: column B of the header has no name"),
        (b"name,amount,name\n1,2,3\n", 'row 1: the header has "name" twice (columns A and C)'),
        (b"\n\nname, name\n", 'row 3: the header has "name" twice (columns A and B)'),
    ],
)
def test_bad_headers(data: bytes, message: str) -> None:
    with pytest.raises(TabularError) as info:
        open_tabular(io.BytesIO(data))
    assert info.value.message == message


@pytest.mark.parametrize("data", [b"", codecs.BOM_UTF8, b"\r\n\r\n", b" , ,\n\n", "\n".encode("utf-16")])
def test_empty_files(data: bytes) -> None:
    with pytest.raises(TabularError, match="the file is empty"):
        open_tabular(io.BytesIO(data))


def test_header_only_file_has_no_rows() -> None:
    reader, rows = read_all(b"a,b\n")
    assert reader.header == ["a", "b"]
    assert rows == []


def test_rows_can_only_be_iterated_once() -> None:
    reader = open_tabular(io.BytesIO(b"a\n1\n"))
    list(reader.rows())
    with pytest.raises(RuntimeError):
        reader.rows()


@pytest.mark.parametrize(
    ("data", "filename", "delimiter", "header"),
    [
        (b"Name;Price\nA;1,5\nB;2,25\n", None, ";", ["Name", "Price"]),
        (b"Name\nSmith, John\nDoe, Jane\n", None, "\t", ["Name"]),
        (b"a\tb,c\n1\t2,3\n", None, ",", ["a\tb", "c"]),
        (b"a\tb,c\n1\t2,3\n", "export.tsv", "\t", ["a", "b,c"]),
        (b'"x|y",z\n"1|2",3\n', None, ",", ["x|y", "z"]),
        (b"a|b|c\n1|2|3\n4|5\n", None, "|", ["a", "b", "c"]),
    ],
)
def test_delimiter_guessing(data: bytes, filename: str | None, delimiter: str, header: list[str]) -> None:
    reader = open_tabular(io.BytesIO(data), filename)
    assert reader.delimiter == delimiter
    assert reader.header == header


def test_crlf_split_across_read_chunks_is_one_line_end() -> None:
    # The header line ends exactly so that \r is the last byte of the first 64 KB chunk.
    data = b"h" * 65535 + b"\r\nv\r\nw\r\n"
    assert data[65535:65536] == b"\r"
    _, rows = read_all(data)
    assert rows == [(2, ["v"]), (3, ["w"])]


def test_non_seekable_csv_stream() -> None:
    data = ("客户名称,金额\n" + "华为技术,1200\n" * 30_000).encode("gbk")
    reader = open_tabular(NonSeekable(data), "x.csv")  # type: ignore[arg-type]
    rows = list(reader.rows())
    assert len(rows) == 30_000
    assert rows[-1] == (30_001, ["华为技术", "1200"])


# --------------------------------------------------------------------------
# CSV: broken and hostile input
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "bad", "label"),
    [("utf-8", b"\xff", "UTF-8"), ("gbk", b"\xff", "GB18030/GBK"), ("utf-8-sig", b"\xc3(", "UTF-8")],
)
def test_broken_encoding_in_the_middle_names_the_row(encoding: str, bad: bytes, label: str) -> None:
    lines = ["编号,名称\r\n".encode(encoding)]
    for i in range(2, 20_001):
        line = f"{i},客户{i}\r\n".encode(encoding if i == 2 or encoding != "utf-8-sig" else "utf-8")
        if i == 5_000:
            line = f"{i},客户".encode("utf-8" if encoding == "utf-8-sig" else encoding) + bad + b"\r\n"
        lines.append(line)
    data = b"".join(lines)
    assert len(data) > 3 * 65536  # the bad byte is well past the sniffed first chunk
    reader = open_tabular(io.BytesIO(data))
    seen = []
    with pytest.raises(TabularError) as info:
        for row, _cells in reader.rows():
            seen.append(row)
    assert info.value.row == 5_000
    assert info.value.message.startswith(f"row 5000: the file is not valid {label} text")
    assert seen == list(range(2, 5_000))


def test_broken_encoding_inside_a_multiline_cell_names_its_row() -> None:
    data = b'a,b\n1,"first\nsecond ' + b"\xff" + b'"\n'
    reader = open_tabular(io.BytesIO(data))
    with pytest.raises(TabularError, match="^row 2: "):
        list(reader.rows())


def test_truncated_multibyte_character_at_the_end() -> None:
    data = "a,b\n1,华".encode()[:-1]
    reader = open_tabular(io.BytesIO(data))
    with pytest.raises(TabularError, match="^row 2: the file is not valid UTF-8"):
        list(reader.rows())


def test_unclosed_quote_is_reported() -> None:
    data = b'a,b\n1,"never closed\n' + b"more text,more\n" * 20_000
    reader = open_tabular(io.BytesIO(data))
    with pytest.raises(TabularError, match=r"^row 2: a cell is longer than .*quote"):
        list(reader.rows())


def test_endless_line_is_refused() -> None:
    data = b"a,b\n" + b"x" * 3_000_000
    reader = open_tabular(io.BytesIO(data))
    with pytest.raises(TabularError, match="^row 2: the line is far too long"):
        list(reader.rows())


# --------------------------------------------------------------------------
# Limits
# --------------------------------------------------------------------------


def test_max_rows_is_enforced_while_streaming() -> None:
    reader = open_tabular(io.BytesIO(b"a\n1\n2\n\n3\n4\n"), max_rows=3)
    rows = reader.rows()
    assert [next(rows)[0] for _ in range(3)] == [2, 3, 5]
    with pytest.raises(TabularError, match="more than 3 data rows"):
        next(rows)


def test_max_columns() -> None:
    with pytest.raises(TabularError, match="the header has 6 columns; at most 5 are allowed"):
        open_tabular(io.BytesIO(b"a,b,c,d,e,f\n"), max_columns=5)


def test_max_cell_chars() -> None:
    reader = open_tabular(io.BytesIO(b"a,b\n1,12345678901\n"), max_cell_chars=10)
    with pytest.raises(TabularError, match="^row 2: the cell in column B has 11 characters; the limit is 10"):
        list(reader.rows())


# --------------------------------------------------------------------------
# Big files: streaming with bounded memory
# --------------------------------------------------------------------------


def _big_csv_lines(count: int) -> Iterator[bytes]:
    yield codecs.BOM_UTF8 + "编号,客户名称,金额,日期,备注\r\n".encode()
    for i in range(count):
        yield f'{i},华为技术{i},{i * 1.5:.2f},2024-01-{i % 28 + 1:02d},"note {i}, ok"\r\n'.encode()


def test_big_csv_is_read_with_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    with path.open("wb") as out:
        out.writelines(_big_csv_lines(200_000))
    size = path.stat().st_size
    assert size > 10_000_000

    tracemalloc.start()
    try:
        with path.open("rb") as stream:
            reader = open_tabular(stream, path.name)
            count = 0
            last = None
            for row in reader.rows():
                count += 1
                last = row
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert count == 200_000
    assert last == (200_001, ["199999", "华为技术199999", "299998.50", "2024-01-24", "note 199999, ok"])
    assert peak < size / 10, f"peak {peak:,} bytes for a {size:,} byte file"


# --------------------------------------------------------------------------
# Not a spreadsheet
# --------------------------------------------------------------------------


def _zip_with(names: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in names.items():
            zf.writestr(name, content)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "filename", "what"),
    [
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600), "old.xls", r"\.xls"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", "report.csv", "PDF"),
        (b"\x89PNG\r\n\x1a\n" + bytes(100), None, "PNG"),
        (b"\x00\x01\x02\x03binary\x00\x00\xff\xfe\x00junk" * 50, "data.csv", "not a spreadsheet"),
        (b"\x01\x02\x03\x04\x05\x06\x07\x08abc\x0e\x0f\x10" * 40, "data.csv", "not a spreadsheet"),
        (b"<html><body><table><tr><td>a</td></tr></table>", "export.xls", "web page"),
        (_zip_with({"word/document.xml": b"<w/>", "[Content_Types].xml": b"<x/>"}), "a.xlsx", "Word"),
        (_zip_with({"mimetype": b"application/vnd.oasis.opendocument.spreadsheet"}), "a.ods", "OpenDocument"),
        (_zip_with({"readme.txt": b"hello"}), "a.zip", "ZIP archive"),
        (_zip_with({"xl/workbook.bin": b"\x00"}), "a.xlsb", "xlsb"),
    ],
)
def test_non_spreadsheets_are_refused(data: bytes, filename: str | None, what: str) -> None:
    with pytest.raises(TabularError, match=what) as info:
        open_tabular(io.BytesIO(data), filename)
    if "ZIP archive" in what or "PDF" in what or "PNG" in what or "not a" in what:
        assert ".xlsx" in info.value.message and "CSV" in info.value.message


def test_corrupt_xlsx_is_refused() -> None:
    data = xlsx_bytes(["a"], [[1]])
    with pytest.raises(TabularError, match="damaged"):
        open_tabular(io.BytesIO(data[: len(data) // 2]), "a.xlsx")


def test_zip_that_is_not_a_valid_workbook_is_refused() -> None:
    data = _zip_with({"xl/workbook.xml": b"<not-a-workbook/>", "[Content_Types].xml": b"garbage"})
    with pytest.raises(TabularError, match="could not be read"):
        open_tabular(io.BytesIO(data), "a.xlsx")


def test_encrypted_zip_member_is_refused() -> None:
    data = bytearray(xlsx_bytes(["a"], [[1]]))
    # Set the "encrypted" flag bit in every central directory entry.
    pos = data.find(b"PK\x01\x02")
    while pos >= 0:
        data[pos + 8] |= 0x01
        pos = data.find(b"PK\x01\x02", pos + 4)
    with pytest.raises(TabularError, match="password"):
        open_tabular(io.BytesIO(bytes(data)), "a.xlsx")


# --------------------------------------------------------------------------
# XLSX bombs
# --------------------------------------------------------------------------


def _zip_bomb(path: Path, megabytes: int) -> None:
    """A workbook-shaped zip whose sheet XML unpacks to ``megabytes`` of zeros (never on disk)."""
    zeros = b"0" * (1024 * 1024)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr("[Content_Types].xml", b"<Types/>")
        zf.writestr("xl/workbook.xml", b"<workbook/>")
        with zf.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as member:
            for _ in range(megabytes):
                member.write(zeros)


@pytest.mark.parametrize("megabytes", [300, 20])
def test_xlsx_bomb_is_refused_quickly(tmp_path: Path, megabytes: int) -> None:
    path = tmp_path / "bomb.xlsx"
    _zip_bomb(path, megabytes)
    assert path.stat().st_size < megabytes * 1024 * 1024 / 100
    started = time.perf_counter()
    with path.open("rb") as stream, pytest.raises(TabularError, match="unpacks to"):
        open_tabular(stream, "bomb.xlsx")
    assert time.perf_counter() - started < 1.0


def test_xlsx_total_size_limit() -> None:
    data = xlsx_bytes(["a"], [[i] for i in range(1000)])
    with pytest.raises(TabularError, match="unpacks to more than"):
        open_tabular(io.BytesIO(data), max_uncompressed=10_000)


def test_zip_with_too_many_members_is_refused() -> None:
    data = _zip_with({f"xl/part{i}.xml": b"" for i in range(5_001)} | {"xl/workbook.xml": b""})
    with pytest.raises(TabularError, match="parts"):
        open_tabular(io.BytesIO(data), "a.xlsx")


# --------------------------------------------------------------------------
# XLSX reading
# --------------------------------------------------------------------------


def test_xlsx_round_trip_with_types_and_chinese() -> None:
    header = ["客户名称", "金额", "签约日期", "最后联系", "有效", "标签", "负责人", "备注"]
    rows = [
        [
            "华为技术",
            1200,
            date(2024, 3, 1),
            datetime(2024, 3, 1, 14, 30, 5),
            True,
            ["重要", "VIP"],
            {"id": 7, "display": "张三"},
            None,
        ],
        ["腾讯", 99.5, date(1999, 12, 31), datetime(2024, 3, 2, 0, 0), False, [], None, "多行\n备注"],
        ["Negative", -3, None, None, None, None, None, Decimal("12.25")],
    ]
    reader, back = read_all(xlsx_bytes(header, rows, sheet_title="客户"), "export.xlsx")
    assert reader.format == "xlsx"
    assert reader.sheet == "客户"
    assert reader.header == header
    assert back == [
        (
            2,
            [
                "华为技术",
                1200,
                date(2024, 3, 1),
                datetime(2024, 3, 1, 14, 30, 5),
                True,
                "重要, VIP",
                "张三",
                None,
            ],
        ),
        (3, ["腾讯", 99.5, date(1999, 12, 31), datetime(2024, 3, 2, 0, 0), False, None, None, "多行\n备注"]),
        (4, ["Negative", -3, None, None, None, None, None, 12.25]),
    ]
    assert type(back[0][1][2]) is date
    assert type(back[1][1][3]) is datetime


def test_xlsx_from_a_regular_workbook() -> None:
    wb = Workbook()
    ws = wb.active
    ws.title = "Data"
    ws["A3"], ws["B3"], ws["D3"] = "Name", 2024, None
    ws.append(["Ann", "x"])
    ws["A5"] = "Bob"
    ws["B5"] = datetime(2024, 5, 6)
    ws["B5"].number_format = "yyyy/mm/dd"
    ws["A7"] = "  "
    ws["A8"] = "Cy"
    ws["B8"] = "=1+1"
    wb.create_sheet("Other")["A1"] = "other"
    buffer = io.BytesIO()
    wb.save(buffer)
    reader, rows = read_all(buffer.getvalue())
    assert reader.header == ["Name", "2024"]
    # Formulas are read as their cached values; a file never opened in Excel has none.
    assert rows == [(4, ["Ann", "x"]), (5, ["Bob", date(2024, 5, 6)]), (8, ["Cy", None])]

    reader, rows = read_all(buffer.getvalue(), sheet="Other")
    assert (reader.sheet, reader.header, rows) == ("Other", ["other"], [])

    with pytest.raises(TabularError, match='no sheet named "Missing" .*"Data", "Other"'):
        open_tabular(io.BytesIO(buffer.getvalue()), sheet="Missing")


def test_xlsx_extra_cell_and_limits() -> None:
    data = xlsx_bytes(["a", "b"], [[1, 2], [3, 4, None, "extra"], [5, 6]])
    reader = open_tabular(io.BytesIO(data))
    with pytest.raises(TabularError, match="^row 3 has 4 cells, the header has 2$"):
        list(reader.rows())

    reader = open_tabular(io.BytesIO(xlsx_bytes(["a"], [[i] for i in range(10)])), max_rows=5)
    with pytest.raises(TabularError, match="more than 5 data rows"):
        list(reader.rows())

    with pytest.raises(TabularError, match="at most 3 are allowed"):
        open_tabular(io.BytesIO(xlsx_bytes(list("abcd"), [])), max_columns=3)


def test_empty_xlsx_sheet() -> None:
    buffer = io.BytesIO()
    Workbook().save(buffer)
    with pytest.raises(TabularError, match='the sheet "Sheet" is empty'):
        open_tabular(io.BytesIO(buffer.getvalue()))


def test_non_seekable_xlsx_stream_is_spooled() -> None:
    data = xlsx_bytes(["名称"], [[f"客户{i}"] for i in range(2000)])
    reader = open_tabular(NonSeekable(data), "x.xlsx")  # type: ignore[arg-type]
    with reader:
        rows = list(reader.rows())
    assert rows[-1] == (2001, ["客户1999"])


def _with_sheet_extension(data: bytes) -> bytes:
    """Add a data-validation extension to sheet1, which makes openpyxl warn while parsing."""
    source = zipfile.ZipFile(io.BytesIO(data))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            content = source.read(info)
            if info.filename == "xl/worksheets/sheet1.xml":
                ext = b'<extLst><ext uri="{CCE6A557-97BC-4b89-ADB6-D9C93CAAB3DF}"/></extLst>'
                content = content.replace(b"</worksheet>", ext + b"</worksheet>")
            target.writestr(info, content)
    return buffer.getvalue()


def test_openpyxl_warnings_do_not_escape() -> None:
    data = _with_sheet_extension(xlsx_bytes(["a"], [[1], [2]]))
    # Without the module's narrow filter openpyxl would warn, i.e. fail under -W error.
    with pytest.warns(UserWarning, match="extension is not supported"):
        wb = load_workbook(io.BytesIO(data), read_only=True)
        list(wb.worksheets[0].values)
        wb.close()
    reader, rows = read_all(data)
    assert rows == [(2, [1]), (3, [2])]


def test_reader_close_releases_an_abandoned_workbook() -> None:
    reader = open_tabular(io.BytesIO(xlsx_bytes(["a"], [[1], [2]])))
    rows = reader.rows()
    next(rows)
    reader.close()
    reader.close()


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------

DANGEROUS = ["=1+2", "+1", "-1", "@SUM(A1)", "\t=x", "\r=x"]


@pytest.mark.parametrize("value", DANGEROUS)
def test_neutralize_dangerous_strings(value: str) -> None:
    assert neutralize(value) == "'" + value


@pytest.mark.parametrize("value", ["plain", "1+2", "", " =x", -1, -1.5, 0, None, True, date(2024, 1, 1)])
def test_neutralize_leaves_safe_values(value: object) -> None:
    assert neutralize(value) == value


def test_write_csv_neutralizes_and_reads_back() -> None:
    header = ["name", "=header", *[f"c{i}" for i in range(len(DANGEROUS))], "number", "list", "ref"]
    row = ["ok", "x", *DANGEROUS, -1, ["=a", "b"], {"display": "@me", "id": 3}]
    data = b"".join(write_csv(header, [row]))
    reader, rows = read_all(data)
    assert reader.header[1] == "'=header"
    assert rows == [(2, ["ok", "x", *["'" + v for v in DANGEROUS], "-1", "'=a, b", "'@me"])]


def test_write_xlsx_neutralizes_and_reads_back() -> None:
    header = ["name", *[f"c{i}" for i in range(len(DANGEROUS))], "number", "list"]
    row = ["ok", *DANGEROUS, -1, ["=a", "b"]]
    data = xlsx_bytes(header, [row])
    _, rows = read_all(data)
    # XML turns a bare carriage return into a line feed; the apostrophe stays in front.
    expected = ["'" + v.replace("\r", "\n") for v in DANGEROUS]
    assert rows == [(2, ["ok", *expected, -1, "'=a, b"])]
    ws = load_workbook(io.BytesIO(data)).active
    assert all(cell.data_type != "f" for cell in ws[2])
    assert ws["H2"].value == -1 and ws["H2"].data_type == "n"


def test_write_csv_format() -> None:
    rows: list[list[object]] = [
        [None, True, False, date(2024, 3, 1), datetime(2024, 3, 1, 14, 30), 1.5, "多\n行", ["a", 2]],
        [None, None, None, None, datetime(2024, 3, 1, 8, 0, tzinfo=timezone(timedelta(hours=8))), 0, "", ()],
    ]
    data = b"".join(write_csv(list("abcdefgh"), rows))
    assert data.startswith(codecs.BOM_UTF8)
    text = data[3:].decode()
    assert text == (
        "a,b,c,d,e,f,g,h\r\n"
        ',TRUE,FALSE,2024-03-01,2024-03-01 14:30:00,1.5,"多\n行","a, 2"\r\n'
        ",,,,2024-03-01 08:00:00+08:00,0,,\r\n"
    )


def test_write_csv_streams_in_chunks() -> None:
    chunks = write_csv(["id", "name"], ([i, f"客户{i}"] for i in range(50_000)))
    sizes = [len(chunk) for chunk in chunks]
    assert len(sizes) > 5
    assert max(sizes) < 200_000


def test_write_xlsx_details() -> None:
    aware = datetime(2024, 3, 1, 9, 0, tzinfo=timezone(timedelta(hours=8)))
    rows = [[12345678901234567, aware, "bad\x00\x07chars", "x" * 40_000, float("nan")]]
    data = xlsx_bytes(["id", "when", "text", "long", "nan"], rows, sheet_title="a/b:c*d?[e]" + "x" * 40)
    ws = load_workbook(io.BytesIO(data)).active
    assert ws.title == "a_b_c_d__e_xxxxxxxxxxxxxxxxxxxx"
    assert ws["A1"].font.bold
    assert ws.freeze_panes == "A2"
    assert [c.value for c in ws[2]] == [
        "12345678901234567",
        datetime(2024, 3, 1, 9, 0),
        "badchars",
        "x" * 32_767,
        "nan",
    ]


def test_write_xlsx_failing_rows_propagate() -> None:
    def rows() -> Iterator[list[object]]:
        yield [1]
        raise ValueError("database went away")

    with pytest.raises(ValueError, match="database went away"):
        write_xlsx(["a"], rows(), out=io.BytesIO())
