"""Stage: the one loop. A task is a small record (`Task`); `run` trains, evaluates, selects,
checkpoints, reports and plots any of them.

The record holds what differs between tasks as data: the initial state, the epoch function and
the data it reads, the evaluator, the selection metric and direction, and the head of
results.json. Many seeds are the same record with a leading replica axis on the state and the
key (`seeds`): the loop vmaps the epoch and the evaluator, and summarises every replica. A model
that is not trained by gradient steps fits too: its "epoch" solves (EASE^R: one linear system;
iALS: two alternating solves) and returns the new `FitState` and its objective as the loss.

Resume order: WORKDIR/checkpoints/latest (only when WORKDIR/options.json records the same
options; newest readable step first) -> the task's own initial state (pre-trained or scratch).
Epoch e trains with `fold_in(train_key, e)` inside the epoch and evaluates with
`fold_in(eval_key, e)`, so a resumed run repeats an uninterrupted one exactly.

Multi-process jobs (`ncf_jax.distributed`): every process runs this loop in step, on one shared
WORKDIR; all of them save and restore the checkpoints (Orbax writes each array's shards from the
processes that hold them), and process 0 alone writes options.json, results.json/.md and
history.png.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from absl import logging
from flax import struct

from ncf_jax import checkpoint, distributed, history, lock, reporting, xla
from ncf_jax.errors import DivergedError, ResumeError


@struct.dataclass
class FitState:
    """The state of a model fitted by solves, not gradient steps: epochs done and params."""

    epoch: jax.Array
    params: Any


@dataclasses.dataclass(frozen=True)
class Task:
    """One run as data.

    state: a pytree with `.epoch` (int32) and `.params`: a TrainState, a FitState, or either
      stacked over replicas (leading axis N) when `seeds` is given.
    train_epoch: `(state, data, key) -> (state, loss)`, one device call (loss [] or [N]).
    data: what `train_epoch` reads, on device.
    evaluate: `(params, key) -> {metric: scalar}`; validation metrics are prefixed "valid_".
    key: the run key (one per replica with `seeds`); it is split into train and eval keys.
    select, mode: the history key that picks the best epoch, and "max" or "min".
    epochs: train until this many epochs are done.
    results: the head of results.json (what ran, on what, with which options).
    options: the options that define the run ({flag: value}); WORKDIR records them.
    seeds: the replicas' seeds, or None for one run.
    replicated: with `seeds`, `train_epoch` and `evaluate` carry the replica axis themselves
      (the state need not be stacked; losses and metrics are [N], keys [N]): the loop calls
      them as they are instead of vmapping them (e.g. an EASE^R lambda grid from one
      factorisation).
    place: applied to a restored state (e.g. put it back on a device mesh).
    baseline: a second record run in WORKDIR/baseline (e.g. the model without features); its
      best_epoch and best go to results["baseline"].
    stop_at, patience: stop early (`history.stop_reason` on `select`): once it reaches
      `stop_at`, or after `patience` epochs without a better value; results.json records why.
    """

    state: Any
    train_epoch: Callable
    data: Any
    evaluate: Callable
    key: jax.Array
    select: str
    epochs: int
    results: dict
    options: dict
    mode: str = "max"
    has_validation: bool = False
    seeds: list[int] | None = None
    replicated: bool = False
    place: Callable = lambda state: state
    baseline: Task | None = None
    stop_at: float | None = None
    patience: int = 0


# ---------------------------------------------------------------------------------- resuming
def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:76] + " ..."


DATA_DIGEST = "data_digest"  # options.json / results.json key: digest of the prepared arrays


def with_data_digest(task: Task, digest: str) -> Task:
    """`task` recording `digest` (`ncf_jax.data.digest`) in its options and results, so a
    resume on other data is refused as a resume with other options is."""
    baseline = task.baseline and with_data_digest(task.baseline, digest)
    options, results = task.options | {DATA_DIGEST: digest}, task.results | {DATA_DIGEST: digest}
    return dataclasses.replace(task, options=options, results=results, baseline=baseline)


def _changed(key: str, old, new) -> str:
    if key == DATA_DIGEST:
        return f"  the data (digest of the prepared arrays): {old} -> {new}"
    return f"  --{key}: {_short(old)} -> {_short(new)}"


def check_options(workdir: pathlib.Path, options: dict) -> None:
    """Records `options` in WORKDIR/options.json, or, when WORKDIR already holds a checkpoint
    trained with other options, raises ResumeError listing them (old -> new)."""
    path = workdir / "options.json"
    has_run = checkpoint.latest_step(workdir / "checkpoints" / "latest") is not None
    if has_run and path.exists():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ResumeError(f"{path} cannot be read ({error}): delete {workdir} to start "
                              "fresh, or use another --workdir") from None  # fmt: skip
        new = json.loads(json.dumps(options))  # tuples as lists, like the saved file
        changed = [k for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)]
        if changed:
            pairs = [_changed(k, old.get(k), new.get(k)) for k in changed]
            lines = "\n".join(pairs)
            raise ResumeError(
                f"{workdir} holds a run trained with other options:\n{lines}\nTo start fresh, "
                f"use another --workdir or delete {workdir}; to resume, pass the old values "
                "(and the old data files)."
            )
    workdir.mkdir(parents=True, exist_ok=True)
    distributed.sync("options read")  # so no process reads the file while process 0 writes it
    if distributed.is_main():
        path.write_text(json.dumps(options, indent=1, sort_keys=True) + "\n")


# ------------------------------------------------------------------------------- the pieces
def _device_fns(task: Task):
    """(epoch, evaluate, split, fold) for one run, or vmapped over the replicas."""
    if task.seeds is None:
        return task.train_epoch, task.evaluate, jax.random.split, jax.random.fold_in
    split = lambda keys: jax.vmap(jax.random.split)(keys).swapaxes(0, 1)
    fold = jax.vmap(jax.random.fold_in, in_axes=(0, None))
    if task.replicated:
        return task.train_epoch, task.evaluate, split, fold
    epoch = xla.jit(jax.vmap(task.train_epoch, in_axes=(0, None, 0)), donate_argnums=0)
    return epoch, xla.jit(jax.vmap(task.evaluate)), split, fold


def _fetch(metrics: dict, n: int) -> list[dict]:
    """Device metrics -> one {name: float} per replica, in one transfer (in every process)."""
    host = {k: np.asarray(v, np.float64).reshape(n) for k, v in distributed.fetch(metrics).items()}
    return [{k: float(v[i]) for k, v in host.items()} for i in range(n)]


def _summary(task: Task, histories: list[list[dict]]) -> dict:
    one = lambda h: history.summarise(h, task.select, task.mode, task.has_validation)
    if task.seeds is None:
        return {"history": histories[0], **one(histories[0])}
    means = [history.mean_entry(list(entries)) for entries in zip(*histories, strict=True)]
    return {"history": means, **history.summarise_seeds(histories, task.seeds, one)}


def _restore(task: Task, ckpt: pathlib.Path):
    state, meta = checkpoint.restore_intact(ckpt / "latest", task.state)
    logging.info("resumed from %s after epoch %d", ckpt / "latest", meta["epoch"])
    return task.place(state), meta["histories"], meta["init"]


def _write(workdir: pathlib.Path, results: dict) -> None:
    """results.json and results.md, by process 0 only (every process holds the same results)."""
    if distributed.is_main():
        reporting.write_results(workdir, results)


# ------------------------------------------------------------------------------ divergence
def non_finite(epoch: int, losses, metrics: list[dict], seeds) -> str | None:
    """What went NaN or infinite in `epoch` (the loss first, then a metric), or None."""
    for k, (loss, values) in enumerate(zip(losses, metrics, strict=True)):
        replica = "" if seeds is None else f" (replica {k}, seed {seeds[k]})"
        for name, value in {"loss": loss, **values}.items():
            if not np.isfinite(value):
                what = "the training loss" if name == "loss" else name
                return f"epoch {epoch}{replica}: {what} is {value}"
    return None


def _diverged(what: str, epoch: int, workdir: pathlib.Path) -> DivergedError:
    kept = (
        f"the results and checkpoints of epochs 1-{epoch - 1} are in {workdir}"
        if epoch > 1
        else f"nothing was trained; the initial evaluation is in {workdir}"
    )
    return DivergedError(
        f"training diverged in {what}: {kept}; try a lower --learning_rate (or "
        "--learner=adam) in another --workdir"
    )  # fmt: skip


# ---------------------------------------------------------------------------------- the loop
def run(task: Task, workdir, *, plot: bool = True) -> dict:
    """Trains `task` to `task.epochs`, evaluating after every epoch; returns results.json's
    content (also written to WORKDIR/results.json, results.md and, with `plot`, history.png:
    a search's tried points skip it, 0.4 s a run). The run holds WORKDIR (`ncf_jax.lock`).

    A NaN or infinite loss or metric stops the run with DivergedError, after writing the
    results (and plot) of the epochs before it, whose checkpoints stay; results.json then
    records `diverged`."""
    with lock.hold(workdir):
        return _run(task, pathlib.Path(workdir), plot=plot)


def _stop_reason(task: Task, results: dict) -> str | None:
    """`history.stop_reason` of the run so far (the replicas' mean history with `seeds`)."""
    return history.stop_reason(results.get("history", []), task.select, task.mode,
                               stop_at=task.stop_at, patience=task.patience)  # fmt: skip


def _finish(task: Task, workdir: pathlib.Path, results: dict, plot: bool) -> None:
    _write(workdir, results)
    title = f"{results.get('model')} on {results.get('dataset')}"
    if plot and distributed.is_main() and results.get("history"):
        n = 1 if task.seeds is None else len(task.seeds)
        reporting.plot_history(workdir, results["history"],
                               title if n == 1 else f"{title} x{n} seeds")  # fmt: skip


def _run(task: Task, workdir: pathlib.Path, *, plot: bool) -> dict:
    check_options(workdir, task.options)
    ckpt = workdir / "checkpoints"
    epoch_fn, evaluate, split, fold = _device_fns(task)
    n = 1 if task.seeds is None else len(task.seeds)
    train_key, eval_key = split(task.key)
    state = task.state
    if checkpoint.latest_step(ckpt / "latest") is not None:
        state, histories, init = _restore(task, ckpt)
    else:
        histories = [[] for _ in range(n)]
        init = _fetch(evaluate(state.params, fold(eval_key, 0)), n)
        init = init[0] if n == 1 else history.mean_entry(init)
        logging.info("init: %s", reporting.format_metrics(init))

    results = dict(task.results, init=init)
    if histories[0]:  # resumed: the record so far, under the head of this run
        results |= _summary(task, histories)
    progress = reporting.Progress(task.epochs, start=len(histories[0]))
    best, latest = checkpoint.Writer(ckpt / "best"), checkpoint.Writer(ckpt / "latest", keep=2)
    with best, latest:  # one Orbax manager each for the run's saves
        for epoch in range(len(histories[0]) + 1, task.epochs + 1):
            if stopped := _stop_reason(task, results):  # also a resumed run that had stopped
                results["stopped"] = stopped
                logging.info("stopped before epoch %d: %s", epoch, stopped)
                break
            t0 = time.perf_counter()
            state, losses = epoch_fn(state, task.data, train_key)
            losses = distributed.fetch(losses)  # waits for the devices
            losses = np.asarray(losses, np.float64).reshape(n)
            t1 = time.perf_counter()
            metrics = _fetch(evaluate(state.params, fold(eval_key, epoch)), n)
            seconds = (t1 - t0, time.perf_counter() - t1)
            bad = non_finite(epoch, losses, metrics, task.seeds)
            if bad:  # this epoch is neither recorded nor saved
                results["diverged"] = bad
                _finish(task, workdir, results, plot)
                raise _diverged(bad, epoch, workdir)
            for replica, loss, values in zip(histories, losses, metrics, strict=True):
                replica.append(history.epoch_entry(epoch, float(loss), values, *seconds))
            results |= _summary(task, histories)
            reporting.log_epoch(results["history"][-1])
            progress.update(
                reporting.format_metrics({task.select: results["history"][-1][task.select]})
            )
            meta = {"epoch": epoch, "histories": histories, "init": init, "results": results}
            chosen = history.select_best(histories[0], task.select, task.mode)["epoch"]
            if n == 1 and chosen == epoch:
                best.save(epoch, state, meta)
            latest.save(epoch, state, meta)
            _write(workdir, results)

    if not histories[0]:  # --epochs=0: the starting model is the result
        results |= {"best_epoch": 0, "best": {k: v for k, v in init.items() if "valid_" not in k}}
    _finish(task, workdir, results, plot)
    if task.baseline is not None:
        base = run(task.baseline, workdir / "baseline", plot=plot)
        results["baseline"] = {"best_epoch": base["best_epoch"], "best": base["best"]}
        logging.info("baseline: %s", reporting.format_metrics(base["best"]))
        _write(workdir, results)
    return results
