"""Stage: raw file -> raw table. Vectorised readers that report bad input by file and line.

Every reader returns a pandas DataFrame with the columns `user, item, rating, timestamp`
(int64 or string ids as in the source, float32 ratings, int64 timestamps) and the ORIGINAL ids.

Parsing has two paths. The fast path hands the whole file to pandas' C parser with fixed dtypes.
When that fails, or leaves a hole (NaN) in a column that must be filled, a slow diagnosis path
walks the lines with the `csv` module to find the first offending one, so the `DataError` names
the file, the 1-based line (as an editor shows it) and the problem. Nothing is dropped silently.
"""

from __future__ import annotations

import codecs
import csv
import io
import math
import pathlib

import numpy as np
import pandas as pd
from absl import logging

from ncf_jax.data import checks
from ncf_jax.errors import DataError

RAW_COLUMNS = ("user", "item", "rating", "timestamp")
# Column kinds: "int" and "float" must parse, "str" must be non-empty, "str?" may be empty.
_DTYPES = {"int": np.int64, "float": np.float64, "str": str, "str?": str}


def read_bytes(path) -> bytes:
    """The file's bytes without trailing blank lines and without a UTF-8 byte-order mark
    (logged); DataError when missing, unreadable, empty or UTF-16/32 text."""
    path = pathlib.Path(path)
    if path.is_dir():
        raise DataError(path, "is a folder, not a file")
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        data = path.read_bytes().rstrip(b"\r\n")
    except OSError as error:
        raise DataError(path, f"cannot be read ({error.strerror or error})") from None
    if data.startswith(codecs.BOM_UTF8):
        logging.info("%s: skipped a UTF-8 byte-order mark", path)
        data = data[len(codecs.BOM_UTF8) :]
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise DataError(path, "is UTF-16 or UTF-32 text: save it as UTF-8", 1)
    if not data.strip():
        raise DataError(path, "file is empty")
    return data


def _check_field(value: str, kind: str) -> str | None:
    """Why `value` is not a valid `kind`, or None when it is."""
    if kind == "int":
        try:
            number = int(value)
        except ValueError:
            return f"{value!r} is not an integer"
        if not -(2**63) <= number < 2**63:
            return f"{value} does not fit a 64-bit integer"
    elif kind == "float":
        try:
            ok = math.isfinite(float(value))
        except ValueError:
            ok = False
        if not ok:
            return f"{value!r} is not a finite number"
    elif kind == "str" and not value:
        return "is empty"
    return None


def diagnose(path, text: str, columns, *, sep: str, quoted: bool, skip_lines: int = 0):
    """Raise a DataError at the first line of `text` that does not fit `columns`."""
    quoting = csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE
    reader = csv.reader(io.StringIO(text), delimiter=sep, quoting=quoting)
    for row in reader:
        if reader.line_num <= skip_lines:
            continue
        line = reader.line_num
        if not row or row == [""]:
            raise DataError(path, "empty line", line)
        if len(row) != len(columns):
            raise DataError(
                path, f"expected {len(columns)} fields separated by {sep!r}, found {len(row)}", line
            )
        for value, (name, kind) in zip(row, columns, strict=True):
            problem = _check_field(value, kind)
            if problem:
                raise DataError(path, f"column {name!r}: {problem}", line)
    return None


def _complete(frame: pd.DataFrame, columns) -> bool:
    """No hole in a required column and no inf in a float column."""
    required = [name for name, kind in columns if kind != "str?"]
    floats = [name for name, kind in columns if kind == "float"]
    return not frame[required].isna().to_numpy().any() and bool(
        np.isfinite(frame[floats].to_numpy()).all()
    )


def parse_table(
    path,
    columns,
    *,
    sep: str,
    skip_lines: int = 0,
    quoted: bool = False,
    encoding: str = "utf-8",
    data: bytes | None = None,
) -> pd.DataFrame:
    """Parse a delimited file into a DataFrame with fixed column kinds.

    Args:
      path: the file (named in errors; read unless `data` is given).
      columns: sequence of (name, kind), kind in "int", "float", "str", "str?".
      sep: field separator; a multi-character one ("::") is rewritten to a tab first, because
        only the C parser is fast and it takes single characters.
      skip_lines: leading lines to skip (a header).
      quoted: honour CSV double quotes (real CSV files); off for MovieLens' .dat and u.* files,
        whose titles contain bare quote characters.
    """
    data = read_bytes(path) if data is None else data
    if len(sep) > 1:
        data, sep = data.replace(sep.encode(), b"\t"), "\t"
    text_error = None
    try:
        frame = pd.read_csv(
            io.BytesIO(data),
            sep=sep,
            header=None,
            skiprows=skip_lines,
            dtype={i: _DTYPES[kind] for i, (_, kind) in enumerate(columns)},
            engine="c",
            quoting=csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE,
            encoding=encoding,
            skip_blank_lines=False,
            keep_default_na=False,
            na_values={i: [""] for i in range(len(columns))},
        )
        frame.columns = [name for name, _ in columns] + list(frame.columns[len(columns) :])
        if frame.shape[1] == len(columns) and _complete(frame, columns):
            if not quoted:  # quoted fields would shift the columns `odd_integers` counts
                checks.odd_integers(path, data, columns, sep=sep, skip_lines=skip_lines)
            return frame
    except (ValueError, OverflowError, pd.errors.ParserError, UnicodeDecodeError) as error:
        text_error = error
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise DataError(path, f"not valid {encoding} text", line) from error
    diagnose(path, text, columns, sep=sep, quoted=quoted, skip_lines=skip_lines)
    raise DataError(path, f"could not parse ({text_error or 'missing values'})")


def _raw_table(users, items, ratings=None, timestamps=None) -> pd.DataFrame:
    n = len(users)
    return pd.DataFrame(
        {
            "user": users,
            "item": items,
            "rating": np.ones(n, np.float32) if ratings is None else ratings.astype(np.float32),
            "timestamp": np.zeros(n, np.int64) if timestamps is None else timestamps,
        }
    )


_RATING_COLUMNS = (("user", "int"), ("item", "int"), ("rating", "float"), ("timestamp", "int"))
# MovieLens rating files by name: (separator, header lines). One reader serves every release.
_MOVIELENS_FORMATS = {"u.data": ("\t", 0), "ratings.dat": ("::", 0), "ratings.csv": (",", 1)}
# What every MovieLens release holds: ids from 1 (0 tolerated), half stars 0.5-5, Unix seconds.
_MOVIELENS_RANGES = (("user", 0, None), ("item", 0, None), ("rating", 0.5, 5.0),
                     ("timestamp", 0, None))  # fmt: skip


def read_movielens_ratings(path) -> pd.DataFrame:
    """MovieLens `u.data` (100K), `ratings.dat` (1M, 10M) or `ratings.csv` (20M and later)."""
    path = pathlib.Path(path)
    if path.name not in _MOVIELENS_FORMATS:
        raise DataError(path, f"not a MovieLens rating file (expected {list(_MOVIELENS_FORMATS)})")
    sep, header = _MOVIELENS_FORMATS[path.name]
    data = read_bytes(path)
    if header:
        _check_header(path, data, sep, ["userId", "movieId", "rating", "timestamp"])
    frame = parse_table(path, _RATING_COLUMNS, sep=sep, skip_lines=header, data=data)
    for column, low, high in _MOVIELENS_RANGES:
        checks.in_range(path, frame, column, low, high, skip_lines=header)
    return _raw_table(*(frame[c].to_numpy() for c in RAW_COLUMNS))


def _header(path, data: bytes, sep: str) -> list[str]:
    first = data.split(b"\n", 1)[0].decode("utf-8", errors="replace").rstrip("\r")
    return next(csv.reader([first], delimiter=sep))


def _check_header(path, data: bytes, sep: str, expected: list[str]) -> None:
    found = _header(path, data, sep)
    if found != expected:
        raise DataError(path, f"header should be {sep.join(expected)!r}, found {found!r}", 1)


def read_csv_interactions(
    path,
    *,
    user_col: str,
    item_col: str,
    rating_col: str | None,
    timestamp_col: str | None,
    sep: str = ",",
) -> pd.DataFrame:
    """A generic delimited file with a header naming its columns (extra columns are ignored).

    Ids may be strings; they are kept as strings unless every id is an integer. A missing rating
    column means every row is a positive (rating 1.0); a missing timestamp column means 0.
    """
    data = read_bytes(path)
    header = csv_header(path, data, sep)
    wanted = {user_col: "str", item_col: "str", rating_col: "float", timestamp_col: "int"}
    wanted.pop(None, None)
    for name in wanted:
        if name not in header:
            raise DataError(path, f"no column {name!r} in header {header!r}", 1)
    columns = [(name, wanted.get(name, "str?")) for name in header]
    frame = parse_table(path, columns, sep=sep, skip_lines=1, quoted=True, data=data)
    ratings = frame[rating_col].to_numpy() if rating_col else None
    if ratings is not None:
        checks.report(path, ratings < 0, "rows rated below 0, kept (every row is a positive "
                      "unless --rating_threshold)", skip_lines=1)  # fmt: skip
    return _raw_table(
        checks.text_ids(path, frame[user_col].to_numpy(), "user"),
        checks.text_ids(path, frame[item_col].to_numpy(), "item"),
        ratings,
        frame[timestamp_col].to_numpy() if timestamp_col else None,
    )


def csv_header(path, data: bytes, sep: str) -> list[str]:
    """The column names of a delimited file's header; DataError when a name repeats or the
    file has no line after its header."""
    header = _header(path, data, sep)
    twice = sorted({name for name in header if header.count(name) > 1})
    if twice:
        raise DataError(path, f"column(s) {twice} appear twice in the header", 1)
    if b"\n" not in data:
        raise DataError(path, "no data lines after the header", 1)
    return header


def read_dates(path, column: str, *, sep: str = ",") -> np.ndarray:
    """[n] int64 seconds since 1970-01-01 UTC of a date column; DataError cites bad lines."""
    data = read_bytes(path)
    frame = pd.read_csv(io.BytesIO(data), sep=sep, dtype=str, keep_default_na=False)
    if column not in frame.columns:
        raise DataError(path, f"no column {column!r} in header {list(frame.columns)}", 1)
    parsed = pd.to_datetime(frame[column], errors="coerce", utc=True, format="ISO8601")
    bad = parsed.isna().to_numpy()
    if bad.any():
        rows = np.flatnonzero(bad)[:5]
        cited = ", ".join(f"line {r + 2}: {frame[column].iloc[r]!r}" for r in rows)
        raise DataError(
            path,
            f"column {column!r}: {int(bad.sum())} row(s) not a date ({cited})",
            int(rows[0]) + 2,
        )
    epoch = pd.Timestamp(0, tz="UTC")
    return ((parsed - epoch) // pd.Timedelta(seconds=1)).to_numpy(np.int64)
