"""Stage: raw file -> dataset arrays, end to end: resolve, download, read, prepare, cache.

`load_dataset(cfg)` is the one entry point later stages call. `prepare` chains the steps of
`ncf_jax.data.splits` (whose docstring lists each choice) on a raw table. The prepared arrays
are cached as `<cache root>/processed/<dataset>-<key>.npz`, where the key hashes the dataset
name, every preprocessing field of DataConfig and the path, size and modification time of each
source file, so a changed option or a replaced file never reuses a stale cache. The cache root
is `$NCF_JAX_DATA`, else `~/.cache/ncf_jax` — never `--data_dir` itself, which may be a
read-only or shared input folder.

The module runs past the house's 300 lines: it is the one entry from a `DataConfig` to arrays,
with the cache, its keys and its recovery from a damaged file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import re
import urllib.request
import uuid
import zipfile
import zlib
from typing import NamedTuple

import numpy as np
import pandas as pd
from absl import logging

from ncf_jax.config import DataConfig, default_data_dir
from ncf_jax.data import authors_split, download, ncf_format, netflix, readers, side_info, splits
from ncf_jax.data.types import InteractionData
from ncf_jax.errors import UsageError

CACHE_VERSION = 1  # bump when the preprocessing changes its output for the same options
# DataConfig fields that do not change the prepared arrays.
_NOT_PREPROCESSING = ("data_dir", "cache")


class SideInfo(NamedTuple):
    """User and item attributes indexed by ORIGINAL id; None where the release has none."""

    users: pd.DataFrame | None
    items: pd.DataFrame | None


def source_files(cfg: DataConfig, *, opener=urllib.request.urlopen) -> dict[str, pathlib.Path]:
    """Paths of the dataset's files by role, downloading them when they are missing."""
    if cfg.dataset.startswith("csv:"):
        path = pathlib.Path(cfg.dataset[4:]).expanduser()
        if not path.is_file():
            raise readers.DataError(path, "is a folder, not a file" if path.is_dir() else
                                    "file not found")  # fmt: skip
        return {"ratings": path}
    if cfg.root.exists() and not cfg.root.is_dir():
        raise UsageError(f"--data_dir={cfg.data_dir} is a file, not a folder")
    if cfg.dataset in netflix.DATASETS:
        return netflix.source_files(cfg.dataset, cfg.root)
    source = download.source_for(cfg.dataset)
    if cfg.dataset == f"ncf:{authors_split.NAME}" and download.missing(source, cfg.root):
        return authors_split.ensure(cfg.root, opener=opener)  # derived from GroupLens' archive
    return download.ensure_files(source, cfg.root, opener=opener)


def _input_files(cfg: DataConfig, paths) -> list[pathlib.Path]:
    """The files the interactions are read from (side information does not count)."""
    if cfg.dataset.startswith("ncf:"):
        return [paths[role] for role in ncf_format.SUFFIXES]
    if cfg.dataset in netflix.DATASETS:
        return netflix.input_files(cfg.dataset, paths)
    return [paths["ratings"]]


def cache_path(cfg: DataConfig, files) -> pathlib.Path:
    options = {
        f.name: getattr(cfg, f.name)
        for f in dataclasses.fields(cfg)
        if f.name not in _NOT_PREPROCESSING
    }
    stats = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    key = json.dumps({"version": CACHE_VERSION, **options, "files": stats}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", cfg.dataset)[-60:]
    return default_data_dir() / "processed" / f"{stem}-{digest}.npz"


def save_npz(data: InteractionData, path) -> None:
    """Write atomically (temporary file, then rename), so a crash never leaves half a cache."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {
        f.name: np.asarray(getattr(data, f.name))
        for f in dataclasses.fields(data)
        if f.name != "name"
    }
    # Own temporary name: the processes of a multi-process job all write the same cache.
    part = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.part")
    with open(part, "wb") as f:
        np.savez(f, name=np.asarray(data.name), **arrays)
    os.replace(part, path)


def load_npz(path) -> InteractionData:
    with np.load(path, allow_pickle=False) as z:
        fields = {key: z[key] for key in z.files}
    name = str(fields.pop("name"))
    num_users, num_items = int(fields.pop("num_users")), int(fields.pop("num_items"))
    return InteractionData(name=name, num_users=num_users, num_items=num_items, **fields)


def read_interactions(cfg: DataConfig, paths) -> pd.DataFrame:
    """The raw table (original ids) of a MovieLens or csv: dataset."""
    if cfg.dataset.startswith("csv:"):
        table = readers.read_csv_interactions(
            paths["ratings"],
            user_col=cfg.csv_user_col,
            item_col=cfg.csv_item_col,
            rating_col=cfg.csv_rating_col,
            timestamp_col=cfg.csv_timestamp_col,
            sep=cfg.csv_sep,
        )
        if cfg.csv_date_col:  # e.g. the Netflix-prize layout: user, item, rating, date
            table["timestamp"] = readers.read_dates(
                paths["ratings"], cfg.csv_date_col, sep=cfg.csv_sep
            )
        return table
    return readers.read_movielens_ratings(paths["ratings"])


def clean(table: pd.DataFrame, cfg: DataConfig) -> tuple[splits.Rows, np.ndarray, np.ndarray]:
    """Steps 1-5 of the module docstring: (rows sorted by (user, item), user_ids, item_ids)."""
    users, user_ids = splits.remap_ids(table["user"].to_numpy())
    items, item_ids = splits.remap_ids(table["item"].to_numpy())
    ratings = table["rating"].to_numpy(np.float32)
    timestamps = table["timestamp"].to_numpy(np.int64)
    keep = splits.latest_per_pair(users, items, ratings, timestamps)
    logging.info("collapsed %d duplicate (user, item) rows", len(users) - len(keep))
    if cfg.rating_threshold is not None:
        positive = ratings[keep] >= cfg.rating_threshold
        logging.info(
            "rating >= %s: dropped %d of %d rows",
            cfg.rating_threshold,
            (~positive).sum(),
            len(keep),
        )
        keep = keep[positive]
    core = splits.k_core(
        users[keep],
        items[keep],
        min_user=cfg.min_user_interactions,
        min_item=cfg.min_item_interactions,
    )
    logging.info("min_user/min_item filters: dropped %d of %d rows", (~core).sum(), len(keep))
    keep = keep[core]
    if not len(keep):
        raise UsageError(
            f"{cfg.dataset}: no interactions left after preprocessing: relax the "
            "--min_*_interactions / --rating_threshold filters"
        )
    # Compaction keeps the id order: rows stay sorted by (user, item), as latest_per_pair left.
    users, kept_users = splits.remap_ids(users[keep])
    items, kept_items = splits.remap_ids(items[keep])
    rows = splits.Rows(users, items, ratings[keep], timestamps[keep])
    return rows, user_ids[kept_users], item_ids[kept_items]


def split_rows(rows: splits.Rows, cfg: DataConfig):
    """(train, valid, test) row indices of `rows` (sorted by (user, item), as `clean` returns)."""
    if cfg.split == "loo":
        return splits.leave_one_out(
            rows.users, rows.items, rows.timestamps, validation=cfg.validation
        )
    if cfg.split == "temporal":
        # Stable sort of rows sorted by (user, item): ties in time stay in (user, item) order.
        order = np.argsort(rows.timestamps, kind="stable")
    else:
        order = splits.rng_for(cfg.seed, splits.STREAM_SPLIT).permutation(len(rows.users))
    train, valid, test = splits.holdout(
        len(order), order, test_fraction=cfg.test_fraction, validation=cfg.validation
    )
    held = []
    for name, index in (("valid", valid), ("test", test)):
        index = splits.drop_unseen(train, index, rows.users, rows.items, what=name)
        if cfg.test_rating_threshold is not None:
            rated = rows.ratings[index] >= cfg.test_rating_threshold
            logging.info(
                "%s: dropped %d rows rated below %s",
                name,
                (~rated).sum(),
                cfg.test_rating_threshold,
            )
            index = index[rated]
        held.append(index)
    return train, held[0], held[1]


def prepare(table: pd.DataFrame, cfg: DataConfig, *, name: str, split_fn=None) -> InteractionData:
    """Raw table (original ids) -> split InteractionData with test (and validation) negatives.

    split_fn: `(rows, user_ids, item_ids) -> (train, valid, test)` row indices, replacing
    `split_rows` (a dataset with a published split, e.g. netflix-probe).
    """
    rows, user_ids, item_ids = clean(table, cfg)
    split = split_fn(rows, user_ids, item_ids) if split_fn else split_rows(rows, cfg)
    train, valid, test = split
    num_users, num_items = len(user_ids), len(item_ids)
    # Negatives avoid every interaction that survived cleaning, held out or dropped alike.
    known = splits.sorted_csr(rows, num_users)
    options = dict(num_items=num_items, num_negatives=cfg.num_test_negatives)
    fields = splits.with_negatives(
        rows.take(test),
        "test",
        known,
        **options,
        rng=splits.rng_for(cfg.seed, splits.STREAM_TEST_NEGATIVES),
    )
    if len(valid):
        fields |= splits.with_negatives(
            rows.take(valid),
            "valid",
            known,
            **options,
            rng=splits.rng_for(cfg.seed, splits.STREAM_VALID_NEGATIVES),
        )
    return InteractionData(
        name=name,
        num_users=num_users,
        num_items=num_items,
        user_ids=user_ids,
        item_ids=item_ids,
        **rows.take(train).fields("train"),
        **fields,
    )


def build(cfg: DataConfig, paths) -> InteractionData:
    """Read and prepare without the cache."""
    if cfg.dataset.startswith("ncf:"):
        return ncf_format.from_ncf_files(paths, cfg, name=cfg.dataset)
    if cfg.dataset in netflix.DATASETS:
        return netflix.build(cfg, paths, prepare)
    table = read_interactions(cfg, paths)
    logging.info("%s: read %d rows", cfg.dataset, len(table))
    return prepare(table, cfg, name=cfg.dataset)


def check_split_options(cfg: DataConfig) -> None:
    """UsageError for a split option the chosen split ignores (leave-one-out holds out one pair
    per user: no fraction, no rating threshold)."""
    defaults = {f.name: f.default for f in dataclasses.fields(cfg)}
    if cfg.split == "loo" and cfg.dataset not in netflix.DATASETS:
        for name in ("test_fraction", "test_rating_threshold"):
            if getattr(cfg, name) != defaults[name]:
                raise UsageError(f"--{name}={getattr(cfg, name)} cannot apply to --split=loo "
                                 "(one held-out pair per user): use --split=temporal or "
                                 f"--split=random, or drop --{name}")  # fmt: skip


# What a damaged cache raises: a truncated or overwritten zip, a missing or mis-shaped array.
_CACHE_ERRORS = (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile,
                 zlib.error)  # fmt: skip


def _load_cache(path: pathlib.Path) -> InteractionData | None:
    """The cached arrays, or None after setting a damaged cache file aside (warned)."""
    try:
        data = load_npz(path)
        logging.info("loaded from cache %s", path)
        return data
    except _CACHE_ERRORS as error:
        aside = path.with_name(f"{path.name}.damaged")
        try:
            os.replace(path, aside)
            where = f"moved to {aside}"
        except OSError:
            where = "left in place"
        logging.warning("damaged cache %s (%s: %s), %s; rebuilding it from the source files",
                        path, type(error).__name__, error, where)  # fmt: skip
        return None


def load_dataset(cfg: DataConfig, *, opener=urllib.request.urlopen) -> InteractionData:
    """The prepared, split dataset of `cfg`, from the cache when it is current.

    `opener` fetches URLs (a parameter so tests can serve local archives).
    """
    check_split_options(cfg)
    paths = source_files(cfg, opener=opener)
    path = cache_path(cfg, _input_files(cfg, paths))
    if cfg.cache and path.is_file():
        data = _load_cache(path)
        if data is not None:
            return data
    data = build(cfg, paths)
    if cfg.cache:
        try:
            save_npz(data, path)
            logging.info("cached %s", path)
        except OSError as error:  # a read-only cache costs a re-parse next time, nothing more
            logging.warning("could not write the cache %s (%s)", path, error)
    return data


def load_side_info(cfg: DataConfig, *, opener=urllib.request.urlopen) -> SideInfo:
    """User and item attributes of a MovieLens dataset, indexed by original id."""
    if cfg.dataset.startswith(("ncf:", "csv:")):
        raise ValueError(f"{cfg.dataset}: side information exists only for MovieLens datasets")
    paths = source_files(cfg, opener=opener)
    tables = {
        # Side files are optional: a release (or a by-hand copy) may lack either one.
        role: side_info.read_side_table(paths[role])
        if role in paths and pathlib.Path(paths[role]).is_file()
        else None
        for role in ("users", "items")
    }
    return SideInfo(**tables)


def item_titles(cfg: DataConfig, original_ids) -> np.ndarray:
    """Titles of ORIGINAL item ids (map model ids first: `data.item_ids[codes]`)."""
    items = load_side_info(cfg).items
    if items is None:
        raise ValueError(f"{cfg.dataset} has no item titles")
    return side_info.titles_of(items, original_ids)
