"""Stage: model (baselines). SLIM ElasticNet (Ning & Karypis 2011) as Dacrema et al. run it
(scikit-learn's ElasticNet per item, positive=True, no intercept, top-k kept per column):

    w_j = argmin_{w >= 0, w_j = 0}  1/(2 U) |x_j - X w|^2 + a r |w|_1 + a (1 - r) / 2 |w|^2

for every item j, with a = `alpha`, r = `l1_ratio`, U = num_users. On the Gram matrix G = X^T X
the smooth part of all columns at once is 1/(2U) tr(W^T G W) - 1/U tr(G W) + ..., so its
gradient is (G W - G) / U + a (1 - r) W: one [I, I] GEMM. `fit` runs `iterations` steps of
FISTA (accelerated proximal gradient; the prox of the L1 term plus w >= 0 is
max(0, w - step a r), then the diagonal is zeroed), step 1 / L with L = lambda_max(G) / U +
a (1 - r) from a power iteration. The objective is strongly convex for r < 1, so the iterates
converge linearly; scikit-learn's coordinate descent reaches the same minimiser.

Memory: X int8 [num_users, num_items]; during `fit` G, W, the momentum copy and a GEMM output
float32 [num_items, num_items] (ML-20M: 2.9 GB each, about 5 alive). W is kept as its columns'
top-k lists, [num_items, k], and scored as ItemKNN's (`_matrix.score_neighbours`). Time:
`iterations` GEMMs of 2 I^3 flops (ML-1M: 0.1 TFLOP each, about 1 s on 2 CPU cores).

Hyperparameters: defaults alpha 0.1, l1_ratio 0.01, k 100, 100 FISTA steps (300 changed
ml-100k HR@10 by 0.001). Grid (Dacrema et al.: topK 5..1000, l1_ratio 1e-5..1 log, alpha
1e-3..1): k {50, 100, 200, 500}, l1_ratio {1e-3, 1e-2, 0.1}, alpha {0.01, 0.03, 0.1, 0.3, 1}.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ncf_jax.baselines import _matrix


def _lipschitz(g: jax.Array, steps: int = 30) -> jax.Array:
    """lambda_max of a PSD matrix by power iteration (an upper bound is fine: x 1.05)."""
    v = jnp.ones(g.shape[0], g.dtype) / jnp.sqrt(g.shape[0])

    def step(_, v):
        w = g @ v
        return w / jnp.maximum(jnp.linalg.norm(w), 1e-30)

    v = jax.lax.fori_loop(0, steps, step, v)
    return 1.05 * jnp.linalg.norm(g @ v)


@functools.partial(jax.jit, static_argnames="iterations")
def solve(g: jax.Array, num_users, alpha, l1_ratio, *, iterations: int) -> jax.Array:
    """[I, I] W >= 0 with a zero diagonal minimising the SLIM objective, by FISTA."""
    off_diag = 1.0 - jnp.eye(g.shape[0], dtype=g.dtype)
    l2 = alpha * (1.0 - l1_ratio)
    step = 1.0 / (_lipschitz(g) / num_users + l2)
    threshold = step * alpha * l1_ratio

    def body(_, state):
        w, y, t = state
        grad = (g @ y - g) / num_users + l2 * y
        w_next = jnp.maximum(y - step * grad - threshold, 0.0) * off_diag
        t_next = (1.0 + jnp.sqrt(1.0 + 4.0 * t * t)) / 2.0
        y_next = w_next + ((t - 1.0) / t_next) * (w_next - w)
        return w_next, y_next, t_next

    zeros = jnp.zeros_like(g)
    w, _, _ = jax.lax.fori_loop(0, iterations, body, (zeros, zeros, jnp.float32(1.0)))
    return w


def fit(
    indptr,
    indices,
    *,
    num_users: int,
    num_items: int,
    alpha: float = 0.1,
    l1_ratio: float = 0.01,
    k: int = 100,
    iterations: int = 100,
    chunk_size: int = 2048,
    key=None,
) -> dict:
    """{"x": [num_users, num_items] int8, "neighbours": [num_items, k] int32, "weights":
    [num_items, k] float32}: row j lists the k largest coefficients of W's column j (target j).

    Args:
      alpha, l1_ratio: scikit-learn's ElasticNet penalty (module docstring).
      k: coefficients kept per column (per target item) after the solve, as Dacrema et al.
      iterations: FISTA steps.
    """
    del key  # deterministic
    x, g = _matrix.binary_gram(indptr, indices, num_users, num_items, chunk_size=chunk_size)
    w = solve(g, float(num_users), alpha, l1_ratio, iterations=iterations)
    return {"x": x, **_matrix.neighbour_lists(w.T, k)}


score = _matrix.score_neighbours
