"""Benchmark: the cost of a training step as the embedding tables grow, dense vs row-sparse Adam.

Dense Adam reads and writes every row of every table at every step, so its step grows with
the catalogue; row-sparse ("lazy") Adam differentiates the looked-up rows only
(`train.lazy_update`), so its step should stay flat; "floor" is row-sparse SGD
(`train.row_sgd_update`), the least a step that touches only the batch's rows can cost.
NeuMF on tables of the public datasets' sizes (`synthetic.SHAPES`), `--steps` random batches
of `--batch_size` scanned in one epoch call; compile excluded, median of `--reps` calls, each
ended by `jax.block_until_ready`.

  python -m benchmarks.lazy_step
  python -m benchmarks.lazy_step --shapes=ml-20m --model=neumf-32 --adam=lazy
"""

from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp

from benchmarks.common import environment, median_seconds
from benchmarks.ncf_epoch import CASES
from ncf_jax import optim, train
from ncf_jax.data import synthetic
from ncf_jax.models import create_model


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
    params = model.init(jax.random.key(0), jnp.zeros(1, jnp.int32), jnp.zeros(1, jnp.int32))
    tx = optim.make_optimizer("adam", 0.001)
    loss_fn = train.make_loss_fn(model.apply, config)
    make = lambda key, data: random_batches(
        key, num_users, num_items, steps=steps, batch_size=batch_size
    )
    if adam == "floor":
        run = train.make_floor_epoch(loss_fn, make, learning_rate=0.001)
    else:
        run = train.make_train_epoch(loss_fn, tx, make, lazy=adam == "lazy", learning_rate=0.001)
    state = [train.create_train_state(params, tx, lazy=adam == "lazy")]

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="ml-100k,ml-1m,ml-20m")
    parser.add_argument("--model", default="neumf-8", choices=sorted(CASES))
    parser.add_argument("--adam", default="floor,dense,lazy", help="floor: row-sparse SGD")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    env, rows = environment(), []
    for shape in args.shapes.split(","):
        for adam in args.adam.split(","):
            row = bench(
                shape,
                args.model,
                adam,
                steps=args.steps,
                batch_size=args.batch_size,
                reps=args.reps,
            )
            rows.append(row | env)
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n{env}\n")
    print("| tables | model | Adam | us/step | samples/s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['tables']} | {r['model']} | {r['adam']} | {r['us_per_step']:.0f} | "
            f"{r['samples_per_second']:,} |"
        )


if __name__ == "__main__":
    main()
