"""The paper in one call: every table and figure of He et al. (WWW 2017) on any dataset, beside
the paper's own numbers (`reproduce`; the script is `python -m experiments.paper`).

suite: the experiments as data (models, cells, which cells each table / figure reads);
run: training the distinct cells, resumable cell by cell; report: paper.json and paper.md;
figures: one PNG per figure; paper_values.json: the paper's tabulated values and its source.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable

from ncf_jax import lock
from ncf_jax.commands.paper import figures, report, run, suite
from ncf_jax.commands.paper.suite import (
    EXPERIMENTS,
    MODELS,
    PAPER_GRID,
    PAPER_OPTIONS,
    Cell,
    Grid,
    Model,
    experiments,
)
from ncf_jax.errors import UsageError


def plan_for(names, base: dict, grid: Grid = PAPER_GRID) -> dict[str, dict]:
    """{experiment: {point: Cell}} of the experiments `names` (in the suite's order)."""
    unknown = sorted(set(names) - set(EXPERIMENTS))
    if unknown or not names:
        raise UsageError(f"--experiments: unknown {unknown}; choose from {', '.join(EXPERIMENTS)}")
    return {name: points for name, points in experiments(base, grid).items() if name in names}


def _cell_table(workdir, plan: dict, results: dict) -> list[dict]:
    used = {}
    for name, points in plan.items():
        for cell in points.values():
            if name not in used.setdefault(cell, []):  # ItemKNN is every factor's point
                used[cell].append(name)
    rows = []
    for cell in suite.cells_in_order(plan):
        if cell.name not in results:
            continue
        seconds = run.cell_seconds(workdir, cell)
        epochs = len(results[cell.name]["history"])
        per_epoch = None if seconds is None else round(seconds / epochs, 2)
        row = {"cell": cell.name, "epochs": epochs, "seconds": seconds, "per_epoch": per_epoch}
        rows.append(row | {"used_by": used.get(cell, ["pre-training"])})
    return rows


def reproduce(data, base: dict, workdir, names=EXPERIMENTS, *, grid: Grid = PAPER_GRID,
              log: Callable[[str], None] = print, extra: dict | None = None,
              train: bool = True) -> dict:  # fmt: skip
    """Trains what `names` need on `data` with the options `base` (PAPER_OPTIONS plus the
    dataset, seeds and epochs) and writes WORKDIR/paper.json, paper.md and figure*.png.
    With `train=False` it only reports the cells already finished. Returns paper.json's
    content."""
    workdir = pathlib.Path(workdir)
    plan = plan_for(names, base, grid)
    with lock.hold(workdir):  # one suite per WORKDIR; each cell's run holds its folder too
        results = run.run_cells(workdir, plan, data, log=log, extra=extra, train=train)
        out = report.collect(plan, results, base["dataset"])
        out["cells_finished"] = [len(results), len(suite.cells_in_order(plan))]
        out["options"] = base
        out["cells"] = _cell_table(workdir, plan, results)
        (workdir / "paper.json").write_text(json.dumps(out, indent=1) + "\n")
        (workdir / "paper.md").write_text(report.markdown(out, out["cells"]))
        figures.draw(out, workdir)
    return out


__all__ = ["EXPERIMENTS", "MODELS", "PAPER_OPTIONS", "Cell", "Grid", "Model", "experiments"]
__all__ += ["PAPER_GRID", "figures"]
__all__ += ["plan_for", "report", "reproduce", "run", "suite"]
