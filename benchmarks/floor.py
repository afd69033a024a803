"""The benchmarks' floor: SGD on the looked-up rows and the dense parameters, packed, in the
library's scanned epoch. The least any optimiser that touches only a batch's rows can cost;
`benchmarks.ncf_epoch` and `benchmarks.lazy_step` time every configuration as a multiple of it.
"""

from __future__ import annotations

import functools

import jax

from ncf_jax import row_sparse, train
from ncf_jax.tables import row_gradients, table_groups


def row_sgd_update(state, sums, batch, *, loss_fn, learning_rate, groups):
    """(state, sums, loss): SGD on the looked-up rows and the dense parameters of a
    `ncf_jax.tables.packed_state`."""
    packed = state.params
    loss, g_dense, per_group = row_gradients(packed, batch, loss_fn, groups)
    dense = jax.tree.map(lambda p, g: p - learning_rate * g, packed["dense"], g_dense)
    new_tables = row_sparse.sgd_tables(packed["tables"], per_group, learning_rate)
    params = {"dense": dense, "tables": new_tables}
    return state.replace(step=state.step + 1, params=params), sums, loss


def make_floor_epoch(loss_fn, make_batches, *, learning_rate: float, tables: dict):
    """`train.make_train_epoch`'s epoch with `row_sgd_update` steps: the floor."""
    sgd = functools.partial(row_sgd_update, loss_fn=loss_fn, learning_rate=learning_rate)
    pack = lambda params, _: table_groups(params, tables)
    return train.scanned_epoch(sgd, make_batches, pack=pack)
