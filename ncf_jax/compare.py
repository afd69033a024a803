"""Stage: results. The baseline comparison: every classic model of `ncf_jax.baselines` beside
GMF, MLP and NeuMF, under both ranking protocols, as in Ferrari Dacrema et al. (TOIS 2021,
"A troubling analysis of reproducibility and progress in recommender systems research").

`run_suite` runs each (model, protocol) through its task (`ncf_jax.tasks.classic` or
`ncf_jax.tasks.ncf`) in WORKDIR/<model>/<protocol>/ and writes WORKDIR/compare.json (every row,
with its settings, mean and std over seeds, seconds and every tried point), compare.md (one row
per model) and compare.png. A run whose results.json holds all its epochs is read back, not
run again, so an interrupted suite resumes where it stopped.

Protocols: "sampled" ranks the held-out item against its 99 sampled negatives (HR@10,
NDCG@10); "full" ranks the whole catalogue with the user's training items excluded
(Recall@10, NDCG@10; with one held-out item per user Recall@10 equals HR@10).

Tuning (`tune=True`): each model's grid (`GRIDS`) is searched on a validation item held out of
training (DataConfig validation=True, epochs picked on it too); the point with the best
validation HR@10 is chosen and only its test metrics are reported (it is not refitted on
train + validation). Without tuning every model runs at its defaults. The points of an NCF
model that differ only in learning rate train together, one vmapped replica each
(`--learning_rates`), and EASE^R's lambdas fit from one factorisation (`--ease_lambdas`); each
tried entry then records its share of that run's fit seconds (`GROUPED`).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import pathlib

import numpy as np

from ncf_jax import baselines, lock, loop, reporting, xla
from ncf_jax.config import at_least, option, require, resume_options, strings
from ncf_jax.data.digest import data_digest
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
METRICS = {"sampled": ("hr@10", "ndcg@10"), "full": ("recall@10", "ndcg@10")}
# The NCF authors' settings (experiments/configs/ml100k_{gmf,mlp,neumf}.flags).
NCF_DEFAULTS = {"num_factors": 8, "layers": "64,32,16,8", "num_neg": 4, "batch_size": 256,
                "learner": "adam", "learning_rate": 0.001}  # fmt: skip
# Small search spaces, each inside Dacrema et al.'s ranges (see each baseline's docstring).
GRIDS = {
    "toppop": {},
    "itemknn": {"knn_k": [20, 50, 100, 200], "knn_shrink": [0.0, 10.0, 100.0]},
    "userknn": {"knn_k": [20, 50, 100, 200], "knn_shrink": [0.0, 10.0, 100.0]},
    "rp3beta": {"rp3_alpha": [0.5, 1.0], "rp3_beta": [0.2, 0.4, 0.6]},
    "puresvd": {"svd_factors": [10, 20, 50, 100]},
    "slim": {"slim_alpha": [0.03, 0.1, 0.3], "slim_l1_ratio": [0.001, 0.01]},
    "ease": {"ease_lambda": [10.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 3000.0]},
    "ials": {"ials_alpha0": [0.1, 0.3, 1.0], "ials_reg": [0.003, 0.01, 0.03]},
    "mf": {"learning_rate": [0.001, 0.003], "reg_mf": [0.0, 0.001, 0.01]},
    "mf_bpr": {"learning_rate": [0.001, 0.003, 0.01], "reg_mf": [0.0, 0.001, 0.01]},
    "gmf": {},
    "mlp": {},
    "neumf": {},
}
PUBLISHED = pathlib.Path(__file__).with_name("published_baselines.json")


@dataclasses.dataclass(frozen=True)
class CompareConfig:
    """What the suite runs: the data, the models, the seeds, the NCF epochs, tuning or not."""

    dataset: str = option("ncf:ml-100k", "Dataset (as --dataset of the training scripts).")
    data_dir: str | None = option(None, "Dataset folder (as --data_dir).")
    models: tuple[str, ...] = option(
        CLASSIC + NEURAL, "Comma-separated models to compare.", parse=strings("models")
    )
    num_seeds: int = option(1, "Seeds of each randomised model (iALS, GMF, MLP, NeuMF).",
                            **at_least(1))  # fmt: skip
    epochs: int = option(20, "Epochs of GMF / MLP / NeuMF (the classic models fit in one; "
                         "iALS sweeps 15 times).", **at_least(1))  # fmt: skip
    tune: bool = option(False, "Search each model's grid on a validation item (GRIDS).")

    def __post_init__(self):
        unknown = sorted(set(self.models) - set(CLASSIC + NEURAL))
        require(not unknown, f"--models: unknown {unknown}; choose from {CLASSIC + NEURAL}")


# ------------------------------------------------------------------------------ one run
def options_of(model: str, protocol: str, suite: CompareConfig, point: dict, seeds: int) -> dict:
    """{flag: value} of one run of `model` under `protocol` at grid `point`."""
    options = {"dataset": suite.dataset, "eval_protocol": protocol, "top_k": 10}
    options |= NEURAL_OPTIONS.get(model, {"model": model})
    if suite.data_dir is not None:
        options["data_dir"] = suite.data_dir
    if suite.tune:
        options |= {"validation": True, "select_epoch": "valid"}
    if model in NEURAL:
        options = NCF_DEFAULTS | {"epochs": suite.epochs} | options
    randomised = model in NEURAL or model == "ials"
    return options | {"num_seeds": seeds if randomised else 1} | point


def _epochs(model: str, options: dict) -> int:
    return options["epochs"] if model in NEURAL else epochs_of(model, options.get("epochs", 0))


def is_complete(workdir: pathlib.Path, model: str, options: dict, configs: dict) -> bool:
    """Whether WORKDIR/results.json holds every epoch of this run, trained with these options."""
    path, saved = workdir / "results.json", workdir / "options.json"
    if not (path.exists() and saved.exists()):
        return False
    saved = json.loads(saved.read_text())
    saved.pop(loop.DATA_DIGEST, None)  # the data is not read to check a finished run; resuming is
    same = saved == json.loads(json.dumps(resume_options(configs)))
    results = json.loads(path.read_text())
    return same and len(results.get("history", [])) >= _epochs(model, options)


class Runner:
    """Runs (or reads back) single runs, loading each dataset once."""

    def __init__(self):
        self.data, self.ran = {}, []

    def __call__(self, model: str, options: dict, workdir: pathlib.Path, *, plot=True) -> dict:
        task = TASKS["ncf" if model in NEURAL else "classic"]
        configs = configs_from_options(task, options)
        if is_complete(workdir, model, options, configs):
            return json.loads((workdir / "results.json").read_text())
        key = json.dumps(dataclasses.asdict(configs["data"]), sort_keys=True)
        if key not in self.data:
            self.data[key] = task.load_data(configs)
        self.ran.append(str(workdir))
        data = self.data[key]
        record = loop.with_data_digest(task.build(data, configs), data_digest(data))
        return loop.run(record, workdir, plot=plot)


def summarise_run(results: dict, metrics: tuple[str, ...]) -> dict:
    """{metrics: {name: {mean, std}}, fit_seconds, eval_seconds} of one results.json."""
    std = results.get("best_std", {})
    values = {m: {"mean": results["best"][m], "std": std.get(m, 0.0)} for m in metrics}
    fit = sum(h["train_seconds"] for h in results["history"])
    evals = float(np.mean([h["eval_seconds"] for h in results["history"]]))
    return {"metrics": values, "fit_seconds": round(fit, 3), "eval_seconds": round(evals, 3)}


def validation_score(results: dict) -> float:
    """The selected epoch's validation HR@10 (mean over replicas)."""
    return max(h["valid_hr@10"] for h in results["history"])


def points(grid: dict) -> list[dict]:
    """A grid {flag: [values]} as a list of {flag: value}; {} gives [{}] (the defaults)."""
    names = list(grid)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*grid.values())]


def _name(point: dict) -> str:
    text = lambda v: ",".join(map(str, v)) if isinstance(v, list | tuple) else str(v)
    return "_".join(f"{k}={text(v)}" for k, v in point.items()) or "default"


# {model: (grid flag, its one-run flag)}: the grid values a model runs together in one run, one
# replica each: an NCF model's learning rates (vmapped) and EASE^R's lambdas (one
# factorisation). iALS's points run one at a time: they share one compiled sweep already, and
# vmapped as replicas its ml-100k search measured slower on a 2-core CPU (14.2 s / 5.3 s of
# sweeps against 11.2 s / 4.4 s).
GROUPED = {
    **dict.fromkeys(NEURAL, ("learning_rate", "learning_rates")),
    "ease": ("ease_lambda", "ease_lambdas"),
}


def vmapped_groups(model: str, grid: list[dict]) -> list[list[dict]]:
    """The grid's points in runs: the points that differ only in the model's GROUPED flag run
    in one run; others one run a point."""
    flag = GROUPED.get(model, (None,))[0]
    if flag is None or not all(flag in p for p in grid):
        return [[p] for p in grid]
    groups = {}
    for p in grid:
        rest = tuple((k, v) for k, v in p.items() if k != flag)
        groups.setdefault(rest, []).append(p)
    return list(groups.values())


def search(model, protocol, suite, home: pathlib.Path, run, group: list[dict]) -> list[dict]:
    """The tried entries of one run of the search (one point, or a group run together)."""
    point = group[0]
    if len(group) > 1:
        flag, together = GROUPED[model]
        point = {k: v for k, v in point.items() if k != flag}
        point[together] = tuple(p[flag] for p in group)
    workdir = home / "tune" / _name(point)
    results = run(model, options_of(model, protocol, suite, point, 1), workdir, plot=False)
    fit = summarise_run(results, METRICS[protocol])["fit_seconds"]
    replicas = results["seeds"] if len(group) > 1 else [results]
    return [{"settings": p, "valid_hr@10": validation_score(r), "workdir": str(workdir),
             "fit_seconds": fit / len(group), "replicas_in_run": len(group)}
            for p, r in zip(group, replicas, strict=True)]  # fmt: skip


def run_row(model, protocol, suite: CompareConfig, root: pathlib.Path, run, grid: dict) -> dict:
    """One (model, protocol) row: its grid searched on validation when tuning (one seed a
    point), then the chosen point with every seed."""
    home = root / model / protocol
    tried, chosen = [], {}
    grid = points(grid if suite.tune else {})
    if len(grid) > 1:
        for group in vmapped_groups(model, grid):
            tried += search(model, protocol, suite, home, run, group)
        chosen = max(tried, key=lambda t: t["valid_hr@10"])["settings"]
    options = options_of(model, protocol, suite, chosen, suite.num_seeds)
    results = run(model, options, home)
    return {"model": model, "protocol": protocol, "settings": options,
            "chosen": chosen, "seeds": results.get("seed"), "workdir": str(home),
            **summarise_run(results, METRICS[protocol]), "tried": tried}  # fmt: skip


# ------------------------------------------------------------------------------ the report
def published(dataset: str) -> dict:
    """{model: {"hr@10", "ndcg@10"}} of Ferrari Dacrema et al. for `dataset` ({} if none)."""
    table = json.loads(PUBLISHED.read_text())
    return table["datasets"].get(dataset, {})


def _cell(metric: dict | None) -> str:
    return "" if metric is None else f"{metric['mean']:.4f} ± {metric['std']:.4f}"


def table_rows(rows: list[dict], dataset: str) -> list[dict]:
    """One markdown row per model: both protocols' metrics, seconds, published figures."""
    by = {(r["model"], r["protocol"]): r for r in rows}
    paper = published(dataset)
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        sampled, full = by.get((model, "sampled")), by.get((model, "full"))
        get = lambda row, m: None if row is None else row["metrics"][m]
        line = {
            "model": model,
            "HR@10 (sampled)": _cell(get(sampled, "hr@10")),
            "NDCG@10 (sampled)": _cell(get(sampled, "ndcg@10")),
            "Recall@10 (full)": _cell(get(full, "recall@10")),
            "NDCG@10 (full)": _cell(get(full, "ndcg@10")),
            "fit s": " / ".join(f"{r['fit_seconds']:.1f}" for r in (sampled, full) if r),
            "eval s": " / ".join(f"{r['eval_seconds']:.2f}" for r in (sampled, full) if r),
        }
        searched = [sum(t["fit_seconds"] for t in r["tried"]) for r in (sampled, full) if r]
        if any(searched):
            line["search s"] = " / ".join(f"{s:.1f}" for s in searched)
        if paper:
            figures = paper.get(model)
            line["paper HR@10 / NDCG@10"] = (
                f"{figures['hr@10']:.4f} / {figures['ndcg@10']:.4f}" if figures else "n/a"
            )
        out.append(line)
    return out


def plot(rows: list[dict], path: pathlib.Path, title: str) -> None:
    """Bars of sampled HR@10 and full Recall@10 per model, with std error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(models)), 3.6))
    bars = ((-0.2, "sampled", "hr@10"), (0.2, "full", "recall@10"))
    for offset, protocol, metric in bars:
        found = {r["model"]: r["metrics"][metric] for r in rows if r["protocol"] == protocol}
        x = [i + offset for i, m in enumerate(models) if m in found]
        means = [found[m]["mean"] for m in models if m in found]
        stds = [found[m]["std"] for m in models if m in found]
        ax.bar(x, means, 0.4, yerr=stds, label=f"{metric} ({protocol})")
    ax.set_xticks(range(len(models)), models, rotation=30)
    ax.set(title=title, ylabel="@10")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(rows: list[dict], suite: CompareConfig, root: pathlib.Path, head: dict) -> None:
    """WORKDIR/compare.json, compare.md and compare.png."""
    (root / "compare.json").write_text(json.dumps({**head, "rows": rows}, indent=1) + "\n")
    paper = published(suite.dataset)
    note = (f"\n'paper': {json.loads(PUBLISHED.read_text())['source']} (sampled protocol).\n"
            if paper else "\nNo published figures for this dataset.\n")  # fmt: skip
    seeds = f"{suite.num_seeds} seed(s) for iALS and the trained models; others deterministic"
    how = "tuned on validation" if suite.tune else "defaults"
    text = (f"# Baselines on {suite.dataset}\n\n{how}; {seeds}.\nfit s: training seconds of the "
            "reported run (sampled / full; search s: of all tried points); eval s: seconds per "
            "evaluation, the first one's compilation included.\n\n")  # fmt: skip
    lines = table_rows(rows, suite.dataset)
    columns = list(dict.fromkeys(k for line in lines for k in line))  # "search s" may come late
    (root / "compare.md").write_text(text + reporting.markdown_table(lines, columns) + note)
    plot(rows, root / "compare.png", f"{suite.dataset}: @10, mean ± std over seeds")


def run_suite(suite: CompareConfig, workdir, *, head: dict | None = None, grids=GRIDS) -> dict:
    """Every (model, protocol) of `suite` in WORKDIR; returns compare.json's content plus
    "ran": the run folders trained this time (empty when everything was complete).
    grids: {model: {flag: [values]}} searched with `suite.tune` (default `GRIDS`)."""
    root = pathlib.Path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    xla.use_compilation_cache(root / "xla_cache")  # the runs of a grid share their programs
    run = Runner()
    rows = []
    with lock.hold(root):  # one suite per WORKDIR; each run holds its own folder too
        for model in suite.models:
            for protocol in PROTOCOLS:
                rows.append(run_row(model, protocol, suite, root, run, grids.get(model, {})))
                write_report(rows, suite, root, head or {})  # a partial report survives a crash
    return {**(head or {}), "rows": rows, "ran": run.ran}
