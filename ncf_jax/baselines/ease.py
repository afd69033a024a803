"""Stage: model (baselines). EASE^R (Steck 2019): the closed-form item-item linear model

    B = argmin |X - X B|^2 + lam |B|^2  subject to diag(B) = 0
      = I - P diag(1 / diag(P)),   P = (X^T X + lam I)^-1;   score(u) = x_u B.

`fit` inverts G + lam I once. `fit_grid` serves a whole grid of lambdas from ONE tridiagonal
reduction G = Q T Q^T (LAPACK sytrd + orgtr), since P(lam) = Q (T + lam I)^-1 Q^T and T + lam I
factors as L diag(p) L^T in O(n) (L unit bidiagonal). It keeps Q, the per-lambda factors and
the per-lambda diagonals of P (one O(L n^2) sweep) rather than L dense matrices; `score_grid`
applies x_u B(lam) = x_u - ((x_u Q) (T + lam I)^-1 Q^T) / diag(P(lam)) for all lambdas in one
call (two GEMMs per lambda instead of one) and `grid_member` materialises B for one lambda.
The reduction is sytrd + orgtr, about 8/3 n^3 flops, without an eigendecomposition's
divide-and-conquer and back-transformation (ML-1M shape: 3.1-3.3 s against 4.0-4.7 s for the
whole grid factorisation on a 2-core Xeon), and its diag(P) is closer to float64's.

Memory: X int8 [num_users, num_items]; G, P (or Q) and B float32 [num_items, num_items]
(ML-20M: 2.9 GB each, about 3 alive at the peak of `fit`; in `fit_grid` up to 4: G, its
reduction, Q and Q^T).

Hyperparameters: default lam 500 (Steck's ML-20M / Netflix range; ml-100k's test optimum is
200). Grid (Dacrema et al.: l2_norm 1..1e7 log-uniform): `fit_grid` with
lams = geomspace(10, 5000, 8), widened where the best lambda is at an end.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ncf_jax.baselines import _matrix


@jax.jit
def weights_from_gram(g: jax.Array, lam) -> jax.Array:
    """[n, n] Gram, scalar lam -> [n, n] B with a zero diagonal."""
    p = jnp.linalg.inv(g + lam * jnp.eye(g.shape[0], dtype=g.dtype))
    b = -p / jnp.diag(p)[None, :]
    return b * (1.0 - jnp.eye(g.shape[0], dtype=b.dtype))  # B_jj = 1 - P_jj / P_jj = 0


def fit(
    indptr,
    indices,
    *,
    num_users: int,
    num_items: int,
    lam: float = 500.0,
    chunk_size: int = 2048,
    key=None,
) -> dict:
    """{"x": [num_users, num_items] int8, "b": [num_items, num_items] float32} and the CSR of X,
    {"indptr", "indices"} (`_matrix.history`)."""
    del key  # deterministic
    x, g = _matrix.binary_gram(indptr, indices, num_users, num_items, chunk_size=chunk_size)
    history = _matrix.history(indptr, indices, num_users, num_items)
    return {"x": x, "b": weights_from_gram(g, jnp.float32(lam))} | history


@jax.jit
def score(params: dict, users: jax.Array) -> jax.Array:
    """[len(users)] int32 -> [len(users), num_items] float32: X[users] @ B, summed over each
    user's history (`_matrix.score_history`; dense for long histories)."""
    return _matrix.score_history(params, params["b"], users)


def _ldl(d, e, lams):
    """T + lam I = L diag(piv) L^T for each lambda, T symmetric tridiagonal (diagonal d [n],
    off-diagonal e [n-1]) and L unit lower bidiagonal: piv [L, n] pivots, sub [L, n-1] subdiagonal.
    Without pivoting: T + lam I is positive definite (G is PSD, lam > 0)."""

    def step(p_prev, de):
        d_i, e_prev = de
        l_prev = e_prev / p_prev
        p_i = d_i + lams - l_prev * e_prev
        return p_i, (p_i, l_prev)

    p0 = d[0] + lams
    _, (piv, sub) = jax.lax.scan(step, p0, (d[1:], e))
    return jnp.concatenate([p0[None], piv]).T, sub.T


def _forward(sub, b):
    """Y with L Y = B, L unit lower bidiagonal (subdiagonal sub [n-1]), B [n, m]."""

    def step(y_prev, xs):
        b_i, l_prev = xs
        y_i = b_i - l_prev * y_prev
        return y_i, y_i

    _, y = jax.lax.scan(step, b[0], (b[1:], sub))
    return jnp.concatenate([b[:1], y])


def _shifted_solve(sub, piv, b):
    """X with (T + lam I) X = B from one lambda's LDL^T factors (sub [n-1], piv [n]), B [n, m]."""
    z = _forward(sub, b) / piv[:, None]

    def step(x_next, xs):
        z_i, l_i = xs
        x_i = z_i - l_i * x_next
        return x_i, x_i

    _, x = jax.lax.scan(step, z[-1], (z[:-1], sub), reverse=True)
    return jnp.concatenate([x, z[-1:]])


def _diag_p(qt, sub, piv):
    """[L, n] diag(Q (T + lam I)^-1 Q^T) = sum_k (L^-1 Q^T)_kj^2 / p_k, one sweep over k for
    all lambdas at once, never holding L^-1 Q^T."""

    def step(carry, xs):
        y_prev, acc = carry
        row, l_prev, p_k = xs
        y = row[None, :] - l_prev[:, None] * y_prev
        return (y, acc + y * y / p_k[:, None]), None

    y0 = jnp.broadcast_to(qt[0], (sub.shape[0], qt.shape[1]))
    (_, acc), _ = jax.lax.scan(step, (y0, y0 * y0 / piv[:, :1]), (qt[1:], sub.T, piv[:, 1:].T))
    return acc


@jax.jit
def _tridiagonal_grid(g, lams):
    a, d, e, taus = jax.lax.linalg.tridiagonal(g, lower=True)  # G = Q T Q^T
    reflected = jax.lax.linalg.householder_product(a[1:, :-1], taus)  # LAPACK orgtr, lower
    q = jnp.zeros_like(g).at[0, 0].set(1.0).at[1:, 1:].set(reflected)
    piv, sub = _ldl(d, e, lams)
    return q, piv, sub, _diag_p(q.T, sub, piv)


def fit_grid(
    indptr,
    indices,
    *,
    num_users: int,
    num_items: int,
    lams,
    chunk_size: int = 2048,
    key=None,
) -> dict:
    """Every lambda of `lams` from one tridiagonal reduction of the Gram matrix.

    Returns:
      {"x": [U, I] int8, "q": [I, I] orthogonal with G = Q T Q^T, "piv": [L, I] and "sub":
       [L, I-1] the LDL^T factors of T + lam I, "diag_p": [L, I] diag(P(lam))} and `fit`'s
       CSR of X; see `score_grid` and `grid_member`.
    """
    del key  # deterministic
    x, g = _matrix.binary_gram(indptr, indices, num_users, num_items, chunk_size=chunk_size)
    q, piv, sub, diag_p = _tridiagonal_grid(g, jnp.asarray(lams, jnp.float32))
    history = _matrix.history(indptr, indices, num_users, num_items)
    return {"x": x, "q": q, "piv": piv, "sub": sub, "diag_p": diag_p} | history


@jax.jit
def score_grid(params: dict, users: jax.Array) -> jax.Array:
    """[len(users)] int32 -> [L, len(users), num_items] float32 scores of every lambda."""
    rows = _matrix.user_rows(params["x"], users)
    projected_t = params["q"].T @ rows.T  # [I, c] = (x_u Q)^T, shared by all lambdas

    def one(sub, piv, diag_p):
        xp = (params["q"] @ _shifted_solve(sub, piv, projected_t)).T  # x_u P(lam)
        # B = I - P diag(1 / diag(P)) has a zero diagonal already, so no masking is needed.
        return rows - xp / diag_p[None, :]

    return jax.lax.map(lambda args: one(*args), (params["sub"], params["piv"], params["diag_p"]))


@functools.partial(jax.jit, static_argnames="index")
def grid_member(params: dict, index: int) -> dict:
    """The `fit`-style params {"x", "b", "indptr", "indices"} of lambda number `index` of a
    `fit_grid` result."""
    q, sub, piv = params["q"], params["sub"][index], params["piv"][index]
    p_matrix = q @ _shifted_solve(sub, piv, q.T)
    b = -p_matrix / params["diag_p"][index][None, :]
    n = q.shape[0]
    kept = {name: params[name] for name in ("x", "indptr", "indices")}
    return kept | {"b": b * (1.0 - jnp.eye(n, dtype=b.dtype))}
