"""Stage: raw file -> raw arrays. A vectorised parser of the Netflix Prize text layout.

Rating files (`combined_data_*.txt`, or the older `training_set/mv_*.txt`) are blocks of one
`MovieID:` line followed by `CustomerID,Rating,YYYY-MM-DD` lines; `probe.txt` is the same
with bare `CustomerID` lines. A Python loop per line would parse about 0.5 M lines/s; here a
whole block of files is one uint8 array and every field is read by fixed offsets from the line
ends (the rating is one digit and the date ten characters, so only the customer id varies in
length), which parses several million lines per second. Every byte is checked: the first bad
line is cited as `FILE:LINE: problem`, with the problem worked out on that one line.
"""

from __future__ import annotations

import pathlib
import re

import numpy as np
from absl import logging

from ncf_jax.data.readers import DataError, read_bytes

_NL, _COLON, _COMMA, _DASH, _ZERO = 10, ord(":"), ord(","), ord("-"), ord("0")
MAX_ID_DIGITS = 9  # ids fit int32
_RATING_LINE = re.compile(r"(\d{1,9}),(\d),(\d{4})-(\d\d)-(\d\d)")
_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], np.int64)


class Block:
    """The bytes of several files, each ending in one newline, and where each file starts."""

    def __init__(self, paths):
        self.paths = [pathlib.Path(p) for p in paths]
        parts = []
        for path in self.paths:
            data = read_bytes(path)  # DataError for a missing or empty file
            if b"\r" in data:  # files copied through Windows
                logging.info("%s: %d Windows line ends read as '\\n'", path, data.count(b"\r\n"))
                data = data.replace(b"\r\n", b"\n")
            parts.append(data + b"\n")
        self.offsets = np.cumsum([0] + [len(p) for p in parts])
        self.buf = np.frombuffer(b"".join(parts), np.uint8)
        self.ends = np.flatnonzero(self.buf == _NL)  # one '\n' per line
        self.starts = np.concatenate([[0], self.ends[:-1] + 1])

    def fail(self, line: int, problem: str):
        """Raise a DataError for line index `line` of the block, cited by file and line."""
        start = int(self.starts[line])
        file = int(np.searchsorted(self.offsets, start, side="right")) - 1
        first_line = int(np.searchsorted(self.starts, self.offsets[file]))
        raise DataError(self.paths[file], problem, line - first_line + 1)

    def text(self, line: int) -> str:
        raw = self.buf[self.starts[line] : self.ends[line]].tobytes()
        return raw.decode("latin-1")

    def file_first_lines(self) -> np.ndarray:
        return np.searchsorted(self.starts, self.offsets[:-1])


def _digits(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray):
    """(values int32, ok bool) of the decimal numbers buf[starts:ends], right-aligned."""
    length = ends - starts
    ok = (length >= 1) & (length <= MAX_ID_DIGITS)
    values = np.zeros(len(starts), np.int32)
    for k in range(min(int(length.max(initial=0)), MAX_ID_DIGITS)):  # only as wide as needed
        present = k < length
        digit = buf[np.where(present, ends - 1 - k, 0)] - np.uint8(_ZERO)  # uint8 wraps
        ok &= ~present | (digit < 10)
        values += np.where(present, digit, 0).astype(np.int32) * np.int32(10**k)
    return values, ok


def _number(buf, at: np.ndarray, width: int):
    """(values int32, ok bool) of fixed-width decimal fields starting at byte positions `at`."""
    values, ok = np.zeros(len(at), np.int32), np.ones(len(at), bool)
    for k in range(width):
        digit = buf[at + k] - np.uint8(_ZERO)
        ok &= digit < 10
        values = values * np.int32(10) + digit
    return values, ok


def days_since_epoch(year, month, day) -> np.ndarray:
    """Days from 1970-01-01 of proleptic Gregorian dates (H. Hinnant's days_from_civil)."""
    year = year - (month <= 2)
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + np.where(month > 2, -3, 9)) + 2) // 5 + day - 1
    return era * 146_097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719_468


def _valid_dates(year, month, day) -> np.ndarray:
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    good_month = (month >= 1) & (month <= 12)
    last = _DAYS_IN_MONTH[np.where(good_month, month, 0)] + (good_month & (month == 2) & leap)
    return good_month & (day >= 1) & (day <= last)


def _date_tables() -> tuple[np.ndarray, np.ndarray]:
    """(days int32, valid bool) indexed by (year - FIRST_YEAR) * 372 + (month - 1) * 31 + day - 1:
    one gather per line replaces a dozen array operations of calendar arithmetic."""
    year, rest = np.divmod(np.arange((LAST_YEAR - FIRST_YEAR + 1) * 372), 372)
    month, day = np.divmod(rest, 31)
    year, month, day = year + FIRST_YEAR, month + 1, day + 1
    valid = _valid_dates(year, month, day)
    return np.where(valid, days_since_epoch(year, month, day), 0).astype(np.int32), valid


FIRST_YEAR, LAST_YEAR = 1800, 2199
_DAYS, _VALID = _date_tables()


def _dates(buf, ends: np.ndarray):
    """(days since 1970-01-01 int32, ok bool) of the YYYY-MM-DD fields ending at `ends`."""
    year, ok = _number(buf, ends - 10, 4)
    month, month_ok = _number(buf, ends - 5, 2)
    day, day_ok = _number(buf, ends - 2, 2)
    ok &= month_ok & day_ok & (buf[ends - 3] == _DASH) & (buf[ends - 6] == _DASH)
    ok &= (year >= FIRST_YEAR) & (year <= LAST_YEAR) & (month >= 1) & (month <= 12)
    ok &= (day >= 1) & (day <= 31)
    key = np.where(ok, (year - FIRST_YEAR) * 372 + (month - 1) * 31 + day - 1, 0)
    ok &= _VALID[key]
    return _DAYS[key], ok


def _movie_headers(block: Block, *, what: str):
    """(is_header [lines] bool, movie of each line [lines] int64) from the `MovieID:` lines."""
    buf, starts, ends = block.buf, block.starts, block.ends
    is_header = buf[np.maximum(ends - 1, 0)] == _COLON
    is_header &= ends > starts
    first = block.file_first_lines()
    if not is_header[first].all():
        line = int(first[np.flatnonzero(~is_header[first])[0]])
        block.fail(
            line, f"a {what} file must start with a 'MovieID:' line, found {block.text(line)!r}"
        )
    heads = np.flatnonzero(is_header)
    movies, ok = _digits(buf, starts[heads], ends[heads] - 1)
    if not ok.all():
        line = int(heads[np.flatnonzero(~ok)[0]])
        block.fail(line, f"expected 'MovieID:' with a 1-9 digit id, found {block.text(line)!r}")
    movie_of_line = movies[np.cumsum(is_header) - 1]  # every line follows a header (checked)
    return is_header, movie_of_line


def _rating_problem(text: str) -> str:
    """Why one line is not `CustomerID,Rating,YYYY-MM-DD`."""
    if not text:
        return "empty line"
    match = _RATING_LINE.fullmatch(text)
    if not match:
        return f"expected 'MovieID:' or 'CustomerID,Rating,YYYY-MM-DD', found {text!r}"
    if not 1 <= int(match[2]) <= 5:
        return f"rating {match[2]} is not in 1..5"
    year = int(match[3])
    if not FIRST_YEAR <= year <= LAST_YEAR:
        return f"year {year} is outside {FIRST_YEAR}..{LAST_YEAR}"
    return f"date {text.rsplit(',', 1)[1]!r} does not exist"


def parse_ratings(paths) -> dict[str, np.ndarray]:
    """The ratings of Netflix rating files as arrays in file order.

    Returns {"user" int32 CustomerID, "item" int32 MovieID, "rating" int8 1..5,
    "day" int32 days since 1970-01-01}.
    """
    block = Block(paths)
    is_header, movie_of_line = _movie_headers(block, what="rating")
    lines = np.flatnonzero(~is_header)
    buf, s, e = block.buf, block.starts[lines], block.ends[lines]
    ok = (e - s >= 14) & (buf[e - 11] == _COMMA) & (buf[e - 13] == _COMMA)
    rating = buf[e - 12] - np.uint8(_ZERO)
    ok &= (rating >= 1) & (rating <= 5)
    user, user_ok = _digits(buf, s, e - 13)
    days, date_ok = _dates(buf, e)
    ok &= user_ok & date_ok
    if not ok.all():
        line = int(lines[np.flatnonzero(~ok)[0]])
        block.fail(line, _rating_problem(block.text(line)))
    return {
        "user": user.astype(np.int32),
        "item": movie_of_line[lines].astype(np.int32),
        "rating": rating.astype(np.int8),
        "day": days,
    }


def parse_probe(path) -> dict[str, np.ndarray]:
    """{"user", "item"} int32 (CustomerID, MovieID) pairs of `probe.txt`, in file order."""
    block = Block([path])
    is_header, movie_of_line = _movie_headers(block, what="probe")
    lines = np.flatnonzero(~is_header)
    user, ok = _digits(block.buf, block.starts[lines], block.ends[lines])
    if not ok.all():
        line = int(lines[np.flatnonzero(~ok)[0]])
        text = block.text(line)
        block.fail(line, "empty line" if not text else f"expected a CustomerID, found {text!r}")
    return {"user": user.astype(np.int32), "item": movie_of_line[lines].astype(np.int32)}
