"""Stage: train step and epoch. A TrainState pytree, a pure step, and a scanned, jitted epoch.

An epoch is one device call: negatives are sampled, rows shuffled and every step run under
`jax.lax.scan`; the only value fetched per epoch is the mean loss. Keys derive from
`fold_in(key, epoch)`, so a resumed run draws exactly the numbers of an uninterrupted one.
With embedding tables the scan runs on them packed (`ncf_jax.tables`); row-sparse training
updates only a batch's rows (`ncf_jax.row_sparse`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from ncf_jax import xla
from ncf_jax.batching import Batches, StepBatches
from ncf_jax.row_sparse import UPDATES, init_optimizer
from ncf_jax.tables import (
    LossFn,
    packed_dense_step,
    packed_state,
    packing,
    table_groups,
    unpacked_state,
    zero_sums,
)


@struct.dataclass
class TrainState:
    """step: int32 updates done; epoch: int32 epochs done; params: Flax variables;
    opt_state: optax state of the dense parameters (all of them unless row-sparse);
    table_moments: {table path: RowMoments} under row-sparse Adam, else {}."""

    step: jax.Array
    epoch: jax.Array
    params: Any
    opt_state: Any
    table_moments: Any


def create_train_state(
    params,
    tx: optax.GradientTransformation,
    *,
    row_sparse: bool = False,
    tables: dict | None = None,
    row_learner: str = "adam",
) -> TrainState:
    """The state before the first step. Row-sparse training updates the rows of `tables`
    ({path: Table}, `layers.table_labels`) by `row_learner` apart from the dense parameters
    (`tx`, on one flat vector: `row_sparse.dense_tx`); Adam keeps each table's moments."""
    if row_sparse:
        opt_state, moments = init_optimizer(params, tx, tables, row_learner)
    else:
        opt_state, moments = tx.init(params), {}
    step, epoch = jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32)  # distinct buffers
    return TrainState(step, epoch, params, opt_state, moments)


def dense_step(state: TrainState, batch: Batches, *, loss_fn: LossFn, tx) -> tuple:
    """(state, loss): one optax step on every parameter."""
    loss, grads = jax.value_and_grad(loss_fn)(state.params, batch)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), loss


def make_train_epoch(
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    make_batches: Callable[[jax.Array, Any], Batches],
    *,
    row_sparse: bool = False,
    learning_rate=None,
    tables: dict | None = None,
    row_learner: str = "adam",
):
    """A jitted `train_epoch(state, data, key) -> (state, mean_loss)`; `state` is donated.
    Row-sparse training updates only the rows of `tables` (`layers.table_labels`) that a batch
    looks up, by `row_learner` (`row_sparse.UPDATES`), and the state must come from
    `create_train_state` with the same `row_learner`. With `tables`, the epoch runs on them
    packed (`tables.packed_state`), dense training too unless its L2 penalty reads their rows
    (`tables.packing`).

    `make_batches(key, data)` builds the epoch's `[steps, batch, ...]` arrays on device (e.g.
    `functools.partial(batching.epoch_batches, num_neg=4, batch_size=256)`); the epoch's key
    is `fold_in(key, state.epoch)`: same key, same epoch, same numbers.
    """
    if row_sparse:  # always on packed tables
        update = UPDATES[row_learner]
        step_fn = functools.partial(update, loss_fn=loss_fn, tx=tx, learning_rate=learning_rate)
        pack = lambda params, _: table_groups(params, tables)
    else:  # packed where `packing` keeps the numbers
        step_fn = functools.partial(_dense_epoch_step, loss_fn=loss_fn, tx=tx)
        pack = (lambda params, batch: packing(loss_fn, params, tables, batch)) if tables else None
    return scanned_epoch(step_fn, make_batches, pack=pack)


def _dense_epoch_step(state: TrainState, sums, batch: Batches, *, loss_fn: LossFn, tx, groups):
    """`tables.packed_dense_step` where `packing` packed the state, else `dense_step`."""
    if groups is None:
        state, loss = dense_step(state, batch, loss_fn=loss_fn, tx=tx)
        return state, sums, loss
    return packed_dense_step(state, sums, batch, loss_fn=loss_fn, tx=tx, groups=groups)


def scanned_epoch(step_fn, make_batches, *, pack=None):
    """The jitted, donated epoch around `step_fn(state, sums, batch, groups=) -> (state, sums,
    loss)`. `pack(params, first batch)` gives the `tables.table_groups` the scan runs on (a
    `tables.packed_state`), or None; `sums` are row-sparse Adam's gradient buffers, one per
    group (all zero between steps; () without moments)."""

    def body(carry, batch, groups):
        state, sums, loss = step_fn(*carry, batch, groups=groups)
        weight = jnp.sum(batch["weights"], dtype=jnp.float32)  # bool or float weights
        return (state, sums), (loss * weight, weight)

    @xla.jit(donate_argnums=0)
    def train_epoch(state: TrainState, data, key: jax.Array):
        batches = make_batches(jax.random.fold_in(key, state.epoch), data)
        if isinstance(batches, StepBatches):  # each step builds its own batch
            xs, batch_of = jnp.arange(batches.steps), batches.batch
        else:
            xs, batch_of = batches, lambda batch: batch
        first = batch_of(jax.tree.map(lambda x: x[0], xs))
        groups = pack(state.params, first) if pack else None
        if groups:
            state = packed_state(state, groups)
        sums = zero_sums(state) if groups else ()
        scan_body = lambda carry, x: body(carry, batch_of(x), groups)
        (state, _), (loss_sums, weights) = jax.lax.scan(scan_body, (state, sums), xs)
        if groups:
            state = unpacked_state(state, groups)
        return state.replace(epoch=state.epoch + 1), jnp.sum(loss_sums) / jnp.sum(weights)

    return train_epoch
