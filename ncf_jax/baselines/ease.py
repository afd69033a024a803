"""Stage: model (baselines). EASE^R (Steck 2019): the closed-form item-item linear model

    B = argmin |X - X B|^2 + lam |B|^2  subject to diag(B) = 0
      = I - P diag(1 / diag(P)),   P = (X^T X + lam I)^-1;   score(u) = x_u B.

`fit` inverts G + lam I once. `fit_grid` serves a whole grid of lambdas from ONE symmetric
eigendecomposition G = V diag(w) V^T, since P(lam) = V diag(1 / (w + lam)) V^T: it keeps the
factors and the per-lambda diagonals of P rather than L dense matrices, and `score_grid` applies
x_u B(lam) = x_u - ((x_u V) diag(1/(w + lam)) V^T) / diag(P(lam)) for all lambdas in one call
(two GEMMs per lambda instead of one). `grid_member` materialises B for one lambda.

Memory: X int8 [num_users, num_items]; G, P (or V) and B float32 [num_items, num_items]
(ML-20M: 2.9 GB each, about 3 alive at the peak of `fit`, 4 in `fit_grid`).

Hyperparameters: default lam 500 (Steck's ML-20M / Netflix range; ml-100k's test optimum is
200). Grid (Dacrema et al.: l2_norm 1..1e7 log-uniform): `fit_grid` with
lams = geomspace(10, 5000, 8), widened where the best lambda is at an end.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ncf_jax.baselines import _matrix


def _gram(indptr, indices, num_users, num_items, chunk_size):
    x = _matrix.dense_binary(indptr, indices, num_users, num_items)
    return x, _matrix.gram(x, jnp.ones(num_users, jnp.float32), chunk_size=chunk_size)


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
    """{"x": [num_users, num_items] int8, "b": [num_items, num_items] float32}."""
    del key  # deterministic
    x, g = _gram(indptr, indices, num_users, num_items, chunk_size)
    return {"x": x, "b": weights_from_gram(g, jnp.float32(lam))}


@jax.jit
def score(params: dict, users: jax.Array) -> jax.Array:
    """[len(users)] int32 -> [len(users), num_items] float32: X[users] @ B."""
    return _matrix.user_rows(params["x"], users) @ params["b"]


@jax.jit
def _eigen_grid(g, lams):
    w, v = jnp.linalg.eigh(g)
    inv = 1.0 / (w[None, :] + lams[:, None])  # [L, n]
    diag_p = jnp.einsum("in,ln->li", v * v, inv)  # diag(V diag(d) V^T) per lambda
    return v, inv, diag_p


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
    """Every lambda of `lams` from one eigendecomposition.

    Returns:
      {"x": [U, I] int8, "v": [I, I] eigenvectors, "inv": [L, I] 1 / (w + lam),
       "diag_p": [L, I] diag(P(lam))}; see `score_grid` and `grid_member`.
    """
    del key  # deterministic
    x, g = _gram(indptr, indices, num_users, num_items, chunk_size)
    v, inv, diag_p = _eigen_grid(g, jnp.asarray(lams, jnp.float32))
    return {"x": x, "v": v, "inv": inv, "diag_p": diag_p}


@jax.jit
def score_grid(params: dict, users: jax.Array) -> jax.Array:
    """[len(users)] int32 -> [L, len(users), num_items] float32 scores of every lambda."""
    rows = _matrix.user_rows(params["x"], users)
    projected = rows @ params["v"]  # [c, I], shared by all lambdas

    def one(inv, diag_p):
        xp = (projected * inv[None, :]) @ params["v"].T  # x_u P(lam)
        # B = I - P diag(1 / diag(P)) has a zero diagonal already, so no masking is needed.
        return rows - xp / diag_p[None, :]

    return jax.vmap(one)(params["inv"], params["diag_p"])


@functools.partial(jax.jit, static_argnames="index")
def grid_member(params: dict, index: int) -> dict:
    """The `fit`-style params {"x", "b"} of lambda number `index` of a `fit_grid` result."""
    v, inv, diag_p = params["v"], params["inv"][index], params["diag_p"][index]
    p = (v * inv[None, :]) @ v.T
    b = -p / diag_p[None, :]
    n = v.shape[0]
    return {"x": params["x"], "b": b * (1.0 - jnp.eye(n, dtype=b.dtype))}
