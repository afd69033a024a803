"""Benchmark: fit and scoring time of `ncf_jax.baselines`, each beside its reference, and their
sampled HR@10 / NDCG@10 on a real dataset in the NCF format.

Synthetic data of ML-1M shape (`synthetic.shaped`, 6,040 users x 3,706 items, ~1M pairs). Each
case compiles first, then reports the median of --reps runs (`common.median_seconds`); the
reference runs in the same process right after. References: NumPy `inv(X^T X + lam I)` for
EASE^R, and the C++ library `implicit` (optional extra "bench") for iALS and ItemKNN.
Full-catalogue scoring ranks every item for every user through `evaluate.make_full_evaluator`.

  python -m benchmarks.baselines
  python -m benchmarks.baselines --quality_prefix=/work/shared/data/ncf/ml-100k --reps=3
"""

from __future__ import annotations

import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks.common import environment, median_seconds
from ncf_jax import evaluate
from ncf_jax.baselines import MODELS, ease, ials, itemknn
from ncf_jax.data import ncf_format, synthetic

FLAGS = flags.FLAGS
flags.DEFINE_integer("reps", 3, "timed runs per case (median)")
flags.DEFINE_float("lam", 500.0, "EASE^R lambda of the single fit")
flags.DEFINE_integer("grid_size", 8, "lambdas in the EASE^R grid")
flags.DEFINE_integer("factors", 64, "iALS factors")
flags.DEFINE_string("quality_prefix", None, "NCF-format files <prefix>.{train,test}.rating ...")
flags.DEFINE_bool("speed", True, "run the speed cases")


def numpy_ease(x: np.ndarray, lam: float) -> np.ndarray:
    """The reference: B from NumPy's inv(X^T X + lam I), float32."""
    p = np.linalg.inv(x.T @ x + lam * np.eye(x.shape[1], dtype=np.float32))
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b


def once(fn) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def host_median(fn, reps: int) -> float:
    """Median seconds of a host (NumPy / implicit) call, one untimed warm-up first."""
    fn()
    return float(np.median([once(fn) for _ in range(reps)]))


def ease_cases(csr, reps):
    indptr, indices, num_users, num_items = csr
    kw = {"num_users": num_users, "num_items": num_items}
    x = np.zeros((num_users, num_items), np.float32)
    x[np.repeat(np.arange(num_users), np.diff(indptr)), indices] = 1.0
    ours, _ = median_seconds(lambda: ease.fit(indptr, indices, **kw, lam=FLAGS.lam), reps)
    ref = host_median(lambda: numpy_ease(x, FLAGS.lam), reps)
    lams = np.geomspace(10.0, 5000.0, FLAGS.grid_size)
    grid, _ = median_seconds(lambda: ease.fit_grid(indptr, indices, **kw, lams=lams), reps)
    return [
        ("EASE^R fit, one lambda", ours, "NumPy inv(X^T X + lam I)", ref),
        (f"EASE^R fit_grid, {len(lams)} lambdas", grid, "EASE^R fit, one lambda", ours),
    ]


def implicit_matrix(csr):
    import scipy.sparse

    indptr, indices, num_users, num_items = csr
    data = np.ones(len(indices), np.float32)
    return scipy.sparse.csr_matrix((data, indices, indptr), shape=(num_users, num_items))


def ials_cases(csr, reps):
    import threadpoolctl
    from implicit.als import AlternatingLeastSquares
    from implicit.nearest_neighbours import CosineRecommender

    indptr, indices, num_users, num_items = csr
    kw = {"num_users": num_users, "num_items": num_items}
    data = ials.prepare(indptr, indices, **kw)
    params = ials.init(jax.random.key(0), **kw, factors=FLAGS.factors)
    cg, _ = median_seconds(lambda: ials.sweep(params, data, solver="cg", cg_steps=3), reps)
    exact, _ = median_seconds(lambda: ials.sweep(params, data, solver="cholesky"), reps)
    matrix = implicit_matrix(csr)

    def implicit_sweep():
        model = AlternatingLeastSquares(
            factors=FLAGS.factors, iterations=1, use_cg=True, random_state=0
        )
        model.fit(matrix, show_progress=False)

    # implicit asks for a one-thread BLAS (its own threads do the work); NumPy's EASE keeps two.
    with threadpoolctl.threadpool_limits(1, "blas"):
        ref = host_median(implicit_sweep, reps)
        cosine = host_median(
            lambda: CosineRecommender(K=100).fit(matrix, show_progress=False), reps
        )
    knn, _ = median_seconds(lambda: itemknn.fit(indptr, indices, **kw, k=100, shrink=0.0), reps)
    d = FLAGS.factors
    return [
        (f"iALS sweep, d={d}, CG 3 steps", cg, f"implicit ALS 1 iteration, d={d}, CG", ref),
        (f"iALS sweep, d={d}, exact Cholesky", exact, f"implicit ALS 1 iteration, d={d}, CG", ref),
        ("ItemKNN fit, k=100", knn, "implicit CosineRecommender(K=100).fit", cosine),
    ]


def scoring_cases(csr, test_items, reps):
    indptr, indices, num_users, num_items = csr
    rows = []
    for name, module in MODELS.items():
        # SLIM scores as ItemKNN (neighbour lists); 5 FISTA steps give W its shape, not its cost.
        extra = {"iterations": 5} if name == "slim" else {}
        params = module.fit(indptr, indices, num_users=num_users, num_items=num_items, **extra)
        prepare = getattr(module, "for_scoring", lambda p: p)  # timed: the evaluation runs it
        run = evaluate.make_full_evaluator(
            module.score,
            np.arange(num_users),
            test_items,
            indptr,
            indices,
            num_items=num_items,
            chunk_size=256,
        )
        seconds, _ = median_seconds(lambda r=run, p=params, f=prepare: r(f(p)), reps)
        rows.append((f"full ranking, all users, {name}", seconds, "target", 0.5))
    return rows


def speed_table(reps):
    data = synthetic.shaped("ml-1m")
    indptr, indices = data.train_csr()
    csr = (indptr, indices, data.num_users, data.num_items)
    rows = []
    for group in (
        lambda: ease_cases(csr, reps),
        lambda: ials_cases(csr, reps),
        lambda: scoring_cases(csr, data.test_items, reps),
    ):
        for case, seconds, ref_name, ref_seconds in group():
            rows.append((case, seconds, ref_name, ref_seconds))
            row = {"case": case, "s": seconds, "ref": ref_name, "ref_s": ref_seconds}
            print(json.dumps({**row, "load_average": environment()["load_average"]}), flush=True)
    header = f"ML-1M-shaped synthetic: {data.num_users} users x {data.num_items} items, "
    header += f"{len(indices):,} training pairs"
    lines = [header, "", "| case | s | reference | reference s | ratio |", "|---|---|---|---|---|"]
    for case, seconds, ref_name, ref_seconds in rows:
        ratio = seconds / ref_seconds
        lines.append(f"| {case} | {seconds:.3f} | {ref_name} | {ref_seconds:.3f} | {ratio:.2f} |")
    return lines


def quality_table(prefix):
    """Sampled 1 + 99 HR@10 / NDCG@10 of each model at its defaults."""
    paths = {role: prefix + suffix for role, suffix in ncf_format.SUFFIXES.items()}
    train, test, negatives, num_users, num_items = ncf_format.read_ncf(paths)
    from ncf_jax.data.types import csr_from_pairs

    indptr, indices = csr_from_pairs(train.users, train.items, num_users)
    mask = negatives != test.items[:, None]
    lines = [f"{prefix}: sampled 1 + 99, k = 10, pessimistic ties, default hyperparameters", ""]
    lines += ["| model | HR@10 | NDCG@10 | fit s |", "|---|---|---|---|"]
    for name, module in MODELS.items():

        def score_fn(params, users, items, module=module):
            return jnp.take_along_axis(module.score(params, users), items, axis=1)

        start = time.perf_counter()
        params = jax.block_until_ready(
            module.fit(indptr, indices, num_users=num_users, num_items=num_items)
        )
        fit_s = time.perf_counter() - start
        run = evaluate.make_sampled_evaluator(score_fn, test.users, test.items, negatives, mask)
        result = {key: float(value) for key, value in run(params).items()}
        print(json.dumps({"model": name, **result, "fit_s": fit_s}))
        lines.append(f"| {name} | {result['hr@10']:.4f} | {result['ndcg@10']:.4f} | {fit_s:.2f} |")
    return lines


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        return f"{names[0]} x {len(names)}"
    except (OSError, IndexError):
        return "unknown"


def main(argv):
    del argv
    context = {**environment(), "cpu": cpu_model()}
    lines = []
    if FLAGS.speed:
        lines += speed_table(FLAGS.reps) + [""]
    if FLAGS.quality_prefix:
        lines += quality_table(FLAGS.quality_prefix)
    print(f"\n{context}\n")
    print("\n".join(lines))


if __name__ == "__main__":
    app.run(main)
