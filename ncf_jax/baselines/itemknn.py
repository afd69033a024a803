"""Stage: model (baselines). ItemKNN: cosine item-item similarity with shrinkage, top-k kept.

    s_ij = <x_i, x_j> / (|x_i| |x_j| + shrink + 1e-6),   s_jj = 0,
    score(u, j) = sum of s_ij over the user's items i among the k most similar items of j,

where x_i is item i's (optionally TF-IDF / BM25 weighted) column of X, as in Dacrema et al.'s
ItemKNNCF (top-k per target item, i.e. per column of W). Scoring uses the binary X.

W is kept as its columns' neighbour lists, [num_items, k] ids and weights, and `score` adds
the k neighbours' columns of X (`_matrix.score_neighbours`): k multiply-adds per user and
item instead of num_items for a dense X @ W (ML-1M, all users ranked: 0.45-0.57 s against
1.18-1.27 s).

Memory: X int8 [num_users, num_items] (`_matrix`); at the peak of `fit` the Gram matrix and S
float32 [num_items, num_items] (ML-20M: 2.9 GB each); the lists [num_items, k].

Hyperparameters: defaults k 100, shrink 10, no weighting. Grid (Dacrema et al.: topK 5..1000,
shrink 0..1000, weighting none / TF-IDF / BM25): k {5, 10, 20, 50, 100, 200, 500, 1000} x
shrink {0, 10, 50, 100, 200, 500, 1000} x weighting {none, tfidf, bm25}.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ncf_jax.baselines import _matrix


def cosine_from_gram(g: jax.Array, shrink: float) -> jax.Array:
    """[n, n] Gram -> cosine with shrinkage in the denominator and a zero diagonal."""
    norms = jnp.sqrt(jnp.maximum(jnp.diag(g), 0.0))
    s = g / (norms[:, None] * norms[None, :] + shrink + 1e-6)
    return s * (1.0 - jnp.eye(g.shape[0], dtype=s.dtype))


def fit(
    indptr,
    indices,
    *,
    num_users: int,
    num_items: int,
    k: int = 100,
    shrink: float = 10.0,
    weighting: str = "none",
    chunk_size: int = 2048,
    key=None,
) -> dict:
    """{"x": [num_users, num_items] int8, "neighbours": [num_items, k] int32, "weights":
    [num_items, k] float32}: row j lists target j's k most similar items, most similar first.

    Args:
      indptr, indices: CSR of the training items of each user.
      k: neighbours kept per target item (at most num_items); shrink: added to the cosine
        denominator.
      weighting: "none", "tfidf" or "bm25" on the users (the items' features) before the
        similarity (`_matrix.feature_weights`, items as documents).
      chunk_size: users per block of the Gram product.
    """
    del key  # deterministic
    user_counts, item_counts = _matrix.counts(indptr, indices, num_items)
    item_w, user_w = _matrix.feature_weights(item_counts, user_counts, weighting)
    x, g = _matrix.binary_gram(
        indptr, indices, num_users, num_items, user_w**2, chunk_size=chunk_size
    )
    return {"x": x, **_neighbours(g, jnp.asarray(item_w), jnp.float32(shrink), k=k)}


@functools.partial(jax.jit, static_argnames="k")
def _neighbours(g, item_w, shrink, *, k: int):
    """The neighbour lists from the (user-weighted) Gram: item weights, cosine, top-k."""
    g = g * (item_w[:, None] * item_w[None, :])
    # S is symmetric: row j holds target j's similarity to every item (its column of W).
    return _matrix.neighbour_lists(cosine_from_gram(g, shrink), k)


score = _matrix.score_neighbours
