"""Stage: evaluation metrics. Ranking, classification and regression metrics on arrays.

One implementation of each metric, in pure `jax.numpy`, safe under `jit` and `vmap`. Per-example
metrics return one value per row so the caller decides how to reduce; every reduction takes a mask
and returns a defined value (0, or 0.5 for AUC) when nothing is selected, never NaN. Each public
function is wrapped in `jax.jit` (with `ties` and `num_items` static): a call on host arrays then
compiles once per shape instead of once per primitive, and inside a caller's `jit` it inlines.

Sampled ranking follows He et al. (2017): one held-out positive against sampled negatives. The
trap is ties. A model that scores everything equal (a dead ReLU tower, say) is perfect under an
optimistic policy and useless under a pessimistic one. Two users, three negatives each, k=1:

  user 0: positive 0.9, negatives [0.9, 0.1, 0.2]  -> 0 strictly above, 1 tie
  user 1: positive 0.5, negatives [0.7, 0.5, 0.5]  -> 1 strictly above, 2 ties
  pessimistic ranks [1, 3]: HR@1 = 0.0;  optimistic ranks [0, 1]: HR@1 = 0.5.

Full-catalogue ranking works on the top-K item ids of each user (see `ncf_jax.evaluate`), against
that user's relevant items as a `[n, R] int32` matrix padded with -1.

The module runs past the house's 300 lines because it is the one metric implementation: every
metric of every evaluator lives here, each beside its docstring example.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ncf_jax.config import TIES

Array = jax.Array


def _float(x) -> Array:
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


@jax.jit
def masked_mean(values, mask=None) -> Array:
    """Mean of `values` where `mask` is set; 0.0 when nothing is.

    Args:
      values: [...] numbers.
      mask: None (all), a bool array of the same shape, or non-negative float weights.

    >>> float(masked_mean(jnp.array([1.0, 3.0, jnp.nan]), jnp.array([True, True, False])))
    2.0
    >>> float(masked_mean(jnp.array([1.0]), jnp.array([False])))
    0.0
    """
    values = _float(values)
    weights = jnp.ones_like(values) if mask is None else jnp.broadcast_to(mask, values.shape)
    weights = weights.astype(values.dtype)
    # `where` first: a NaN in a masked-out entry must not leak through 0 * NaN.
    total = jnp.sum(jnp.where(weights != 0, values, 0) * weights)
    count = jnp.sum(weights)
    return jnp.where(count > 0, total / jnp.where(count > 0, count, 1), 0.0)


# ---------------------------------------------------------------- sampled ranking (NCF protocol)


@functools.partial(jax.jit, static_argnames="ties")
def rank_against_negatives(
    pos_scores, neg_scores, neg_mask=None, *, ties: str = "pessimistic", key=None
) -> Array:
    """Number of valid negatives ranked above each positive (0 is the top of the list).

    Tie policies, for a negative whose score equals the positive's:
      "pessimistic" (default): it ranks above the positive;
      "optimistic": it ranks below;
      "random": an independent fair coin per tied negative, drawn from `key`, decides, so the
        rank is strict + Binomial(ties, 1/2) and its expectation is strict + ties / 2.
    A NaN score on either side counts as ranking above the positive, so a diverged model cannot
    look good. A masked negative never competes; a row with every negative masked has rank 0.

    Args:
      pos_scores: [n] float, the score of each held-out positive.
      neg_scores: [n, m] float, the scores of its sampled negatives.
      neg_mask: [n, m] bool, False where a negative must not compete (e.g. a published negative
        equal to the test item); None means all compete.
      ties: one of `ncf_jax.config.TIES`.
      key: PRNG key, required by ties="random" and ignored otherwise.

    Returns:
      [n] int32 ranks in [0, m]. Any leading axes work: [...], [..., m] -> [...].

    >>> pos, neg = jnp.array([0.9, 0.5]), jnp.array([[0.9, 0.1, 0.2], [0.7, 0.5, 0.5]])
    >>> rank_against_negatives(pos, neg).tolist()
    [1, 3]
    >>> rank_against_negatives(pos, neg, ties="optimistic").tolist()
    [0, 1]
    >>> rank_against_negatives(pos, neg, jnp.array([[1, 1, 1], [1, 0, 0]], bool)).tolist()
    [1, 1]
    """
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
    pos = jnp.asarray(pos_scores)[..., None]
    neg = jnp.asarray(neg_scores)
    valid = jnp.ones(neg.shape, bool) if neg_mask is None else jnp.asarray(neg_mask, bool)
    # `~(neg <= pos)` rather than `neg > pos`: a NaN on either side counts against the positive.
    above = valid & ~(neg <= pos)
    tied = valid & (neg == pos)
    if ties == "pessimistic":
        beaten = above | tied
    elif ties == "optimistic":
        beaten = above
    else:
        if key is None:
            raise ValueError('ties="random" needs a PRNG key: pass key=jax.random.key(seed)')
        beaten = above | (tied & jax.random.bernoulli(key, 0.5, neg.shape))
    return jnp.sum(beaten, axis=-1, dtype=jnp.int32)


@jax.jit
def hit_rate(rank, k: int) -> Array:
    """1.0 where the positive made the top k (rank < k), else 0.0. rank: [n] int -> [n] float32.

    >>> hit_rate(jnp.array([0, 9, 10]), 10).tolist()
    [1.0, 1.0, 0.0]
    """
    return (jnp.asarray(rank) < k).astype(jnp.float32)


@jax.jit
def ndcg(rank, k: int) -> Array:
    """1 / log2(rank + 2) where rank < k, else 0: NDCG of a single relevant item. [n] -> [n].

    >>> ndcg(jnp.array([0, 1, 10]), 10).tolist()
    [1.0, 0.6309297680854797, 0.0]
    """
    rank = jnp.asarray(rank)
    gain = 1.0 / jnp.log2(rank.astype(jnp.float32) + 2.0)
    return jnp.where(rank < k, gain, 0.0)


# ---------------------------------------------------------------- full-catalogue top-K


@jax.jit
def topk_hits(topk_items, relevant_items, relevant_mask=None) -> Array:
    """Whether each recommended item is relevant.

    Args:
      topk_items: [n, K] int32 item ids, best first; -1 marks an empty slot (never a hit).
      relevant_items: [n, R] int32 relevant ids per row, padded with -1; ids in a row are unique.
      relevant_mask: optional [n, R] bool, False marks padding (instead of, or as well as, -1).

    Returns:
      [n, K] bool, True where topk_items[i, j] is one of row i's relevant items.

    >>> topk_hits(jnp.array([[3, 1, 2]]), jnp.array([[2, 3, -1]])).tolist()
    [[True, False, True]]
    """
    relevant = jnp.asarray(relevant_items)
    if relevant_mask is not None:
        relevant = jnp.where(relevant_mask, relevant, -1)
    # [n, K, R] comparison: R is small next to the catalogue, and it needs no sort.
    same = jnp.asarray(topk_items)[:, :, None] == relevant[:, None, :]
    return jnp.any(same & (relevant[:, None, :] >= 0), axis=-1)


@jax.jit
def num_relevant(relevant_items, relevant_mask=None) -> Array:
    """Number of relevant items per row. [n, R] int32 (-1 padded) -> [n] int32."""
    valid = jnp.asarray(relevant_items) >= 0
    if relevant_mask is not None:
        valid &= relevant_mask
    return jnp.sum(valid, axis=-1, dtype=jnp.int32)


@jax.jit
def hit_rate_at_k(hits) -> Array:
    """1.0 where any of the top K is relevant. hits: [n, K] bool (`topk_hits`) -> [n] float32."""
    return jnp.any(hits, axis=-1).astype(jnp.float32)


@jax.jit
def precision_at_k(hits) -> Array:
    """Relevant fraction of the K recommendations: hits / K. [n, K] bool -> [n] float32."""
    return jnp.mean(hits, axis=-1, dtype=jnp.float32)


@jax.jit
def recall_at_k(hits, num_relevant) -> Array:
    """Fraction of the relevant items recommended; 0.0 for a row with none relevant.

    Args:
      hits: [n, K] bool from `topk_hits`.
      num_relevant: [n] int, from `num_relevant`.

    >>> recall_at_k(jnp.array([[True, False, True], [False] * 3]), jnp.array([4, 0])).tolist()
    [0.5, 0.0]
    """
    count = jnp.sum(hits, axis=-1, dtype=jnp.float32)
    return jnp.where(num_relevant > 0, count / jnp.maximum(num_relevant, 1), 0.0)


@jax.jit
def ndcg_at_k(hits, num_relevant) -> Array:
    """Binary-relevance NDCG@K; the ideal list puts min(num_relevant, K) hits first.

    A row with no relevant item scores 0.0. hits: [n, K] bool; num_relevant: [n] int -> [n].

    >>> round(float(ndcg_at_k(jnp.array([[False, True]]), jnp.array([1]))[0]), 6)
    0.63093
    """
    discounts = 1.0 / jnp.log2(jnp.arange(hits.shape[-1], dtype=jnp.float32) + 2.0)
    dcg = jnp.sum(jnp.where(hits, discounts, 0.0), axis=-1)
    ideal = jnp.cumsum(discounts)[jnp.clip(jnp.minimum(num_relevant, hits.shape[-1]) - 1, 0)]
    return jnp.where(num_relevant > 0, dcg / ideal, 0.0)


@jax.jit
def mrr_at_k(hits) -> Array:
    """1 / (1-based position of the first hit), 0.0 without a hit. [n, K] bool -> [n] float32."""
    first = jnp.argmax(hits, axis=-1)
    return jnp.where(jnp.any(hits, axis=-1), 1.0 / (first + 1.0), 0.0).astype(jnp.float32)


@functools.partial(jax.jit, static_argnames="num_items")
def coverage(topk_items, num_items: int, *, mask=None) -> Array:
    """Catalogue coverage: |union of the rows' top-K items| / num_items, a float32 scalar.

    Args:
      topk_items: [n, K] int32 ids; -1 (an empty slot) is ignored.
      num_items: catalogue size (static).
      mask: optional [n] bool; rows where False are left out.

    >>> float(coverage(jnp.array([[0, 1], [1, 2], [3, -1]]), 8, mask=jnp.array([1, 1, 0], bool)))
    0.375
    """
    items = jnp.asarray(topk_items)
    valid = items >= 0
    if mask is not None:
        valid &= jnp.asarray(mask, bool)[:, None]
    # Out-of-range ids are dropped by the scatter, which is how invalid slots are skipped.
    seen = jnp.zeros(num_items, bool).at[jnp.where(valid, items, num_items)].set(True, mode="drop")
    return jnp.sum(seen, dtype=jnp.float32) / num_items


# ---------------------------------------------------------------- classification


def _binary(scores, labels, mask):
    scores, labels = _float(scores), jnp.asarray(labels).astype(bool)
    valid = jnp.ones(scores.shape, bool) if mask is None else jnp.asarray(mask, bool)
    return scores, labels & valid, ~labels & valid


@jax.jit
def roc_auc(scores, labels, *, mask=None) -> Array:
    """Area under the ROC curve; a tied (positive, negative) pair gets half credit.

    This is the Mann-Whitney statistic with average ranks for ties, computed in O(n log n) by
    counting, for each positive, the negatives below and equal to it (one sort, two
    searchsorted). With no positive or no negative the AUC is undefined and 0.5 is returned.

    Args:
      scores: [n] float, higher means more likely positive.
      labels: [n] bool or {0, 1}.
      mask: optional [n] bool; entries where False are left out.

    >>> float(roc_auc(jnp.array([0.1, 0.4, 0.4, 0.8]), jnp.array([0, 0, 1, 1])))
    0.875
    """
    scores, pos, neg = _binary(scores, labels, mask)
    num_neg = jnp.sum(neg)
    # Non-negatives become +inf so the searches count negatives only; clipping `le` at num_neg
    # undoes the one case the sentinel gets wrong, a positive scored +inf.
    sorted_neg = jnp.sort(jnp.where(neg, scores, jnp.inf))
    lt = jnp.searchsorted(sorted_neg, scores, side="left")
    le = jnp.minimum(jnp.searchsorted(sorted_neg, scores, side="right"), num_neg)
    credit = jnp.sum(jnp.where(pos, lt + 0.5 * (le - lt), 0.0))
    pairs = jnp.sum(pos).astype(jnp.float32) * num_neg
    return jnp.where(pairs > 0, credit / jnp.where(pairs > 0, pairs, 1.0), 0.5)


@jax.jit
def log_loss(probs, labels, *, eps: float = 1e-7, mask=None) -> Array:
    """Mean binary cross-entropy of probabilities, clipped to [eps, 1 - eps] so a confident
    mistake costs at most -log(eps) (about 16.1 for the default) instead of inf.

    probs: [n] float in [0, 1]; labels: [n] in [0, 1]; mask: optional [n] bool -> scalar.

    >>> round(float(log_loss(jnp.array([0.5, 1.0]), jnp.array([1, 1]))), 4)
    0.3466
    """
    p = jnp.clip(_float(probs), eps, 1.0 - eps)
    y = _float(labels)
    return masked_mean(-(y * jnp.log(p) + (1.0 - y) * jnp.log1p(-p)), mask)


@jax.jit
def log_loss_from_logits(logits, labels, *, mask=None) -> Array:
    """Mean binary cross-entropy of logits; `log_sigmoid` is exact, so nothing is clipped.

    >>> round(float(log_loss_from_logits(jnp.array([0.0]), jnp.array([1]))), 4)
    0.6931
    """
    x, y = _float(logits), _float(labels)
    return masked_mean(-(y * jax.nn.log_sigmoid(x) + (1.0 - y) * jax.nn.log_sigmoid(-x)), mask)


@jax.jit
def precision_recall_f1(scores, labels, *, threshold: float = 0.5, mask=None):
    """(precision, recall, F1) of predicting positive where score >= threshold.

    A zero denominator gives 0.0. scores, labels, mask: [n] -> three float32 scalars.

    Examples:
        >>> p, r, f = precision_recall_f1(jnp.array([0.9, 0.6, 0.2]), jnp.array([1, 0, 1]))
        >>> [round(float(x), 4) for x in (p, r, f)]
        [0.5, 0.5, 0.5]
    """
    scores, pos, neg = _binary(scores, labels, mask)
    predicted = scores >= threshold
    tp = jnp.sum(predicted & pos, dtype=jnp.float32)
    fp = jnp.sum(predicted & neg, dtype=jnp.float32)
    fn = jnp.sum(~predicted & pos, dtype=jnp.float32)
    precision = jnp.where(tp + fp > 0, tp / jnp.maximum(tp + fp, 1.0), 0.0)
    recall = jnp.where(tp + fn > 0, tp / jnp.maximum(tp + fn, 1.0), 0.0)
    f1 = jnp.where(tp > 0, 2 * tp / jnp.maximum(2 * tp + fp + fn, 1.0), 0.0)
    return precision, recall, f1


@jax.jit
def best_threshold(scores, labels, *, weight: float = 1.0, mask=None):
    """The threshold t maximising TPR - weight * FPR when predicting positive where score >= t.

    Candidates are the distinct valid scores; among equally good ones the highest wins (fewest
    positive predictions). weight=1 gives Youden's J. TPR (FPR) is 0 without positives
    (negatives). With no valid entry the result is (+inf, 0.0).

    Returns:
      (threshold, objective): float32 scalars.

    >>> scores, labels = jnp.array([0.1, 0.4, 0.35, 0.8]), jnp.array([0, 0, 1, 1])
    >>> t, j = best_threshold(scores, labels, weight=0.5)
    >>> round(float(t), 4), float(j)
    (0.35, 0.75)
    """
    scores, pos, neg = _binary(scores, labels, mask)
    valid = pos | neg
    order = jnp.lexsort((-scores, ~valid))  # valid entries first, each by descending score
    s, p, v = scores[order], pos[order], valid[order]
    tpr = jnp.cumsum(p) / jnp.maximum(jnp.sum(pos), 1)
    fpr = jnp.cumsum(v & ~p) / jnp.maximum(jnp.sum(neg), 1)
    # A threshold's counts are those after the last entry of its tie group.
    last = v & jnp.append((s[1:] != s[:-1]) | ~v[1:], True)
    objective = jnp.where(last, tpr - weight * fpr, -jnp.inf)
    best = jnp.argmax(objective)
    found = jnp.any(last)
    threshold = jnp.where(found, s[best], jnp.inf).astype(jnp.float32)
    return threshold, jnp.where(found, objective[best], 0.0).astype(jnp.float32)


# ---------------------------------------------------------------- regression


@jax.jit
def mse(predictions, targets, *, weights=None) -> Array:
    """Mean squared error; weights: optional [n] bool mask or non-negative floats. 0.0 if empty.

    >>> w = jnp.array([True, True, False])
    >>> float(mse(jnp.array([1.0, 2.0, 9.0]), jnp.array([0.0, 4.0, 0.0]), weights=w))
    2.5
    """
    return masked_mean(jnp.square(_float(predictions) - _float(targets)), weights)


@jax.jit
def rmse(predictions, targets, *, weights=None) -> Array:
    """Root mean squared error: sqrt(mse). 0.0 if empty."""
    return jnp.sqrt(mse(predictions, targets, weights=weights))


@jax.jit
def mae(predictions, targets, *, weights=None) -> Array:
    """Mean absolute error; weights as in `mse`. 0.0 if empty.

    >>> float(mae(jnp.array([1.0, 2.0]), jnp.array([0.0, 4.0])))
    1.5
    """
    return masked_mean(jnp.abs(_float(predictions) - _float(targets)), weights)


@functools.partial(jax.jit, static_argnames=("k", "num_users"))
def hit_rate_over_rows(users, scores, labels, *, k: int, num_users: int):
    """Per-user HR@k among each user's own rows; users without a positive row are skipped.

    >>> hit_rate_over_rows(jnp.array([0, 0, 1, 1]), jnp.array([.9, .1, .2, .3]),
    ...                    jnp.array([1, 0, 1, 0]), k=1, num_users=2).item()
    0.5
    """
    labels = labels.astype(bool)
    # Sorted by user, then score descending, then unclicked first (pessimistic ties).
    order = jnp.lexsort((labels, -scores, users))
    u, lab = users[order], labels[order]
    rank = jnp.arange(len(u)) - jnp.searchsorted(u, u, side="left")
    hit = jax.ops.segment_max((lab & (rank < k)).astype(jnp.int32), u, num_segments=num_users)
    has = jax.ops.segment_max(lab.astype(jnp.int32), u, num_segments=num_users)
    return masked_mean(hit.astype(jnp.float32), has > 0)
