"""Stage: dataset arrays. The container every later stage reads, and its CSR function.

All ids are contiguous (0..num_users-1, 0..num_items-1); `user_ids` / `item_ids` map them back
to the ids of the source file. Arrays are NumPy: moving them to a device is the job of
`ncf_jax.interactions`, so this module stays free of JAX.
"""

from __future__ import annotations

import dataclasses

import numpy as np


def csr_from_pairs(
    users: np.ndarray, items: np.ndarray, num_users: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-user sorted, de-duplicated item lists in CSR form.

    Args:
      users: [n] int user ids in [0, num_users).
      items: [n] int item ids.
      num_users: number of rows of the result.

    Returns:
      (indptr [num_users + 1] int64, indices [nnz] int32): the items of user u are
      `indices[indptr[u]:indptr[u + 1]]`, ascending and unique.

    >>> indptr, indices = csr_from_pairs(np.array([1, 0, 1, 1]), np.array([5, 2, 3, 5]), 3)
    >>> indptr.tolist(), indices.tolist()
    ([0, 1, 3, 3], [2, 3, 5])
    """
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    order = np.lexsort((items, users))
    users, items = users[order], items[order]
    keep = np.ones(len(users), dtype=bool)
    keep[1:] = (users[1:] != users[:-1]) | (items[1:] != items[:-1])
    users, items = users[keep], items[keep]
    indptr = np.zeros(num_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(users, minlength=num_users), out=indptr[1:])
    return indptr, items.astype(np.int32)


def _empty(dtype, *shape) -> np.ndarray:
    return np.zeros(shape or (0,), dtype=dtype)


@dataclasses.dataclass(frozen=True, eq=False)
class InteractionData:
    """A preprocessed interaction dataset, split into train / (validation) / test.

    Pairs are parallel arrays. For the leave-one-out protocol there is one test pair per test
    user and `test_negatives[j]` holds the sampled competitors of test pair j; for temporal and
    random splits a user may have several test pairs and `test_negatives` has 0 columns.

    Fields:
      name: dataset name, e.g. "ml-100k" or "ncf:ml-1m".
      num_users, num_items: sizes of the contiguous id spaces.
      train_users, train_items: [n_train] int32, sorted by (user, item).
      train_ratings: [n_train] float32 (the raw rating; 1.0 where the source has none).
      train_timestamps: [n_train] int64 (0 where the source has none).
      test_users, test_items, test_ratings, test_timestamps: [n_test], likewise.
      test_negatives: [n_test, n_neg] int32 sampled negatives of each test pair.
      test_negatives_mask: [n_test, n_neg] bool; False marks an entry that must not compete
        (a published negative equal to the user's own test item).
      valid_*: the optional validation split, same layout as test (size 0 when absent).
      user_ids, item_ids: [num_users], [num_items] original ids of the source.
    """

    name: str
    num_users: int
    num_items: int
    train_users: np.ndarray
    train_items: np.ndarray
    train_ratings: np.ndarray
    train_timestamps: np.ndarray
    test_users: np.ndarray
    test_items: np.ndarray
    test_ratings: np.ndarray
    test_timestamps: np.ndarray
    test_negatives: np.ndarray
    test_negatives_mask: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray
    valid_users: np.ndarray = dataclasses.field(default_factory=lambda: _empty(np.int32))
    valid_items: np.ndarray = dataclasses.field(default_factory=lambda: _empty(np.int32))
    valid_ratings: np.ndarray = dataclasses.field(default_factory=lambda: _empty(np.float32))
    valid_timestamps: np.ndarray = dataclasses.field(default_factory=lambda: _empty(np.int64))
    valid_negatives: np.ndarray = dataclasses.field(default_factory=lambda: _empty(np.int32, 0, 0))
    valid_negatives_mask: np.ndarray = dataclasses.field(default_factory=lambda: _empty(bool, 0, 0))

    @property
    def has_validation(self) -> bool:
        return len(self.valid_users) > 0

    def train_csr(self) -> tuple[np.ndarray, np.ndarray]:
        """CSR of each user's training items."""
        return csr_from_pairs(self.train_users, self.train_items, self.num_users)

    def known_csr(self) -> tuple[np.ndarray, np.ndarray]:
        """CSR of every item a user is known to like: train, validation and test."""
        users = np.concatenate([self.train_users, self.valid_users, self.test_users])
        items = np.concatenate([self.train_items, self.valid_items, self.test_items])
        return csr_from_pairs(users, items, self.num_users)

    def stats(self) -> dict:
        """Summary statistics, as printed by `experiments.prepare`."""
        n_train, n_test = len(self.train_users), len(self.test_users)
        n_valid = len(self.valid_users)
        return {
            "dataset": self.name,
            "users": int(self.num_users),
            "items": int(self.num_items),
            "interactions": int(n_train + n_valid + n_test),
            "train_interactions": int(n_train),
            "valid_interactions": int(n_valid),
            "test_interactions": int(n_test),
            "test_users": int(len(np.unique(self.test_users))),
            "test_negatives_per_user": int(self.test_negatives.shape[1]),
            "masked_test_negatives": int((~self.test_negatives_mask).sum()),
            "density": float((n_train + n_valid + n_test) / (self.num_users * self.num_items)),
        }
