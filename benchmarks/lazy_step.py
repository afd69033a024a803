"""Benchmark: the cost of a training step as the embedding tables grow, dense vs row-sparse Adam.

Dense Adam reads and writes every row of every table at every step, so its step grows with
the catalogue; row-sparse ("lazy") Adam differentiates the looked-up rows only
(`ncf_jax.row_sparse.adam_update`), so its step should stay flat; "floor" is row-sparse SGD
(`benchmarks.floor`), the least a step that touches only the batch's rows can cost.
NeuMF on tables of the public datasets' sizes (`synthetic.SHAPES`), `--steps` random batches
of `--batch_size` scanned in one epoch call; compile excluded, median of `--reps` calls, each
ended by `jax.block_until_ready`.

  python -m benchmarks.lazy_step
  python -m benchmarks.lazy_step --shapes=ml-20m --model=neumf-32 --adam=lazy
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
from absl import app, flags

from benchmarks import floor
from benchmarks.common import define_common_flags, environment, median_seconds, reject_positional
from benchmarks.ncf_epoch import ADAMS, CASES
from ncf_jax import optim, train
from ncf_jax.data import synthetic
from ncf_jax.models import create_model, layers
from ncf_jax.reporting import markdown_table
from ncf_jax.tasks.ncf import make_loss_fn

FLAGS = flags.FLAGS
flags.DEFINE_list("shapes", ["ml-100k", "ml-1m", "ml-20m"], "synthetic table shapes to time")
flags.register_validator(
    "shapes",
    lambda shapes: shapes and not set(shapes) - set(synthetic.SHAPES),
    f"unknown or empty --shapes; choose from {','.join(synthetic.SHAPES)}",
)
flags.DEFINE_enum("model", "neumf-8", sorted(CASES), "model of the ncf_epoch benchmark")
flags.DEFINE_list("adam", list(ADAMS), "floor: row-sparse SGD")
flags.register_validator(
    "adam",
    lambda adams: adams and not set(adams) - set(ADAMS),
    f"unknown or empty --adam; choose from {','.join(ADAMS)}",
)
flags.DEFINE_integer("steps", 500, "training steps scanned in one timed call")
flags.DEFINE_integer("batch_size", 256, "training batch size")
define_common_flags(reps=3)


def random_batches(key, num_users: int, num_items: int, *, steps: int, batch_size: int) -> dict:
    """[steps, batch_size] uniform ids, one positive in five (the 4-negative label mix)."""
    users_key, items_key = jax.random.split(key)
    shape = (steps, batch_size)
    return {
        "users": jax.random.randint(users_key, shape, 0, num_users),
        "items": jax.random.randint(items_key, shape, 0, num_items),
        "labels": (jnp.arange(steps * batch_size).reshape(shape) % 5 == 0).astype(jnp.float32),
        "weights": jnp.ones(shape, jnp.float32),
    }


def bench(shape: str, name: str, adam: str, *, steps: int, batch_size: int, reps: int) -> dict:
    num_users, num_items, _ = synthetic.SHAPES[shape]
    config = CASES[name]
    model = create_model(config, num_users, num_items)
    dummy = jnp.zeros(1, jnp.int32)
    params = model.init(jax.random.key(0), dummy, dummy)
    tables = layers.table_labels(model, dummy, dummy)
    tx = optim.make_optimizer("adam", 0.001)
    loss_fn = make_loss_fn(model.apply, config, tables)
    make = lambda key, data: random_batches(
        key, num_users, num_items, steps=steps, batch_size=batch_size
    )
    if adam == "floor":
        run = floor.make_floor_epoch(loss_fn, make, learning_rate=0.001, tables=tables)
    else:
        run = train.make_train_epoch(
            loss_fn, tx, make, row_sparse=adam == "lazy", learning_rate=0.001, tables=tables
        )
    state = [train.create_train_state(params, tx, row_sparse=adam == "lazy", tables=tables)]

    def call():
        state[0], loss = run(state[0], None, jax.random.key(1))
        return loss

    seconds, _ = median_seconds(call, reps)
    return {
        "tables": f"{shape} ({num_users:,} users, {num_items:,} items)",
        "model": name,
        "adam": adam,
        "batch_size": batch_size,
        "steps": steps,
        "us_per_step": round(seconds / steps * 1e6, 1),
        "samples_per_second": round(steps * batch_size / seconds),
    }


def main(argv) -> None:
    reject_positional(argv)
    env, rows = environment(), []
    for shape in FLAGS.shapes:
        for adam in FLAGS.adam:
            row = bench(
                shape,
                FLAGS.model,
                adam,
                steps=FLAGS.steps,
                batch_size=FLAGS.batch_size,
                reps=FLAGS.reps,
            )
            rows.append(row | env)
            print(json.dumps(rows[-1]), flush=True)
    table = [
        {
            "tables": r["tables"],
            "model": r["model"],
            "Adam": r["adam"],
            "us/step": f"{r['us_per_step']:.0f}",
            "samples/s": f"{r['samples_per_second']:,}",
        }
        for r in rows
    ]
    print(f"\n{env}\n\n" + markdown_table(table), end="")


if __name__ == "__main__":
    app.run(main)
