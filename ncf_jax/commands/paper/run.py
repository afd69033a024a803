"""Stage: training the paper's cells. Each cell runs in the one loop in WORKDIR/cells/<name>,
all seeds vmapped in one program; a finished cell is read back, never retrained.

Resume: a cell whose results.json has all its epochs is done; a half-trained one resumes in the
loop from its own checkpoint. Every cell evaluates HR@K and NDCG@K for K = 1..10 from one
scoring pass per epoch (Figure 5 reads them at the epoch Figure 4 reports).

Pre-training with seeds: the loop keeps a best checkpoint only for single runs, so after a GMF
or MLP cell ends its final state is split into one checkpoint per replica
(WORKDIR/cells/<name>/replicas/<k>), and NeuMF's replica k starts from GMF's and MLP's replica
k. The final epoch is "trained until convergence" (section 3.4.1) and, unlike the authors'
best-on-test checkpoint, picks nothing on the test set.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp

from ncf_jax import checkpoint, evaluate, loop, tasks
from ncf_jax.commands.paper.suite import CUTOFFS, Cell, cells_in_order, cost
from ncf_jax.data.digest import data_digest
from ncf_jax.errors import UsageError
from ncf_jax.models import create_model, load_pretrained, scoring


def cell_dir(workdir, cell: Cell) -> pathlib.Path:
    return pathlib.Path(workdir) / "cells" / cell.name


def finished(workdir, cell: Cell) -> dict | None:
    """The results of a cell that trained all its epochs, else None."""
    path = cell_dir(workdir, cell) / "results.json"
    if not path.exists():
        return None
    results = json.loads(path.read_text())
    return results if len(results.get("history", ())) >= cell.values["epochs"] else None


def export_replicas(folder: pathlib.Path, num_seeds: int) -> None:
    """Splits a finished cell's final params into replicas/<k> checkpoints (what
    `checkpoint.restore_params` and so --mf_pretrain read)."""
    state, meta = checkpoint.restore(folder / "checkpoints" / "latest")
    for k in range(num_seeds):
        if checkpoint.latest_step(folder / "replicas" / str(k)) is not None:
            continue
        params = state["params"]
        if num_seeds > 1:
            params = jax.tree.map(lambda x, k=k: x[k], params)
        checkpoint.save(folder / "replicas" / str(k), meta["epoch"], {"params": params},
                        {"epoch": meta["epoch"], "replica": k})  # fmt: skip


def _all_cutoffs_evaluator(data, configs):
    """HR@K / NDCG@K for K = 1..top_k on the test pairs, one scoring pass (sampled protocol)."""
    c = configs["eval"]
    if c.protocol != "sampled" or data.has_validation:
        raise UsageError("the paper's protocol is --eval_protocol=sampled without --validation")
    model = create_model(configs["model"], data.num_users, data.num_items)
    score_fn, _ = scoring.score_fns(model, data.num_items)
    return evaluate.make_sampled_evaluator(
        score_fn, data.test_users, data.test_items, data.test_negatives,
        data.test_negatives_mask, k=c.top_k, ties=c.ties, chunk_size=c.chunk_size,
        cutoffs=tuple(k for k in CUTOFFS if k <= c.top_k),
    )  # fmt: skip


def _per_replica_pretrained(task, pretrain: dict, num_seeds: int, alpha: float):
    """`task` whose replica k starts from replica k of each pre-training cell."""
    template = jax.tree.map(lambda x: x[0], task.state.params)
    params = []
    for k in range(num_seeds):
        gmf, _ = checkpoint.restore_params(pretrain["mf_pretrain"] / "replicas" / str(k))
        mlp, _ = checkpoint.restore_params(pretrain["mlp_pretrain"] / "replicas" / str(k))
        params.append(load_pretrained(template, gmf, mlp, alpha=alpha))
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *params)
    # optax's SGD and Adam states do not depend on the parameters' values, only their shapes.
    return dataclasses.replace(task, state=task.place(task.state.replace(params=stacked)))


def train_cell(workdir, cell: Cell, data, *, extra: dict | None = None) -> dict:
    """Trains (or resumes) `cell` in its folder; returns its results.json."""
    task_module = tasks.TASKS[cell.task]
    folder = cell_dir(workdir, cell)
    options = cell.values
    pretrain = {flag: cell_dir(workdir, dep).resolve() for flag, dep in cell.pretrain}
    options |= {flag: str(path / "replicas" / "0") for flag, path in pretrain.items()}
    configs = tasks.configs_from_options(task_module, options)
    task = loop.with_data_digest(task_module.build(data, configs, extra=extra), data_digest(data))
    task = dataclasses.replace(task, evaluate=_all_cutoffs_evaluator(data, configs))
    num_seeds = options.get("num_seeds", 1)
    if pretrain and num_seeds > 1:
        task = _per_replica_pretrained(task, pretrain, num_seeds, options.get("alpha", 0.5))
    return loop.run(task, folder)


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else (
        f"{seconds // 60}m{seconds % 60:02d}s")  # fmt: skip


def run_cells(workdir, plan: dict, data, *, log: Callable[[str], None] = print,
              extra: dict | None = None, train: bool = True) -> dict[str, dict]:  # fmt: skip
    """Trains every distinct cell of `plan` that is not finished; returns {cell name: results}.
    With `train=False` nothing trains: the finished cells only (a report of a suite so far).

    Logs "cell i/n: NAME (...) | elapsed, about T left" before each cell; T scales the seconds
    measured so far by the relative cost (`suite.cost`) of the cells still to train.
    """
    cells = cells_in_order(plan)
    dependencies = {dep for cell in cells for _, dep in cell.pretrain}
    todo = [cell for cell in cells if finished(workdir, cell) is None]
    total_cost, done_cost, spent = sum(map(cost, todo)), 0.0, 0.0
    out, started = {}, time.perf_counter()
    for i, cell in enumerate(cells, 1):
        results = finished(workdir, cell)
        if results is None and not train:
            continue
        if results is None:
            left = "unknown" if not spent else format_seconds(
                spent / done_cost * (total_cost - done_cost))  # fmt: skip
            log(f"cell {i}/{len(cells)}: {cell.label} ({len(todo)} to train, "
                f"{format_seconds(spent)} spent, about {left} left)")  # fmt: skip
            t0 = time.perf_counter()
            results = train_cell(workdir, cell, data, extra=extra)
            seconds = time.perf_counter() - t0
            spent, done_cost = spent + seconds, done_cost + cost(cell)
            _record_seconds(cell_dir(workdir, cell), seconds)
        if cell in dependencies:
            export_replicas(cell_dir(workdir, cell), cell.values.get("num_seeds", 1))
        out[cell.name] = results
    log(f"{len(out)} of {len(cells)} cells done in {format_seconds(time.perf_counter() - started)}")
    return out


def _record_seconds(folder: pathlib.Path, seconds: float) -> None:
    """Adds this invocation's wall-clock seconds to the cell's seconds.json (compile included)."""
    path = folder / "seconds.json"
    before = json.loads(path.read_text())["seconds"] if path.exists() else 0.0
    path.write_text(json.dumps({"seconds": round(before + seconds, 1)}) + "\n")


def cell_seconds(workdir, cell: Cell) -> float | None:
    path = cell_dir(workdir, cell) / "seconds.json"
    return json.loads(path.read_text())["seconds"] if path.exists() else None
