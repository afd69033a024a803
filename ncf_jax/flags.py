"""The only module that reads absl FLAGS: one definition of each flag, shared by all scripts.

Scripts call `define_*_flags()` at import time and `*_config_from_flags()` inside `main`.
A bad value raises `ValueError` from the config's validation before any work starts.
"""

from __future__ import annotations

import dataclasses

from absl import flags

from ncf_jax import config

FLAGS = flags.FLAGS


_OURS: set[str] = set()


def _define_once(define, name, *args, **kwargs):
    """Define a flag unless an earlier `define_*_flags()` call already did."""
    _OURS.add(name)
    if name not in FLAGS:
        define(name, *args, **kwargs)


# --------------------------------------------------------------------------------------- data
def define_data_flags() -> None:
    d = config.DataConfig()
    _define_once(
        flags.DEFINE_string,
        "dataset",
        d.dataset,
        "ml-100k | ml-1m | ml-10m | ml-20m | ml-25m | ml-latest | ml-latest-small | "
        "ncf:<name> (NCF authors' format) | csv:<path>.",
    )
    _define_once(
        flags.DEFINE_string,
        "data_dir",
        None,
        "Dataset cache and input folder (default: $NCF_JAX_DATA, else ~/.cache/ncf_jax).",
    )
    _define_once(flags.DEFINE_enum, "split", d.split, list(config.SPLITS), "Test split.")
    _define_once(
        flags.DEFINE_float, "test_fraction", d.test_fraction, "Held-out fraction (temporal/random)."
    )
    _define_once(
        flags.DEFINE_bool,
        "validation",
        d.validation,
        "Hold out a validation item per user (loo) or fraction, for honest epoch selection.",
    )
    _define_once(
        flags.DEFINE_integer,
        "num_test_negatives",
        d.num_test_negatives,
        "Sampled negatives per test (and validation) pair; 0 for none.",
    )
    _define_once(
        flags.DEFINE_float,
        "rating_threshold",
        None,
        "Keep ratings >= this as positives (default: every rating is a positive).",
    )
    _define_once(
        flags.DEFINE_float,
        "test_rating_threshold",
        None,
        "Keep only test interactions rated >= this (temporal/random splits).",
    )
    _define_once(flags.DEFINE_integer, "min_user_interactions", 0, "Drop users with fewer.")
    _define_once(flags.DEFINE_integer, "min_item_interactions", 0, "Drop items with fewer.")
    _define_once(
        flags.DEFINE_integer,
        "data_seed",
        0,
        "Seed of the data split and test negatives (kept apart from --seed so that every "
        "training seed is scored on the same test set).",
    )
    _define_once(flags.DEFINE_string, "csv_user_col", d.csv_user_col, "csv: user column.")
    _define_once(flags.DEFINE_string, "csv_item_col", d.csv_item_col, "csv: item column.")
    _define_once(
        flags.DEFINE_string, "csv_rating_col", d.csv_rating_col, "csv: rating column ('' = none)."
    )
    _define_once(
        flags.DEFINE_string,
        "csv_timestamp_col",
        d.csv_timestamp_col,
        "csv: timestamp column ('' = none).",
    )
    _define_once(flags.DEFINE_string, "csv_sep", d.csv_sep, "csv: field separator ('\\t' = tab).")
    _define_once(flags.DEFINE_bool, "data_cache", True, "Reuse the preprocessed .npz cache.")


def define_prepare_flags() -> None:
    """Flags of `experiments.prepare` beyond the data flags."""
    define_data_flags()
    _define_once(flags.DEFINE_bool, "json", False, "Print the statistics as one JSON object.")


def data_config_from_flags() -> config.DataConfig:
    sep = FLAGS.csv_sep.replace("\\t", "\t")
    return config.DataConfig(
        dataset=FLAGS.dataset,
        data_dir=FLAGS.data_dir,
        split=FLAGS.split,
        test_fraction=FLAGS.test_fraction,
        validation=FLAGS.validation,
        num_test_negatives=FLAGS.num_test_negatives,
        rating_threshold=FLAGS.rating_threshold,
        test_rating_threshold=FLAGS.test_rating_threshold,
        min_user_interactions=FLAGS.min_user_interactions,
        min_item_interactions=FLAGS.min_item_interactions,
        seed=FLAGS.data_seed,
        csv_user_col=FLAGS.csv_user_col,
        csv_item_col=FLAGS.csv_item_col,
        csv_rating_col=FLAGS.csv_rating_col or None,
        csv_timestamp_col=FLAGS.csv_timestamp_col or None,
        csv_sep=sep,
        cache=FLAGS.data_cache,
    )


# ------------------------------------------------------------------------- model, train, eval
def parse_list(text: str, cast, name: str) -> tuple:
    """'64,32,16,8' or the authors' '[64,32,16,8]' -> (64, 32, 16, 8)."""
    body = text.strip().strip("[]").strip()
    try:
        return tuple(cast(x) for x in body.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"--{name} must be a comma-separated list, got {text!r}") from None


def define_model_flags(default_model: str = "neumf") -> None:
    d = config.ModelConfig()
    _define_once(flags.DEFINE_string, "model", default_model, "Model name (see ncf_jax.models).")
    _define_once(flags.DEFINE_integer, "num_factors", d.num_factors, "GMF / MF embedding size.")
    _define_once(
        flags.DEFINE_string,
        "layers",
        ",".join(map(str, d.layers)),
        "MLP widths; the first is the concatenated user+item embedding width.",
    )
    _define_once(flags.DEFINE_float, "reg_mf", d.reg_mf, "L2 on GMF/MF embedding rows.")
    _define_once(
        flags.DEFINE_string, "reg_layers", "0", "L2 per MLP layer (one value, or one per layer)."
    )
    _define_once(flags.DEFINE_string, "mf_pretrain", None, "WORKDIR of a trained GMF (NeuMF).")
    _define_once(flags.DEFINE_string, "mlp_pretrain", None, "WORKDIR of a trained MLP (NeuMF).")
    _define_once(flags.DEFINE_float, "alpha", d.alpha, "GMF weight of the pre-trained output.")
    _define_once(flags.DEFINE_enum, "dtype", d.dtype, ["float32", "bfloat16"], "Activation dtype.")


def model_config_from_flags() -> config.ModelConfig:
    return config.ModelConfig(
        model=FLAGS.model,
        num_factors=FLAGS.num_factors,
        layers=parse_list(FLAGS.layers, int, "layers"),
        reg_mf=FLAGS.reg_mf,
        reg_layers=parse_list(FLAGS.reg_layers, float, "reg_layers"),
        mf_pretrain=FLAGS.mf_pretrain or None,
        mlp_pretrain=FLAGS.mlp_pretrain or None,
        alpha=FLAGS.alpha,
        dtype=FLAGS.dtype,
    )


def define_train_flags() -> None:
    d = config.TrainConfig()
    _define_once(flags.DEFINE_integer, "epochs", d.epochs, "Training epochs.")
    _define_once(flags.DEFINE_integer, "batch_size", d.batch_size, "Rows per step.")
    _define_once(flags.DEFINE_integer, "num_neg", d.num_neg, "Negatives per training positive.")
    _define_once(
        flags.DEFINE_enum,
        "negatives_exclude",
        d.negatives_exclude,
        list(config.TRAIN_NEGATIVES_EXCLUDE),
        "train: negatives avoid training items (authors); known: also held-out items.",
    )
    _define_once(flags.DEFINE_enum, "learner", d.learner, list(config.LEARNERS), "Optimiser.")
    _define_once(flags.DEFINE_float, "learning_rate", d.learning_rate, "Learning rate.")
    _define_once(
        flags.DEFINE_enum,
        "pretrain_learner",
        d.pretrain_learner,
        [*config.LEARNERS, "same"],
        "Optimiser after pre-training: sgd (paper) or same (= --learner, authors' README).",
    )
    _define_once(
        flags.DEFINE_bool,
        "lazy_embeddings",
        d.lazy_embeddings,
        "Row-sparse Adam for embedding tables (faster on CPU; dense is paper-faithful).",
    )
    _define_once(
        flags.DEFINE_enum,
        "batch_layout",
        d.batch_layout,
        list(config.BATCH_LAYOUTS),
        "shuffled: samples shuffled one by one (paper); grouped: each positive beside its "
        "negatives, batch_size // (1 + num_neg) groups a batch (less MLP work per sample).",
    )
    _define_once(flags.DEFINE_integer, "seed", d.seed, "Seed of initialisation and training.")
    _define_once(
        flags.DEFINE_integer,
        "lr_warmup_steps",
        d.lr_warmup_steps,
        "Linear learning-rate warm-up from 0 over this many steps (0: constant rate).",
    )
    _define_once(flags.DEFINE_float, "adam_b1", d.adam_b1, "Adam first-moment decay.")
    _define_once(flags.DEFINE_float, "adam_b2", d.adam_b2, "Adam second-moment decay.")
    _define_once(flags.DEFINE_float, "adam_eps", d.adam_eps, "Adam epsilon.")
    _define_once(
        flags.DEFINE_integer,
        "num_seeds",
        d.num_seeds,
        "Train replicas with seeds seed .. seed+N-1 at once (jax.vmap); report mean and std.",
    )
    _define_once(
        flags.DEFINE_integer,
        "mesh_model",
        d.mesh_model,
        "Devices that split embedding tables by rows; the rest split batches (data parallel).",
    )


def train_config_from_flags() -> config.TrainConfig:
    return config.TrainConfig(
        epochs=FLAGS.epochs,
        batch_size=FLAGS.batch_size,
        num_neg=FLAGS.num_neg,
        negatives_exclude=FLAGS.negatives_exclude,
        learner=FLAGS.learner,
        learning_rate=FLAGS.learning_rate,
        pretrain_learner=FLAGS.pretrain_learner,
        lazy_embeddings=FLAGS.lazy_embeddings,
        batch_layout=FLAGS.batch_layout,
        seed=FLAGS.seed,
        lr_warmup_steps=FLAGS.lr_warmup_steps,
        adam_b1=FLAGS.adam_b1,
        adam_b2=FLAGS.adam_b2,
        adam_eps=FLAGS.adam_eps,
        num_seeds=FLAGS.num_seeds,
        mesh_model=FLAGS.mesh_model,
    )


def define_eval_flags() -> None:
    d = config.EvalConfig()
    _define_once(flags.DEFINE_integer, "top_k", d.top_k, "K of HR@K, NDCG@K, ...")
    _define_once(
        flags.DEFINE_enum,
        "ties",
        d.ties,
        list(config.TIES),
        "Held-out item tied with a negative: pessimistic ranks it below, optimistic above.",
    )
    _define_once(
        flags.DEFINE_enum,
        "eval_protocol",
        d.protocol,
        list(config.EVAL_PROTOCOLS),
        "sampled: held-out item vs its sampled negatives; full: rank the whole catalogue.",
    )
    _define_once(
        flags.DEFINE_enum,
        "select_epoch",
        d.select_epoch,
        list(config.EPOCH_SELECTIONS),
        "Reported epoch: best on test (authors) or on the validation item (needs --validation).",
    )
    _define_once(flags.DEFINE_integer, "eval_chunk_size", d.chunk_size, "Users scored at once.")


def eval_config_from_flags() -> config.EvalConfig:
    return config.EvalConfig(
        top_k=FLAGS.top_k,
        ties=FLAGS.ties,
        protocol=FLAGS.eval_protocol,
        select_epoch=FLAGS.select_epoch,
        chunk_size=FLAGS.eval_chunk_size,
    )


def define_run_flags(default_model: str) -> None:
    """Everything a training script takes, plus --workdir."""
    define_data_flags()
    define_model_flags(default_model)
    define_train_flags()
    define_eval_flags()
    _define_once(flags.DEFINE_string, "workdir", None, "Output folder (results, checkpoints).")


# ---------------------------------------------------------------- two-tower, recommendation
def define_two_tower_flags() -> None:
    """Flags of `experiments.two_tower` beyond `define_run_flags`."""
    d, t = config.ModelConfig(), config.TrainConfig()
    _define_once(flags.DEFINE_integer, "embed_dim", d.embed_dim, "Two-tower embedding size.")
    _define_once(
        flags.DEFINE_string,
        "tower_layers",
        "",
        "Widths of the MLP after each tower's embedding ('' = embedding only; last is linear).",
    )
    _define_once(flags.DEFINE_bool, "cosine", d.cosine, "L2-normalise both towers' vectors.")
    _define_once(flags.DEFINE_float, "temperature", d.temperature, "Score = dot / temperature.")
    _define_once(
        flags.DEFINE_enum,
        "loss",
        t.loss,
        list(config.LOSSES),
        "bce: 1 positive + num_neg negatives, pointwise; softmax: cross-entropy over the same "
        "candidates; in_batch: in-batch sampled softmax with log-Q correction.",
    )


def two_tower_model_config_from_flags() -> config.ModelConfig:
    return dataclasses.replace(
        model_config_from_flags(),
        embed_dim=FLAGS.embed_dim,
        tower_layers=parse_list(FLAGS.tower_layers, int, "tower_layers"),
        cosine=FLAGS.cosine,
        temperature=FLAGS.temperature,
    )


def two_tower_train_config_from_flags() -> config.TrainConfig:
    return dataclasses.replace(train_config_from_flags(), loss=FLAGS.loss)


def define_recommend_flags() -> None:
    """Flags of `experiments.recommend`."""
    _define_once(flags.DEFINE_string, "workdir", None, "WORKDIR of a finished training run.")
    _define_once(flags.DEFINE_string, "users", None, "Comma-separated ORIGINAL user ids.")
    _define_once(flags.DEFINE_integer, "k", 10, "Recommendations per user.")
    _define_once(
        flags.DEFINE_bool, "exclude_seen", True, "Leave out the items a user saw in training."
    )
    _define_once(
        flags.DEFINE_string,
        "data_dir_override",
        None,
        "Read the dataset from here instead of the data_dir saved with the run.",
    )


def _define_regularisation_flags() -> None:
    m, t = config.ModelConfig(), config.TrainConfig()
    _define_once(flags.DEFINE_float, "dropout", m.dropout, "Dropout after each dense layer.")
    _define_once(
        flags.DEFINE_float,
        "weight_decay",
        t.weight_decay,
        "Weight decay on all parameters: decoupled for --learner=adamw, else an L2 gradient term.",
    )
    _define_once(
        flags.DEFINE_enum,
        "lr_schedule",
        t.lr_schedule,
        list(config.LR_SCHEDULES),
        "Learning-rate schedule over the whole run (peak = --learning_rate).",
    )


def define_rating_flags(default_model: str = "biased_mf") -> None:
    """Flags of `experiments.rating`: the run flags plus y_range, dropout and weight decay."""
    define_run_flags(default_model)
    _define_regularisation_flags()
    _define_once(
        flags.DEFINE_string,
        "y_range",
        ",".join(map(str, config.ModelConfig().y_range)),
        "Predictions squashed to (low, high) by a scaled sigmoid; 'none' for a raw output. "
        "Ratings outside it stop the run.",
    )
    _define_once(
        flags.DEFINE_string,
        "csv_date_col",
        "",
        "csv: a date column (ISO 8601, e.g. 2005-09-06) timing the ratings, instead of "
        "--csv_timestamp_col (leave that empty).",
    )


def csv_date_col_from_flags() -> str | None:
    return FLAGS.csv_date_col or None


def _y_range(text: str):
    if text.strip().lower() in ("", "none"):
        return None
    values = parse_list(text, float, "y_range")
    if len(values) != 2:
        raise ValueError(f"--y_range must be 'low,high' or 'none', got {text!r}")
    return values


def rating_configs_from_flags() -> tuple[config.ModelConfig, config.TrainConfig]:
    """(model, train) configs of the rating script: the shared ones plus its own flags."""
    model_config = dataclasses.replace(
        model_config_from_flags(), y_range=_y_range(FLAGS.y_range), dropout=FLAGS.dropout
    )
    train_config = dataclasses.replace(
        train_config_from_flags(), weight_decay=FLAGS.weight_decay, lr_schedule=FLAGS.lr_schedule
    )
    return model_config, train_config


def define_feature_flags(default_model: str = "feature_ncf") -> None:
    """Flags of `experiments.features` (click-through prediction with side features)."""
    define_run_flags(default_model)
    _define_regularisation_flags()
    c = config.ClickConfig()
    _define_once(flags.DEFINE_string, "click_label_col", c.label_col, "csv: 0/1 label column.")
    _define_once(
        flags.DEFINE_string,
        "click_continuous_cols",
        "",
        "csv: continuous feature columns, comma-separated (min-max scaled on train).",
    )
    _define_once(
        flags.DEFINE_string,
        "click_categorical_cols",
        "",
        "csv: categorical feature columns, comma-separated (train vocabulary + OOV bucket).",
    )
    _define_once(
        flags.DEFINE_enum,
        "click_split",
        c.split,
        list(config.CLICK_SPLITS),
        "last_day: each user's latest day (of --csv_timestamp_col) is test; random: a seeded "
        "--test_fraction of rows.",
    )
    _define_once(
        flags.DEFINE_float,
        "click_rating_threshold",
        c.rating_threshold,
        "Built-in MovieLens task: label = rating >= this.",
    )
    _define_once(
        flags.DEFINE_integer, "categorical_dim", c.categorical_dim, "Categorical embedding width."
    )
    _define_once(
        flags.DEFINE_float, "threshold", c.threshold, "Probability cut of precision/recall/F1."
    )
    _define_once(
        flags.DEFINE_float,
        "fpr_weight",
        c.fpr_weight,
        "best_threshold maximises TPR - fpr_weight * FPR (1 = Youden's J).",
    )
    _define_once(
        flags.DEFINE_bool, "baseline", c.baseline, "Also train the model without features."
    )


def feature_configs_from_flags():
    """(model, train, click) configs of the feature script."""
    model_config = dataclasses.replace(model_config_from_flags(), dropout=FLAGS.dropout)
    train_config = dataclasses.replace(
        train_config_from_flags(), weight_decay=FLAGS.weight_decay, lr_schedule=FLAGS.lr_schedule
    )
    click_config = config.ClickConfig(
        label_col=FLAGS.click_label_col,
        continuous_cols=parse_list(FLAGS.click_continuous_cols, str, "click_continuous_cols"),
        categorical_cols=parse_list(FLAGS.click_categorical_cols, str, "click_categorical_cols"),
        split=FLAGS.click_split,
        rating_threshold=FLAGS.click_rating_threshold,
        categorical_dim=FLAGS.categorical_dim,
        threshold=FLAGS.threshold,
        fpr_weight=FLAGS.fpr_weight,
        baseline=FLAGS.baseline,
    )
    return model_config, train_config, click_config


def workdir_from_flags() -> str:
    if not FLAGS.workdir:
        raise ValueError("--workdir is required: the folder for results.json and checkpoints")
    return FLAGS.workdir


def flag_values() -> dict:
    """The values of this module's flags, for results.json."""
    return {name: FLAGS[name].value for name in sorted(FLAGS) if name in _OURS}
