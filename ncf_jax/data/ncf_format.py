"""Stage: raw file <-> dataset arrays for the NCF authors' pre-split format (dataset "ncf:<name>").

Three files share a prefix (ids already 0-based and contiguous):
  <name>.train.rating   user \\t item \\t rating \\t timestamp   (timestamp 0 for Pinterest)
  <name>.test.rating    the same layout; line j is test pair j
  <name>.test.negative  (user,item) \\t neg_1 \\t ... \\t neg_k   (line j belongs to test pair j)
The authors' README says the timestamp is present "if have", so 3-column rating files are read
too (timestamp 0). The published ml-1m negatives sometimes contain the user's own test item
(156 of 6,040 users); such entries get `test_negatives_mask` False and are counted in the log,
as are negatives the user is known to like (a training or test item) and repeats in a line.
`read_ncf` checks the three files against each other (see its docstring).

`write_ncf` writes the same format so users can convert their own data; validation pairs go to
the train file (the format has no validation split). Reading back what it wrote gives the same
arrays. Only the original-id maps are not stored: the format's ids are the contiguous codes.
"""

from __future__ import annotations

import pathlib
import re

import numpy as np
import pandas as pd
from absl import logging

from ncf_jax.config import DataConfig
from ncf_jax.data import checks, splits
from ncf_jax.data.readers import RAW_COLUMNS, DataError, parse_table, read_bytes
from ncf_jax.data.types import InteractionData, csr_from_pairs

SUFFIXES = {"train": ".train.rating", "test": ".test.rating", "negatives": ".test.negative"}
_HEAD = re.compile(r"\((-?\d+),(-?\d+)\)")


def read_rating_file(path) -> splits.Rows:
    """A .train.rating or .test.rating file, in file order."""
    data = read_bytes(path)
    num_fields = data.split(b"\n", 1)[0].count(b"\t") + 1
    kinds = ("int", "int", "float", "int")[: 4 if num_fields != 3 else 3]
    frame = parse_table(path, list(zip(RAW_COLUMNS, kinds, strict=False)), sep="\t", data=data)
    for column in ("user", "item"):
        ids = frame[column].to_numpy()
        checks.refuse(path, ids < 0, f"negative {column} id", values=ids)
        checks.refuse(path, ids > checks.INT32_MAX, f"{column} id above 2^31 - 1 (ids are "
                      "int32, 0-based and contiguous)", values=ids)  # fmt: skip
    checks.report(path, frame["rating"].to_numpy() < 0, "rows rated below 0, kept (the format "
                  "counts every row as a positive)")  # fmt: skip
    timestamps = frame["timestamp"] if "timestamp" in frame else np.zeros(len(frame), np.int64)
    return splits.Rows(
        frame["user"].to_numpy(np.int32),
        frame["item"].to_numpy(np.int32),
        frame["rating"].to_numpy(np.float32),
        np.asarray(timestamps, dtype=np.int64),
    )


def _diagnose_negatives(path, data: bytes, num_negatives: int) -> None:
    """Raise at the first line of a .test.negative file that is malformed."""
    for line, text in enumerate(data.decode("utf-8", errors="replace").split("\n"), start=1):
        fields = text.rstrip("\r").split("\t")
        if not _HEAD.fullmatch(fields[0]):
            raise DataError(
                path, f"line should start with '(user,item)', found {fields[0]!r}", line
            )
        if len(fields) - 1 != num_negatives:
            found = len(fields) - 1
            raise DataError(
                path, f"expected {num_negatives} negatives (as line 1), found {found}", line
            )
        for value in fields[1:]:
            if not re.fullmatch(r"\d+", value):
                raise DataError(path, f"negative item {value!r} is not an id", line)


def read_negatives_file(path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(head users [n], head items [n], negatives [n, k]) of a .test.negative file."""
    data = read_bytes(path)
    num_negatives = data.split(b"\n", 1)[0].count(b"\t")
    num_lines = data.count(b"\n") + 1
    bytes_ = np.frombuffer(data, dtype=np.uint8)
    starts = np.r_[0, np.flatnonzero(bytes_ == ord("\n")) + 1]
    well_formed = (bytes_[starts] == ord("(")).all() and data.count(b"(") == data.count(
        b")"
    ) == data.count(b",") == num_lines
    if well_formed:
        flat = data.replace(b"(", b"").replace(b")", b"").replace(b",", b"\t")
        columns = [(f"c{j}", "int") for j in range(num_negatives + 2)]
        try:
            frame = parse_table(path, columns, sep="\t", data=flat).to_numpy(np.int64)
            if (frame[:, 2:] >= 0).all():
                return frame[:, 0], frame[:, 1], frame[:, 2:]
        except DataError:
            pass
    _diagnose_negatives(path, data, num_negatives)
    raise DataError(path, "could not parse")


def _check_negatives(paths, heads_users, heads_items, negatives, test: splits.Rows, num_items):
    if len(heads_users) != len(test.users):
        raise DataError(
            paths["negatives"],
            f"has {len(heads_users)} lines but {paths['test']} has {len(test.users)}",
        )
    bad = np.flatnonzero((heads_users != test.users) | (heads_items != test.items))
    if len(bad):
        j = int(bad[0])
        raise DataError(
            paths["negatives"],
            f"({heads_users[j]},{heads_items[j]}) does not match line {j + 1} of {paths['test']} "
            f"({test.users[j]},{test.items[j]})",
            j + 1,
        )
    unknown = np.flatnonzero((negatives >= num_items).any(axis=1))
    if len(unknown):
        j = int(unknown[0])
        item = int(negatives[j][negatives[j] >= num_items][0])
        problem = f"unknown item {item} (no rating file has an item above {num_items - 1})"
        raise DataError(paths["negatives"], problem, j + 1)


def _keys(users, items, num_items: int) -> np.ndarray:
    return users.astype(np.int64) * num_items + items


def _check_leakage(paths, train: splits.Rows, test: splits.Rows, num_items: int) -> None:
    """DataError at the first training line that is also a test pair (leakage)."""
    test_keys = _keys(test.users, test.items, num_items)
    leaked = np.isin(_keys(train.users, train.items, num_items), test_keys)
    if leaked.any():
        row = int(np.flatnonzero(leaked)[0])
        pair = (int(train.users[row]), int(train.items[row]))
        j = int(np.flatnonzero(test_keys == _keys(*map(np.array, pair), num_items))[0]) + 1
        raise DataError(
            paths["train"],
            f"training pair {pair} is also the test pair of {paths['test']}:{j} "
            f"({int(leaked.sum())} such lines): the test would score pairs the model trained "
            "on; remove them from one file",
            row + 1,
        )


def _unique_train(path, train: splits.Rows, num_items: int) -> splits.Rows:
    """`train` without repeated (user, item) rows (the latest, then highest rated, is kept)."""
    keys = _keys(train.users, train.items, num_items)
    _, first = np.unique(keys, return_index=True)
    repeat = np.ones(len(keys), bool)
    repeat[first] = False
    if not repeat.any():
        return train
    checks.report(path, repeat, "repeated (user, item) training lines, dropped (each pair "
                  "kept once: its latest line)")  # fmt: skip
    keep = splits.latest_per_pair(train.users, train.items, train.ratings, train.timestamps)
    return train.take(np.sort(keep))


def _report_unseen(paths, train: splits.Rows, test: splits.Rows, sizes) -> None:
    """Logs test users and items without a training pair, and ids that occur in no file."""
    for what, ids, train_ids, size in (("user", test.users, train.users, sizes[0]),
                                       ("item", test.items, train.items, sizes[1])):  # fmt: skip
        seen = np.zeros(size, bool)
        seen[train_ids] = True
        checks.report(paths["test"], ~seen[ids], f"test pairs whose {what} has no training "
                      "pair, kept (scored with an untrained embedding)")  # fmt: skip
        seen[ids] = True
        if not seen.all():
            logging.warning("%s: %d of the %s ids 0..%d occur in no rating file (empty rows)",
                            paths["train"], (~seen).sum(), what, size - 1)  # fmt: skip


def read_ncf(paths) -> tuple[splits.Rows, splits.Rows, np.ndarray, int, int]:
    """(train, test, negatives [n_test, k], num_users, num_items) from the three files.

    Checked against each other: a test pair that is also a training pair (leakage) is refused;
    repeated training pairs are dropped, test users or items without a training pair are
    kept, each logged with its count (`negatives_mask` checks the negatives).
    """
    paths = {role: pathlib.Path(p) for role, p in paths.items()}
    train, test = read_rating_file(paths["train"]), read_rating_file(paths["test"])
    num_users = int(max(train.users.max(), test.users.max())) + 1
    num_items = int(max(train.items.max(), test.items.max())) + 1
    heads_users, heads_items, negatives = read_negatives_file(paths["negatives"])
    _check_negatives(paths, heads_users, heads_items, negatives, test, num_items)
    _check_leakage(paths, train, test, num_items)
    train = _unique_train(paths["train"], train, num_items)
    _report_unseen(paths, train, test, (num_users, num_items))
    return train, test, negatives.astype(np.int32), num_users, num_items


def _repeats(rows: np.ndarray) -> np.ndarray:
    """[n, k] bool: entries equal to an earlier entry of their row."""
    order = np.argsort(rows, axis=1, kind="stable")
    ordered = np.take_along_axis(rows, order, axis=1)
    repeat = np.zeros(rows.shape, bool)
    repeat[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    out = np.zeros_like(repeat)
    np.put_along_axis(out, order, repeat, axis=1)
    return out


def negatives_mask(path, train: splits.Rows, test: splits.Rows, negatives, num_items: int):
    """[n_test, k] bool, False where a published negative must not compete: the pair's own
    item, another item the user is known to like (train or test), or a repeat of an earlier
    negative of the line. Each finding is logged with its count and first line of `path`."""
    own = negatives == test.items[:, None]
    logging.info("%s: %d test pairs have their own item among the published negatives (masked)",
                 path, own.any(axis=1).sum())  # fmt: skip
    known = np.concatenate([_keys(train.users, train.items, num_items),
                            _keys(test.users, test.items, num_items)])  # fmt: skip
    positive = np.isin(_keys(test.users[:, None], negatives, num_items), known) & ~own
    checks.report(path, positive.any(axis=1), "lines list an item the user is known to like "
                  f"({int(positive.sum())} such negatives, masked)")  # fmt: skip
    repeat = _repeats(negatives) & ~own & ~positive
    checks.report(path, repeat.any(axis=1), f"lines repeat a negative ({int(repeat.sum())} "
                  "repeats, masked: each item competes once)")  # fmt: skip
    return ~(own | positive | repeat)


def from_ncf_files(paths, cfg: DataConfig, *, name: str) -> InteractionData:
    """InteractionData of an NCF-format dataset; split, filters and thresholds do not apply."""
    train, test, negatives, num_users, num_items = read_ncf(paths)
    mask = negatives_mask(paths["negatives"], train, test, negatives, num_items)
    fields = {**test.fields("test"), "test_negatives": negatives, "test_negatives_mask": mask}
    if cfg.validation:
        # Carve each user's latest train pair (ties: largest item), as the LOO split would.
        rest, _, valid = splits.leave_one_out(
            train.users, train.items, train.timestamps, validation=False
        )
        known = csr_from_pairs(
            np.concatenate([train.users, test.users]),
            np.concatenate([train.items, test.items]),
            num_users,
        )
        fields |= splits.with_negatives(
            train.take(valid),
            "valid",
            known,
            num_items=num_items,
            num_negatives=cfg.num_test_negatives,
            rng=splits.rng_for(cfg.seed, splits.STREAM_VALID_NEGATIVES),
        )
        train = train.take(rest)
    train = train.take(np.lexsort((train.items, train.users)))
    return InteractionData(
        name=name,
        num_users=num_users,
        num_items=num_items,
        user_ids=np.arange(num_users),
        item_ids=np.arange(num_items),
        **train.fields("train"),
        **fields,
    )


def _rating_frame(rows: splits.Rows) -> pd.DataFrame:
    ratings = rows.ratings
    if np.array_equal(ratings, np.round(ratings)):
        ratings = ratings.astype(np.int64)  # "5", as the authors write, not "5.0"
    return pd.DataFrame(
        {"u": rows.users, "i": rows.items, "r": ratings, "t": rows.timestamps}, copy=False
    )


def write_ncf(data: InteractionData, folder, name: str) -> dict[str, pathlib.Path]:
    """Write `data` as <folder>/<name>.train.rating, .test.rating, .test.negative."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {role: folder / f"{name}{suffix}" for role, suffix in SUFFIXES.items()}
    train = splits.Rows(
        *(
            np.concatenate([data.train_users, data.valid_users]),
            np.concatenate([data.train_items, data.valid_items]),
            np.concatenate([data.train_ratings, data.valid_ratings]),
            np.concatenate([data.train_timestamps, data.valid_timestamps]),
        )
    )
    test = splits.Rows(data.test_users, data.test_items, data.test_ratings, data.test_timestamps)
    # '%.9g' prints any float32 so that it parses back to the same float32.
    options = dict(sep="\t", header=False, index=False, float_format="%.9g", lineterminator="\n")
    _rating_frame(train).to_csv(paths["train"], **options)
    _rating_frame(test).to_csv(paths["test"], **options)
    heads = "(" + pd.Series(test.users).astype(str) + "," + pd.Series(test.items).astype(str) + ")"
    negatives = pd.DataFrame(np.asarray(data.test_negatives, dtype=np.int64))
    pd.concat([heads.rename("head"), negatives], axis=1).to_csv(paths["negatives"], **options)
    return paths
