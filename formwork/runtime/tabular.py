"""Streaming reading and writing of tabular files (CSV and XLSX).

This is the file layer under record import/export: it turns an uploaded file
into a header plus numbered rows of plain Python values, and turns rows back
into CSV or XLSX for download.  It knows nothing about records or fields.

Design points:

* Nothing reads a whole upload into memory: CSV is decoded chunk by chunk and
  XLSX sheets are parsed by openpyxl in read-only (streaming) mode.
* Every problem a user can cause raises :class:`TabularError` with a message
  that can be shown as is, naming the spreadsheet row where that makes sense.
* Exports are defused against formula injection (see :func:`neutralize`).
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import math
import re
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import IO, Any, BinaryIO, Literal, TypeVar

from openpyxl import Workbook, load_workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Font
from openpyxl.styles.numbers import is_datetime

__all__ = [
    "CellValue",
    "MalformedRow",
    "TabularError",
    "TabularReader",
    "neutralize",
    "open_tabular",
    "write_csv",
    "write_xlsx",
]

CellValue = str | int | float | bool | date | datetime | None

_T = TypeVar("_T")

ACCEPTED_FORMATS = "an Excel workbook (.xlsx) or a CSV file (.csv)"

# How much of the upload is looked at to recognise the format, encoding and delimiter.
_SNIFF_BYTES = 64 * 1024
_READ_CHUNK = 64 * 1024

# XLSX bomb protection: a real workbook has a few dozen parts and its XML
# compresses maybe 10-50:1; a bomb needs either huge sizes or huge ratios.
DEFAULT_MAX_UNCOMPRESSED = 200 * 1024 * 1024
_MAX_ZIP_MEMBERS = 5_000
_MAX_COMPRESSION_RATIO = 100
_RATIO_CHECK_MIN_SIZE = 1024 * 1024

# Excel's own limits; exceeding them produces files Excel refuses to open.
_EXCEL_MAX_ROWS = 1_048_576
_EXCEL_MAX_COLUMNS = 16_384
_EXCEL_MAX_CELL_CHARS = 32_767
_EXCEL_EXACT_INT = 10**15

_OPENPYXL_BATCH = 256


class TabularError(Exception):
    """A problem with an uploaded file, worded for the person who uploaded it.

    ``row`` is the spreadsheet row (1-based, as Excel shows it) when the
    problem is tied to one row, else ``None``.
    """

    def __init__(self, message: str, *, row: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.row = row


class MalformedRow(list[CellValue]):
    """A data row that does not fit the header (lenient reading only): its raw cells and what is wrong.

    It is a list of the row's cells as the file holds them (possibly more than the header), so readers
    that only count rows need not know about it; an importer reports ``message`` as that row's error.
    """

    def __init__(self, cells: list[CellValue], message: str) -> None:
        super().__init__(cells)
        self.message = message


def _row_error(row: int, message: str) -> TabularError:
    return TabularError(f"row {row}: {message}", row=row)


# --------------------------------------------------------------------------
# Reading: the common part
# --------------------------------------------------------------------------

_RawRows = Iterator[tuple[int, list[CellValue]]]


@dataclass
class TabularReader:
    """An opened upload: the header is already validated, rows stream lazily.

    Row numbers are spreadsheet rows: the header is normally row 1, so the
    first data row is 2; blank rows are skipped but still counted, and a
    quoted CSV cell spanning several lines is still one row.  Each yielded row
    has exactly ``len(header)`` cells; missing trailing cells are ``None``.

    ``rows()`` can be iterated once.  The caller keeps ``stream`` open until
    iteration ends; ``close()`` (or ``with``) releases what the reader opened
    itself, which matters if iteration is abandoned early.
    """

    header: list[str]
    format: Literal["csv", "xlsx"]
    delimiter: str | None = None
    sheet: str | None = None
    _rows: Iterator[tuple[int, list[CellValue]]] | None = field(default=None, repr=False)
    _closers: list[Callable[[], None]] = field(default_factory=list, repr=False)
    _decoder: _Decoder | None = field(default=None, repr=False)

    @property
    def encoding(self) -> str | None:
        """Text encoding of a CSV ("ascii" while only ASCII has been seen); None for XLSX."""
        return self._decoder.encoding if self._decoder else None

    def rows(self) -> Iterator[tuple[int, list[CellValue]]]:
        """Yield ``(row_number, cells)`` for every non-blank data row."""
        if self._rows is None:
            raise RuntimeError("TabularReader.rows() can only be iterated once")
        rows, self._rows = self._rows, None
        return rows

    def close(self) -> None:
        """Release the workbook / temporary copy held by an XLSX reader."""
        closers, self._closers = self._closers, []
        for close in reversed(closers):
            close()

    def __enter__(self) -> TabularReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _column_letter(index: int) -> str:
    """1-based column index → "A", "B", …, "AA" (users think in Excel columns)."""
    letters = ""
    while index > 0:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def _is_blank(value: CellValue) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _header_text(value: CellValue) -> str:
    """Header cells from XLSX may be numbers or dates (e.g. a year); names are text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, date | time):
        return value.isoformat()
    return str(value)


def _make_header(cells: list[CellValue], row: int, max_columns: int, max_cell_chars: int) -> list[str]:
    """Validate the header row.

    Names are trimmed; trailing empty cells are dropped (spreadsheets often
    carry formatted but empty columns); an empty name in the middle or a
    repeated name is an error because columns could not be told apart.
    """
    names = [_header_text(value).strip() for value in cells]
    if names:
        names[0] = names[0].lstrip("\ufeff").strip()
    while names and not names[-1]:
        names.pop()
    if len(names) > max_columns:
        raise _row_error(row, f"the header has {len(names)} columns; at most {max_columns} are allowed")
    seen: dict[str, int] = {}
    for index, name in enumerate(names, 1):
        if not name:
            raise _row_error(row, f"column {_column_letter(index)} of the header has no name")
        if len(name) > max_cell_chars:
            raise _row_error(row, f"the header of column {_column_letter(index)} is too long")
        if name in seen:
            raise _row_error(
                row,
                f'the header has "{name}" twice (columns {_column_letter(seen[name])} '
                f"and {_column_letter(index)})",
            )
        seen[name] = index
    return names


def _shape_rows(
    raw: _RawRows, width: int, max_rows: int | None, max_cell_chars: int, lenient: bool = False
) -> Iterator[tuple[int, list[CellValue]]]:
    """Fit data rows to the header and enforce the limits.

    Rows shorter than the header are padded with None (spreadsheets omit
    trailing empty cells).  Extra cells beyond the header are ignored when
    empty and an error when they hold data, since that data has no column.
    With ``lenient`` such a row (or one with an over-long cell) is yielded as
    a :class:`MalformedRow` instead of ending the file.
    """
    count = 0
    for row, cells in raw:
        problem: str | None = None
        if len(cells) > width:
            extra = cells[width:]
            if any(not _is_blank(value) for value in extra):
                used = width + max(i for i, value in enumerate(extra, 1) if not _is_blank(value))
                problem = f"row {row} has {used} cells, the header has {width}"
            else:
                del cells[width:]
        elif len(cells) < width:
            cells.extend([None] * (width - len(cells)))
        if problem is None:
            for index, value in enumerate(cells):
                if isinstance(value, str) and len(value) > max_cell_chars:
                    problem = (f"row {row}: the cell in column {_column_letter(index + 1)} has {len(value):,} "
                               f"characters; the limit is {max_cell_chars:,}")
                    break
        if problem is not None:
            if not lenient:
                raise TabularError(problem, row=row)
            cells = MalformedRow([v[:max_cell_chars] if isinstance(v, str) else v for v in cells], problem)
        count += 1
        if max_rows is not None and count > max_rows:
            raise TabularError(f"the file has more than {max_rows:,} data rows, which is the limit", row=row)
        yield row, cells


def _split_header(
    raw: _RawRows, empty_message: str, max_rows: int | None, max_columns: int, max_cell_chars: int,
    lenient: bool = False,
) -> tuple[list[str], Iterator[tuple[int, list[CellValue]]]]:
    """Take the first non-blank row as the header; return it and the shaped data rows."""
    first = next(raw, None)
    if first is None:
        raise TabularError(empty_message)
    header_row, header_cells = first
    header = _make_header(header_cells, header_row, max_columns, max_cell_chars)
    if not header:
        raise TabularError(empty_message)
    return header, _shape_rows(raw, len(header), max_rows, max_cell_chars, lenient)


def _read_up_to(stream: IO[bytes], size: int) -> bytes:
    """Read ``size`` bytes unless EOF comes first (raw streams may return less)."""
    parts: list[bytes] = []
    remaining = size
    while remaining > 0:
        part = stream.read(remaining)
        if not part:
            break
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)


# Magic numbers of things people upload by mistake, with a human description.
_FOREIGN_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
        "an old Excel 97-2003 (.xls) workbook or a password-protected file",
    ),
    (b"%PDF", "a PDF document"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"Rar!", "a RAR archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"{\\rtf", "an RTF document"),
)


def _refuse(what: str) -> TabularError:
    return TabularError(f"this file is {what}, which cannot be imported; please upload {ACCEPTED_FORMATS}")


def open_tabular(
    stream: BinaryIO,
    filename: str | None = None,
    *,
    sheet: str | None = None,
    encoding: str | None = None,
    max_rows: int | None = None,
    max_columns: int = 500,
    max_cell_chars: int = 100_000,
    max_uncompressed: int = DEFAULT_MAX_UNCOMPRESSED,
    lenient: bool = False,
) -> TabularReader:
    """Open an uploaded CSV or XLSX file for streaming reading.

    The format is recognised from the content (a ZIP container is XLSX,
    text is CSV); ``filename`` only improves delimiter guessing and messages.
    ``sheet`` picks an XLSX worksheet by name (default: the first one).
    ``encoding`` overrides CSV encoding detection (UTF-8/UTF-16 BOMs,
    UTF-8, then GB18030 which covers GBK exports of Chinese Excel/WPS).
    ``max_rows`` counts non-blank data rows and is enforced while iterating.
    ``max_uncompressed`` bounds the total unpacked size of an XLSX.

    ``lenient`` yields a row that doesn't fit the header as a :class:`MalformedRow` (the row's error, the
    others go on) instead of raising.

    Raises TabularError for anything wrong with the file itself.
    """
    start = _position(stream)
    head = _read_up_to(stream, _SNIFF_BYTES)
    if not head:
        raise TabularError("the file is empty")
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return _open_xlsx(
            stream,
            head,
            start,
            sheet=sheet,
            max_uncompressed=max_uncompressed,
            max_rows=max_rows,
            max_columns=max_columns,
            max_cell_chars=max_cell_chars,
            lenient=lenient,
        )
    for signature, what in _FOREIGN_SIGNATURES:
        if head.startswith(signature):
            raise _refuse(what)
    text_start = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1024].lower()
    if text_start.startswith(b"<") and any(
        tag in text_start for tag in (b"<html", b"<!doctype", b"<table", b"<?xml")
    ):
        raise _refuse("a web page or XML document (some systems save those with an .xls name)")
    return _open_csv(
        stream,
        head,
        filename,
        encoding=encoding,
        max_rows=max_rows,
        max_columns=max_columns,
        max_cell_chars=max_cell_chars,
        lenient=lenient,
    )


# --------------------------------------------------------------------------
# Reading CSV
# --------------------------------------------------------------------------

# Undecodable bytes are replaced by a lone surrogate, which no valid decoding
# produces, so the line splitter can find exactly where the text went bad.
_BAD_TEXT = "\udfff"
_MARK_ERRORS = "formwork.tabular.mark"


def _mark_undecodable(exc: UnicodeError) -> tuple[str, int]:
    if isinstance(exc, UnicodeDecodeError):
        return _BAD_TEXT, exc.end
    raise exc


codecs.register_error(_MARK_ERRORS, _mark_undecodable)

_ENCODING_LABELS = {
    "utf-8": "UTF-8",
    "utf-8-sig": "UTF-8",
    "gb18030": "GB18030/GBK",
    "utf-16": "UTF-16",
    "utf-16-le": "UTF-16",
    "utf-16-be": "UTF-16",
    "utf-32": "UTF-32",
}


class _UndecodableText(Exception):
    pass


class _LineTooLong(Exception):
    pass


class _Decoder:
    """Incremental decoder that picks UTF-8 or GB18030 at the first non-ASCII bytes.

    Deciding lazily handles files whose first 64 KB happen to be ASCII; the
    decision uses a whole 64 KB chunk, which is plenty to tell the two apart.
    """

    def __init__(self, encoding: str | None) -> None:
        self.encoding = "ascii"
        self.label = "UTF-8"
        self._inner: codecs.IncrementalDecoder | None = None
        if encoding:
            self._use(encoding)

    def _use(self, encoding: str, label: str | None = None) -> codecs.IncrementalDecoder:
        self.encoding = encoding
        self.label = label or _ENCODING_LABELS.get(encoding, encoding)
        self._inner = codecs.getincrementaldecoder(encoding)(errors=_MARK_ERRORS)
        return self._inner

    def _choose(self, data: bytes, final: bool) -> codecs.IncrementalDecoder:
        for candidate in ("utf-8", "gb18030"):
            try:
                codecs.getincrementaldecoder(candidate)().decode(data, final)
            except UnicodeDecodeError:
                continue
            return self._use(candidate)
        return self._use("utf-8", "UTF-8 or GB18030/GBK")

    def decode(self, data: bytes, final: bool) -> str:
        inner = self._inner
        if inner is None:
            if data.isascii():
                return data.decode("ascii")
            inner = self._choose(data, final)
        return inner.decode(data, final)


def _detect_bom_encoding(head: bytes) -> str | None:
    """Encodings that announce themselves (BOM) or are obvious (UTF-16 without BOM)."""
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return "utf-32"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    sample = head[:4096]
    half = len(sample) // 2
    if half >= 2:
        even_nuls = sample[0::2].count(0)
        odd_nuls = sample[1::2].count(0)
        if odd_nuls > 0.3 * half and even_nuls < 0.05 * half:
            return "utf-16-le"
        if even_nuls > 0.3 * half and odd_nuls < 0.05 * half:
            return "utf-16-be"
    return None


_LINE_END_RE = re.compile(r"\r\n?|\n")


def _text_lines(head: bytes, stream: IO[bytes], decoder: _Decoder, max_line_chars: int) -> Iterator[str]:
    """Decode the stream chunk by chunk and yield physical lines with their endings.

    Lines end at \\r\\n, \\r or \\n only (like ``newline=""``), as the csv module
    requires.  At the first undecodable byte the complete lines before it are
    yielded and then _UndecodableText is raised, so the error lands on the row
    that contains the bad byte.
    """
    pending = ""
    data = head
    while True:
        final = not data
        text = decoder.decode(data, final)
        bad_at = text.find(_BAD_TEXT)
        if bad_at >= 0:
            text = text[:bad_at]
        if pending:
            text = pending + text
        # A chunk may end between \r and \n; keep the \r until the next chunk.
        end = len(text) - 1 if (text.endswith("\r") and not final and bad_at < 0) else len(text)
        pos = 0
        for match in _LINE_END_RE.finditer(text, 0, end):
            yield text[pos : match.end()]
            pos = match.end()
        pending = text[pos:]
        if bad_at >= 0:
            raise _UndecodableText(decoder.label)
        if len(pending) > max_line_chars:
            raise _LineTooLong
        if final:
            if pending:
                yield pending
            return
        data = stream.read(_READ_CHUNK) or b""


def _prefetch(lines: Iterator[str], max_lines: int, max_chars: int) -> tuple[list[str], Iterator[str]]:
    """Take the first lines for delimiter sniffing; return them and an iterator replaying everything."""
    sample: list[str] = []
    size = 0
    failure: Exception | None = None
    try:
        for line in lines:
            sample.append(line)
            size += len(line)
            if len(sample) >= max_lines or size >= max_chars:
                break
    except (_UndecodableText, _LineTooLong) as exc:
        failure = exc

    def replay() -> Iterator[str]:
        yield from sample
        if failure is not None:
            raise failure
        yield from lines

    return sample, replay()


_DELIMITERS = (",", "\t", ";", "|")


def _guess_delimiter(sample: list[str], filename: str | None) -> str:
    """Pick the delimiter under which the sample looks most like a table.

    csv.Sniffer guesses from character frequencies, fails outright on
    one-column files and is easily fooled by decimal commas, so instead each
    candidate is tried with the real parser and ranked by: does it split the
    header into several columns; the share of rows no wider than the header;
    the share of rows exactly as wide; the header width.  A ragged row thus
    cannot hide the real delimiter (the reader then reports that row), while
    a one-column file with commas inside values stays one column.  Ties go to
    the usual delimiter (tab first for .tsv/.tab files).
    """
    order = list(_DELIMITERS)
    if filename and filename.lower().endswith((".tsv", ".tab")):
        order.remove("\t")
        order.insert(0, "\t")

    # Lines of nothing but delimiters are blank whatever the delimiter is.
    lines = [line for line in sample if line.strip("".join(_DELIMITERS) + " \r\n")]

    def score(delimiter: str) -> tuple[bool, float, float, int, int]:
        preference = -order.index(delimiter)
        try:
            records = [r for r in csv.reader(lines, delimiter=delimiter) if any(c.strip() for c in r)]
        except csv.Error:
            return (False, 0.0, 0.0, 0, preference)
        widths = []
        for record in records:
            while record and not record[-1].strip():
                record.pop()
            widths.append(len(record))
        if not widths:
            return (False, 0.0, 0.0, 0, preference)
        header, data = widths[0], widths[1:] or [widths[0]]
        fit = sum(w <= header for w in data) / len(data)
        exact = sum(w == header for w in data) / len(data)
        return (header > 1, fit, exact, header, preference)

    return max(order, key=score)


def _csv_records(
    reader: Iterator[list[str]], decoder: _Decoder, max_cell_chars: int
) -> Iterator[tuple[int, list[CellValue]]]:
    """Number CSV records like spreadsheet rows, skip blank ones, map errors to rows."""
    row = 0
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except _UndecodableText as exc:
            raise _row_error(
                row + 1,
                f'the file is not valid {exc.args[0]} text; please save it as "CSV UTF-8" and try again',
            ) from None
        except _LineTooLong:
            raise _row_error(row + 1, "the line is far too long; is this really a CSV file?") from None
        except csv.Error as exc:
            if "field larger than field limit" in str(exc):
                limit = min(max_cell_chars, csv.field_size_limit())
                raise _row_error(
                    row + 1,
                    f"a cell is longer than {limit:,} characters (maybe a quote mark is never closed)",
                ) from None
            raise _row_error(row + 1, f"the CSV text is malformed ({exc})") from None
        row += 1
        if any(cell.strip() for cell in record):
            yield row, [cell if cell else None for cell in record]


def _open_csv(
    stream: IO[bytes],
    head: bytes,
    filename: str | None,
    *,
    encoding: str | None,
    max_rows: int | None,
    max_columns: int,
    max_cell_chars: int,
    lenient: bool = False,
) -> TabularReader:
    if encoding is not None:
        try:
            encoding = codecs.lookup(encoding).name
        except LookupError:
            raise TabularError(f'"{encoding}" is not a known text encoding') from None
    else:
        encoding = _detect_bom_encoding(head)
        if encoding is None and b"\x00" in head:
            raise _refuse("not a spreadsheet or a text file")
    decoder = _Decoder(encoding)
    lines = _text_lines(head, stream, decoder, max_line_chars=max(10 * max_cell_chars, _READ_CHUNK))
    sample, lines = _prefetch(lines, max_lines=200, max_chars=_SNIFF_BYTES)
    text = "".join(sample)[:4096]
    controls = sum(1 for ch in text if ch < " " and ch not in "\t\r\n\f\v")
    if controls > max(4, len(text) // 100):
        raise _refuse("not a spreadsheet or a text file")
    delimiter = _guess_delimiter(sample, filename)
    reader = csv.reader(lines, delimiter=delimiter, quotechar='"', doublequote=True, strict=False)
    header, rows = _split_header(
        _csv_records(reader, decoder, max_cell_chars),
        "the file is empty",
        max_rows,
        max_columns,
        max_cell_chars,
        lenient,
    )
    return TabularReader(header=header, format="csv", delimiter=delimiter, _rows=rows, _decoder=decoder)


# --------------------------------------------------------------------------
# Reading XLSX
# --------------------------------------------------------------------------


@contextmanager
def _quiet_openpyxl() -> Iterator[None]:
    """Silence openpyxl's chatter about features it drops (data validation,
    missing styles, …): irrelevant for reading values, yet fatal under
    warnings-as-errors.  Only warnings raised from openpyxl modules are hit."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"openpyxl(\.|$)")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"openpyxl(\.|$)")
        yield


def _position(stream: IO[bytes]) -> int | None:
    """Where a seekable stream starts, so an XLSX can be re-read from there."""
    try:
        return stream.tell() if stream.seekable() else None
    except (OSError, ValueError, AttributeError):
        return None


def _seekable_copy(
    stream: IO[bytes], head: bytes, start: int | None, limit: int
) -> tuple[IO[bytes], Callable[[], None] | None]:
    """ZIP needs random access; spool non-seekable uploads to a temporary file."""
    if start is not None:
        stream.seek(start)
        return stream, None
    spool = tempfile.SpooledTemporaryFile(max_size=16 * 1024 * 1024)
    size = len(head)
    spool.write(head)
    while chunk := stream.read(_READ_CHUNK):
        size += len(chunk)
        if size > limit:
            spool.close()
            raise TabularError(f"the file is larger than {limit // (1024 * 1024)} MB")
        spool.write(chunk)
    spool.seek(0)
    return spool, spool.close


def _check_zip(archive: IO[bytes], max_uncompressed: int) -> None:
    """Refuse ZIP bombs, encrypted and non-workbook archives from the central directory alone."""
    start = archive.tell()
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError):
        raise TabularError(
            "the Excel file is damaged or incomplete; please save it again and retry"
        ) from None
    finally:
        archive.seek(start)
    if len(infos) > _MAX_ZIP_MEMBERS:
        raise _refuse(f"an archive with {len(infos):,} parts, far more than a workbook has")
    total = 0
    for info in infos:
        if info.flag_bits & 0x1:
            raise TabularError("the Excel file is password-protected; please remove the password and retry")
        total += info.file_size
        if info.file_size > _RATIO_CHECK_MIN_SIZE and info.file_size > _MAX_COMPRESSION_RATIO * max(
            info.compress_size, 1
        ):
            raise TabularError("the Excel file is not a normal workbook (it unpacks to an absurd size)")
    if total > max_uncompressed:
        raise TabularError(
            f"the Excel file unpacks to more than {max_uncompressed // (1024 * 1024)} MB; "
            "please split it or upload a CSV file"
        )
    names = {info.filename for info in infos}
    if "xl/workbook.bin" in names:
        raise _refuse('an Excel binary workbook (.xlsb); please save it as "Excel Workbook (.xlsx)"')
    if "xl/workbook.xml" not in names:
        if "mimetype" in names or "content.xml" in names:
            raise _refuse('an OpenDocument file (.ods); please save it as "Excel Workbook (.xlsx)"')
        if "word/document.xml" in names:
            raise _refuse("a Word document")
        if "ppt/presentation.xml" in names:
            raise _refuse("a PowerPoint presentation")
        raise _refuse("a ZIP archive, not an Excel workbook")


def _xlsx_value(cell: object) -> CellValue:
    """openpyxl values → the plain types this module promises.

    Dates come back from openpyxl as midnight datetimes; a cell formatted as a
    date only becomes a ``date``.  Times and durations, which have no place in
    the promised types, become text such as "13:45:00".
    """
    value = getattr(cell, "value", None)
    if value is None or isinstance(value, bool | int | float | str):
        return value if value != "" else None
    if isinstance(value, datetime):
        if value.time() == time(0):
            if is_datetime(getattr(cell, "number_format", None)) == "date":
                return value.date()
        return value
    if isinstance(value, date):
        return value
    if isinstance(value, time):
        return value.isoformat()
    if isinstance(value, timedelta):
        seconds = int(value.total_seconds())
        sign = "-" if seconds < 0 else ""
        hours, rest = divmod(abs(seconds), 3600)
        return f"{sign}{hours}:{rest // 60:02d}:{rest % 60:02d}"
    return str(value)


def _batched_quietly(rows: Iterator[_T]) -> Iterator[_T]:
    """Pull from openpyxl in batches, each inside _quiet_openpyxl.

    The warnings context must not stay open across ``yield`` (the consumer's
    code would run inside it), and entering it per row would be wasteful.
    """
    while True:
        with _quiet_openpyxl():
            batch = list(itertools.islice(rows, _OPENPYXL_BATCH))
        if not batch:
            return
        yield from batch


def _xlsx_records(sheet_rows: Iterator[Sequence[object]], close: Callable[[], None]) -> _RawRows:
    row = 0
    try:
        batches = _batched_quietly(sheet_rows)
        while True:
            try:
                cells = next(batches)
            except StopIteration:
                return
            except Exception as exc:
                # openpyxl surfaces corrupt XML/ZIP data as assorted exception types.
                raise TabularError(
                    f"the Excel sheet is damaged somewhere after row {row} and cannot be read further"
                ) from exc
            row += 1
            values = [_xlsx_value(cell) for cell in cells]
            if any(not _is_blank(value) for value in values):
                yield row, values
    finally:
        close()


def _open_xlsx(
    stream: IO[bytes],
    head: bytes,
    start: int | None,
    *,
    sheet: str | None,
    max_uncompressed: int,
    max_rows: int | None,
    max_columns: int,
    max_cell_chars: int,
    lenient: bool = False,
) -> TabularReader:
    archive, close_archive = _seekable_copy(stream, head, start, max_uncompressed)
    closers: list[Callable[[], None]] = [close_archive] if close_archive else []

    def close_all() -> None:
        while closers:
            closers.pop()()

    try:
        _check_zip(archive, max_uncompressed)
        try:
            with _quiet_openpyxl():
                workbook = load_workbook(archive, read_only=True, data_only=True, keep_links=False)
        except Exception as exc:
            # load_workbook reports bad input as KeyError, ValueError, XML errors, …
            raise TabularError(
                "the Excel file could not be read; it may be damaged. Please open it in Excel, "
                "save it as .xlsx again and retry"
            ) from exc
        closers.append(workbook.close)
        if sheet is None:
            if not workbook.worksheets:
                raise TabularError("the workbook has no worksheets")
            worksheet = workbook.worksheets[0]
        elif sheet in workbook.sheetnames and _is_worksheet(workbook[sheet]):
            worksheet = workbook[sheet]
        else:
            names = ", ".join(f'"{ws.title}"' for ws in workbook.worksheets)
            raise TabularError(f'the workbook has no sheet named "{sheet}" (its sheets are {names})')
        # Stored dimensions are often wrong (e.g. A1:XFD1048576); without them
        # openpyxl returns each row only as wide as its last stored cell.
        worksheet.reset_dimensions()
        raw = _xlsx_records(worksheet.iter_rows(), close_all)
        header, rows = _split_header(
            raw, f'the sheet "{worksheet.title}" is empty', max_rows, max_columns, max_cell_chars, lenient
        )
    except BaseException:
        close_all()
        raise
    return TabularReader(
        header=header, format="xlsx", sheet=worksheet.title, _rows=rows, _closers=[close_all]
    )


def _is_worksheet(candidate: object) -> bool:
    """Chartsheets share the name space but hold no cells."""
    return hasattr(candidate, "iter_rows")


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------

# the full-width forms (＝ ＋ － ＠) too: spreadsheet apps in CJK locales read them as the ASCII ones
_FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def neutralize(value: object) -> object:
    """Defuse text that a spreadsheet app would run as a formula ("CSV injection").

    Strings starting with = + - @ (or their full-width forms) tab or carriage return get a leading
    apostrophe; everything else, including negative numbers, is unchanged.
    """
    return _neutralize_text(value) if isinstance(value, str) else value


def _neutralize_text(text: str) -> str:
    return "'" + text if text.startswith(_FORMULA_TRIGGERS) else text


def _plain_text(value: object) -> str:
    """Text form of a value as it should read in a CSV cell (before neutralizing)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, dict) and "display" in value:
        return _plain_text(value["display"])
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(_plain_text(item) for item in value)
    return str(value)


def _csv_cell(value: object) -> str:
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        return str(value)
    return _neutralize_text(_plain_text(value))


def write_csv(header: list[str], rows: Iterable[Sequence[object]]) -> Iterator[bytes]:
    """Stream a CSV export as UTF-8 chunks of roughly 64 KB.

    Starts with a BOM so Excel opens Chinese text correctly; CRLF line ends;
    None → empty, bools → TRUE/FALSE, dates → ISO text (aware datetimes keep
    their offset), lists → "a, b", {"display": x} → x; every text cell goes
    through :func:`neutralize`.  Unencodable lone surrogates become "?"
    rather than breaking a download halfway.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([_csv_cell(name) for name in header])
    yield codecs.BOM_UTF8 + buffer.getvalue().encode("utf-8", errors="replace")
    buffer.seek(0)
    buffer.truncate()
    for row in rows:
        writer.writerow([_csv_cell(value) for value in row])
        if buffer.tell() >= _READ_CHUNK:
            yield buffer.getvalue().encode("utf-8", errors="replace")
            buffer.seek(0)
            buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue().encode("utf-8", errors="replace")


_ILLEGAL_XML_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def _xlsx_text(text: str) -> str:
    """Neutralized text minus the control characters XML cannot carry, cut to Excel's cell limit."""
    cleaned = _ILLEGAL_XML_CHARS.sub("", _neutralize_text(text))
    # XML parsers turn a bare CR into LF anyway; do it here so the result is predictable.
    return cleaned.replace("\r\n", "\n").replace("\r", "\n")[:_EXCEL_MAX_CELL_CHARS]


_XlsxValue = bool | int | float | Decimal | str | datetime | date | time | timedelta | None


def _xlsx_cell(value: object) -> _XlsxValue:
    """Python value → what openpyxl should store: real numbers, booleans and dates."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        # Excel keeps 15 significant digits; longer integers (IDs) stay exact as text.
        return value if abs(value) < _EXCEL_EXACT_INT else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Decimal):
        return value if value.is_finite() else str(value)
    if isinstance(value, datetime | time):
        # Excel has no time zones: keep the wall-clock time the caller chose.
        return value.replace(tzinfo=None)
    if isinstance(value, date | timedelta):
        return value
    return _xlsx_text(_plain_text(value))


_SHEET_TITLE_FORBIDDEN = re.compile(r"[\[\]:*?/\\]")


def _sheet_title(title: str) -> str:
    """Excel sheet names: at most 31 characters, none of []:*?/\\, no edge apostrophes."""
    cleaned = _SHEET_TITLE_FORBIDDEN.sub("_", title).strip().strip("'")[:31].strip()
    return cleaned or "Sheet1"


def write_xlsx(
    header: list[str],
    rows: Iterable[Sequence[object]],
    sheet_title: str = "Sheet1",
    *,
    out: IO[bytes],
) -> None:
    """Write an XLSX export to the binary stream ``out`` (BytesIO, file, response).

    Rows stream through openpyxl's write-only mode (buffered in a temporary
    file, not memory).  Numbers, booleans and dates stay typed; aware
    datetimes keep their wall-clock time; integers of 16+ digits are written
    as text so no digit is lost; text is neutralized, stripped of characters
    XML forbids and cut to Excel's 32,767-character cell limit.  The header
    row is bold and frozen.  More than 1,048,575 rows or 16,384 columns
    raise TabularError, since Excel could not open the result.
    """
    if len(header) > _EXCEL_MAX_COLUMNS:
        raise TabularError(f"an Excel sheet holds at most {_EXCEL_MAX_COLUMNS:,} columns")
    # Only openpyxl's own calls run under the warnings filter, not the caller's row source.
    with _quiet_openpyxl():
        workbook = Workbook(write_only=True)
        worksheet = workbook.create_sheet(title=_sheet_title(sheet_title))
    worksheet.freeze_panes = "A2"
    bold = Font(bold=True)
    header_cells = []
    for name in header:
        cell = WriteOnlyCell(worksheet, value=_xlsx_text(name))
        cell.font = bold
        header_cells.append(cell)
    try:
        worksheet.append(header_cells)
        for count, row in enumerate(rows, 1):
            if count >= _EXCEL_MAX_ROWS:
                raise TabularError(
                    f"an Excel sheet holds at most {_EXCEL_MAX_ROWS - 1:,} data rows; "
                    "please export as CSV instead"
                )
            values = [_xlsx_cell(value) for value in row]
            if len(values) > _EXCEL_MAX_COLUMNS:
                raise TabularError(f"an Excel sheet holds at most {_EXCEL_MAX_COLUMNS:,} columns")
            worksheet.append(values)
        with _quiet_openpyxl():
            workbook.save(out)
    except BaseException:
        _discard_write_only(worksheet)
        raise


def _discard_write_only(worksheet: Any) -> None:
    """Best-effort cleanup after a failed export, while the real error propagates.

    openpyxl deletes a write-only sheet's temporary file only on save or at
    interpreter exit, so a long-running server would leak one per failure.
    """
    with suppress(Exception):
        worksheet.close()
    writer = getattr(worksheet, "_writer", None)
    if writer is not None:
        with suppress(OSError, ValueError):
            writer.cleanup()
