"""Task: NCF, pointwise. GMF, MLP, NeuMF, MF or any registered pointwise model, trained with
BCE on each positive and `num_neg` negatives sampled on device, ranked by HR@K / NDCG@K.

`build` describes the run (devices, model, loss, batches, evaluator, selection) and
`ncf_jax.assembly` makes it the record the loop runs; `--num_seeds` makes it N replicas vmapped
in one program, `--learning_rates` one replica per rate.
Resume order: the run's own checkpoint (the loop) -> pre-trained GMF + MLP -> scratch.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from absl import logging

from ncf_jax import (
    assembly,
    batching,
    evaluate,
    history,
    interactions,
    losses,
    optim,
    sharding,
    train,
)
from ncf_jax.config import (
    LEARNERS,
    DataConfig,
    EvalConfig,
    TrainConfig,
    dtype,
    none_if_empty,
    option,
    positive_floats,
    reg_layers,
    reg_mf,
    require,
    require_row_sparse_learner,
    require_validation_for,
    resume_options,
    validate,
)
from ncf_jax.config import layers as layers_option
from ncf_jax.config import lazy_embeddings as lazy_option
from ncf_jax.config import negatives_exclude as exclude_option
from ncf_jax.config import num_factors as factors_option
from ncf_jax.config import num_neg as num_neg_option
from ncf_jax.data import load_dataset
from ncf_jax.data.types import InteractionData
from ncf_jax.loop import Task
from ncf_jax.models import create_model, layers, load_pretrained, pretrained, scoring
from ncf_jax.reporting import describe_run

BATCH_LAYOUTS = ("shuffled", "grouped")
# MF-BPR with --model=mf: the pairwise loss, one sampled negative per positive (Rendle et al.).
BPR_OPTIONS = {"loss": "bpr", "batch_layout": "grouped", "num_neg": 1}
LOSSES = ("bce", "bpr")  # make_loss_fn's `loss`


@dataclasses.dataclass(frozen=True)
class NCFModelConfig:
    """Which model and its sizes (the NCF authors' flag names).

    layers: MLP widths; layers[0] is the concatenated embedding width (authors' convention).
    reg_layers: L2 per MLP layer: [embedding rows, dense_0, dense_1, ...]; one value broadcasts.
    """

    model: str = option("neumf", "Model name (see ncf_jax.models).")
    num_factors: int = factors_option()
    layers: tuple[int, ...] = layers_option()
    reg_mf: float = reg_mf()
    reg_layers: tuple[float, ...] = reg_layers()
    mf_pretrain: str | None = option(
        None,
        "A trained GMF: its WORKDIR, or the NCF authors' Keras .h5 file. NeuMF starts from it "
        "and --mlp_pretrain; --model=gmf starts from it alone.",
        parse=none_if_empty,
    )
    mlp_pretrain: str | None = option(
        None,
        "A trained MLP (WORKDIR or the authors' Keras .h5): NeuMF's, or --model=mlp's start.",
        parse=none_if_empty,
    )
    alpha: float = option(
        0.5,
        "GMF weight of the pre-trained output.",
        check=lambda v: 0.0 <= v <= 1.0,
        message="{flag} must be in [0, 1], got {value}",
    )
    dtype: str = dtype()

    def __post_init__(self):
        validate(self)
        require(
            len(self.layers) >= 1 and all(w > 0 for w in self.layers) and self.layers[0] % 2 == 0,
            f"--layers must be positive widths with an even first entry, got {self.layers}",
        )
        require(
            len(self.reg_layers) in (1, len(self.layers)),
            f"--reg_layers needs 1 or {len(self.layers)} values (one per layer), "
            f"got {self.reg_layers}",
        )
        require(min(self.reg_layers) >= 0, "--reg_mf/--reg_layers must be >= 0")
        given = {"gmf": self.mf_pretrain, "mlp": self.mlp_pretrain}
        require(
            self.model != "neumf" or (given["gmf"] is None) == (given["mlp"] is None),
            "--mf_pretrain and --mlp_pretrain must be given together for --model=neumf",
        )
        for kind, flag in (("gmf", "--mf_pretrain"), ("mlp", "--mlp_pretrain")):
            require(
                given[kind] is None or self.model in ("neumf", kind),
                f"{flag} applies to --model=neumf or --model={kind}, not --model={self.model}",
            )

    @property
    def pretrained(self) -> bool:
        """NeuMF from trained GMF and MLP (section 3.4.1 of the paper)."""
        return self.model == "neumf" and self.mf_pretrain is not None

    @property
    def start_from(self) -> str | None:
        """The trained model (WORKDIR or Keras file) a GMF or an MLP starts from."""
        return {"gmf": self.mf_pretrain, "mlp": self.mlp_pretrain}.get(self.model)


@dataclasses.dataclass(frozen=True)
class NCFTrainConfig(TrainConfig):
    """How to train an NCF model (beyond the common epochs, batch, learner, rate and seed).

    pretrain_learner: the optimiser NeuMF continues with after pre-training ("sgd", the
      paper's text, or "same", the authors' README command).
    batch_layout: "shuffled" (paper) or "grouped" (each positive stays beside its num_neg
      negatives; batches of batch_size // (1 + num_neg) groups; the user's share of the MLP's
      first layer is then computed once per group).
    adam_b1, adam_b2, adam_eps: optax's defaults; the MLPerf large-batch NCF uses 0.25, 0.5.
    """

    num_neg: int = num_neg_option()
    negatives_exclude: str = exclude_option()
    pretrain_learner: str = option(
        "sgd",
        "Optimiser after pre-training: sgd (paper) or same (= --learner, authors' README).",
        choices=(*LEARNERS, "same"),
    )
    loss: str = option(
        "bce",
        "bce: pointwise log loss on every sample (paper); bpr: pairwise, each positive against "
        "its own negatives (Rendle et al. 2009; needs --batch_layout=grouped; MF-BPR with "
        "--model=mf).",
        choices=LOSSES,
    )
    lazy_embeddings: bool = lazy_option()
    batch_layout: str = option(
        "shuffled",
        "shuffled: samples shuffled one by one (paper); grouped: each positive beside its "
        "negatives, batch_size // (1 + num_neg) groups a batch (less MLP work per sample).",
        choices=BATCH_LAYOUTS,
    )
    lr_warmup_steps: int = option(
        0,
        "Linear learning-rate warm-up from 0 over this many steps (0: constant rate).",
        check=lambda v: v >= 0,
        message="{flag} must be >= 0",
    )
    adam_b1: float = option(optim.B1, "Adam first-moment decay.")
    adam_b2: float = option(optim.B2, "Adam second-moment decay.")
    adam_eps: float = option(optim.EPS, "Adam epsilon.")
    learning_rates: tuple[float, ...] = option(
        (),
        "Train one replica per learning rate at once (jax.vmap, all from --seed; replaces "
        "--learning_rate), e.g. a search's rates; per-replica results under 'seeds'.",
        **positive_floats("learning_rates"),
    )
    mesh_model: int = option(
        1,
        "Devices that split embedding tables by rows; the rest split batches (data parallel).",
        check=lambda v: v >= 1,
        message="{flag} must be >= 1, got {value}",
    )

    def __post_init__(self):
        validate(self)
        require_row_sparse_learner(self.lazy_embeddings, self.learner)
        require(
            self.loss == "bce" or self.batch_layout == "grouped",
            "--loss=bpr ranks each positive against its own negatives: it needs "
            "--batch_layout=grouped",
        )
        require(
            self.batch_layout == "shuffled" or self.batch_size >= 1 + self.num_neg,
            f"--batch_layout=grouped needs --batch_size >= 1 + --num_neg = {1 + self.num_neg}",
        )
        require(
            0 <= self.adam_b1 < 1 and 0 <= self.adam_b2 < 1 and self.adam_eps > 0,
            "--adam_b1 and --adam_b2 must be in [0, 1) and --adam_eps > 0",
        )
        require(
            not self.learning_rates
            or (self.num_seeds == 1 and not self.lazy_embeddings and self.lr_warmup_steps == 0),
            "--learning_rates keeps each replica's rate in its optimiser state: it takes "
            "--num_seeds=1, dense tables (no --lazy_embeddings) and no --lr_warmup_steps",
        )
        adam = (self.adam_b1, self.adam_b2, self.adam_eps)
        default_adam = adam == (optim.B1, optim.B2, optim.EPS)
        require(
            not (self.lazy_embeddings and self.learner == "adam" and not default_adam),
            "--lazy_embeddings uses Adam's default b1/b2/eps: drop --adam_* or --lazy_embeddings",
        )


CONFIGS = {"data": DataConfig, "model": NCFModelConfig, "train": NCFTrainConfig, "eval": EvalConfig}


def load_data(configs: dict) -> InteractionData:
    return load_dataset(configs["data"])


def make_loss_fn(apply_fn, model_config, tables: dict | None = None, *, loss="bce") -> train.LossFn:
    """The NCF loss on logits plus the configured L2 penalties (on the rows of `tables`,
    `layers.table_labels(model, ...)`, and the MLP kernels).

    `loss`: "bce", pointwise on every sample (the paper); "bpr", pairwise on grouped batches
    (each positive against its own negatives, `losses.bpr`: MF-BPR with `model="mf"`).
    """
    if loss not in LOSSES:
        raise ValueError(f"unknown NCF loss {loss!r}; choose from {LOSSES}")

    def loss_fn(params, batch):
        users, items, weights = batch["users"], batch["items"], batch["weights"]
        logits = apply_fn(params, users, items)
        penalty = losses.l2_penalty(
            params,
            batch,
            weights,
            tables=tables,
            reg_mf=model_config.reg_mf,
            reg_layers=model_config.reg_layers,
        )
        if loss == "bpr":
            return losses.bpr(logits, weights[..., 0]) + penalty
        return losses.bce_with_logits(logits, batch["labels"], weights) + penalty

    return loss_fn


def init_params(model, model_config: NCFModelConfig, key: jax.Array):
    """Fresh parameters; NeuMF loaded from trained GMF and MLP; or GMF / MLP from one."""
    dummy = jnp.zeros((1,), jnp.int32)
    params = model.init(key, dummy, dummy)
    if model_config.start_from is not None:
        return pretrained.load(model_config.start_from, model_config.model, params)
    if model_config.pretrained:
        num_users, num_items = model.num_users, model.num_items
        like = {kind: create_model(dataclasses.replace(model_config, model=kind, mf_pretrain=None,
                                                       mlp_pretrain=None), num_users, num_items)
                .init(key, dummy, dummy) for kind in ("gmf", "mlp")}  # fmt: skip
        gmf = pretrained.load(model_config.mf_pretrain, "gmf", like["gmf"])
        mlp = pretrained.load(model_config.mlp_pretrain, "mlp", like["mlp"])
        params = load_pretrained(params, gmf, mlp, alpha=model_config.alpha)
        logging.info(
            "NeuMF initialised from %s and %s", model_config.mf_pretrain, model_config.mlp_pretrain
        )
    return params


def learner_for(model_config: NCFModelConfig, train_config: NCFTrainConfig) -> str:
    """After pre-training the paper continues with SGD; `--pretrain_learner=same` keeps
    `--learner` as the authors' README command does."""
    if model_config.pretrained and train_config.pretrain_learner != "same":
        return train_config.pretrain_learner
    return train_config.learner


def build(data: InteractionData, configs: dict, *, extra: dict | None = None) -> Task:
    """The record of one NCF run (or of `num_seeds` replicas) on `data`."""
    model_config, train_config, eval_config = configs["model"], configs["train"], configs["eval"]
    c = train_config
    require_validation_for(eval_config.select_epoch, data.has_validation)

    # Devices: a ("data", "model") mesh; tables get rows padded to split evenly over "model".
    mesh = assembly.make_mesh(c.mesh_model, split_one_process=True)
    rows = lambda n: sharding.padded_rows(n, mesh)

    # Model, optimiser, data, evaluator.
    model = create_model(model_config, rows(data.num_users), rows(data.num_items))
    apply_fn = sharding.data_parallel_apply(model.apply, mesh)
    learner = learner_for(model_config, c)
    require_row_sparse_learner(c.lazy_embeddings, learner, "--pretrain_learner")
    adam = {"b1": c.adam_b1, "b2": c.adam_b2, "eps": c.adam_eps}
    dummy = jnp.zeros((1,), jnp.int32)
    tables = layers.table_labels(model, dummy, dummy)
    score_fn, score_all_fn = scoring.score_fns(model, data.num_items, apply_fn)
    evaluators = evaluate.make_ranking_evaluators(score_fn, score_all_fn, data, eval_config)
    recipe = assembly.Recipe(
        init=lambda key: init_params(model, model_config, key),
        loss_fn=make_loss_fn(apply_fn, model_config, tables, loss=c.loss),
        make_batches=functools.partial(
            batching.LAYOUTS[c.batch_layout], num_neg=c.num_neg, batch_size=c.batch_size
        ),
        data=interactions.from_data(data, exclude=c.negatives_exclude),
        evaluate=evaluate.combine(evaluators),
        select=history.selected(f"hr@{eval_config.top_k}", eval_config.select_epoch),
        optimizer=lambda rate: optim.make_optimizer(learner, rate, **adam),
        learning_rate=optim.with_warmup(c.learning_rate, c.lr_warmup_steps),
        tables=tables,
        row_sparse=c.lazy_embeddings,
        row_learner=learner,
    )
    head = describe_run("ncf", data.name, configs, extra=extra, learner=learner,
                        eval_protocol=eval_config.protocol)  # fmt: skip
    return assembly.assemble(
        recipe, seed=c.seed, epochs=c.epochs, stop_at=c.stop_at, patience=c.patience,
        results=head, options=resume_options(configs),
        has_validation=data.has_validation, num_seeds=c.num_seeds,
        learning_rates=c.learning_rates, mesh=mesh, shard_tables=c.mesh_model > 1,
    )  # fmt: skip
