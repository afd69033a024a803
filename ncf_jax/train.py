"""Stage: train step and epoch. A TrainState pytree, a pure step, and a scanned, jitted epoch.

An epoch is one device call: negatives are sampled, rows shuffled and every step run under
`jax.lax.scan`; the only value fetched per epoch is the mean loss. Keys derive from
`fold_in(key, epoch)`, so a resumed run draws exactly the numbers of an uninterrupted one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct, traverse_util

from ncf_jax import losses, optim, xla
from ncf_jax.batching import Batches
from ncf_jax.models.layers import ROW_DELTAS


@struct.dataclass
class TrainState:
    """step: int32 updates done; epoch: int32 epochs done; params: Flax variables;
    opt_state: optax state of the dense parameters (all of them unless lazy);
    table_moments: {table path: RowMoments} under row-sparse Adam, else {}."""

    step: jax.Array
    epoch: jax.Array
    params: Any
    opt_state: Any
    table_moments: Any


def _is_table(path: tuple[str, ...]) -> bool:
    return path[-1] == "embedding"


def split_tables(params) -> tuple[dict, dict]:
    """({path: table}, dense params as a nested dict) of Flax variables."""
    flat = traverse_util.flatten_dict(params)
    tables = {k: v for k, v in flat.items() if _is_table(k)}
    dense = traverse_util.unflatten_dict({k: v for k, v in flat.items() if not _is_table(k)})
    return tables, dense


def merge_tables(tables: dict, dense) -> dict:
    return traverse_util.unflatten_dict({**traverse_util.flatten_dict(dense), **tables})


def create_train_state(params, tx: optax.GradientTransformation, *, lazy: bool) -> TrainState:
    if lazy:
        tables, dense = split_tables(params)
        opt_state = tx.init(dense)
        moments = {"/".join(k): optim.init_row_moments(v) for k, v in tables.items()}
    else:
        opt_state, moments = tx.init(params), {}
    step, epoch = jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32)  # distinct buffers
    return TrainState(step, epoch, params, opt_state, moments)


LossFn = Callable[[Any, Batches], jax.Array]  # (params, batch) -> scalar


def dense_step(state: TrainState, batch: Batches, *, loss_fn: LossFn, tx) -> tuple:
    loss, grads = jax.value_and_grad(loss_fn)(state.params, batch)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), loss


def lazy_step(state: TrainState, batch: Batches, *, loss_fn: LossFn, tx, learning_rate) -> tuple:
    """Row-sparse Adam step: table rows outside the batch are left untouched.

    The loss is differentiated with respect to the rows looked up in the batch (zero-valued
    `row_deltas` added to them, see `ncf_jax.models.layers.Embed`), never the tables, so no
    table-sized gradient is built: the step costs O(batch), whatever the table sizes. Gradients
    of a row looked up several times are summed (`sum_duplicates`); every copy then computes
    the same new values, so the scatter back is deterministic.
    """
    tables, dense = split_tables(state.params)
    ids = {path: _table_ids(path, batch) for path in tables}
    deltas = {
        path: jnp.zeros(ids[path].shape + table.shape[-1:], table.dtype)
        for path, table in tables.items()
    }

    def loss_of(dense, deltas):
        variables = merge_tables(tables, dense)
        row_deltas = {(ROW_DELTAS, *path[1:]): d for path, d in deltas.items()}
        return loss_fn(variables | traverse_util.unflatten_dict(row_deltas), batch)

    loss, (g_dense, g_rows) = jax.value_and_grad(loss_of, argnums=(0, 1))(dense, deltas)
    updates, opt_state = tx.update(g_dense, state.opt_state, dense)
    dense = optax.apply_updates(dense, updates)
    new_tables, moments = {}, {}
    for path, table in tables.items():
        name = "/".join(path)
        rows, grads = sum_duplicates(
            ids[path].reshape(-1), g_rows[path].reshape(-1, table.shape[-1])
        )
        new_tables[path], moments[name] = optim.lazy_adam_rows(
            table, state.table_moments[name], rows, grads, state.step, learning_rate=learning_rate
        )
    new_state = state.replace(
        step=state.step + 1,
        params=merge_tables(new_tables, dense),
        opt_state=opt_state,
        table_moments=moments,
    )
    return new_state, loss


def _table_ids(path: tuple[str, ...], batch: Batches) -> jax.Array:
    kind = path[-2].rsplit("_", 1)[-1]
    if kind not in ("user", "item"):
        raise ValueError(f"embedding {'/'.join(path)} must be named *_user or *_item")
    return batch[kind + "s"]


def sum_duplicates(ids: jax.Array, grads: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(ids sorted, each one's row of `grads` summed over all entries with that id).

    ids: [n] int; grads: [n, d]. O(n log n): a sort of the ids and a segment sum, no buffer
    of the table's size.
    """
    order = jnp.argsort(ids)
    ids = ids[order]
    new = jnp.concatenate([jnp.zeros(1, jnp.int32), (ids[1:] != ids[:-1]).astype(jnp.int32)])
    segment = jnp.cumsum(new)
    totals = jax.ops.segment_sum(
        grads[order], segment, num_segments=ids.shape[0], indices_are_sorted=True
    )
    return ids, totals[segment]


def make_loss_fn(apply_fn, model_config) -> LossFn:
    """Pointwise BCE on logits plus the configured L2 penalties."""

    def loss_fn(params, batch):
        users, items, weights = batch["users"], batch["items"], batch["weights"]
        logits = apply_fn(params, users, items)
        penalty = losses.l2_penalty(
            params,
            users,
            items,
            weights,
            reg_mf=model_config.reg_mf,
            reg_layers=model_config.reg_layers,
        )
        return losses.bce_with_logits(logits, batch["labels"], weights) + penalty

    return loss_fn


def make_train_epoch(
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    make_batches: Callable[[jax.Array, Any], Batches],
    *,
    lazy: bool = False,
    learning_rate=None,
):
    """A jitted `train_epoch(state, data, key) -> (state, mean_loss)`; `state` is donated.

    `make_batches(key, data)` builds the epoch's `[steps, batch, ...]` arrays on device (e.g.
    `functools.partial(batching.epoch_batches, num_neg=4, batch_size=256)`); the epoch's key
    is `fold_in(key, state.epoch)`: same key, same epoch, same numbers.
    """
    if lazy:
        step_fn = functools.partial(lazy_step, loss_fn=loss_fn, tx=tx, learning_rate=learning_rate)
    else:
        step_fn = functools.partial(dense_step, loss_fn=loss_fn, tx=tx)

    def body(state, batch):
        state, loss = step_fn(state, batch)
        weight = jnp.sum(batch["weights"])
        return state, (loss * weight, weight)

    @xla.jit(donate_argnums=0)
    def train_epoch(state: TrainState, data, key: jax.Array):
        batches = make_batches(jax.random.fold_in(key, state.epoch), data)
        state, (loss_sums, weights) = jax.lax.scan(body, state, batches)
        return state.replace(epoch=state.epoch + 1), jnp.sum(loss_sums) / jnp.sum(weights)

    return train_epoch
