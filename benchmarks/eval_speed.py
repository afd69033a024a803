"""Benchmark: evaluation speed of the sampled (NCF) and full-catalogue evaluators.

Synthetic data of MovieLens shapes, random parameters. Each case compiles first, then reports
the median of --reps timed runs (`jax.block_until_ready` on the result dict). Prints one JSON line
per case, then a markdown table.

  python -m benchmarks.eval_speed                  # ml-100k / ml-1m shapes
  python -m benchmarks.eval_speed --full_chunk_size=512 --reps=9
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks.common import define_common_flags, environment, median_seconds, reject_positional
from ncf_jax import evaluate
from ncf_jax.data.types import csr_from_pairs
from ncf_jax.models import TwoTower, scoring
from ncf_jax.reporting import markdown_table

FLAGS = flags.FLAGS
define_common_flags(reps=5)
flags.DEFINE_integer("num_negatives", 99, "sampled negatives per test user")
flags.DEFINE_integer("sampled_chunk_size", 1024, "users per chunk of the sampled evaluator")
flags.DEFINE_integer("full_chunk_size", 256, "users per chunk of the full-catalogue evaluator")
flags.DEFINE_integer("dim", 64, "embedding size of the dot model")

ML_100K, ML_1M = (943, 1682, 100_000), (6040, 3706, 1_000_209)  # users, items, interactions


def mlp_params(key, num_users, num_items, dim=32, hidden=(64, 32, 16, 8)):
    """An NCF-style MLP: user and item embeddings concatenated, a ReLU tower, one logit."""
    keys = iter(jax.random.split(key, 2 + len(hidden) + 1))
    widths = (2 * dim, *hidden, 1)
    layers = [
        (jax.random.normal(next(keys), (a, b)) / np.sqrt(a), jnp.zeros(b))
        for a, b in zip(widths[:-1], widths[1:], strict=True)
    ]
    return {
        "users": 0.1 * jax.random.normal(next(keys), (num_users, dim)),
        "items": 0.1 * jax.random.normal(next(keys), (num_items, dim)),
        "layers": layers,
    }


def mlp_score(params, users, items):
    """[c] users, [c, m] items -> [c, m] logits."""
    u = jnp.broadcast_to(params["users"][users][:, None], (*items.shape, params["users"].shape[1]))
    x = jnp.concatenate([u, params["items"][items]], axis=-1)
    for i, (w, b) in enumerate(params["layers"]):
        x = x @ w + b
        x = jax.nn.relu(x) if i < len(params["layers"]) - 1 else x
    return x[..., 0]


def dot_score_all(params, users):
    """[c] users -> [c, num_items] dot products."""
    return params["users"][users] @ params["items"].T


def bench_sampled(shape, args, rng):
    num_users, num_items, _ = shape
    users = np.arange(num_users)
    items = rng.integers(0, num_items, num_users)
    negatives = rng.integers(0, num_items, (num_users, args.num_negatives))
    params = mlp_params(jax.random.key(0), num_users, num_items)
    run = evaluate.make_sampled_evaluator(
        mlp_score, users, items, negatives, k=10, chunk_size=args.sampled_chunk_size
    )
    seconds, compile_s = median_seconds(lambda: run(params), args.reps)
    return {
        "case": f"sampled {num_users} users x {1 + args.num_negatives} candidates, MLP",
        "chunk_size": args.sampled_chunk_size,
        "median_s": seconds,
        "compile_s": compile_s,
    }


def dot_model(num_users, num_items, args):
    """(score_all_fn, params, label): the plain dot product of random embeddings."""
    params = mlp_params(jax.random.key(1), num_users, num_items, dim=args.dim)
    return dot_score_all, params, f"dot dim {args.dim}"


def two_tower_model(num_users, num_items, args):
    """The registered TwoTower through `scoring.score_fns`: what the scripts run."""
    model = TwoTower(num_users=num_users, num_items=num_items, embed_dim=16, cosine=True)
    dummy = jnp.zeros(1, jnp.int32)
    params = model.init(jax.random.key(2), dummy, dummy)
    _, score_all_fn = scoring.score_fns(model, num_items)
    return score_all_fn, params, "TwoTower dim 16 (cosine)"


def bench_full(shape, args, rng, make_model):
    """Full-catalogue ranking of every user, random training items excluded."""
    num_users, num_items, num_interactions = shape
    train_users = rng.integers(0, num_users, num_interactions)
    train_items = rng.integers(0, num_items, num_interactions)
    indptr, indices = csr_from_pairs(train_users, train_items, num_users)
    test_users, test_items = np.arange(num_users), rng.integers(0, num_items, num_users)
    score_all_fn, params, label = make_model(num_users, num_items, args)
    run = evaluate.make_full_evaluator(
        score_all_fn,
        test_users,
        test_items,
        indptr,
        indices,
        num_items=num_items,
        k=10,
        chunk_size=args.full_chunk_size,
    )
    seconds, compile_s = median_seconds(lambda: run(params), args.reps)
    return {
        "case": f"full {num_users} users x {num_items} items, {label}",
        "chunk_size": args.full_chunk_size,
        "median_s": seconds,
        "compile_s": compile_s,
    }


def main(argv):
    reject_positional(argv)
    args, rng = FLAGS, np.random.default_rng(0)
    context = environment()
    rows = [
        bench_sampled(ML_100K, args, rng),
        bench_sampled(ML_1M, args, rng),
        bench_full(ML_100K, args, rng, dot_model),
        bench_full(ML_1M, args, rng, dot_model),
        bench_full(ML_100K, args, rng, two_tower_model),
        bench_full(ML_1M, args, rng, two_tower_model),
    ]
    for row in rows:
        print(json.dumps({**context, **row}))
    table = [
        {
            "case": row["case"],
            "chunk": row["chunk_size"],
            "median s": f"{row['median_s']:.4f}",
            "compile s": f"{row['compile_s']:.2f}",
        }
        for row in rows
    ]
    print(f"\n{context}\n\n" + markdown_table(table), end="")


if __name__ == "__main__":
    app.run(main)
