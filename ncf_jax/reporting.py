"""Stage: results. Per-epoch log lines, a progress bar, results.json, markdown tables, plots."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys
import time

from absl import logging


def describe_run(task: str, dataset: str, configs: dict, *, extra: dict | None = None,
                 **fields) -> dict:  # fmt: skip
    """The head of every results.json: the task, the model, the dataset, the selection, learner
    and seed, then each config as a dict (None entries skipped) and `extra` (e.g. the flags).

    `fields` (e.g. eval_protocol=, loss=) override or add top-level entries.
    """
    model, train_config, eval_config = configs["model"], configs["train"], configs.get("eval")
    head = {
        "task": task,
        "model": model.model,
        "dataset": dataset,
        "select_epoch": getattr(eval_config, "select_epoch", "test"),
        "learner": train_config.learner,
        "seed": train_config.seed,
    }
    asdicts = {name: dataclasses.asdict(c) for name, c in configs.items() if c is not None}
    return head | fields | {"config": asdicts} | (extra or {})


def format_metrics(metrics: dict) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in metrics.items())


class Progress:
    """A one-line progress bar over epochs on stderr (only on a terminal) with an ETA."""

    def __init__(self, total: int, start: int = 0, width: int = 30):
        self.total, self.done, self.width = total, start, width
        self.started, self.start = time.perf_counter(), start
        self.enabled = sys.stderr.isatty()

    def update(self, summary: str = "") -> None:
        self.done += 1
        if not self.enabled:
            return
        rate = (time.perf_counter() - self.started) / max(self.done - self.start, 1)
        eta = rate * (self.total - self.done)
        filled = int(self.width * self.done / max(self.total, 1))
        bar = "#" * filled + "." * (self.width - filled)
        sys.stderr.write(f"\r[{bar}] {self.done}/{self.total} eta {eta:5.1f}s {summary}")
        if self.done >= self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def log_epoch(entry: dict) -> None:
    metrics = {k: v for k, v in entry.items() if "@" in k}
    logging.info(
        "epoch %3d  loss %.4f  %s  [train %.2fs, eval %.2fs]",
        entry["epoch"],
        entry["loss"],
        format_metrics(metrics),
        entry["train_seconds"],
        entry["eval_seconds"],
    )


def markdown_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """A GitHub markdown table of `rows` (floats to 4 decimals)."""
    if not rows:
        return ""
    columns = columns or list(rows[0])
    cell = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_results(workdir, results: dict) -> pathlib.Path:
    """WORKDIR/results.json, and WORKDIR/results.md with the per-epoch history as a table."""
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "results.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)  # atomic: a killed run never leaves half a file
    best = ", ".join(f"{k} {v:.4f}" for k, v in results.get("best", {}).items())
    chosen = f"best epoch {results.get('best_epoch')} (by {results.get('select_epoch', 'test')})"
    stopped = (
        f"**Stopped: diverged in {results['diverged']}.**\n\n" if "diverged" in results else ""
    )
    text = (
        f"# {results.get('model')} on {results.get('dataset')}\n\n{stopped}{chosen}: {best}\n\n"
        + markdown_table(results.get("history", []))
    )
    (workdir / "results.md").write_text(text)
    return path


def plot_history(workdir, history: list[dict], title: str = "") -> pathlib.Path | None:
    """WORKDIR/history.png: loss and every @K metric per epoch."""
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    names = [k for k in history[0] if "@" in k]
    # Fixed margins, not tight_layout: its extra draw was a third of the plot's 0.4 s.
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.15, top=0.84, wspace=0.18)
    axes[0].plot(epochs, [h["loss"] for h in history], marker="o", ms=3)
    axes[0].set(xlabel="epoch", ylabel="training loss", title="loss")
    for name in names:
        axes[1].plot(epochs, [h[name] for h in history], marker="o", ms=3, label=name)
    axes[1].set(xlabel="epoch", title="evaluation")
    if names:  # rating runs have no @K metric: an empty legend only warns
        axes[1].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    path = pathlib.Path(workdir) / "history.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
