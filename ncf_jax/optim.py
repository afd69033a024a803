"""Stage: optimiser. optax optimisers by the authors' `--learner` names, and row-sparse Adam.

Dense Adam touches every row of every embedding table at every step; at the paper's batch
size (256) that dominates a CPU epoch. Row-sparse Adam (`ncf_jax.row_sparse`) updates the
moments and values of the rows looked up in the batch only; its arithmetic is `adam_rows`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import struct

B1, B2, EPS = 0.9, 0.999, 1e-8  # optax.adam's defaults, shared by row-sparse Adam


def with_warmup(learning_rate, warmup_steps: int):
    """`learning_rate` (a float or an optax schedule), ramped linearly from 0 over the first
    `warmup_steps` steps (0: unchanged); the schedule then continues from step 0 of its own.

    Large-batch Adam (MLPerf NCF, batch 2^20) starts with a burst of near-sign updates on the
    randomly initialised towers; ramping the rate over the first steps keeps them small.
    """
    if warmup_steps <= 0:
        return learning_rate
    after = learning_rate if callable(learning_rate) else optax.constant_schedule(learning_rate)
    peak = float(after(0))
    return optax.join_schedules(
        [optax.linear_schedule(0.0, peak, warmup_steps), after], [warmup_steps]
    )


def make_optimizer(
    learner: str,
    learning_rate,
    *,
    weight_decay: float | None = None,
    b1: float = B1,
    b2: float = B2,
    eps: float = EPS,
) -> optax.GradientTransformation:
    """optax optimiser for the authors' learner names: adam, adagrad, rmsprop, sgd (+ adamw).

    weight_decay: None keeps each optimiser's own default (optax.adamw's 1e-4, none for the
    others). A number is AdamW's decoupled decay for "adamw"; for the other learners it adds
    `weight_decay * param` to the gradient before the update (coupled L2).
    b1, b2, eps: Adam's and AdamW's moment decays and epsilon (others ignore them).
    """
    if learner == "adamw":
        decay = {} if weight_decay is None else {"weight_decay": weight_decay}
        return optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, **decay)
    if weight_decay:
        base = make_optimizer(learner, learning_rate, b1=b1, b2=b2, eps=eps)
        return optax.chain(optax.add_decayed_weights(weight_decay), base)
    if learner == "adam":
        return optax.adam(learning_rate, b1=b1, b2=b2, eps=eps)
    if learner == "adagrad":
        return optax.adagrad(learning_rate)
    if learner == "rmsprop":
        return optax.rmsprop(learning_rate)
    if learner == "sgd":
        return optax.sgd(learning_rate)
    raise ValueError(f"unknown learner {learner!r}")


def make_schedule(name: str, learning_rate: float, total_steps: int):
    """A learning rate (float) or optax schedule of the step, by `TrainConfig.lr_schedule`.

    "constant": learning_rate; "cosine": cosine decay from it to 0 over total_steps;
    "onecycle": optax's one-cycle (30% warm-up to learning_rate, then cosine annealing).
    """
    if name == "constant":
        return learning_rate
    if name == "cosine":
        return optax.cosine_decay_schedule(learning_rate, max(total_steps, 1))
    if name == "onecycle":
        return optax.cosine_onecycle_schedule(max(total_steps, 1), learning_rate)
    raise ValueError(f"unknown lr_schedule {name!r}")


@struct.dataclass
class RowMoments:
    """Adam's first and second moments of one embedding table."""

    mu: jax.Array
    nu: jax.Array


def init_row_moments(table: jax.Array) -> RowMoments:
    return RowMoments(mu=jnp.zeros_like(table), nu=jnp.zeros_like(table))


def rate_at(learning_rate, count):
    """The learning rate at update `count`: a float as it is, an optax schedule evaluated."""
    return learning_rate(count) if callable(learning_rate) else learning_rate


def adam_rows(rows, mu, nu, grads, count, learning_rate) -> tuple:
    """(rows, mu, nu) after one Adam step of rows with moments mu, nu and gradients grads
    (all [r, dim]); count: int32 updates done before this one; learning_rate: scalar or
    optax schedule of `count`. The arithmetic every row-sparse Adam path shares."""
    lr = rate_at(learning_rate, count)
    t = (count + 1).astype(jnp.float32)
    mu = B1 * mu + (1 - B1) * grads
    nu = B2 * nu + (1 - B2) * jnp.square(grads)
    step = lr * (mu / (1 - B1**t)) / (jnp.sqrt(nu / (1 - B2**t)) + EPS)
    return rows - step, mu, nu
