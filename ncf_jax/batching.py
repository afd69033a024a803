"""Stage: epoch batches. One epoch of training rows built and shuffled on device, for every task.

NCF: each training positive contributes itself and `num_neg` fresh negatives; the rows are
permuted and cut into `[steps, batch_size]` (`epoch_batches`, built step by step inside the
epoch's scan as a `StepBatches`, so an epoch holds nothing larger than its negatives), or kept
beside their negatives (`grouped_batches`). Two-tower: one row of candidates per positive
(`candidate_batches`). Ratings and clicks: the labelled rows themselves, shuffled
(`shuffled_batches`). The last batch is padded with weight-0 rows, so every sample is seen exactly
once per epoch and no remainder is silently dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from ncf_jax.interactions import DeviceInteractions
from ncf_jax.permutation import permutation, permuted, round_keys
from ncf_jax.sampling import sample_negatives

Batches = dict[str, jax.Array]  # name -> [steps, batch_size, ...]; always has "weights"


@struct.dataclass
class StepBatches:
    """An epoch whose batches are built inside the scan: step s's batch is `build(rows, s)`.

    `rows` holds only arrays linear in the training data (the positives, the epoch's sampled
    negatives, the permutation's keys); the shuffled `[steps, batch_size]` copies of users, items
    and labels, three to four times the negatives' bytes, are never made. At the Netflix scale
    (100 M positives, 1 negative each) that is about 3 GB less per epoch.
    """

    rows: Any
    steps: int = struct.field(pytree_node=False)
    build: Callable[[Any, jax.Array], Batches] = struct.field(pytree_node=False)

    def batch(self, step) -> Batches:
        return self.build(self.rows, step)

    def materialise(self) -> Batches:
        """Every step's batch stacked, `[steps, batch_size, ...]`: the same arrays the scan sees."""
        return jax.vmap(self.batch)(jnp.arange(self.steps))


def num_steps(num_pairs: int, *, num_neg: int, batch_size: int) -> int:
    """Steps per epoch: ceil(num_pairs * (1 + num_neg) / batch_size)."""
    return -(-num_pairs * (1 + num_neg) // batch_size)


# Epochs of more samples than this build each batch inside the scan (`StepBatches`); smaller
# ones are stacked before it, which skips a per-step cycle walk (about a fifth of the floor's
# step on ML-100K) and keeps the last bit of the reported loss as it was (XLA fuses the loss's
# sum differently when its inputs are built in the loop; the parameters are the same bitwise).
STEP_BUILT_ABOVE = 1 << 24  # samples: ML-1M with 4 negatives stacks, ML-20M builds per step


def epoch_batches(
    key: jax.Array,
    data: DeviceInteractions,
    *,
    num_neg: int,
    batch_size: int,
    step_built: bool | None = None,
) -> Batches | StepBatches:
    """Samples negatives, shuffles and batches one epoch, all on device.

    The rows are the `n` positives, then `num_neg` blocks of `n` negatives (block k's row i
    belongs to user `users[i]`), shuffled by `permutation(perm_key, n * (1 + num_neg))` and cut
    into batches, the last padded with row 0 at weight False. Negatives are drawn for the whole
    epoch at once. `step_built` (None: above `STEP_BUILT_ABOVE` samples) returns a
    `StepBatches` whose steps compute their own slice of the permutation and gather their rows;
    else the same batches stacked.
    """
    neg_key, perm_key = jax.random.split(key)
    n = data.num_pairs
    total = n * (1 + num_neg)
    negatives = sample_negatives(neg_key, jnp.tile(data.users, num_neg), data)
    rows = {"users": data.users, "items": data.items, "negatives": negatives}
    rows["keys"] = round_keys(perm_key)

    def build(rows, step):
        position = step * batch_size + jnp.arange(batch_size, dtype=jnp.int32)
        valid = position < total
        row = jnp.where(valid, permuted(rows["keys"], total, jnp.where(valid, position, 0)), 0)
        positive = row < n
        negative = jnp.maximum(row - n, 0)  # the row's index among the negatives
        users = rows["users"][jnp.where(positive, row, negative % n)]
        items = jnp.where(
            positive, rows["items"][jnp.where(positive, row, 0)], rows["negatives"][negative]
        )
        # bool labels and weights: a quarter of float32's bytes; the losses cast them.
        return {"users": users, "items": items, "labels": positive, "weights": valid}

    batches = StepBatches(rows, steps=-(-total // batch_size), build=build)
    if step_built is None:
        step_built = total > STEP_BUILT_ABOVE
    return batches if step_built else batches.materialise()


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


def shuffle_into_batches(key: jax.Array, rows: dict, *, batch_size: int) -> Batches:
    """Permutes equal-length row arrays together and cuts them into [steps, batch_size, ...].

    A "weights" entry (1.0 for real rows, 0.0 for the padding of the last batch) is added.
    """
    total = len(next(iter(rows.values())))
    steps = -(-total // batch_size)
    order = jnp.pad(permutation(key, total), (0, steps * batch_size - total))
    batches = {name: x[order].reshape(steps, batch_size, *x.shape[1:]) for name, x in rows.items()}
    weights = (jnp.arange(steps * batch_size) < total).astype(jnp.float32)
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
