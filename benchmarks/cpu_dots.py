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

import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks.common import define_common_flags, environment, median_seconds, reject_positional
from ncf_jax.reporting import markdown_table

FLAGS = flags.FLAGS
define_common_flags(reps=5)
flags.DEFINE_integer(
    "steps", 2000, "lax.scan steps per timed call (half that for the chains)", lower_bound=2
)

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


def main(argv) -> None:
    reject_positional(argv)
    steps, reps = FLAGS.steps, FLAGS.reps
    flops = 2 * ROWS * WIDTH * WIDTH
    env, rows = environment(), []
    for kind in KINDS:
        for multi_thread in (True, False):
            seconds = xla_seconds_per_dot(kind, multi_thread, steps, reps)
            threads = "XLA, multi-threaded" if multi_thread else "XLA, one thread"
            rows.append({"dot": kind, "runtime": threads, "us": seconds * 1e6})
        seconds = numpy_seconds_per_dot(kind, steps)
        rows.append({"dot": kind, "runtime": "NumPy (OpenBLAS)", "us": seconds * 1e6})
    for row in rows:
        row["gflops"] = flops / row["us"] / 1e3
        print(json.dumps(row | env), flush=True)
    ratios = {mt: chains_ratio(mt, steps // 2, reps) for mt in (True, False)}
    print(json.dumps({"two_chains_over_one": {str(k): v for k, v in ratios.items()}} | env))
    print(f"\n{env}\n")
    columns = [f"dot ({ROWS}x{WIDTH}x{WIDTH})", "runtime", "us", "GFLOP/s"]
    cells = [(r["dot"], r["runtime"], f"{r['us']:.1f}", f"{r['gflops']:.0f}") for r in rows]
    print(markdown_table([dict(zip(columns, c, strict=True)) for c in cells], columns), end="")
    print(
        "\nTwo independent dot chains in one XLA program take "
        f"{ratios[True]:.2f}x (multi-threaded dots) / {ratios[False]:.2f}x (one thread) "
        "the time of one (2.0: run one after the other)."
    )


if __name__ == "__main__":
    app.run(main)
