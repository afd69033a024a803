"""Benchmark: one NCF training epoch (sampling included) and one evaluation of all users.

The issue-3 targets: NeuMF at batch 256 on ML-100K (about 495,000 samples with 4 negatives)
with the paper-default sizes and with the factor-32 sizes of the PyTorch comparison; GMF and
MLP beside it; dense and row-sparse ("lazy") Adam; shuffled and grouped batch layouts
(`--batch_layout`); ML-1M-shaped synthetic data.
Each case compiles first (excluded), then reports the median of --reps epochs, each ended by
`jax.block_until_ready`; the cases of one model and layout run their epochs in turn. One
JSON line per case, then a markdown table.

Every model and layout is also timed, in the same run, with the floor: SGD that differentiates
only the looked-up rows and scatter-adds them back (`train.make_floor_epoch`), the least any
optimiser that touches only the batch's rows can cost. Each case's `x_floor` is its epoch
divided by that floor's, so a figure means the same on a fast or a slow, busy or idle machine.

  python -m benchmarks.ncf_epoch                                 # ncf:ml-100k if present
  python -m benchmarks.ncf_epoch --shape=ml-1m --models=neumf-8 --layouts=shuffled --reps=5
"""

from __future__ import annotations

import argparse
import functools
import json
import pathlib
import statistics
import time

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


def prepare(data, name: str, adam: str, *, batch_size: int, num_neg: int, grouped: bool):
    """(run_epoch, evaluate) of one case; `adam` is dense, lazy or floor (row-sparse SGD)."""
    config = CASES[name]
    model = create_model(config, data.num_users, data.num_items)
    params = model.init(jax.random.key(0), jnp.zeros(1, jnp.int32), jnp.zeros(1, jnp.int32))
    tx = optim.make_optimizer("adam", 0.001)
    layout = batching.grouped_batches if grouped else batching.epoch_batches
    make = functools.partial(layout, num_neg=num_neg, batch_size=batch_size)
    loss_fn = train.make_loss_fn(model.apply, config)
    if adam == "floor":
        epoch = train.make_floor_epoch(loss_fn, make, learning_rate=0.001)
    else:
        epoch = train.make_train_epoch(loss_fn, tx, make, lazy=adam == "lazy", learning_rate=0.001)
    device_data = interactions.from_data(data)
    state = [train.create_train_state(params, tx, lazy=adam == "lazy")]

    def run_epoch():
        state[0], loss = epoch(state[0], device_data, jax.random.key(1))
        return loss

    score_fns = scoring.score_fns(model, data.num_items)
    evaluate_fn = evaluate.make_ranking_evaluators(*score_fns, data, EvalConfig())["test"]
    return run_epoch, lambda: evaluate_fn(state[0].params, None)


def bench_group(data, name: str, adams, *, reps: int, **kwargs) -> list[dict]:
    """One model and layout: the floor and each `adams` case, their epochs interleaved rep by
    rep (so all see the same machine), each case's median divided by the floor's."""
    adams = ["floor"] + [a for a in adams if a != "floor"]
    cases = {adam: prepare(data, name, adam, **kwargs) for adam in adams}
    for run_epoch, _ in cases.values():  # compile, untimed
        jax.block_until_ready(run_epoch())
    times = {adam: [] for adam in adams}
    for _ in range(reps):
        for adam, (run_epoch, _) in cases.items():
            start = time.perf_counter()
            jax.block_until_ready(run_epoch())
            times[adam].append(time.perf_counter() - start)
    floor = statistics.median(times["floor"])
    samples = len(data.train_users) * (1 + kwargs["num_neg"])
    rows = []
    for adam, (_, evaluate_fn) in cases.items():
        seconds = statistics.median(times[adam])
        eval_seconds, _ = median_seconds(evaluate_fn, reps)
        rows.append(
            {
                "data": data.name,
                "model": name,
                "adam": adam,
                "batch_size": kwargs["batch_size"],
                "samples": samples,
                "epoch_seconds": round(seconds, 4),
                "x_floor": round(seconds / floor, 2),
                "epoch_times": [round(t, 4) for t in times[adam]],
                "samples_per_second": round(samples / seconds),
                "eval_users": len(data.test_users),
                "eval_seconds": round(eval_seconds, 4),
            }
        )
    return rows


def load(shape: str):
    if shape == "ml-100k" and (SHARED / "ml-100k.train.rating").exists():
        return load_dataset(DataConfig(dataset="ncf:ml-100k", data_dir=str(SHARED)))
    return synthetic.shaped(shape)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="ml-100k", choices=sorted(synthetic.SHAPES))
    parser.add_argument("--models", default=",".join(CASES))
    parser.add_argument("--adam", default="dense,lazy", help="floor is always added")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--num_neg", type=int, default=4)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--layouts", default="shuffled,grouped", help="batch layouts: shuffled rows, grouped"
    )
    args = parser.parse_args()
    data, env = load(args.shape), environment()
    rows = []
    for name in args.models.split(","):
        for layout in args.layouts.split(","):
            for row in bench_group(
                data,
                name,
                args.adam.split(","),
                reps=args.reps,
                batch_size=args.batch_size,
                num_neg=args.num_neg,
                grouped=layout == "grouped",
            ):
                rows.append(row | {"layout": layout} | env)
                print(json.dumps(rows[-1]), flush=True)
    print(f"\n{env}\n")
    print("| data | model | batches | Adam | epoch s | x floor | samples/s | eval s (all users) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['data']} | {r['model']} | {r['layout']} | {r['adam']} | "
            f"{r['epoch_seconds']:.3f} | {r['x_floor']:.2f} | {r['samples_per_second']:,} | "
            f"{r['eval_seconds']:.3f} |"
        )


if __name__ == "__main__":
    main()
