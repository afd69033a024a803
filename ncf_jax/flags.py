"""The only module that reads absl FLAGS: one definition of each flag, shared by all scripts.

Scripts call `define_*_flags()` at import time and `*_config_from_flags()` inside `main`.
A bad value raises `ValueError` from the config's validation before any work starts.
"""

from __future__ import annotations

from absl import flags

from ncf_jax import config

FLAGS = flags.FLAGS


def _define_once(define, name, *args, **kwargs):
    """Define a flag unless an earlier `define_*_flags()` call already did."""
    if name not in FLAGS:
        define(name, *args, **kwargs)


# --------------------------------------------------------------------------------------- data
def define_data_flags() -> None:
    d = config.DataConfig()
    _define_once(
        flags.DEFINE_string,
        "dataset",
        d.dataset,
        "ml-100k | ml-1m | ml-10m | ml-20m | ml-25m | ml-latest | ml-latest-small | "
        "ncf:<name> (NCF authors' format) | csv:<path>.",
    )
    _define_once(
        flags.DEFINE_string,
        "data_dir",
        None,
        "Dataset cache and input folder (default: $NCF_JAX_DATA, else ~/.cache/ncf_jax).",
    )
    _define_once(flags.DEFINE_enum, "split", d.split, list(config.SPLITS), "Test split.")
    _define_once(
        flags.DEFINE_float, "test_fraction", d.test_fraction, "Held-out fraction (temporal/random)."
    )
    _define_once(
        flags.DEFINE_bool,
        "validation",
        d.validation,
        "Hold out a validation item per user (loo) or fraction, for honest epoch selection.",
    )
    _define_once(
        flags.DEFINE_integer,
        "num_test_negatives",
        d.num_test_negatives,
        "Sampled negatives per test user.",
    )
    _define_once(
        flags.DEFINE_float,
        "rating_threshold",
        None,
        "Keep ratings >= this as positives (default: every rating is a positive).",
    )
    _define_once(
        flags.DEFINE_float,
        "test_rating_threshold",
        None,
        "Keep only test interactions rated >= this (temporal/random splits).",
    )
    _define_once(flags.DEFINE_integer, "min_user_interactions", 0, "Drop users with fewer.")
    _define_once(flags.DEFINE_integer, "min_item_interactions", 0, "Drop items with fewer.")
    _define_once(flags.DEFINE_integer, "seed", 0, "Seed for data preparation, init and training.")
    _define_once(flags.DEFINE_string, "csv_user_col", d.csv_user_col, "csv: user column.")
    _define_once(flags.DEFINE_string, "csv_item_col", d.csv_item_col, "csv: item column.")
    _define_once(
        flags.DEFINE_string, "csv_rating_col", d.csv_rating_col, "csv: rating column ('' = none)."
    )
    _define_once(
        flags.DEFINE_string,
        "csv_timestamp_col",
        d.csv_timestamp_col,
        "csv: timestamp column ('' = none).",
    )
    _define_once(flags.DEFINE_string, "csv_sep", d.csv_sep, "csv: field separator ('\\t' = tab).")
    _define_once(flags.DEFINE_bool, "data_cache", True, "Reuse the preprocessed .npz cache.")


def data_config_from_flags() -> config.DataConfig:
    sep = FLAGS.csv_sep.replace("\\t", "\t")
    return config.DataConfig(
        dataset=FLAGS.dataset,
        data_dir=FLAGS.data_dir,
        split=FLAGS.split,
        test_fraction=FLAGS.test_fraction,
        validation=FLAGS.validation,
        num_test_negatives=FLAGS.num_test_negatives,
        rating_threshold=FLAGS.rating_threshold,
        test_rating_threshold=FLAGS.test_rating_threshold,
        min_user_interactions=FLAGS.min_user_interactions,
        min_item_interactions=FLAGS.min_item_interactions,
        seed=FLAGS.seed,
        csv_user_col=FLAGS.csv_user_col,
        csv_item_col=FLAGS.csv_item_col,
        csv_rating_col=FLAGS.csv_rating_col or None,
        csv_timestamp_col=FLAGS.csv_timestamp_col or None,
        csv_sep=sep,
        cache=FLAGS.data_cache,
    )
