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

# Draws bisected per pass. The unrolled bisection keeps a few int32 arrays per step alive, 44
# bytes a draw in all; a pass of this many draws bounds that, and a whole epoch's draws then
# cost their own 4 bytes and their random numbers' 4 (the Netflix shape: 100 M draws an epoch).
SAMPLE_CHUNK = 1 << 16


def sample_negatives(
    key: jax.Array, users: jax.Array, data: DeviceInteractions, *, chunk: int = SAMPLE_CHUNK
) -> jax.Array:
    """One uniform negative for each entry of `users`.

    Args:
      key: PRNG key.
      users: [...] int32 user ids.
      data: per-user excluded items (`DeviceInteractions.indptr/indices`), sorted per user.
      chunk: draws bisected per pass (the same draws whatever it is; memory grows with it).

    Returns:
      [...] int32 item ids, each uniform over the items `data` does not exclude for that user.
    """
    degree = data.indptr[users + 1] - data.indptr[users]
    r = jax.random.randint(key, users.shape, 0, data.num_items - degree, dtype=jnp.int32)
    flat_users, flat_r = users.reshape(-1), r.reshape(-1)
    n = flat_users.shape[0]
    if n <= chunk:
        return _allowed_item(flat_users, flat_r, data).reshape(users.shape)

    def one_pass(c, out):
        # The last pass starts at n - chunk and recomputes a few draws of the one
        # before it: the same values, so no padded copy of the draws is needed.
        start = jnp.minimum(c * chunk, n - chunk)
        part = lambda x: jax.lax.dynamic_slice(x, (start,), (chunk,))
        items = _allowed_item(part(flat_users), part(flat_r), data)
        return jax.lax.dynamic_update_slice(out, items, (start,))

    out = jax.lax.fori_loop(0, -(-n // chunk), one_pass, jnp.zeros(n, jnp.int32))
    return out.reshape(users.shape)


def _allowed_item(users: jax.Array, r: jax.Array, data: DeviceInteractions) -> jax.Array:
    """The r-th item (0-based) that `data` does not exclude for each user: r + the number of
    excluded items p_m with p_m - m <= r, by bisection over the user's sorted CSR slice."""
    start = data.indptr[users]
    degree = data.indptr[users + 1] - start

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
