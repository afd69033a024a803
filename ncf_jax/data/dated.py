"""Stage: raw file -> dataset arrays, for a "csv:" rating file whose time is a date column
(the Netflix-prize layout: user, item, rating, date such as 2005-09-06).

The data layer's CSV reader takes integer timestamps only; this reads the ids and ratings with
it, parses the date column (ISO 8601, UTC) into seconds since the epoch and runs the same
`splits.prepare`, so every split ("temporal" included) works. The result is not cached.
"""

from __future__ import annotations

import io
import pathlib

import numpy as np
import pandas as pd

from ncf_jax.config import DataConfig
from ncf_jax.data import dataset, readers
from ncf_jax.data.types import InteractionData

_SHOW = 5


def read_dates(path, column: str, *, sep: str = ",") -> np.ndarray:
    """[n] int64 seconds since 1970-01-01 UTC of a date column; DataError cites bad lines."""
    data = readers.read_bytes(path)
    frame = pd.read_csv(io.BytesIO(data), sep=sep, dtype=str, keep_default_na=False)
    if column not in frame.columns:
        raise readers.DataError(path, f"no column {column!r} in header {list(frame.columns)}", 1)
    parsed = pd.to_datetime(frame[column], errors="coerce", utc=True, format="ISO8601")
    bad = parsed.isna().to_numpy()
    if bad.any():
        rows = np.flatnonzero(bad)[:_SHOW]
        cited = ", ".join(f"line {r + 2}: {frame[column].iloc[r]!r}" for r in rows)
        raise readers.DataError(
            path,
            f"column {column!r}: {int(bad.sum())} row(s) not a date ({cited})",
            int(rows[0]) + 2,
        )
    epoch = pd.Timestamp(0, tz="UTC")
    return ((parsed - epoch) // pd.Timedelta(seconds=1)).to_numpy(np.int64)


def load_dated_csv(cfg: DataConfig, date_col: str) -> InteractionData:
    """The split dataset of `cfg` ("csv:<path>", csv_timestamp_col unset) timed by date_col."""
    if not cfg.dataset.startswith("csv:") or cfg.csv_timestamp_col:
        raise ValueError(
            "--csv_date_col needs --dataset=csv:<path> and an empty --csv_timestamp_col"
        )
    path = pathlib.Path(cfg.dataset[4:]).expanduser()
    table = readers.read_csv_interactions(
        path,
        user_col=cfg.csv_user_col,
        item_col=cfg.csv_item_col,
        rating_col=cfg.csv_rating_col,
        timestamp_col=None,
        sep=cfg.csv_sep,
    )
    table["timestamp"] = read_dates(path, date_col, sep=cfg.csv_sep)
    return dataset.prepare(table, cfg, name=cfg.dataset)
