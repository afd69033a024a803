"""Stage: the assembly. One function turns what a task describes as its own into the record the
one loop runs.

A task says what is its own in a `Recipe`: how to initialise the parameters from a key, the
loss, the batches and the data they are drawn from, the evaluator, the metric that selects the
reported epoch, and the optimiser as a function of the learning rate. `assemble` adds what every
trained task shares: the run key and the initialisation key of each seed, the optimiser, the
train state and the scanned epoch, many seeds (`num_seeds`: replicas vmapped by the loop),
learning-rate replicas (`learning_rates`: one replica per rate, the rate in its optimiser
state) and the placement on a device mesh (`make_mesh`; batches split over "data", tables
optionally split by rows over "model").

Replica k of `num_seeds` starts as the single run with seed `seed + k`: the same keys, so the
same numbers up to how XLA compiles the vmapped program.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from ncf_jax import sharding, train
from ncf_jax.loop import Task


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What a trained task describes as its own.

    init: `init(key) -> params` (Flax variables; e.g. pre-trained ones loaded).
    loss_fn: `loss_fn(params, batch) -> scalar`.
    make_batches: `make_batches(key, data) -> batches` of one epoch (`ncf_jax.batching`).
    data: what `make_batches` reads, on device.
    evaluate: `evaluate(params, key) -> {metric: scalar}`.
    select, mode: the metric that picks the reported epoch, and "max" or "min".
    optimizer: `optimizer(learning_rate) -> optax.GradientTransformation`.
    learning_rate: the rate (a float or an optax schedule) of one run.
    tables: `layers.table_labels(model, ...)`: the epoch runs on them packed (`ncf_jax.tables`)
      and row-sparse training updates their rows; None: no table is packed.
    row_sparse, row_learner: `--lazy_embeddings` and the learner it updates tables by.
    """

    init: Callable
    loss_fn: Callable
    make_batches: Callable
    data: Any
    evaluate: Callable
    select: str
    optimizer: Callable
    learning_rate: Any
    mode: str = "max"
    tables: dict | None = None
    row_sparse: bool = False
    row_learner: str = "adam"


def make_mesh(mesh_model: int = 1, *, split_one_process: bool = False):
    """The ("data", "model") mesh a run splits over (`sharding.make_mesh`), or None for one
    device. A multi-process job always splits over every process's devices; one process keeps
    one device unless `split_one_process` or `mesh_model` > 1 (splitting a batch changes the
    order of the gradient sums, so a run's numbers would depend on the devices it saw)."""
    if jax.process_count() == 1 and mesh_model == 1 and not split_one_process:
        return None
    return sharding.make_mesh(mesh_model)


def seeded(make_state: Callable, seeds: list[int], *, replicas: bool) -> tuple:
    """(state, run key) of the run with seed `seeds[0]`, or, with `replicas`, both stacked over
    `seeds` (a leading replica axis). Each seed's key splits into an initialisation key, given
    to `make_state(k, init_key)` for replica k, and the run key; states are built one by one,
    so a task may load pre-trained parameters in `make_state`."""
    states, keys = [], []
    for k, seed in enumerate(seeds):
        init_key, key = jax.random.split(jax.random.key(seed))
        states.append(make_state(k, init_key))
        keys.append(key)
    if not replicas:
        return states[0], keys[0]
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *states), jnp.stack(keys)


def _replicas(recipe: Recipe, seed: int, num_seeds: int, learning_rates: tuple) -> tuple:
    """(optimisers, seeds): one optimiser per learning-rate replica, all from `seed`, its rate
    in its optimiser state (one update rule for all); else one optimiser and the seeds
    seed .. seed + num_seeds - 1."""
    if learning_rates and (num_seeds > 1 or recipe.row_sparse):
        raise ValueError("learning-rate replicas take one seed and dense tables")
    if learning_rates:
        inject = optax.inject_hyperparams(lambda rate: recipe.optimizer(rate))
        return [inject(rate=rate) for rate in learning_rates], [seed] * len(learning_rates)
    return [recipe.optimizer(recipe.learning_rate)], list(range(seed, seed + num_seeds))


def assemble(
    recipe: Recipe,
    *,
    seed: int,
    epochs: int,
    results: dict,
    options: dict,
    has_validation: bool = False,
    num_seeds: int = 1,
    learning_rates: tuple[float, ...] = (),
    mesh=None,
    shard_tables: bool = False,
    baseline: Task | None = None,
    stop_at: float | None = None,
    patience: int = 0,
) -> Task:
    """The `loop.Task` of `recipe`: one run with `seed`, `num_seeds` replicas with seeds
    seed .. seed + N - 1, or one replica per rate of `learning_rates` (all from `seed`), on
    `mesh` (None: one device); `shard_tables` splits the tables by rows over "model" (one run
    only). `results` is the head of results.json; the replicas' seeds are added to it.
    `stop_at`, `patience`: the loop's early stop (`loop.Task`)."""
    txs, seeds = _replicas(recipe, seed, num_seeds, learning_rates)
    make_state = lambda k, key: train.create_train_state(
        recipe.init(key),
        txs[min(k, len(txs) - 1)],
        row_sparse=recipe.row_sparse,
        tables=recipe.tables,
        row_learner=recipe.row_learner,
    )
    epoch = train.make_train_epoch(
        recipe.loss_fn,
        txs[0],
        sharding.data_parallel_batches(recipe.make_batches, mesh),
        row_sparse=recipe.row_sparse,
        learning_rate=recipe.learning_rate,
        tables=recipe.tables,
        row_learner=recipe.row_learner,
    )
    record = dict(
        evaluate=recipe.evaluate,
        select=recipe.select,
        mode=recipe.mode,
        epochs=epochs,
        options=options,
        has_validation=has_validation,
        baseline=baseline,
        stop_at=stop_at,
        patience=patience,
    )
    replicas = len(seeds) > 1 or bool(learning_rates)
    state, key = seeded(make_state, seeds, replicas=replicas)
    if replicas:  # states replicated on the mesh, batches split over "data"
        place = lambda s: s
        if not sharding.is_trivial(mesh):
            place = lambda s: sharding.place(s, sharding.state_shardings(s, mesh))
        return Task(state=place(state), train_epoch=epoch, data=recipe.data, key=key,
                    results=results | {"seed": seeds}, seeds=seeds, place=place,
                    **record)  # fmt: skip
    tables = recipe.tables if shard_tables else None
    epoch, state, data = sharding.shard_train_epoch(epoch, state, recipe.data, mesh, tables=tables)
    return Task(state=state, train_epoch=epoch, data=data, key=key, results=results, **record)
