"""Stage: raw file -> raw table. The Netflix Prize layout: where its files live, its ratings,
its probe split and its movie titles.

Two dataset names read the files of `DATA_DIR/netflix/`:
  "netflix"        every rating of the training set; --split (loo, temporal, random) applies.
  "netflix-probe"  the classic protocol: the ratings listed in probe.txt (1,408,395 in the
                   release; all of them are also in the training set) are the test split and
                   the rest is train. --split, --test_fraction and --test_rating_threshold
                   cannot apply (a UsageError when given); --validation
                   holds out a seeded random sample of the training rows as large as the probe.
Ratings come from `combined_data_1.txt` .. `combined_data_4.txt` (the layout of the common
mirrors) or, when those are absent, from the original `training_set/mv_*.txt` files.
Timestamps are the rating dates at 00:00 UTC, in seconds since 1970-01-01 (dates only, so
many ratings of a user tie in time). `movie_titles.csv` gives item titles to `recommend`.

The data is no longer distributed by Netflix, so nothing is downloaded: a missing file stops
the run with a message that says what to put where (see third_party/netflix.md).
"""

from __future__ import annotations

import pathlib
import re

import numpy as np
import pandas as pd
from absl import logging

from ncf_jax.data import netflix_format, splits
from ncf_jax.data.readers import DataError, read_bytes

DATASETS = ("netflix", "netflix-probe")
FOLDER = "netflix"
COMBINED = "combined_data_{}.txt"
TITLES, PROBE = "movie_titles.csv", "probe.txt"
BLOCK_BYTES = 256 << 20  # files parsed together: large enough to amortise, small for memory
_NUMBER = re.compile(r"(\d+)")


def _number(path: pathlib.Path) -> int:
    match = _NUMBER.search(path.stem)
    return int(match[1]) if match else -1


def rating_files(folder) -> list[pathlib.Path]:
    """combined_data_*.txt in number order, else training_set/mv_*.txt; DataError if neither."""
    folder = pathlib.Path(folder)
    for found in (folder.glob(COMBINED.format("*")), (folder / "training_set").glob("mv_*.txt")):
        files = sorted(found, key=_number)
        if files:
            return files
    raise DataError(
        folder,
        f"no Netflix Prize rating files. Put {COMBINED.format(1)} .. {COMBINED.format(4)} (or "
        f"the unpacked training_set/ folder of mv_*.txt files), and optionally {TITLES} and "
        f"{PROBE}, in this folder. Netflix no longer distributes the data, so it cannot be "
        "downloaded from a stable address: see third_party/netflix.md",
    )


def source_files(cfg_dataset: str, root) -> dict[str, pathlib.Path]:
    """Paths by role: "ratings_<n>" (each rating file), "items" and "probe" where present."""
    folder = pathlib.Path(root) / FOLDER
    paths = {f"ratings_{n:05d}": p for n, p in enumerate(rating_files(folder))}
    for role, name in (("items", TITLES), ("probe", PROBE)):
        if (folder / name).is_file():
            paths[role] = folder / name
    if cfg_dataset == "netflix-probe" and "probe" not in paths:
        raise DataError(folder / PROBE, "file not found (netflix-probe tests on probe.txt)")
    return paths


def input_files(dataset: str, paths: dict) -> list[pathlib.Path]:
    """The files the prepared arrays depend on (the cache key)."""
    files = [p for role, p in sorted(paths.items()) if role.startswith("ratings_")]
    return files + ([paths["probe"]] if dataset == "netflix-probe" else [])


def _blocks(files: list[pathlib.Path]) -> list[list[pathlib.Path]]:
    """Consecutive files grouped into blocks of about BLOCK_BYTES."""
    blocks, size = [[]], 0
    for path in files:
        if blocks[-1] and size + path.stat().st_size > BLOCK_BYTES:
            blocks.append([])
            size = 0
        blocks[-1].append(path)
        size += path.stat().st_size
    return blocks


def read_ratings(files) -> pd.DataFrame:
    """The raw table (user = CustomerID, item = MovieID, rating, timestamp) of rating files."""
    parts = [netflix_format.parse_ratings(block) for block in _blocks(list(files))]
    columns = {}
    for name in ("user", "item", "rating", "day"):  # one column at a time bounds the peak
        columns[name] = np.concatenate([part.pop(name) for part in parts])
    return pd.DataFrame(
        {
            "user": columns["user"],
            "item": columns["item"],
            "rating": columns["rating"].astype(np.float32),
            "timestamp": columns["day"].astype(np.int64) * 86_400,
        },
        copy=False,
    )


def probe_split(probe: dict, rows: splits.Rows, user_ids, item_ids, *, validation: bool, seed: int):
    """(train, valid, test) row indices: test = the rows whose (user, item) probe.txt lists.

    `rows` are sorted by (user, item) codes, as `dataset.clean` returns them; probe pairs whose
    user or item did not survive cleaning are dropped (logged).
    """
    users = np.searchsorted(user_ids, probe["user"]).clip(0, len(user_ids) - 1)
    items = np.searchsorted(item_ids, probe["item"]).clip(0, len(item_ids) - 1)
    known = (user_ids[users] == probe["user"]) & (item_ids[items] == probe["item"])
    keys = users.astype(np.int64) * len(item_ids) + items
    probe_keys, first = np.unique(keys[known], return_index=True)
    row_keys = rows.users.astype(np.int64) * len(item_ids) + rows.items
    at = np.searchsorted(probe_keys, row_keys).clip(0, max(len(probe_keys) - 1, 0))
    in_probe = probe_keys[at] == row_keys if len(probe_keys) else np.zeros(len(row_keys), bool)
    test, train = np.flatnonzero(in_probe), np.flatnonzero(~in_probe)
    # Counted on probe.txt as read: each drop once, before the next one removes anything.
    logging.info(
        "probe: %d pairs listed, %d of them with a user or movie not among the ratings kept, "
        "%d repeated, %d not rated: %d test rows",
        len(keys), (~known).sum(), known.sum() - len(first), len(probe_keys) - len(test), len(test),
    )  # fmt: skip
    valid = np.zeros(0, np.int64)
    if validation:
        rng = splits.rng_for(seed, splits.STREAM_SPLIT)
        held = np.zeros(len(train), bool)
        held[rng.choice(len(train), size=min(len(test), len(train) - 1), replace=False)] = True
        train, valid = train[~held], train[held]
    test = splits.drop_unseen(train, test, rows.users, rows.items, what="test")
    if len(valid):
        valid = splits.drop_unseen(train, valid, rows.users, rows.items, what="valid")
    return train, valid, test


def build(cfg, paths: dict, prepare):
    """Read and prepare (`prepare` is `dataset.prepare`; passed in to keep imports one-way)."""
    table = read_ratings(p for role, p in sorted(paths.items()) if role.startswith("ratings_"))
    logging.info("%s: read %d ratings", cfg.dataset, len(table))
    split_fn = None
    if cfg.dataset == "netflix-probe":
        probe = netflix_format.parse_probe(paths["probe"])
        split_fn = lambda rows, users, items: probe_split(
            probe, rows, users, items, validation=cfg.validation, seed=cfg.seed
        )
    return prepare(table, cfg, name=cfg.dataset, split_fn=split_fn)


def read_movie_titles(path) -> pd.DataFrame:
    """movie_titles.csv (Latin-1, no header, `MovieID,YearOfRelease,Title`, titles may hold
    commas and the year may be NULL) indexed by item, with columns title, year, genres."""
    lines = read_bytes(path).decode("latin-1").replace("\r\n", "\n").split("\n")
    fields = [line.split(",", 2) for line in lines]
    for number, row in enumerate(fields, start=1):
        if len(row) != 3 or not row[0].isdigit() or not row[2]:
            raise DataError(
                path, f"expected 'MovieID,YearOfRelease,Title', found {lines[number - 1]!r}", number
            )
        if not (row[1].isdigit() or row[1] == "NULL"):
            raise DataError(path, f"year {row[1]!r} is neither a number nor NULL", number)
    frame = pd.DataFrame(fields, columns=["item", "year", "title"])
    frame["item"] = frame["item"].astype(np.int64)
    twice = np.flatnonzero(frame["item"].duplicated().to_numpy())
    if len(twice):  # here, not in side_info: this .csv has no header line to count
        raise DataError(path, f"id {frame['item'][twice[0]]} appears twice", int(twice[0]) + 1)
    frame["year"] = pd.to_numeric(frame["year"].replace("NULL", None)).astype("Int64")
    frame["genres"] = "(no genres listed)"  # the item-table columns every reader gives
    return frame[["item", "title", "genres", "year"]].set_index("item")
