"""Stage: dataset arrays. Synthetic interaction data: a planted signal for tests, and data of
a real dataset's shape (ml-1m, ml-20m) for offline benchmarks.

Both return a leave-one-out `InteractionData`, built with plain NumPy so tests that use them
do not depend on the file readers.
"""

from __future__ import annotations

import numpy as np

from ncf_jax.data.types import InteractionData

SHAPES = {  # (users, items, interactions) of the public datasets
    "ml-100k": (943, 1682, 100_000),
    "ml-1m": (6040, 3706, 1_000_209),
    "ml-20m": (138_493, 26_744, 20_000_263),
}


def _negatives(rng, positives: list[np.ndarray], num_items: int, n: int) -> np.ndarray:
    out = np.empty((len(positives), n), np.int32)
    for u, pos in enumerate(positives):
        allowed = np.setdiff1d(np.arange(num_items), pos)
        out[u] = rng.choice(allowed, size=n, replace=False)
    return out


def planted(
    num_users: int = 64,
    num_items: int = 80,
    *,
    per_user: int = 12,
    num_clusters: int = 4,
    num_test_negatives: int = 20,
    seed: int = 0,
) -> InteractionData:
    """Users of cluster c (u % num_clusters == c) interact only with items of cluster c.

    Each user gets `per_user` distinct in-cluster items: the last is the test item, the rest
    train. A ranker that learns the clusters puts in-cluster candidates first; a random one
    scores HR@K = K / (1 + num_test_negatives) in expectation.
    """
    rng = np.random.default_rng(seed)
    cluster_items = [np.arange(c, num_items, num_clusters) for c in range(num_clusters)]
    positives = [
        rng.choice(cluster_items[u % num_clusters], per_user, replace=False)
        for u in range(num_users)
    ]
    train_u = np.repeat(np.arange(num_users), per_user - 1)
    train_i = np.concatenate([p[:-1] for p in positives])
    order = np.lexsort((train_i, train_u))
    test_i = np.array([p[-1] for p in positives])
    return _assemble(
        f"planted-{num_users}x{num_items}",
        num_users,
        num_items,
        train_u[order],
        train_i[order],
        test_i,
        _negatives(rng, positives, num_items, num_test_negatives),
    )


def shaped(name: str = "ml-1m", *, num_test_negatives: int = 99, seed: int = 0) -> InteractionData:
    """Random data with the size of a public dataset and a Zipf-like item popularity.

    Exactly the real number of distinct (user, item) pairs; almost every user has at least
    two (one for train, one for test). Test negatives
    are drawn uniformly from all items and may hit a training item (benchmarks only).
    """
    num_users, num_items, n = SHAPES[name]
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, num_items + 1) ** 0.8
    popularity /= popularity.sum()
    # Two uniform items per user guarantee a train and a test pair; the rest follow Zipf.
    pairs = np.unique(
        np.repeat(np.arange(num_users), 2) * num_items + rng.integers(0, num_items, 2 * num_users)
    )
    while len(pairs) < n:  # top up the duplicates that np.unique removed
        extra = int((n - len(pairs)) * 1.3) + 16
        drawn = rng.integers(0, num_users, extra) * num_items + rng.choice(
            num_items, extra, p=popularity
        )
        pairs = np.union1d(pairs, drawn)
    surplus = len(pairs) - n
    if surplus:
        pairs = np.delete(pairs, rng.choice(len(pairs), surplus, replace=False))
    users, items = (pairs // num_items).astype(np.int32), (pairs % num_items).astype(np.int32)
    starts = np.searchsorted(users, np.arange(num_users))
    last = np.append(starts[1:], len(users)) - 1  # each user's last pair is the test pair
    keep = np.ones(len(users), bool)
    keep[last] = False
    negatives = rng.integers(0, num_items, (num_users, num_test_negatives), dtype=np.int32)
    return _assemble(
        name + "-synthetic", num_users, num_items, users[keep], items[keep], items[last], negatives
    )


def _assemble(name, num_users, num_items, train_u, train_i, test_i, negatives) -> InteractionData:
    n_train, n_test = len(train_u), len(test_i)
    return InteractionData(
        name=name,
        num_users=num_users,
        num_items=num_items,
        train_users=np.asarray(train_u, np.int32),
        train_items=np.asarray(train_i, np.int32),
        train_ratings=np.ones(n_train, np.float32),
        train_timestamps=np.zeros(n_train, np.int64),
        test_users=np.arange(n_test, dtype=np.int32),
        test_items=np.asarray(test_i, np.int32),
        test_ratings=np.ones(n_test, np.float32),
        test_timestamps=np.zeros(n_test, np.int64),
        test_negatives=np.asarray(negatives, np.int32),
        test_negatives_mask=np.ones(negatives.shape, bool),
        user_ids=np.arange(num_users),
        item_ids=np.arange(num_items),
    )
