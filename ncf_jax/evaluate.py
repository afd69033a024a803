"""Stage: evaluation. Sampled and full-catalogue ranking evaluators, built once, run every epoch.

Each `make_*` function checks its inputs on the host, lays the evaluation data out on the device
once and returns `evaluate`, a jitted function of the parameters that depends only on a score
function, never on a model class. It returns a dict of device scalars, so the caller fetches every
metric with one `jax.device_get` and nothing inside waits on the host.

Both evaluators walk the users in chunks with `jax.lax.map` over a `[num_chunks, chunk, ...]` view
of the data, so peak memory is one chunk of scores: `[chunk, 1 + num_negatives]` for sampled
ranking, `[chunk, num_items]` for full ranking. The user axis is padded to a whole number of chunks
and the padding is masked out of every mean.

The module runs past the house's 300 lines: it holds both ranking evaluators and the layout of
full ranking's exclusions, whose memory bound (`docs/memory.md`) is easier to check in one place.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ncf_jax import metrics, xla
from ncf_jax.config import TIES
from ncf_jax.data.types import InteractionData, csr_from_pairs
from ncf_jax.errors import UsageError

Evaluator = Callable[..., dict[str, jax.Array]]


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _chunk(array: np.ndarray, chunk: int, fill=0) -> np.ndarray:
    """[n, ...] -> [ceil(n / chunk), chunk, ...], padding the tail with `fill`."""
    pad = -len(array) % chunk
    array = np.concatenate([array, np.full((pad, *array.shape[1:]), fill, array.dtype)])
    return array.reshape(-1, chunk, *array.shape[1:])


def make_sampled_evaluator(
    score_fn: Callable,
    users,
    items,
    negatives,
    negatives_mask=None,
    *,
    k: int = 10,
    ties: str = "pessimistic",
    chunk_size: int = 1024,
    cutoffs: tuple[int, ...] = (),
) -> Evaluator:
    """Evaluator for the NCF protocol: each held-out item against its sampled negatives.

    Args:
      score_fn: `score_fn(params, users [c] int32, items [c, m] int32) -> [c, m] float`.
      users, items: [n] int held-out (user, item) pairs; a user may appear more than once.
      negatives: [n, num_negatives] int sampled negatives of each pair.
      negatives_mask: [n, num_negatives] bool, False where a negative must not compete; None
        means all compete.
      k: cut-off of HR@k and NDCG@k.
      ties: tie policy of `metrics.rank_against_negatives`.
      chunk_size: pairs scored per step; memory grows with it, per-step overhead shrinks.
      cutoffs: more cut-offs whose HR and NDCG come from the same ranks (one scoring pass).

    Returns:
      `evaluate(params, key=None) -> {"hr@<k>": scalar, "ndcg@<k>": scalar}` (then the same
      for each of `cutoffs`), means over the pairs. `key` is needed by ties="random" only;
      chunk i draws its coins from `fold_in(key, i)`, so the draws (not their distribution)
      change with chunk_size. `evaluate.lower(params)` is its jitted program, lowered (for
      `.compile().memory_analysis()`).

    >>> emb = jnp.eye(3)  # user u scores 1 for item u, 0 for the others
    >>> score = lambda params, users, items: jnp.einsum("cd,cmd->cm", params[users], params[items])
    >>> run = make_sampled_evaluator(score, [0, 1], [0, 2], [[1, 2], [0, 1]], k=1)
    >>> {name: float(value) for name, value in run(emb).items()}
    {'hr@1': 0.5, 'ndcg@1': 0.5}
    """
    users, items = np.asarray(users), np.asarray(items)
    negatives = np.asarray(negatives)
    n = len(users)
    _check(n > 0, "no evaluation pairs: users is empty")
    _check(users.shape == items.shape == (n,), "users and items must be [n] arrays of one length")
    _check(
        negatives.ndim == 2 and len(negatives) == n,
        f"negatives must be [n={n}, num_negatives], got shape {negatives.shape}",
    )
    if negatives_mask is None:
        negatives_mask = np.ones(negatives.shape, bool)
    negatives_mask = np.asarray(negatives_mask, bool)
    _check(negatives_mask.shape == negatives.shape, "negatives_mask must match negatives' shape")
    _check(k >= 1, f"k must be >= 1, got {k}")
    _check(all(c >= 1 for c in cutoffs), f"cutoffs must be >= 1, got {cutoffs}")
    ks = (k, *(c for c in cutoffs if c != k))
    _check(ties in TIES, f"ties must be one of {TIES}, got {ties!r}")
    _check(chunk_size >= 1, f"chunk_size must be >= 1, got {chunk_size}")

    chunk = min(chunk_size, n)
    # Column 0 is the held-out item, so one score_fn call scores it with its competitors.
    candidates = np.concatenate([items[:, None], negatives], axis=1).astype(np.int32)
    data = jax.device_put(
        {
            "users": _chunk(users.astype(np.int32), chunk),
            "candidates": _chunk(candidates, chunk),
            "neg_mask": _chunk(negatives_mask, chunk, fill=False),
            "valid": _chunk(np.ones(n, bool), chunk, fill=False),
        }
    )

    @xla.jit
    def _evaluate(params, key, data):
        xs = dict(data, index=jnp.arange(len(data["valid"])))

        def one_chunk(x):
            scores = score_fn(params, x["users"], x["candidates"])
            # One key per chunk, not per row: vmapping the PRNG over row keys compiles slowly.
            chunk_key = None if key is None else jax.random.fold_in(key, x["index"])
            rank = metrics.rank_against_negatives(
                scores[:, 0], scores[:, 1:], x["neg_mask"], ties=ties, key=chunk_key
            )
            return [(metrics.hit_rate(rank, c), metrics.ndcg(rank, c)) for c in ks]

        mean = lambda values: metrics.masked_mean(values, data["valid"])
        out = {}
        for c, (hr, ndcg) in zip(ks, jax.lax.map(one_chunk, xs), strict=True):
            out |= {f"hr@{c}": mean(hr), f"ndcg@{c}": mean(ndcg)}
        return out

    def evaluate(params, key=None) -> dict[str, jax.Array]:
        if ties == "random" and key is None:
            raise ValueError('ties="random" needs a PRNG key: call evaluate(params, key)')
        return _evaluate(params, key if ties == "random" else None, data)

    evaluate.lower = lambda params: _evaluate.lower(params, None, data)  # memory analysis
    return evaluate


def _padded_rows(indptr: np.ndarray, indices: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The CSR rows `rows` as a [len(rows), max_len] int32 matrix padded with -1."""
    starts, counts = indptr[rows], np.diff(indptr)[rows]
    width = max(int(counts.max(initial=0)), 1)
    col = np.arange(width)
    gather = np.minimum(starts[:, None] + col, max(len(indices) - 1, 0))
    values = indices[gather] if len(indices) else np.zeros(gather.shape, np.int32)
    return np.where(col < counts[:, None], values, -1).astype(np.int32)


# Exclusion pairs a full evaluator scatters per pass; a chunk with more takes several passes.
EXCLUSION_WINDOW = 1 << 16


def _chunk_exclusions(indptr, indices, rows, chunk):
    """Every chunk's excluded (row in chunk, item) pairs, flat, chunk after chunk.

    Returns (ex_rows, ex_items, offsets, window): chunk c's pairs are
    `[offsets[c], offsets[c + 1])` of the flat arrays, which are padded by `window` pairs with
    row == chunk (out of range: the device scatter drops them), so that every pass of
    `window` pairs starting inside a chunk's range is a plain slice. Memory is linear in the
    pairs, whatever the order of `rows`: padding every chunk to the busiest one instead costs
    num_chunks x the busiest chunk, which is 12 GB at the Netflix scale with the users sorted
    longest history first.
    """
    counts = np.diff(indptr)[rows]
    per_chunk = np.add.reduceat(counts, np.arange(0, len(rows), chunk)) if len(rows) else counts
    offsets = np.concatenate([[0], np.cumsum(per_chunk)])
    _check(offsets[-1] < 2**31 - EXCLUSION_WINDOW, "more than 2^31 excluded pairs: int32 overflow")
    offsets = offsets.astype(np.int32)
    window = int(min(max(per_chunk.max(initial=0), 1), EXCLUSION_WINDOW))
    row_dtype = np.int16 if chunk < 2**15 else np.int32  # 2 bytes a pair at the usual 256
    pad = np.full(window, chunk, row_dtype)
    ex_rows = np.concatenate(
        [np.repeat((np.arange(len(rows)) % chunk).astype(row_dtype), counts), pad]
    )
    # One slice a user (a Python loop of views, no [pairs] int64 index arrays on the host).
    ex_items = np.concatenate(
        [*(indices[indptr[u] : indptr[u + 1]] for u in rows), np.zeros(window, indices.dtype)]
    ).astype(np.int32, copy=False)
    return ex_rows, ex_items, offsets, window


def _exclude(scores, ex_rows, ex_items, start, stop, window):
    """`scores` [chunk, num_items] with -inf at the pairs `[start, stop)` of the flat exclusion
    arrays, `window` pairs a pass."""
    lanes = jnp.arange(window)

    def one_pass(carry):
        scores, offset = carry
        rows = jax.lax.dynamic_slice(ex_rows, (offset,), (window,)).astype(jnp.int32)
        items = jax.lax.dynamic_slice(ex_items, (offset,), (window,))
        rows = jnp.where(offset + lanes < stop, rows, scores.shape[0])  # past the chunk: dropped
        return scores.at[rows, items].set(-jnp.inf, mode="drop"), offset + window

    scores, _ = jax.lax.while_loop(lambda c: c[1] < stop, one_pass, (scores, start))
    return scores


def make_full_evaluator(
    score_all_fn: Callable,
    test_users,
    test_items,
    exclude_indptr,
    exclude_indices,
    *,
    num_items: int,
    k: int = 10,
    chunk_size: int = 256,
) -> Evaluator:
    """Evaluator that ranks every item of the catalogue for each test user.

    Each test user's excluded items (normally their training items) are scored -inf before
    `jax.lax.top_k`, which breaks ties in favour of the lower item id. A top-K slot whose score is
    -inf (an excluded item, when fewer than K remain) is left empty and counts as a miss. A test
    item that is also excluded can never be hit: keep test items out of the exclusion lists.

    Args:
      score_all_fn: `score_all_fn(params, users [c] int32) -> [c, num_items] float`.
      test_users, test_items: [n_test] int parallel pairs; several pairs per user are allowed
        (duplicates count once). Metrics are means over the distinct test users.
      exclude_indptr, exclude_indices: CSR of each user's excluded items, as returned by
        `ncf_jax.data.types.csr_from_pairs` (num_users = len(exclude_indptr) - 1).
      num_items: catalogue size.
      k: cut-off, 1 <= k <= num_items.
      chunk_size: users scored per step; memory is [chunk_size, num_items] scores.

    Returns:
      `evaluate(params) -> {"hr@<k>", "recall@<k>", "precision@<k>", "ndcg@<k>", "mrr@<k>",
      "coverage@<k>"}`, float32 device scalars (see `ncf_jax.metrics` for the definitions);
      `evaluate.lower(params)` as for `make_sampled_evaluator`.

    Memory: the device data is linear in the excluded pairs (6 bytes each: an int16 row in the
    chunk and an int32 item) and the test pairs; a step holds a few [chunk_size, num_items]
    arrays of scores.
    """
    test_users, test_items = np.asarray(test_users), np.asarray(test_items)
    exclude_indptr, exclude_indices = np.asarray(exclude_indptr), np.asarray(exclude_indices)
    num_users = len(exclude_indptr) - 1
    _check(test_users.size > 0, "no test pairs: test_users is empty")
    _check(
        test_users.shape == test_items.shape == (test_users.size,),
        "test_users and test_items must be [n_test] arrays of one length",
    )
    _check(num_users >= 1, "exclude_indptr must have num_users + 1 >= 2 entries")
    _check(
        test_users.min() >= 0 and test_users.max() < num_users,
        f"test_users must lie in [0, {num_users}) (from exclude_indptr)",
    )
    _check(
        test_items.min() >= 0 and test_items.max() < num_items,
        f"test_items must lie in [0, num_items={num_items})",
    )
    _check(1 <= k <= num_items, f"k must be in [1, num_items={num_items}], got {k}")
    _check(chunk_size >= 1, f"chunk_size must be >= 1, got {chunk_size}")

    relevant_indptr, relevant_indices = csr_from_pairs(test_users, test_items, num_users)
    # Users are scored longest exclusion list (history) first, ties by id, so that a chunk holds
    # histories of similar length: a scorer that walks each user's history
    # (`baselines._matrix.score_history`) runs to its chunk's longest. The per-user metrics go
    # back to id order before the means, so the results do not depend on this order.
    eval_users = np.flatnonzero(np.diff(relevant_indptr) > 0)
    order = np.argsort(-np.diff(exclude_indptr)[eval_users], kind="stable")
    eval_users = eval_users[order]
    chunk = min(chunk_size, len(eval_users))
    padded = -(-len(eval_users) // chunk) * chunk
    by_id = np.concatenate([np.argsort(order), np.arange(len(order), padded)])
    ex_rows, ex_items, offsets, window = _chunk_exclusions(
        exclude_indptr, exclude_indices, eval_users, chunk
    )
    relevant = _padded_rows(relevant_indptr, relevant_indices, eval_users)
    data = jax.device_put(
        {
            "users": _chunk(eval_users.astype(np.int32), chunk, fill=eval_users[-1]),
            "relevant": _chunk(relevant, chunk, fill=-1),
            "start": offsets[:-1],
            "stop": offsets[1:],
            "ex_rows": ex_rows,
            "ex_items": ex_items,
            "valid": np.arange(padded) < len(eval_users),  # in id order, as `by_id` gives
            "by_id": by_id.astype(np.int32),
        }
    )

    def one_chunk(params, x, ex_rows, ex_items):
        scores = score_all_fn(params, x["users"])
        scores = _exclude(scores, ex_rows, ex_items, x["start"], x["stop"], window)
        values, top = jax.lax.top_k(scores, k)
        top = jnp.where(values == -jnp.inf, -1, top)
        hits = metrics.topk_hits(top, x["relevant"])
        count = metrics.num_relevant(x["relevant"])
        per_user = {
            "hr": metrics.hit_rate_at_k(hits),
            "recall": metrics.recall_at_k(hits, count),
            "precision": metrics.precision_at_k(hits),
            "ndcg": metrics.ndcg_at_k(hits, count),
            "mrr": metrics.mrr_at_k(hits),
        }
        return per_user, top

    @xla.jit
    def _evaluate(params, data):
        chunks = {name: data[name] for name in ("users", "relevant", "start", "stop")}
        ex_rows, ex_items = data["ex_rows"], data["ex_items"]
        per_user, top = jax.lax.map(lambda x: one_chunk(params, x, ex_rows, ex_items), chunks)
        valid, by_id = data["valid"], data["by_id"]
        result = {
            f"{name}@{k}": metrics.masked_mean(v.reshape(-1)[by_id], valid)
            for name, v in per_user.items()
        }
        result[f"coverage@{k}"] = metrics.coverage(top.reshape(-1, k)[by_id], num_items, mask=valid)
        return result

    def evaluate(params) -> dict[str, jax.Array]:
        return _evaluate(params, data)

    evaluate.lower = lambda params: _evaluate.lower(params, data)  # memory analysis
    return evaluate


# ------------------------------------------------------------------ evaluators of a dataset
def make_ranking_evaluators(score_fn, score_all_fn, data: InteractionData, eval_config) -> dict:
    """{"test": evaluate, "valid": evaluate?} for `eval_config.protocol` ("sampled": the held-out
    item against its sampled negatives; "full": the whole catalogue, training items excluded).
    Every evaluator takes `(params, key)`."""
    c = eval_config
    splits = ("test", "valid") if data.has_validation else ("test",)
    result = {}
    for prefix in splits:
        users, items = getattr(data, f"{prefix}_users"), getattr(data, f"{prefix}_items")
        if c.protocol == "sampled":
            negatives = getattr(data, f"{prefix}_negatives")
            if negatives.shape[1] == 0:
                raise UsageError(
                    "--eval_protocol=sampled needs test negatives: set --num_test_negatives > 0 "
                    "or use --eval_protocol=full"
                )
            result[prefix] = make_sampled_evaluator(
                score_fn,
                users,
                items,
                negatives,
                getattr(data, f"{prefix}_negatives_mask"),
                k=c.top_k,
                ties=c.ties,
                chunk_size=c.chunk_size,
            )
        else:
            full = make_full_evaluator(
                score_all_fn,
                users,
                items,
                *data.train_csr(),
                num_items=data.num_items,
                k=c.top_k,
                chunk_size=max(1, min(c.chunk_size, 256)),
            )
            result[prefix] = lambda params, key, full=full: full(params)
    return result


def combine(evaluators: dict):
    """`evaluate(params, key) -> {name: scalar}` of several evaluators; the metrics of any but
    "test" are prefixed with its name ("valid_hr@10")."""

    def evaluate(params, key):
        out = {}
        for name, fn in evaluators.items():
            prefix = "" if name == "test" else f"{name}_"
            out |= {prefix + k: v for k, v in fn(params, key).items()}
        return out

    return evaluate
