"""Benchmark: how fast the CPU runs the NCF tower's batch-256 dots, and whether two cores help.

The factor-32 NeuMF epoch on ML-100K is bound by the MLP tower's small matrix products. This
measures, for the first layer's shapes ([255, 128] x [128, 128]):
- the rate of each of the training step's three kinds of dot (forward `x @ w`, input
  gradient `g @ w.T`, weight gradient `x.T @ g`) under XLA, with its dots multi-threaded
  (the default) and single-threaded, and under NumPy (OpenBLAS) for reference;
- whether XLA runs two independent chains of such dots at once: the time of two chains in
  one program over the time of one (2.0 means one after the other, 1.0 fully parallel).
Each XLA figure is the median of `--reps` calls of a `--steps`-step `lax.scan`, compiled first.

  python -m benchmarks.cpu_dots
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import environment, median_seconds

ROWS, WIDTH = 255, 128  # a batch-256 grouped step's item rows; factor 32's first-layer width
KINDS = {  # name -> (x, w) -> product with the x.shape[0] x WIDTH x WIDTH multiply-adds
    "forward x @ w": lambda x, w: x @ w,
    "input grad g @ w.T": lambda x, w: x @ w.T,
    "weight grad x.T @ g": lambda x, w: x.T @ x[:, : w.shape[1]],
}


def _options(multi_thread: bool) -> dict:
    return {"xla_cpu_experimental_ynn_fusion_type": "", "xla_cpu_multi_thread_eigen": multi_thread}


def xla_seconds_per_dot(kind: str, multi_thread: bool, steps: int, reps: int) -> float:
    dot = KINDS[kind]

    def run(xs, w):
        def body(carry, x):
            return carry + dot(x + carry, w)[0, 0] * 1e-9, None  # each step depends on the last

        return jax.lax.scan(body, jnp.zeros(()), xs)[0]

    xs, w = jnp.full((steps, ROWS, WIDTH), 0.01), jnp.full((WIDTH, WIDTH), 0.01)
    fn = jax.jit(run, compiler_options=_options(multi_thread))
    return median_seconds(lambda: fn(xs, w), reps)[0] / steps


def numpy_seconds_per_dot(kind: str, steps: int) -> float:
    x, w = np.full((ROWS, WIDTH), 0.01, np.float32), np.full((WIDTH, WIDTH), 0.01, np.float32)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(steps):
            KINDS[kind](x, w)
        times.append((time.perf_counter() - start) / steps)
    return statistics.median(times)


def chains_ratio(multi_thread: bool, steps: int, reps: int, depth: int = 3) -> float:
    """Seconds of two independent `depth`-dot chains per step over seconds of one."""

    def chain(x, w):
        for _ in range(depth):
            x = jnp.tanh(x @ w)
        return x[0, 0]

    def make(num_chains):
        def run(xs, w):
            def body(carry, x):
                out = sum(chain(x[i], w + carry * (i + 1)) for i in range(num_chains))
                return carry + out * 1e-9, None

            return jax.lax.scan(body, jnp.zeros(()), xs)[0]

        return jax.jit(run, compiler_options=_options(multi_thread))

    xs, w = jnp.full((steps, 2, ROWS, WIDTH), 0.01), jnp.full((WIDTH, WIDTH), 0.01)
    one, two = make(1), make(2)
    return median_seconds(lambda: two(xs, w), reps)[0] / median_seconds(lambda: one(xs, w), reps)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    flops = 2 * ROWS * WIDTH * WIDTH
    env, rows = environment(), []
    for kind in KINDS:
        for multi_thread in (True, False):
            seconds = xla_seconds_per_dot(kind, multi_thread, args.steps, args.reps)
            threads = "XLA, multi-threaded" if multi_thread else "XLA, one thread"
            rows.append({"dot": kind, "runtime": threads, "us": seconds * 1e6})
        seconds = numpy_seconds_per_dot(kind, args.steps)
        rows.append({"dot": kind, "runtime": "NumPy (OpenBLAS)", "us": seconds * 1e6})
    for row in rows:
        row["gflops"] = flops / row["us"] / 1e3
        print(json.dumps(row | env), flush=True)
    ratios = {mt: chains_ratio(mt, args.steps // 2, args.reps) for mt in (True, False)}
    print(json.dumps({"two_chains_over_one": {str(k): v for k, v in ratios.items()}} | env))
    print(f"\n{env}\n")
    print(f"| dot ({ROWS}x{WIDTH}x{WIDTH}) | runtime | us | GFLOP/s |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['dot']} | {r['runtime']} | {r['us']:.1f} | {r['gflops']:.0f} |")
    print(
        "\nTwo independent dot chains in one XLA program take "
        f"{ratios[True]:.2f}x (multi-threaded dots) / {ratios[False]:.2f}x (one thread) "
        "the time of one (2.0: run one after the other)."
    )


if __name__ == "__main__":
    main()
