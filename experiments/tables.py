"""Writes every results table of README.md and docs/*.md from the committed results files.

  python -m experiments.tables            # rewrite the generated blocks in place
  python -m experiments.tables --check    # exit 1 if a page differs from what its data give

A page holds a generated block between `<!-- table:NAME -->` and `<!-- /table:NAME -->`; this
script replaces what lies between with `TABLES[NAME]()`, built from files under
experiments/results/ and benchmarks/results/ only, so a table cannot disagree with its data
(tests/test_tables.py asserts the committed pages equal the generated ones).
"""

from __future__ import annotations

import json
import pathlib
import re
import sys

import numpy as np

from experiments import summarise
from ncf_jax import reporting
from ncf_jax.commands import compare_report
from ncf_jax.commands.paper import report

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
BENCHMARKS = ROOT / "benchmarks" / "results"
PAGES = ("README.md", "docs/*.md")
BLOCK = re.compile(r"(<!-- table:([\w-]+) -->\n)(.*?)(<!-- /table:\2 -->)", re.S)


# ----------------------------------------------------------------------------- formatting
def _table(head: list[str], body: list[list]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(map(str, row)) + " |" for row in body]) + "\n"


def _source(*paths: pathlib.Path) -> str:
    return "Source: " + ", ".join(f"`{p.relative_to(ROOT)}`" for p in paths) + ".\n"


def _spread(values: list[float], digits: int = 3) -> str:
    """mean ± std (min..max) over seeds, as `experiments.summarise` writes it; one value alone."""
    v, f = np.asarray(values), f".{digits}f"
    if len(v) == 1:
        return f"{v[0]:{f}}"
    return f"{v.mean():{f}} ± {v.std():{f}} ({v.min():{f}}..{v.max():{f}})"


def _runs(folder: str) -> dict[str, list[dict]]:
    """{run name: [results.json of each seed]} of experiments/results/FOLDER/seed*/."""
    return summarise.collect(sorted(str(p) for p in (RESULTS / folder).glob("seed*")))


def _metric(runs: list[dict], name: str, digits: int = 3) -> str:
    return _spread([r["best"][name] for r in runs], digits)


# ----------------------------------------------------------------------------- tables
NCF_ROWS = {
    "ml100k_gmf_32": ("GMF, factor 32", "ml100k_gmf_32.flags"),
    "ml100k_mlp_32": ("MLP, factor 32 (256-128-64-32)", "ml100k_mlp_32.flags"),
    "ml100k_neumf_32": ("NeuMF, factor 32, no pre-training", "ml100k_neumf_32.flags"),
    "ml100k_neumf_pretrain_32": (
        "NeuMF, factor 32, pre-trained from the two above, then SGD",
        "ml100k_neumf_pretrain_32.flags",
    ),
    "ml100k_neumf_8": ("NeuMF, factor 8 (64-32-16-8), no pre-training", "ml100k_neumf_8.flags"),
    "ml100k_neumf_32_grouped": (
        "NeuMF, factor 32, grouped batches",
        "ml100k_neumf_32.flags --batch_layout=grouped",
    ),
}


def ncf_ml100k() -> str:
    """The NCF models on the authors' ML-100K files, 3 seeds, beside the PyTorch reference."""
    runs, path = _runs("ml100k_ncf"), RESULTS / "reference" / "pytorch_ml100k.json"
    torch = json.loads(path.read_text())["rows"]
    body = []
    for name, (label, flags) in NCF_ROWS.items():
        ref = torch.get(name, {})
        body.append([label, f"`{flags}`", _metric(runs[name], "hr@10"),
                     _metric(runs[name], "ndcg@10"), f"{ref['hr@10']:.3f}" if ref else "—",
                     f"{ref['ndcg@10']:.3f}" if ref else "—"])  # fmt: skip
    head = ["model", "flagfile", "HR@10", "NDCG@10", "PyTorch HR@10", "PyTorch NDCG@10"]
    return _table(head, body) + "\n" + _source(RESULTS / "ml100k_ncf", path)


def _paper_section(title_start: str) -> str:
    """The table(s) of one experiment of paper.md, rendered again from paper.json."""
    path = RESULTS / "paper_ml100k" / "paper.json"
    data = json.loads(path.read_text())
    text = report.markdown(data, data["cells"])
    section = text.split(f"## {title_start}", 1)[1].split("\n## ", 1)[0]
    kept = [line for line in section.splitlines()[1:] if not line.startswith("![")]
    body = "\n".join(kept).strip().split("\nThe paper gives no values")[0]
    return body.strip() + "\n\n" + _source(path)


def paper_table2() -> str:
    return _paper_section("Table 2")


def paper_figure4() -> str:
    return _paper_section("Figure 4")


def paper_tables34() -> str:
    return _paper_section("Tables 3 and 4")


def paper_cell_seconds() -> str:
    """The suite's wall-clock seconds: in all, and the most expensive cells with their share."""
    path = RESULTS / "paper_ml100k" / "paper.json"
    cells = json.loads(path.read_text())["cells"]
    total = sum(c["seconds"] for c in cells)
    top = sorted(cells, key=lambda c: -c["seconds"])[:5]
    body = [[f"all {len(cells)} cells", f"{total:.0f}", "", "100 %"]]
    body += [[f"`{c['cell']}`", f"{c['seconds']:.0f}", f"{c['per_epoch']:.2f}",
              f"{100 * c['seconds'] / total:.0f} %"] for c in top]  # fmt: skip
    return _table(["cells", "s", "s per epoch", "share"], body) + "\n" + _source(path)


def _compare(folder: str = "compare_ml100k") -> tuple[pathlib.Path, dict]:
    path = RESULTS / folder / "compare.json"
    return path, json.loads(path.read_text())


def compare_ml100k() -> str:
    """Every model under both protocols with its interval and ranks (the README's short form)."""
    path, data = _compare()
    lines = compare_report.main_table(data["rows"], data["statistics"], {})
    keep = ["model", "HR@10 (sampled)", "NDCG@10 (sampled)", "Recall@10 (full)", "NDCG@10 (full)",
            "rank (s / f)"]  # fmt: skip
    return reporting.markdown_table(lines, keep) + "\n" + _source(path)


def compare_ml100k_full() -> str:
    """The whole main table: metrics, ranks, trials, search and fit seconds."""
    path, data = _compare()
    lines = compare_report.main_table(data["rows"], data["statistics"], {})
    return reporting.markdown_table(lines, list(lines[0])) + "\n" + _source(path)


def compare_ml100k_chosen() -> str:
    """Each model's search: trials, seconds, the chosen point and the values at a range's edge."""
    path, data = _compare()
    lines = compare_report.search_table(data["rows"])
    return reporting.markdown_table(lines, list(lines[0])) + "\n" + _source(path)


def compare_ml100k_tests() -> str:
    """Paired tests of HR@10 (sampled) and Recall@10 (full) against the best and NeuMF."""
    path, data = _compare()
    parts = []
    for protocol, metric in compare_report.PRIMARY.items():
        result = data["statistics"][protocol][metric]
        lines = compare_report.tests_table(result)
        title = f"{compare_report.LABELS[metric]} ({protocol}), best: {result['best']}"
        parts.append(f"**{title}**\n\n" + reporting.markdown_table(lines, list(lines[0])))
    return "\n".join(parts) + "\n" + _source(path)


def compare_ml100k_agreement() -> str:
    """Kendall's tau between the orderings under the two protocols."""
    path, data = _compare()
    agreement = data["statistics"]["agreement"].items()
    body = [
        [name, f"{a['tau']:.3f}", f"{a['p']:.3g}"] for name, a in agreement if a["tau"] is not None
    ]
    return _table(["metric (sampled / full)", "Kendall's tau-b", "p"], body) + "\n" + _source(path)


def two_tower_ml100k() -> str:
    """The two-tower model over 3 seeds; most popular (the same for every seed) beside it."""
    runs = _runs("ml100k_two_tower")["ml100k_two_tower"]
    keys = ["hr@10", "ndcg@10", "recall@10", "mrr@10", "coverage@10"]
    popular = runs[0]["baseline"]["popularity"]
    body = [
        ["two-tower (BCE, 10 negatives, 16-d, cosine / 0.1)", *[_metric(runs, k) for k in keys]],
        ["most popular (same protocol)", *[f"{popular[k]:.3f}" for k in keys]],
    ]
    head = ["model", "HR@10", "NDCG@10", "Recall@10", "MRR@10", "Coverage@10"]
    return _table(head, body) + "\n" + _source(RESULTS / "ml100k_two_tower")


def rating_ml100k() -> str:
    runs = _runs("ml100k_rating")
    rows = (("ml100k_biased_mf", "BiasedMF"), ("ml100k_rating_mlp", "RatingMLP (not tuned)"))
    body = [
        [label, f"`{name}.flags`", _metric(runs[name], "rmse", 4), _metric(runs[name], "mae", 4)]
        for name, label in rows
    ]
    return (
        _table(["model", "flagfile", "RMSE", "MAE"], body)
        + "\n"
        + _source(RESULTS / "ml100k_rating")
    )


def clicks_ml100k() -> str:
    runs = _runs("ml100k_clicks")["ml100k_clicks"]
    keys = ["auc", "logloss", "hr@10"]
    body = [["FeatureNCF with age, gender, occupation, genres", *[_metric(runs, k) for k in keys]],
            ["the same model, ids only", *[_spread([r["baseline"]["best"][k] for r in runs])
                                           for k in keys]]]  # fmt: skip
    head = ["model", "AUC", "log loss", "HR@10 (catalogue)"]
    return _table(head, body) + "\n" + _source(RESULTS / "ml100k_clicks")


def _section(path: pathlib.Path, heading: str) -> tuple[str, str]:
    """(title, text) of the section of a results file whose heading starts with `heading`."""
    text = path.read_text().split("\n## " + heading, 1)[1].split("\n## ", 1)[0]
    title, _, body = text.partition("\n")
    return (heading + title).strip(), body


def _copied(path: pathlib.Path, heading: str, nth: int = 0, columns: list[str] | None = None):
    """The nth markdown table of a section of a results file (a benchmark's own record), as it
    stands or cut to `columns`, with its source."""
    title, text = _section(path, heading)
    table = re.findall(r"(?:^\|.*\n)+", text + "\n", re.M)[nth]
    if columns:
        rows = [[c.strip() for c in line.strip().strip("|").split("|")]
                for line in table.splitlines() if not line.startswith("|---")]  # fmt: skip
        keep = [rows[0].index(c) for c in columns]
        table = _table(columns, [[row[k] for k in keep] for row in rows[1:]])
    return table + f'\nSource: `{path.relative_to(ROOT)}`, section "{title}".\n'


def _json_lines(path: pathlib.Path, heading: str) -> tuple[str, list[dict]]:
    """(title, records) of a section that holds a benchmark's JSON lines."""
    title, text = _section(path, heading)
    records = [json.loads(line) for line in text.splitlines() if line.startswith('{"')]
    return title, records


def _first_table(path: pathlib.Path) -> str:
    return re.findall(r"(?:^\|.*\n)+", path.read_text(), re.M)[0] + "\n" + _source(path)


def ml100k_row_sparse() -> str:
    return _first_table(RESULTS / "ml100k_lazy" / "summary.md")


def floor_packed() -> str:
    return _copied(BENCHMARKS / "adam_floor_cpu.md", "2026-12-04 evening")


def row_sparse_table_size() -> str:
    return _copied(BENCHMARKS / "lazy_step_cpu.md", "`python -m benchmarks.lazy_step`")


def ncf_epoch_speed() -> str:
    """One invocation of benchmarks.ncf_epoch on the authors' ML-100K files, from its JSON lines."""
    path = BENCHMARKS / "ncf_epoch_cpu.md"
    title, records = _json_lines(path, "`python -m benchmarks.ncf_epoch --reps=5 --models=")
    body = [[r["model"], r["layout"], r["adam"], f"{r['epoch_seconds']:.2f}",
             f"{r['samples_per_second'] / 1e6:.2f} M", f"{r['eval_seconds']:.3f}"]
            for r in records]  # fmt: skip
    head = ["model", "batches", "Adam", "s per epoch", "samples/s", "s to evaluate all users"]
    return _table(head, body) + f'\nSource: `{path.relative_to(ROOT)}`, section "{title}".\n'


def baselines_speed() -> str:
    return _copied(BENCHMARKS / "baselines_cpu.md", "2026-12-04 evening")


def scale_netflix() -> str:
    """Every stage of benchmarks.scale at the Netflix scale, with the earlier run beside it."""
    now_path, earlier_path = BENCHMARKS / "scale_cpu.json", BENCHMARKS / "scale_cpu_earlier.json"
    now, earlier = (json.loads(p.read_text()) for p in (now_path, earlier_path))
    before = {r["stage"]: r for r in earlier["rows"]}
    cell = lambda row, key: "" if row.get(key) is None else f"{row[key]:g}"
    body = []
    for row in now["rows"][1:]:  # the first row is the synthetic files' generation
        old = before.get(row["stage"], {})
        failed = f" (exit {row['rc']})" if row.get("rc") else ""
        body.append([row["stage"] + failed, cell(row, "wall_s"), cell(row, "cpu_s"),
                     cell(row, "peak_gib"), cell(row, "train_s"), cell(row, "eval_s"),
                     cell(row, "per_s"), cell(old, "wall_s"), cell(old, "peak_gib")])  # fmt: skip
    env = now["environment"]
    head = (
        f"`{now['command']}`: git {env['git']}, {env['cpu']}, {env['cores']} cores, jax "
        f"{env['jax']}, load average {env['load_average']} at the end; earlier: git "
        f"{earlier['environment']['git']}, {earlier['environment']['cpu']}.\n\n"
    )
    columns = ["stage", "wall s", "CPU s", "peak GiB", "train s", "eval s", "rows/s",
               "earlier wall s", "earlier peak GiB"]  # fmt: skip
    return head + _table(columns, body) + "\n" + _source(now_path, earlier_path)


def time_to_quality() -> str:
    """benchmarks.time_to_quality: the paper's main job (cold and warm compilation cache) and
    the fast recipe (warm), medians over seeds, seconds from process start."""
    paths = [BENCHMARKS / "time_to_quality_cpu.json", BENCHMARKS / "time_to_quality_fast_cpu.json"]
    columns = ["time_to_target_s", "wall_s", "startup_s", "data_s", "init_s",
               "first_epoch_train_s", "train_s", "eval_s", "reached_epoch"]  # fmt: skip
    body, envs = [], []
    for path in paths:
        record = json.loads(path.read_text())
        envs.append(record["environment"])
        for state in dict.fromkeys(r["cache"] for r in record["rows"]):
            rows = [r for r in record["rows"] if r["cache"] == state]
            best = [r["best_hr@10"] for r in rows]
            median = lambda key, rows=rows: np.median([r[key] for r in rows if r[key] is not None])
            body.append([f"`{pathlib.Path(record['flagfile']).name}`", state, len(rows),
                         *(f"{median(c):.2f}" for c in columns[:-1]),
                         f"{median(columns[-1]):.0f}", _spread(best)])  # fmt: skip
    env = envs[0]
    head = (
        f"Target HR@10 >= {record['target']}; git {env['git']}, jax {env['jax']}, "
        f"{env['device']}, load average {env['load_average']} at the end.\n\n"
    )
    names = ["flagfile", "cache", "seeds", "to target s", "whole run s", "start-up s", "data s",
             "init s", "first epoch s", "training s", "evaluation s", "epoch reached",
             "best HR@10"]  # fmt: skip
    return head + _table(names, body) + "\n" + _source(*paths)


def throughput() -> str:
    return _first_table(BENCHMARKS / "throughput_cpu.md")


TABLES = {f.__name__: f for f in (
    ncf_ml100k, paper_table2, paper_figure4, paper_tables34, paper_cell_seconds, compare_ml100k,
    compare_ml100k_full, compare_ml100k_chosen, compare_ml100k_tests, compare_ml100k_agreement,
    two_tower_ml100k, rating_ml100k, clicks_ml100k,
    ml100k_row_sparse, floor_packed, row_sparse_table_size, ncf_epoch_speed, baselines_speed,
    scale_netflix, time_to_quality, throughput,
)}  # fmt: skip


# ----------------------------------------------------------------------------- pages
def pages() -> list[pathlib.Path]:
    return [p for pattern in PAGES for p in sorted(ROOT.glob(pattern))]


def render(text: str, *, where: str = "") -> str:
    """`text` with every generated block rewritten from its data."""

    def block(match: re.Match) -> str:
        name = match.group(2)
        if name not in TABLES:
            raise SystemExit(f"{where}: unknown table {name!r}; known: {', '.join(TABLES)}")
        return match.group(1) + TABLES[name]() + match.group(4)

    return BLOCK.sub(block, text)


def main(argv: list[str]) -> int:
    check, stale = "--check" in argv, []
    for page in pages():
        text = page.read_text()
        new = render(text, where=str(page.relative_to(ROOT)))
        if new != text:
            stale.append(str(page.relative_to(ROOT)))
            if not check:
                page.write_text(new)
    if check and stale:
        print(f"out of date: {', '.join(stale)} (run python -m experiments.tables)")
        return 1
    print(("checked " if check else "wrote ") + f"{len(pages())} pages")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
