"""Stage: optimiser. optax optimisers by the authors' `--learner` names, and row-sparse Adam.

Dense Adam touches every row of every embedding table at every step; at the paper's batch
size (256) that dominates a CPU epoch. Row-sparse ("lazy") Adam updates the moments and
values of the rows looked up in the batch only, as TensorFlow's LazyAdam does; rows not in
the batch keep stale moments (that is the approximation). Bias correction uses the global step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import struct

B1, B2, EPS = 0.9, 0.999, 1e-8  # optax.adam's defaults, shared by the lazy variant


def make_optimizer(learner: str, learning_rate) -> optax.GradientTransformation:
    """optax optimiser for the authors' learner names: adam, adagrad, rmsprop, sgd (+ adamw)."""
    if learner == "adam":
        return optax.adam(learning_rate, b1=B1, b2=B2, eps=EPS)
    if learner == "adamw":
        return optax.adamw(learning_rate, b1=B1, b2=B2, eps=EPS)
    if learner == "adagrad":
        return optax.adagrad(learning_rate)
    if learner == "rmsprop":
        return optax.rmsprop(learning_rate)
    if learner == "sgd":
        return optax.sgd(learning_rate)
    raise ValueError(f"unknown learner {learner!r}")


@struct.dataclass
class RowMoments:
    """Adam's first and second moments of one embedding table."""

    mu: jax.Array
    nu: jax.Array


def init_row_moments(table: jax.Array) -> RowMoments:
    return RowMoments(mu=jnp.zeros_like(table), nu=jnp.zeros_like(table))


def lazy_adam_rows(
    table: jax.Array,
    moments: RowMoments,
    rows: jax.Array,
    grads: jax.Array,
    count: jax.Array,
    *,
    learning_rate,
) -> tuple[jax.Array, RowMoments]:
    """Adam update of `table[rows]` only.

    Args:
      table: [num_rows, dim] parameters.
      moments: their Adam moments.
      rows: [r] unique row ids; ids >= num_rows are padding and are dropped.
      grads: [r, dim] gradients of those rows (summed over the batch's duplicates).
      count: int32 number of updates done before this one (global step).
      learning_rate: scalar or optax schedule of `count`.
    """
    lr = learning_rate(count) if callable(learning_rate) else learning_rate
    t = (count + 1).astype(jnp.float32)
    mu = B1 * moments.mu.at[rows].get(mode="fill", fill_value=0) + (1 - B1) * grads
    nu = B2 * moments.nu.at[rows].get(mode="fill", fill_value=0) + (1 - B2) * jnp.square(grads)
    step = lr * (mu / (1 - B1**t)) / (jnp.sqrt(nu / (1 - B2**t)) + EPS)
    new_rows = table.at[rows].get(mode="fill", fill_value=0) - step
    return table.at[rows].set(new_rows, mode="drop"), RowMoments(
        mu=moments.mu.at[rows].set(mu, mode="drop"), nu=moments.nu.at[rows].set(nu, mode="drop")
    )
