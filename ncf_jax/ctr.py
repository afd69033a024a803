"""Stage: the driver of click-through prediction with side features (`FeatureNCF`): BCE on
shuffled labelled rows, classification and per-user ranking evaluation, and the shared epoch
loop (`runner.fit`, best epoch by highest test AUC).

Metrics on the test rows: ROC AUC, log loss, precision / recall / F1 at --threshold, and the
threshold maximising TPR - fpr_weight * FPR. hr@K is per user: a test user with at least one
clicked test item is a hit when one of those items is in their top K, where
  - "catalogue" (every feature is a user or an item attribute, as in the MovieLens task): the
    whole catalogue is ranked except the user's training items (`evaluate.make_full_evaluator`);
  - "test_rows" (some feature belongs to the row, e.g. a context): the candidates are the
    user's test rows, ties ranked pessimistically (unclicked first).
The feature statistics (min / max, vocabularies) are stored in results["feature_stats"], which
is part of every checkpoint's metadata; a resumed run checks that the data still give the same.
"""

from __future__ import annotations

import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from ncf_jax import checkpoint, evaluate, losses, metrics, optim, reporting, runner, train
from ncf_jax.config import NCF_RUNNER_ONLY, ClickConfig, EvalConfig, ModelConfig, TrainConfig
from ncf_jax.data.clicks import ClickData, FeatureStats
from ncf_jax.data.types import csr_from_pairs
from ncf_jax.explicit import shuffled_batches
from ncf_jax.models.features import FeatureNCF


def create_model(
    data: ClickData, model_config: ModelConfig, click_config: ClickConfig, *, use_features: bool
) -> FeatureNCF:
    """FeatureNCF sized for `data`; without features it sees user and item ids only."""
    stats = data.stats
    return FeatureNCF(
        num_users=data.num_users,
        num_items=data.num_items,
        layers=model_config.layers,
        num_continuous=len(stats.continuous) if use_features else 0,
        categorical_sizes=stats.categorical_sizes if use_features else (),
        categorical_dim=click_config.categorical_dim,
        dropout=model_config.dropout,
        dtype=jnp.dtype(model_config.dtype),
    )


def _rows(rows) -> dict:
    return {
        "users": rows.users,
        "items": rows.items,
        "labels": rows.labels,
        "continuous": rows.continuous,
        "categorical": rows.categorical,
    }


def make_loss_fn(apply_fn, model_config: ModelConfig) -> train.LossFn:
    """Weighted BCE on logits plus the NCF L2 penalties (--reg_layers)."""

    def loss_fn(params, batch):
        users, items, weights = batch["users"], batch["items"], batch["weights"]
        logits = apply_fn(
            params,
            users,
            items,
            batch["continuous"],
            batch["categorical"],
            train=True,
            rngs={"dropout": batch["dropout_key"]},
        )
        penalty = losses.l2_penalty(params, users, items, weights, model_config)
        return losses.bce_with_logits(logits, batch["labels"], weights) + penalty

    return loss_fn


@functools.partial(jax.jit, static_argnames=("k", "num_users"))
def hit_rate_over_rows(users, scores, labels, *, k: int, num_users: int):
    """Per-user HR@k among each user's own rows; users without a positive row are skipped.

    >>> hit_rate_over_rows(jnp.array([0, 0, 1, 1]), jnp.array([.9, .1, .2, .3]),
    ...                    jnp.array([1, 0, 1, 0]), k=1, num_users=2).item()
    0.5
    """
    labels = labels.astype(bool)
    # Sorted by user, then score descending, then unclicked first (pessimistic ties).
    order = jnp.lexsort((labels, -scores, users))
    u, lab = users[order], labels[order]
    rank = jnp.arange(len(u)) - jnp.searchsorted(u, u, side="left")
    hit = jax.ops.segment_max((lab & (rank < k)).astype(jnp.int32), u, num_segments=num_users)
    has = jax.ops.segment_max(lab.astype(jnp.int32), u, num_segments=num_users)
    return metrics.masked_mean(hit.astype(jnp.float32), has > 0)


def make_click_evaluator(apply_fn, rows, *, threshold: float, fpr_weight: float):
    """`evaluate(params, key=None)` -> auc, logloss, precision, recall, f1, best_threshold,
    best_objective over the test rows (scored in one call)."""
    data = jax.device_put(_rows(rows))

    @jax.jit
    def _evaluate(params, data):
        logits = apply_fn(
            params, data["users"], data["items"], data["continuous"], data["categorical"]
        )
        probs, labels = jax.nn.sigmoid(logits), data["labels"]
        precision, recall, f1 = metrics.precision_recall_f1(probs, labels, threshold=threshold)
        best, objective = metrics.best_threshold(probs, labels, weight=fpr_weight)
        return {
            "auc": metrics.roc_auc(probs, labels),
            "logloss": metrics.log_loss_from_logits(logits, labels),
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "best_threshold": best,
            "best_objective": objective,
        }, logits

    return lambda params: _evaluate(params, data)


def _feature_tables(data: ClickData, level: np.ndarray, ids_of, size: int):
    """[size, C] float32 and [size, K] int32 attribute tables of the columns marked in level
    (zero elsewhere), filled from every row of the log."""
    num_cont = data.train.continuous.shape[1]
    cont = np.zeros((size, num_cont), np.float32)
    cat = np.zeros((size, data.train.categorical.shape[1]), np.int32)
    for rows in (data.train, data.test):
        ids = ids_of(rows)
        cont[ids] = np.where(level[:num_cont], rows.continuous, cont[ids])
        cat[ids] = np.where(level[num_cont:], rows.categorical, cat[ids])
    return jnp.asarray(cont), jnp.asarray(cat)


def make_catalogue_score_fn(apply_fn, data: ClickData, use_features: bool):
    """score_all_fn(params, users [c]) -> [c, num_items] logits from attribute tables."""
    u_cont, u_cat = _feature_tables(data, data.user_level, lambda r: r.users, data.num_users)
    i_cont, i_cat = _feature_tables(data, data.item_level, lambda r: r.items, data.num_items)
    items = jnp.arange(data.num_items, dtype=jnp.int32)
    n_cont = u_cont.shape[1]

    def score_all_fn(params, users):
        shape = (len(users), data.num_items)
        grid_users, grid_items = (
            jnp.broadcast_to(users[:, None], shape),
            jnp.broadcast_to(items, shape),
        )
        if not use_features:
            return apply_fn(params, grid_users, grid_items)
        # Only used when every column is a user or an item attribute (pairwise_features).
        user_mask = jnp.asarray(data.user_level)
        cont = jnp.where(user_mask[:n_cont], u_cont[grid_users], i_cont[grid_items])
        cat = jnp.where(user_mask[n_cont:], u_cat[grid_users], i_cat[grid_items])
        return apply_fn(params, grid_users, grid_items, cont, cat)

    return score_all_fn


def make_evaluate_fn(apply_fn, data: ClickData, click_config, eval_config, use_features):
    """evaluate_fn(params, key) -> {metric: float} for runner.fit, and the hr@K protocol."""
    classify = make_click_evaluator(
        apply_fn, data.test, threshold=click_config.threshold, fpr_weight=click_config.fpr_weight
    )
    k, hr = eval_config.top_k, f"hr@{eval_config.top_k}"
    if data.pairwise_features:
        full = evaluate.make_full_evaluator(
            make_catalogue_score_fn(apply_fn, data, use_features),
            *(a[data.test.labels > 0] for a in (data.test.users, data.test.items)),
            *csr_from_pairs(data.train.users, data.train.items, data.num_users),
            num_items=data.num_items,
            k=k,
            chunk_size=max(1, min(eval_config.chunk_size, 256)),
        )
        rank = lambda params, logits: full(params)[hr]
        protocol = "catalogue"
    else:
        users, labels = jnp.asarray(data.test.users), jnp.asarray(data.test.labels)
        rank = lambda params, logits: hit_rate_over_rows(
            users, logits, labels, k=k, num_users=data.num_users
        )
        protocol = "test_rows"

    def evaluate_fn(params, key=None):
        out, logits = classify(params)
        out = out | {hr: rank(params, logits)}
        return {name: float(v) for name, v in jax.device_get(out).items()}

    return evaluate_fn, protocol


def stored_feature_stats(workdir) -> FeatureStats | None:
    """The feature statistics saved with WORKDIR's latest checkpoint, or None without one."""
    path = pathlib.Path(workdir) / "checkpoints" / "latest"
    if checkpoint.latest_step(path) is None:
        return None
    _, meta = checkpoint.restore(path)
    return FeatureStats.from_json(meta["results"]["feature_stats"])


def train_and_evaluate(
    data: ClickData,
    model_config: ModelConfig,
    train_config: TrainConfig,
    eval_config: EvalConfig,
    click_config: ClickConfig,
    workdir: str | pathlib.Path,
    *,
    use_features: bool = True,
    extra: dict | None = None,
) -> dict:
    """Trains FeatureNCF (with or without the features) on the train rows; writes
    WORKDIR/results.json with `best` = the test metrics of the epoch of highest AUC."""
    train_config.require_defaults("the click-data script", "lazy_embeddings", *NCF_RUNNER_ONLY)
    stored = stored_feature_stats(workdir)
    if stored is not None and stored != data.stats:
        raise ValueError(
            f"{workdir} was trained with other feature statistics (min/max, vocabularies) than "
            "these data give: use a fresh --workdir"
        )

    # Model, optimiser, state.
    model = create_model(data, model_config, click_config, use_features=use_features)
    init_key, key = jax.random.split(jax.random.key(train_config.seed))
    first = {name: a[:1] for name, a in _rows(data.train).items() if name != "labels"}
    params = jax.jit(model.init)(init_key, *first.values())  # one compile, not one per op
    steps = -(-len(data.train.users) // train_config.batch_size) * train_config.epochs
    learning_rate = optim.make_schedule(train_config.lr_schedule, train_config.learning_rate, steps)
    tx = optim.make_optimizer(
        train_config.learner, learning_rate, weight_decay=train_config.weight_decay
    )
    state = train.create_train_state(params, tx, lazy=False)

    # Data on device, the epoch, the evaluators.
    rows = jax.device_put(_rows(data.train))
    make_batches = functools.partial(shuffled_batches, batch_size=train_config.batch_size)
    train_epoch = train.make_train_epoch(make_loss_fn(model.apply, model_config), tx, make_batches)
    apply_fn = (
        model.apply if use_features else (lambda p, u, i, *_, **kw: model.apply(p, u, i, **kw))
    )
    evaluate_fn, protocol = make_evaluate_fn(
        apply_fn, data, click_config, eval_config, use_features
    )

    configs = {"model": model_config, "train": train_config, "eval": eval_config}
    results = runner.describe_run(
        data.name,
        configs | {"clicks": click_config},
        extra=extra,
        model="feature_ncf" if use_features else "feature_ncf (no features)",
        task="clicks",
        features=use_features,
        hr_protocol=protocol,
        select_epoch="test",
        data=data.describe(),
        feature_stats=data.stats.to_json(),
    )
    return runner.fit(
        state,
        train_epoch,
        rows,
        evaluate_fn,
        key=key,
        epochs=train_config.epochs,
        workdir=workdir,
        results=results,
        select="auc",
        mode="max",
    )


def run_with_baseline(data, model_config, train_config, eval_config, click_config, workdir, *,
                      extra=None) -> dict:  # fmt: skip
    """The model with features in WORKDIR and, with click_config.baseline, the same model
    without features in WORKDIR/baseline; its best_epoch and best go to results["baseline"]."""
    configs = (model_config, train_config, eval_config, click_config)
    results = train_and_evaluate(data, *configs, workdir, extra=extra)
    if click_config.baseline:
        base = train_and_evaluate(
            data, *configs, pathlib.Path(workdir) / "baseline", use_features=False, extra=extra
        )
        results["baseline"] = {"best_epoch": base["best_epoch"], "best": base["best"]}
        logging.info("without features: %s", reporting.format_metrics(base["best"]))
        reporting.write_results(workdir, results)
    return results
