"""Stage: results. Per-epoch history entries, best-epoch selection and the summaries of one run
or of many replicas (seeds), as `ncf_jax.loop` writes them into results.json.

results.json of a multi-seed run:
  best, best_std: mean and sample standard deviation (n - 1) over replicas of each replica's
    selected epoch's test metrics (each replica picks its own epoch by --select_epoch);
  best_epoch: the replicas' selected epochs, a list;
  seeds: one entry per replica: {"seed", "best_epoch", "best", "best_by_test", "history", ...};
  history: per-epoch means over replicas (the table and plot show these).
"""

from __future__ import annotations

import numpy as np


def selected(metric: str, select_epoch: str) -> str:
    """The history key that picks the best epoch: `metric` on test, or `valid_<metric>`."""
    return metric if select_epoch == "test" else f"valid_{metric}"


def epoch_entry(epoch, loss, metrics, train_seconds, eval_seconds) -> dict:
    """One history row (the loop has checked that the loss and metrics are finite)."""
    return {
        "epoch": epoch,
        "loss": loss,
        **metrics,
        "train_seconds": round(train_seconds, 4),
        "eval_seconds": round(eval_seconds, 4),
    }


def select_best(history: list[dict], metric: str, mode: str = "max") -> dict:
    """The history entry with the best `metric` ("max" or "min"); the earliest wins a tie."""
    sign = 1.0 if mode == "max" else -1.0
    return max(history, key=lambda h: (sign * h[metric], -h["epoch"]))


def stop_reason(
    history: list[dict], metric: str, mode: str = "max", *, stop_at=None, patience: int = 0
) -> str | None:
    """Why a run should stop after the last entry of `history`, or None: `metric` reached
    `stop_at` (>= for "max", <= for "min"), or no better `metric` in the last `patience`
    epochs (0: never).

    >>> h = [{"epoch": 1, "hr": 0.5}, {"epoch": 2, "hr": 0.6}, {"epoch": 3, "hr": 0.55}]
    >>> stop_reason(h, "hr", stop_at=0.58)
    'hr 0.6000 reached 0.58 at epoch 2'
    >>> stop_reason(h, "hr", patience=1)
    'no better hr in 1 epoch(s) after epoch 2'
    """
    if not history:
        return None
    sign = 1.0 if mode == "max" else -1.0
    if stop_at is not None and any(sign * h[metric] >= sign * stop_at for h in history):
        first = next(h for h in history if sign * h[metric] >= sign * stop_at)
        return f"{metric} {first[metric]:.4f} reached {stop_at} at epoch {first['epoch']}"
    best = select_best(history, metric, mode)["epoch"]
    if patience and history[-1]["epoch"] - best >= patience:
        return f"no better {metric} in {patience} epoch(s) after epoch {best}"
    return None


def summarise(history: list[dict], metric: str, mode: str, has_validation: bool) -> dict:
    """best_epoch and best (test metrics) by `metric` on the selection split, plus
    best_by_test, and best_by_valid when a validation split exists."""
    names = [k for k in history[0] if k not in ("epoch", "loss") and "seconds" not in k]
    test_names = [k for k in names if not k.startswith("valid_")]
    pick = lambda entry: {k: entry[k] for k in test_names}
    base = metric.removeprefix("valid_")
    by_test = select_best(history, base, mode)
    out = {"best_by_test": {"epoch": by_test["epoch"], **pick(by_test)}}
    chosen = by_test
    if has_validation:
        by_valid = select_best(history, f"valid_{base}", mode)
        out["best_by_valid"] = {"epoch": by_valid["epoch"], **pick(by_valid)}
        if metric.startswith("valid_"):
            chosen = by_valid
    return {"best_epoch": chosen["epoch"], "best": pick(chosen), **out}


def mean_entry(entries: list[dict]) -> dict:
    """The replicas' entries of one epoch, averaged (the epoch number kept)."""
    mean = lambda k: float(np.mean([e[k] for e in entries]))
    return {k: (v if k == "epoch" else mean(k)) for k, v in entries[0].items()}


def summarise_seeds(histories: list[list[dict]], seeds: list[int], summarise_one) -> dict:
    """best (means), best_std, best_epoch (a list) and seeds (per replica) from the replicas'
    histories; `summarise_one(history)` is `summarise` with the run's selection bound."""
    pairs = zip(seeds, histories, strict=True)
    per_seed = [{"seed": s, **summarise_one(h), "history": h} for s, h in pairs]
    names = list(per_seed[0]["best"])
    values = {k: np.array([p["best"][k] for p in per_seed]) for k in names}
    ddof = 1 if len(seeds) > 1 else 0
    return {
        "best_epoch": [p["best_epoch"] for p in per_seed],
        "best": {k: float(v.mean()) for k, v in values.items()},
        "best_std": {k: float(v.std(ddof=ddof)) for k, v in values.items()},
        "seeds": per_seed,
    }
