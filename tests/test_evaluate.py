"""Tests for ncf_jax.evaluate: chunked evaluators against brute-force NumPy rankings."""

import doctest
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ncf_jax import evaluate
from ncf_jax.data.types import csr_from_pairs

NUM_USERS, NUM_ITEMS, DIM = 25, 40, 2


def make_params(seed):
    """Small integer embeddings: dot products are exact integers with many ties."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 3, (NUM_USERS, DIM)).astype(np.float32)
    items = rng.integers(0, 3, (NUM_ITEMS, DIM)).astype(np.float32)
    return jnp.asarray(users), jnp.asarray(items)


def score_fn(params, users, items):
    return jnp.einsum("cd,cmd->cm", params[0][users], params[1][items])


def score_all_fn(params, users):
    return params[0][users] @ params[1].T


# ---------------------------------------------------------------- sampled protocol


def sampled_data(seed, n=37, m=9):
    rng = np.random.default_rng(seed)
    users = rng.integers(0, NUM_USERS, n)
    items = rng.integers(0, NUM_ITEMS, n)
    negatives = rng.integers(0, NUM_ITEMS, (n, m))
    mask = rng.random((n, m)) < 0.85
    mask[0] = False  # a row with no competitor at all
    return users, items, negatives, mask


def ref_sampled(params, users, items, negatives, mask, k, ties):
    u, v = (np.asarray(p) for p in params)
    hr, ndcg = [], []
    for user, item, negs, valid in zip(users, items, negatives, mask, strict=True):
        pos = u[user] @ v[item]
        neg = [u[user] @ v[j] for j, ok in zip(negs, valid, strict=True) if ok]
        rank = sum(s > pos for s in neg) + (ties == "pessimistic") * sum(s == pos for s in neg)
        hr.append(float(rank < k))
        ndcg.append(1 / math.log2(rank + 2) if rank < k else 0.0)
    return np.mean(hr), np.mean(ndcg)


@pytest.mark.parametrize("ties", ["pessimistic", "optimistic"])
def test_sampled_chunked_equals_unchunked_equals_reference(ties):
    params, data = make_params(0), sampled_data(0)
    want = ref_sampled(params, *data, k=3, ties=ties)
    for chunk_size in (8, 1000):  # 37 pairs: 5 chunks with a padded tail, then one chunk
        run = evaluate.make_sampled_evaluator(
            score_fn, *data, k=3, ties=ties, chunk_size=chunk_size
        )
        got = run(params)
        assert set(got) == {"hr@3", "ndcg@3"}
        assert all(isinstance(v, jax.Array) and v.shape == () for v in got.values())
        np.testing.assert_allclose([got["hr@3"], got["ndcg@3"]], want, rtol=1e-6)


def test_sampled_random_ties_lie_between_the_bounds_and_repeat():
    params, data = make_params(1), sampled_data(1)
    low = ref_sampled(params, *data, k=3, ties="pessimistic")
    high = ref_sampled(params, *data, k=3, ties="optimistic")
    assert low[0] < high[0]  # the data has ties that matter
    run = evaluate.make_sampled_evaluator(score_fn, *data, k=3, ties="random", chunk_size=8)
    key = jax.random.key(0)
    first, again = run(params, key), run(params, key)
    assert low[0] <= float(first["hr@3"]) <= high[0]
    assert low[1] <= float(first["ndcg@3"]) <= high[1]
    assert float(first["hr@3"]) == float(again["hr@3"])
    with pytest.raises(ValueError, match="PRNG key"):
        run(params)


def test_sampled_evaluator_rejects_bad_input():
    users, items, negatives, mask = sampled_data(2)
    with pytest.raises(ValueError, match="ties must be one of"):
        evaluate.make_sampled_evaluator(score_fn, users, items, negatives, ties="worst")
    with pytest.raises(ValueError, match="negatives must be"):
        evaluate.make_sampled_evaluator(score_fn, users, items, negatives[:5])
    with pytest.raises(ValueError, match="negatives_mask"):
        evaluate.make_sampled_evaluator(score_fn, users, items, negatives, mask[:, :2])
    with pytest.raises(ValueError, match="k must be"):
        evaluate.make_sampled_evaluator(score_fn, users, items, negatives, k=0)


# ---------------------------------------------------------------- full catalogue


def full_data(seed):
    """Train pairs (one user has seen all but 3 items), test pairs disjoint from train."""
    rng = np.random.default_rng(seed)
    seen = rng.random((NUM_USERS, NUM_ITEMS)) < 0.3
    seen[5] = True
    seen[5, [7, 19, 33]] = False  # fewer than K unseen items: top-K has empty slots
    test = (rng.random((NUM_USERS, NUM_ITEMS)) < 0.08) & ~seen
    test[5, 19] = True
    test[:4] = False  # users without test items are not evaluated
    test[4, :] = False
    test[4, 0] = True
    train_users, train_items = np.nonzero(seen)
    test_users, test_items = np.nonzero(test)
    # Pairs need not be grouped by user, and a repeated pair counts once.
    test_users, test_items = (
        np.append(test_users, test_users[:3]),
        np.append(test_items, test_items[:3]),
    )
    order = rng.permutation(len(test_users))
    return train_users, train_items, test_users[order], test_items[order]


def ref_full(params, train_users, train_items, test_users, test_items, k):
    scores = np.asarray(params[0]) @ np.asarray(params[1]).T
    scores[train_users, train_items] = -np.inf
    rows, union = [], set()
    for user in np.unique(test_users):
        relevant = set(test_items[test_users == user].tolist())
        order = np.argsort(-scores[user], kind="stable")[:k]  # ties: lower item id first
        top = [int(i) for i in order if scores[user, i] > -np.inf]
        union.update(top)
        hits = [i in relevant for i in top]
        idcg = sum(1 / math.log2(j + 2) for j in range(min(len(relevant), k)))
        rows.append(
            {
                "hr": float(any(hits)),
                "recall": sum(hits) / len(relevant),
                "precision": sum(hits) / k,
                "ndcg": sum(1 / math.log2(j + 2) for j, h in enumerate(hits) if h) / idcg,
                "mrr": 1 / (hits.index(True) + 1) if any(hits) else 0.0,
            }
        )
    want = {f"{name}@{k}": np.mean([r[name] for r in rows]) for name in rows[0]}
    want[f"coverage@{k}"] = len(union) / NUM_ITEMS
    return want


def test_full_evaluator_matches_brute_force_ranking():
    params, (train_users, train_items, test_users, test_items) = make_params(3), full_data(3)
    indptr, indices = csr_from_pairs(train_users, train_items, NUM_USERS)
    want = ref_full(params, train_users, train_items, test_users, test_items, k=5)
    assert want["hr@5"] > 0  # the comparison is not vacuous
    for chunk_size in (3, 1000):  # 20 test users: 7 chunks with a padded tail, then one
        run = evaluate.make_full_evaluator(
            score_all_fn,
            test_users,
            test_items,
            indptr,
            indices,
            num_items=NUM_ITEMS,
            k=5,
            chunk_size=chunk_size,
        )
        got = jax.device_get(run(params))
        assert set(got) == set(want)
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-6, err_msg=name)


def test_full_evaluator_rejects_bad_input():
    indptr, indices = csr_from_pairs(np.array([0]), np.array([1]), NUM_USERS)
    args = (score_all_fn, np.array([0]), np.array([2]), indptr, indices)
    with pytest.raises(ValueError, match="k must be in"):
        evaluate.make_full_evaluator(*args, num_items=NUM_ITEMS, k=NUM_ITEMS + 1)
    with pytest.raises(ValueError, match="test_items must lie"):
        evaluate.make_full_evaluator(*args[:2], np.array([99]), *args[3:], num_items=NUM_ITEMS)
    with pytest.raises(ValueError, match="test_users must lie"):
        evaluate.make_full_evaluator(args[0], np.array([99]), *args[2:], num_items=NUM_ITEMS)


def test_docstring_examples():
    result = doctest.testmod(evaluate, extraglobs={"jnp": jnp}, raise_on_error=False)
    assert result.attempted > 0 and result.failed == 0


def test_sampled_evaluator_cutoffs_share_one_pass():
    users, items, negatives, mask = sampled_data(2)
    params = make_params(0)
    both = evaluate.make_sampled_evaluator(score_fn, users, items, negatives, mask, k=10,
                                           cutoffs=(1, 5, 10))  # fmt: skip
    out = {name: float(v) for name, v in both(params).items()}
    assert set(out) == {"hr@10", "ndcg@10", "hr@1", "ndcg@1", "hr@5", "ndcg@5"}
    for k in (1, 5, 10):
        one = evaluate.make_sampled_evaluator(score_fn, users, items, negatives, mask, k=k)
        assert {n: float(v) for n, v in one(params).items()} == {
            f"hr@{k}": out[f"hr@{k}"],
            f"ndcg@{k}": out[f"ndcg@{k}"],
        }
    with pytest.raises(ValueError, match="cutoffs must be"):
        evaluate.make_sampled_evaluator(score_fn, users, items, negatives, cutoffs=(0,))
