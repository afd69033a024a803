"""Stage: the driver of explicit rating prediction (BiasedMF, RatingMLP): batches, MSE loss,
RMSE / MAE / MSE evaluation and the shared epoch loop (`runner.fit`, best epoch by lowest RMSE).

Batches are the training (user, item, rating) rows, shuffled every epoch; there are no sampled
negatives. Dropout keys travel in the batch: the epoch key (`fold_in(train_key, epoch)`) is
split into one key per step, so a run is deterministic given --seed and a resumed run draws the
same masks as an uninterrupted one.
"""

from __future__ import annotations

import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from ncf_jax import batching, losses, metrics, optim, runner, train
from ncf_jax.config import NCF_RUNNER_ONLY, EvalConfig, ModelConfig, TrainConfig
from ncf_jax.data.types import InteractionData
from ncf_jax.models import create_model

RATING_MODELS = ("biased_mf", "rating_mlp")


def check_ratings(data: InteractionData, y_range, *, column: str = "rating", show: int = 5):
    """ValueError naming the column and a few rows whose rating lies outside y_range [low, high].

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
        raise ValueError(
            f"{data.name}: column {column!r} has {len(bad_rows)} value(s) outside "
            f"y_range [{low:g}, {high:g}], e.g. {'; '.join(bad_rows[:show])}. Widen --y_range "
            f"or pass --y_range=none"
        )


def shuffled_batches(key: jax.Array, rows: dict, *, batch_size: int) -> batching.Batches:
    """One epoch of shuffled labelled `rows` (e.g. {"users", "items", "ratings"}) as
    [steps, batch_size, ...] arrays, plus "weights" and one "dropout_key" per step."""
    perm_key, dropout_key = jax.random.split(key)
    batches = batching.shuffle_into_batches(perm_key, rows, batch_size=batch_size)
    steps = batches["weights"].shape[0]
    return batches | {"dropout_key": jax.random.split(dropout_key, steps)}


def make_loss_fn(apply_fn, model_config: ModelConfig) -> train.LossFn:
    """Weighted MSE of the predicted ratings plus the NCF L2 penalties (--reg_mf/--reg_layers)."""

    def loss_fn(params, batch):
        users, items, weights = batch["users"], batch["items"], batch["weights"]
        predictions = apply_fn(
            params, users, items, train=True, rngs={"dropout": batch["dropout_key"]}
        )
        penalty = losses.l2_penalty(params, users, items, weights, model_config)
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
        raise ValueError("no held-out ratings to evaluate")
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


def make_evaluators(apply_fn, data: InteractionData, eval_config: EvalConfig) -> dict:
    """{"test": evaluate, "valid": evaluate?} of RMSE / MAE / MSE."""
    splits = ("test", "valid") if data.has_validation else ("test",)
    return {
        split: make_rating_evaluator(
            apply_fn,
            getattr(data, f"{split}_users"),
            getattr(data, f"{split}_items"),
            getattr(data, f"{split}_ratings"),
            chunk_size=max(eval_config.chunk_size, 65536),
        )
        for split in splits
    }


def train_and_evaluate(
    data: InteractionData,
    model_config: ModelConfig,
    train_config: TrainConfig,
    eval_config: EvalConfig,
    workdir: str | pathlib.Path,
    *,
    rating_column: str = "rating",
    extra: dict | None = None,
) -> dict:
    """Trains a rating model on `data`'s train ratings; writes WORKDIR/results.json with `best`
    = test rmse, mae and mse at the epoch of lowest (test or validation) RMSE."""
    if model_config.model not in RATING_MODELS:
        raise ValueError(f"--model must be one of {RATING_MODELS} for ratings")
    train_config.require_defaults("the ratings script", *NCF_RUNNER_ONLY)
    if eval_config.select_epoch == "valid" and not data.has_validation:
        raise ValueError("--select_epoch=valid needs a validation split: add --validation")
    check_ratings(data, model_config.y_range, column=rating_column)

    # Model, optimiser, state.
    model = create_model(model_config, data.num_users, data.num_items)
    init_key, key = jax.random.split(jax.random.key(train_config.seed))
    dummy = jnp.zeros((1,), jnp.int32)
    steps = -(-len(data.train_users) // train_config.batch_size) * train_config.epochs
    learning_rate = optim.make_schedule(train_config.lr_schedule, train_config.learning_rate, steps)
    tx = optim.make_optimizer(
        train_config.learner, learning_rate, weight_decay=train_config.weight_decay
    )
    lazy = train_config.lazy_embeddings
    state = train.create_train_state(jax.jit(model.init)(init_key, dummy, dummy), tx, lazy=lazy)

    # Data on device, the epoch, the evaluators.
    rows = jax.device_put(
        {"users": data.train_users, "items": data.train_items, "ratings": data.train_ratings}
    )
    make_batches = functools.partial(shuffled_batches, batch_size=train_config.batch_size)
    train_epoch = train.make_train_epoch(
        make_loss_fn(model.apply, model_config),
        tx,
        make_batches,
        lazy=lazy,
        learning_rate=learning_rate,
    )
    evaluators = make_evaluators(model.apply, data, eval_config)

    configs = {"model": model_config, "train": train_config, "eval": eval_config}
    results = runner.describe_run(data.name, configs, extra=extra, task="rating")
    return runner.fit(
        state,
        train_epoch,
        rows,
        lambda params, key: runner.evaluate_all(evaluators, params, key),
        key=key,
        epochs=train_config.epochs,
        workdir=workdir,
        results=results,
        select=runner.selected("rmse", eval_config),
        mode="min",
        has_validation=data.has_validation,
    )
