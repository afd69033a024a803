"""Stage: the driver for retrieval models. Two-tower training with candidate losses, score
functions for every model, and the most-popular baseline under the same evaluators.

`train_and_evaluate_two_tower` reads like `runner.train_and_evaluate`: model, optimiser, state,
epoch (rows of one positive and `num_neg` on-device negatives, or positives only for in-batch
softmax), evaluators, then the shared `runner.fit` loop (resume, checkpoints, results.json).
"""

from __future__ import annotations

import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from ncf_jax import batching, interactions, losses, optim, reporting, runner, train
from ncf_jax.config import NCF_RUNNER_ONLY, DataConfig, EvalConfig, ModelConfig, TrainConfig
from ncf_jax.data.types import InteractionData
from ncf_jax.models import create_model


def has_towers(model) -> bool:
    """Whether `model` exposes user / item towers (so full ranking is one matrix product)."""
    return hasattr(model, "user_vectors") and hasattr(model, "score_matrix")


def score_fns(model, num_items: int):
    """(score_fn, score_all_fn) of any registered model, as `ncf_jax.evaluate` takes them.

    Two-tower models score candidates and the catalogue with their towers (each item vector is
    computed once per chunk of users); pointwise models go through `runner.make_score_fn`.
    """
    if not has_towers(model):
        return runner.make_score_fn(model.apply), runner.make_score_all_fn(model.apply, num_items)
    all_items = jnp.arange(num_items, dtype=jnp.int32)

    def score_fn(params, users, items):
        return model.apply(params, users, items, method="score_candidates")

    def score_all_fn(params, users):
        return model.apply(params, users, all_items, method="score_matrix")

    return score_fn, score_all_fn


def make_two_tower_loss_fn(model, loss: str) -> train.LossFn:
    """loss_fn(params, batch) of `batching.candidate_batches` rows for `--loss`."""

    def loss_fn(params, batch):
        users, items, weights = batch["users"], batch["items"], batch["weights"]
        if loss == "in_batch":
            positives = items[:, 0]
            logits = model.apply(params, users, positives, method="score_matrix")
            return losses.in_batch_softmax(logits, positives, batch["log_q"], weights)
        logits = model.apply(params, users, items, method="score_candidates")
        if loss == "softmax":
            return losses.sampled_softmax(logits, weights)
        return losses.sampled_bce(logits, weights)

    return loss_fn


# ------------------------------------------------------------------------ popularity baseline
def popularity(data: InteractionData) -> np.ndarray:
    """[num_items] float32 number of training interactions of each item."""
    return np.bincount(data.train_items, minlength=data.num_items).astype(np.float32)


def evaluate_popularity(data: InteractionData, eval_config: EvalConfig) -> dict:
    """Metrics of ranking every user's unseen items by training popularity (ties: lower id),
    under the same protocol and evaluators as the trained models."""
    counts = jnp.asarray(popularity(data))

    def score_fn(params, users, items):
        return counts[items]

    def score_all_fn(params, users):
        return jnp.broadcast_to(counts, (users.shape[0], data.num_items))

    evaluators = runner.make_evaluators(
        None, data, eval_config, score_fn=score_fn, score_all_fn=score_all_fn
    )
    return runner.evaluate_all(evaluators, None, jax.random.key(0))


# --------------------------------------------------------------------------------- the driver
def _check_two_tower(model, model_config: ModelConfig, train_config: TrainConfig) -> None:
    if not has_towers(model):
        raise ValueError(
            f"--model={model_config.model} has no towers; use experiments.{model_config.model} "
            "(or --model=two_tower)"
        )
    train_config.require_defaults("the two-tower script", "lazy_embeddings", *NCF_RUNNER_ONLY)


def train_and_evaluate_two_tower(
    data: InteractionData,
    model_config: ModelConfig,
    train_config: TrainConfig,
    eval_config: EvalConfig,
    workdir: str | pathlib.Path,
    *,
    extra: dict | None = None,
    data_config: DataConfig | None = None,
) -> dict:
    """Trains a two-tower model; writes WORKDIR/results.json with the popularity baseline.

    results["baseline"]["popularity"] holds the most-popular ranking's metrics under the same
    protocol; `extra` is copied into results.json; `data_config` is saved for recommendation.
    """
    if eval_config.select_epoch == "valid" and not data.has_validation:
        raise ValueError("--select_epoch=valid needs a validation split: add --validation")

    # Model, optimiser, state.
    model = create_model(model_config, data.num_users, data.num_items)
    _check_two_tower(model, model_config, train_config)
    init_key, key = jax.random.split(jax.random.key(train_config.seed))
    dummy = jnp.zeros((1,), jnp.int32)
    tx = optim.make_optimizer(train_config.learner, train_config.learning_rate)
    state = train.create_train_state(model.init(init_key, dummy, dummy), tx, lazy=False)

    # Data on device, the epoch, the evaluators.
    device_data = interactions.from_data(data, exclude=train_config.negatives_exclude)
    num_neg = 0 if train_config.loss == "in_batch" else train_config.num_neg
    make_batches = functools.partial(
        batching.candidate_batches, num_neg=num_neg, batch_size=train_config.batch_size
    )
    loss_fn = make_two_tower_loss_fn(model, train_config.loss)
    train_epoch = train.make_train_epoch(loss_fn, tx, make_batches)
    score_fn, score_all_fn = score_fns(model, data.num_items)
    evaluators = runner.make_evaluators(
        model.apply, data, eval_config, score_fn=score_fn, score_all_fn=score_all_fn
    )
    baseline = evaluate_popularity(data, eval_config)
    logging.info("popularity baseline: %s", reporting.format_metrics(baseline))

    hr = f"hr@{eval_config.top_k}"
    configs = {"model": model_config, "train": train_config, "eval": eval_config}
    results = runner.describe_run(
        data.name,
        configs | {"data": data_config},
        extra=extra,
        eval_protocol=eval_config.protocol,
        loss=train_config.loss,
        baseline={"popularity": baseline},
    )
    return runner.fit(
        state,
        train_epoch,
        device_data,
        lambda params, key: runner.evaluate_all(evaluators, params, key),
        key=key,
        epochs=train_config.epochs,
        workdir=workdir,
        results=results,
        select=runner.selected(hr, eval_config),
        has_validation=data.has_validation,
    )
