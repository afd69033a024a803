"""Collect results.json files into one markdown table (mean, spread and count per run name).

  python -m experiments.summarise runs/seed0 runs/seed1 runs/seed2

Runs are grouped by their folder name (e.g. ml100k_neumf_8), so the same configuration
trained with several seeds in parallel folders becomes one row with mean +- std and min..max.
"""

from __future__ import annotations

import collections
import json
import pathlib
import sys

import numpy as np


def collect(folders: list[str]) -> dict[str, list[dict]]:
    runs = collections.defaultdict(list)
    for folder in folders:
        for path in sorted(pathlib.Path(folder).glob("*/results.json")):
            runs[path.parent.name].append(json.loads(path.read_text()))
    return runs


def row(name: str, results: list[dict]) -> str:
    metrics = [k for k in results[0]["best"]]
    cells = []
    for metric in metrics:
        values = np.array([r["best"][metric] for r in results])
        cells.append(
            f"{values.mean():.3f} ± {values.std():.3f} ({values.min():.3f}..{values.max():.3f})"
        )
    train = np.median([h["train_seconds"] for r in results for h in r["history"][1:]] or [0.0])
    seeds = ",".join(str(r.get("seed")) for r in results)
    return f"| {name} | {' | '.join(cells)} | {train:.2f} | {seeds} |"


def main(argv: list[str]) -> None:
    runs = collect(argv[1:] or ["runs"])
    if not runs:
        raise SystemExit(f"no */results.json under {argv[1:] or ['runs']}")
    metrics = list(next(iter(runs.values()))[0]["best"])
    print("| run | " + " | ".join(metrics) + " | s per epoch (median) | seeds |")
    print("|---" * (len(metrics) + 3) + "|")
    for name, results in sorted(runs.items()):
        print(row(name, results))


if __name__ == "__main__":
    main(sys.argv)
