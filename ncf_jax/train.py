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


# ------------------------------------------------------------ dense training on packed tables
# Dense Adam's step is bound by its sweep over every table row (three passes per table: mu,
# nu, value). An epoch therefore runs on the tables packed side by side, one [rows, sum of
# widths] array per batch id ("users", "items"), with their optimiser state packed alike:
# half as many table-sized passes and scatters for NeuMF, and bitwise the same numbers, as
# every optimiser of `optim.make_optimizer` is elementwise. The state outside an epoch keeps
# the model's own layout (parameter names and checkpoints unchanged).


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
    packed = tuple(jnp.concatenate([tables[p] for p, _ in cols], -1) for _, cols in groups)
    return {"dense": dense, "tables": packed}


def unpack_tables(packed: dict, groups: tuple):
    return merge_tables(
        {
            path: columns
            for (_, cols), table in zip(groups, packed["tables"], strict=True)
            for path, columns in _columns(table, cols)
        },
        packed["dense"],
    )


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
    """`state` with its params and their optimiser state on packed tables."""
    pack = lambda tree: pack_tables(tree, groups)
    return state.replace(
        params=pack(state.params), opt_state=_map_param_trees(pack, state.opt_state, state.params)
    )


def unpacked_state(state: TrainState, groups: tuple) -> TrainState:
    unpack = lambda tree: unpack_tables(tree, groups)
    return state.replace(
        params=unpack(state.params),
        opt_state=_map_param_trees(unpack, state.opt_state, state.params),
    )


def packing(loss_fn: LossFn, params, tables: dict, batch: Batches) -> tuple | None:
    """`table_groups` of `tables`, or None where packing would change the numbers: when the
    loss's L2 penalty reads the looked-up rows (traced once, with the rows it would penalise
    passed apart as `layers.PENALISED`). Then autodiff sums the model's and the penalty's
    gradients of a row in an order of XLA's choosing, which one scatter of the rows' summed
    gradients cannot promise to repeat."""
    arrays, dense = split_tables(params, tables)
    rows = {path: _lookup(table, batch[tables[path].ids]) for path, table in arrays.items()}
    loss = lambda dense, rows, batch, penalised: _loss_on_rows(
        dense, rows, batch, loss_fn, penalised
    )
    jaxpr = jax.make_jaxpr(loss)(dense, rows, batch, rows).jaxpr
    penalised = jaxpr.invars[-len(jax.tree.leaves(rows)) :]  # the last argument's leaves
    read = {id(v) for eqn in jaxpr.eqns for v in eqn.invars} | {id(v) for v in jaxpr.outvars}
    return None if any(id(v) in read for v in penalised) else table_groups(params, tables)


def packed_dense_step(state: TrainState, batch: Batches, *, loss_fn: LossFn, tx, groups):
    """`dense_step` on a `packed_state` (`groups` from `packing`): the same numbers, bitwise.
    Each group's rows are looked up once, the loss differentiated with respect to them and
    their gradients scatter-added into a zero table, as autodiff of the model's lookups does."""
    packed = state.params
    groups = tuple(zip(groups, packed["tables"], strict=True))
    rows = {}
    for (key, cols), table in groups:
        rows.update(_columns(_lookup(table, batch[key]), cols))
    loss, (g_dense, g_rows) = jax.value_and_grad(_loss_on_rows, argnums=(0, 1))(
        packed["dense"], rows, batch, loss_fn
    )
    g_tables = tuple(
        jnp.zeros_like(table)
        .at[batch[key].reshape(-1)]
        .add(
            jnp.concatenate([g_rows[p] for p, _ in cols], -1).reshape(-1, table.shape[-1]),
            mode="drop",
        )
        for (key, cols), table in groups
    )
    updates, opt_state = tx.update({"dense": g_dense, "tables": g_tables}, state.opt_state, packed)
    params = optax.apply_updates(packed, updates)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), loss


def _dense_epoch_step(state: TrainState, batch: Batches, *, loss_fn: LossFn, tx, groups):
    """`packed_dense_step` where `packing` packed the state, else `dense_step`."""
    if groups is None:
        return dense_step(state, batch, loss_fn=loss_fn, tx=tx)
    return packed_dense_step(state, batch, loss_fn=loss_fn, tx=tx, groups=groups)


# ------------------------------------------------------------------------ row-sparse training


def lazy_step(state: TrainState, batch: Batches, *, loss_fn: LossFn, tx, learning_rate, tables):
    """Row-sparse Adam step: table rows outside the batch are left untouched.

    One step on its own; an epoch (`make_train_epoch`) runs `lazy_update` instead and carries
    the gradient-sum buffers through its scan, so it pays their O(table) allocation once.
    """
    sums = {name: jnp.zeros_like(m.mu) for name, m in state.table_moments.items()}
    state, _, loss = lazy_update(
        state, sums, batch, loss_fn=loss_fn, tx=tx, learning_rate=learning_rate, tables=tables
    )
    return state, loss


def lazy_update(state: TrainState, sums: dict, batch: Batches, *, loss_fn, tx, learning_rate,
                tables):  # fmt: skip
    """(state, sums, loss): one row-sparse Adam step, O(batch) whatever the table sizes.

    The loss is differentiated with respect to the rows looked up in the batch (passed to the
    model as `looked_up`, see `ncf_jax.models.layers.Embed`), never the tables. `sums` holds
    one all-zero buffer per table (`{table name: [rows, dim]}`): the row gradients are
    scatter-added into it, read back at the batch's ids (so every copy of a repeated id sees
    the sum over all of them), and those rows are zeroed again. That replaces a sort and a
    segment sum per step; the sums are added in batch order as before, so the result is
    bitwise the same. Every copy of a repeated id then writes the same new values.
    """
    loss, tables, dense, ids_of, rows, g_dense, g_rows = _row_gradients(
        state, batch, loss_fn, tables
    )
    updates, opt_state = dense_tx(tx).update(g_dense, state.opt_state, dense)
    dense = optax.apply_updates(dense, updates)
    new_tables, moments, new_sums = {}, {}, {}
    for path, table in tables.items():
        name = "/".join(path)
        ids = ids_of(path).reshape(-1)
        new_tables[path], moments[name], new_sums[name] = _adam_table(
            table,
            state.table_moments[name],
            sums[name],
            ids,
            rows[path].reshape(-1, table.shape[-1]),
            g_rows[path].reshape(-1, table.shape[-1]),
            state.step,
            learning_rate=learning_rate,
        )
    new_state = state.replace(
        step=state.step + 1,
        params=merge_tables(new_tables, dense),
        opt_state=opt_state,
        table_moments=moments,
    )
    return new_state, new_sums, loss


def _row_gradients(state: TrainState, batch: Batches, loss_fn: LossFn, labels: dict):
    """The loss differentiated with respect to the dense parameters and the rows the batch
    looks up in each table of `labels`: (loss, {path: table}, dense params, ids_of(path),
    {path: rows}, dense gradients, {path: row gradients})."""
    tables, dense = split_tables(state.params, labels)
    ids_of = lambda path: batch[labels[path].ids]
    rows = {path: _lookup(table, ids_of(path)) for path, table in tables.items()}
    (loss, (g_dense, g_rows)) = jax.value_and_grad(_loss_on_rows, argnums=(0, 1))(
        dense, rows, batch, loss_fn
    )
    return loss, tables, dense, ids_of, rows, g_dense, g_rows


def _loss_on_rows(dense, rows: dict, batch: Batches, loss_fn: LossFn, penalised=None):
    """The loss on the dense parameters and the looked-up `rows` ({table path: rows}); the
    L2 penalty reads `penalised` rows where given, else `rows`."""
    collections = {(LOOKED_UP, *path[1:]): r for path, r in rows.items()}
    if penalised is not None:
        collections |= {(PENALISED, *path[1:]): r for path, r in penalised.items()}
    return loss_fn(dense | traverse_util.unflatten_dict(collections), batch)


def _lookup(table: jax.Array, ids: jax.Array) -> jax.Array:
    return table.at[ids].get(mode="fill", fill_value=0)


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


def row_sgd_update(state: TrainState, batch: Batches, *, loss_fn: LossFn, learning_rate, tables):
    """(state, loss): SGD that differentiates the looked-up rows and scatter-adds them back.

    The floor of any optimiser that touches only the batch's rows (`benchmarks.ncf_epoch`
    times every configuration as a multiple of it); dense parameters get plain SGD too.
    """
    loss, tables, dense, ids_of, rows, g_dense, g_rows = _row_gradients(
        state, batch, loss_fn, tables
    )
    dense = jax.tree.map(lambda p, g: p - learning_rate * g, dense, g_dense)
    new_tables = _sgd_tables(tables, ids_of, g_rows, learning_rate)
    return state.replace(step=state.step + 1, params=merge_tables(new_tables, dense)), loss


def lazy_sgd_step(state: TrainState, batch: Batches, *, loss_fn: LossFn, tx, learning_rate,
                  tables):  # fmt: skip
    """(state, loss): `--learner=sgd` with row-sparse tables. SGD gives a row outside the batch
    a zero update, so this is dense SGD (`dense_step` with optax.sgd) without its table-sized
    zero gradients: the same numbers except where an id repeats in a batch, whose gradients
    are added to the row one by one instead of summed first (float rounding only)."""
    loss, tables, dense, ids_of, rows, g_dense, g_rows = _row_gradients(
        state, batch, loss_fn, tables
    )
    updates, opt_state = dense_tx(tx).update(g_dense, state.opt_state, dense)
    dense = optax.apply_updates(dense, updates)
    lr = optim.rate_at(learning_rate, state.step)
    params = merge_tables(_sgd_tables(tables, ids_of, g_rows, lr), dense)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), loss


def _sgd_tables(tables: dict, ids_of, g_rows: dict, learning_rate) -> dict:
    """Each table with `-learning_rate *` its row gradients scatter-added at the batch's ids."""
    return {
        path: table.at[ids_of(path).reshape(-1)].add(
            -learning_rate * g_rows[path].reshape(-1, table.shape[-1]), mode="drop"
        )
        for path, table in tables.items()
    }


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
    that a batch looks up, by `row_learner` ("adam": `lazy_update`; "sgd": `lazy_sgd_step`),
    and the state must come from `create_train_state` with the same `row_learner`.

    `make_batches(key, data)` builds the epoch's `[steps, batch, ...]` arrays on device (e.g.
    `functools.partial(batching.epoch_batches, num_neg=4, batch_size=256)`); the epoch's key
    is `fold_in(key, state.epoch)`: same key, same epoch, same numbers.
    """
    if lazy and row_learner == "sgd":  # scatter-adds sum repeated ids: no gradient-sum buffers
        step_fn = _without_sums(functools.partial(
            lazy_sgd_step, loss_fn=loss_fn, tx=tx, learning_rate=learning_rate, tables=tables
        ))  # fmt: skip
        return _scanned_epoch(step_fn, make_batches, lazy=False)
    if lazy:
        step_fn = functools.partial(
            lazy_update, loss_fn=loss_fn, tx=tx, learning_rate=learning_rate, tables=tables
        )
    elif tables:
        step_fn = _without_sums(functools.partial(_dense_epoch_step, loss_fn=loss_fn, tx=tx))
        pack = lambda params, batch: packing(loss_fn, params, tables, batch)
        return _scanned_epoch(step_fn, make_batches, lazy=False, pack=pack)
    else:
        step_fn = _without_sums(functools.partial(dense_step, loss_fn=loss_fn, tx=tx))
    return _scanned_epoch(step_fn, make_batches, lazy=lazy)


def make_floor_epoch(loss_fn: LossFn, make_batches, *, learning_rate: float, tables: dict):
    """`make_train_epoch`'s epoch with `row_sgd_update` steps: the benchmark's floor."""
    sgd = functools.partial(
        row_sgd_update, loss_fn=loss_fn, learning_rate=learning_rate, tables=tables
    )
    return _scanned_epoch(_without_sums(sgd), make_batches, lazy=False)


def _without_sums(step):
    def step_fn(state, sums, batch, **kwargs):
        state, loss = step(state, batch, **kwargs)
        return state, sums, loss

    return step_fn


def _scanned_epoch(step_fn, make_batches, *, lazy: bool, pack=None):
    """The jitted, donated epoch around `step_fn(state, sums, batch) -> (state, sums, loss)`;
    `sums` are the row-sparse gradient buffers (all zero between steps; {} unless lazy).
    With `pack(params, batch) -> groups or None` (`packing`), `step_fn` also takes `groups=`
    and, where they are not None, the scan runs on a `packed_state`."""

    def body(carry, batch, **kwargs):
        state, sums, loss = step_fn(*carry, batch, **kwargs)
        weight = jnp.sum(batch["weights"], dtype=jnp.float32)  # bool or float weights
        return (state, sums), (loss * weight, weight)

    @xla.jit(donate_argnums=0)
    def train_epoch(state: TrainState, data, key: jax.Array):
        batches = make_batches(jax.random.fold_in(key, state.epoch), data)
        sums = {n: jnp.zeros_like(m.mu) for n, m in state.table_moments.items()} if lazy else {}
        groups = pack(state.params, jax.tree.map(lambda x: x[0], batches)) if pack else None
        scan_body = functools.partial(body, groups=groups) if pack else body
        if groups:
            state = packed_state(state, groups)
        (state, _), (loss_sums, weights) = jax.lax.scan(scan_body, (state, sums), batches)
        if groups:
            state = unpacked_state(state, groups)
        return state.replace(epoch=state.epoch + 1), jnp.sum(loss_sums) / jnp.sum(weights)

    return train_epoch
