"""Benchmark: one NCF training epoch (sampling included) and one evaluation of all users.

The issue-3 targets: NeuMF at batch 256 on ML-100K (about 495,000 samples with 4 negatives)
with the paper-default sizes and with the factor-32 sizes of the PyTorch comparison; GMF and
MLP beside it; dense and row-sparse ("lazy") Adam; shuffled and grouped batch layouts
(`--batch_layout`); ML-1M-shaped synthetic data.
Each case compiles first (excluded), then reports the median of --reps epochs, each ended by
`jax.block_until_ready`. One JSON line per case, then a markdown table.

  python -m benchmarks.ncf_epoch                                 # ncf:ml-100k if present
  python -m benchmarks.ncf_epoch --shape=ml-1m --reps=3
"""

from __future__ import annotations

import argparse
import functools
import json
import pathlib

import jax
import jax.numpy as jnp

from benchmarks.common import environment, median_seconds
from ncf_jax import batching, evaluate, interactions, optim, train
from ncf_jax.config import DataConfig, EvalConfig
from ncf_jax.data import load_dataset, synthetic
from ncf_jax.models import create_model, scoring
from ncf_jax.tasks.ncf import NCFModelConfig as ModelConfig

CASES = {  # name -> ModelConfig
    "neumf-8": ModelConfig(model="neumf", num_factors=8, layers=(64, 32, 16, 8)),
    "neumf-32": ModelConfig(model="neumf", num_factors=32, layers=(256, 128, 64, 32)),
    "gmf-32": ModelConfig(model="gmf", num_factors=32),
    "mlp-32": ModelConfig(model="mlp", layers=(256, 128, 64, 32)),
}
SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "ncf"


def bench(
    data, name: str, lazy: bool, *, batch_size: int, num_neg: int, reps: int, grouped: bool
) -> dict:
    config = CASES[name]
    model = create_model(config, data.num_users, data.num_items)
    params = model.init(jax.random.key(0), jnp.zeros(1, jnp.int32), jnp.zeros(1, jnp.int32))
    tx = optim.make_optimizer("adam", 0.001)
    layout = batching.grouped_batches if grouped else batching.epoch_batches
    make = functools.partial(layout, num_neg=num_neg, batch_size=batch_size)
    epoch = train.make_train_epoch(
        train.make_loss_fn(model.apply, config), tx, make, lazy=lazy, learning_rate=0.001
    )
    device_data = interactions.from_data(data)
    state = [train.create_train_state(params, tx, lazy=lazy)]

    def run_epoch():
        state[0], loss = epoch(state[0], device_data, jax.random.key(1))
        return loss

    seconds, _ = median_seconds(run_epoch, reps)
    score_fns = scoring.score_fns(model, data.num_items)
    evaluate_fn = evaluate.make_ranking_evaluators(*score_fns, data, EvalConfig())["test"]
    eval_seconds, _ = median_seconds(lambda: evaluate_fn(state[0].params, None), reps)
    samples = len(data.train_users) * (1 + num_neg)
    return {
        "data": data.name,
        "model": name,
        "adam": "lazy" if lazy else "dense",
        "batch_size": batch_size,
        "samples": samples,
        "epoch_seconds": round(seconds, 4),
        "samples_per_second": round(samples / seconds),
        "eval_users": len(data.test_users),
        "eval_seconds": round(eval_seconds, 4),
    }


def load(shape: str):
    if shape == "ml-100k" and (SHARED / "ml-100k.train.rating").exists():
        return load_dataset(DataConfig(dataset="ncf:ml-100k", data_dir=str(SHARED)))
    return synthetic.shaped(shape)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="ml-100k", choices=sorted(synthetic.SHAPES))
    parser.add_argument("--models", default=",".join(CASES))
    parser.add_argument("--adam", default="dense,lazy")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--num_neg", type=int, default=4)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--layouts", default="shuffled,grouped", help="batch layouts: shuffled rows, grouped"
    )
    args = parser.parse_args()
    data, env = load(args.shape), environment()
    rows = []
    cases = [
        (name, adam, layout)
        for name in args.models.split(",")
        for layout in args.layouts.split(",")
        for adam in args.adam.split(",")
    ]
    for name, adam, layout in cases:
        row = bench(
            data,
            name,
            adam == "lazy",
            batch_size=args.batch_size,
            num_neg=args.num_neg,
            reps=args.reps,
            grouped=layout == "grouped",
        )
        rows.append(row | {"layout": layout} | env)
        print(json.dumps(rows[-1]), flush=True)
    print(f"\n{env}\n")
    print("| data | model | batches | Adam | epoch s | samples/s | eval s (all users) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['data']} | {r['model']} | {r['layout']} | {r['adam']} | "
            f"{r['epoch_seconds']:.3f} | {r['samples_per_second']:,} | {r['eval_seconds']:.3f} |"
        )


if __name__ == "__main__":
    main()
