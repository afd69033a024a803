"""Stage: the driver. `train_and_evaluate` reads like a recipe: model, optimiser, state,
evaluators, resume, then the epoch loop that trains, evaluates, checkpoints and reports.

Resume order: the run's own WORKDIR/checkpoints/latest -> pre-trained GMF + MLP -> scratch.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from ncf_jax import batching, checkpoint, evaluate, interactions, optim, reporting, sharding, train
from ncf_jax.config import DataConfig, EvalConfig, ModelConfig, TrainConfig
from ncf_jax.data.types import InteractionData
from ncf_jax.models import create_model, load_pretrained


def make_score_fn(apply_fn):
    """score_fn(params, users [c], items [c, m]) -> [c, m] for any pointwise model."""

    def score_fn(params, users, items):
        return apply_fn(params, users[:, None], items)

    return score_fn


def make_score_all_fn(apply_fn, num_items: int):
    """score_all_fn(params, users [c]) -> [c, num_items]: every item, for full ranking."""
    score_fn = make_score_fn(apply_fn)

    def score_all_fn(params, users):
        items = jnp.broadcast_to(jnp.arange(num_items, dtype=jnp.int32), (len(users), num_items))
        return score_fn(params, users, items)

    return score_all_fn


def make_evaluators(
    apply_fn,
    data: InteractionData,
    eval_config: EvalConfig,
    *,
    score_fn=None,
    score_all_fn=None,
) -> dict:
    """{"test": evaluate, "valid": evaluate?} for the configured protocol.

    score_fn / score_all_fn (see `evaluate`) default to pointwise scoring with `apply_fn`;
    models with a faster route (two-tower: one matrix product) pass their own.
    """
    c = eval_config
    score_fn = score_fn or make_score_fn(apply_fn)
    score_all_fn = score_all_fn or make_score_all_fn(apply_fn, data.num_items)
    splits = {"test": "test"} | ({"valid": "valid"} if data.has_validation else {})
    result = {}
    for name, prefix in splits.items():
        users, items = getattr(data, f"{prefix}_users"), getattr(data, f"{prefix}_items")
        if c.protocol == "sampled":
            negatives = getattr(data, f"{prefix}_negatives")
            if negatives.shape[1] == 0:
                raise ValueError(
                    "--eval_protocol=sampled needs test negatives: set --num_test_negatives > 0 "
                    "or use --eval_protocol=full"
                )
            result[name] = evaluate.make_sampled_evaluator(
                score_fn,
                users,
                items,
                negatives,
                getattr(data, f"{prefix}_negatives_mask"),
                k=c.top_k,
                ties=c.ties,
                chunk_size=c.chunk_size,
            )
        else:
            indptr, indices = data.train_csr()
            full = evaluate.make_full_evaluator(
                score_all_fn,
                users,
                items,
                indptr,
                indices,
                num_items=data.num_items,
                k=c.top_k,
                chunk_size=max(1, min(c.chunk_size, 256)),
            )
            result[name] = lambda params, key, full=full: full(params)
    return result


def init_params(model, model_config: ModelConfig, key: jax.Array):
    """Fresh parameters, or NeuMF loaded from the GMF and MLP checkpoints."""
    dummy = jnp.zeros((1,), jnp.int32)
    params = model.init(key, dummy, dummy)
    if model_config.pretrained:
        gmf, _ = checkpoint.restore_params(model_config.mf_pretrain)
        mlp, _ = checkpoint.restore_params(model_config.mlp_pretrain)
        params = load_pretrained(params, gmf, mlp, alpha=model_config.alpha)
        logging.info(
            "NeuMF initialised from %s and %s", model_config.mf_pretrain, model_config.mlp_pretrain
        )
    return params


def learner_for(model_config: ModelConfig, train_config: TrainConfig) -> str:
    """After pre-training the paper continues with SGD; `--pretrain_learner=same` keeps
    `--learner` as the authors' README command does."""
    if model_config.pretrained and train_config.pretrain_learner != "same":
        return train_config.pretrain_learner
    return train_config.learner


def evaluate_all(evaluators: dict, params, key) -> dict:
    """{"hr@10": .., "valid_hr@10": ..} as Python floats: one device->host fetch."""
    out = {}
    for name, fn in evaluators.items():
        prefix = "" if name == "test" else f"{name}_"
        out |= {prefix + k: v for k, v in fn(params, key).items()}
    return {k: float(v) for k, v in jax.device_get(out).items()}


def selected(metric: str, eval_config: EvalConfig) -> str:
    """The history key that picks the best epoch: `metric` on test, or `valid_<metric>`."""
    return metric if eval_config.select_epoch == "test" else f"valid_{metric}"


def select_best(history: list[dict], metric: str, mode: str = "max") -> dict:
    """The history entry with the best `metric` ("max" or "min"); the earliest wins a tie."""
    sign = 1.0 if mode == "max" else -1.0
    return max(history, key=lambda h: (sign * h[metric], -h["epoch"]))


def summarise(history: list[dict], metric: str, mode: str, has_validation: bool) -> dict:
    """best_epoch and best (test metrics) by `metric` on the selection split, plus
    best_by_test, and best_by_valid when a validation split exists."""
    names = [k for k in history[0] if k not in ("epoch", "loss") and "seconds" not in k]
    test_names = [k for k in names if not k.startswith("valid_")]
    pick = lambda entry: {k: entry[k] for k in test_names}
    base = metric.removeprefix("valid_")
    by_test = select_best(history, base, mode)
    out = {"best_by_test": {"epoch": by_test["epoch"], **pick(by_test)}}
    chosen = by_test
    if has_validation:
        by_valid = select_best(history, f"valid_{base}", mode)
        out["best_by_valid"] = {"epoch": by_valid["epoch"], **pick(by_valid)}
        if metric.startswith("valid_"):
            chosen = by_valid
    return {"best_epoch": chosen["epoch"], "best": pick(chosen), **out}


def _epoch_entry(epoch, loss, metrics, train_seconds, eval_seconds) -> dict:
    if not np.isfinite(loss):
        raise FloatingPointError(
            f"training loss is {loss} in epoch {epoch} (steps of that epoch): lower "
            "--learning_rate or check the data"
        )
    return {
        "epoch": epoch,
        "loss": loss,
        **metrics,
        "train_seconds": round(train_seconds, 4),
        "eval_seconds": round(eval_seconds, 4),
    }


def fit(
    state: train.TrainState,
    train_epoch,
    train_data,
    evaluate_fn,
    *,
    key: jax.Array,
    epochs: int,
    workdir,
    results: dict,
    select: str,
    mode: str = "max",
    has_validation: bool = False,
) -> dict:
    """The epoch loop shared by every task: resume, train, evaluate, checkpoint, report.

    Args:
      state: the initial TrainState (replaced by WORKDIR/checkpoints/latest when one exists).
      train_epoch: `train_epoch(state, train_data, key) -> (state, loss)` (train.make_train_epoch).
      evaluate_fn: `evaluate_fn(params, key) -> {name: float}`; names prefixed "valid_" are
        validation metrics.
      key: PRNG key; epoch e trains with `fold_in(train_key, e)` and evaluates with
        `fold_in(eval_key, e)`, so a resumed run repeats an uninterrupted one exactly.
      results: the run's description; history and best are added, and it is written to
        WORKDIR/results.json after every epoch.
      select, mode: the metric that picks the best epoch ("valid_hr@10", "rmse", ...).
    """
    workdir = pathlib.Path(workdir)
    ckpt = workdir / "checkpoints"
    train_key, eval_key = jax.random.split(key)
    history: list[dict] = []
    if checkpoint.latest_step(ckpt / "latest") is not None:
        state, meta = checkpoint.restore(ckpt / "latest", state)
        history, results = meta["history"], meta["results"]
        logging.info("resumed from %s after epoch %d", ckpt / "latest", int(state.epoch))
    else:
        results["init"] = evaluate_fn(state.params, jax.random.fold_in(eval_key, 0))
        logging.info("init: %s", reporting.format_metrics(results["init"]))

    progress = reporting.Progress(epochs, start=int(state.epoch))
    while int(state.epoch) < epochs:
        t0 = time.perf_counter()
        state, loss = train_epoch(state, train_data, train_key)
        loss = float(loss)  # the one fetch of the epoch; it also waits for the device
        t1 = time.perf_counter()
        epoch = int(state.epoch)
        metrics = evaluate_fn(state.params, jax.random.fold_in(eval_key, epoch))
        entry = _epoch_entry(epoch, loss, metrics, t1 - t0, time.perf_counter() - t1)
        history.append(entry)
        reporting.log_epoch(entry)
        progress.update(reporting.format_metrics({select: entry[select]}))
        results |= {"history": history, **summarise(history, select, mode, has_validation)}
        if select_best(history, select, mode)["epoch"] == epoch:
            checkpoint.save(ckpt / "best", epoch, state, {"epoch": epoch, "results": results})
        checkpoint.save(ckpt / "latest", epoch, state, {"history": history, "results": results})
        reporting.write_results(workdir, results)

    reporting.write_results(workdir, results)
    reporting.plot_history(workdir, history, f"{results.get('model')} on {results.get('dataset')}")
    return results


def describe_run(dataset: str, configs: dict, *, extra: dict | None = None, **fields) -> dict:
    """The head of every results.json: what ran, on what, with which seed and learner, then
    each config as a dict (None entries skipped) and `extra` (e.g. the run's flags).

    `fields` (e.g. eval_protocol=, loss=, task=) override or add top-level entries.
    """
    model, train_config = configs["model"], configs["train"]
    head = {
        "model": model.model,
        "dataset": dataset,
        "select_epoch": configs["eval"].select_epoch if configs.get("eval") else "test",
        "learner": train_config.learner,
        "seed": train_config.seed,
    }
    asdicts = {name: dataclasses.asdict(c) for name, c in configs.items() if c is not None}
    return head | fields | {"config": asdicts} | (extra or {})


def train_and_evaluate(
    data: InteractionData,
    model_config: ModelConfig,
    train_config: TrainConfig,
    eval_config: EvalConfig,
    workdir: str | pathlib.Path,
    *,
    extra: dict | None = None,
    data_config: DataConfig | None = None,
) -> dict:
    """Trains a pointwise NCF model with sampled negatives; writes WORKDIR/results.json.

    `extra` is copied into results.json (e.g. the flags of the run). `data_config`, when
    given, is saved as results["config"]["data"], so `ncf_jax.recommend` can reload the data.
    """
    if eval_config.select_epoch == "valid" and not data.has_validation:
        raise ValueError("--select_epoch=valid needs a validation split: add --validation")
    if train_config.loss != "bce":
        raise ValueError(f"--loss={train_config.loss} is for two-tower models; NCF trains with bce")

    # Devices: a ("data", "model") mesh; tables get rows padded to split evenly over "model".
    mesh = sharding.make_mesh(train_config.mesh_model)
    rows = lambda n: sharding.padded_rows(n, mesh)

    # Model, optimiser, state.
    model = create_model(model_config, rows(data.num_users), rows(data.num_items))
    apply_fn = sharding.data_parallel_apply(model.apply, mesh)
    init_key, key = jax.random.split(jax.random.key(train_config.seed))
    learner = learner_for(model_config, train_config)
    learning_rate = optim.with_warmup(train_config.learning_rate, train_config.lr_warmup_steps)
    c = train_config
    tx = optim.make_optimizer(learner, learning_rate, b1=c.adam_b1, b2=c.adam_b2, eps=c.adam_eps)
    lazy = train_config.lazy_embeddings

    def make_state(init_key):
        return train.create_train_state(init_params(model, model_config, init_key), tx, lazy=lazy)

    state = make_state(init_key)

    # Data on device, the epoch, the evaluators.
    device_data = interactions.from_data(data, exclude=train_config.negatives_exclude)
    make_batches = functools.partial(
        batching.LAYOUTS[train_config.batch_layout],
        num_neg=train_config.num_neg,
        batch_size=train_config.batch_size,
    )
    make_batches = sharding.data_parallel_batches(make_batches, mesh)
    loss_fn = train.make_loss_fn(apply_fn, model_config)
    train_epoch = train.make_train_epoch(
        loss_fn, tx, make_batches, lazy=lazy, learning_rate=learning_rate
    )
    evaluators = make_evaluators(apply_fn, data, eval_config)

    hr = f"hr@{eval_config.top_k}"
    configs = {"model": model_config, "train": train_config, "eval": eval_config}
    results = describe_run(
        data.name,
        configs | {"data": data_config},
        extra=extra,
        eval_protocol=eval_config.protocol,
        learner=learner,
    )
    select = selected(hr, eval_config)
    if train_config.num_seeds > 1:  # N replicas in one program (ncf_jax.seeds)
        from ncf_jax import seeds

        replicas = seeds.replica_seeds(train_config.seed, train_config.num_seeds)
        states, keys = seeds.init_states(make_state, replicas)
        return seeds.fit_seeds(
            states,
            train_epoch,
            device_data,
            evaluators,
            keys=keys,
            seeds=replicas,
            epochs=train_config.epochs,
            workdir=workdir,
            results=results | {"seed": replicas},
            summarise=lambda h: summarise(h, select, "max", data.has_validation),
            epoch_entry=_epoch_entry,
            mesh=mesh,
        )
    train_epoch, state, device_data = sharding.shard_train_epoch(
        train_epoch, state, device_data, mesh, shard_tables=train_config.mesh_model > 1
    )
    return fit(
        state,
        train_epoch,
        device_data,
        lambda params, key: evaluate_all(evaluators, params, key),
        key=key,
        epochs=train_config.epochs,
        workdir=workdir,
        results=results,
        select=select,
        has_validation=data.has_validation,
    )
