"""Tests for ncf_jax.metrics: brute-force NumPy references with ties and masks, hand values."""

import doctest
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ncf_jax import metrics

# ---------------------------------------------------------------- references (plain Python)


def ref_rank(pos, neg, mask):
    """(strictly above, tied) counts per row, looping over valid negatives."""
    strict, tied = [], []
    for p, row, m in zip(pos, neg, mask, strict=True):
        strict.append(sum(1 for s, v in zip(row, m, strict=True) if v and s > p))
        tied.append(sum(1 for s, v in zip(row, m, strict=True) if v and s == p))
    return np.array(strict), np.array(tied)


def ref_topk(topk, relevant):
    """Per-row dicts of every top-K metric, from sets and math.log2."""
    out = []
    for items, rel in zip(topk.tolist(), relevant.tolist(), strict=True):
        rel = {r for r in rel if r >= 0}
        hits = [i >= 0 and i in rel for i in items]
        k = len(items)
        dcg = sum(1 / math.log2(j + 2) for j, h in enumerate(hits) if h)
        idcg = sum(1 / math.log2(j + 2) for j in range(min(len(rel), k)))
        out.append(
            {
                "hr": float(any(hits)),
                "recall": sum(hits) / len(rel) if rel else 0.0,
                "precision": sum(hits) / k,
                "ndcg": dcg / idcg if rel else 0.0,
                "mrr": 1 / (hits.index(True) + 1) if any(hits) else 0.0,
            }
        )
    return out


def ref_auc(scores, labels):
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    credit = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return credit / (len(pos) * len(neg))


def tied_data(seed, n=60, m=15, levels=5):
    """Integer-valued scores (many ties) and a mask with some fully masked rows."""
    rng = np.random.default_rng(seed)
    pos = rng.integers(0, levels, n).astype(np.float32)
    neg = rng.integers(0, levels, (n, m)).astype(np.float32)
    mask = rng.random((n, m)) < 0.8
    mask[:3] = False
    return pos, neg, mask


# ---------------------------------------------------------------- sampled ranking


def test_worked_example_by_hand():
    pos, neg = jnp.array([0.9, 0.5]), jnp.array([[0.9, 0.1, 0.2], [0.7, 0.5, 0.5]])
    pess = metrics.rank_against_negatives(pos, neg)
    opt = metrics.rank_against_negatives(pos, neg, ties="optimistic")
    assert pess.dtype == jnp.int32
    assert pess.tolist() == [1, 3] and opt.tolist() == [0, 1]
    assert metrics.hit_rate(pess, 1).tolist() == [0.0, 0.0]
    assert metrics.hit_rate(opt, 1).tolist() == [1.0, 0.0]
    np.testing.assert_allclose(metrics.ndcg(pess, 3), [1 / math.log2(3), 0.0], rtol=1e-6)
    np.testing.assert_allclose(metrics.ndcg(opt, 3), [1.0, 1 / math.log2(3)], rtol=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_rank_matches_reference_with_ties_and_masks(seed):
    pos, neg, mask = tied_data(seed)
    strict, tied = ref_rank(pos, neg, mask)
    pess = metrics.rank_against_negatives(pos, neg, mask)
    opt = metrics.rank_against_negatives(pos, neg, mask, ties="optimistic")
    np.testing.assert_array_equal(pess, strict + tied)
    np.testing.assert_array_equal(opt, strict)
    assert tied.sum() > 0  # the data really has ties
    hit_rate, ndcg = metrics.hit_rate, metrics.ndcg
    for k in (1, 3, neg.shape[1], neg.shape[1] + 5):
        rank = np.asarray(pess)
        np.testing.assert_array_equal(hit_rate(pess, k), (rank < k).astype(float))
        want = [1 / math.log2(r + 2) if r < k else 0.0 for r in rank]
        np.testing.assert_allclose(ndcg(pess, k), want, rtol=1e-6)


def test_random_ties_bounded_and_mean_is_half_the_ties():
    pos, neg, mask = tied_data(2)
    strict, tied = ref_rank(pos, neg, mask)
    # 4000 copies of the data under one key: independent coins for every copy, one compile
    # (vmapping the PRNG over 4000 keys instead compiles for seconds).
    reps = 4000
    tile = lambda x: np.tile(x, (reps,) + (1,) * (x.ndim - 1))
    rank = metrics.rank_against_negatives(
        tile(pos), tile(neg), tile(mask), ties="random", key=jax.random.key(0)
    )
    ranks = np.asarray(rank).reshape(reps, len(pos))
    assert (ranks >= strict).all() and (ranks <= strict + tied).all()
    # Binomial(t, 1/2) mean: the standard error over 4000 draws is <= sqrt(15 / 4) / 63 ~ 0.03.
    np.testing.assert_allclose(ranks.mean(axis=0), strict + tied / 2, atol=0.15)
    np.testing.assert_allclose(ranks.var(axis=0), tied / 4, atol=0.5)


def test_random_ties_needs_key_and_bad_policy_raises():
    with pytest.raises(ValueError, match="PRNG key"):
        metrics.rank_against_negatives(jnp.zeros(2), jnp.zeros((2, 3)), ties="random")
    with pytest.raises(ValueError, match="ties must be one of"):
        metrics.rank_against_negatives(jnp.zeros(2), jnp.zeros((2, 3)), ties="fair")


def test_fully_masked_row_and_extremes():
    pos, neg = jnp.array([1.0, 1.0]), jnp.array([[5.0, 5.0], [0.0, 5.0]])
    mask = jnp.array([[False, False], [True, True]])
    rank = metrics.rank_against_negatives(pos, neg, mask)
    assert rank.tolist() == [0, 1]  # no competitor: the positive is first, a defined value
    assert metrics.hit_rate(rank, 1).tolist() == [1.0, 0.0]
    assert metrics.ndcg(rank, 1).tolist() == [1.0, 0.0]
    assert metrics.hit_rate(rank, 2).tolist() == [1.0, 1.0]  # k >= m: always a hit
    assert float(metrics.masked_mean(rank, jnp.zeros(2, bool))) == 0.0
    assert float(metrics.masked_mean(jnp.zeros(0))) == 0.0


def test_nan_scores_count_against_the_positive():
    pos, neg = jnp.array([jnp.nan, 1.0]), jnp.array([[0.0, 0.0], [jnp.nan, 0.0]])
    for ties in ("pessimistic", "optimistic"):
        assert metrics.rank_against_negatives(pos, neg, ties=ties).tolist() == [2, 1]


def test_jit_vmap_and_op_by_op_agree():
    pos, neg, mask = tied_data(3)
    for ties in ("pessimistic", "optimistic"):
        jitted = metrics.rank_against_negatives(pos, neg, mask, ties=ties)  # jitted by default
        row = lambda p, s, m, ties=ties: metrics.rank_against_negatives(p, s, m, ties=ties)
        np.testing.assert_array_equal(jitted, jax.vmap(row)(pos, neg, mask))
    with jax.disable_jit():  # the traced code path equals plain op-by-op execution
        eager = metrics.rank_against_negatives(pos, neg, mask)
        eager_ndcg = metrics.ndcg(eager, 3)
    np.testing.assert_array_equal(eager, metrics.rank_against_negatives(pos, neg, mask))
    np.testing.assert_allclose(eager_ndcg, metrics.ndcg(eager, 3), rtol=1e-6)


# ---------------------------------------------------------------- full-catalogue top-K


@jax.jit
def all_topk_metrics(topk, relevant):
    hits = metrics.topk_hits(topk, relevant)
    count = metrics.num_relevant(relevant)
    return {
        "hr": metrics.hit_rate_at_k(hits),
        "recall": metrics.recall_at_k(hits, count),
        "precision": metrics.precision_at_k(hits),
        "ndcg": metrics.ndcg_at_k(hits, count),
        "mrr": metrics.mrr_at_k(hits),
    }


def random_topk(seed, n=40, k=6, num_items=30, r=7):
    rng = np.random.default_rng(seed)
    topk = np.stack([rng.permutation(num_items)[:k] for _ in range(n)]).astype(np.int32)
    topk[rng.random((n, k)) < 0.1] = -1  # empty slots
    relevant = np.full((n, r), -1, np.int32)
    for i in range(n):
        count = rng.integers(0, r + 1)  # includes rows with nothing relevant
        relevant[i, rng.permutation(r)[:count]] = rng.permutation(num_items)[:count]
    return topk, relevant


@pytest.mark.parametrize("seed", [0, 1])
def test_topk_metrics_match_reference(seed):
    topk, relevant = random_topk(seed)
    got = all_topk_metrics(topk, relevant)
    want = ref_topk(topk, relevant)
    for name, values in got.items():
        assert not np.isnan(values).any()
        np.testing.assert_allclose(values, [w[name] for w in want], rtol=1e-6, err_msg=name)


def test_topk_hand_values_and_mask_form():
    topk, relevant = np.array([[4, 2, 9]]), np.array([[9, 2, 7, 8]])
    got = all_topk_metrics(topk, relevant)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)  # min(4 relevant, K=3) ideal hits
    want = (1 / math.log2(3) + 1 / math.log2(4)) / idcg
    np.testing.assert_allclose(got["ndcg"], [want], rtol=1e-6)
    np.testing.assert_allclose(got["precision"], [2 / 3], rtol=1e-6)
    assert got["mrr"].tolist() == [0.5] and got["recall"].tolist() == [0.5]
    # The same rows given as a mask instead of -1 padding.
    mask = np.array([[True, False, True, True]])
    masked = metrics.topk_hits(topk, relevant, mask)
    assert masked.tolist() == [[False, False, True]]
    assert metrics.num_relevant(relevant, mask).tolist() == [3]


def test_coverage_matches_set_union():
    topk, _ = random_topk(4, n=25, num_items=60)
    mask = np.random.default_rng(4).random(25) < 0.7
    want = len({i for row, m in zip(topk, mask, strict=True) if m for i in row if i >= 0}) / 60
    got = metrics.coverage(topk, 60, mask=mask)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert float(metrics.coverage(topk, 60, mask=np.zeros(25, bool))) == 0.0


# ---------------------------------------------------------------- classification


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_matches_pairwise_reference_with_ties_and_mask(seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 6, 80).astype(np.float32)
    labels = rng.random(80) < 0.4
    mask = rng.random(80) < 0.8
    auc = metrics.roc_auc
    got = auc(scores, labels, mask=mask)
    np.testing.assert_allclose(got, ref_auc(scores[mask], labels[mask]), rtol=1e-6)
    np.testing.assert_allclose(auc(scores, labels, mask=np.ones(80, bool)), ref_auc(scores, labels))


def test_auc_extremes():
    auc = metrics.roc_auc  # every case below has shape [4]: one compile
    everything = np.ones(4, bool)
    assert float(auc(np.arange(4.0), np.ones(4), mask=everything)) == 0.5  # no negative
    assert float(auc(np.arange(4.0), np.arange(4) % 2, mask=np.zeros(4, bool))) == 0.5
    assert float(auc(np.full(4, 3.0), np.arange(4) % 2, mask=everything)) == 0.5  # all tied
    assert float(auc(np.arange(4.0), np.array([0, 0, 1, 1]), mask=everything)) == 1.0
    # +inf scores: the sentinel of the implementation must not be miscounted.
    scores, labels = np.array([np.inf, np.inf, 0.0, np.inf]), np.array([1, 0, 0, 1])
    np.testing.assert_allclose(auc(scores, labels, mask=everything), ref_auc(scores, labels))


def test_log_loss_hand_values_clipping_and_logits():
    log_loss, from_logits = metrics.log_loss, metrics.log_loss_from_logits
    labels, everything = np.array([1, 0, 1, 0]), np.ones(4, bool)
    want = -(math.log(0.8) + math.log(0.7) + math.log(0.5) + math.log(0.9)) / 4
    got = log_loss(np.array([0.8, 0.3, 0.5, 0.1]), labels, mask=everything)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    worst = log_loss(np.array([0.0, 1.0, 0.0, 1.0]), labels, mask=everything)
    assert float(worst) == pytest.approx(-math.log(1e-7), rel=1e-2)  # clipped, finite
    assert float(log_loss(np.full(4, 0.5), labels, mask=np.zeros(4, bool))) == 0.0
    logits = np.array([-5.0, -1.0, 2.0, 5.0])
    np.testing.assert_allclose(
        from_logits(logits, labels, mask=everything),
        log_loss(1 / (1 + np.exp(-logits)), labels, mask=everything),
        rtol=1e-5,
    )
    huge = from_logits(np.array([-1e4, 1e4, 0.0, 0.0]), labels, mask=everything)
    np.testing.assert_allclose(huge, (1e4 + 1e4 + 2 * math.log(2)) / 4, rtol=1e-6)


def test_precision_recall_f1_match_counts():
    rng = np.random.default_rng(5)
    scores, labels, mask = rng.random(100), rng.random(100) < 0.5, rng.random(100) < 0.9
    pred = scores >= 0.4
    tp = (pred & labels & mask).sum()
    fp = (pred & ~labels & mask).sum()
    fn = (~pred & labels & mask).sum()
    got = metrics.precision_recall_f1(scores, labels, threshold=0.4, mask=mask)
    want = (tp / (tp + fp), tp / (tp + fn), 2 * tp / (2 * tp + fp + fn))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    nothing = metrics.precision_recall_f1(scores, labels, threshold=2.0)
    assert [float(x) for x in nothing] == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("weight", [0.5, 1.0, 2.0])
def test_best_threshold_matches_brute_force(weight):
    rng = np.random.default_rng(int(weight * 10))
    scores = rng.integers(0, 12, 60).astype(np.float32)
    labels, mask = rng.random(60) < 0.4, rng.random(60) < 0.85
    s, y = scores[mask], labels[mask]

    def objective(t):
        tpr = ((s >= t) & y).sum() / y.sum()
        fpr = ((s >= t) & ~y).sum() / (~y).sum()
        return tpr - weight * fpr

    values = {t: objective(t) for t in np.unique(s)}
    best = max(values.values())
    want_t = max(t for t, v in values.items() if v >= best - 1e-6)
    search = metrics.best_threshold
    t, value = search(scores, labels, weight=weight, mask=mask)
    np.testing.assert_allclose(value, best, atol=1e-6)
    assert float(t) == want_t
    assert search(scores, labels, weight=weight, mask=np.zeros(60, bool)) == (np.inf, 0.0)


# ---------------------------------------------------------------- regression


def test_regression_metrics_with_weights():
    rng = np.random.default_rng(6)
    pred, target, w = rng.normal(size=50), rng.normal(size=50), rng.random(50)
    err, ones = pred - target, np.ones(50)
    np.testing.assert_allclose(metrics.mse(pred, target, weights=ones), np.mean(err**2), rtol=1e-5)
    np.testing.assert_allclose(
        metrics.rmse(pred, target, weights=ones), np.sqrt(np.mean(err**2)), rtol=1e-5
    )
    np.testing.assert_allclose(metrics.mae(pred, target), np.mean(np.abs(err)), rtol=1e-5)
    np.testing.assert_allclose(
        metrics.mse(pred, target, weights=w), np.average(err**2, weights=w), rtol=1e-5
    )
    np.testing.assert_allclose(
        metrics.mae(pred, target, weights=w > 0.5), np.mean(np.abs(err[w > 0.5])), rtol=1e-5
    )
    assert float(metrics.rmse(pred, target, weights=np.zeros(50))) == 0.0


def test_docstring_examples():
    result = doctest.testmod(metrics, extraglobs={"jnp": jnp}, raise_on_error=False)
    assert result.attempted > 10 and result.failed == 0
