"""Stage: on-device sampler. The one negative sampler: exact, uniform, vectorised, jittable.

For a user whose sorted positives are p_0 < p_1 < ... < p_{d-1}, the allowed items are the
other n - d. Draw r uniformly from [0, n - d) and return the r-th allowed item: it is
r + j, where j counts the positives with p_m - m <= r (p_m - m is how many allowed items lie
below p_m, a non-decreasing sequence). j is found by bisection over the user's CSR slice, so a
draw costs O(log d) gathers, never a known positive, and never a rejection loop.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ncf_jax.interactions import DeviceInteractions


def sample_negatives(key: jax.Array, users: jax.Array, data: DeviceInteractions) -> jax.Array:
    """One uniform negative for each entry of `users`.

    Args:
      key: PRNG key.
      users: [...] int32 user ids.
      data: per-user excluded items (`DeviceInteractions.indptr/indices`), sorted per user.

    Returns:
      [...] int32 item ids, each uniform over the items `data` does not exclude for that user.
    """
    start = data.indptr[users]
    degree = data.indptr[users + 1] - start
    r = jax.random.randint(key, users.shape, 0, data.num_items - degree, dtype=jnp.int32)

    def bisect(_, bounds):
        lo, hi = bounds
        mid = (lo + hi) // 2
        # Clamp the gather for finished searches (lo == hi == degree); their result is unused.
        probe = data.indices[jnp.minimum(start + mid, data.indices.shape[0] - 1)]
        go_right = (mid < hi) & (probe - mid <= r)
        return jnp.where(go_right, mid + 1, lo), jnp.where(go_right, hi, mid)

    count, _ = jax.lax.fori_loop(
        0, data.search_steps, bisect, (jnp.zeros_like(degree), degree), unroll=True
    )
    return r + count
