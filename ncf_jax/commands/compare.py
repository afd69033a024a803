"""Stage: results. The baseline comparison: every classic model of `ncf_jax.baselines` beside
GMF, MLP, NeuMF and MF, under both ranking protocols, as in Ferrari Dacrema et al. (TOIS 2021,
"A troubling analysis of reproducibility and progress in recommender systems research").

For each model, in WORKDIR/<model>/:
  1. search: `--trials` trials of the model's space (`search.SPACES`), the same number
     for every model, each fitted on the training data less a validation item per user and
     scored by its validation HR@10 under `--search_protocol` (its epoch picked on validation
     too); Optuna's study is WORKDIR/search.db. Trials that differ only in the model's shared
     parameter train together as vmapped replicas (search/trials_<first>-<last>/).
  2. refit: the chosen point fitted on training + validation (no validation item held out) for
     the chosen trial's epoch count, every seed (final/); its last epoch is the reported one.
  3. the refitted model tested under both protocols, each user's metrics of every seed saved
     to WORKDIR/per_user/<model>_<protocol>.npz: one row per (model, protocol).
With `--trials=0` (or an empty space: TopPop) the model runs at its defaults.
`compare_report` turns the rows and per-user arrays into compare.json, .md and .png.
A run whose results.json holds all its epochs is read back, not run again, and the search
resumes trial by trial, so an interrupted suite resumes where it stopped.

Protocols: "sampled" ranks the held-out item against its 99 sampled negatives (HR@10,
NDCG@10); "full" ranks the whole catalogue with the user's training items excluded
(Recall@10, NDCG@10; with one held-out item per user Recall@10 equals HR@10).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time

import numpy as np

from ncf_jax import baselines, lock, loop, xla
from ncf_jax.commands import compare_report, per_user, search
from ncf_jax.config import at_least, option, require, resume_options, strings
from ncf_jax.data.digest import data_digest
from ncf_jax.errors import DivergedError
from ncf_jax.tasks import TASKS, configs_from_options
from ncf_jax.tasks.classic import epochs_of
from ncf_jax.tasks.ncf import BPR_OPTIONS

CLASSIC = tuple(baselines.MODELS)
# Trained through the NCF task (sampler, epoch, Adam): {row name: its own options}. "mf" is the
# dot-product MF of Rendle et al. (RecSys 2020) with the paper's log loss; "mf_bpr" the same
# model with the pairwise BPR loss, one sampled negative per positive (Rendle et al. 2009).
NEURAL_OPTIONS = {
    "gmf": {"model": "gmf"},
    "mlp": {"model": "mlp"},
    "neumf": {"model": "neumf"},
    "mf": {"model": "mf", "num_factors": 32},
    "mf_bpr": {"model": "mf", "num_factors": 32, **BPR_OPTIONS},
}
NEURAL = tuple(NEURAL_OPTIONS)
PROTOCOLS = ("sampled", "full")
METRICS = compare_report.METRICS
# The NCF authors' settings (experiments/configs/ml100k_{gmf,mlp,neumf}.flags).
NCF_DEFAULTS = {"num_factors": 8, "layers": "64,32,16,8", "num_neg": 4, "batch_size": 256,
                "learner": "adam", "learning_rate": 0.001}  # fmt: skip
# Epochs of each trained model, in the search (the chosen trial's best epoch is refitted) and
# at the defaults; --epochs overrides them all.
EPOCHS = {"gmf": 15, "mlp": 10, "neumf": 10, "mf": 15, "mf_bpr": 15}
# The one-run flag of each shared parameter: a batch's values as vmapped replicas.
TOGETHER = {"learning_rate": "learning_rates", "ease_lambda": "ease_lambdas"}


@dataclasses.dataclass(frozen=True)
class CompareConfig:
    """What the suite runs: the data, the models, the seeds, the epochs, the search budget."""

    dataset: str = option("ncf:ml-100k", "Dataset (as --dataset of the training scripts).")
    data_dir: str | None = option(None, "Dataset folder (as --data_dir).")
    models: tuple[str, ...] = option(
        CLASSIC + NEURAL, "Comma-separated models to compare.", parse=strings("models")
    )
    num_seeds: int = option(1, "Seeds of each randomised model's refit (iALS and the trained "
                            "models); the search trains one.", **at_least(1))  # fmt: skip
    epochs: int = option(0, "Epochs of the trained models (0: each model's own, compare.EPOCHS); "
                         "iALS sweeps 15 times.", **at_least(0))  # fmt: skip
    trials: int = option(20, "Search trials of every model (search.SPACES), one number "
                         "for all; 0: every model at its defaults.", **at_least(0))  # fmt: skip
    trials_per_run: int = option(4, "Trials a run trains together as vmapped replicas (models "
                                 "with a shared parameter: learning rate, EASE^R's lambda).",
                                 **at_least(1))  # fmt: skip
    seed: int = option(0, "Seed of the search's sampler and of the bootstrap.")
    search_protocol: str = option("sampled", "The protocol of the search's validation HR@10 "
                                  "(full: its evaluations cost 5-10 times more).",
                                  choices=PROTOCOLS)  # fmt: skip

    def __post_init__(self):
        unknown = sorted(set(self.models) - set(CLASSIC + NEURAL))
        require(not unknown, f"--models: unknown {unknown}; choose from {CLASSIC + NEURAL}")


# ------------------------------------------------------------------------------ one run
def epochs_for(model: str, suite: CompareConfig) -> int:
    """Epochs of `model`'s search trials and default run (iALS: sweeps; closed forms: 1)."""
    if model in NEURAL:
        return suite.epochs or EPOCHS[model]
    return epochs_of(model, 0)


def point_options(model: str, point: dict) -> dict:
    """A search point as options: an MLP tower sized by its factors, as He et al. (WWW 2017)
    size it (predictive factors f: layers 8f, 4f, 2f, f), one L2 value for every layer."""
    options = dict(point)
    if "reg_layers" in options:
        options["reg_layers"] = (options["reg_layers"],)
    if model in ("mlp", "neumf") and "num_factors" in options:
        f = options["num_factors"]
        options["layers"] = (8 * f, 4 * f, 2 * f, f)
    return options


def options_of(model, protocol, suite, point: dict, *, seeds: int, validation: bool,
               epochs: int) -> dict:  # fmt: skip
    """{flag: value} of one run of `model` under `protocol` at options `point`."""
    options = {"dataset": suite.dataset, "eval_protocol": protocol, "top_k": 10}
    options |= NEURAL_OPTIONS.get(model, {"model": model})
    if suite.data_dir is not None:
        options["data_dir"] = suite.data_dir
    if validation:
        options |= {"validation": True, "select_epoch": "valid"}
    if model in NEURAL:
        options = NCF_DEFAULTS | options
    if model in NEURAL or model == "ials":
        options["epochs"] = epochs
    randomised = model in NEURAL or model == "ials"
    return options | {"num_seeds": seeds if randomised else 1} | point


def is_complete(workdir: pathlib.Path, model: str, options: dict, configs: dict) -> bool:
    """Whether WORKDIR/results.json holds every epoch of this run, trained with these options."""
    path, saved = workdir / "results.json", workdir / "options.json"
    if not (path.exists() and saved.exists()):
        return False
    saved = json.loads(saved.read_text())
    saved.pop(loop.DATA_DIGEST, None)  # the data is not read to check a finished run; resuming is
    same = saved == json.loads(json.dumps(resume_options(configs)))
    epochs = options["epochs"] if model in NEURAL else epochs_of(model, options.get("epochs", 0))
    return same and len(json.loads(path.read_text()).get("history", [])) >= epochs


class Runner:
    """Runs (or reads back) single runs, loading each dataset once."""

    def __init__(self):
        self.datasets, self.ran = {}, []

    def data(self, model: str, options: dict):
        task = TASKS["ncf" if model in NEURAL else "classic"]
        configs = configs_from_options(task, options)
        key = json.dumps(dataclasses.asdict(configs["data"]), sort_keys=True)
        if key not in self.datasets:
            self.datasets[key] = task.load_data(configs)
        return task, configs, self.datasets[key]

    def __call__(self, model: str, options: dict, workdir: pathlib.Path, *, plot=True) -> dict:
        task, configs, data = self.data(model, options)
        if is_complete(workdir, model, options, configs):
            return json.loads((workdir / "results.json").read_text())
        self.ran.append(str(workdir))
        record = loop.with_data_digest(task.build(data, configs), data_digest(data))
        return loop.run(record, workdir, plot=plot)


def fit_seconds(results: dict) -> float:
    return round(sum(h["train_seconds"] for h in results["history"]), 3)


# ------------------------------------------------------------------------------ the search
def trial_evaluator(model, protocol, suite, home: pathlib.Path, run) -> search.Evaluate:
    """`evaluate(trials)` of the search: one run for the batch, one Outcome per trial."""

    def evaluate(trials):
        points = [point_options(model, t.params) for t in trials]
        point = points[0]
        if len(trials) > 1:  # the batch shares every value but the shared parameter
            flag = search.SHARED[model]
            point = {k: v for k, v in point.items() if k != flag}
            point[TOGETHER[flag]] = tuple(p[flag] for p in points)
        workdir = home / "search" / f"trials_{trials[0].number}-{trials[-1].number}"
        options = options_of(model, protocol, suite, point, seeds=1, validation=True,
                             epochs=epochs_for(model, suite))  # fmt: skip
        attrs = {"workdir": str(workdir)}
        try:
            results = run(model, options, workdir, plot=False)
        except DivergedError as error:  # a diverged trial fails; the search goes on
            return [search.Outcome(None, attrs | {"error": str(error)}) for _ in trials]
        replicas = results["seeds"] if len(trials) > 1 else [results]
        attrs["fit_seconds"] = round(fit_seconds(results) / len(trials), 3)
        return [search.Outcome(max(h["valid_hr@10"] for h in r["history"]),
                               attrs | {"epoch": r["best_epoch"]})
                for r in replicas]  # fmt: skip

    return evaluate


def run_search(model, protocol, suite, root: pathlib.Path, run, space: dict) -> dict:
    """The model's search under `protocol` (resumed from WORKDIR/search.db): its summary."""
    study = search.open_study(root / "search.db", f"{model}/{protocol}", suite.seed)
    finished = lambda: len(study.get_trials(deepcopy=False, states=search.FINISHED))
    start, before = time.perf_counter(), finished()
    evaluate = trial_evaluator(model, protocol, suite, root / model, run)
    search.run_search(study, space, evaluate, trials=suite.trials, per_run=suite.trials_per_run,
                      shared=search.SHARED.get(model), seed=suite.seed)  # fmt: skip
    seconds = study.user_attrs.get("wall_seconds", 0.0)
    if finished() > before or not seconds:  # summed over the invocations that ran trials
        seconds += time.perf_counter() - start
        study.set_user_attr("wall_seconds", seconds)
    return search.summary(study, space, seconds)


# ------------------------------------------------------------------------------ one model
def _row(model, protocol, root, run_info: dict, values: dict, data) -> dict:
    """One (model, protocol) row; its per-user values saved to WORKDIR/per_user/."""
    path = root / "per_user" / f"{model}_{protocol}.npz"
    path.parent.mkdir(exist_ok=True)
    seeds = run_info["seeds"]
    np.savez_compressed(path, users=data.user_ids[data.test_users], seeds=np.array(seeds),
                        **values)  # fmt: skip
    per_seed = {m: values[m].mean(axis=1) for m in METRICS[protocol]}
    metrics = {m: {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0}
               for m, v in per_seed.items()}  # fmt: skip
    return {"model": model, "protocol": protocol, **run_info, "metrics": metrics,
            "per_user": str(path.relative_to(root))}  # fmt: skip


def run_model(model, suite: CompareConfig, root: pathlib.Path, run) -> list[dict]:
    """One model's rows, one per protocol: its search (under `suite.search_protocol`), the
    refit on training + validation with every seed, tested per user under both protocols."""
    home, protocol = root / model, suite.search_protocol
    plain = options_of(model, protocol, suite, {}, seeds=1, validation=False, epochs=1)
    data = run.data(model, plain)[2]
    space = search.space_for(model, data.num_users, data.num_items)
    searched, point, epochs = None, {}, epochs_for(model, suite)
    if suite.trials and space:
        searched = run_search(model, protocol, suite, root, run, space)
        point, epochs = point_options(model, searched["chosen"]), searched["chosen_epoch"]
    options = options_of(model, protocol, suite, point, seeds=suite.num_seeds, validation=False,
                         epochs=epochs)  # fmt: skip
    results = run(model, options, home / "final")
    seeds = results["seed"] if isinstance(results["seed"], list) else [results["seed"]]
    evals = float(np.mean([h["eval_seconds"] for h in results["history"]]))
    info = {"settings": options, "seeds": seeds, "epochs": epochs, "workdir": str(home / "final"),
            "fit_seconds": fit_seconds(results), "eval_seconds": round(evals, 3),
            "search": searched}  # fmt: skip
    values = per_user.of_run(home / "final", data, len(seeds), PROTOCOLS)
    return [_row(model, p, root, info, values[p], data) for p in PROTOCOLS]


def run_suite(suite: CompareConfig, workdir, *, head: dict | None = None) -> dict:
    """Every (model, protocol) of `suite` in WORKDIR; returns compare.json's content plus
    "ran": the run folders trained this time (empty when everything was complete)."""
    root = pathlib.Path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    xla.use_compilation_cache(root / "xla_cache")  # the runs of a search share their programs
    run = Runner()
    rows = []
    with lock.hold(root):  # one suite per WORKDIR; each run holds its own folder too
        for model in suite.models:
            rows += run_model(model, suite, root, run)
            report = compare_report.write(rows, suite, root, head or {})  # a crash keeps a report
    return report | {"ran": run.ran}
