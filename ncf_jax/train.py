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
from ncf_jax.batching import Batches, StepBatches
from ncf_jax.config import ROW_SPARSE_LEARNERS
from ncf_jax.models.layers import LOOKED_UP, PENALISED


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


def split_tables(params, tables: dict) -> tuple[dict, dict]:
    """({path: table array}, dense params as a nested dict) of Flax variables; `tables` is
    `layers.table_labels(model, ...)` ({path: Table})."""
    flat = traverse_util.flatten_dict(params)
    arrays = {k: v for k, v in flat.items() if k in tables}
    dense = traverse_util.unflatten_dict({k: v for k, v in flat.items() if k not in tables})
    return arrays, dense


def merge_tables(tables: dict, dense) -> dict:
    return traverse_util.unflatten_dict({**traverse_util.flatten_dict(dense), **tables})


def create_train_state(
    params,
    tx: optax.GradientTransformation,
    *,
    lazy: bool,
    tables: dict | None = None,
    row_learner: str = "adam",
) -> TrainState:
    """The state before the first step. Row-sparse (`lazy`) training updates the rows of
    `tables` ({path: Table}, `layers.table_labels`) by `row_learner` apart from the dense
    parameters (`tx`, on one flat vector: `dense_tx`); Adam keeps each table's moments."""
    if lazy:
        if not tables:
            raise ValueError("row-sparse training needs tables=layers.table_labels(model, ...)")
        if row_learner not in ROW_SPARSE_LEARNERS:
            raise ValueError(f"row-sparse tables take {ROW_SPARSE_LEARNERS}, not {row_learner!r}")
        tables, dense = split_tables(params, tables)
        opt_state = dense_tx(tx).init(dense)
        moments = (
            {"/".join(k): optim.init_row_moments(v) for k, v in tables.items()}
            if row_learner == "adam"
            else {}
        )
    else:
        opt_state, moments = tx.init(params), {}
    step, epoch = jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32)  # distinct buffers
    return TrainState(step, epoch, params, opt_state, moments)


LossFn = Callable[[Any, Batches], jax.Array]  # (params, batch) -> scalar


def dense_tx(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """`tx` on one flat vector of all the dense (non-table) parameters, as row-sparse Adam
    updates them: their optimiser state is one array per moment instead of one per leaf.

    NeuMF's tower is ten small arrays; optax updates each in its own few XLA ops, and on CPU
    those thirty-odd launches a step cost more than their arithmetic (NeuMF-8 on ML-100K: the
    flat update saved about 25 of the 34 us a step the per-leaf one added to the row-sparse
    floor). The learners of `optim.make_optimizer` are elementwise, so the numbers are the
    per-leaf ones up to the last bits: XLA evaluates Adam's bias correction inside each
    vectorised loop, and an element's position in its array decides its rounding (1-2 ulps).
    """
    flat = optax.flatten(tx)
    pick = lambda tree: flat if jax.tree.leaves(tree) else tx  # MF has no dense parameters
    return optax.GradientTransformation(
        lambda params: pick(params).init(params),
        lambda updates, state, params=None: pick(updates).update(updates, state, params),
    )


def dense_step(state: TrainState, batch: Batches, *, loss_fn: LossFn, tx) -> tuple:
    loss, grads = jax.value_and_grad(loss_fn)(state.params, batch)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), loss


# ------------------------------------------------------------------------------ packed tables
# Every step that knows the tables runs on them packed side by side: one [rows, sum of widths]
# array per batch id ("users", "items"), its optimiser state (optax's moments, row-sparse
# Adam's RowMoments, the gradient-sum buffers) packed alike. NeuMF's four tables become two:
# half the gathers, scatters and table-sized passes a step, and bitwise the same numbers, as
# each row's arithmetic is elementwise (every optimiser of `optim.make_optimizer` is). An
# epoch packs its state on entry and unpacks it on exit: between epochs the state has the
# model's own layout (parameter names and checkpoints unchanged).


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


def packed_state(state: TrainState, groups: tuple) -> TrainState:
    """`state` on packed tables: params, the optimiser state shaped like them, and row-sparse
    Adam's moments ({name: RowMoments} -> one RowMoments per group)."""
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


def unpacked_state(state: TrainState, groups: tuple) -> TrainState:
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


def packing(loss_fn: LossFn, params, tables: dict, batch: Batches) -> tuple | None:
    """`table_groups` of `tables` for dense training, or None where packing would change its
    numbers: when the loss's L2 penalty reads the looked-up rows (traced once, with the rows
    it would penalise passed apart as `layers.PENALISED`). Then autodiff of the tables sums
    the model's and the penalty's gradients of a row in an order of XLA's choosing, which one
    scatter of the rows' summed gradients cannot promise to repeat. (Row-sparse training
    always packs: its penalty always reads the looked-up rows.)"""
    arrays, dense = split_tables(params, tables)
    rows = {path: _lookup(table, batch[tables[path].ids]) for path, table in arrays.items()}
    loss = lambda dense, rows, penalised: _loss_on_rows(dense, rows, batch, loss_fn, penalised)
    jaxpr = jax.make_jaxpr(loss)(dense, rows, rows).jaxpr
    penalised = jaxpr.invars[-len(jax.tree.leaves(rows)) :]  # the last argument's leaves
    read = {id(v) for eqn in jaxpr.eqns for v in eqn.invars} | {id(v) for v in jaxpr.outvars}
    return None if any(id(v) in read for v in penalised) else table_groups(params, tables)


def _row_gradients(packed: dict, batch: Batches, loss_fn: LossFn, groups: tuple):
    """(loss, dense gradients, ((ids, rows, row gradients), ...) per group): the loss
    differentiated with respect to the dense parameters and the rows each packed table gives
    the batch (looked up once a group, passed to the model as `looked_up`, see
    `ncf_jax.models.layers.Embed`); ids flat, rows and gradients [ids, packed width]."""
    looked = [_lookup(t, batch[k]) for (k, _), t in zip(groups, packed["tables"], strict=True)]
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


def _loss_on_rows(dense, rows: dict, batch: Batches, loss_fn: LossFn, penalised=None):
    """The loss on the dense parameters and the looked-up `rows` ({table path: rows}); the
    L2 penalty reads `penalised` rows where given, else `rows`."""
    collections = {(LOOKED_UP, *path[1:]): r for path, r in rows.items()}
    if penalised is not None:
        collections |= {(PENALISED, *path[1:]): r for path, r in penalised.items()}
    return loss_fn(dense | traverse_util.unflatten_dict(collections), batch)


def _lookup(table: jax.Array, ids: jax.Array) -> jax.Array:
    return table.at[ids].get(mode="fill", fill_value=0)


def on_model_tables(update, state: TrainState, batch: Batches, *, tables: dict, **kwargs):
    """(state, loss): one step of a packed-state `update(state, sums, batch, groups=, ...)`
    on a state in the model's layout (packed, stepped with fresh sums, unpacked)."""
    groups = table_groups(state.params, tables)
    packed = packed_state(state, groups)
    packed, _, loss = update(packed, _zero_sums(packed), batch, groups=groups, **kwargs)
    return unpacked_state(packed, groups), loss


def _zero_sums(packed: TrainState) -> tuple:
    """Row-sparse Adam's gradient-sum buffers of a `packed_state`: one zero array per group's
    moments (() without moments)."""
    return tuple(jnp.zeros_like(m.mu) for m in packed.table_moments)


# ------------------------------------------------------------------- the steps on packed tables


def packed_dense_step(state: TrainState, sums, batch: Batches, *, loss_fn: LossFn, tx, groups):
    """(state, sums, loss): `dense_step` on a `packed_state` (`groups` from `packing`), the
    same numbers, bitwise: the rows' gradients scatter-added into a zero table, as autodiff
    of the model's lookups does, then `tx` on the packed tree."""
    packed = state.params
    loss, g_dense, per_group = _row_gradients(packed, batch, loss_fn, groups)
    g_tables = tuple(
        jnp.zeros_like(table).at[ids].add(grads, mode="drop")
        for table, (ids, _, grads) in zip(packed["tables"], per_group, strict=True)
    )
    updates, opt_state = tx.update({"dense": g_dense, "tables": g_tables}, state.opt_state, packed)
    params = optax.apply_updates(packed, updates)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), sums, loss


def lazy_update(state: TrainState, sums: tuple, batch: Batches, *, loss_fn, tx, learning_rate,
                groups):  # fmt: skip
    """(state, sums, loss): one row-sparse Adam step on a `packed_state`, O(batch) whatever
    the table sizes. The dense parameters take `tx` as one flat vector (`dense_tx`).

    `sums` holds one all-zero buffer per group (shaped like its packed table): the row
    gradients are scatter-added into it, read back at the batch's ids (so every copy of a
    repeated id sees the sum over all of them), and those rows are zeroed again. That replaces
    a sort and a segment sum per step; the sums are added in batch order as before, so the
    result is bitwise the same. Every copy of a repeated id then writes the same new values.
    """
    packed = state.params
    loss, g_dense, per_group = _row_gradients(packed, batch, loss_fn, groups)
    updates, opt_state = dense_tx(tx).update(g_dense, state.opt_state, packed["dense"])
    tables, moments, new_sums = zip(
        *(
            _adam_table(table, m, buffer, ids, rows, grads, state.step, learning_rate=learning_rate)
            for table, m, buffer, (ids, rows, grads) in zip(
                packed["tables"], state.table_moments, sums, per_group, strict=True
            )
        ),
        strict=True,
    )
    params = {"dense": optax.apply_updates(packed["dense"], updates), "tables": tables}
    new_state = state.replace(
        step=state.step + 1, params=params, opt_state=opt_state, table_moments=moments
    )
    return new_state, new_sums, loss


def _adam_table(table, moments, sums, ids, rows, grads, count, *, learning_rate) -> tuple:
    """(table, moments, sums) after row-sparse Adam on `table[ids]`; `sums` all zero again."""
    sums = sums.at[ids].add(grads, mode="drop")
    totals = _lookup(sums, ids)
    rows, mu, nu = optim.adam_rows(
        rows, _lookup(moments.mu, ids), _lookup(moments.nu, ids), totals, count, learning_rate
    )
    # Zeros computed from `totals` (min(|x|, 0) is +0 for any non-NaN x): the dependency makes
    # XLA read the sums before it zeroes them, so the scatters stay in place; plain zeros let
    # it copy the whole buffer twice a step.
    sums = sums.at[ids].set(jnp.minimum(jnp.abs(totals), 0), mode="drop")
    moments = optim.RowMoments(
        mu=moments.mu.at[ids].set(mu, mode="drop"), nu=moments.nu.at[ids].set(nu, mode="drop")
    )
    return table.at[ids].set(rows, mode="drop"), moments, sums


def row_sgd_update(state: TrainState, sums, batch: Batches, *, loss_fn: LossFn, learning_rate,
                   groups):  # fmt: skip
    """(state, sums, loss): SGD on the looked-up rows and the dense parameters, packed: the
    benchmark's floor (`make_floor_epoch`), the least any optimiser that touches only the
    batch's rows can cost (`benchmarks.ncf_epoch` times every configuration as a multiple
    of it)."""
    packed = state.params
    loss, g_dense, per_group = _row_gradients(packed, batch, loss_fn, groups)
    dense = jax.tree.map(lambda p, g: p - learning_rate * g, packed["dense"], g_dense)
    params = {"dense": dense, "tables": _sgd_tables(packed["tables"], per_group, learning_rate)}
    return state.replace(step=state.step + 1, params=params), sums, loss


def lazy_sgd_update(state: TrainState, sums, batch: Batches, *, loss_fn: LossFn, tx,
                    learning_rate, groups):  # fmt: skip
    """(state, sums, loss): `--learner=sgd` with row-sparse tables, packed. SGD gives a row
    outside the batch a zero update, so this is dense SGD (`dense_step` with optax.sgd)
    without its table-sized zero gradients: the same numbers except where an id repeats in a
    batch, whose gradients are added to the row one by one instead of summed first (float
    rounding only)."""
    packed = state.params
    loss, g_dense, per_group = _row_gradients(packed, batch, loss_fn, groups)
    updates, opt_state = dense_tx(tx).update(g_dense, state.opt_state, packed["dense"])
    lr = optim.rate_at(learning_rate, state.step)
    params = {
        "dense": optax.apply_updates(packed["dense"], updates),
        "tables": _sgd_tables(packed["tables"], per_group, lr),
    }
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), sums, loss


def _sgd_tables(tables: tuple, per_group: list, learning_rate) -> tuple:
    """Each packed table with `-learning_rate *` its row gradients scatter-added at the ids."""
    return tuple(
        table.at[ids].add(-learning_rate * grads, mode="drop")
        for table, (ids, _, grads) in zip(tables, per_group, strict=True)
    )


def lazy_step(state: TrainState, batch: Batches, *, loss_fn: LossFn, tx, learning_rate, tables):
    """(state, loss): one row-sparse Adam step (`lazy_update`) on a state in the model's
    layout; table rows outside the batch are left untouched."""
    return on_model_tables(lazy_update, state, batch, tables=tables, loss_fn=loss_fn, tx=tx,
                           learning_rate=learning_rate)  # fmt: skip


def lazy_sgd_step(state: TrainState, batch: Batches, *, loss_fn: LossFn, tx, learning_rate,
                  tables):  # fmt: skip
    """(state, loss): one `lazy_sgd_update` on a state in the model's layout."""
    return on_model_tables(lazy_sgd_update, state, batch, tables=tables, loss_fn=loss_fn, tx=tx,
                           learning_rate=learning_rate)  # fmt: skip


LOSSES = ("bce", "bpr")  # make_loss_fn's `loss`


def make_loss_fn(apply_fn, model_config, tables: dict | None = None, *, loss="bce") -> LossFn:
    """The NCF loss on logits plus the configured L2 penalties (on the rows of `tables`,
    `layers.table_labels(model, ...)`, and the MLP kernels).

    `loss`: "bce", pointwise on every sample (the paper); "bpr", pairwise on grouped batches
    (each positive against its own negatives, `losses.bpr`: MF-BPR with `model="mf"`).
    """
    if loss not in LOSSES:
        raise ValueError(f"unknown NCF loss {loss!r}; choose from {LOSSES}")

    def loss_fn(params, batch):
        users, items, weights = batch["users"], batch["items"], batch["weights"]
        logits = apply_fn(params, users, items)
        penalty = losses.l2_penalty(
            params,
            batch,
            weights,
            tables=tables,
            reg_mf=model_config.reg_mf,
            reg_layers=model_config.reg_layers,
        )
        if loss == "bpr":
            return losses.bpr(logits, weights[..., 0]) + penalty
        return losses.bce_with_logits(logits, batch["labels"], weights) + penalty

    return loss_fn


def make_train_epoch(
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    make_batches: Callable[[jax.Array, Any], Batches],
    *,
    lazy: bool = False,
    learning_rate=None,
    tables: dict | None = None,
    row_learner: str = "adam",
):
    """A jitted `train_epoch(state, data, key) -> (state, mean_loss)`; `state` is donated.
    Row-sparse (`lazy`) training updates only the rows of `tables` (`layers.table_labels`)
    that a batch looks up, by `row_learner` ("adam": `lazy_update`; "sgd": `lazy_sgd_update`),
    and the state must come from `create_train_state` with the same `row_learner`. With
    `tables`, the epoch runs on them packed (`packed_state`), dense training too unless its
    L2 penalty reads their rows (`packing`).

    `make_batches(key, data)` builds the epoch's `[steps, batch, ...]` arrays on device (e.g.
    `functools.partial(batching.epoch_batches, num_neg=4, batch_size=256)`); the epoch's key
    is `fold_in(key, state.epoch)`: same key, same epoch, same numbers.
    """
    if lazy:  # always on packed tables
        update = {"adam": lazy_update, "sgd": lazy_sgd_update}[row_learner]
        step_fn = functools.partial(update, loss_fn=loss_fn, tx=tx, learning_rate=learning_rate)
        pack = lambda params, _: table_groups(params, tables)
    else:  # packed where `packing` keeps the numbers
        step_fn = functools.partial(_dense_epoch_step, loss_fn=loss_fn, tx=tx)
        pack = (lambda params, batch: packing(loss_fn, params, tables, batch)) if tables else None
    return _scanned_epoch(step_fn, make_batches, pack=pack)


def _dense_epoch_step(state: TrainState, sums, batch: Batches, *, loss_fn: LossFn, tx, groups):
    """`packed_dense_step` where `packing` packed the state, else `dense_step`."""
    if groups is None:
        state, loss = dense_step(state, batch, loss_fn=loss_fn, tx=tx)
        return state, sums, loss
    return packed_dense_step(state, sums, batch, loss_fn=loss_fn, tx=tx, groups=groups)


def make_floor_epoch(loss_fn: LossFn, make_batches, *, learning_rate: float, tables: dict):
    """`make_train_epoch`'s epoch with `row_sgd_update` steps: the benchmark's floor."""
    sgd = functools.partial(row_sgd_update, loss_fn=loss_fn, learning_rate=learning_rate)
    return _scanned_epoch(sgd, make_batches, pack=lambda params, _: table_groups(params, tables))


def _scanned_epoch(step_fn, make_batches, *, pack=None):
    """The jitted, donated epoch around `step_fn(state, sums, batch, groups=) -> (state, sums,
    loss)`. `pack(params, first batch)` gives the `table_groups` the scan runs on (a
    `packed_state`), or None; `sums` are row-sparse Adam's gradient buffers, one per group
    (all zero between steps; () without moments)."""

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
        sums = _zero_sums(state) if groups else ()
        scan_body = lambda carry, x: body(carry, batch_of(x), groups)
        (state, _), (loss_sums, weights) = jax.lax.scan(scan_body, (state, sums), xs)
        if groups:
            state = unpacked_state(state, groups)
        return state.replace(epoch=state.epoch + 1), jnp.sum(loss_sums) / jnp.sum(weights)

    return train_epoch
