"""Stage: epoch batches. One epoch of (user, item, label) rows built and shuffled on device.

Each training positive contributes itself and `num_neg` fresh negatives; the rows are
permuted and cut into `[steps, batch_size]`. The last batch is padded with weight-0 rows, so
every sample is seen exactly once per epoch and no remainder is silently dropped.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from ncf_jax.interactions import Interactions
from ncf_jax.permutation import permutation
from ncf_jax.sampling import sample_negatives


@struct.dataclass
class Batches:
    """[steps, batch_size] arrays: int32 users and items, float32 labels and weights."""

    users: jax.Array
    items: jax.Array
    labels: jax.Array
    weights: jax.Array


def num_steps(num_pairs: int, *, num_neg: int, batch_size: int) -> int:
    """Steps per epoch: ceil(num_pairs * (1 + num_neg) / batch_size)."""
    return -(-num_pairs * (1 + num_neg) // batch_size)


def epoch_batches(key: jax.Array, data: Interactions, *, num_neg: int, batch_size: int) -> Batches:
    """Samples negatives, shuffles and batches one epoch, all on device."""
    neg_key, perm_key = jax.random.split(key)
    n = data.num_pairs
    neg_users = jnp.tile(data.users, num_neg)
    users = jnp.concatenate([data.users, neg_users])
    items = jnp.concatenate([data.items, sample_negatives(neg_key, neg_users, data)])
    labels = jnp.concatenate([jnp.ones(n, jnp.float32), jnp.zeros(n * num_neg, jnp.float32)])
    total = n * (1 + num_neg)
    steps = num_steps(n, num_neg=num_neg, batch_size=batch_size)
    order = permutation(perm_key, total)
    order = jnp.pad(order, (0, steps * batch_size - total))
    weights = (jnp.arange(steps * batch_size) < total).astype(jnp.float32)
    shape = (steps, batch_size)
    return Batches(
        users=users[order].reshape(shape),
        items=items[order].reshape(shape),
        labels=labels[order].reshape(shape),
        weights=weights.reshape(shape),
    )
