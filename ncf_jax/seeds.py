"""Stage: the driver, for many seeds at once. N independent replicas trained in one program.

Replica k is exactly the run `--seed=seed+k`: its parameters are initialised from that seed's
key, and the whole epoch function (negative sampling, shuffle and every step) is `jax.vmap`-ed
over (state, key) with the device data shared, so each replica draws its own negatives and
order. Evaluation is vmapped over (params, key) the same way. Per-step overheads are paid once
for all replicas; the tables' optimiser sweeps still grow with N (5 NeuMF seeds on ml-100k:
2.3x the wall time of one on a 2-core CPU).

results.json of a multi-seed run:
  best, best_std: mean and sample standard deviation (n - 1) over replicas of each replica's
    selected epoch's test metrics (each replica picks its own epoch by --select_epoch);
  best_epoch: the replicas' selected epochs, a list;
  seeds: one entry per replica: {"seed", "best_epoch", "best", "best_by_test", "history", ...};
  history: per-epoch means over replicas (the table and plot show these).
"""

from __future__ import annotations

import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from ncf_jax import checkpoint, reporting, sharding, xla


def replica_seeds(seed: int, num_seeds: int) -> list[int]:
    """The seeds of the replicas: seed, seed + 1, ..., seed + num_seeds - 1."""
    return list(range(seed, seed + num_seeds))


def stack(trees: list):
    """A list of identically shaped pytrees -> one pytree with a leading replica axis."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def unstack(tree, index: int):
    """Replica `index` of a stacked pytree."""
    return jax.tree.map(lambda leaf: leaf[index], tree)


def init_states(make_state, seeds: list[int]):
    """(stacked TrainStates, stacked run keys): replica k is what a single run with seed k
    starts from. `make_state(init_key)` builds one state (`runner.init_params` and
    `train.create_train_state`); states are built one by one, so pre-trained loads work."""
    states, keys = [], []
    for seed in seeds:
        init_key, key = jax.random.split(jax.random.key(seed))
        states.append(make_state(init_key))
        keys.append(key)
    return stack(states), jnp.stack(keys)


def vmap_epoch(train_epoch):
    """`epoch(states, data, keys) -> (states, losses [N])`: `train_epoch` over every replica,
    sharing `data`; `states` is donated."""
    return xla.jit(jax.vmap(train_epoch, in_axes=(0, None, 0)), donate_argnums=0)


def vmap_evaluators(evaluators: dict):
    """`evaluate(params, keys) -> {name: [N] array}` over stacked params and per-replica keys;
    names as `runner.evaluate_all` gives them ("valid_" prefix for validation)."""

    def one(params, key):
        out = {}
        for name, fn in evaluators.items():
            prefix = "" if name == "test" else f"{name}_"
            out |= {prefix + k: v for k, v in fn(params, key).items()}
        return out

    return xla.jit(jax.vmap(one))


def _split_keys(keys):
    pairs = jax.vmap(jax.random.split)(keys)  # [N, 2]
    return pairs[:, 0], pairs[:, 1]


def _mean_entry(entries: list[dict]) -> dict:
    mean = lambda k: float(np.mean([e[k] for e in entries]))
    return {k: (v if k == "epoch" else mean(k)) for k, v in entries[0].items()}


def summarise_seeds(histories: list[list[dict]], seeds: list[int], summarise) -> dict:
    """best (means), best_std, best_epoch (a list) and seeds (per replica) from the replicas'
    histories; `summarise(history)` is `runner.summarise` with the run's selection bound."""
    pairs = zip(seeds, histories, strict=True)
    per_seed = [{"seed": s, **summarise(h), "history": h} for s, h in pairs]
    names = list(per_seed[0]["best"])
    values = {k: np.array([p["best"][k] for p in per_seed]) for k in names}
    ddof = 1 if len(seeds) > 1 else 0
    return {
        "best_epoch": [p["best_epoch"] for p in per_seed],
        "best": {k: float(v.mean()) for k, v in values.items()},
        "best_std": {k: float(v.std(ddof=ddof)) for k, v in values.items()},
        "seeds": per_seed,
    }


def fit_seeds(
    states,
    train_epoch,
    train_data,
    evaluators: dict,
    *,
    keys: jax.Array,
    seeds: list[int],
    epochs: int,
    workdir,
    results: dict,
    summarise,
    epoch_entry,
    mesh=None,
) -> dict:
    """`runner.fit` for stacked replicas: train, evaluate, checkpoint `latest`, report.

    `keys` are the replicas' run keys (as `init_states` returns them); replica k trains epoch e
    with `fold_in(train_key_k, e)` and evaluates with `fold_in(eval_key_k, e)`, exactly as a
    single run. `summarise(history) -> {"best_epoch", "best", ...}` and `epoch_entry(epoch, loss,
    metrics, train_s, eval_s)` are the single-run helpers. No `best` checkpoint is written (each
    replica has its own best epoch); `latest` holds every replica and resumes them together.
    On a multi-device `mesh` the replicas are replicated and each one's batches split over
    "data" (by the `make_batches` inside `train_epoch`).
    """
    workdir = pathlib.Path(workdir)
    ckpt = workdir / "checkpoints" / "latest"
    train_keys, eval_keys = _split_keys(keys)
    epoch_fn, evaluate = vmap_epoch(train_epoch), vmap_evaluators(evaluators)
    fold = jax.vmap(jax.random.fold_in, in_axes=(0, None))
    fetch = lambda metrics: {k: np.asarray(v, float) for k, v in jax.device_get(metrics).items()}
    histories: list[list[dict]] = [[] for _ in seeds]
    history: list[dict] = []
    if checkpoint.latest_step(ckpt) is not None:
        states, meta = checkpoint.restore(ckpt, states)
        history, histories, results = meta["history"], meta["histories"], meta["results"]
    else:
        init = fetch(evaluate(states.params, fold(eval_keys, 0)))
        results["init"] = {k: float(v.mean()) for k, v in init.items()}
    if not sharding.is_trivial(mesh):  # a restored state sits on one device
        states = sharding.place(states, sharding.state_shardings(states, mesh))

    start = int(np.max(jax.device_get(states.epoch)))
    for epoch in range(start + 1, epochs + 1):
        t0 = time.perf_counter()
        states, losses = epoch_fn(states, train_data, train_keys)
        losses = np.asarray(jax.device_get(losses), np.float64)
        t1 = time.perf_counter()
        metrics = fetch(evaluate(states.params, fold(eval_keys, epoch)))
        seconds = (t1 - t0, time.perf_counter() - t1)
        for k, replica in enumerate(histories):
            mine = {name: float(value[k]) for name, value in metrics.items()}
            replica.append(epoch_entry(epoch, losses[k], mine, *seconds))
        history.append(_mean_entry([h[-1] for h in histories]))
        reporting.log_epoch(history[-1])
        results |= {"history": history, **summarise_seeds(histories, seeds, summarise)}
        meta = {"history": history, "histories": histories, "results": results}
        checkpoint.save(ckpt, epoch, states, meta)
        reporting.write_results(workdir, results)
    logging.info("%d seeds: best %s", len(seeds), reporting.format_metrics(results["best"]))
    reporting.plot_history(workdir, history, f"{results.get('model')} x{len(seeds)} seeds")
    return results
