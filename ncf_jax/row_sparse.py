"""Stage: train step, row-sparse. Steps that update only the embedding rows a batch looks up
(`--lazy_embeddings`), O(batch) whatever the table sizes.

Adam (TensorFlow's LazyAdam): the looked-up rows' values and moments are updated, rows not in
the batch keep stale moments (that is the approximation), bias correction uses the global step.
SGD gives a row outside the batch a zero update, so row-sparse SGD is dense SGD without the
table-sized zero gradients. Both run on packed tables (`ncf_jax.tables`); the dense (non-table)
parameters take the optax optimiser as one flat vector (`dense_tx`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from ncf_jax import optim, tables
from ncf_jax.config import ROW_SPARSE_LEARNERS


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


def init_optimizer(params, tx, table_labels: dict, learner: str) -> tuple:
    """(optax state of the dense parameters, {table path: RowMoments} under Adam, else {})."""
    if not table_labels:
        raise ValueError("row-sparse training needs tables=layers.table_labels(model, ...)")
    if learner not in ROW_SPARSE_LEARNERS:
        raise ValueError(f"row-sparse tables take {ROW_SPARSE_LEARNERS}, not {learner!r}")
    arrays, dense = tables.split_tables(params, table_labels)
    moments = {}
    if learner == "adam":
        moments = {"/".join(k): optim.init_row_moments(v) for k, v in arrays.items()}
    return dense_tx(tx).init(dense), moments


def adam_update(state, sums: tuple, batch: dict, *, loss_fn, tx, learning_rate, groups):
    """(state, sums, loss): one row-sparse Adam step on a `tables.packed_state`. The dense
    parameters take `tx` as one flat vector (`dense_tx`).

    `sums` holds one all-zero buffer per group (shaped like its packed table): the row
    gradients are scatter-added into it, read back at the batch's ids (so every copy of a
    repeated id sees the sum over all of them), and those rows are zeroed again. That replaces
    a sort and a segment sum per step; the sums are added in batch order as before, so the
    result is bitwise the same. Every copy of a repeated id then writes the same new values.
    """
    packed = state.params
    loss, g_dense, per_group = tables.row_gradients(packed, batch, loss_fn, groups)
    updates, opt_state = dense_tx(tx).update(g_dense, state.opt_state, packed["dense"])
    new_tables, moments, new_sums = zip(
        *(
            _adam_table(table, m, buffer, ids, rows, grads, state.step, learning_rate=learning_rate)
            for table, m, buffer, (ids, rows, grads) in zip(
                packed["tables"], state.table_moments, sums, per_group, strict=True
            )
        ),
        strict=True,
    )
    params = {"dense": optax.apply_updates(packed["dense"], updates), "tables": new_tables}
    new_state = state.replace(
        step=state.step + 1, params=params, opt_state=opt_state, table_moments=moments
    )
    return new_state, new_sums, loss


def _adam_table(table, moments, sums, ids, rows, grads, count, *, learning_rate) -> tuple:
    """(table, moments, sums) after row-sparse Adam on `table[ids]`; `sums` all zero again."""
    sums = sums.at[ids].add(grads, mode="drop")
    totals = tables.lookup(sums, ids)
    rows, mu, nu = optim.adam_rows(
        rows,
        tables.lookup(moments.mu, ids),
        tables.lookup(moments.nu, ids),
        totals,
        count,
        learning_rate,
    )
    # Zeros computed from `totals` (min(|x|, 0) is +0 for any non-NaN x): the dependency makes
    # XLA read the sums before it zeroes them, so the scatters stay in place; plain zeros let
    # it copy the whole buffer twice a step.
    sums = sums.at[ids].set(jnp.minimum(jnp.abs(totals), 0), mode="drop")
    moments = optim.RowMoments(
        mu=moments.mu.at[ids].set(mu, mode="drop"), nu=moments.nu.at[ids].set(nu, mode="drop")
    )
    return table.at[ids].set(rows, mode="drop"), moments, sums


def sgd_update(state, sums, batch: dict, *, loss_fn, tx, learning_rate, groups):
    """(state, sums, loss): `--learner=sgd` with row-sparse tables, packed. The same numbers
    as dense SGD (`train.dense_step` with optax.sgd) except where an id repeats in a batch,
    whose gradients are added to the row one by one instead of summed first (float rounding
    only)."""
    packed = state.params
    loss, g_dense, per_group = tables.row_gradients(packed, batch, loss_fn, groups)
    updates, opt_state = dense_tx(tx).update(g_dense, state.opt_state, packed["dense"])
    lr = optim.rate_at(learning_rate, state.step)
    params = {
        "dense": optax.apply_updates(packed["dense"], updates),
        "tables": sgd_tables(packed["tables"], per_group, lr),
    }
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), sums, loss


def sgd_tables(packed_tables: tuple, per_group: list, learning_rate) -> tuple:
    """Each packed table with `-learning_rate *` its row gradients scatter-added at the ids."""
    return tuple(
        table.at[ids].add(-learning_rate * grads, mode="drop")
        for table, (ids, _, grads) in zip(packed_tables, per_group, strict=True)
    )


UPDATES = {"adam": adam_update, "sgd": sgd_update}  # by learner, ROW_SPARSE_LEARNERS
