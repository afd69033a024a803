"""Benchmark: training samples/s and evaluation users/s vs a roofline, per model x batch x shape.

Synthetic data of MovieLens shapes (`synthetic.shaped`, runs offline). Training runs the library's
own scanned epoch (`train.make_train_epoch`: sampling, shuffle, dense Adam steps) on a slice of
the training positives sized for `--target_samples` rows (at least one full batch), so per-sample
costs are those of a real epoch and a batch-2^20 case takes one or two steps, not a 20M-row epoch.
Each case compiles once (excluded), then reports the median of `--reps` timed calls
(`block_until_ready`).

Roofline, from the model's parameter shapes (`roofline_train`): FLOPs per sample are 2 x the
dense-layer MACs (+ the elementwise embedding products), x3 for forward + backward; bytes per
sample are the embedding rows gathered and their gradients scattered, the activations written and
read back, the epoch's sampling/shuffle arrays, and dense Adam's sweep over every parameter
(value, gradient, two moments) once per step, divided by the batch. The device's rates are
measured here: a large jitted matmul (FLOP/s) and a large in-place elementwise update (bytes/s;
in place, as the optimiser's updates are, so page faults of fresh buffers are not counted). The
estimate is max(FLOPs / rate, bytes / bandwidth) per sample; "x roofline" is measured time over
that floor (1.0 = at the limit).

  python -m benchmarks.throughput                                   # default sweep
  python -m benchmarks.throughput --shapes=ml-20m --models=neumf --batch_sizes=1048576
  python -m benchmarks.throughput --dtype=bfloat16 --out_dir=/tmp/tp
"""

from __future__ import annotations

import functools
import json
import math
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import traverse_util

from benchmarks.common import define_common_flags, git_revision, median_seconds, reject_positional
from ncf_jax import batching, evaluate, interactions, optim, reporting, train
from ncf_jax.data import synthetic
from ncf_jax.models import MODELS, create_model, scoring
from ncf_jax.tasks.ncf import NCFModelConfig as ModelConfig
from ncf_jax.tasks.ncf import make_loss_fn

# MLPerf NCF sizes (factors 64, MLP 256-256-128-64) for every model; two-tower: 128-d embeddings
# and a 128-64 tower on each side (about the same dense work per sample).
SIZES = {
    "gmf": dict(num_factors=64),
    "mlp": dict(layers=(256, 256, 128, 64)),
    "neumf": dict(num_factors=64, layers=(256, 256, 128, 64)),
    "two_tower": dict(embed_dim=128, tower_layers=(128, 64)),
}
SAMPLE_BYTES = 4 * 4 * 3  # users, items, labels, weights: written, permuted (read + write)

FLAGS = flags.FLAGS
define_common_flags(reps=3, out_dir="benchmarks/results")
flags.DEFINE_list("models", ["gmf", "mlp", "neumf", "two_tower"], "models to run")
flags.DEFINE_list("shapes", ["ml-1m", "ml-20m"], "synthetic MovieLens shapes")
flags.DEFINE_list("batch_sizes", ["256", "4096", "65536", "1048576"], "training batch sizes")
flags.register_validator(
    "batch_sizes",
    lambda sizes: all(s.isdigit() for s in sizes),
    "give whole numbers, e.g. 256,4096",
)
flags.DEFINE_integer("target_samples", 2**19, "rows per timed call")
flags.DEFINE_integer("num_neg", 4, "sampled negatives per positive")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "activation dtype of the models")
flags.DEFINE_list("eval", ["sampled", "full"], "'' to skip evaluation")
flags.DEFINE_integer("sampled_eval_users", 8192, "users of the sampled evaluation")
flags.DEFINE_integer("full_users", 256, "users of the full-catalogue evaluation")
flags.DEFINE_integer("full_chunk", 64, "users per chunk of the full-catalogue evaluator")


def measure_peaks(reps: int, dtype) -> dict:
    """Measured matmul FLOP/s (an n x n product in `dtype`) and in-place update bandwidth."""
    n = 2048
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    matmul = jax.jit(lambda a: a @ a)
    seconds, _ = median_seconds(lambda: matmul(a), reps)
    holder = [jnp.ones(256 * 2**20 // 4, jnp.float32)]  # 256 MiB, well past the caches
    update = jax.jit(lambda x: x * 1.0001 + 1.0, donate_argnums=0)

    def run():
        holder[0] = update(holder[0])
        return holder[0]

    update_s, _ = median_seconds(run, reps)
    return {"peak_flops": 2 * n**3 / seconds, "peak_bytes_s": 2 * holder[0].nbytes / update_s}


def _shapes(params):
    """([(rows, width)] embedding tables, [(in, out)] dense kernels, dense parameter count)."""
    flat = traverse_util.flatten_dict(params["params"])
    tables = [v.shape for k, v in flat.items() if k[-1] == "embedding"]
    kernels = [v.shape for k, v in flat.items() if k[-1] == "kernel"]
    dense = sum(v.size for k, v in flat.items() if k[-1] != "embedding")
    return tables, kernels, dense


def roofline_train(params, *, batch_size: int, act_bytes: int) -> dict:
    """FLOPs and bytes per training sample (see the module docstring)."""
    tables, kernels, dense = _shapes(params)
    macs = sum(i * o for i, o in kernels)
    widths = sum(w for _, w in tables)
    flops = 3 * (2 * macs + widths)
    rows = 4 * widths * 3  # gather, then the gradient's scatter-add (read + write)
    acts = 3 * act_bytes * sum(i + o for i, o in kernels)
    table_params = sum(r * w for r, w in tables)
    adam = 4 * 8 * (table_params + dense) / batch_size  # value, grad, mu, nu: read + write
    return {"flops": flops, "bytes": rows + acts + adam + SAMPLE_BYTES}


def roofline_eval(params, *, candidates: int, act_bytes: int) -> dict:
    """FLOPs and bytes per evaluated user scoring `candidates` items (forward only)."""
    tables, kernels, _ = _shapes(params)
    macs = sum(i * o for i, o in kernels)
    widths = sum(w for _, w in tables)
    per_pair = {
        "flops": 2 * macs + widths,
        "bytes": 4 * widths + act_bytes * sum(i + o for i, o in kernels) + 4,
    }
    return {k: v * candidates for k, v in per_pair.items()}


def _vs_roofline(per_unit: dict, peaks: dict, measured_rate: float) -> dict:
    floor = max(per_unit["flops"] / peaks["peak_flops"], per_unit["bytes"] / peaks["peak_bytes_s"])
    bound = "compute" if per_unit["flops"] / peaks["peak_flops"] >= floor else "memory"
    return {
        "flops_per": per_unit["flops"],
        "bytes_per": per_unit["bytes"],
        "roofline_rate": 1.0 / floor,
        "x_roofline": (1.0 / floor) / measured_rate,
        "bound": bound,
    }


def _model(name: str, data, dtype: str):
    config = ModelConfig(model=name, dtype=dtype, **SIZES[name])
    model = create_model(config, data.num_users, data.num_items)
    dummy = jnp.zeros((1,), jnp.int32)
    return config, model, model.init(jax.random.key(0), dummy, dummy)


def bench_train(name, data, batch_size, args, peaks) -> dict:
    config, model, params = _model(name, data, args.dtype)
    tx = optim.make_optimizer("adam", 1e-3)
    state = train.create_train_state(params, tx)
    steps = max(1, math.ceil(args.target_samples / batch_size))
    # Whole batches only: a padded last step would cost a full step for a few rows.
    positives = min(len(data.train_users), max(1, steps * batch_size // (1 + args.num_neg)))
    pick = np.random.default_rng(0).choice(len(data.train_users), positives, replace=False)
    indptr, indices = data.train_csr()
    device_data = interactions.from_csr(
        data.train_users[pick], data.train_items[pick], indptr, indices, data.num_items
    )
    make_batches = functools.partial(
        batching.epoch_batches, num_neg=args.num_neg, batch_size=batch_size
    )
    epoch = train.make_train_epoch(make_loss_fn(model.apply, config), tx, make_batches)
    key, holder = jax.random.key(1), [state]

    def run():
        holder[0], loss = epoch(holder[0], device_data, key)
        return loss

    seconds, compile_s = median_seconds(run, args.reps)
    samples = positives * (1 + args.num_neg)
    rate = samples / seconds
    act_bytes = jnp.dtype(args.dtype).itemsize
    roof = roofline_train(params, batch_size=batch_size, act_bytes=act_bytes)
    epoch_samples = len(data.train_users) * (1 + args.num_neg)
    return {
        "task": "train",
        "model": name,
        "shape": data.name,
        "batch_size": batch_size,
        "steps": batching.num_steps(positives, num_neg=args.num_neg, batch_size=batch_size),
        "samples": samples,
        "median_s": seconds,
        "compile_s": compile_s,
        "rate": rate,
        "epoch_s_projected": epoch_samples / rate,
        **_vs_roofline(roof, peaks, rate),
    }


def bench_eval(name, data, protocol, args, peaks) -> dict:
    config, model, params = _model(name, data, args.dtype)
    n = min(data.num_users, args.sampled_eval_users if protocol == "sampled" else args.full_users)
    users, items = data.test_users[:n], data.test_items[:n]
    if protocol == "sampled":
        fn = evaluate.make_sampled_evaluator(
            scoring.make_score_fn(model.apply), users, items, data.test_negatives[:n], k=10
        )
        candidates = 1 + data.test_negatives.shape[1]
    else:
        indptr, indices = data.train_csr()
        fn = evaluate.make_full_evaluator(
            scoring.make_score_all_fn(model.apply, data.num_items),
            users,
            items,
            indptr,
            indices,
            num_items=data.num_items,
            k=10,
            chunk_size=min(args.full_chunk, n),
        )
        candidates = data.num_items
    seconds, compile_s = median_seconds(lambda: fn(params), args.reps)
    roof = roofline_eval(params, candidates=candidates, act_bytes=jnp.dtype(args.dtype).itemsize)
    return {
        "task": f"eval-{protocol}",
        "model": name,
        "shape": data.name,
        "batch_size": candidates,
        "users": n,
        "median_s": seconds,
        "compile_s": compile_s,
        "rate": n / seconds,
        **_vs_roofline(roof, peaks, n / seconds),
    }


def plot(rows: list[dict], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    train_rows = [r for r in rows if r["task"] == "train"]
    for key in sorted({(r["model"], r["shape"]) for r in train_rows}):
        mine = [r for r in train_rows if (r["model"], r["shape"]) == key]
        mine.sort(key=lambda r: r["batch_size"])
        xs = [r["batch_size"] for r in mine]
        line = ax.plot(xs, [r["rate"] for r in mine], marker="o", label=f"{key[0]} {key[1]}")[0]
        ax.plot(xs, [r["roofline_rate"] for r in mine], ls="--", color=line.get_color(), alpha=0.5)
    ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="training samples / s")
    ax.set_title("measured (solid) vs roofline (dashed)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv):
    reject_positional(argv)
    args = FLAGS
    out = pathlib.Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    models = [m for m in args.models if m in MODELS and m in SIZES]
    batch_sizes = [int(b) for b in args.batch_sizes]
    peaks = measure_peaks(args.reps, jnp.dtype(args.dtype))
    context = {
        "device": jax.devices()[0].device_kind,
        "platform": jax.default_backend(),
        "jax": jax.__version__,
        "git": git_revision(),
        "dtype": args.dtype,
        **peaks,
    }
    print(json.dumps({"context": context, "load_avg": os.getloadavg()}), flush=True)
    rows = []
    for shape in args.shapes:
        data = synthetic.shaped(shape)
        for name in models:
            cases = [("train", b) for b in batch_sizes]
            cases += [(p, None) for p in args.eval if p]
            for task, batch_size in cases:
                if task == "train":
                    row = bench_train(name, data, batch_size, args, peaks)
                else:
                    row = bench_eval(name, data, task, args, peaks)
                row["load_avg"] = round(os.getloadavg()[0], 2)
                rows.append(row)
                print(json.dumps({**context, **row}), flush=True)
    with open(out / "throughput.jsonl", "w") as f:
        f.writelines(json.dumps({**context, **row}) + "\n" for row in rows)
    table = [
        {
            "task": r["task"],
            "model": r["model"],
            "shape": r["shape"],
            "batch / cand.": r["batch_size"],
            "rate /s": f"{r['rate']:.4g}",
            "roofline /s": f"{r['roofline_rate']:.4g}",
            "x roofline": f"{r['x_roofline']:.1f}",
            "bound": r["bound"],
            "kFLOP/unit": f"{r['flops_per'] / 1e3:.4g}",
            "kB/unit": f"{r['bytes_per'] / 1e3:.4g}",
            "load": r["load_avg"],
        }
        for r in rows
    ]
    peak = f"{peaks['peak_flops'] / 1e9:.1f} GFLOP/s, {peaks['peak_bytes_s'] / 1e9:.1f} GB/s"
    text = f"# Throughput\n\n{context['device']} ({context['platform']}), jax {context['jax']}, "
    text += f"git {context['git']}, {args.dtype}; measured peaks {peak}\n\n"
    text += "rate: training samples/s or evaluated users/s.\n\n" + reporting.markdown_table(table)
    (out / "throughput.md").write_text(text)
    plot(rows, out / "throughput.png")
    print("\n" + text)


if __name__ == "__main__":
    app.run(main)
