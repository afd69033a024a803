"""Stage: train step and evaluation, spread over devices. A mesh and its shardings; a no-op on one
device.

The mesh has two axes: `data` splits every batch (the `[steps, batch, ...]` epoch arrays along
dim 1, the ids given to the model along dim 0) and `model` splits embedding tables by rows. Dense
parameters, optimiser state and the on-device interactions are replicated. Nothing here writes a
collective: the epoch is jitted with these input and output shardings and XLA's partitioner
inserts the gradient all-reduce (and, for row-sharded tables, the gather's masked lookups and
their reduction) itself, so the single-device program and the sharded one are the same code.

Multi-host: `maybe_initialize_distributed()` joins the processes of a cluster job before any
device is touched; every process then holds the same (replicated) training data and builds the
same global mesh over `jax.devices()` (see `ncf_jax.distributed`).
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ncf_jax import distributed, xla
from ncf_jax.batching import StepBatches

DATA, MODEL = "data", "model"


def maybe_initialize_distributed() -> bool:
    """Joins a multi-process job when this process is one (`ncf_jax.distributed.initialize`:
    launcher detection, timeouts); call it before anything touches a device."""
    return distributed.initialize()


def make_mesh(num_model: int = 1, devices=None) -> Mesh:
    """A ("data", "model") mesh over `devices` (default: all of them), `num_model` wide on "model".

    Axes are `Auto`: shardings are hints to the partitioner, so the model code stays unaware of
    them (explicit-mode axes would require annotating every gather).
    """
    devices = jax.devices() if devices is None else list(devices)
    if num_model < 1 or len(devices) % num_model:
        raise ValueError(
            f"--mesh_model={num_model} must divide the number of devices ({len(devices)})"
        )
    shape = (len(devices) // num_model, num_model)
    return jax.make_mesh(shape, (DATA, MODEL), (AxisType.Auto, AxisType.Auto), devices=devices)


def is_trivial(mesh: Mesh | None) -> bool:
    """True when there is nothing to shard (no mesh, or a one-device mesh)."""
    return mesh is None or mesh.size == 1


def padded_rows(num_rows: int, mesh: Mesh | None) -> int:
    """`num_rows` rounded up to a multiple of the "model" axis, so a table splits evenly.

    The extra rows are never looked up (ids stay < num_rows); they only make the table's shape
    divisible, which `NamedSharding` requires.
    """
    parts = 1 if mesh is None else mesh.shape[MODEL]
    return -(-num_rows // parts) * parts


def _mirrors_a_table(path, tables: dict) -> bool:
    """True for a leaf that is one of `tables` ({("params", ..., "embedding"): Table}) or
    mirrors one: optax moments repeat the table's path below their own keys, and row-sparse
    moments are keyed by the table's path joined with "/"."""
    keys = "/" + "/".join(str(getattr(k, "key", getattr(k, "name", ""))) for k in path) + "/"
    return any("/" + "/".join(t[1:]) + "/" in keys for t in tables)


def state_shardings(tree, mesh: Mesh, *, tables: dict | None = None):
    """NamedShardings for a TrainState (or params) pytree: replicated, except the 2-D leaves of
    `tables` (`layers.table_labels`; their Adam moments too), split by rows over "model"."""

    def spec(path, leaf):
        rows = bool(tables) and np.ndim(leaf) == 2 and _mirrors_a_table(path, tables)
        return NamedSharding(mesh, P(MODEL, None) if rows else P())

    return jax.tree_util.tree_map_with_path(spec, tree)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def place(tree, shardings):
    """Puts every leaf of `tree` on its sharding (works across hosts: each process supplies the
    slices its devices hold from its own full copy)."""

    def put(x, sharding):
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree, shardings)


def _constrain_rows(x, mesh: Mesh, dim: int):
    spec = P(*([None] * dim), DATA, *([None] * (x.ndim - dim - 1)))
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def data_parallel_batches(make_batches, mesh: Mesh | None):
    """`make_batches(key, data)` whose `[steps, batch, ...]` arrays are split over "data" on the
    batch dimension, so each step's rows are spread over the data-parallel devices; `[steps]`
    leaves (one dropout key per step) stay replicated."""
    if is_trivial(mesh):
        return make_batches

    def sharded(key, data):
        batches = make_batches(key, data)
        if isinstance(batches, StepBatches):  # one step's [batch, ...] arrays, built in the scan
            split_one = lambda x: _constrain_rows(x, mesh, 0) if x.ndim > 0 else x
            build = lambda rows, step: jax.tree.map(split_one, batches.build(rows, step))
            return batches.replace(build=build)
        split = lambda x: _constrain_rows(x, mesh, 1) if x.ndim > 1 else x
        return jax.tree.map(split, batches)

    return sharded


def data_parallel_apply(apply_fn, mesh: Mesh | None):
    """`apply_fn(params, users, items, **kwargs)` with the ids split over "data" on their first
    dimension: evaluation chunks (`[chunk, candidates]`) are then scored data-parallel too."""
    if is_trivial(mesh):
        return apply_fn

    def apply(params, users, items, **kwargs):
        users, items = _constrain_rows(users, mesh, 0), _constrain_rows(items, mesh, 0)
        return apply_fn(params, users, items, **kwargs)

    return apply


def shard_train_epoch(train_epoch, state, data, mesh: Mesh | None, *, tables: dict | None = None):
    """(epoch, state, data) placed on `mesh`: `epoch(state, data, key) -> (state, loss)` is jitted
    with the state's shardings in and out (state donated), data and key replicated.

    `train_epoch` is `train.make_train_epoch(...)` built with `data_parallel_batches`; `tables`
    (`layers.table_labels`) are split by rows over "model" (None: everything replicated). On a
    trivial mesh everything is returned unchanged.
    """
    if is_trivial(mesh):
        return train_epoch, state, data
    state_sh = state_shardings(state, mesh, tables=tables)
    data_sh = jax.tree.map(lambda _: replicated(mesh), data)
    epoch = xla.jit(
        train_epoch,
        in_shardings=(state_sh, data_sh, replicated(mesh)),
        out_shardings=(state_sh, replicated(mesh)),
        donate_argnums=0,
    )
    return epoch, place(state, state_sh), place(data, data_sh)
