"""Stage: epoch batches. One epoch of training rows built and shuffled on device, for every task.

NCF: each training positive contributes itself and `num_neg` fresh negatives; the rows are
permuted and cut into `[steps, batch_size]` (`epoch_batches`), or kept beside their negatives
(`grouped_batches`). Two-tower: one row of candidates per positive (`candidate_batches`).
Ratings and clicks: the labelled rows themselves, shuffled (`shuffled_batches`). The last batch
is padded with weight-0 rows, so every sample is seen exactly once per epoch and no remainder is
silently dropped.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ncf_jax.interactions import DeviceInteractions
from ncf_jax.permutation import permutation
from ncf_jax.sampling import sample_negatives

Batches = dict[str, jax.Array]  # name -> [steps, batch_size, ...]; always has "weights"


def num_steps(num_pairs: int, *, num_neg: int, batch_size: int) -> int:
    """Steps per epoch: ceil(num_pairs * (1 + num_neg) / batch_size)."""
    return -(-num_pairs * (1 + num_neg) // batch_size)


def epoch_batches(
    key: jax.Array, data: DeviceInteractions, *, num_neg: int, batch_size: int
) -> Batches:
    """Samples negatives, shuffles and batches one epoch, all on device."""
    neg_key, perm_key = jax.random.split(key)
    n = data.num_pairs
    neg_users = jnp.tile(data.users, num_neg)
    users = jnp.concatenate([data.users, neg_users])
    items = jnp.concatenate([data.items, sample_negatives(neg_key, neg_users, data)])
    labels = jnp.arange(n * (1 + num_neg)) < n  # bool: a quarter of float32's bytes at 100M rows
    return shuffle_into_batches(
        perm_key, {"users": users, "items": items, "labels": labels}, batch_size=batch_size,
        weights_dtype=bool,
    )  # fmt: skip


def grouped_batches(
    key: jax.Array, data: DeviceInteractions, *, num_neg: int, batch_size: int
) -> Batches:
    """`epoch_batches` with each positive kept beside its own `num_neg` negatives.

    The same samples in distribution (every positive once, `num_neg` fresh uniform negatives
    each), but shuffled as groups: a batch holds `batch_size // (1 + num_neg)` positives with
    their negatives, as users `[steps, groups, 1]` against items and labels
    `[steps, groups, 1 + num_neg]` (column 0 the positive). Models broadcast the user over its
    group, so per-user work such as the user's half of the first MLP layer is done once for
    `1 + num_neg` samples. Batches hold `(1 + num_neg) * (batch_size // (1 + num_neg))` rows.
    """
    group = 1 + num_neg
    if batch_size < group:
        raise ValueError(f"grouped batches need batch_size >= 1 + num_neg = {group}")
    b = candidate_batches(key, data, num_neg=num_neg, batch_size=batch_size // group)
    shape = b["items"].shape
    return {
        "users": b["users"][..., None],
        "items": b["items"],
        "labels": jnp.zeros(shape, bool).at[..., 0].set(True),
        "weights": jnp.broadcast_to(b["weights"][..., None], shape),
    }


def shuffle_into_batches(
    key: jax.Array, rows: dict, *, batch_size: int, weights_dtype=jnp.float32
) -> Batches:
    """Permutes equal-length row arrays together and cuts them into [steps, batch_size, ...].

    A "weights" entry (1 for real rows, 0 for the padding of the last batch) is added, as
    `weights_dtype` (NCF's epoch keeps them as bool: 0.6 GB less per 200 M samples; the losses
    cast them).
    """
    total = len(next(iter(rows.values())))
    steps = -(-total // batch_size)
    order = jnp.pad(permutation(key, total), (0, steps * batch_size - total))
    batches = {name: x[order].reshape(steps, batch_size, *x.shape[1:]) for name, x in rows.items()}
    weights = (jnp.arange(steps * batch_size) < total).astype(weights_dtype)
    return batches | {"weights": weights.reshape(steps, batch_size)}


def candidate_batches(
    key: jax.Array, data: DeviceInteractions, *, num_neg: int, batch_size: int
) -> Batches:
    """One epoch of (user, [positive, num_neg negatives]) rows for retrieval losses, on device.

    Every training positive is one row; negatives are drawn by `sample_negatives` (so they avoid
    the user's excluded items) and redrawn every epoch. `num_neg=0` gives positives only, for
    in-batch losses.

    Returns:
      users [steps, batch] int32, items [steps, batch, 1 + num_neg] int32 (column 0 the
      positive), log_q [steps, batch] float32 (log of the positive's share of all training
      positives: the probability an in-batch negative is that item), weights [steps, batch].
    """
    neg_key, perm_key = jax.random.split(key)
    users, positives = data.users, data.items
    negatives = sample_negatives(
        neg_key, jnp.broadcast_to(users[:, None], (data.num_pairs, num_neg)), data
    )
    counts = jnp.zeros(data.num_items, jnp.float32).at[positives].add(1.0)
    log_q = jnp.log(counts[positives] / data.num_pairs)
    rows = {
        "users": users,
        "items": jnp.concatenate([positives[:, None], negatives], axis=1),
        "log_q": log_q,
    }
    return shuffle_into_batches(perm_key, rows, batch_size=batch_size)


# TrainConfig.batch_layout -> the function that builds a pointwise (BCE) epoch.
LAYOUTS = {"shuffled": epoch_batches, "grouped": grouped_batches}


def shuffled_batches(key: jax.Array, rows: dict, *, batch_size: int) -> Batches:
    """One epoch of shuffled labelled `rows` (e.g. {"users", "items", "ratings"}) as
    [steps, batch_size, ...] arrays, plus "weights" and one "dropout_key" per step: the epoch
    key is split into one key per step, so dropout masks repeat exactly on resume."""
    perm_key, dropout_key = jax.random.split(key)
    batches = shuffle_into_batches(perm_key, rows, batch_size=batch_size)
    steps = batches["weights"].shape[0]
    return batches | {"dropout_key": jax.random.split(dropout_key, steps)}
