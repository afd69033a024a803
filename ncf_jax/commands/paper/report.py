"""Stage: the paper's report. Cell results -> paper.json (every number), paper.md (each table,
ours as mean ± std over seeds beside the paper's value and the difference) and one PNG per
figure, drawn like the paper's.

Every number is the epoch each seed selects (the loop's `best`: best test HR@10, as the authors'
code and the paper report), averaged over seeds; Figure 5's HR@K / NDCG@K are read at that
same epoch, Figure 6 is the per-epoch history (epoch 0: before training).
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

from ncf_jax.commands.paper.suite import CUTOFFS, MODELS

VALUES_FILE = pathlib.Path(__file__).with_name("paper_values.json")
METRICS = ("hr@10", "ndcg@10")
TITLES = {
    "table2": "Table 2: NeuMF with and without pre-training (HR@10 / NDCG@10)",
    "figure4": "Figure 4: HR@10 and NDCG@10 against predictive factors",
    "figure5": "Figure 5: HR@K and NDCG@K, K = 1..10 (factor 8)",
    "figure6": "Figure 6: training loss and HR@10 / NDCG@10 per iteration (factor 8)",
    "figure7": "Figure 7: HR@10 and NDCG@10 against negatives per positive (factor 16)",
    "tables34": "Tables 3 and 4: MLP with 0..4 hidden layers (HR@10 / NDCG@10)",
}


def paper_values() -> dict:
    return json.loads(VALUES_FILE.read_text())


def compared_dataset(dataset: str) -> tuple[str, bool]:
    """(the paper's dataset to compare with, whether it is this dataset): ncf:ml-1m and
    ncf:pinterest-20 are the paper's; anything else is compared with ML-1M, and says so."""
    name = dataset.removeprefix("ncf:")
    return (name, True) if name in ("ml-1m", "pinterest-20") else ("ml-1m", False)


def _stat(results: dict, metric: str) -> tuple[float, float | None]:
    std = results.get("best_std", {}).get(metric)
    return results["best"][metric], std


def _metrics(results: dict, names) -> dict:
    out = {}
    for name in names:
        mean, std = _stat(results, name)
        out |= {name: mean, f"{name}_std": std}
    return out


def _seed_histories(results: dict) -> list[list[dict]]:
    return [s["history"] for s in results["seeds"]] if "seeds" in results else [results["history"]]


def _curve(results: dict, names=("loss", *METRICS)) -> list[dict]:
    """Per-epoch means and stds over seeds; epoch 0 is the evaluation before training."""
    inits = [s.get("init", results["init"]) for s in results.get("seeds", [results])]
    rows = [{"epoch": 0, **{f"{k}": float(np.mean([i[k] for i in inits])) for k in METRICS}}]
    for entries in zip(*_seed_histories(results), strict=True):
        row = {"epoch": entries[0]["epoch"]}
        for k in names:
            values = np.array([e[k] for e in entries])
            row |= {k: float(values.mean()), f"{k}_std": float(values.std(ddof=1))
                    if len(values) > 1 else None}  # fmt: skip
        rows.append(row)
    return rows


def collect(plan: dict, results: dict[str, dict], dataset: str) -> dict:
    """paper.json's content: per experiment, one row per point with our numbers, and the
    paper's beside them where it tabulates them."""
    paper, (compared, exact) = paper_values(), compared_dataset(dataset)
    t2 = paper["table2"]["values"][compared]
    t34 = paper["tables34"]["values"][compared]
    out = {"dataset": dataset, "paper_dataset": compared, "paper_is_this_dataset": exact,
           "source": paper["source"], "experiments": {}}  # fmt: skip
    names = [f"{m}@{k}" for k in CUTOFFS for m in ("hr", "ndcg")]
    for name, points in plan.items():
        rows = []
        for point, cell in points.items():
            if cell.name not in results:  # not trained yet (a report of a suite so far)
                continue
            r = results[cell.name]
            row = {"cell": cell.name}
            if name == "table2":
                f, variant = point
                row |= {"factors": f, "pretraining": variant, **_metrics(r, METRICS)}
                row |= _beside(row, t2.get(str(f), {}).get(variant))
            elif name == "tables34":
                f, x = point
                row |= {"factors": f, "hidden_layers": x, **_metrics(r, METRICS)}
                row |= _beside(row, t34.get(str(f), {}).get(str(x)))
            elif name == "figure4":
                row |= {"model": point[0], "factors": point[1], **_metrics(r, METRICS)}
            elif name == "figure5":
                row |= {"model": point[0], **_metrics(r, [n for n in names if n in r["best"]])}
            elif name == "figure6":
                row |= {"model": point[0], "curve": _curve(r)}
            elif name == "figure7":
                row |= {"model": point[0], "num_neg": point[1], **_metrics(r, METRICS)}
            rows.append(row)
        out["experiments"][name] = {"title": TITLES[name], "rows": rows}
        if name in paper["figures"]:
            out["experiments"][name]["paper_text"] = paper["figures"][name]
    return out


def _beside(row: dict, paper: dict | None) -> dict:
    """paper_<metric> and diff_<metric> (ours - paper's); None where the paper has no value."""
    paper = paper or {}
    out = {}
    for k in METRICS:
        v = paper.get(k)
        out |= {f"paper_{k}": v, f"diff_{k}": None if v is None else row[k] - v}
    return out


# -------------------------------------------------------------------------------- markdown
def _pm(row: dict, k: str) -> str:
    std = row.get(f"{k}_std")
    return f"{row[k]:.3f}" + ("" if std is None else f" ± {std:.3f}")


def _vs(row: dict, k: str) -> list[str]:
    if row[f"paper_{k}"] is None:
        return [_pm(row, k), "—", "—"]
    return [_pm(row, k), f"{row[f'paper_{k}']:.3f}", f"{row[f'diff_{k}']:+.3f}"]


def _table(header: list[str], lines: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(map(str, line)) + " |" for line in lines]


def markdown(report: dict, cells: list[dict]) -> str:
    """paper.md: every experiment's table (and figure), then the cells and their times."""
    paper = f"paper ({report['paper_dataset']})"
    lines = [f"# He et al. 2017, reproduced on {report['dataset']}", ""]
    if not report["paper_is_this_dataset"]:
        lines += [f"The paper has no {report['dataset']} results: its {report['paper_dataset']} "
                  "numbers stand beside ours for reference, not as a target.", ""]  # fmt: skip
    lines += [f"Paper values: {report['source']}", ""]
    done, total = report.get("cells_finished", (len(cells), len(cells)))
    if done < total:
        lines += [f"**A suite so far: {done} of {total} cells finished**; points of the other "
                  "cells are left out.", ""]  # fmt: skip
    for name, exp in report["experiments"].items():
        lines += [f"## {exp['title']}", ""]
        rows = exp["rows"]
        if not rows:
            lines += ["(no cell finished yet)", ""]
            continue
        if name == "table2":
            head = ["factors", "NeuMF", "HR@10", paper, "Δ", "NDCG@10", paper, "Δ"]
            body = [[r["factors"], f"{r['pretraining']} pre-training", *_vs(r, "hr@10"),
                     *_vs(r, "ndcg@10")] for r in rows]  # fmt: skip
            lines += _table(head, body)
        elif name == "tables34":
            for metric, table in (("hr@10", "Table 3: HR@10"), ("ndcg@10", "Table 4: NDCG@10")):
                xs = sorted({r["hidden_layers"] for r in rows})
                lines += [f"{table}; each entry: ours · {paper} (Δ)", ""]
                body = []
                for f in sorted({r["factors"] for r in rows}):
                    by_x = {r["hidden_layers"]: r for r in rows if r["factors"] == f}
                    body.append([f] + ["{} · {} ({})".format(*_vs(by_x[x], metric)) for x in xs])
                lines += _table(["factors", *[f"MLP-{x}" for x in xs]], body) + [""]
        elif name == "figure5":  # one row per K, one column per model, as the plot reads
            for metric in ("hr", "ndcg"):
                ks = sorted(int(k.split("@")[1]) for k in rows[0] if k.startswith(f"{metric}@")
                            and not k.endswith("_std"))  # fmt: skip
                head = ["K", *[f"{MODELS[r['model']].label} {metric.upper()}@K" for r in rows]]
                lines += _table(head, [[k, *[_pm(r, f"{metric}@{k}") for r in rows]] for k in ks])
                lines.append("")
        elif name == "figure6":
            for r in rows:
                last = r["curve"][-1]
                lines.append(f"- {MODELS[r['model']].label}: epoch {last['epoch']} loss "
                             f"{last['loss']:.4f}, HR@10 {last['hr@10']:.3f}, NDCG@10 "
                             f"{last['ndcg@10']:.3f}")  # fmt: skip
        else:
            x = {"figure4": "factors", "figure7": "num_neg"}.get(name)
            keys = [k for k in rows[0] if "@" in k and not k.endswith("_std")]
            head = ["model", *([x] if x else []), *keys]
            body = [[MODELS[r["model"]].label, *([r[x]] if x else []),
                     *[_pm(r, k) for k in keys]] for r in rows]  # fmt: skip
            lines += _table(head, body)
        if name.startswith("figure"):
            lines += ["", f"![{name}]({name}.png)", ""]
            lines += [f"The paper gives no values for this figure; its text: {exp['paper_text']}"]
        lines.append("")
    lines += ["## Cells", "", "Each cell trained once, all seeds in one program; seconds are "
              "wall-clock (compilation and evaluation included).", ""]  # fmt: skip
    body = [[c["cell"], c["epochs"], c["seconds"], c["per_epoch"], ", ".join(c["used_by"])]
            for c in cells]  # fmt: skip
    lines += _table(["cell", "epochs", "s", "s per epoch", "used by"], body)
    return "\n".join(lines) + "\n"
