"""Benchmark of the data stage: parse + clean + leave-one-out + 99 test negatives per user.

    python -m benchmarks.data_pipeline                    # ML-1M shape (ratings.dat)
    python -m benchmarks.data_pipeline --cases=1m,20m     # also ML-20M shape (ratings.csv)

Synthetic files of the real shapes are written to a temporary folder by a child process, so
the peak RSS reported (resource.getrusage of this process) covers the pipeline only. Each stage
is timed separately; the median of 3 repetitions is reported as one JSON line per case on
stdout, then a table. Targets: 1M < 5 s; 20M < 60 s and < 4 GiB peak RSS.
"""

from __future__ import annotations

import json
import multiprocessing
import pathlib
import resource
import statistics
import tempfile
import time

import numpy as np
import pandas as pd
from absl import app, flags

from ncf_jax.config import DataConfig
from ncf_jax.data import dataset, readers, splits
from ncf_jax.reporting import markdown_table

# name: (rows, users, items, file name), the shapes of MovieLens 1M and 20M.
CASES = {
    "1m": (1_000_209, 6_040, 3_706, "ratings.dat"),
    "20m": (20_000_263, 138_493, 26_744, "ratings.csv"),
}
REPETITIONS = 3

FLAGS = flags.FLAGS
flags.DEFINE_list("cases", ["1m"], f"comma-separated shapes to run, of {sorted(CASES)}")
flags.register_validator(
    "cases",
    lambda cases: not set(cases) - set(CASES),
    f"unknown case; choose from {sorted(CASES)}",
)


def write_synthetic(path: pathlib.Path, rows: int, users: int, items: int) -> None:
    """Distinct random (user, item) pairs with MovieLens-like ratings and timestamps."""
    rng = np.random.default_rng(0)
    # Draw with replacement, keep distinct pairs; 1.2x covers the collisions of the 1M shape.
    pairs = np.unique(rng.integers(0, users * items, size=int(rows * 1.2), dtype=np.int64))
    pairs = rng.permutation(pairs)[:rows]
    assert len(pairs) == rows, "too few distinct pairs drawn"
    frame = pd.DataFrame(
        {
            "u": pairs // items + 1,
            "i": pairs % items + 1,
            "r": rng.integers(1, 6, rows),
            "t": rng.integers(956_703_932, 1_046_454_590, rows),
        }
    )
    if path.suffix == ".csv":
        frame.columns = ["userId", "movieId", "rating", "timestamp"]
        frame.to_csv(path, index=False)
    else:
        text = frame.to_csv(sep="\t", header=False, index=False)
        path.write_text(text.replace("\t", "::"))


def run_once(path: pathlib.Path, cfg: DataConfig) -> dict[str, float]:
    """Seconds per stage of one pass: the stages `splits.prepare` chains."""
    times, start = {}, time.perf_counter()

    def lap(name):
        nonlocal start
        now = time.perf_counter()
        times[name], start = now - start, now

    table = readers.read_movielens_ratings(path)
    lap("parse_s")
    rows, user_ids, _ = dataset.clean(table, cfg)
    lap("clean_s")
    _, _, test = dataset.split_rows(rows, cfg)
    lap("split_s")
    known = splits.sorted_csr(rows, len(user_ids))
    splits.with_negatives(
        rows.take(test),
        "test",
        known,
        num_items=int(rows.items.max()) + 1,
        num_negatives=cfg.num_test_negatives,
        rng=splits.rng_for(cfg.seed, splits.STREAM_TEST_NEGATIVES),
    )
    lap("negatives_s")
    times["total_s"] = sum(times.values())
    return times


def bench(case: str, folder: pathlib.Path) -> dict:
    rows, users, items, name = CASES[case]
    path = folder / name
    child = multiprocessing.get_context("fork").Process(
        target=write_synthetic, args=(path, rows, users, items)
    )
    child.start()
    child.join()
    if child.exitcode:
        raise RuntimeError(f"writing the synthetic {case} file failed")
    cfg = DataConfig(dataset=f"ml-{case}", num_test_negatives=99, cache=False)
    runs = [run_once(path, cfg) for _ in range(REPETITIONS)]
    result = {
        "benchmark": "data_pipeline",
        "case": case,
        "rows": rows,
        "users": users,
        "items": items,
        "repetitions": REPETITIONS,
    }
    result |= {key: round(statistics.median(r[key] for r in runs), 3) for key in runs[0]}
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result["peak_rss_mib"] = round(peak_kib / 1024, 1)
    path.unlink()
    return result


def main(argv) -> None:
    # Not benchmarks.common.reject_positional: that module imports JAX, whose ~120 MiB would
    # count in the peak RSS reported for the pipeline.
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; choose cases with --cases=1m,20m")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in FLAGS.cases:
            results.append(bench(case, pathlib.Path(tmp)))
            print(json.dumps(results[-1]), flush=True)
    keys = ["case", "parse_s", "clean_s", "split_s", "negatives_s", "total_s", "peak_rss_mib"]
    # str(): the figures are already rounded (3 decimals, RSS 1), not the table's 4 decimals.
    table = [{k: str(result[k]) for k in keys} for result in results]
    print("\n" + markdown_table(table, keys), end="")


if __name__ == "__main__":
    app.run(main)
