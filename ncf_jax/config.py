"""Frozen configuration for every stage: data, model, training, evaluation.

Each dataclass validates itself at construction, so a bad value stops a run before any work,
with a message that says what was wrong and how to fix it. Only `ncf_jax.flags` builds these from
absl flags; library code receives them as plain arguments.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

SPLITS = ("loo", "temporal", "random")
TIES = ("pessimistic", "optimistic", "random")
LEARNERS = ("adam", "adagrad", "rmsprop", "sgd", "adamw")
TRAIN_NEGATIVES_EXCLUDE = ("train", "known")
EVAL_PROTOCOLS = ("sampled", "full")
EPOCH_SELECTIONS = ("test", "valid")


def default_data_dir() -> pathlib.Path:
    """`$NCF_JAX_DATA`, else `~/.cache/ncf_jax`."""
    return pathlib.Path(os.environ.get("NCF_JAX_DATA", "~/.cache/ncf_jax")).expanduser()


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which dataset, and how it is preprocessed and split.

    dataset: "ml-100k", "ml-1m", "ml-10m", "ml-20m", "ml-25m", "ml-latest", "ml-latest-small",
      "ncf:<name>" (the NCF authors' format, files DATA_DIR/<name>.train.rating etc.), or
      "csv:<path>" (a generic interaction file; see the csv_* fields).
    data_dir: cache and input folder; None means `default_data_dir()`.
    split: "loo" (leave-one-out by latest timestamp), "temporal" (global, by time fraction)
      or "random" (holdout by fraction). Ignored for "ncf:" datasets (already split).
    test_fraction: fraction of interactions held out by "temporal" / "random".
    validation: hold out a validation item per user (loo) or a validation fraction.
    num_test_negatives: sampled negatives per test (and validation) pair; 0 for none.
    rating_threshold: None keeps every rating as a positive; else rating >= threshold.
    test_rating_threshold: None, or keep only test pairs rated >= it (temporal/random splits).
    min_user_interactions, min_item_interactions: filters applied before splitting.
    seed: drives every random choice of the data layer.
    csv_*: column names of a "csv:" dataset; csv_sep is the field separator.
    cache: reuse the preprocessed .npz under data_dir/processed/.
    """

    dataset: str = "ml-100k"
    data_dir: str | None = None
    split: str = "loo"
    test_fraction: float = 0.2
    validation: bool = False
    num_test_negatives: int = 99
    rating_threshold: float | None = None
    test_rating_threshold: float | None = None
    min_user_interactions: int = 0
    min_item_interactions: int = 0
    seed: int = 0
    csv_user_col: str = "user"
    csv_item_col: str = "item"
    csv_rating_col: str | None = "rating"
    csv_timestamp_col: str | None = "timestamp"
    csv_sep: str = ","
    cache: bool = True

    def __post_init__(self):
        _check(bool(self.dataset), "--dataset must name a dataset, e.g. ml-100k or ncf:ml-1m")
        _check(self.split in SPLITS, f"--split must be one of {SPLITS}, got {self.split!r}")
        _check(
            0.0 < self.test_fraction < 1.0,
            f"--test_fraction must be in (0, 1), got {self.test_fraction}",
        )
        _check(self.num_test_negatives >= 0, "--num_test_negatives must be >= 0")
        _check(self.min_user_interactions >= 0, "--min_user_interactions must be >= 0")
        _check(self.min_item_interactions >= 0, "--min_item_interactions must be >= 0")

    @property
    def root(self) -> pathlib.Path:
        return pathlib.Path(self.data_dir).expanduser() if self.data_dir else default_data_dir()
