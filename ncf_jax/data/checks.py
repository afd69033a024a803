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
_CHUNK_BYTES = 32 << 20  # bytes scanned at once by `odd_integers`: bounds its temporaries
# Bytes pandas' integer parser accepts around or inside a number ("1.0", " 7", "+3", "1e3").
_ODD = np.zeros(256, bool)
_ODD[list(b" .+eE")] = True


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


def in_range(path, frame: pd.DataFrame, column: str, low, high, *, skip_lines: int = 0) -> None:
    """DataError at the first row whose `column` lies outside [low, high]."""
    values = frame[column].to_numpy()
    refuse(path, (values < low) | (values > high), f"{column} outside {_show(low)}..{_show(high)}",
           values=values, skip_lines=skip_lines)  # fmt: skip


def odd_integers(path, data: bytes, columns, *, sep: str, skip_lines: int = 0) -> int:
    """Counts (and logs) the integer fields of a parsed file not written as plain integers.

    pandas reads "1.0", " 7", "+3" and "1e3" in an integer column as the integers they denote;
    this finds them by scanning the bytes (in chunks, so memory stays small) and logs their
    count and first line. `data` must be well formed (every line has every field), as a
    successful parse leaves it.
    """
    kinds = [kind for _, kind in columns]
    int_columns = np.array([kind == "int" for kind in kinds] + [False])
    buf = np.frombuffer(data, np.uint8)
    if not int_columns.any() or not _ODD[buf].any():
        return 0
    newline, sep_byte = ord("\n"), ord(sep)
    count, first, line0, start = 0, None, 0, 0
    while start < len(buf):
        end = data.find(b"\n", start + _CHUNK_BYTES) + 1 or len(buf)  # whole lines
        chunk = buf[start:end]
        is_newline, is_sep = chunk == newline, chunk == sep_byte
        line = np.cumsum(is_newline) - is_newline  # line of each byte, within the chunk
        seps = np.cumsum(is_sep)
        seps_before_line = np.concatenate([[0], seps[is_newline]])[line]
        column = np.minimum(seps - is_sep - seps_before_line, len(kinds))
        odd = _ODD[chunk] & int_columns[column] & (line + line0 >= skip_lines)
        if odd.any():
            lines = np.unique(line[odd]) + line0
            count += len(lines)
            first = int(lines[0]) + 1 if first is None else first
        line0 += int(is_newline.sum())
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
