"""Task: two-tower (DSSM-style) retrieval. User and item towers trained with a candidate loss
(BCE or softmax over a positive and `num_neg` on-device negatives, or in-batch softmax with
log-Q correction), ranked like NCF, beside the most-popular ranking under the same protocol.

`build` describes the run (model, loss, batches, evaluator, selection, the popularity baseline)
and `ncf_jax.assembly` makes it the record (seeds, optimiser, state, devices).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from ncf_jax import (
    assembly,
    batching,
    evaluate,
    history,
    interactions,
    losses,
    optim,
    reporting,
    train,
)
from ncf_jax.config import (
    DataConfig,
    EvalConfig,
    TrainConfig,
    dtype,
    ints,
    option,
    require,
    require_validation_for,
    resume_options,
    validate,
)
from ncf_jax.config import negatives_exclude as exclude_option
from ncf_jax.config import num_neg as num_neg_option
from ncf_jax.data import load_dataset
from ncf_jax.data.types import InteractionData
from ncf_jax.errors import UsageError
from ncf_jax.loop import Task
from ncf_jax.models import create_model, scoring

LOSSES = ("bce", "softmax", "in_batch")


@dataclasses.dataclass(frozen=True)
class TwoTowerModelConfig:
    """The towers: embedding size, the MLP after it, and the score <u, v> / temperature (u and
    v L2-normalised with `cosine`)."""

    model: str = option("two_tower", "Model name (a registered model with towers).")
    embed_dim: int = option(
        16, "Two-tower embedding size.", check=lambda v: v > 0, message="{flag} must be > 0"
    )
    tower_layers: tuple[int, ...] = option(
        (),
        "Widths of the MLP after each tower's embedding ('' = embedding only; last is linear).",
        parse=ints("tower_layers"),
    )
    cosine: bool = option(False, "L2-normalise both towers' vectors.")
    temperature: float = option(
        1.0, "Score = dot / temperature.", check=lambda v: v > 0, message="{flag} must be > 0"
    )
    dtype: str = dtype()

    def __post_init__(self):
        validate(self)
        require(
            all(w > 0 for w in self.tower_layers),
            f"--tower_layers must be positive widths, got {self.tower_layers}",
        )


@dataclasses.dataclass(frozen=True)
class TwoTowerTrainConfig(TrainConfig):
    """loss: "bce" (pointwise over 1 positive + num_neg negatives), "softmax" (cross-entropy over
    the same candidates) or "in_batch" (sampled softmax over the batch's positives with log-Q
    correction; num_neg is unused)."""

    num_neg: int = num_neg_option()
    negatives_exclude: str = exclude_option()
    loss: str = option(
        "bce",
        "bce: 1 positive + num_neg negatives, pointwise; softmax: cross-entropy over the same "
        "candidates; in_batch: in-batch sampled softmax with log-Q correction.",
        choices=LOSSES,
    )


CONFIGS = {
    "data": DataConfig,
    "model": TwoTowerModelConfig,
    "train": TwoTowerTrainConfig,
    "eval": EvalConfig,
}


def load_data(configs: dict) -> InteractionData:
    return load_dataset(configs["data"])


def make_loss_fn(model, loss: str) -> train.LossFn:
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


def popularity(data: InteractionData) -> np.ndarray:
    """[num_items] float32 number of training interactions of each item."""
    return np.bincount(data.train_items, minlength=data.num_items).astype(np.float32)


def evaluate_popularity(data: InteractionData, eval_config: EvalConfig) -> dict:
    """Metrics of ranking every user's unseen items by training popularity (ties: lower id),
    under the same protocol and evaluators as the trained models."""
    counts = jnp.asarray(popularity(data))
    score_fn = lambda params, users, items: counts[items]
    score_all_fn = lambda params, users: jnp.broadcast_to(counts, (users.shape[0], len(counts)))
    evaluators = evaluate.make_ranking_evaluators(score_fn, score_all_fn, data, eval_config)
    metrics = evaluate.combine(evaluators)(None, jax.random.key(0))
    return {k: float(v) for k, v in jax.device_get(metrics).items()}


def build(data: InteractionData, configs: dict, *, extra: dict | None = None) -> Task:
    """The record of one two-tower run (or of `num_seeds` replicas) on `data`."""
    model_config, train_config, eval_config = configs["model"], configs["train"], configs["eval"]
    c = train_config
    require_validation_for(eval_config.select_epoch, data.has_validation)

    # Model, data, evaluator and the popularity baseline.
    model = create_model(model_config, data.num_users, data.num_items)
    if not scoring.has_towers(model):
        raise UsageError(f"--model={model_config.model} has no towers; use experiments.neumf "
                         f"--model={model_config.model} (or --model=two_tower)")  # fmt: skip
    dummy = jnp.zeros((1,), jnp.int32)
    score_fn, score_all_fn = scoring.score_fns(model, data.num_items)
    evaluators = evaluate.make_ranking_evaluators(score_fn, score_all_fn, data, eval_config)
    baseline = evaluate_popularity(data, eval_config)
    logging.info("popularity baseline: %s", reporting.format_metrics(baseline))
    num_neg = 0 if c.loss == "in_batch" else c.num_neg
    recipe = assembly.Recipe(
        init=lambda key: jax.jit(model.init)(key, dummy, dummy),  # one compile, not one per op
        loss_fn=make_loss_fn(model, c.loss),
        make_batches=functools.partial(
            batching.candidate_batches, num_neg=num_neg, batch_size=c.batch_size
        ),
        data=interactions.from_data(data, exclude=c.negatives_exclude),
        evaluate=evaluate.combine(evaluators),
        select=history.selected(f"hr@{eval_config.top_k}", eval_config.select_epoch),
        optimizer=lambda rate: optim.make_optimizer(c.learner, rate),
        learning_rate=c.learning_rate,
    )
    head = reporting.describe_run(
        "two_tower", data.name, configs, extra=extra, eval_protocol=eval_config.protocol,
        loss=c.loss, baseline={"popularity": baseline},
    )  # fmt: skip
    return assembly.assemble(
        recipe, seed=c.seed, epochs=c.epochs, stop_at=c.stop_at, patience=c.patience,
        num_seeds=c.num_seeds, mesh=assembly.make_mesh(),
        results=head, options=resume_options(configs), has_validation=data.has_validation,
    )  # fmt: skip
