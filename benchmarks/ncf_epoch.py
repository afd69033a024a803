"""Benchmark: one NCF training epoch (sampling included) and one evaluation of all users.

The cases: NeuMF at batch 256 on ML-100K (about 495,000 samples with 4 negatives)
with the paper-default sizes and with the factor-32 sizes of the PyTorch comparison; GMF and
MLP beside it; dense and row-sparse ("lazy") Adam; shuffled and grouped batch layouts
(`--batch_layout`); ML-1M-shaped synthetic data.
Each case compiles first (excluded), then reports the median of --reps epochs, each ended by
`jax.block_until_ready`; the cases of one model and layout run their epochs in turn. One
JSON line per case, then a markdown table.

Every model and layout is also timed, in the same run, with the floor: SGD that differentiates
only the looked-up rows and scatter-adds them back (`benchmarks.floor`), the least any
optimiser that touches only the batch's rows can cost. Each case's `x_floor` is its epoch
divided by that floor's, so a figure means the same on a fast or a slow, busy or idle machine.

  python -m benchmarks.ncf_epoch                                 # ncf:ml-100k if present
  python -m benchmarks.ncf_epoch --shape=ml-1m --models=neumf-8 --layouts=shuffled --reps=5
"""

from __future__ import annotations

import functools
import json
import pathlib
import statistics
import time

import jax
import jax.numpy as jnp
from absl import app, flags, logging

from benchmarks import floor
from benchmarks.common import define_common_flags, environment, median_seconds, reject_positional
from ncf_jax import batching, evaluate, interactions, optim, train
from ncf_jax.config import DataConfig, EvalConfig
from ncf_jax.data import load_dataset, synthetic
from ncf_jax.models import create_model, layers, scoring
from ncf_jax.reporting import markdown_table
from ncf_jax.tasks.ncf import NCFModelConfig as ModelConfig
from ncf_jax.tasks.ncf import make_loss_fn

CASES = {  # name -> ModelConfig
    "neumf-8": ModelConfig(model="neumf", num_factors=8, layers=(64, 32, 16, 8)),
    "neumf-32": ModelConfig(model="neumf", num_factors=32, layers=(256, 128, 64, 32)),
    "gmf-32": ModelConfig(model="gmf", num_factors=32),
    "mlp-32": ModelConfig(model="mlp", layers=(256, 128, 64, 32)),
}
SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "ncf"
ADAMS, LAYOUTS = ("floor", "dense", "lazy"), ("shuffled", "grouped")

FLAGS = flags.FLAGS


def define_flags() -> None:
    """This script's flags; called only when it runs, as `benchmarks.lazy_step` imports CASES
    and defines flags of the same names (--adam, --batch_size, --reps) with its own defaults."""
    help_shape = "synthetic MovieLens shape; ml-100k reads the NCF files when present"
    flags.DEFINE_enum("shape", "ml-100k", sorted(synthetic.SHAPES), help_shape)
    flags.DEFINE_list("models", list(CASES), f"models to time, of {', '.join(CASES)}")
    flags.DEFINE_list("adam", ["dense", "lazy"], "floor is always added")
    flags.DEFINE_integer("batch_size", 256, "training batch size")
    flags.DEFINE_integer("num_neg", 4, "sampled negatives per positive")
    define_common_flags(reps=3)
    flags.DEFINE_list("layouts", list(LAYOUTS), "batch layouts: shuffled rows, grouped")
    for name, names in [("models", CASES), ("adam", ADAMS), ("layouts", LAYOUTS)]:
        flags.register_validator(
            name,  # an empty --adam is the floor alone; empty --models or --layouts run nothing
            lambda given, names=names, name=name: (
                (given or name == "adam") and not set(given) - set(names)
            ),
            f"unknown or empty --{name}; choose from {','.join(names)}",
        )


def prepare(data, name: str, adam: str, *, batch_size: int, num_neg: int, grouped: bool):
    """(run_epoch, evaluate) of one case; `adam` is dense, lazy or floor (row-sparse SGD)."""
    config = CASES[name]
    model = create_model(config, data.num_users, data.num_items)
    dummy = jnp.zeros(1, jnp.int32)
    params = model.init(jax.random.key(0), dummy, dummy)
    tables = layers.table_labels(model, dummy, dummy)
    tx = optim.make_optimizer("adam", 0.001)
    layout = batching.grouped_batches if grouped else batching.epoch_batches
    make = functools.partial(layout, num_neg=num_neg, batch_size=batch_size)
    loss_fn = make_loss_fn(model.apply, config, tables)
    if adam == "floor":
        epoch = floor.make_floor_epoch(loss_fn, make, learning_rate=0.001, tables=tables)
    else:
        epoch = train.make_train_epoch(
            loss_fn, tx, make, row_sparse=adam == "lazy", learning_rate=0.001, tables=tables
        )
    device_data = interactions.from_data(data)
    state = [train.create_train_state(params, tx, row_sparse=adam == "lazy", tables=tables)]

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
    for adam, (run_epoch, _) in cases.items():  # compile, untimed
        start = time.perf_counter()
        jax.block_until_ready(run_epoch())
        logging.info(
            "%s %s: compile and first epoch %.1f s", name, adam, time.perf_counter() - start
        )
    times = {adam: [] for adam in adams}
    for rep in range(reps):
        for adam, (run_epoch, _) in cases.items():
            start = time.perf_counter()
            jax.block_until_ready(run_epoch())
            times[adam].append(time.perf_counter() - start)
            # Each epoch as it ends: a long run stopped early still leaves its times behind.
            logging.info("%s %s: epoch %d of %d %.4f s", name, adam, rep + 1, reps, times[adam][-1])
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


def main(argv) -> None:
    reject_positional(argv)
    data, env = load(FLAGS.shape), environment()
    rows = []
    for name in FLAGS.models:
        for layout in FLAGS.layouts:
            for row in bench_group(
                data,
                name,
                FLAGS.adam,
                reps=FLAGS.reps,
                batch_size=FLAGS.batch_size,
                num_neg=FLAGS.num_neg,
                grouped=layout == "grouped",
            ):
                rows.append(row | {"layout": layout} | env)
                print(json.dumps(rows[-1]), flush=True)
    table = [
        {
            "data": r["data"],
            "model": r["model"],
            "batches": r["layout"],
            "Adam": r["adam"],
            "epoch s": f"{r['epoch_seconds']:.3f}",
            "x floor": f"{r['x_floor']:.2f}",
            "samples/s": f"{r['samples_per_second']:,}",
            "eval s (all users)": f"{r['eval_seconds']:.3f}",
        }
        for r in rows
    ]
    print(f"\n{env}\n\n" + markdown_table(table), end="")


if __name__ == "__main__":
    define_flags()
    app.run(main)
