"""Task: clicks with side features. FeatureNCF trained with BCE on the shuffled labelled rows of
a click log, evaluated by classification metrics and a per-user ranking; with `--baseline` the
same model without features is a second record, run in WORKDIR/baseline.

Metrics on the test rows: ROC AUC, log loss, precision / recall / F1 at --threshold, and the
threshold maximising TPR - fpr_weight * FPR. hr@K is per user: a test user with at least one
clicked test item is a hit when one of those items is in their top K, where
  - "catalogue" (every feature is a user or an item attribute, as in the MovieLens task): the
    whole catalogue is ranked except the user's training items (`evaluate.make_full_evaluator`);
  - "test_rows" (some feature belongs to the row, e.g. a context): the candidates are the
    user's test rows, ties ranked pessimistically (unclicked first).
The feature statistics (min / max, vocabularies) are part of the run's options, so a resumed
run stops when the data give other ones.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from ncf_jax import assembly, batching, evaluate, losses, metrics, optim, train
from ncf_jax.config import (
    ClickConfig,
    DataConfig,
    TrainConfig,
    chunk_size,
    dropout,
    dtype,
    option,
    resume_options,
    top_k,
    validate,
)
from ncf_jax.config import layers as layers_option
from ncf_jax.config import lr_schedule as schedule_option
from ncf_jax.config import reg_layers as reg_layers_option
from ncf_jax.config import weight_decay as decay_option
from ncf_jax.data.clicks import ClickData, click_tables, load_clicks, row_arrays
from ncf_jax.data.types import csr_from_pairs
from ncf_jax.loop import Task
from ncf_jax.models import layers
from ncf_jax.models.feature_ncf import FeatureNCF
from ncf_jax.reporting import describe_run

SELECT = {"auc": "max", "logloss": "min"}


@dataclasses.dataclass(frozen=True)
class ClickModelConfig:
    model: str = option("feature_ncf", "Model name.", choices=("feature_ncf",))
    layers: tuple[int, ...] = layers_option()
    reg_layers: tuple[float, ...] = reg_layers_option()
    categorical_dim: int = option(
        4, "Categorical embedding width.", check=lambda v: v >= 1, message="{flag} must be >= 1"
    )
    dropout: float = dropout()
    dtype: str = dtype()

    def __post_init__(self):
        validate(self)


@dataclasses.dataclass(frozen=True)
class ClickTrainConfig(TrainConfig):
    weight_decay: float = decay_option()
    lr_schedule: str = schedule_option()
    baseline: bool = option(True, "Also train the model without features (WORKDIR/baseline).")


@dataclasses.dataclass(frozen=True)
class ClickEvalConfig:
    top_k: int = top_k()
    threshold: float = option(
        0.5,
        "Probability cut of precision/recall/F1.",
        check=lambda v: 0.0 <= v <= 1.0,
        message="{flag} must be in [0, 1], got {value}",
    )
    fpr_weight: float = option(
        1.0,
        "best_threshold maximises TPR - fpr_weight * FPR (1 = Youden's J).",
        check=lambda v: v >= 0,
        message="{flag} must be >= 0, got {value}",
    )
    select_metric: str = option(
        "auc", "Test metric that picks the reported epoch (auc: highest, logloss: lowest).",
        choices=tuple(SELECT),
    )  # fmt: skip
    chunk_size: int = chunk_size()

    def __post_init__(self):
        validate(self)


CONFIGS = {
    "data": DataConfig,
    "clicks": ClickConfig,
    "model": ClickModelConfig,
    "train": ClickTrainConfig,
    "eval": ClickEvalConfig,
}


def load_data(configs: dict) -> ClickData:
    return load_clicks(configs["data"], configs["clicks"])


def make_loss_fn(apply_fn, model_config: ClickModelConfig, tables: dict) -> train.LossFn:
    """Weighted BCE on logits plus the NCF L2 penalties (--reg_layers)."""

    def loss_fn(params, batch):
        users, items, weights = batch["users"], batch["items"], batch["weights"]
        logits = apply_fn(params, users, items, batch["continuous"], batch["categorical"],
                          train=True, rngs={"dropout": batch["dropout_key"]})  # fmt: skip
        penalty = losses.l2_penalty(params, batch, weights, tables=tables, reg_mf=0.0,
                                    reg_layers=model_config.reg_layers)  # fmt: skip
        return losses.bce_with_logits(logits, batch["labels"], weights) + penalty

    return loss_fn


def make_click_evaluator(apply_fn, rows: dict, *, threshold: float, fpr_weight: float):
    """`evaluate(params) -> (metrics, logits)`: auc, logloss, precision, recall, f1,
    best_threshold, best_objective over the test rows (scored in one call)."""
    data = jax.device_put(rows)

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


def make_catalogue_score_fn(apply_fn, data: ClickData, use_features: bool):
    """score_all_fn(params, users [c]) -> [c, num_items] logits from attribute tables; only
    used when every column is a user or an item attribute (`data.pairwise_features`)."""
    (u_cont, u_cat), (i_cont, i_cat) = jax.tree.map(jnp.asarray, click_tables(data))
    items, n_cont = jnp.arange(data.num_items, dtype=jnp.int32), u_cont.shape[1]

    def score_all_fn(params, users):
        shape = (len(users), data.num_items)
        grid_users = jnp.broadcast_to(users[:, None], shape)
        grid_items = jnp.broadcast_to(items, shape)
        if not use_features:
            return apply_fn(params, grid_users, grid_items)
        user_mask = jnp.asarray(data.user_level)
        cont = jnp.where(user_mask[:n_cont], u_cont[grid_users], i_cont[grid_items])
        cat = jnp.where(user_mask[n_cont:], u_cat[grid_users], i_cat[grid_items])
        return apply_fn(params, grid_users, grid_items, cont, cat)

    return score_all_fn


def make_evaluate_fn(apply_fn, data: ClickData, eval_config: ClickEvalConfig, use_features):
    """(evaluate(params, key) -> {metric: scalar}, the hr@K protocol's name)."""
    classify = make_click_evaluator(apply_fn, row_arrays(data.test),
                                    threshold=eval_config.threshold,
                                    fpr_weight=eval_config.fpr_weight)  # fmt: skip
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
        rank, protocol = (lambda params, logits: full(params)[hr]), "catalogue"
    else:
        users, labels = jnp.asarray(data.test.users), jnp.asarray(data.test.labels)
        rank = lambda params, logits: metrics.hit_rate_over_rows(
            users, logits, labels, k=k, num_users=data.num_users
        )
        protocol = "test_rows"

    def evaluate_fn(params, key=None):
        out, logits = classify(params)
        return out | {hr: rank(params, logits)}

    return evaluate_fn, protocol


def build(data: ClickData, configs: dict, *, extra=None, use_features: bool = True) -> Task:
    """The record of FeatureNCF (with or without the features; or of `num_seeds` replicas) on
    the train rows; with --baseline, the record without features rides along as
    `Task.baseline`."""
    model_config, train_config, eval_config = configs["model"], configs["train"], configs["eval"]
    c, stats = train_config, data.stats

    # Model, data, evaluator.
    model = FeatureNCF(
        num_users=data.num_users, num_items=data.num_items, layers=model_config.layers,
        num_continuous=len(stats.continuous) if use_features else 0,
        categorical_sizes=stats.categorical_sizes if use_features else (),
        categorical_dim=model_config.categorical_dim, dropout=model_config.dropout,
        dtype=jnp.dtype(model_config.dtype),
    )  # fmt: skip
    rows = row_arrays(data.train)
    first = {name: a[:1] for name, a in rows.items() if name != "labels"}
    tables = layers.table_labels(model, *first.values())
    steps = -(-len(data.train.users) // c.batch_size) * c.epochs
    apply_fn = (
        model.apply if use_features else (lambda p, u, i, *_, **kw: model.apply(p, u, i, **kw))
    )
    evaluate_fn, protocol = make_evaluate_fn(apply_fn, data, eval_config, use_features)
    recipe = assembly.Recipe(
        init=lambda key: jax.jit(model.init)(key, *first.values()),  # one compile, not one per op
        loss_fn=make_loss_fn(model.apply, model_config, tables),  # L2 only: no table is packed
        make_batches=functools.partial(batching.shuffled_batches, batch_size=c.batch_size),
        data=jax.device_put(rows),
        evaluate=evaluate_fn,
        select=eval_config.select_metric,
        mode=SELECT[eval_config.select_metric],
        optimizer=lambda rate: optim.make_optimizer(c.learner, rate, weight_decay=c.weight_decay),
        learning_rate=optim.make_schedule(c.lr_schedule, c.learning_rate, steps),
    )
    head = describe_run(
        "clicks", data.name, configs, extra=extra,
        model="feature_ncf" if use_features else "feature_ncf (no features)",
        features=use_features, hr_protocol=protocol, data=data.describe(),
        feature_stats=stats.to_json(),
    )  # fmt: skip
    with_baseline = use_features and c.baseline
    return assembly.assemble(
        recipe, seed=c.seed, epochs=c.epochs, stop_at=c.stop_at, patience=c.patience,
        num_seeds=c.num_seeds, mesh=assembly.make_mesh(),
        results=head, options=resume_options(configs) | {"feature statistics": stats.to_json()},
        baseline=build(data, configs, extra=extra, use_features=False) if with_baseline else None,
    )  # fmt: skip
