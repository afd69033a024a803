"""Stage: train step, the embedding tables' layout. Tables split from the dense parameters,
packed side by side, and the gradients of the rows a batch looks up.

Every step that knows the tables runs on them packed: one [rows, sum of widths] array per batch
id ("users", "items"), its optimiser state (optax's moments, row-sparse Adam's RowMoments, the
gradient-sum buffers) packed alike. NeuMF's four tables become two: half the gathers, scatters
and table-sized passes a step, and bitwise the same numbers, as each row's arithmetic is
elementwise (every optimiser of `optim.make_optimizer` is). An epoch packs its state on entry
and unpacks it on exit (`ncf_jax.train`): between epochs the state has the model's own layout
(parameter names and checkpoints unchanged).

A table is found by structure, not by name: `layers.table_labels(model, ...)` gives
{path: Table} for the model's embedding lookups.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from ncf_jax import optim
from ncf_jax.models.layers import LOOKED_UP, PENALISED

LossFn = Callable[[Any, dict], jax.Array]  # (params, batch) -> scalar


def split_tables(params, tables: dict) -> tuple[dict, dict]:
    """({path: table array}, dense params as a nested dict) of Flax variables; `tables` is
    `layers.table_labels(model, ...)` ({path: Table})."""
    flat = traverse_util.flatten_dict(params)
    arrays = {k: v for k, v in flat.items() if k in tables}
    dense = traverse_util.unflatten_dict({k: v for k, v in flat.items() if k not in tables})
    return arrays, dense


def merge_tables(tables: dict, dense) -> dict:
    return traverse_util.unflatten_dict({**traverse_util.flatten_dict(dense), **tables})


def table_groups(params, tables: dict) -> tuple:
    """The packing of `tables` ({path: Table}): a tuple of (ids, ((path, width), ...)), one
    per batch id, shape of rows and dtype; paths sorted."""
    flat = traverse_util.flatten_dict(params)
    groups = {}
    for path in sorted(tables):
        table = flat[path]
        key = (tables[path].ids, table.shape[:-1], table.dtype)
        groups.setdefault(key, []).append((path, table.shape[-1]))
    return tuple((key[0], tuple(columns)) for key, columns in groups.items())


def pack_tables(params, groups: tuple) -> dict:
    """{"dense": params without the tables, "tables": (one packed array per group, ...)}."""
    tables, dense = split_tables(params, {p: None for _, cols in groups for p, _ in cols})
    return {"dense": dense, "tables": _packed(groups, lambda path: tables[path])}


def unpack_tables(packed: dict, groups: tuple):
    return merge_tables(_unpacked(groups, packed["tables"]), packed["dense"])


def _packed(groups: tuple, array_of) -> tuple:
    return tuple(jnp.concatenate([array_of(p) for p, _ in cols], -1) for _, cols in groups)


def _unpacked(groups: tuple, arrays: tuple) -> dict:
    """{path: its columns} of one packed array per group."""
    return {
        path: columns
        for (_, cols), array in zip(groups, arrays, strict=True)
        for path, columns in _columns(array, cols)
    }


def _columns(array: jax.Array, columns: tuple):
    """((path, array[..., its columns]), ...) of a packed array or of its looked-up rows."""
    start = 0
    for path, width in columns:
        yield path, array[..., start : start + width]
        start += width


def _map_param_trees(fn, tree, params):
    """`fn` applied to every subtree of `tree` (an optimiser state) shaped like `params`."""
    treedef = jax.tree.structure(params)
    is_params = lambda x: jax.tree.structure(x) == treedef
    return jax.tree.map(lambda x: fn(x) if is_params(x) else x, tree, is_leaf=is_params)


def packed_state(state, groups: tuple):
    """`state` (a `train.TrainState`) on packed tables: params, the optimiser state shaped like
    them, and row-sparse Adam's moments ({name: RowMoments} -> one RowMoments per group)."""
    pack = lambda tree: pack_tables(tree, groups)
    moments = state.table_moments
    if moments:
        field = lambda f: _packed(groups, lambda path: getattr(moments["/".join(path)], f))
        moments = tuple(map(optim.RowMoments, field("mu"), field("nu")))
    return state.replace(
        params=pack(state.params),
        opt_state=_map_param_trees(pack, state.opt_state, state.params),
        table_moments=moments,
    )


def unpacked_state(state, groups: tuple):
    unpack = lambda tree: unpack_tables(tree, groups)
    moments = state.table_moments
    if moments:
        mu, nu = (_unpacked(groups, tuple(getattr(m, f) for m in moments)) for f in ("mu", "nu"))
        moments = {"/".join(p): optim.RowMoments(mu[p], nu[p]) for p in mu}
    return state.replace(
        params=unpack(state.params),
        opt_state=_map_param_trees(unpack, state.opt_state, state.params),
        table_moments=moments,
    )


def zero_sums(packed) -> tuple:
    """Row-sparse Adam's gradient-sum buffers of a `packed_state`: one zero array per group's
    moments (() without moments)."""
    return tuple(jnp.zeros_like(m.mu) for m in packed.table_moments)


def packing(loss_fn: LossFn, params, tables: dict, batch: dict) -> tuple | None:
    """`table_groups` of `tables` for dense training, or None where packing would change its
    numbers: when the loss's L2 penalty reads the looked-up rows (traced once, with the rows
    it would penalise passed apart as `layers.PENALISED`). Then autodiff of the tables sums
    the model's and the penalty's gradients of a row in an order of XLA's choosing, which one
    scatter of the rows' summed gradients cannot promise to repeat. (Row-sparse training
    always packs: its penalty always reads the looked-up rows.)"""
    arrays, dense = split_tables(params, tables)
    rows = {path: lookup(table, batch[tables[path].ids]) for path, table in arrays.items()}
    loss = lambda dense, rows, penalised: _loss_on_rows(dense, rows, batch, loss_fn, penalised)
    jaxpr = jax.make_jaxpr(loss)(dense, rows, rows).jaxpr
    penalised = jaxpr.invars[-len(jax.tree.leaves(rows)) :]  # the last argument's leaves
    read = {id(v) for eqn in jaxpr.eqns for v in eqn.invars} | {id(v) for v in jaxpr.outvars}
    return None if any(id(v) in read for v in penalised) else table_groups(params, tables)


def row_gradients(packed: dict, batch: dict, loss_fn: LossFn, groups: tuple):
    """(loss, dense gradients, ((ids, rows, row gradients), ...) per group): the loss
    differentiated with respect to the dense parameters and the rows each packed table gives
    the batch (looked up once a group, passed to the model as `looked_up`, see
    `ncf_jax.models.layers.Embed`); ids flat, rows and gradients [ids, packed width]."""
    looked = [lookup(t, batch[k]) for (k, _), t in zip(groups, packed["tables"], strict=True)]
    rows = {
        path: r
        for (_, cols), x in zip(groups, looked, strict=True)
        for path, r in _columns(x, cols)
    }
    loss, (g_dense, g_rows) = jax.value_and_grad(_loss_on_rows, argnums=(0, 1))(
        packed["dense"], rows, batch, loss_fn
    )
    per_group = []
    for (key, cols), looked_up in zip(groups, looked, strict=True):
        width = looked_up.shape[-1]
        grads = jnp.concatenate([g_rows[p] for p, _ in cols], -1).reshape(-1, width)
        per_group.append((batch[key].reshape(-1), looked_up.reshape(-1, width), grads))
    return loss, g_dense, per_group


def _loss_on_rows(dense, rows: dict, batch: dict, loss_fn: LossFn, penalised=None):
    """The loss on the dense parameters and the looked-up `rows` ({table path: rows}); the
    L2 penalty reads `penalised` rows where given, else `rows`."""
    collections = {(LOOKED_UP, *path[1:]): r for path, r in rows.items()}
    if penalised is not None:
        collections |= {(PENALISED, *path[1:]): r for path, r in penalised.items()}
    return loss_fn(dense | traverse_util.unflatten_dict(collections), batch)


def lookup(table: jax.Array, ids: jax.Array) -> jax.Array:
    """`table[ids]`, zero rows for ids past the end (padding)."""
    return table.at[ids].get(mode="fill", fill_value=0)


def packed_dense_step(state, sums, batch: dict, *, loss_fn: LossFn, tx, groups):
    """(state, sums, loss): `train.dense_step` on a `packed_state` (`groups` from `packing`),
    the same numbers, bitwise: the rows' gradients scatter-added into a zero table, as autodiff
    of the model's lookups does, then `tx` on the packed tree."""
    packed = state.params
    loss, g_dense, per_group = row_gradients(packed, batch, loss_fn, groups)
    g_tables = tuple(
        jnp.zeros_like(table).at[ids].add(grads, mode="drop")
        for table, (ids, _, grads) in zip(packed["tables"], per_group, strict=True)
    )
    updates, opt_state = tx.update({"dense": g_dense, "tables": g_tables}, state.opt_state, packed)
    params = optax.apply_updates(packed, updates)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), sums, loss
