"""Stage: model (baselines). TopPop: every user gets the items ranked by training popularity.

Memory: [num_items] float32. No hyperparameters.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ncf_jax.baselines._matrix import check_csr


def fit(indptr, indices, *, num_users: int, num_items: int, key=None) -> dict:
    """{"popularity": [num_items] float32}: the number of training users of each item."""
    del key  # deterministic
    _, indices = check_csr(indptr, indices, num_users, num_items)
    counts = np.bincount(indices, minlength=num_items).astype(np.float32)
    return {"popularity": jnp.asarray(counts)}


@jax.jit
def score(params: dict, users: jax.Array) -> jax.Array:
    """[len(users)] int32 -> [len(users), num_items] float32 popularity, the same per user."""
    popularity = params["popularity"]
    return jnp.broadcast_to(popularity, (users.shape[0], popularity.shape[0]))
