"""Benchmark: time to quality, from a cold start to a target HR@10, as NVIDIA and MLPerf time NCF.

Each run is the real command in a fresh process, timed from just before the process starts to
the log line of the first evaluation that reaches the target (the paper's protocol), and split
into phases read off the run's own log lines (absl's timestamps):

  start-up   process start -> the run's first line (Python, JAX and the scripts' imports, flags)
  data       -> "data:" (reading or loading the cached arrays, moving them to the device)
  init       -> "init:" (compiling the evaluator, the initial evaluation)
  training / evaluation   the epochs' own seconds (results.json; the first epoch's training
             includes compiling the epoch)

`--cache=cold` gives every run an empty XLA compilation cache, `warm` a cache one untimed run
filled; `both` runs each. Medians over the seeds, one JSON line per run and a markdown table
(also written to --out, with the environment).

  python -m benchmarks.time_to_quality                                # ML-100K, 3 seeds
  python -m benchmarks.time_to_quality --config=mlperf --seeds=0      # where ML-20M is present
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

from benchmarks.common import environment, reject_positional, report_head, write_outputs

# name -> (flagfile, target HR@10, metric). MLPerf's target is HR@10 >= 0.635 with 999 negatives.
CONFIGS = {
    "paper": ("experiments/configs/ml100k_neumf.flags", 0.58, "hr@10"),
    "mlperf": ("experiments/configs/ml20m_neumf_mlperf.flags", 0.635, "hr@10"),
}

FLAGS = flags.FLAGS
flags.DEFINE_enum("config", "paper", sorted(CONFIGS), "which command to time")
flags.DEFINE_string("flagfile_override", "", "another flagfile of the same task to time")
flags.DEFINE_float("target", None, "quality target (default: the config's)")
flags.DEFINE_list("seeds", ["0", "1", "2"], "one fresh process per seed")
flags.DEFINE_enum("cache", "both", ["cold", "warm", "both"], "XLA compilation cache state")
flags.DEFINE_list("extra", [], "more flags for the command, e.g. --extra=--epochs=5")
flags.DEFINE_string("workdir", "", "runs go here (default: a temporary folder)")
flags.DEFINE_string("out", "benchmarks/results/time_to_quality_cpu.md", "markdown ('' = none)")
flags.DEFINE_string("json_out", "benchmarks/results/time_to_quality_cpu.json", "JSON ('' = none)")


def log_times(log: str, day: datetime.date) -> list[tuple[float, str]]:
    """(unix time, message) of each absl line (`I1208 01:02:03.456789 pid file:line] message`)."""
    out = []
    for line in log.splitlines():
        if len(line) < 22 or line[0] not in "IWEF" or "] " not in line:
            continue
        try:
            stamp = datetime.datetime.strptime(f"{day.year}{line[1:21]}", "%Y%m%d %H:%M:%S.%f")
        except ValueError:
            continue
        out.append((stamp.timestamp(), line.split("] ", 1)[1]))
    return out


def phases(start: float, lines: list[tuple[float, str]], results: dict, metric: str, target):
    """The run's phases and its time to `target` (None: never reached), in seconds."""
    first = lambda prefix: next((t for t, m in lines if m.startswith(prefix)), None)
    epochs = [(t, m) for t, m in lines if m.startswith("epoch ")]
    history = results["history"]
    reached = next((h["epoch"] for h in history if h[metric] >= target), None)
    row = {
        "startup_s": lines[0][0] - start,
        "data_s": first("data:") - lines[0][0],
        "init_s": first("init:") - first("data:"),
        "first_epoch_train_s": history[0]["train_seconds"],
        "train_s": sum(h["train_seconds"] for h in history),
        "eval_s": sum(h["eval_seconds"] for h in history),
        "epochs": len(history),
        "reached_epoch": reached,
        "time_to_target_s": None if reached is None else epochs[reached - 1][0] - start,
        f"best_{metric}": results["best"][metric],
    }
    ndcg = metric.replace("hr@", "ndcg@")
    if ndcg in results["best"]:
        row[f"best_{ndcg}"] = results["best"][ndcg]
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}


def run_once(flagfile: str, seed: str, workdir: pathlib.Path, cache: pathlib.Path) -> dict:
    """One fresh process of the command; its wall time, phases and results."""
    command = [sys.executable, "-m", "experiments.neumf", f"--flagfile={flagfile}",
               f"--seed={seed}", f"--workdir={workdir}", *FLAGS.extra]  # fmt: skip
    env = os.environ | {"JAX_COMPILATION_CACHE_DIR": str(cache)}
    day = datetime.date.today()
    start = time.time()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    wall = time.time() - start
    if done.returncode:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        raise SystemExit(f"time_to_quality: {' '.join(command)} failed: {tail[0]}")
    results = json.loads((workdir / "results.json").read_text())
    return {"wall_s": round(wall, 3)} | phases(
        start, log_times(done.stderr, day), results, CONFIGS[FLAGS.config][2], target()
    )


def target() -> float:
    return FLAGS.target if FLAGS.target is not None else CONFIGS[FLAGS.config][1]


def main(argv) -> None:
    reject_positional(argv)
    flagfile = FLAGS.flagfile_override or CONFIGS[FLAGS.config][0]
    root = pathlib.Path(FLAGS.workdir or tempfile.mkdtemp(prefix="ttq_"))
    states = ["cold", "warm"] if FLAGS.cache == "both" else [FLAGS.cache]
    rows = []
    for state in states:
        warm_cache = root / "cache_warm"
        if state == "warm" and not warm_cache.exists():  # one untimed run fills it
            run_once(flagfile, FLAGS.seeds[0], root / "fill", warm_cache)
        for seed in FLAGS.seeds:
            cache = warm_cache if state == "warm" else root / f"cache_cold_{seed}"
            row = {"cache": state, "seed": int(seed)}
            row |= run_once(flagfile, seed, root / f"{state}_{seed}", cache)
            print(json.dumps(row), flush=True)
            rows.append(row)
    env = environment()
    report = format_report(rows, env, flagfile)
    print(report)
    record = {"command": " ".join(["python -m benchmarks.time_to_quality", *sys.argv[1:]])}
    record |= {"flagfile": flagfile, "target": target(), "environment": env, "rows": rows}
    write_outputs({FLAGS.out: report, FLAGS.json_out: json.dumps(record, indent=1) + "\n"})


COLUMNS = ["wall_s", "time_to_target_s", "startup_s", "data_s", "init_s", "first_epoch_train_s",
           "train_s", "eval_s", "reached_epoch"]  # fmt: skip


def median(values):
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def format_report(rows: list[dict], env: dict, flagfile: str) -> str:
    metric = CONFIGS[FLAGS.config][2]
    title = f"Time to {metric} >= {target()}: `{flagfile}`"
    lines = [
        *report_head(title, "benchmarks.time_to_quality", env),
        "Medians over seeds " + ", ".join(FLAGS.seeds) + " (one fresh process each); seconds.",
        "",
        "| cache | " + " | ".join(COLUMNS) + f" | best {metric} (min..max) |",
        "|" + "---|" * (len(COLUMNS) + 2),
    ]
    for state in dict.fromkeys(r["cache"] for r in rows):
        group = [r for r in rows if r["cache"] == state]
        best = [r[f"best_{metric}"] for r in group]
        cells = [str(median([r[c] for r in group])) for c in COLUMNS]
        spread = f"{median(best):.4f} ({min(best):.4f}..{max(best):.4f})"
        lines.append(f"| {state} | " + " | ".join(cells) + f" | {spread} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    app.run(main)
