"""Frozen configuration: each option is one dataclass field carrying its flag's help text.

A field made by `option(...)` knows its command-line flag (its own name unless `flag=`), its
help, its choices, how to parse the flag's text, its own check and whether it may change when a
run resumes. `ncf_jax.flags` generates absl flags from these fields and nothing else, so an
option is written once. Configs validate themselves at construction: a bad value stops a run
before any work with a `UsageError` that says what was wrong and how to fix it.

The configs here are shared by several tasks (data, the common training options, ranking
evaluation, the click log's columns); each task adds its own in `ncf_jax.tasks.<task>`. Fields
shared by several configs are made by one factory below (`num_neg()`, `layers()`, ...). The
module runs past the house's 300 lines for that reason: it is the one place a shared option is
written, and splitting it would make two.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Callable
from typing import Any

from ncf_jax.errors import UsageError

SPLITS = ("loo", "temporal", "random")
TIES = ("pessimistic", "optimistic", "random")
LEARNERS = ("adam", "adagrad", "rmsprop", "sgd", "adamw")
TRAIN_NEGATIVES_EXCLUDE = ("train", "known")
EVAL_PROTOCOLS = ("sampled", "full")
EPOCH_SELECTIONS = ("test", "valid")
LR_SCHEDULES = ("constant", "cosine", "onecycle")
CLICK_SPLITS = ("last_day", "random")


# --------------------------------------------------------------------------- the option field
def option(
    default,
    help: str,
    *,
    flag: str | None = None,
    choices: tuple | None = None,
    parse: Callable[[str], Any] | None = None,
    check: Callable[[Any], bool] | None = None,
    message: str | None = None,
    resume_safe: bool = False,
):
    """A dataclass field that is also a command-line option.

    flag: the flag's name (default: the field's name). choices: allowed values (an enum flag).
    parse: text -> value for options given as text (lists, 'none'); `default` stays a value.
    check, message: the field's own validation and the error it raises (`{flag}` and `{value}`
      are filled in). resume_safe: the option may differ when a run resumes (it cannot change
      what is learned, e.g. `--epochs` raised to train on).
    """
    metadata = {"help": help, "flag": flag, "choices": choices, "parse": parse, "check": check}
    metadata |= {"message": message, "resume_safe": resume_safe}
    return dataclasses.field(default=default, metadata=metadata)


def flag_name(field: dataclasses.Field) -> str:
    return field.metadata.get("flag") or field.name


def validate(config) -> None:
    """Runs every field's choices and check; call first in `__post_init__`."""
    for field in dataclasses.fields(config):
        value, meta, name = getattr(config, field.name), field.metadata, flag_name(field)
        if meta.get("choices") and value not in meta["choices"]:
            raise UsageError(f"--{name} must be one of {meta['choices']}, got {value!r}")
        if meta.get("check") and not meta["check"](value):
            raise UsageError(meta["message"].format(flag=f"--{name}", value=value))


def require(condition: bool, message: str) -> None:
    """A check across fields: UsageError(message) unless `condition`."""
    if not condition:
        raise UsageError(message)


def require_validation_for(select_epoch: str, has_validation: bool) -> None:
    """--select_epoch=valid picks epochs on a validation split, which the data must have."""
    require(
        select_epoch == "test" or has_validation,
        "--select_epoch=valid needs a validation split: add --validation",
    )


ROW_SPARSE_LEARNERS = ("adam", "sgd")  # the learners `ncf_jax.row_sparse` updates tables by


def require_row_sparse_learner(row_sparse: bool, learner: str, flag: str = "--learner") -> None:
    """Row-sparse embeddings (--lazy_embeddings) are LazyAdam or SGD: refuse another learner."""
    require(
        not row_sparse or learner in ROW_SPARSE_LEARNERS,
        f"--lazy_embeddings updates tables by row-sparse Adam or SGD, not {flag}={learner}: "
        "use --learner=adam or --learner=sgd",
    )


def parse_list(text: str, cast, name: str) -> tuple:
    """'64,32,16,8' or the authors' '[64,32,16,8]' -> (64, 32, 16, 8)."""
    body = text.strip().strip("[]").strip()
    try:
        return tuple(cast(x) for x in body.split(",") if x.strip())
    except ValueError:
        raise UsageError(f"--{name} must be a comma-separated list, got {text!r}") from None


def resume_options(configs: dict) -> dict:
    """{flag: value} of the options that define a run (resume_safe ones left out), JSON-ready:
    what WORKDIR records and compares when it resumes."""
    out = {}
    for config in configs.values():
        for field in dataclasses.fields(config):
            if not field.metadata.get("resume_safe"):
                value = getattr(config, field.name)
                out[flag_name(field)] = list(value) if isinstance(value, tuple) else value
    return out


def from_options(cls, options: dict):
    """A config of class `cls` from {flag: value} (values as the flag's text or as values);
    options that are not flags of `cls` are ignored."""
    values = {}
    for field in dataclasses.fields(cls):
        name = flag_name(field)
        if name in options:
            value, parse = options[name], field.metadata.get("parse")
            values[field.name] = parse(value) if parse and isinstance(value, str) else value
    return cls(**values)


def from_dict(cls, saved: dict):
    """A config from its saved dict (JSON lists back to tuples; unknown keys dropped)."""
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k in names}
    return cls(**values)


# ---------------------------------------------------------------- fields shared by several tasks
def ints(name: str):
    return lambda text: parse_list(text, int, name)


def floats(name: str):
    return lambda text: parse_list(text, float, name)


def strings(name: str):
    return lambda text: parse_list(text, str, name)


def positive() -> dict:
    return {"check": lambda v: v > 0, "message": "{flag} must be > 0, got {value}"}


def positive_floats(name: str) -> dict:
    """A comma-separated list of floats, each > 0 (e.g. a grid run in one program)."""
    return {"parse": floats(name), "check": lambda v: all(x > 0 for x in v),
            "message": "{flag} must be > 0, got {value}"}  # fmt: skip


def at_least(low) -> dict:
    return {"check": lambda v: v >= low, "message": f"{{flag}} must be >= {low}, got {{value}}"}


NUM_FACTORS = 8  # the embedding size of the MF-style models, their option's default too


def num_factors():
    return option(NUM_FACTORS, "GMF / MF embedding size.", **positive())


def num_seeds(which: str = ""):
    return option(
        1,
        f"{which}Train replicas with seeds seed .. seed+N-1 at once (jax.vmap); report mean and "
        "std.",
        **at_least(1),
    )


def layers(default=(64, 32, 16, 8)):
    help_text = "MLP widths; the first is the concatenated user+item embedding width."
    return option(default, help_text, parse=ints("layers"))


def reg_mf():
    return option(0.0, "L2 on GMF/MF embedding rows.", **at_least(0))


def reg_layers():
    return option(
        (0.0,), "L2 per MLP layer (one value, or one per layer).", parse=floats("reg_layers")
    )


def dtype():
    return option("float32", "Activation dtype.", choices=("float32", "bfloat16"))


def dropout():
    return option(
        0.0,
        "Dropout after each dense layer.",
        check=lambda v: 0.0 <= v < 1.0,
        message="{flag} must be in [0, 1), got {value}",
    )


def num_neg():
    return option(4, "Negatives per training positive.", **at_least(1))


def negatives_exclude():
    return option(
        "train",
        "train: negatives avoid training items (authors); known: also held-out items.",
        choices=TRAIN_NEGATIVES_EXCLUDE,
    )


def lazy_embeddings():
    return option(
        False,
        "Update only the embedding rows a batch looks up: LazyAdam with --learner=adam "
        "(stale moments elsewhere; dense Adam is paper-faithful), exactly SGD with --learner=sgd.",
    )


def weight_decay():
    return option(
        0.0,
        "Weight decay on all parameters: decoupled for --learner=adamw, else an L2 gradient term.",
        **at_least(0),
    )


def lr_schedule():
    return option(
        "constant",
        "Learning-rate schedule over the whole run (peak = --learning_rate).",
        choices=LR_SCHEDULES,
    )


def top_k():
    return option(10, "K of HR@K, NDCG@K, ...", **at_least(1))


def chunk_size(default: int = 1024):
    return option(
        default,
        "Users (or rows) scored at once.",
        flag="eval_chunk_size",
        resume_safe=True,
        **at_least(1),
    )


def select_epoch():
    return option(
        "test",
        "Reported epoch: best on test (authors) or on the validation split (needs --validation).",
        choices=EPOCH_SELECTIONS,
    )


def default_data_dir() -> pathlib.Path:
    """`$NCF_JAX_DATA`, else `~/.cache/ncf_jax`."""
    return pathlib.Path(os.environ.get("NCF_JAX_DATA", "~/.cache/ncf_jax")).expanduser()


def none_if_empty(text: str):
    return text or None


def _separator(text: str) -> str:
    return text.replace("\\t", "\t")


# ----------------------------------------------------------------------------- shared configs
@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which dataset, and how it is preprocessed and split (every task reads it).

    dataset: "ml-100k", "ml-1m", "ml-10m", "ml-20m", "ml-25m", "ml-latest", "ml-latest-small",
      "ncf:<name>" (the NCF authors' format, files DATA_DIR/<name>.train.rating etc.), or
      "csv:<path>" (a generic interaction file; see the csv_* fields).
    split: "loo" (leave-one-out by latest timestamp), "temporal" (global, by time fraction)
      or "random" (holdout by fraction). An option a dataset cannot apply (e.g. --split for
      "ncf:" datasets, already split) is a UsageError when set (`inapplicable_options`).
    seed: drives every random choice of the data layer (flag --data_seed, kept apart from
      --seed so that every training seed is scored on the same test set).
    """

    dataset: str = option(
        "ml-100k",
        "ml-100k | ml-1m | ml-10m | ml-20m | ml-25m | ml-latest | ml-latest-small | "
        "netflix | netflix-probe | ncf:<name> (NCF authors' format) | csv:<path>.",
        check=bool,
        message="{flag} must name a dataset, e.g. ml-100k or ncf:ml-1m",
    )
    data_dir: str | None = option(
        None,
        "Dataset cache and input folder (default: $NCF_JAX_DATA, else ~/.cache/ncf_jax).",
        resume_safe=True,
    )
    split: str = option("loo", "Test split.", choices=SPLITS)
    test_fraction: float = option(
        0.2,
        "Held-out fraction (temporal/random).",
        check=lambda v: 0.0 < v < 1.0,
        message="{flag} must be in (0, 1), got {value}",
    )
    validation: bool = option(
        False, "Hold out a validation item per user (loo) or fraction, for honest selection."
    )
    num_test_negatives: int = option(
        99, "Sampled negatives per test (and validation) pair; 0 for none.", **at_least(0)
    )
    rating_threshold: float | None = option(
        None, "Keep ratings >= this as positives (default: every rating is a positive)."
    )
    test_rating_threshold: float | None = option(
        None, "Keep only test interactions rated >= this (temporal/random splits)."
    )
    min_user_interactions: int = option(0, "Drop users with fewer.", **at_least(0))
    min_item_interactions: int = option(0, "Drop items with fewer.", **at_least(0))
    seed: int = option(0, "Seed of the data split and test negatives.", flag="data_seed")
    csv_user_col: str = option("user", "csv: user column.")
    csv_item_col: str = option("item", "csv: item column.")
    csv_rating_col: str | None = option(
        "rating", "csv: rating column ('' = none).", parse=none_if_empty
    )
    csv_timestamp_col: str | None = option(
        "timestamp", "csv: timestamp column ('' = none).", parse=none_if_empty
    )
    csv_date_col: str | None = option(
        None,
        "csv: a date column (ISO 8601, e.g. 2005-09-06) timing the rows, instead of "
        "--csv_timestamp_col (leave that empty).",
        parse=none_if_empty,
    )
    csv_sep: str = option(
        ",",
        "csv: field separator ('\\t' = tab).",
        parse=_separator,
        check=lambda v: len(v) == 1 and v not in '"\r\n',
        message="{flag} must be one character other than a quote or a line end, got {value!r}",
    )
    cache: bool = option(
        True, "Reuse the preprocessed .npz cache.", flag="data_cache", resume_safe=True
    )

    def __post_init__(self):
        validate(self)
        ignored = inapplicable_options(self)
        require(
            not ignored,
            f"{', '.join(ignored)} cannot apply to --dataset={self.dataset}: "
            f"{_WHY_INAPPLICABLE.get(self.dataset.split(':')[0], '')}drop "
            f"{'it' if len(ignored) == 1 else 'them'}",
        )
        columns = [c for c in (self.csv_user_col, self.csv_item_col, self.csv_rating_col,
                               self.csv_timestamp_col, self.csv_date_col) if c]  # fmt: skip
        twice = sorted({c for c in columns if columns.count(c) > 1})
        require(not twice, f"the --csv_*_col flags name the column(s) {twice} twice: one each")
        require(
            self.csv_date_col is None
            or (self.dataset.startswith("csv:") and not self.csv_timestamp_col),
            "--csv_date_col needs --dataset=csv:<path> and an empty --csv_timestamp_col",
        )

    @property
    def root(self) -> pathlib.Path:
        return pathlib.Path(self.data_dir).expanduser() if self.data_dir else default_data_dir()


# Options a dataset's preprocessing never reads, so a value other than the default would be
# recorded as applied without being applied.
_INAPPLICABLE = {
    "ncf": ("split", "test_fraction", "rating_threshold", "test_rating_threshold",
            "min_user_interactions", "min_item_interactions"),
    "netflix-probe": ("split", "test_fraction", "test_rating_threshold"),
}  # fmt: skip
_WHY_INAPPLICABLE = {
    "ncf": "the NCF format is already split, filtered and binarised by its files; ",
    "netflix-probe": "probe.txt is the test split; ",
}


def inapplicable_options(data: DataConfig) -> list[str]:
    """The flags (as `--name=value`) set away from their defaults that `data.dataset` ignores."""
    kind = data.dataset.split(":")[0] if data.dataset.startswith("ncf:") else data.dataset
    names = list(_INAPPLICABLE.get(kind, ()))
    if kind == "ncf" and not data.validation:  # test negatives come from .test.negative
        names.append("num_test_negatives")
    if not data.dataset.startswith("csv:"):
        names += ["csv_user_col", "csv_item_col", "csv_rating_col", "csv_timestamp_col",
                  "csv_date_col", "csv_sep"]  # fmt: skip
    fields = {f.name: f for f in dataclasses.fields(data)}
    return [
        f"--{flag_name(fields[n])}={getattr(data, n)}"
        for n in names
        if getattr(data, n) != fields[n].default
    ]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The training options every task reads; a task's own train config extends it."""

    epochs: int = option(
        20,
        "Training epochs (0: evaluate the starting model only).",
        resume_safe=True,
        **at_least(0),
    )
    batch_size: int = option(256, "Rows per step.", **at_least(1))
    learner: str = option("adam", "Optimiser.", choices=LEARNERS)
    learning_rate: float = option(0.001, "Learning rate.", **positive())
    seed: int = option(0, "Seed of initialisation and training.")
    num_seeds: int = num_seeds()
    stop_at: float | None = option(
        None,
        "Stop once the selection metric (e.g. hr@10, rmse) reaches this value ('' = never).",
        parse=lambda text: float(text) if text.strip() else None,
        resume_safe=True,
    )
    patience: int = option(
        0,
        "Stop after this many epochs without a better selection metric (0 = never); with "
        "--validation --select_epoch=valid it watches the validation split.",
        resume_safe=True,
        **at_least(0),
    )

    def __post_init__(self):
        validate(self)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Ranking evaluation (NCF and two-tower): K, ties, the protocol and the reported epoch."""

    top_k: int = top_k()
    ties: str = option(
        "pessimistic",
        "Held-out item tied with a negative: pessimistic ranks it below, optimistic above.",
        choices=TIES,
    )
    protocol: str = option(
        "sampled",
        "sampled: held-out item vs its sampled negatives; full: rank the whole catalogue.",
        flag="eval_protocol",
        choices=EVAL_PROTOCOLS,
    )
    select_epoch: str = select_epoch()
    chunk_size: int = chunk_size()

    def __post_init__(self):
        validate(self)


@dataclasses.dataclass(frozen=True)
class ClickConfig:
    """The click log's columns and split (`ncf_jax.data.clicks`; the data side of the task).

    continuous_cols, categorical_cols: columns of a "csv:" click log (user, item, timestamp and
      separator come from DataConfig's csv_* fields).
    split: "last_day" (each user's rows on their latest day are test; users active on one day
      only stay in train) or "random" (a seeded DataConfig.test_fraction of the rows).
    """

    label_col: str = option("label", "csv: 0/1 label column.", flag="click_label_col")
    continuous_cols: tuple[str, ...] = option(
        (),
        "csv: continuous feature columns, comma-separated (min-max scaled on train).",
        flag="click_continuous_cols",
        parse=strings("click_continuous_cols"),
    )
    categorical_cols: tuple[str, ...] = option(
        (),
        "csv: categorical feature columns, comma-separated (train vocabulary + OOV bucket).",
        flag="click_categorical_cols",
        parse=strings("click_categorical_cols"),
    )
    split: str = option(
        "last_day",
        "last_day: each user's latest day (of --csv_timestamp_col) is test; random: a seeded "
        "--test_fraction of rows.",
        flag="click_split",
        choices=CLICK_SPLITS,
    )
    rating_threshold: float = option(
        4.0, "Built-in MovieLens task: label = rating >= this.", flag="click_rating_threshold"
    )

    def __post_init__(self):
        validate(self)
        both = set(self.continuous_cols) & set(self.categorical_cols)
        require(not both, f"columns {sorted(both)} are both continuous and categorical")
