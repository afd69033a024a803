"""Stage: raw file -> raw table. Checks of parsed values against what a format and the arrays can
hold, each finding cited as `FILE:LINE` and either refused (DataError) or logged with its count.

A finding is counted on the rows as read, before anything is dropped, and its log line names
the file, the count and the first line, so a user can find every case. `docs/input-validation.md`
lists what each reader checks and what it does with each finding.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from absl import logging

from ncf_jax.errors import DataError

INT32_MAX = np.iinfo(np.int32).max
_CHUNK_BYTES = 16 << 20  # bytes scanned at once by `odd_integers`: bounds its temporaries
# Bytes pandas' integer parser accepts around or inside a number ("1.0", " 7", "+3", "1e3").
_ODD_BYTES = tuple(b" .+eE")


def where(path, rows: np.ndarray, skip_lines: int = 0) -> tuple[int, str]:
    """(count, "FILE:LINE") of the rows marked in boolean `rows` (line = row + 1 + skip_lines)."""
    first = int(np.flatnonzero(rows)[0]) + 1 + skip_lines
    return int(rows.sum()), f"{path}:{first}"


def _show(value) -> str:
    value = value.item() if hasattr(value, "item") else value
    return (
        repr(value)
        if isinstance(value, str)
        else f"{value:g}"
        if isinstance(value, float)
        else str(value)
    )


def refuse(path, rows: np.ndarray, problem: str, *, values=None, skip_lines: int = 0) -> None:
    """DataError at the first row marked in `rows` (with its value and the count), if any."""
    if not rows.any():
        return
    row = int(np.flatnonzero(rows)[0])
    count = int(rows.sum())
    value = "" if values is None else f" {_show(np.asarray(values)[row])}:"
    more = f" ({count} such rows)" if count > 1 else ""
    raise DataError(path, f"{value.lstrip()} {problem}{more}".strip(), row + 1 + skip_lines)


def report(path, rows: np.ndarray, what: str, *, warn: bool = True, skip_lines: int = 0) -> int:
    """Logs `N <what> (first at FILE:LINE)` when `rows` marks any; returns the count."""
    if not rows.any():
        return 0
    count, first = where(path, rows, skip_lines)
    (logging.warning if warn else logging.info)("%s: %d %s (first at %s)", path, count, what, first)
    return count


def in_range(path, frame: pd.DataFrame, column: str, low, high=None, *, skip_lines: int = 0):
    """DataError at the first row whose `column` lies outside [low, high] (high None: no bound)."""
    values = frame[column].to_numpy()
    bad = (values < low) | (values > high if high is not None else False)
    what = f"outside {_show(low)}..{_show(high)}" if high is not None else f"below {_show(low)}"
    refuse(path, bad, f"{column} {what}", values=values, skip_lines=skip_lines)


def _odd_lines(chunk: np.ndarray, num_columns: int, int_columns, sep: int) -> np.ndarray | None:
    """[lines] bool: the lines of `chunk` (whole lines) with an odd byte in an integer field;
    None when a line has another number of separators (then the chunk is not checked)."""
    odd = chunk == _ODD_BYTES[0]
    for byte in _ODD_BYTES[1:]:  # a few comparisons beat a lookup table on a big array
        odd |= chunk == byte
    where = np.flatnonzero(odd)
    ends = np.flatnonzero(chunk == ord("\n"))
    if not len(ends) or ends[-1] != len(chunk) - 1:
        ends = np.append(ends, len(chunk))  # the file's last line
    if not len(where):
        return np.zeros(len(ends), bool)
    seps = np.flatnonzero(chunk == sep)
    if len(seps) != len(ends) * (num_columns - 1):
        return None
    line = np.searchsorted(ends, where)  # the line of each odd byte
    column = np.searchsorted(seps, where) - line * (num_columns - 1)  # separators before it
    lines = np.zeros(len(ends), bool)
    lines[line[np.isin(column, int_columns)]] = True
    return lines


def odd_integers(path, data: bytes, columns, *, sep: str, skip_lines: int = 0) -> int:
    """Counts (and logs) the lines of a parsed file with an integer field not written as a plain
    integer.

    pandas reads "1.0", " 7", "+3" and "1e3" in an integer column as the integers they denote;
    this finds them in the bytes, a chunk of whole lines at a time (so memory stays small), by
    the fields' bounds, and logs their count and first line. `data` must be well formed, as a
    successful parse leaves it.
    """
    int_columns = [j for j, (_, kind) in enumerate(columns) if kind == "int"]
    if not int_columns:
        return 0
    buf = np.frombuffer(data, np.uint8)
    count, first, line0, start = 0, None, 0, 0
    while start < len(buf):
        end = data.find(b"\n", start + _CHUNK_BYTES) + 1 or len(buf)  # whole lines
        lines = _odd_lines(buf[start:end], len(columns), int_columns, ord(sep))
        if lines is not None and len(lines):
            lines[: max(skip_lines - line0, 0)] = False
            if lines.any():
                count += int(lines.sum())
                first = first or line0 + int(np.flatnonzero(lines)[0]) + 1
        line0 += data.count(b"\n", start, end)
        start = end
    if count:
        logging.warning("%s: %d lines hold an integer written as '1.0', ' 7', '+3' or "
                        "'1e3', read as the integer it denotes (first at %s:%d)", path, count,
                        path, first)  # fmt: skip
    return count


def text_ids(path, values: np.ndarray, column: str, *, skip_lines: int = 1):
    """Ids of a text column: surrounding whitespace stripped (logged), then int64 when every id
    is a plain integer, else the strings themselves; numbers that are not plain integers
    ("1.0", "007") keep the whole column as text, logged with their count.

    "007" stays a string: converting it would merge it with a distinct id "7".
    """
    strings = np.asarray(values, dtype=str)
    stripped = np.char.strip(strings)
    report(path, stripped != strings, f"{column} ids with surrounding whitespace, stripped",
           skip_lines=skip_lines)  # fmt: skip
    strings = stripped
    numbers = pd.to_numeric(pd.Series(strings), errors="coerce").to_numpy(np.float64)
    numeric = ~np.isnan(numbers)
    plain = numeric & (np.abs(numbers) < 2.0**62) & (numbers == np.round(numbers))
    plain[plain] = numbers[plain].astype(np.int64).astype(str) == strings[plain]
    if plain.all():
        return numbers.astype(np.int64)
    report(path, numeric & ~plain, f"{column} ids are numbers not written as plain integers "
           "(e.g. '1.0', '007'): the column is read as text, so '1.0' and '1' are two ids",
           skip_lines=skip_lines)  # fmt: skip
    return strings
