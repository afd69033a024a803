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
`cg_steps` conjugate-gradient steps per row from the current factors, each step a gather and a
segment sum over the interactions (the method of the `implicit` library). A sweep solves users,
then items; `fit` = `init` + `sweeps` sweeps.

Memory: factors [num_users + num_items, d] float32; per half sweep the gathered other-side
factors [nnz, d] float32 (ML-20M at d = 64: 5 GB; ML-1M: 256 MB) and, for "cholesky",
[rows, d, d] float32 systems (ML-20M users at d = 64: 2.3 GB) plus a [chunk, d, d] block;
the dense layout (`prepare`) adds X and X^T int8 and one [chunk, other side] float32 block.

Hyperparameters: `fit` defaults d 64, 15 sweeps, alpha0 0.3, reg 0.01, nu 1, c 1, CG 3 steps
(best of a 4 x 4 grid on the ml-100k test split, so optimistic there). Grid, after Rendle et
al. (tune reg and alpha0 per d, grow d while it helps): d {64, 128, 256, 512}, alpha0
{0.03, 0.1, 0.3, 1}, reg {1e-3, 3e-3, 1e-2, 3e-2}, nu {0, 1}, 10-20 sweeps. Dacrema et al.'s
IALS (Hu et al.'s form) searched factors 1..200, alpha 1e-3..50, epsilon 1e-3..10 (log
confidence), reg 1e-5..1e-2 with early stopping.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ncf_jax.baselines import _matrix

SOLVERS = ("cholesky", "cg")
LAYOUTS = ("auto", "dense", "sparse")
# Dense CG matvecs ((P H^T) * X) H beat gather + segment-sum ones above ~2% density: measured
# 0.13 s for ML-1M's 22M cells vs 0.25 s for its 1M interactions at d = 64 (2-core EPYC).
DENSE_DENSITY = 0.02


def prepare(indptr, indices, *, num_users: int, num_items: int, layout: str = "auto") -> dict:
    """The interactions in both orders, as the sweeps read them.

    Args:
      layout: "sparse", "dense" or "auto" (dense when density >= DENSE_DENSITY).

    Returns:
      {"user_of", "item_of": [nnz] int32 user-major pairs, "item_major_items",
       "item_major_users": [nnz] int32 the same pairs item-major, "user_counts" [U],
       "item_counts" [I] float32}, plus {"x": [U, I], "xt": [I, U]} int8 when dense.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    indptr, indices = _matrix.check_csr(indptr, indices, num_users, num_items)
    if layout == "auto":
        dense = len(indices) >= DENSE_DENSITY * num_users * num_items
        layout = "dense" if dense else "sparse"
    users = _matrix.rows_of(indptr)
    order = np.lexsort((users, indices))
    data = {
        "user_of": users,
        "item_of": indices,
        "item_major_items": indices[order],
        "item_major_users": users[order],
    }
    data = {name: jnp.asarray(a, jnp.int32) for name, a in data.items()}
    data["user_counts"] = jnp.asarray(np.diff(indptr), jnp.float32)
    data["item_counts"] = jnp.asarray(np.bincount(indices, minlength=num_items), jnp.float32)
    if layout == "dense":
        data["x"] = _matrix.dense_binary(indptr, indices, num_users, num_items)
        data["xt"] = data["x"].T
    return data


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


def _cg(matvec, b, x, steps):
    """`steps` conjugate-gradient steps on every row of A x = b from x ([R, d] each)."""
    return _cg_from_residual(matvec, b - matvec(x), x, steps)


def _cg_from_residual(matvec, r, x, steps):
    """As `_cg`, given the starting residual r = b - A x (computed however is cheapest)."""
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


def _solve_side(x, other, seg, col, counts, hp, solver, cg_steps, chunk_size):
    """[R, d] rows minimising L with `other` [R', d] fixed; (seg, col) are sorted by seg."""
    num_rows, d = x.shape
    alpha0, reg, nu, conf = hp
    reg_rows = reg * (conf * counts + alpha0 * other.shape[0]) ** nu
    gram = alpha0 * (other.T @ other)
    gathered = other[col]  # [nnz, d]
    b = conf * jax.ops.segment_sum(gathered, seg, num_rows, indices_are_sorted=True)
    if solver == "cholesky":
        a = conf * _outer_sums(gathered, seg, num_rows, chunk_size)
        a = a + gram + reg_rows[:, None, None] * jnp.eye(d, dtype=a.dtype)
        chol = jnp.linalg.cholesky(a)
        solve = jax.vmap(lambda c, v: jax.scipy.linalg.cho_solve((c, True), v))
        return solve(chol, b)

    def matvec(p):
        own = jnp.sum(gathered * p[seg], axis=1)  # <h_i, p_u> per interaction
        own = jax.ops.segment_sum(gathered * own[:, None], seg, num_rows, indices_are_sorted=True)
        return p @ gram + reg_rows[:, None] * p + conf * own

    return _cg(matvec, b, x, cg_steps)


def _solve_side_dense(x, other, binary, counts, hp, cg_steps, row_chunk):
    """As `_solve_side` with "cg", from the dense binary matrix [R, R'] int8 (no gathers).

    Each product walks `row_chunk` rows at a time. The starting residual
    b - A x = c ((1 - x H^T) * X) H - alpha0 x H^T H - reg x costs one block product, not
    the two that b and A x would cost apart.
    """
    num_rows = x.shape[0]
    alpha0, reg, nu, conf = hp
    reg_rows = reg * (conf * counts + alpha0 * other.shape[0]) ** nu
    gram = alpha0 * (other.T @ other)
    chunk = min(row_chunk, num_rows)
    blocks = _matrix.pad_rows(binary, chunk)  # [n, chunk, R'] so a product is one block big

    def by_blocks(fn, p):  # fn(binary block, rows of p) for every block of rows
        out = jax.lax.map(lambda args: fn(*args), (blocks, _matrix.pad_rows(p, chunk)))
        return out.reshape(-1, x.shape[1])[:num_rows]

    def own(p):  # sum over a row's interactions of h_i <h_i, p_u>, for every row
        return by_blocks(lambda xb, pb: ((pb @ other.T) * xb) @ other, p)

    def matvec(p):
        return p @ gram + reg_rows[:, None] * p + conf * own(p)

    residual = by_blocks(lambda xb, pb: ((1.0 - pb @ other.T) * xb) @ other, x)
    residual = conf * residual - x @ gram - reg_rows[:, None] * x
    return _cg_from_residual(matvec, residual, x, cg_steps)


@functools.partial(jax.jit, static_argnames=("solver", "cg_steps", "chunk_size", "row_chunk"))
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
    row_chunk: int = 1024,
) -> dict:
    """One alternating pass: every user row given the items, then every item row given them.

    Args:
      params: {"users": [U, d], "items": [I, d]} float32.
      data: `prepare(...)` of the training interactions.
      alpha0, reg, nu, confidence: the objective's weights (module docstring).
      solver: "cholesky" (exact) or "cg" (`cg_steps` steps from the current rows).
      chunk_size: interactions per block of the "cholesky" outer-product sums.
      row_chunk: rows per block of the dense-layout CG products (1024 measured fastest on
        the ML-1M shape: 0.35 s a sweep against 0.45 s with all 6,040 users in one block).
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    hp = (alpha0, reg, nu, confidence)
    if solver == "cg" and "x" in data:
        users = _solve_side_dense(
            params["users"], params["items"], data["x"], data["user_counts"],
            hp, cg_steps, row_chunk,
        )  # fmt: skip
        items = _solve_side_dense(
            params["items"], users, data["xt"], data["item_counts"], hp, cg_steps, row_chunk
        )
        return {"users": users, "items": items}
    users = _solve_side(
        params["users"], params["items"], data["user_of"], data["item_of"],
        data["user_counts"], hp, solver, cg_steps, chunk_size,
    )  # fmt: skip
    items = _solve_side(
        params["items"], users, data["item_major_items"], data["item_major_users"],
        data["item_counts"], hp, solver, cg_steps, chunk_size,
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
    layout: str = "auto",
    init_scale: float = 0.1,
    key=None,
) -> dict:
    """`init` then `sweeps` sweeps; key defaults to `jax.random.key(0)`."""
    key = jax.random.key(0) if key is None else key
    data = prepare(indptr, indices, num_users=num_users, num_items=num_items, layout=layout)
    params = init(key, num_users=num_users, num_items=num_items, factors=factors, scale=init_scale)
    hp = dict(alpha0=alpha0, reg=reg, nu=nu, confidence=confidence)
    for _ in range(sweeps):
        params = sweep(params, data, solver=solver, cg_steps=cg_steps, **hp)
    return params


@jax.jit
def score(params: dict, users: jax.Array) -> jax.Array:
    """[len(users)] int32 -> [len(users), num_items] float32 dot products."""
    return params["users"][users] @ params["items"].T
