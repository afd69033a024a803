"""Stage: model (baselines). PureSVD (Cremonesi et al. 2010): the rank-f truncated SVD of the
binary user-item matrix, X ~ U_f S_f V_f^T; score(u) = x_u V_f V_f^T = (U_f S_f)[u] V_f^T.

V_f are the top-f eigenvectors of the Gram matrix X^T X (eigenvalues S^2), so the SVD is exact
(no randomised approximation) and costs one [num_items, num_items] symmetric eigensolve.

Memory: X int8 [num_users, num_items] while fitting, the Gram matrix and its eigenvectors
float32 [num_items, num_items] (ML-20M: 2.9 GB each; the eigensolve is O(num_items^3), about
half an hour on 2 CPU cores at 27k items); params are [num_users + num_items, f] float32.

Hyperparameters: default f 50. Grid (Dacrema et al.: num_factors 1..350): f {10, 20, 50,
100, 200, 350}; small catalogues peak low (ml-100k: f 20).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ncf_jax.baselines import _matrix


def fit(
    indptr,
    indices,
    *,
    num_users: int,
    num_items: int,
    factors: int = 50,
    chunk_size: int = 2048,
    key=None,
) -> dict:
    """{"users": [num_users, f] float32 (U S), "items": [num_items, f] float32 (V)}."""
    del key  # deterministic
    if not 1 <= factors <= num_items:
        raise ValueError(f"factors must be in [1, num_items={num_items}], got {factors}")
    x, g = _matrix.binary_gram(indptr, indices, num_users, num_items, chunk_size=chunk_size)
    _, vectors = jnp.linalg.eigh(g)  # ascending eigenvalues
    items = vectors[:, ::-1][:, :factors]
    users = _project(x, items)
    return {"users": users, "items": items}


@jax.jit
def _project(x, items):
    return x.astype(jnp.float32) @ items


@jax.jit
def score(params: dict, users: jax.Array) -> jax.Array:
    """[len(users)] int32 -> [len(users), num_items] float32 reconstructed rows."""
    return params["users"][users] @ params["items"].T
