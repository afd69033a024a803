"""Stage: results. The comparison's report: WORKDIR/compare.json (every row, its search, the
statistics), compare.md (the tables) and compare.png (one panel per protocol, intervals drawn),
from the rows of `ncf_jax.commands.compare` and their per-user arrays (WORKDIR/per_user/*.npz).

Statistics (`ncf_jax.commands.stats`) run on each model's per-user values averaged over its seeds: a
bootstrap interval per model and metric; paired tests against the best model and NeuMF, Holm-
corrected; "tied for best"; Kendall's tau between the sampled and full orderings.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

from ncf_jax import reporting
from ncf_jax.commands import stats

REFERENCE = "neumf"
METRICS = {"sampled": ("hr@10", "ndcg@10"), "full": ("recall@10", "ndcg@10")}
PUBLISHED = pathlib.Path(__file__).parents[1] / "published_baselines.json"
PRIMARY = {"sampled": "hr@10", "full": "recall@10"}
# Kendall's tau pairs: the sampled metric against the full one it corresponds to.
AGREEMENT = {"hr@10 / recall@10": ("hr@10", "recall@10"), "ndcg@10": ("ndcg@10", "ndcg@10")}
LABELS = {"hr@10": "HR@10", "recall@10": "Recall@10", "ndcg@10": "NDCG@10"}


def seed_means(root: pathlib.Path, row: dict) -> dict:
    """{metric: [users]} of one row: its per-user values averaged over seeds."""
    with np.load(root / row["per_user"]) as saved:
        return {m: saved[m].mean(axis=0) for m in row["metrics"]}


def statistics(rows: list[dict], root: pathlib.Path, seed: int) -> dict:
    """{protocol: {metric: stats.compare_models(...)}, "agreement": {...}} of the rows."""
    out = {"test": "paired t-test (primary), Wilcoxon signed-rank (secondary)",
           "correction": stats.CORRECTION, "alpha": stats.ALPHA, "level": stats.LEVEL,
           "bootstrap": f"percentile, {stats.RESAMPLES} resamples over users, seeded",
           "reference": REFERENCE}  # fmt: skip
    for protocol in dict.fromkeys(r["protocol"] for r in rows):
        found = [r for r in rows if r["protocol"] == protocol]
        values = {r["model"]: seed_means(root, r) for r in found}
        out[protocol] = {
            metric: stats.compare_models({m: v[metric] for m, v in values.items()},
                                         reference=REFERENCE, seed=seed)
            for metric in found[0]["metrics"]
        }  # fmt: skip
    if "sampled" in out and "full" in out:
        means = lambda p, m: {k: v["mean"] for k, v in out[p][m]["models"].items()}
        out["agreement"] = {name: stats.protocol_agreement(means("sampled", a), means("full", b))
                            for name, (a, b) in AGREEMENT.items()}  # fmt: skip
    return out


# ------------------------------------------------------------------------------ the tables
def published(dataset: str) -> dict:
    """{model: {"hr@10", "ndcg@10"}} of Ferrari Dacrema et al. for `dataset` ({} if none)."""
    return json.loads(PUBLISHED.read_text())["datasets"].get(dataset, {})


def _cell(entry: dict | None) -> str:
    if entry is None:
        return ""
    low, high = entry["ci"]
    text = f"{entry['mean']:.4f} [{low:.4f}, {high:.4f}]"
    return f"**{text}**" if entry["tied_for_best"] else text


def main_table(rows: list[dict], stat: dict, paper: dict) -> list[dict]:
    """One line per model: each protocol's metrics with intervals, ranks, search and seconds."""
    lines = []
    for model in dict.fromkeys(r["model"] for r in rows):
        line = {"model": model}
        for protocol, metrics in METRICS.items():
            for metric in metrics:
                entry = stat.get(protocol, {}).get(metric, {}).get("models", {}).get(model)
                line[f"{LABELS[metric]} ({protocol})"] = _cell(entry)
        ranks = stat.get("agreement", {}).get("hr@10 / recall@10", {}).get("ranks", {})
        if model in ranks:
            line["rank (s / f)"] = " / ".join(map(str, ranks[model]))
        first = next(r for r in rows if r["model"] == model)  # its rows share a search, a fit
        searched = first["search"]
        line["trials"] = searched["trials"] if searched else 0
        line["search s"] = f"{searched['wall_seconds']:.0f}" if searched else ""
        line["fit s"] = f"{first['fit_seconds']:.1f}"
        if paper:
            figures = paper.get(model)
            line["paper HR@10 / NDCG@10"] = (
                f"{figures['hr@10']:.4f} / {figures['ndcg@10']:.4f}" if figures else "n/a"
            )
        lines.append(line)
    return lines


def _versus(test: dict | None) -> tuple[str, str, str]:
    if test is None:
        return "", "", ""
    low, high = test["diff_ci"]
    return (f"{test['diff']:+.4f} [{low:+.4f}, {high:+.4f}]", f"{test['p_t_holm']:.3g}",
            f"{test['p_wilcoxon_holm']:.3g}")  # fmt: skip


def tests_table(result: dict) -> list[dict]:
    """One line per model: its difference to the best and to NeuMF, the Holm-adjusted p."""
    lines = []
    for model, entry in result["models"].items():
        best, best_t, best_w = _versus(entry["vs_best"])
        ref, ref_t, ref_w = _versus(entry["vs_reference"])
        d = lambda test: "" if test is None else f"{test['d_z']:+.3f}"
        lines.append({"model": model, "Δ vs best [95 % CI]": best, "p vs best (t)": best_t,
                      "p vs best (W)": best_w, "d_z vs best": d(entry["vs_best"]),
                      f"Δ vs {REFERENCE} [95 % CI]": ref, f"p vs {REFERENCE} (t)": ref_t,
                      f"p vs {REFERENCE} (W)": ref_w,
                      f"d_z vs {REFERENCE}": d(entry["vs_reference"]),
                      "tied for best": "yes" if entry["tied_for_best"] else ""})  # fmt: skip
    return lines


def search_table(rows: list[dict]) -> list[dict]:
    """One line per searched model: trials, seconds, the chosen point, its edges."""
    lines = []
    for r in {r["model"]: r for r in rows}.values():
        s = r["search"]
        if not s:
            continue
        point = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in s["chosen"].items())  # fmt: skip
        lines.append({"model": r["model"], "trials": s["trials"],
                      "failed": s["failed"], "search s": f"{s['wall_seconds']:.1f}",
                      "valid HR@10": f"{s['chosen_value']:.4f}", "chosen": point,
                      "epochs": r["epochs"], "at the edge": ", ".join(s["at_edge"])})  # fmt: skip
    return lines


# ------------------------------------------------------------------------------ the plot
def plot(stat: dict, path: pathlib.Path, title: str) -> None:
    """One panel per protocol: its primary metric per model, 95 % bootstrap intervals drawn;
    the models tied for best in a darker colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    protocols = [p for p in PRIMARY if p in stat]
    fig, axes = plt.subplots(1, len(protocols), figsize=(5.5 * len(protocols), 3.8), squeeze=False)
    for ax, protocol in zip(axes[0], protocols, strict=True):
        metric = PRIMARY[protocol]
        models = stat[protocol][metric]["models"]
        names = list(models)
        means = np.array([models[m]["mean"] for m in names])
        cis = np.array([models[m]["ci"] for m in names]).T
        colours = ["tab:blue" if models[m]["tied_for_best"] else "tab:gray" for m in names]
        ax.bar(range(len(names)), means, color=colours,
               yerr=np.abs(cis - means), capsize=3)  # fmt: skip
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set(title=f"{protocol}: {LABELS[metric]}", ylim=(0, 1.1 * max(cis[1].max(), 1e-3)))
    fig.suptitle(f"{title} (95 % bootstrap intervals; blue: tied for best)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------------ the files
def _markdown(rows: list[dict], suite, stat: dict, paper: dict, published_source: str) -> str:
    seeds = f"{suite.num_seeds} seed(s) for iALS and the trained models; the others deterministic"
    budget = (
        f"{suite.trials} search trials a model (TPE, seed {suite.seed}; validation HR@10 under "
        f"the {suite.search_protocol} protocol), the chosen point refitted on training + "
        "validation and tested under both protocols"
        if suite.trials
        else "defaults"
    )
    parts = [f"# Baselines on {suite.dataset}\n\n{budget}; {seeds}.\n",
             "Cells: mean over test users (each user's value averaged over seeds) [95 % bootstrap "
             f"interval]; **bold**: tied for best (Holm-corrected paired t-test against the best "
             f"model, p >= {stats.ALPHA}). rank (s / f): rank by HR@10 sampled / Recall@10 full. "
             "search s: the search's wall seconds; fit s: the refit's training "
             "seconds.\n"]  # fmt: skip
    lines = main_table(rows, stat, paper)
    columns = list(dict.fromkeys(k for line in lines for k in line))
    parts.append(reporting.markdown_table(lines, columns))
    agreement = stat.get("agreement")
    if agreement:
        parts.append("\n## The protocols' agreement\n\nKendall's tau-b between the model "
                     "orderings under the sampled and the full protocol:\n")  # fmt: skip
        for name, a in agreement.items():
            if a["tau"] is not None:
                parts.append(f"- {name}: tau = {a['tau']:.3f} (p = {a['p']:.3g})")
    for protocol in PRIMARY:
        for metric, result in stat.get(protocol, {}).items():
            parts.append(f"\n## Paired tests: {LABELS[metric]} ({protocol})\n\nBest: "
                         f"{result['best']}. Δ: mean per-user difference (model minus the "
                         "other), 95 % t interval; p: Holm-adjusted.\n")  # fmt: skip
            lines = tests_table(result)
            parts.append(reporting.markdown_table(lines, list(lines[0])))
    searched = search_table(rows)
    if searched:
        parts.append("\n## The search\n")
        parts.append(reporting.markdown_table(searched, list(searched[0])))
    parts.append(f"\n'paper': {published_source} (sampled protocol).\n" if paper
                 else "\nNo published figures for this dataset.\n")  # fmt: skip
    return "\n".join(parts)


def write(rows: list[dict], suite, root: pathlib.Path, head: dict) -> dict:
    """WORKDIR/compare.json, compare.md and compare.png; returns compare.json's content."""
    stat = statistics(rows, root, suite.seed)
    report = {**head, "rows": rows, "statistics": stat}
    (root / "compare.json").write_text(json.dumps(report, indent=1) + "\n")
    table = json.loads(PUBLISHED.read_text())
    paper = published(suite.dataset)
    (root / "compare.md").write_text(_markdown(rows, suite, stat, paper, table["source"]))
    plot(stat, root / "compare.png", suite.dataset)
    return report
