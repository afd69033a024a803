"""Stage: the paper's figures, drawn like its Figures 4-7: one panel per metric, one line with
markers per model, the x axis of the paper (factors, K, iterations, negatives); error bars are
the standard deviation over seeds."""

from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402

from ncf_jax.commands.paper.suite import MODELS  # noqa: E402

MARKERS = "o^sDvx*+<>"


def _panels(n: int, title: str):
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.4), squeeze=False)
    fig.suptitle(title, fontsize=10)
    return fig, axes[0]


def _line(ax, xs, rows, key, label, marker):
    ys = [r[key] for r in rows]
    err = [r.get(f"{key}_std") or 0.0 for r in rows]
    ax.errorbar(xs, ys, yerr=err, marker=marker, markersize=4, capsize=2, label=label)


def _by_model(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["model"], []).append(r)
    return out


def _save(fig, axes, path: pathlib.Path) -> None:
    axes[0].legend(fontsize=7)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figure_vs(rows, x: str, xlabel: str, metrics, title: str, path, *, log2=False, ylabels=None):
    """Figures 4, 5 and 7: each metric against `x`, one line per model."""
    fig, axes = _panels(len(metrics), title)
    for i, (model, points) in enumerate(_by_model(rows).items()):
        points = sorted(points, key=lambda r: r[x])
        for ax, metric in zip(axes, metrics, strict=True):
            _line(ax, [r[x] for r in points], points, metric, MODELS[model].label, MARKERS[i])
    for ax, ylabel in zip(axes, ylabels or [m.upper() for m in metrics], strict=True):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if log2:
            ax.set_xscale("log", base=2)
            xs = sorted({r[x] for r in rows})
            ax.set_xticks(xs, [str(v) for v in xs])
    _save(fig, axes, path)


def figure5(rows, title: str, path) -> None:
    """HR@K and NDCG@K for K = 1..10: rows hold hr@1..hr@10, ndcg@1..ndcg@10."""
    points = []
    for r in rows:
        ks = sorted(int(k.split("@")[1]) for k in r if k.startswith("hr@") and "_" not in k)
        for k in ks:
            points.append({"model": r["model"], "k": k, "hr": r[f"hr@{k}"],
                           "hr_std": r.get(f"hr@{k}_std"), "ndcg": r[f"ndcg@{k}"],
                           "ndcg_std": r.get(f"ndcg@{k}_std")})  # fmt: skip
    figure_vs(points, "k", "K", ("hr", "ndcg"), title, path, ylabels=("HR@K", "NDCG@K"))


def figure6(rows, title: str, path) -> None:
    """Training loss, HR@10 and NDCG@10 per iteration (epoch 0: before training, no loss)."""
    fig, axes = _panels(3, title)
    for i, r in enumerate(rows):
        label = MODELS[r["model"]].label
        trained = [c for c in r["curve"] if "loss" in c]
        _line(axes[0], [c["epoch"] for c in trained], trained, "loss", label, MARKERS[i])
        for ax, metric in zip(axes[1:], ("hr@10", "ndcg@10"), strict=True):
            _line(ax, [c["epoch"] for c in r["curve"]], r["curve"], metric, label, MARKERS[i])
    for ax, name in zip(axes, ("Training loss", "HR@10", "NDCG@10"), strict=True):
        ax.set_xlabel("Iteration")
        ax.set_ylabel(name)
    _save(fig, axes, path)


def draw(report: dict, folder) -> list[pathlib.Path]:
    """One PNG per figure of `report` (paper.json's content) in `folder`."""
    folder, made = pathlib.Path(folder), []
    title = lambda name: f"{report['experiments'][name]['title']} — {report['dataset']}"
    for name, exp in report["experiments"].items():
        path, rows = folder / f"{name}.png", exp["rows"]
        if not rows:
            continue
        if name == "figure4":
            figure_vs(rows, "factors", "Factors", ("hr@10", "ndcg@10"), title(name), path,
                      log2=True)  # fmt: skip
        elif name == "figure5":
            figure5(rows, title(name), path)
        elif name == "figure6":
            figure6(rows, title(name), path)
        elif name == "figure7":
            figure_vs(rows, "num_neg", "Number of negatives", ("hr@10", "ndcg@10"),
                      title(name), path)  # fmt: skip
        else:
            continue
        made.append(path)
    return made
