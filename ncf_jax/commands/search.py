"""Stage: results. The hyperparameter search of the comparison: one search space per model, the
same number of trials for every model, Optuna's TPE sampler (seeded) over an SQLite record.

`SPACES` states every model's space once, as Optuna distributions: log-uniform rates, L2 and
lambda; integer ranges for neighbours and factors; choices where the values are categorical.
The ranges follow Ferrari Dacrema et al. (TOIS 2021, their Table 2) for the classic models,
Rendle et al. (RecSys 2020; iALS: "Revisiting the performance of iALS", 2021) for MF and iALS,
and He et al. (WWW 2017, Section 4) for GMF, MLP and NeuMF (learning rate 1e-4-1e-2, L2 on
embeddings and layers; MLP and NeuMF's predictive factors 8 or 16 of the paper's 8-64: a
tower of f factors is 8f-4f-2f-f wide, its work grows as f squared, and 32 or 64 factors do not
fit a 2-core CPU's budget; docs/comparison.md).

Trials are asked in batches (`run_search`): a batch's first trial is sampled in full, the others
share its values of every parameter but the model's `SHARED` one (an NCF model's learning rate,
EASE^R's lambda), so one run trains the whole batch as vmapped replicas (`--learning_rates`,
`--ease_lambdas`). A model without a shared parameter runs one trial a run.

Resume: the study lives in an SQLite file; a trial still RUNNING when the search starts was cut
off by a kill: it is run again with its own stored values (its run resumes from its own
checkpoint), finished trials never are. The sampler is re-seeded for each batch from (seed,
batch index), so a resumed search asks the same points as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import optuna
from optuna.distributions import CategoricalDistribution as Choice
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState

LogFloat = lambda low, high: FloatDistribution(low, high, log=True)
LogInt = lambda low, high: IntDistribution(low, high, log=True)
_KNN = {"knn_k": LogInt(5, 1000), "knn_shrink": FloatDistribution(0.0, 1000.0)}
_NCF = {"learning_rate": LogFloat(1e-4, 1e-2), "num_factors": Choice((8, 16))}
_MF = {"learning_rate": LogFloat(1e-4, 3e-2), "reg_mf": LogFloat(1e-8, 1e-2),
       "num_factors": Choice((16, 32, 64)), "num_neg": Choice((2, 4, 8))}  # fmt: skip
SPACES = {
    "toppop": {},
    "itemknn": _KNN,
    "userknn": _KNN,
    "rp3beta": {
        "rp3_alpha": FloatDistribution(0.0, 2.0),
        "rp3_beta": FloatDistribution(0.0, 2.0),
        "knn_k": LogInt(5, 1000),
    },  # fmt: skip
    "puresvd": {"svd_factors": LogInt(2, 350)},
    "slim": {
        "slim_alpha": LogFloat(1e-3, 1.0),
        "slim_l1_ratio": LogFloat(1e-5, 1.0),
        "knn_k": LogInt(5, 1000),
    },  # fmt: skip
    "ease": {"ease_lambda": LogFloat(1.0, 1e5)},
    "ials": {"ials_alpha0": LogFloat(1e-3, 10.0), "ials_reg": LogFloat(1e-4, 1.0)},
    "gmf": _NCF | {"num_factors": Choice((8, 16, 32, 64)), "reg_mf": LogFloat(1e-8, 1e-2)},
    "mlp": _NCF | {"reg_layers": LogFloat(1e-8, 1e-2)},
    "neumf": _NCF | {"reg_mf": LogFloat(1e-8, 1e-2), "reg_layers": LogFloat(1e-8, 1e-2)},
    "mf": _MF,
    "mf_bpr": {k: v for k, v in _MF.items() if k != "num_neg"},  # BPR: one negative a positive
}
# The parameter a batch of trials varies inside one run (vmapped replicas, one program).
SHARED = {**dict.fromkeys(("gmf", "mlp", "neumf", "mf", "mf_bpr"), "learning_rate"),
          "ease": "ease_lambda"}  # fmt: skip
FINISHED = (TrialState.COMPLETE, TrialState.FAIL)  # what counts towards the budget
EDGE = 0.05  # a chosen value within 5 % of its range's end (log scale where log) is flagged


def space_for(model: str, num_users: int, num_items: int) -> dict:
    """`model`'s space with integer ranges clipped to what the data allows (PureSVD's rank)."""
    space = dict(SPACES[model])
    if "svd_factors" in space:
        d = space["svd_factors"]
        space["svd_factors"] = LogInt(d.low, max(d.low, min(d.high, num_users, num_items) - 1))
    return space


def at_edge(value, distribution) -> bool:
    """Whether `value` lies at the end of its range: within EDGE of either end (on the log scale
    for log distributions); the first or last of numeric choices."""
    if isinstance(distribution, Choice):
        numeric = [c for c in distribution.choices if isinstance(c, int | float)]
        return len(numeric) > 1 and value in (min(numeric), max(numeric))
    low, high = distribution.low, distribution.high
    if distribution.log:
        value, low, high = math.log(value), math.log(low), math.log(high)
    return high > low and min(value - low, high - value) <= EDGE * (high - low)


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What one trial's run gives back: its validation score (None: the run failed) and
    attributes to record with the trial (its selected epoch, its run folder, its seconds)."""

    value: float | None
    attrs: dict


# evaluate(trials) -> one Outcome per trial; the trials of one call share one run.
Evaluate = Callable[[list[optuna.trial.Trial]], list[Outcome]]


def open_study(path, name: str, seed: int) -> optuna.Study:
    """The study `name` in the SQLite file `path` (created, or loaded to resume)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{path}")
    return optuna.create_study(storage=storage, study_name=name, direction="maximize",
                               sampler=optuna.samplers.TPESampler(seed=seed),
                               load_if_exists=True)  # fmt: skip


def _tell(study: optuna.Study, trials: list, outcomes: list[Outcome]) -> None:
    for trial, outcome in zip(trials, outcomes, strict=True):
        for key, value in outcome.attrs.items():
            trial.set_user_attr(key, value)
        if outcome.value is None:
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, outcome.value)


def _ask(study: optuna.Study, space: dict, shared: str | None, size: int, seed: int, index: int):
    """One batch: the first trial sampled in full, the rest sharing its values but `shared`."""
    study.sampler = optuna.samplers.TPESampler(seed=seed * 100_003 + index)
    trials = [study.ask(space)]
    fixed = {k: v for k, v in trials[0].params.items() if k != shared}
    for _ in range(size - 1 if shared in space else 0):
        study.enqueue_trial(fixed, skip_if_exists=False)
        trials.append(study.ask(space))
    for trial in trials:
        trial.set_user_attr("batch", index)
    return trials


def run_search(study: optuna.Study, space: dict, evaluate: Evaluate, *, trials: int,
               per_run: int, shared: str | None, seed: int) -> optuna.Study:  # fmt: skip
    """Runs `study` until `trials` trials are finished (complete or failed), `per_run` a batch
    (one when the space has no `shared` parameter); resumes a cut-off batch first."""
    stored = study.get_trials(deepcopy=False)
    stale = [t for t in stored if t.state == TrialState.RUNNING]
    for index in sorted({t.user_attrs.get("batch", -1) for t in stale}):
        batch = [optuna.trial.Trial(study, t._trial_id) for t in stale
                 if t.user_attrs.get("batch", -1) == index]  # fmt: skip
        _tell(study, batch, evaluate(batch))
    per_run = per_run if shared in space else 1
    while True:
        stored = study.get_trials(deepcopy=False)
        done = sum(t.state in FINISHED for t in stored)
        if done >= trials:
            return study
        index = 1 + max((t.user_attrs.get("batch", -1) for t in stored), default=-1)
        batch = _ask(study, space, shared, min(per_run, trials - done), seed, index)
        _tell(study, batch, evaluate(batch))


def summary(study: optuna.Study, space: dict, seconds: float) -> dict:
    """The search as compare.json records it: every trial, the chosen one, its edge flags."""
    done = [t for t in study.get_trials(deepcopy=False) if t.state != TrialState.RUNNING]
    best = study.best_trial
    return {
        "trials": len(done),
        "failed": sum(t.state == TrialState.FAIL for t in done),
        "wall_seconds": round(seconds, 2),
        "chosen": best.params,
        "chosen_trial": best.number,
        "chosen_value": best.value,
        "chosen_epoch": best.user_attrs.get("epoch"),
        "at_edge": sorted(k for k, v in best.params.items() if at_edge(v, space[k])),
        "space": {k: str(d) for k, d in space.items()},
        "tried": [
            {
                "number": t.number,
                "params": t.params,
                "value": t.value,
                "state": t.state.name,
                **t.user_attrs,
            }
            for t in done
        ],  # fmt: skip
    }


def describe(distribution) -> str:
    """A distribution in words, as docs/comparison.md's table states it."""
    if isinstance(distribution, Choice):
        return "one of " + ", ".join(map(str, distribution.choices))
    kind = "log-uniform" if distribution.log else "uniform"
    kind = ("integer, " if isinstance(distribution, IntDistribution) else "") + kind
    return f"{kind} [{distribution.low:g}, {distribution.high:g}]"


def space_table() -> list[str]:
    """docs/comparison.md's search-space table, one markdown line per model."""
    lines = ["| model | searched (shared in a batch: *italic*) |", "|---|---|"]
    for model, space in SPACES.items():
        shared = SHARED.get(model)
        cells = "; ".join(f"{f'*{k}*' if k == shared else k}: {describe(d)}"
                          for k, d in space.items())  # fmt: skip
        lines.append(f"| {model} | {cells or 'nothing (no hyperparameter)'} |")
    return lines
