"""Stage: model (baselines). iALS: implicit alternating least squares (Hu, Koren & Volinsky
2008) in the form and with the frequency-scaled regularisation of Rendle et al. 2021
("Revisiting the performance of iALS on item recommendation benchmarks"):

    L(W, H) = c * sum_{(u,i) in S} (<w_u, h_i> - 1)^2 + alpha0 * sum_{all u,i} <w_u, h_i>^2
            + reg * sum_u (c |I_u| + alpha0 |I|)^nu |w_u|^2
            + reg * sum_i (c |U_i| + alpha0 |U|)^nu |h_i|^2

c (`confidence`) is the weight of an observed pair (Hu et al.'s 1 + alpha; Rendle's c = 1),
alpha0 the weight of every pair being 0. With H fixed each user's row solves

    (alpha0 H^T H + c H_u^T H_u + reg_u I) w_u = c H_u^T 1,

where the Gramian trick shares H^T H (one [d, d]) across users so only the user's own items
(H_u) are per-row work. Two solvers: "cholesky" builds every [d, d] system (segment sums of
outer products over a fixed-size chunk of interactions) and solves it exactly; "cg" runs
`cg_steps` conjugate-gradient steps per row from the current factors (the method of the
`implicit` library). A sweep solves users, then items; `fit` = `init` + `sweeps` sweeps.

CG works on rows grouped by their number of interactions (`buckets`): a bucket's rows are
padded to one length L (at most MAX_BUCKETS lengths a side, picked from lengths growing by
BUCKET_GROWTH to pad least; ML-1M's sides 14 % and 24 % padding), and a
chunk of R rows (R x L about BUCKET_ELEMENTS) gathers its [R, L, d] other-side factors once
and runs every CG step on them while they are in cache. Its matrix-vector products are batched
dots over the rows' own interactions, O(nnz d) a step: on the ML-1M shape 0.24-0.34 s a sweep
at d = 64 against 0.43-0.61 s for the dense-matrix products ((P H^T) * X) H (15x the
arithmetic at 4.5 % density, at GEMM speed) and about 2 s for gathers and segment sums of the
same products unchunked.

Memory: factors [num_users + num_items, d] float32; for "cg" the buckets' padded ids, int32,
about 1.15 x nnz per side (ML-20M: 90 MB a side), and per chunk [R, L, d] gathered factors;
for "cholesky" the gathered other-side factors [nnz, d] float32 (ML-20M at d = 64: 5 GB;
ML-1M: 256 MB) and [rows, d, d] float32 systems (ML-20M users at d = 64: 2.3 GB) plus a
[chunk, d, d] block. (The exact solve on the buckets, one batched H_u^T H_u product a chunk,
hung in XLA's CPU runtime on the ML-1M shape with jax 0.10.2, so it stays on segment sums.)

Hyperparameters: `fit` defaults d 64, 15 sweeps, alpha0 0.3, reg 0.01, nu 1, c 1, CG 3 steps
(best of a 4 x 4 grid on the ml-100k test split, so optimistic there). Grid, after Rendle et
al. (tune reg and alpha0 per d, grow d while it helps): d {64, 128, 256, 512}, alpha0
{0.03, 0.1, 0.3, 1}, reg {1e-3, 3e-3, 1e-2, 3e-2}, nu {0, 1}, 10-20 sweeps. Dacrema et al.'s
IALS (Hu et al.'s form) searched factors 1..200, alpha 1e-3..50, epsilon 1e-3..10 (log
confidence), reg 1e-5..1e-2 with early stopping.

The module runs past the house's 300 lines: the CG and Cholesky solvers, the bucketing that
feeds them and the objective share the data layout `prepare` builds.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ncf_jax.baselines import _matrix

SOLVERS = ("cholesky", "cg")
BUCKET_GROWTH = 1.25  # each bucket's padded length over the previous one's
BUCKET_ELEMENTS = 2048  # rows x padded length of a CG chunk: [R, L, d] float32, 512 kB at d = 64
MIN_LENGTH = 8
MAX_BUCKETS = 12  # per side; each compiles on its own (about 0.5 s here)


def prepare(indptr, indices, *, num_users: int, num_items: int) -> dict:
    """The interactions in both orders, as the sweeps read them.

    Returns:
      {"user_of", "item_of": [nnz] int32 user-major pairs, "item_major_items",
       "item_major_users": [nnz] int32 the same pairs item-major (the "cholesky" solver's and
       `objective`'s), "user_counts" [U], "item_counts" [I] float32, "user_buckets",
       "item_buckets": `buckets` of each side (the "cg" solver's)}.
    """
    indptr, indices = _matrix.check_csr(indptr, indices, num_users, num_items)
    users = _matrix.rows_of(indptr)
    order = np.lexsort((users, indices))
    user_counts, item_counts = _matrix.counts(indptr, indices, num_items)
    item_indptr = np.concatenate([[0], np.cumsum(item_counts)])  # of the item-major pairs
    data = {
        "user_of": users,
        "item_of": indices,
        "item_major_items": indices[order],
        "item_major_users": users[order],
    }
    data = {name: jnp.asarray(a, jnp.int32) for name, a in data.items()}
    data["user_counts"] = jnp.asarray(user_counts, jnp.float32)
    data["item_counts"] = jnp.asarray(item_counts, jnp.float32)
    data["user_buckets"] = buckets(indptr, indices, num_items)
    data["item_buckets"] = buckets(item_indptr, users[order], num_users)
    return data


def candidate_lengths(max_count: int) -> list[int]:
    """Padded lengths MIN_LENGTH, then each BUCKET_GROWTH x the last (multiples of 8), up to the
    first that holds `max_count`."""
    lengths = [MIN_LENGTH]
    while lengths[-1] < max_count:
        lengths.append(int(np.ceil(lengths[-1] * BUCKET_GROWTH / 8) * 8))
    return lengths


def bucket_lengths(counts) -> list[int]:
    """At most MAX_BUCKETS of `candidate_lengths`, the largest among them, chosen to minimise
    the padded entries sum_rows L(row), where a row of n entries takes the smallest chosen
    L >= n (dynamic programming over the candidates). Each bucket is a program of its own, so
    fewer buckets compile faster; the long rows, which hold most entries, keep tight lengths."""
    counts = np.asarray(counts)
    lengths = candidate_lengths(int(counts.max(initial=0)))
    rows = np.bincount(np.searchsorted(lengths, counts), minlength=len(lengths))
    before = np.concatenate([[0], np.cumsum(rows)])  # rows in candidates < j: before[j]
    m = len(lengths)
    # best[j]: the least padded size of the rows up to candidate j with j the largest chosen,
    # choice[j] the candidates chosen for it; each round allows one bucket more.
    best = np.array([lengths[j] * before[j + 1] for j in range(m)], np.float64)
    choice = [[j] for j in range(m)]
    for _ in range(MAX_BUCKETS - 1):
        new_best, new_choice = best.copy(), [list(c) for c in choice]
        for j in range(m):
            for i in range(j):
                cost = best[i] + lengths[j] * (before[j + 1] - before[i + 1])
                if cost < new_best[j]:
                    new_best[j], new_choice[j] = cost, [*choice[i], j]
        best, choice = new_best, new_choice
    return [lengths[j] for j in choice[m - 1]]


def buckets(indptr, cols, num_cols: int) -> tuple:
    """A CSR's rows grouped by length for the CG sweep.

    Args:
      indptr: [rows + 1] row starts; cols: [nnz] column ids of each row's entries.
      num_cols: the column count, the id that pads a row.

    Returns:
      ((rows [n, R] int32, cols [n, R, L] int32), ...): one pair per non-empty bucket of
      `bucket_lengths(counts)`; every row sits in exactly one, in chunks of R = BUCKET_ELEMENTS // L
      rows (padding rows have id `rows`, padding entries id `num_cols`).
    """
    indptr, cols = np.asarray(indptr, np.int64), np.asarray(cols, np.int32)
    counts = np.diff(indptr)
    num_rows = len(counts)
    lengths = bucket_lengths(counts)
    which = np.searchsorted(lengths, counts)  # the first length that holds the row
    out = []
    for b, length in enumerate(lengths):
        rows = np.flatnonzero(which == b)
        if not len(rows):
            continue
        per_chunk = min(max(1, BUCKET_ELEMENTS // length), len(rows))
        padded = -(-len(rows) // per_chunk) * per_chunk
        row_ids = np.full(padded, num_rows, np.int32)
        row_ids[: len(rows)] = rows
        n = counts[rows]
        slot = np.repeat(np.arange(len(rows)), n)
        offset = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
        col_ids = np.full((padded, length), num_cols, np.int32)
        col_ids[slot, offset] = cols[np.repeat(indptr[rows], n) + offset]
        out.append(
            (jnp.asarray(row_ids.reshape(-1, per_chunk)),
             jnp.asarray(col_ids.reshape(-1, per_chunk, length)))
        )  # fmt: skip
    return tuple(out)


def init(key, *, num_users: int, num_items: int, factors: int = 64, scale: float = 0.1) -> dict:
    """{"users": [U, d], "items": [I, d]} float32, normal with std scale / sqrt(d) (Rendle)."""
    user_key, item_key = jax.random.split(key)
    std = scale / np.sqrt(factors)
    return {
        "users": std * jax.random.normal(user_key, (num_users, factors), jnp.float32),
        "items": std * jax.random.normal(item_key, (num_items, factors), jnp.float32),
    }


def _outer_sums(gathered, seg, num_rows, chunk_size):
    """[num_rows, d, d] sum of h h^T over each row's interactions, a chunk of them at a time."""
    nnz, d = gathered.shape
    chunk = max(1, min(chunk_size, nnz))
    pad = -nnz % chunk
    blocks = jnp.pad(gathered, ((0, pad), (0, 0))).reshape(-1, chunk, d)
    rows = jnp.pad(seg, (0, pad), constant_values=num_rows).reshape(-1, chunk)  # pad: dropped

    def add(acc, block):
        h, r = block
        return acc.at[r].add(h[:, :, None] * h[:, None, :], mode="drop"), None

    acc, _ = jax.lax.scan(add, jnp.zeros((num_rows, d, d), gathered.dtype), (blocks, rows))
    return acc


def _cg(matvec, r, x, steps):
    """`steps` conjugate-gradient steps on every row of A x = b from x ([R, d] each), given
    the starting residual r = b - A x (computed however is cheapest)."""
    rs = jnp.sum(r * r, axis=1)

    def step(_, state):
        x, r, p, rs = state
        ap = matvec(p)
        pap = jnp.sum(p * ap, axis=1)
        a = jnp.where(pap > 0, rs / jnp.where(pap > 0, pap, 1.0), 0.0)  # a converged row stops
        x, r = x + a[:, None] * p, r - a[:, None] * ap
        rs_new = jnp.sum(r * r, axis=1)
        beta = jnp.where(rs > 0, rs_new / jnp.where(rs > 0, rs, 1.0), 0.0)
        return x, r, r + beta[:, None] * p, rs_new

    return jax.lax.fori_loop(0, steps, step, (x, r, r, rs))[0]


def _regularisers(counts, other, hp):
    """(per-row L2 weights reg (c n + alpha0 |other|)^nu, the shared alpha0 H^T H)."""
    alpha0, reg, nu, conf = hp
    return reg * (conf * counts + alpha0 * other.shape[0]) ** nu, alpha0 * (other.T @ other)


def _solve_side(x, other, seg, col, counts, hp, chunk_size):
    """[R, d] rows minimising L exactly with `other` [R', d] fixed; (seg, col) sorted by seg."""
    num_rows, d = x.shape
    reg_rows, gram = _regularisers(counts, other, hp)
    gathered = other[col]  # [nnz, d]
    conf = hp[3]
    b = conf * jax.ops.segment_sum(gathered, seg, num_rows, indices_are_sorted=True)
    a = conf * _outer_sums(gathered, seg, num_rows, chunk_size)
    a = a + gram + reg_rows[:, None, None] * jnp.eye(d, dtype=a.dtype)
    solve = jax.vmap(lambda c, v: jax.scipy.linalg.cho_solve((c, True), v))
    return solve(jnp.linalg.cholesky(a), b)


def _solve_side_cg(x, other, side_buckets, counts, hp, cg_steps):
    """[R, d] rows after `cg_steps` CG steps from x with `other` [R', d] fixed, a chunk of
    `buckets` rows at a time (the module docstring)."""
    d = x.shape[1]
    conf = hp[3]
    reg_rows, gram = _regularisers(counts, other, hp)
    lookup = lambda a, ids: a.at[ids].get(mode="fill", fill_value=0)  # padding ids give 0

    def chunk(args):
        rows, cols = args
        h = lookup(other, cols)  # [R, L, d], zero rows for padding entries (they add nothing)
        x0, reg_r = lookup(x, rows), lookup(reg_rows, rows)

        def matvec(p):  # (alpha0 H^T H + c H_u^T H_u + reg_u I) p, row by row
            own = jnp.einsum("rl,rld->rd", jnp.einsum("rld,rd->rl", h, p), h)
            return p @ gram + reg_r[:, None] * p + conf * own

        # b - A x0 = c H_u^T (1 - H_u x0) - alpha0 x0 H^T H - reg x0
        ones_minus = 1.0 - jnp.einsum("rld,rd->rl", h, x0)
        residual = conf * jnp.einsum("rl,rld->rd", ones_minus, h)
        residual = residual - x0 @ gram - reg_r[:, None] * x0
        return _cg(matvec, residual, x0, cg_steps)

    new = x
    for rows, cols in side_buckets:  # every row is in one bucket: all of `new` is rewritten
        solved = jax.lax.map(chunk, (rows, cols))
        new = new.at[rows.reshape(-1)].set(solved.reshape(-1, d), mode="drop")
    return new


@functools.partial(jax.jit, static_argnames=("solver", "cg_steps", "chunk_size"))
def sweep(
    params: dict,
    data: dict,
    *,
    alpha0: float = 0.3,
    reg: float = 0.01,
    nu: float = 1.0,
    confidence: float = 1.0,
    solver: str = "cg",
    cg_steps: int = 3,
    chunk_size: int = 8192,
) -> dict:
    """One alternating pass: every user row given the items, then every item row given them.

    Args:
      params: {"users": [U, d], "items": [I, d]} float32.
      data: `prepare(...)` of the training interactions.
      alpha0, reg, nu, confidence: the objective's weights (module docstring).
      solver: "cholesky" (exact) or "cg" (`cg_steps` steps from the current rows).
      chunk_size: interactions per block of the "cholesky" outer-product sums.
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    hp = (alpha0, reg, nu, confidence)
    if solver == "cg":
        users = _solve_side_cg(
            params["users"], params["items"], data["user_buckets"], data["user_counts"], hp,
            cg_steps,
        )  # fmt: skip
        items = _solve_side_cg(
            params["items"], users, data["item_buckets"], data["item_counts"], hp, cg_steps
        )
        return {"users": users, "items": items}
    users = _solve_side(
        params["users"], params["items"], data["user_of"], data["item_of"],
        data["user_counts"], hp, chunk_size,
    )  # fmt: skip
    items = _solve_side(
        params["items"], users, data["item_major_items"], data["item_major_users"],
        data["item_counts"], hp, chunk_size,
    )  # fmt: skip
    return {"users": users, "items": items}


@jax.jit
def objective(
    params: dict,
    data: dict,
    *,
    alpha0: float = 0.3,
    reg: float = 0.01,
    nu: float = 1.0,
    confidence: float = 1.0,
) -> jax.Array:
    """Scalar L(W, H) of the module docstring (float32)."""
    w, h = params["users"], params["items"]
    pred = jnp.sum(w[data["user_of"]] * h[data["item_of"]], axis=1)
    observed = confidence * jnp.sum((pred - 1.0) ** 2)
    every_pair = alpha0 * jnp.sum((w.T @ w) * (h.T @ h))  # sum_{u,i} <w_u, h_i>^2
    reg_u = (confidence * data["user_counts"] + alpha0 * h.shape[0]) ** nu
    reg_i = (confidence * data["item_counts"] + alpha0 * w.shape[0]) ** nu
    penalty = jnp.sum(reg_u * jnp.sum(w * w, axis=1)) + jnp.sum(reg_i * jnp.sum(h * h, axis=1))
    return observed + every_pair + reg * penalty


def fit(
    indptr,
    indices,
    *,
    num_users: int,
    num_items: int,
    factors: int = 64,
    sweeps: int = 15,
    alpha0: float = 0.3,
    reg: float = 0.01,
    nu: float = 1.0,
    confidence: float = 1.0,
    solver: str = "cg",
    cg_steps: int = 3,
    init_scale: float = 0.1,
    key=None,
) -> dict:
    """`init` then `sweeps` sweeps; key defaults to `jax.random.key(0)`."""
    key = jax.random.key(0) if key is None else key
    data = prepare(indptr, indices, num_users=num_users, num_items=num_items)
    params = init(key, num_users=num_users, num_items=num_items, factors=factors, scale=init_scale)
    hp = dict(alpha0=alpha0, reg=reg, nu=nu, confidence=confidence)
    for _ in range(sweeps):
        params = sweep(params, data, solver=solver, cg_steps=cg_steps, **hp)
    return params


@jax.jit
def score(params: dict, users: jax.Array) -> jax.Array:
    """[len(users)] int32 -> [len(users), num_items] float32 dot products."""
    return params["users"][users] @ params["items"].T
