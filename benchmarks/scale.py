"""Benchmark: the Netflix Prize shape end to end, stage by stage: wall time and peak memory.

    python -m benchmarks.scale --scale=0.01                 # 1M ratings, a few minutes
    python -m benchmarks.scale --scale=1.0 --workdir=/big   # 100,480,507 ratings, once
    python -m benchmarks.scale --shape=ml-20m --scale=1.0   # ML-20M shape, Netflix layout

Synthetic files of the shape (`ncf_jax.data.synthetic_netflix`) are written under --workdir,
then each stage runs as its own process through the command-line scripts (or the data layer's
functions), so its peak resident memory is its own: a small Python parent waits for the stage
and reads `resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`. Stages: generate; parse (the reader
alone); prepare + cache of `netflix-probe` (ratings) and of `netflix` leave-one-out (ranking);
the cached load; one BiasedMF epoch by LazyAdam and one by row-sparse SGD, each with its
probe RMSE; one NCF epoch (row-sparse Adam, sampled evaluation); one GMF epoch then
full-catalogue ranking of every user; `recommend` for one user from the saved GMF run. Epoch
and evaluation seconds are the drivers' own (`results.json` history: train_seconds includes the
epoch's compilation). One JSON line per stage, then a markdown table (also written to --out with
the environment).
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import subprocess
import sys
import time

from absl import app, flags

from benchmarks.common import environment, report_head, write_outputs

FLAGS = flags.FLAGS
flags.DEFINE_float("scale", 0.01, "Fraction of the shape's ratings and users (1.0 = full).")
flags.DEFINE_enum("shape", "netflix", ["netflix", "ml-20m"], "Dataset shape to synthesise.")
flags.DEFINE_string("workdir", "/tmp/ncf_jax_scale", "Synthetic files, caches and runs.")
flags.DEFINE_string("out", "benchmarks/results/scale_cpu.md", "Markdown report ('' = none).")
flags.DEFINE_string(
    "json_out", "benchmarks/results/scale_cpu.json", "The run as JSON: environment and rows."
)
flags.DEFINE_integer("rating_batch", 1 << 16, "BiasedMF batch size.")
flags.DEFINE_integer("ncf_batch", 1 << 14, "NCF (NeuMF, GMF) batch size.")
flags.DEFINE_integer("ncf_num_neg", 1, "Negatives per positive in the NCF epochs.")
flags.DEFINE_list("stages", [], "Run only these stages (default: all, in order).")
flags.DEFINE_bool("reuse_files", False, "Keep synthetic files a previous run of this shape wrote.")

GIB = 1 << 30
# A parent that runs one stage and reports that stage's own peak RSS (KiB on Linux).
_WAIT = (
    "import json, resource, subprocess, sys;"
    "rc = subprocess.run(sys.argv[2:]).returncode;"
    "use = resource.getrusage(resource.RUSAGE_CHILDREN);"
    "cpu = use.ru_utime + use.ru_stime;"
    "open(sys.argv[1], 'w').write(json.dumps({'rc': rc, 'peak_kib': use.ru_maxrss, 'cpu': cpu}))"
)
_PARSE = (
    "import json, sys, time; from ncf_jax.data import netflix;"
    "files = netflix.rating_files(sys.argv[1]); t, c = time.perf_counter(), time.process_time();"
    "n = len(netflix.read_ratings(files));"
    "print(json.dumps({'rows': n, 'seconds': time.perf_counter() - t,"
    " 'cpu_seconds': time.process_time() - c}))"
)
_LOAD = (
    "import json, sys, time; from ncf_jax.config import DataConfig;"
    "from ncf_jax.data import load_dataset; t = time.perf_counter();"
    "d = load_dataset(DataConfig(dataset=sys.argv[1], data_dir=sys.argv[2], split='loo',"
    " num_test_negatives=int(sys.argv[3])));"
    "print(json.dumps({'rows': len(d.train_users), 'seconds': time.perf_counter() - t}))"
)


def run_stage(name: str, command: list[str], work: pathlib.Path) -> dict:
    """Run `command` as a grandchild; (wall seconds, peak RSS GiB, rc, last stdout line)."""
    report = work / f"{name}.rusage.json"
    log = work / f"{name}.log"
    start = time.perf_counter()
    with open(log, "w") as out:
        subprocess.run(
            [sys.executable, "-c", _WAIT, str(report), *command],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=os.environ | {"NCF_JAX_DATA": str(work / "cache")},
            check=False,
        )
    wall = time.perf_counter() - start
    usage = json.loads(report.read_text())
    lines = log.read_text().strip().splitlines()
    row = {"stage": name, "wall_s": round(wall, 2), "peak_gib": round(usage["peak_kib"] / 2**20, 2)}
    # CPU seconds (user + system, all threads): on a shared machine wall time overstates cost.
    row["cpu_s"] = round(usage["cpu"], 2)
    row |= {"rc": usage["rc"], "log": str(log)}
    if usage["rc"]:
        row["error"] = lines[-1] if lines else "no output"
    elif lines and lines[-1].startswith("{"):
        row |= json.loads(lines[-1])
    return row


def _history(workdir: pathlib.Path) -> dict:
    results = json.loads((workdir / "results.json").read_text())
    return results["history"][0]


def _script(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


# BiasedMF's learning rates by learner (batch-mean MSE, cosine decay): LazyAdam's default, and
# the largest SGD rate that did not diverge at batch 65,536 on the 0.1 shape (3.0 did).
RATING_LR = {"adam": 0.005, "sgd": 1.0}


def stages(work: pathlib.Path) -> dict:
    """name -> (command, post(row) adding derived numbers)."""
    data, py = str(work), sys.executable
    folder = str(work / "netflix")
    probe = ["--dataset=netflix-probe", f"--data_dir={data}", "--num_test_negatives=0"]
    loo = ["--dataset=netflix", f"--data_dir={data}", "--split=loo"]
    ncf = [f"--batch_size={FLAGS.ncf_batch}", f"--num_neg={FLAGS.ncf_num_neg}", "--epochs=1"]
    ncf += ["--lazy_embeddings", "--learning_rate=0.001"]
    rating = ["--model=biased_mf", "--num_factors=32", "--reg_mf=0.1", "--lr_schedule=cosine"]
    rating += [f"--batch_size={FLAGS.rating_batch}", "--epochs=1", "--lazy_embeddings"]
    runs = {n: work / "runs" / n for n in ("biased_mf", "biased_mf_sgd", "neumf", "gmf")}
    return {
        "parse": ([py, "-c", _PARSE, folder], _rate("rows", "seconds")),
        "prepare_probe": (_script("experiments.prepare", *probe, "--json"), None),
        "load_probe": ([py, "-c", _LOAD, "netflix-probe", data, "0"], None),
        "prepare_loo": (_script("experiments.prepare", *loo, "--json"), None),
        "load_loo": ([py, "-c", _LOAD, "netflix", data, "99"], None),
        **{
            f"{run}_epoch": (
                _script("experiments.rating", *probe, *rating, f"--learner={learner}",
                        f"--learning_rate={RATING_LR[learner]}", f"--workdir={runs[run]}"),
                _epoch(runs[run], "rmse"),
            )
            for run, learner in (("biased_mf", "adam"), ("biased_mf_sgd", "sgd"))
        },
        "neumf_epoch": (
            _script("experiments.neumf", *loo, *ncf, f"--workdir={runs['neumf']}"),
            _epoch(runs["neumf"], "hr"),
        ),
        "gmf_epoch_full_ranking": (
            _script(
                "experiments.gmf", *loo, *ncf, "--num_factors=32", "--eval_protocol=full",
                f"--workdir={runs['gmf']}",
            ),
            _epoch(runs["gmf"], "hr"),
        ),
        "recommend": (
            _script("experiments.recommend", f"--workdir={runs['gmf']}", "--users=ONE", "--k=10"),
            None,
        ),
    }  # fmt: skip


def _rate(count: str, seconds: str):
    def post(row):
        row["per_s"] = round(row[count] / row[seconds])

    return post


def _epoch(workdir: pathlib.Path, metric: str):
    def post(row):
        entry = _history(workdir)
        results = json.loads((workdir / "results.json").read_text())
        rows = results.get("train_rows") or row.get("train_rows")
        row |= {"train_s": entry["train_seconds"], "eval_s": entry["eval_seconds"]}
        row |= {k: round(v, 4) for k, v in entry.items() if k.startswith(metric)}
        if rows:
            row["per_s"] = round(rows / entry["train_seconds"])

    return post


def _first_user(work: pathlib.Path) -> str:
    with open(work / "netflix" / "combined_data_1.txt") as f:
        f.readline()
        return f.readline().split(",")[0]


def _cpu() -> str:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _train_rows(rows: list[dict], dataset_stage: str) -> int | None:
    for row in rows:
        if row["stage"] == dataset_stage and "train_interactions" in row:
            return row["train_interactions"]
    return None


def main(argv) -> None:
    del argv
    from ncf_jax.data import synthetic_netflix  # after flags: keeps --help fast

    work = pathlib.Path(FLAGS.workdir).expanduser()
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    marker = work / "netflix" / "shape.json"
    wanted = {"shape": FLAGS.shape, "scale": FLAGS.scale}
    if FLAGS.reuse_files and marker.is_file() and json.loads(marker.read_text())["of"] == wanted:
        shape = json.loads(marker.read_text())["sizes"]
    else:
        shape = synthetic_netflix.write_netflix(
            work / "netflix", shape=FLAGS.shape, scale=FLAGS.scale
        )
        marker.write_text(json.dumps({"of": wanted, "sizes": shape}))
    rows = [{"stage": "generate", "wall_s": round(time.perf_counter() - start, 2)} | shape]
    print(json.dumps(rows[-1]), flush=True)
    table = stages(work)
    chosen = FLAGS.stages or list(table)
    for name in chosen:
        command, post = table[name]
        command = [a.replace("--users=ONE", f"--users={_first_user(work)}") for a in command]
        row = run_stage(name, command, work)
        source = "prepare_probe" if "biased" in name else "prepare_loo"
        row["train_rows"] = _train_rows(rows, source)
        if post and not row["rc"]:
            post(row)
        rows.append(row)
        print(json.dumps(rows[-1]), flush=True)
    env = environment() | {"cpu": _cpu(), "cores": os.cpu_count()}
    report = format_report(rows, env)
    print(report)
    record = {"command": " ".join(["python -m benchmarks.scale", *sys.argv[1:]])}
    record |= {"shape": FLAGS.shape, "scale": FLAGS.scale, "environment": env}
    record["rows"] = [{k: v for k, v in row.items() if k != "log"} for row in rows]
    write_outputs({FLAGS.out: report, FLAGS.json_out: json.dumps(record, indent=1) + "\n"})


def format_report(rows: list[dict], env: dict) -> str:
    cols = ["stage", "wall_s", "cpu_s", "peak_gib", "train_s", "eval_s", "per_s", "rc"]
    lines = [
        *report_head(
            f"Scale benchmark: {FLAGS.shape} shape x {FLAGS.scale}", "benchmarks.scale", env
        ),
        "| " + " | ".join(cols) + " | notes |",
        "|" + "---|" * (len(cols) + 1),
    ]
    for row in rows:
        extra = {k: v for k, v in row.items() if k not in cols and k not in ("log",)}
        cells = [str(row.get(c, "")) for c in cols]
        lines.append("| " + " | ".join(cells) + f" | {json.dumps(extra)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    app.run(main)
