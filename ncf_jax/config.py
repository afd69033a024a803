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
LOSSES = ("bce", "softmax", "in_batch")
LR_SCHEDULES = ("constant", "cosine", "onecycle")
BATCH_LAYOUTS = ("shuffled", "grouped")
# TrainConfig fields only the NCF runner (experiments.gmf/mlp/neumf) implements; the other
# drivers refuse a non-default value of them (TrainConfig.require_defaults).
NCF_RUNNER_ONLY = (
    "num_seeds",
    "mesh_model",
    "lr_warmup_steps",
    "adam_b1",
    "adam_b2",
    "adam_eps",
    "batch_layout",
)


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


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Which model and its sizes (the NCF authors' flag names).

    num_factors: GMF / MF embedding size ("predictive factors" for GMF; NeuMF's GMF part).
    layers: MLP widths; layers[0] is the concatenated embedding width (authors' convention).
    reg_mf: L2 on the GMF/MF embedding rows looked up in a batch.
    reg_layers: L2 per MLP layer: [embedding rows, dense_0, dense_1, ...]; one value broadcasts.
    mf_pretrain, mlp_pretrain: checkpoint folders of trained GMF and MLP (NeuMF only).
    alpha: weight of GMF in the pre-trained NeuMF output layer.
    dtype: activation dtype ("float32" or "bfloat16"); parameters stay float32.
    embed_dim, tower_layers: two-tower embedding size and the widths of the MLP after it
      (empty: the embedding is the tower's output).
    cosine, temperature: two-tower score = <u, v> / temperature, u and v L2-normalised if cosine.
    y_range: rating models squash their output to (low, high) with a scaled sigmoid; None: raw.
    dropout: dropout rate after each dense layer of the rating MLP and the feature model.
    """

    model: str = "neumf"
    num_factors: int = 8
    layers: tuple[int, ...] = (64, 32, 16, 8)
    reg_mf: float = 0.0
    reg_layers: tuple[float, ...] = (0.0,)
    mf_pretrain: str | None = None
    mlp_pretrain: str | None = None
    alpha: float = 0.5
    dtype: str = "float32"
    embed_dim: int = 16
    tower_layers: tuple[int, ...] = ()
    cosine: bool = False
    temperature: float = 1.0
    y_range: tuple[float, float] | None = (0.0, 5.5)
    dropout: float = 0.0

    def __post_init__(self):
        _check(self.num_factors > 0, f"--num_factors must be > 0, got {self.num_factors}")
        _check(
            len(self.layers) >= 1 and all(w > 0 for w in self.layers) and self.layers[0] % 2 == 0,
            f"--layers must be positive widths with an even first entry, got {self.layers}",
        )
        _check(
            len(self.reg_layers) in (1, len(self.layers)),
            f"--reg_layers needs 1 or {len(self.layers)} values (one per layer), "
            f"got {self.reg_layers}",
        )
        _check(self.reg_mf >= 0 and min(self.reg_layers) >= 0, "--reg_mf/--reg_layers must be >= 0")
        _check(0.0 <= self.alpha <= 1.0, f"--alpha must be in [0, 1], got {self.alpha}")
        _check(
            (self.mf_pretrain is None) == (self.mlp_pretrain is None),
            "--mf_pretrain and --mlp_pretrain must be given together",
        )
        _check(
            self.mf_pretrain is None or self.model == "neumf",
            "--mf_pretrain/--mlp_pretrain apply to --model=neumf only",
        )
        _check(self.dtype in ("float32", "bfloat16"), "--dtype must be float32 or bfloat16")
        _check(self.embed_dim > 0, f"--embed_dim must be > 0, got {self.embed_dim}")
        _check(
            all(w > 0 for w in self.tower_layers),
            f"--tower_layers must be positive widths, got {self.tower_layers}",
        )
        _check(self.temperature > 0, f"--temperature must be > 0, got {self.temperature}")
        _check(
            self.y_range is None or (len(self.y_range) == 2 and self.y_range[0] < self.y_range[1]),
            f"--y_range must be 'low,high' with low < high (or 'none'), got {self.y_range}",
        )
        _check(0.0 <= self.dropout < 1.0, f"--dropout must be in [0, 1), got {self.dropout}")

    @property
    def pretrained(self) -> bool:
        return self.mf_pretrain is not None

    def layer_reg(self, i: int) -> float:
        """L2 coefficient of MLP layer i (0 = the embedding rows)."""
        return self.reg_layers[0] if len(self.reg_layers) == 1 else self.reg_layers[i]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to train.

    num_neg: sampled negatives per training positive, redrawn every epoch.
    negatives_exclude: "train" (authors: only the user's training items are excluded) or
      "known" (also the validation and test items, so a held-out item is never a negative).
    learner: optax optimiser; pretrain_learner: the optimiser NeuMF continues with after
      pre-training ("sgd", the paper's text, or "same", the authors' README command).
    lazy_embeddings: row-sparse Adam for embedding tables (only rows in the batch are updated);
      False is the paper-faithful dense update.
    batch_layout: "shuffled" (paper: every sample shuffled on its own into batches of
      batch_size) or "grouped" (each positive stays beside its num_neg negatives; batches of
      batch_size // (1 + num_neg) groups; the user's share of the MLP's first layer is then
      computed once per group). NCF (pointwise BCE) models only.
    loss: "bce" (pointwise; the only loss of the NCF models), or for two-tower models "softmax"
      (cross-entropy over the positive and its num_neg negatives) or "in_batch" (sampled softmax
      over the batch's positives with log-Q correction; num_neg is unused).
    weight_decay: optimiser weight decay on every parameter (rating and feature drivers): the
      decoupled AdamW decay for learner "adamw", an L2 gradient term for the other learners.
    lr_schedule: "constant", "cosine" (decay to 0 over the run) or "onecycle" (warm up to
      learning_rate over 30% of the steps, then anneal); rating and feature drivers.
    lr_warmup_steps: the learning rate rises linearly from 0 over this many steps (0: constant).
    adam_b1, adam_b2, adam_eps: Adam's (and AdamW's) moment decays and epsilon; the defaults are
      optax's, the MLPerf large-batch NCF uses b1=0.25, b2=0.5.
    num_seeds: train this many replicas (seeds seed, seed+1, ...) at once with jax.vmap.
    mesh_model: devices on the mesh's "model" axis (embedding tables split by rows over them);
      the other devices split each batch ("data" axis). 1 = pure data parallelism.
    """

    epochs: int = 20
    batch_size: int = 256
    num_neg: int = 4
    negatives_exclude: str = "train"
    learner: str = "adam"
    learning_rate: float = 0.001
    pretrain_learner: str = "sgd"
    lazy_embeddings: bool = False
    batch_layout: str = "shuffled"
    seed: int = 0
    loss: str = "bce"
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    lr_warmup_steps: int = 0
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    adam_eps: float = 1e-8
    num_seeds: int = 1
    mesh_model: int = 1

    def __post_init__(self):
        _check(self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}")
        _check(self.batch_size >= 1, f"--batch_size must be >= 1, got {self.batch_size}")
        _check(self.num_neg >= 1, f"--num_neg must be >= 1, got {self.num_neg}")
        _check(
            self.negatives_exclude in TRAIN_NEGATIVES_EXCLUDE,
            f"--negatives_exclude must be one of {TRAIN_NEGATIVES_EXCLUDE}",
        )
        _check(self.learner in LEARNERS, f"--learner must be one of {LEARNERS}")
        _check(
            self.pretrain_learner in (*LEARNERS, "same"),
            f"--pretrain_learner must be 'same' or one of {LEARNERS}",
        )
        _check(self.learning_rate > 0, f"--learning_rate must be > 0, got {self.learning_rate}")
        _check(
            not (self.lazy_embeddings and self.learner != "adam"),
            "--lazy_embeddings is a row-sparse Adam: use it with --learner=adam",
        )
        _check(self.loss in LOSSES, f"--loss must be one of {LOSSES}, got {self.loss!r}")
        _check(
            self.batch_layout in BATCH_LAYOUTS,
            f"--batch_layout must be one of {BATCH_LAYOUTS}, got {self.batch_layout!r}",
        )
        _check(
            self.batch_layout == "shuffled" or self.batch_size >= 1 + self.num_neg,
            f"--batch_layout=grouped needs --batch_size >= 1 + --num_neg = {1 + self.num_neg}",
        )
        _check(self.weight_decay >= 0, f"--weight_decay must be >= 0, got {self.weight_decay}")
        _check(self.lr_schedule in LR_SCHEDULES, f"--lr_schedule must be one of {LR_SCHEDULES}")
        _check(
            not (self.lazy_embeddings and self.weight_decay),
            "--weight_decay does not reach row-sparse tables: use --reg_mf without "
            "--lazy_embeddings, or drop --lazy_embeddings",
        )
        _check(self.lr_warmup_steps >= 0, "--lr_warmup_steps must be >= 0")
        _check(
            0 <= self.adam_b1 < 1 and 0 <= self.adam_b2 < 1 and self.adam_eps > 0,
            "--adam_b1 and --adam_b2 must be in [0, 1) and --adam_eps > 0",
        )
        default_adam = (self.adam_b1, self.adam_b2, self.adam_eps) == (0.9, 0.999, 1e-8)
        _check(
            not (self.lazy_embeddings and not default_adam),
            "--lazy_embeddings uses Adam's default b1/b2/eps: drop --adam_* or --lazy_embeddings",
        )
        _check(self.num_seeds >= 1, f"--num_seeds must be >= 1, got {self.num_seeds}")
        _check(self.mesh_model >= 1, f"--mesh_model must be >= 1, got {self.mesh_model}")

    def require_defaults(self, driver: str, *fields: str) -> None:
        """A driver that does not implement `fields` refuses any non-default value of them, so
        no flag is silently ignored (e.g. `--num_seeds` outside the NCF scripts)."""
        default = TrainConfig()
        for name in fields:
            value = getattr(self, name)
            _check(
                value == getattr(default, name),
                f"--{name}={value} is not supported by {driver}: drop it "
                f"(the NCF scripts experiments.gmf/mlp/neumf support it)",
            )


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """How to evaluate: K, the tie policy, the protocol and how the reported epoch is chosen."""

    top_k: int = 10
    ties: str = "pessimistic"
    protocol: str = "sampled"
    select_epoch: str = "test"
    chunk_size: int = 1024

    def __post_init__(self):
        _check(self.top_k >= 1, f"--top_k must be >= 1, got {self.top_k}")
        _check(self.ties in TIES, f"--ties must be one of {TIES}")
        _check(self.protocol in EVAL_PROTOCOLS, f"--eval_protocol must be one of {EVAL_PROTOCOLS}")
        _check(
            self.select_epoch in EPOCH_SELECTIONS,
            f"--select_epoch must be one of {EPOCH_SELECTIONS}",
        )
        _check(self.chunk_size >= 1, "--eval_chunk_size must be >= 1")


CLICK_SPLITS = ("last_day", "random")


@dataclasses.dataclass(frozen=True)
class ClickConfig:
    """The click-through task with side features (`ncf_jax.ctr`, `ncf_jax.data.clicks`).

    label_col, continuous_cols, categorical_cols: columns of a "csv:" click log (user, item,
      timestamp and separator come from DataConfig's csv_* fields).
    split: "last_day" (each user's rows on their latest day are test; users active on one day
      only stay in train) or "random" (a seeded DataConfig.test_fraction of the rows).
    rating_threshold: built-in MovieLens task: label = rating >= it.
    categorical_dim: embedding width of each categorical feature.
    threshold: probability cut of precision / recall / F1.
    fpr_weight: the reported best threshold maximises TPR - fpr_weight * FPR.
    baseline: also train the same model without features, reported under "baseline".
    """

    label_col: str = "label"
    continuous_cols: tuple[str, ...] = ()
    categorical_cols: tuple[str, ...] = ()
    split: str = "last_day"
    rating_threshold: float = 4.0
    categorical_dim: int = 4
    threshold: float = 0.5
    fpr_weight: float = 1.0
    baseline: bool = True

    def __post_init__(self):
        _check(self.split in CLICK_SPLITS, f"--click_split must be one of {CLICK_SPLITS}")
        _check(self.categorical_dim >= 1, "--categorical_dim must be >= 1")
        _check(0.0 <= self.threshold <= 1.0, f"--threshold must be in [0, 1], got {self.threshold}")
        _check(self.fpr_weight >= 0, f"--fpr_weight must be >= 0, got {self.fpr_weight}")
        both = set(self.continuous_cols) & set(self.categorical_cols)
        _check(not both, f"columns {sorted(both)} are both continuous and categorical")
