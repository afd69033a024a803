"""Stage: raw file -> click arrays. Click logs with side features, for `ncf_jax.tasks.clicks`.

Sources: a generic delimited file with a header (flags name the user, item, 0/1 label,
timestamp and feature columns), or the built-in MovieLens task (100K or 1M, which ship user
attributes): label = rating >= threshold; features user age (continuous), gender and occupation
(categorical), item genres (0/1 continuous columns `genre_<name>`).

Choices the specification left open:
- user and item ids are remapped over the whole file (sorted original ids), so a test row
  whose user or item never occurs in train keeps an (untrained) embedding instead of being
  dropped; categorical FEATURE values use the train vocabulary plus an out-of-vocabulary code 0.
- "last_day" split: each user's rows on their latest UTC day (timestamp // 86400) are test, if
  the user has an earlier day; users active on a single day stay wholly in train, as
  leave-one-out keeps single-interaction users in train.
- min-max scaling uses the train rows only: x' = (x - min) / (max - min), 0 for a constant
  column; test values outside the train range are not clipped (they extrapolate linearly).

The module runs past the house's 300 lines: the click data's reader, checks, split and scaling
are one format's, kept together.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np
import pandas as pd

from ncf_jax import config
from ncf_jax.config import ClickConfig, DataConfig
from ncf_jax.data import checks, dataset, readers, splits
from ncf_jax.errors import UsageError

DAY_SECONDS = 86400
_SHOW = 5  # offending rows cited in an error message


def _bad_rows(path, column: str, problem: str, frame: pd.DataFrame, bad: np.ndarray):
    """DataError citing the column and the first few offending lines (header = line 1)."""
    rows = np.flatnonzero(bad)[:_SHOW]
    cited = ", ".join(f"line {r + 2}: {frame[column].iloc[r]!r}" for r in rows)
    raise readers.DataError(
        path, f"column {column!r}: {int(bad.sum())} row(s) {problem} ({cited})", int(rows[0]) + 2
    )


def read_click_csv(path, data_config: DataConfig, click_config: ClickConfig) -> pd.DataFrame:
    """The click log at `path` as columns user, item, label (int8), timestamp (int64) and the
    feature columns under their own names (continuous float64, categorical str).

    Raises DataError naming the missing columns, or the column and a few lines of a label
    that is not 0/1, a non-numeric continuous value or a non-integer timestamp.
    """
    d, c = data_config, click_config
    data = readers.read_bytes(path)
    header = readers.csv_header(path, data, d.csv_sep)
    wanted = [d.csv_user_col, d.csv_item_col, c.label_col, *c.continuous_cols, *c.categorical_cols]
    wanted += [d.csv_timestamp_col] if d.csv_timestamp_col else []
    missing = [name for name in wanted if name not in header]
    if missing:
        raise readers.DataError(path, f"missing column(s) {missing}; the header has {header}", 1)
    required = {d.csv_user_col, d.csv_item_col, c.label_col}
    columns = [(name, "str" if name in required else "str?") for name in header]
    frame = readers.parse_table(path, columns, sep=d.csv_sep, skip_lines=1, quoted=True,
                                data=data).fillna("")  # fmt: skip
    label = frame[c.label_col].str.strip()
    bad = ~label.isin(["0", "1", "0.0", "1.0"]).to_numpy()
    if bad.any():
        _bad_rows(path, c.label_col, "with a label other than 0/1", frame, bad)
    written = frame[c.label_col].to_numpy(dtype=str)
    checks.report(path, ~np.isin(written, ["0", "1"]), "labels written as '0.0', '1.0' or with "
                  "spaces, read as 0 / 1", warn=False, skip_lines=1)  # fmt: skip
    out = {
        "user": checks.text_ids(path, frame[d.csv_user_col].to_numpy(), "user"),
        "item": checks.text_ids(path, frame[d.csv_item_col].to_numpy(), "item"),
        "label": label.astype(float).astype(np.int8).to_numpy(),
    }
    stamps = np.zeros(len(frame), np.int64)
    if d.csv_timestamp_col:
        numbers = pd.to_numeric(frame[d.csv_timestamp_col], errors="coerce").to_numpy()
        bad = ~np.isfinite(numbers) | (numbers != np.round(numbers)) | (np.abs(numbers) >= 2**62)
        if bad.any():
            _bad_rows(path, d.csv_timestamp_col, "not an integer timestamp", frame, bad)
        stamps = numbers.astype(np.int64)
    out["timestamp"] = stamps
    for name in c.continuous_cols:
        numbers = pd.to_numeric(frame[name], errors="coerce").to_numpy(np.float64)
        bad = ~np.isfinite(numbers)
        if bad.any():
            _bad_rows(path, name, "not a finite number (continuous feature)", frame, bad)
        out[name] = numbers
    out |= {name: frame[name].to_numpy(dtype=str) for name in c.categorical_cols}
    return pd.DataFrame(out)


def movielens_click_table(data_config: DataConfig, click_config: ClickConfig):
    """(table, continuous_cols, categorical_cols) of the built-in MovieLens task."""
    paths = dataset.source_files(data_config)
    ratings = readers.read_movielens_ratings(paths["ratings"])
    side = dataset.load_side_info(data_config)
    if side.users is None or side.items is None:
        raise ValueError(f"{data_config.dataset} has no user attributes: use ml-100k or ml-1m")
    genres = side.items["genres"].str.get_dummies("|").add_prefix("genre_").astype(np.float64)
    users = side.users.reindex(ratings["user"].to_numpy())
    items = genres.reindex(ratings["item"].to_numpy())
    for name, table, ids in (("user", users, ratings["user"]), ("item", items, ratings["item"])):
        if table.isna().to_numpy().any():
            unknown = ids[table.isna().any(axis=1).to_numpy()].unique()[:_SHOW]
            raise ValueError(f"{data_config.dataset}: {name} ids {list(unknown)} lack attributes")
    label = (ratings["rating"].to_numpy() >= click_config.rating_threshold).astype(np.int8)
    table = pd.DataFrame(
        {
            "user": ratings["user"].to_numpy(),
            "item": ratings["item"].to_numpy(),
            "label": label,
            "timestamp": ratings["timestamp"].to_numpy(),
            "age": users["age"].to_numpy(np.float64),
            "gender": users["gender"].to_numpy(dtype=str),
            "occupation": users["occupation"].to_numpy(dtype=str),
        }
    )
    table = pd.concat([table, items.reset_index(drop=True)], axis=1)
    return table, ("age", *genres.columns), ("gender", "occupation")


def split_clicks(users, timestamps, *, how: str, test_fraction: float, seed: int):
    """(train, test) row indices, ascending. See the module docstring for "last_day"."""
    n = len(users)
    if how == "last_day":
        day = np.asarray(timestamps, np.int64) // DAY_SECONDS
        num_users = int(users.max()) + 1
        last = np.full(num_users, np.iinfo(np.int64).min)
        first = np.full(num_users, np.iinfo(np.int64).max)
        np.maximum.at(last, users, day)
        np.minimum.at(first, users, day)
        is_test = (day == last[users]) & (last[users] > first[users])
    else:
        order = splits.rng_for(seed, splits.STREAM_SPLIT).permutation(n)
        is_test = np.zeros(n, bool)
        is_test[order[n - int(round(test_fraction * n)) :]] = True
    if not is_test.any() or is_test.all():
        raise ValueError(f"split {how!r} leaves no test rows or no train rows of {n}")
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


@dataclasses.dataclass(frozen=True)
class FeatureStats:
    """Feature preprocessing fitted on the train rows, stored with the checkpoint.

    continuous: {column: [min, max]}; categorical: {column: sorted train vocabulary}, value
    vocabulary[j] has code j + 1 and any other value code 0 (out of vocabulary).
    """

    continuous: dict[str, list[float]]
    categorical: dict[str, list[str]]

    @classmethod
    def fit(cls, train: pd.DataFrame, continuous_cols, categorical_cols) -> FeatureStats:
        cont = {c: [float(train[c].min()), float(train[c].max())] for c in continuous_cols}
        cat = {c: sorted(set(train[c].astype(str))) for c in categorical_cols}
        return cls(cont, cat)

    def transform(self, table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(continuous [n, C] float32 min-max scaled, categorical [n, K] int32 codes)."""
        cont = np.zeros((len(table), len(self.continuous)), np.float32)
        for j, (name, (low, high)) in enumerate(self.continuous.items()):
            scale = high - low
            cont[:, j] = (table[name].to_numpy(np.float64) - low) / scale if scale > 0 else 0.0
        cat = np.zeros((len(table), len(self.categorical)), np.int32)
        for j, (name, vocab) in enumerate(self.categorical.items()):
            cat[:, j] = pd.Index(vocab).get_indexer(table[name].astype(str).to_numpy()) + 1
        return cont, cat

    @property
    def categorical_sizes(self) -> tuple[int, ...]:
        """Embedding table sizes: vocabulary + the OOV row."""
        return tuple(len(v) + 1 for v in self.categorical.values())

    def to_json(self) -> dict:
        return {"continuous": self.continuous, "categorical": self.categorical}

    @classmethod
    def from_json(cls, obj: dict) -> FeatureStats:
        return cls(dict(obj["continuous"]), dict(obj["categorical"]))


class ClickRows(NamedTuple):
    """Parallel arrays of one split: ids int32, labels float32, features as transformed."""

    users: np.ndarray
    items: np.ndarray
    labels: np.ndarray
    continuous: np.ndarray  # [n, C] float32
    categorical: np.ndarray  # [n, K] int32


@dataclasses.dataclass(frozen=True, eq=False)
class ClickData:
    """A split click log. user_level / item_level mark feature columns (continuous first, then
    categorical) constant per user / per item over the whole log: when every column is one or
    the other, any (user, item) pair can be scored and catalogue ranking is defined."""

    name: str
    num_users: int
    num_items: int
    user_ids: np.ndarray
    item_ids: np.ndarray
    train: ClickRows
    test: ClickRows
    stats: FeatureStats
    user_level: np.ndarray  # [C + K] bool
    item_level: np.ndarray  # [C + K] bool

    @property
    def pairwise_features(self) -> bool:
        return bool(np.all(self.user_level | self.item_level))

    def describe(self) -> dict:
        return {
            "dataset": self.name,
            "users": self.num_users,
            "items": self.num_items,
            "train_rows": len(self.train.users),
            "test_rows": len(self.test.users),
            "train_positive_rate": float(self.train.labels.mean()),
            "test_positive_rate": float(self.test.labels.mean()),
            "features": [*self.stats.continuous, *self.stats.categorical],
        }


def _constant_within(groups: np.ndarray, values: np.ndarray) -> bool:
    frame = pd.DataFrame({"g": groups, "v": values})
    return bool((frame.groupby("g")["v"].nunique() <= 1).all())


def build_click_data(
    table: pd.DataFrame, continuous_cols, categorical_cols, *, name, split, seed, test_fraction
) -> ClickData:
    """Remap ids, split, fit the feature stats on train and transform both splits."""
    users, user_ids = splits.remap_ids(table["user"].to_numpy())
    items, item_ids = splits.remap_ids(table["item"].to_numpy())
    train, test = split_clicks(
        users, table["timestamp"].to_numpy(), how=split, test_fraction=test_fraction, seed=seed
    )
    stats = FeatureStats.fit(table.iloc[train], continuous_cols, categorical_cols)
    cont, cat = stats.transform(table)
    labels = table["label"].to_numpy(np.float32)
    columns = [*continuous_cols, *categorical_cols]
    level = lambda ids: np.array([_constant_within(ids, table[c].to_numpy()) for c in columns])
    take = lambda idx: ClickRows(users[idx], items[idx], labels[idx], cont[idx], cat[idx])
    return ClickData(
        name=name,
        num_users=len(user_ids),
        num_items=len(item_ids),
        user_ids=user_ids,
        item_ids=item_ids,
        train=take(train),
        test=take(test),
        stats=stats,
        user_level=level(users).astype(bool).reshape(-1),
        item_level=level(items).astype(bool).reshape(-1),
    )


# DataConfig options the click task never reads, and the one to use instead (None: none).
_NOT_FOR_CLICKS = {"split": "--click_split", "rating_threshold": "--click_rating_threshold",
                   "test_rating_threshold": None, "min_user_interactions": None,
                   "min_item_interactions": None, "validation": None,
                   "num_test_negatives": None, "csv_rating_col": "--click_label_col",
                   "csv_date_col": None}  # fmt: skip


def check_options(data_config: DataConfig) -> None:
    """UsageError naming the DataConfig options set away from their defaults that the click
    task would ignore."""
    fields = {f.name: f for f in dataclasses.fields(data_config)}
    for name, instead in _NOT_FOR_CLICKS.items():
        if getattr(data_config, name) != fields[name].default:
            use = f": use {instead}" if instead else ""
            raise UsageError(f"--{config.flag_name(fields[name])} cannot apply to the click task"
                             f"{use}")  # fmt: skip


def load_clicks(data_config: DataConfig, click_config: ClickConfig) -> ClickData:
    """The click task of `data_config.dataset`: "csv:<path>" or a MovieLens release."""
    check_options(data_config)
    if data_config.dataset.startswith("csv:"):
        path = data_config.dataset[4:]
        table = read_click_csv(path, data_config, click_config)
        cont, cat = click_config.continuous_cols, click_config.categorical_cols
    else:
        table, cont, cat = movielens_click_table(data_config, click_config)
    return build_click_data(
        table,
        cont,
        cat,
        name=data_config.dataset,
        split=click_config.split,
        seed=data_config.seed,
        test_fraction=data_config.test_fraction,
    )


def row_arrays(rows: ClickRows) -> dict:
    """{"users", "items", "labels", "continuous", "categorical"} arrays of click rows."""
    return {
        "users": rows.users,
        "items": rows.items,
        "labels": rows.labels,
        "continuous": rows.continuous,
        "categorical": rows.categorical,
    }


def _attribute_tables(data: ClickData, level: np.ndarray, ids_of, size: int):
    """[size, C] float32 and [size, K] int32 attribute tables of the columns marked in level
    (zero elsewhere), filled from every row of the log."""
    num_cont = data.train.continuous.shape[1]
    cont = np.zeros((size, num_cont), np.float32)
    cat = np.zeros((size, data.train.categorical.shape[1]), np.int32)
    for rows in (data.train, data.test):
        ids = ids_of(rows)
        cont[ids] = np.where(level[:num_cont], rows.continuous, cont[ids])
        cat[ids] = np.where(level[num_cont:], rows.categorical, cat[ids])
    return cont, cat


def click_tables(data: ClickData):
    """((user continuous, user categorical), (item continuous, item categorical)) attribute
    tables, for scoring the whole catalogue when every feature is a user or item attribute."""
    users = _attribute_tables(data, data.user_level, lambda r: r.users, data.num_users)
    items = _attribute_tables(data, data.item_level, lambda r: r.items, data.num_items)
    return users, items
