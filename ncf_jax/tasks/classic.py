"""Task: the classic baselines of `ncf_jax.baselines` (TopPop, ItemKNN, UserKNN, RP3beta,
PureSVD, SLIM, EASE^R, iALS), fitted by solves and ranked by the same evaluators as NCF.

The state is a `loop.FitState`. A closed-form model fits in epoch 1 (its loss is 0) and later
epochs keep that fit; iALS runs one alternating sweep per epoch, from a seeded random start,
and reports its objective as the loss, so `--epochs` is its number of sweeps and
`--select_epoch` may pick the best sweep. `--num_seeds=N` (iALS only: the others are
deterministic) vmaps N replicas in one program, as every trained task does. `--ease_lambdas` fits
EASE^R at every lambda from one factorisation (`baselines.ease.fit_grid`), one replica each; the
record carries that replica axis itself (`Task.replicated`): the state is the grid's shared
factors, and each lambda's B is built in turn for its evaluation.

Every hyperparameter is one option, prefixed by its model family (knn_, rp3_, svd_, slim_,
ease_, ials_) so the flags never clash with the NCF task's when both are defined together.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from ncf_jax import assembly, baselines, evaluate, history
from ncf_jax.config import (
    DataConfig,
    EvalConfig,
    at_least,
    num_seeds,
    option,
    positive,
    positive_floats,
    require,
    require_validation_for,
    resume_options,
    validate,
)
from ncf_jax.data import load_dataset
from ncf_jax.data.types import InteractionData
from ncf_jax.loop import FitState, Task
from ncf_jax.models import create_model, scoring
from ncf_jax.reporting import describe_run

CLASSIC_MODELS = tuple(baselines.MODELS)
WEIGHTINGS = ("none", "tfidf", "bm25")
# iALS sweeps when --epochs is left at 0 (Rendle et al. 2021 run 10-20).
IALS_SWEEPS = 15


@dataclasses.dataclass(frozen=True)
class ClassicModelConfig:
    """Which baseline and its hyperparameters (defaults: those of `ncf_jax.baselines`)."""

    model: str = option("ease", "Classic baseline (ncf_jax.baselines).", choices=CLASSIC_MODELS)
    knn_k: int = option(
        100, "Neighbours kept per item / user (itemknn, userknn, rp3beta, slim).", **positive()
    )
    knn_shrink: float = option(10.0, "Cosine shrinkage (itemknn, userknn).", **at_least(0))
    knn_weighting: str = option(
        "none", "Feature weighting of X (itemknn, userknn).", choices=WEIGHTINGS
    )
    rp3_alpha: float = option(1.0, "RP3beta: exponent of the transition probabilities.")
    rp3_beta: float = option(0.6, "RP3beta: popularity penalty exponent.")
    svd_factors: int = option(50, "PureSVD: rank of the truncated SVD.", **positive())
    slim_alpha: float = option(0.1, "SLIM: ElasticNet strength.", **positive())
    slim_l1_ratio: float = option(
        0.01,
        "SLIM: L1 share of the ElasticNet penalty.",
        check=lambda v: 0.0 <= v <= 1.0,
        message="{flag} must be in [0, 1], got {value}",
    )
    ease_lambda: float = option(500.0, "EASE^R: L2 strength lambda.", **positive())
    ease_lambdas: tuple[float, ...] = option(
        (),
        "EASE^R: fit every lambda from one tridiagonal reduction (ease.fit_grid), one replica "
        "each (replaces --ease_lambda), e.g. a search's grid; per-replica results under 'seeds'.",
        **positive_floats("ease_lambdas"),
    )
    ials_factors: int = option(64, "iALS: embedding size d.", **positive())
    ials_alpha0: float = option(
        0.3, "iALS: weight of every (user, item) pair being 0.", **positive()
    )
    ials_reg: float = option(
        0.01, "iALS: L2 strength (frequency-scaled by --ials_nu).", **at_least(0)
    )
    ials_nu: float = option(1.0, "iALS: exponent of the frequency-scaled L2.", **at_least(0))

    def __post_init__(self):
        validate(self)

    def hyperparameters(self) -> dict:
        """The keyword arguments of this model's `fit` (iALS: of `sweep` and `objective`)."""
        knn = {"k": self.knn_k, "shrink": self.knn_shrink, "weighting": self.knn_weighting}
        return {
            "toppop": {},
            "itemknn": knn,
            "userknn": knn,
            "rp3beta": {"alpha": self.rp3_alpha, "beta": self.rp3_beta, "k": self.knn_k},
            "puresvd": {"factors": self.svd_factors},
            "slim": {"alpha": self.slim_alpha, "l1_ratio": self.slim_l1_ratio, "k": self.knn_k},
            "ease": {"lam": self.ease_lambda},
            "ials": {"alpha0": self.ials_alpha0, "reg": self.ials_reg, "nu": self.ials_nu},
        }[self.model]


@dataclasses.dataclass(frozen=True)
class ClassicTrainConfig:
    """Epochs, seed and replicas. Closed-form models fit in epoch 1 and keep the fit after it;
    iALS sweeps once per epoch."""

    epochs: int = option(
        0,
        f"Epochs (iALS: sweeps); 0 = 1 for closed-form models, {IALS_SWEEPS} for iALS.",
        resume_safe=True,
        **at_least(0),
    )
    seed: int = option(0, "Seed of the iALS initialisation.")
    num_seeds: int = num_seeds("iALS only: ")

    @property
    def learner(self) -> str:  # results.json's head names the learner of every run
        return "solve"

    def __post_init__(self):
        validate(self)


CONFIGS = {
    "data": DataConfig,
    "model": ClassicModelConfig,
    "train": ClassicTrainConfig,
    "eval": EvalConfig,
}


def load_data(configs: dict) -> InteractionData:
    return load_dataset(configs["data"])


def epochs_of(model: str, epochs: int) -> int:
    """--epochs, with 0 resolved to the model's natural number of epochs."""
    return epochs or (IALS_SWEEPS if model == "ials" else 1)


def _for_scoring(name: str, evaluate_fn):
    """`evaluate_fn` on the fitted params as the baseline scores them fastest: through its
    module's `for_scoring` (RP3beta splits W; eager, its shapes depend on W), where it has one."""
    prepare = getattr(baselines.MODELS[name], "for_scoring", None)
    if prepare is None:
        return evaluate_fn  # traceable: iALS replicas evaluate vmapped
    return lambda params, key: evaluate_fn(prepare(params), key)


def closed_form_epoch(fit, replicas: tuple[int, ...] = ()):
    """train_epoch of a closed-form model: `fit()` in the first epoch, the same fit after; its
    loss is 0, of shape `replicas` (a grid fit's)."""

    def train_epoch(state, data, key):
        del data, key  # the fit closes over the training CSR and is deterministic
        # Block on the fit: the loop times an epoch until its loss is fetched, and a constant loss
        # would not wait for the asynchronously dispatched solves.
        params = jax.block_until_ready(fit()) if int(state.epoch) == 0 else state.params
        return FitState(state.epoch + 1, params), jnp.zeros(replicas, jnp.float32)

    return train_epoch


def ease_grid_evaluate(evaluate_fn, num_lambdas: int):
    """`evaluate(params, keys [L]) -> {metric: [L]}` of an `ease.fit_grid` fit: each lambda's
    B materialised in turn (`ease.grid_member`, one [I, I] at a time) and evaluated."""

    def evaluate_all(params, keys):
        per = [evaluate_fn(baselines.ease.grid_member(params, i), keys[i])
               for i in range(num_lambdas)]  # fmt: skip
        return {name: jnp.stack([p[name] for p in per]) for name in per[0]}

    return evaluate_all


def ials_epoch(state, data, key):
    """train_epoch of iALS: one sweep; the loss is the objective after it.

    `data` is {"interactions": `baselines.ials.prepare(...)`, "hyperparameters": alpha0, reg and
    nu as float32 arrays}: traced, not closed over, so every point of a search over them runs one
    compiled program (and the persistent compilation cache serves the next run of the grid).
    """
    del key  # a sweep is deterministic given its start
    interactions, hp = data["interactions"], data["hyperparameters"]
    params = baselines.ials.sweep(state.params, interactions, **hp)
    return FitState(state.epoch + 1, params), baselines.ials.objective(params, interactions, **hp)


_jitted_ials_epoch = jax.jit(ials_epoch)  # one function, so the runs of a process share its cache


def _fit(data: InteractionData, m: ClassicModelConfig, t: ClassicTrainConfig) -> tuple:
    """(state, run key, seeds, train_epoch, its data): iALS sweeps from a seeded start (one
    replica per seed with --num_seeds); the others solve once (one replica per lambda of
    --ease_lambdas)."""
    indptr, indices = data.train_csr()
    sizes = {"num_users": data.num_users, "num_items": data.num_items}
    hp = m.hyperparameters()
    seeds = list(range(t.seed, t.seed + t.num_seeds))
    if m.model == "ials":
        init = lambda k, init_key: FitState(
            jnp.zeros((), jnp.int32),
            baselines.ials.init(init_key, **sizes, factors=m.ials_factors),
        )
        state, key = assembly.seeded(init, seeds, replicas=t.num_seeds > 1)
        fit_data = {
            "interactions": baselines.ials.prepare(indptr, indices, **sizes),
            "hyperparameters": {k: jnp.float32(v) for k, v in hp.items()},
        }
        # The loop jits the vmapped epoch itself for replicas.
        return state, key, seeds, ials_epoch if t.num_seeds > 1 else _jitted_ials_epoch, fit_data
    grid = m.ease_lambdas
    if grid:  # one replica per lambda, all from one factorisation; keys as one seed's
        fit = functools.partial(baselines.ease.fit_grid, indptr, indices, **sizes, lams=grid)
        seeds, key = [t.seed] * len(grid), jnp.stack([jax.random.key(t.seed)] * len(grid))
    else:
        fit = functools.partial(baselines.MODELS[m.model].fit, indptr, indices, **sizes, **hp)
        key = jax.random.key(t.seed)
    shapes = jax.eval_shape(fit)  # the fitted pytree, so a checkpoint restores into it
    params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    state = FitState(jnp.zeros((), jnp.int32), params)
    return state, key, seeds, closed_form_epoch(fit, (len(grid),) if grid else ()), None


def build(data: InteractionData, configs: dict, *, extra: dict | None = None) -> Task:
    """The record of one classic-model run (iALS: or of `num_seeds` replicas) on `data`."""
    m, t, e = configs["model"], configs["train"], configs["eval"]
    require_validation_for(e.select_epoch, data.has_validation)
    require(
        t.num_seeds == 1 or m.model == "ials",
        f"--model={m.model} is deterministic: --num_seeds applies to --model=ials only",
    )
    require(
        not m.ease_lambdas or m.model == "ease",
        f"--ease_lambdas applies to --model=ease only, not --model={m.model}",
    )
    state, key, seeds, train_epoch, fit_data = _fit(data, m, t)

    # The evaluator: the catalogue's scores, gathered for sampled candidates.
    model = create_model(m, data.num_users, data.num_items)
    evaluators = evaluate.make_ranking_evaluators(
        *scoring.score_fns(model, data.num_items), data, e
    )
    head = describe_run("classic", data.name, configs, extra=extra, eval_protocol=e.protocol)
    replicas = t.num_seeds > 1 or bool(m.ease_lambdas)
    evaluate_fn = _for_scoring(m.model, evaluate.combine(evaluators))
    if m.ease_lambdas:
        evaluate_fn = ease_grid_evaluate(evaluate_fn, len(m.ease_lambdas))
    return Task(
        state=state,
        train_epoch=train_epoch,
        data=fit_data,
        evaluate=evaluate_fn,
        key=key,
        select=history.selected(f"hr@{e.top_k}", e.select_epoch),
        epochs=epochs_of(m.model, t.epochs),
        results=head | ({"seed": seeds} if replicas else {}),
        options=resume_options(configs),
        has_validation=data.has_validation,
        seeds=seeds if replicas else None,
        replicated=bool(m.ease_lambdas),
    )
