"""Benchmark: N seeds in one vmapped run (`--num_seeds=N`) against one seed, same everything else.

Runs `tasks.train_and_evaluate` (NCF) twice (1 seed, then N) and reports the wall time of each run
(compilation and evaluation included, as a user sees it), the summed per-epoch training time,
and their ratios. Prints one JSON line per run, then a markdown table.

  python -m benchmarks.seeds_speed --dataset=ncf:ml-100k --data_dir=/work/shared/data/ncf
  python -m benchmarks.seeds_speed --dataset=ncf:ml-100k --data_dir=... --num_seeds=5 --epochs=5
"""

from __future__ import annotations

import json
import os
import tempfile
import time

import jax
from absl import app, flags

from benchmarks.common import git_revision, reject_positional
from ncf_jax import tasks
from ncf_jax.config import DataConfig, EvalConfig
from ncf_jax.data import load_dataset
from ncf_jax.reporting import markdown_table
from ncf_jax.tasks.ncf import NCFModelConfig as ModelConfig
from ncf_jax.tasks.ncf import NCFTrainConfig as TrainConfig

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "ncf:ml-100k", "dataset, as the experiments' --dataset")
flags.DEFINE_string(
    "data_dir",
    None,
    "dataset cache and input folder (default: $NCF_JAX_DATA, else ~/.cache/ncf_jax)",
)
flags.DEFINE_string("model", "neumf", "NCF model: gmf, mlp or neumf")
flags.DEFINE_integer("num_seeds", 5, "seeds of the vmapped run, compared with one seed")
flags.DEFINE_integer("epochs", 5, "training epochs of each run")
flags.DEFINE_integer("batch_size", 256, "training batch size")


def run(data, args, num_seeds: int) -> dict:
    model = ModelConfig(model=args.model, num_factors=8, layers=(64, 32, 16, 8))
    train = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, num_seeds=num_seeds, learning_rate=0.001
    )
    with tempfile.TemporaryDirectory() as workdir:
        start = time.perf_counter()
        configs = tasks.configs(tasks.ncf, model=model, train=train, eval=EvalConfig(top_k=10))
        results = tasks.train_and_evaluate(tasks.ncf, data, configs, workdir)
        wall = time.perf_counter() - start
    epochs = results["history"]
    return {
        "num_seeds": num_seeds,
        "wall_s": round(wall, 2),
        "train_s": round(sum(h["train_seconds"] for h in epochs), 2),
        "train_s_after_first": round(sum(h["train_seconds"] for h in epochs[1:]), 2),
        "hr@10": results["best"]["hr@10"],
        "hr@10_std": results.get("best_std", {}).get("hr@10", 0.0),
        "load_avg": os.getloadavg()[0],
    }


def main(argv):
    reject_positional(argv)
    args = FLAGS
    data = load_dataset(DataConfig(dataset=args.dataset, data_dir=args.data_dir))
    context = {"device": jax.devices()[0].device_kind, "jax": jax.__version__}
    context["git"] = git_revision()
    rows = [run(data, args, 1), run(data, args, args.num_seeds)]
    for row in rows:
        print(json.dumps({**context, "dataset": data.name, "model": args.model, **row}))
    ratio = {k: rows[1][k] / rows[0][k] for k in ("wall_s", "train_s", "train_s_after_first")}
    columns = ["seeds", "wall s", "train s", "train s (epochs 2+)", "HR@10", "load"]
    table = [
        {
            "seeds": r["num_seeds"],
            "wall s": str(r["wall_s"]),  # already rounded: not the table's 4 decimals
            "train s": str(r["train_s"]),
            "train s (epochs 2+)": str(r["train_s_after_first"]),
            "HR@10": f"{r['hr@10']:.4f} ± {r['hr@10_std']:.4f}",
            "load": f"{r['load_avg']:.2f}",
        }
        for r in rows
    ]
    ratios = ["ratio", *(f"{v:.2f}x" for v in ratio.values())]
    table.append(dict(zip(columns[:4], ratios, strict=True)))  # no HR@10 or load ratio
    print(f"\n{context}\n\n" + markdown_table(table, columns), end="")


if __name__ == "__main__":
    app.run(main)
