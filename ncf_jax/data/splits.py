"""Stage: raw table -> dataset arrays. Id remap, cleaning, filters, splits and test negatives.

Everything here is deterministic given `DataConfig.seed` and independent of the row order of the
source file: every choice is made after sorting by values, never by position.

Pipeline (`ncf_jax.data.dataset.prepare`), with the choices the specification left open:
  1. ids -> contiguous codes by sorted original id, so the remap preserves order (MovieLens raw
     id r becomes r - 1 when every id in 1..n occurs, as in the NCF authors' files).
  2. duplicate (user, item) pairs collapse to the row with the latest timestamp, ties by the
     higher rating; rows equal in both are identical, so which one is kept does not matter.
  3. binarise: rating_threshold None keeps every row, else rows with rating >= threshold.
  4. min_user / min_item filters, repeated until both hold (a k-core), since one pass can leave
     a user below the minimum after its items were dropped.
  5. ids compacted again, then the split:
     "loo": each user's latest interaction is the test pair, ties broken by the LARGEST item id
       (the NCF authors' rule, reproduced exactly on ml-100k); the validation pair is the
       latest one before it, same rule. A user with one interaction keeps it in train with no
       test pair; a user with two gets a test pair but no validation pair, so the test set does
       not change when validation is switched on.
     "temporal": the latest `test_fraction` of all rows, ordered by (timestamp, user, item),
       is test; with validation the same number of rows just before it is validation.
     "random": a seeded permutation picks test rows, then validation rows, of the same size.
     For temporal/random, held-out rows whose user or item never occurs in train are dropped
     (they cannot be scored), then `test_rating_threshold` keeps rows rated >= it (applied to
     validation too, so model selection sees the test protocol). User and item id spaces are
     not shrunk by these drops.
  6. test negatives: see `sample_test_negatives`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from absl import logging

# Independent random streams per purpose, so adding validation does not change test negatives.
STREAM_SPLIT, STREAM_TEST_NEGATIVES, STREAM_VALID_NEGATIVES = 0, 1, 2
_CHUNK = 1 << 15  # users per negative-sampling chunk: bounds temporaries at ml-20m scale


def rng_for(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream])


def remap_ids(values) -> tuple[np.ndarray, np.ndarray]:
    """(codes [n] int32, originals [k]) with originals sorted, so codes keep the id order.

    Dense integer ids go through a lookup table (linear time; ml-20m's 20M ids in a fraction
    of a second); strings and very sparse integers fall back to sorting.
    """
    values = np.asarray(values)
    if values.dtype.kind in "iu" and len(values):
        low = int(values.min())
        span = int(values.max()) - low + 1
        if span <= max(4 * len(values), 1 << 20):
            present = np.zeros(span, dtype=bool)
            present[values - low] = True
            lookup = np.cumsum(present, dtype=np.int32) - 1
            originals = (np.flatnonzero(present) + low).astype(values.dtype)
            return lookup[values - low], originals
    originals, codes = np.unique(values, return_inverse=True)
    return codes.astype(np.int32), originals


def latest_per_pair(users, items, ratings, timestamps) -> np.ndarray:
    """Kept row of each (user, item), ordered by (user, item): latest timestamp, then rating.

    Rows equal in user, item, timestamp and rating are interchangeable, so the result does not
    depend on the row order. Only groups with duplicates pay for the tie-break sort.
    """
    key = users.astype(np.int64) * (int(items.max(initial=0)) + 1) + items
    order = np.argsort(key)
    sorted_key = key[order]
    starts = np.ones(len(key), dtype=bool)
    starts[1:] = sorted_key[1:] != sorted_key[:-1]
    if starts.all():
        return order
    group = np.cumsum(starts) - 1
    in_duplicate = np.bincount(group)[group] > 1
    position = np.flatnonzero(in_duplicate)
    rows = order[position]
    by_value = np.lexsort((ratings[rows], timestamps[rows], sorted_key[position]))
    grouped = sorted_key[position][by_value]
    last = np.ones(len(grouped), dtype=bool)
    last[:-1] = grouped[1:] != grouped[:-1]
    keep = ~in_duplicate
    keep[position[by_value][last]] = True
    return order[keep]


def k_core(users, items, *, min_user: int, min_item: int) -> np.ndarray:
    """Boolean mask of rows kept once every user has >= min_user and item >= min_item rows."""
    keep = np.ones(len(users), dtype=bool)
    while True:
        user_counts = np.bincount(users[keep], minlength=users.max(initial=-1) + 1)
        item_counts = np.bincount(items[keep], minlength=items.max(initial=-1) + 1)
        new = keep & (user_counts[users] >= min_user) & (item_counts[items] >= min_item)
        if new.sum() == keep.sum():
            return new
        keep = new


def _time_item_key(timestamps, items) -> np.ndarray:
    """int64 key ordering rows by (timestamp, item); a lexsort rank where that would overflow."""
    low, high = int(timestamps.min()), int(timestamps.max())
    num_items = int(items.max()) + 1
    if (high - low + 1) * num_items < 2**62:
        return (timestamps.astype(np.int64) - low) * num_items + items
    rank = np.empty(len(items), dtype=np.int64)
    rank[np.lexsort((items, timestamps))] = np.arange(len(items))
    return rank


def _latest(users, key, eligible) -> np.ndarray:
    """Mask of each eligible user's row with the largest key >= 0 (first such row on a tie)."""
    best = np.full(len(eligible), -1, dtype=np.int64)
    np.maximum.at(best, users, key)
    candidates = np.flatnonzero((key == best[users]) & (key >= 0) & eligible[users])
    _, first = np.unique(users[candidates], return_index=True)
    mask = np.zeros(len(users), dtype=bool)
    mask[candidates[first]] = True
    return mask


def leave_one_out(users, items, timestamps, *, validation: bool):
    """(train, valid, test) row indices: per user, latest row is test, ties by largest item.

    Linear time: one int64 key per row orders (timestamp, item), and a per-user maximum picks
    the test row, then the validation row among the rest; no sort of all rows.

    Examples:
        >>> users, items = np.array([0, 0, 0, 1]), np.array([5, 3, 4, 2])
        >>> ts = np.array([2, 9, 9, 1])
        >>> [x.tolist() for x in leave_one_out(users, items, ts, validation=True)]
        [[0, 3], [1], [2]]
    """
    key = _time_item_key(timestamps, items)
    count = np.bincount(users)
    is_test = _latest(users, key, count >= 2)
    is_valid = np.zeros_like(is_test)
    if validation:
        is_valid = _latest(users, np.where(is_test, -1, key), count >= 3)
    logging.info("leave-one-out: %d users with one interaction stay in train", (count == 1).sum())
    return np.flatnonzero(~(is_test | is_valid)), np.flatnonzero(is_valid), np.flatnonzero(is_test)


def holdout(n: int, order: np.ndarray, *, test_fraction: float, validation: bool):
    """(train, valid, test) from a row order: test is its tail, validation the slice before."""
    n_test = int(round(test_fraction * n))
    n_valid = n_test if validation else 0
    if n_test == 0 or n_test + n_valid >= n:
        raise ValueError(f"test_fraction={test_fraction} leaves no train or no test rows of {n}")
    test, valid = order[n - n_test :], order[n - n_test - n_valid : n - n_test]
    return np.sort(order[: n - n_test - n_valid]), np.sort(valid), np.sort(test)


def drop_unseen(train, held, users, items, *, what: str) -> np.ndarray:
    """Held-out rows whose user and item both occur in train; logs how many were dropped."""
    seen_users = np.zeros(users.max() + 1, dtype=bool)
    seen_items = np.zeros(items.max() + 1, dtype=bool)
    seen_users[users[train]] = True
    seen_items[items[train]] = True
    keep = seen_users[users[held]] & seen_items[items[held]]
    logging.info(
        "%s: dropped %d of %d rows with a user or item unseen in train",
        what,
        (~keep).sum(),
        len(held),
    )
    return held[keep]


def _distinct_ranks(free: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """[m, k] distinct uniform draws from [0, free[r]) per row r; -1 pads rows with free < k.

    Draw with replacement, then redraw every repeat (all but the first occurrence) until a row
    has none. The rule looks only at equality of values, never at the values, so the result is
    invariant under relabelling and hence uniform over ordered k-subsets.
    """
    short = free < k
    ranks = rng.integers(0, np.maximum(free, 1)[:, None], size=(len(free), k))
    active = np.flatnonzero(~short)
    while active.size:
        sub = ranks[active]
        order = np.argsort(sub, axis=1, kind="stable")
        repeat_sorted = np.zeros(sub.shape, dtype=bool)
        sorted_sub = np.take_along_axis(sub, order, axis=1)
        repeat_sorted[:, 1:] = sorted_sub[:, 1:] == sorted_sub[:, :-1]
        repeat = np.zeros_like(repeat_sorted)
        np.put_along_axis(repeat, order, repeat_sorted, axis=1)
        rows, cols = np.nonzero(repeat)
        ranks[active[rows], cols] = rng.integers(0, free[active[rows]])
        active = active[repeat.any(axis=1)]
    columns = np.arange(k)
    ranks[short] = np.where(columns < free[short, None], columns, -1)
    return ranks


def sample_test_negatives(
    users,
    own_items,
    known_indptr,
    known_indices,
    *,
    num_items: int,
    num_negatives: int,
    rng: np.random.Generator,
):
    """Per pair, `num_negatives` items the user never interacted with, without replacement.

    A rank r in [0, #non-positives) maps to the r-th non-positive item by binary search over
    q_j = p_j - j (sorted positives p minus their position): item = r + #{j : q_j <= r}. All
    users share one sorted key array (user * (num_items + 1) + q), so no users x items matrix
    is built. A user with fewer candidates than asked gets all of them, padded with its own
    pair item and mask False (the same convention as a published negative equal to it).

    Returns:
      (negatives [n, num_negatives] int32, mask [n, num_negatives] bool).
    """
    n, k = len(users), num_negatives
    negatives, mask = np.zeros((n, k), np.int32), np.ones((n, k), bool)
    if n == 0 or k == 0:
        return negatives, mask
    degree = np.diff(known_indptr)
    position = np.arange(len(known_indices)) - np.repeat(known_indptr[:-1], degree)
    stride = np.int64(num_items + 1)
    owner = np.repeat(np.arange(len(degree), dtype=np.int64), degree)
    keys = owner * stride + (known_indices - position)
    for start in range(0, n, _CHUNK):
        u = np.asarray(users[start : start + _CHUNK], dtype=np.int64)
        ranks = _distinct_ranks(num_items - degree[u], k, rng)
        pad = ranks < 0
        ranks[pad] = 0
        below = np.searchsorted(keys, u[:, None] * stride + ranks, side="right")
        items = ranks + below - known_indptr[u][:, None]
        own = np.asarray(own_items[start : start + _CHUNK])[:, None]
        negatives[start : start + _CHUNK] = np.where(pad, own, items)
        mask[start : start + _CHUNK] = ~pad
    if (~mask).any():
        logging.warning(
            "%d pairs have fewer than %d candidate negatives; padded and masked",
            (~mask).any(axis=1).sum(),
            k,
        )
    return negatives, mask


class Rows(NamedTuple):
    """Parallel interaction arrays: int32 ids, float32 ratings, int64 timestamps."""

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    timestamps: np.ndarray

    def take(self, index) -> Rows:
        return Rows(*(a[index] for a in self))

    def fields(self, prefix: str) -> dict[str, np.ndarray]:
        """InteractionData fields, e.g. {"train_users": ..., "train_items": ...}."""
        return {f"{prefix}_{name}": a for name, a in zip(self._fields, self, strict=True)}


def with_negatives(
    rows: Rows, prefix: str, known, *, num_items: int, num_negatives: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """`rows.fields(prefix)` plus sampled `<prefix>_negatives` and `<prefix>_negatives_mask`."""
    negatives, mask = sample_test_negatives(
        rows.users, rows.items, *known, num_items=num_items, num_negatives=num_negatives, rng=rng
    )
    return {
        **rows.fields(prefix),
        f"{prefix}_negatives": negatives,
        f"{prefix}_negatives_mask": mask,
    }


def sorted_csr(rows: Rows, num_users: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR (indptr, indices) of rows sorted by (user, item) and unique, as `clean` returns."""
    indptr = np.zeros(num_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows.users, minlength=num_users), out=indptr[1:])
    return indptr, rows.items
