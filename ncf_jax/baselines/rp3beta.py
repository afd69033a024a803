"""Stage: model (baselines). RP3beta (Paudel et al. 2017): a 3-step random walk
user -> item -> user -> item, its item-item transition damped by the target's popularity.

    W_ij = sum_u (x_ui / n_i)^alpha (x_uj / n_u)^alpha / n_j^beta,   W_ii = 0,

top-k kept per row (per source item), optionally each row L1-normalised, as in Dacrema et al.'s
RP3betaRecommender; score = X[users] @ W. n_u, n_i are the user's and item's training counts.

Scoring: by default as EASE^R's, W's rows summed over each user's history
(`_matrix.score_history`: about HISTORY_COST = 4 dense columns of work per history entry).
The top-k is per source item, so a target's column of W is ragged (ML-1M shape: 18 entries at
the median, 3,681 at most); where it is cheaper still, `for_scoring` splits W by
`_matrix.split_columns`: the columns with at most a cap of entries as neighbour lists, scored as
ItemKNN's, and the few longer ones dense (ML-1M shape: cap 32, 552 dense columns, 0.54-0.91 s
for every user ranked by `make_full_evaluator` against 1.25-1.76 s for the dense X @ W in four
sittings on a 2-core Xeon, plus 0.18-0.23 s for the split; the history sum costs less there).
The split's shapes depend on W, so `fit` returns W dense (what a checkpoint holds).

Memory: X int8 [num_users, num_items]; the Gram and W float32 [num_items, num_items]; the
lists [num_items, cap] and the dense columns [num_items, h] while evaluating.

Hyperparameters: defaults alpha 1, beta 0.6, k 100, normalize False. Grid (Dacrema et al.:
topK 5..1000, alpha 0..2, beta 0..2, normalize_similarity True / False): k {50, 100, 200,
500} x alpha {0.25, 0.5, 0.75, 1, 1.25, 1.5} x beta {0, 0.2, 0.4, 0.6, 0.8, 1} x normalize.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ncf_jax.baselines import _matrix


def fit(
    indptr,
    indices,
    *,
    num_users: int,
    num_items: int,
    alpha: float = 1.0,
    beta: float = 0.6,
    k: int = 100,
    normalize: bool = False,
    chunk_size: int = 2048,
    key=None,
) -> dict:
    """{"x": [num_users, num_items] int8, "w": [num_items, num_items] float32} and the CSR of X,
    {"indptr", "indices"} (`_matrix.history`)."""
    del key  # deterministic
    user_counts, item_counts = _matrix.counts(indptr, indices, num_items)
    # For binary X, (x / n)^alpha = x * n^-alpha: the walk is a Gram product with scalings.
    user_w = _matrix.safe_power(user_counts, -alpha)
    x, g = _matrix.binary_gram(indptr, indices, num_users, num_items, user_w, chunk_size=chunk_size)
    source = jnp.asarray(_matrix.safe_power(item_counts, -alpha))
    target = jnp.asarray(_matrix.safe_power(item_counts, -beta))
    w = g * source[:, None] * target[None, :] * (1.0 - jnp.eye(num_items, dtype=g.dtype))
    w = _matrix.keep_topk_rows(w, k=k)
    if normalize:
        w = w / jnp.maximum(jnp.sum(jnp.abs(w), axis=1, keepdims=True), 1e-12)
    return {"x": x, "w": w} | _matrix.history(indptr, indices, num_users, num_items)


SPLIT_MIN_MACS = 2e10  # split W when that saves more multiply-adds in ranking every user


def for_scoring(params: dict) -> dict:
    """`fit`'s params as `score` reads them fastest: W's columns split by `_matrix.split_columns`
    when that saves more than SPLIT_MIN_MACS in ranking all users against the cheaper of the
    dense product and the history sum (`_matrix.score_history`), else as they are (the
    history sum on the ML-1M and ML-100K shapes). The evaluation calls it before every
    evaluation; its shapes depend on W, so a fit keeps W."""
    x, w = params["x"], params["w"]
    counts = np.asarray(jnp.sum(w != 0, axis=0))
    cap, costs = _matrix.list_cap(counts), _matrix.list_costs(counts)
    num_users = x.shape[0]
    history = _matrix.HISTORY_COST * params["indices"].shape[0] / max(num_users, 1)
    if num_users * w.shape[0] * (min(costs[0], history) - costs[cap]) < SPLIT_MIN_MACS:
        return params
    return {"x": x, **_matrix.split_columns(w, cap)}


@jax.jit
def score(params: dict, users: jax.Array) -> jax.Array:
    """[len(users)] int32 -> [len(users), num_items] float32: X[users] @ W, from `fit`'s params
    (the history sum) or `for_scoring`'s split (lists and the dense columns)."""
    if "w" in params:
        return _matrix.score_history(params, params["w"], users)
    return _matrix.score_split(params, users)
