"""Task: explicit ratings. BiasedMF or RatingMLP trained with MSE on the shuffled (user, item,
rating) rows, evaluated by RMSE / MAE / MSE; the reported epoch has the lowest RMSE.

`build` describes the run (model, loss, batches, evaluators, selection) and `ncf_jax.assembly`
makes it the record: seeds, optimiser, state, and in a multi-process job batches split over the
"data" axis of a mesh of every process's devices, parameters replicated; one process trains on
one device.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from ncf_jax import assembly, batching, evaluate, history, losses, metrics, optim, sharding, train
from ncf_jax.config import (
    DataConfig,
    TrainConfig,
    chunk_size,
    dropout,
    dtype,
    option,
    require,
    require_row_sparse_learner,
    require_validation_for,
    resume_options,
    select_epoch,
    validate,
)
from ncf_jax.config import layers as layers_option
from ncf_jax.config import lazy_embeddings as lazy_option
from ncf_jax.config import lr_schedule as schedule_option
from ncf_jax.config import num_factors as factors_option
from ncf_jax.config import reg_layers as reg_layers_option
from ncf_jax.config import reg_mf as reg_mf_option
from ncf_jax.config import weight_decay as decay_option
from ncf_jax.data import load_dataset
from ncf_jax.data.types import InteractionData
from ncf_jax.errors import DataError, UsageError
from ncf_jax.loop import Task
from ncf_jax.models import create_model, layers
from ncf_jax.reporting import describe_run

RATING_MODELS = ("biased_mf", "rating_mlp")


def _y_range(text: str):
    if text.strip().lower() in ("", "none"):
        return None
    values = tuple(float(x) for x in text.strip("[]").split(",") if x.strip())
    if len(values) != 2:
        raise UsageError(f"--y_range must be 'low,high' or 'none', got {text!r}")
    return values


@dataclasses.dataclass(frozen=True)
class RatingModelConfig:
    """A rating model: BiasedMF (num_factors, reg_mf) or RatingMLP (layers, dropout); both
    squash their output to y_range with a scaled sigmoid (None: a raw output)."""

    model: str = option("biased_mf", "Rating model.", choices=RATING_MODELS)
    num_factors: int = factors_option()
    layers: tuple[int, ...] = layers_option()
    reg_mf: float = reg_mf_option()
    reg_layers: tuple[float, ...] = reg_layers_option()
    y_range: tuple[float, float] | None = option(
        (0.0, 5.5),
        "Predictions squashed to (low, high) by a scaled sigmoid; 'none' for a raw output. "
        "Ratings outside it stop the run.",
        parse=_y_range,
    )
    dropout: float = dropout()
    dtype: str = dtype()

    def __post_init__(self):
        validate(self)
        require(
            self.y_range is None or (len(self.y_range) == 2 and self.y_range[0] < self.y_range[1]),
            f"--y_range must be 'low,high' with low < high (or 'none'), got {self.y_range}",
        )


@dataclasses.dataclass(frozen=True)
class RatingTrainConfig(TrainConfig):
    lazy_embeddings: bool = lazy_option()
    weight_decay: float = decay_option()
    lr_schedule: str = schedule_option()

    def __post_init__(self):
        validate(self)
        require_row_sparse_learner(self.lazy_embeddings, self.learner)
        require(
            not (self.lazy_embeddings and self.weight_decay),
            "--weight_decay does not reach row-sparse tables: use --reg_mf without "
            "--lazy_embeddings, or drop --lazy_embeddings",
        )


@dataclasses.dataclass(frozen=True)
class RatingEvalConfig:
    select_epoch: str = select_epoch()
    chunk_size: int = chunk_size(65536)

    def __post_init__(self):
        validate(self)


CONFIGS = {
    "data": DataConfig,
    "model": RatingModelConfig,
    "train": RatingTrainConfig,
    "eval": RatingEvalConfig,
}


def rating_column(data_config: DataConfig) -> str:
    return data_config.csv_rating_col if data_config.dataset.startswith("csv:") else "rating"


def load_data(configs: dict) -> InteractionData:
    """The rated dataset; every rating is kept (no --rating_threshold) and lies in y_range."""
    data_config = configs["data"]
    require(
        data_config.rating_threshold is None,
        "--rating_threshold drops ratings: rating models need all of them",
    )
    require(rating_column(data_config) is not None, "a csv: rating dataset needs --csv_rating_col")
    data = load_dataset(data_config)
    check_ratings(data, configs["model"].y_range, column=rating_column(data_config))
    return data


def check_ratings(data: InteractionData, y_range, *, column: str = "rating", show: int = 5):
    """DataError naming the column and a few rows whose rating lies outside y_range [low, high].

    Rows are cited by split and ORIGINAL user / item id, as in the source file.
    """
    if y_range is None:
        return
    low, high = y_range
    bad_rows = []
    for split in ("train", "valid", "test"):
        ratings = getattr(data, f"{split}_ratings")
        bad = np.flatnonzero((ratings < low) | (ratings > high) | ~np.isfinite(ratings))
        users = data.user_ids[getattr(data, f"{split}_users")[bad]]
        items = data.item_ids[getattr(data, f"{split}_items")[bad]]
        bad_rows += [
            f"{split} user {u} item {i} rating {r:g}"
            for u, i, r in zip(users, items, ratings[bad], strict=True)
        ]
    if bad_rows:
        raise DataError(
            data.name,
            f"column {column!r} has {len(bad_rows)} value(s) outside y_range [{low:g}, "
            f"{high:g}], e.g. {'; '.join(bad_rows[:show])}. Widen --y_range or pass "
            "--y_range=none",
        )


def make_loss_fn(apply_fn, model_config: RatingModelConfig, tables: dict) -> train.LossFn:
    """Weighted MSE of the predicted ratings plus the NCF L2 penalties (--reg_mf/--reg_layers)."""

    def loss_fn(params, batch):
        users, items, weights = batch["users"], batch["items"], batch["weights"]
        predictions = apply_fn(
            params, users, items, train=True, rngs={"dropout": batch["dropout_key"]}
        )
        penalty = losses.l2_penalty(params, batch, weights, tables=tables,
                                    reg_mf=model_config.reg_mf,
                                    reg_layers=model_config.reg_layers)  # fmt: skip
        return losses.mse(predictions, batch["ratings"], weights) + penalty

    return loss_fn


def _chunk(array: np.ndarray, chunk: int) -> np.ndarray:
    pad = -len(array) % chunk
    return np.concatenate([array, np.zeros(pad, array.dtype)]).reshape(-1, chunk)


def make_rating_evaluator(predict_fn, users, items, ratings, *, chunk_size: int = 65536):
    """`evaluate(params, key=None) -> {"rmse", "mae", "mse"}` over held-out rated pairs.

    predict_fn(params, users [c], items [c]) -> [c] predicted ratings. The pairs are put on the
    device once, in [num_chunks, chunk] blocks scored with `jax.lax.map`.
    """
    n = len(users)
    if n == 0:
        raise UsageError("no held-out ratings to evaluate: check --split / --test_fraction")
    chunk = min(chunk_size, n)
    data = jax.device_put(
        {
            "users": _chunk(np.asarray(users, np.int32), chunk),
            "items": _chunk(np.asarray(items, np.int32), chunk),
            "ratings": _chunk(np.asarray(ratings, np.float32), chunk),
            "valid": _chunk(np.ones(n, bool), chunk),
        }
    )

    @jax.jit
    def _evaluate(params, data):
        predictions = jax.lax.map(lambda x: predict_fn(params, x["users"], x["items"]), data)
        args = (predictions.reshape(-1), data["ratings"].reshape(-1))
        weights = data["valid"].reshape(-1)
        return {
            "rmse": metrics.rmse(*args, weights=weights),
            "mae": metrics.mae(*args, weights=weights),
            "mse": metrics.mse(*args, weights=weights),
        }

    return lambda params, key=None: _evaluate(params, data)


def build(data: InteractionData, configs: dict, *, extra: dict | None = None) -> Task:
    """The record of one rating run (or of `num_seeds` replicas) on `data`'s train ratings."""
    model_config, train_config, eval_config = configs["model"], configs["train"], configs["eval"]
    c = train_config
    require_validation_for(eval_config.select_epoch, data.has_validation)

    # Devices: one process keeps one device; a multi-process job splits batches (and evaluation
    # rows) over "data", parameters replicated (`assembly.make_mesh`).
    mesh = assembly.make_mesh()

    # Model, optimiser, data, evaluators.
    model = create_model(model_config, data.num_users, data.num_items)
    apply_fn = sharding.data_parallel_apply(model.apply, mesh)
    dummy = jnp.zeros((1,), jnp.int32)
    tables = layers.table_labels(model, dummy, dummy)
    steps = -(-len(data.train_users) // c.batch_size) * c.epochs
    splits = ("test", "valid") if data.has_validation else ("test",)
    evaluators = {
        split: make_rating_evaluator(
            apply_fn,
            *(getattr(data, f"{split}_{name}") for name in ("users", "items", "ratings")),
            chunk_size=eval_config.chunk_size,
        )
        for split in splits
    }
    recipe = assembly.Recipe(
        init=lambda key: jax.jit(model.init)(key, dummy, dummy),
        loss_fn=make_loss_fn(apply_fn, model_config, tables),
        make_batches=functools.partial(batching.shuffled_batches, batch_size=c.batch_size),
        data=jax.device_put(
            {"users": data.train_users, "items": data.train_items, "ratings": data.train_ratings}
        ),
        evaluate=evaluate.combine(evaluators),
        select=history.selected("rmse", eval_config.select_epoch),
        mode="min",
        optimizer=lambda rate: optim.make_optimizer(c.learner, rate, weight_decay=c.weight_decay),
        learning_rate=optim.make_schedule(c.lr_schedule, c.learning_rate, steps),
        tables=tables,
        row_sparse=c.lazy_embeddings,
        row_learner=c.learner,
    )
    return assembly.assemble(
        recipe, seed=c.seed, epochs=c.epochs, stop_at=c.stop_at, patience=c.patience,
        num_seeds=c.num_seeds, mesh=mesh,
        results=describe_run("rating", data.name, configs, extra=extra),
        options=resume_options(configs), has_validation=data.has_validation,
    )  # fmt: skip
