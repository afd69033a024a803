"""Stage: model (baselines). Shared matrix pieces: the binary user-item matrix, chunked Gram
products, top-k pruning, history-sum, neighbour-list (and list-plus-dense) scoring and the
TF-IDF / BM25 feature weights.

The binary matrix X is kept dense as int8 [num_users, num_items] on the device: exact for 0/1,
a quarter of float32 (ML-1M 22 MB, ML-20M 3.7 GB), and a row gather is all `score` needs to
rebuild a user's history; beside it its CSR (`history`) or that of X^T (`item_users`). A
product with X either sums rows over those lists (`_list_sums`: nnz * width adds, the Gram
and `score_history`) or walks the users in chunks (the dense products), so the float32 working
set is one [chunk, num_items] block plus the result.

The module runs past the house's 300 lines because it is the one place the classic models share
their sparse products; splitting it would split the cost model (`HISTORY_COST`) that picks them.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

WEIGHTINGS = ("none", "tfidf", "bm25")
BM25_K1, BM25_B = 1.2, 0.75  # Dacrema et al.'s (and Okapi's usual) constants


def check_csr(indptr, indices, num_users: int, num_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Validated host copies of a CSR of binary interactions (rows = users)."""
    indptr, indices = np.asarray(indptr, np.int64), np.asarray(indices, np.int64)
    if indptr.shape != (num_users + 1,):
        raise ValueError(f"indptr must be [num_users + 1={num_users + 1}], got {indptr.shape}")
    if indptr[0] != 0 or indptr[-1] != len(indices) or np.any(np.diff(indptr) < 0):
        raise ValueError("indptr must start at 0, be non-decreasing and end at len(indices)")
    if len(indices) and (indices.min() < 0 or indices.max() >= num_items):
        raise ValueError(f"indices must lie in [0, num_items={num_items})")
    return indptr, indices


def rows_of(indptr: np.ndarray) -> np.ndarray:
    """[nnz] row id of each CSR entry."""
    return np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))


def dense_binary(indptr, indices, num_users: int, num_items: int) -> jax.Array:
    """[num_users, num_items] int8 X with X[u, i] = 1 for each training pair."""
    indptr, indices = check_csr(indptr, indices, num_users, num_items)
    x = np.zeros((num_users, num_items), np.int8)
    x[rows_of(indptr), indices] = 1
    return jnp.asarray(x)


def counts(indptr, indices, num_items: int) -> tuple[np.ndarray, np.ndarray]:
    """([num_users] items per user, [num_items] users per item) of a training CSR."""
    return np.diff(np.asarray(indptr)), np.bincount(np.asarray(indices), minlength=num_items)


def user_rows(x: jax.Array, users: jax.Array) -> jax.Array:
    """[len(users), num_items] float32 rows of X."""
    return x[users].astype(jnp.float32)


def pad_rows(a: jax.Array, chunk: int) -> jax.Array:
    """[n, ...] -> [ceil(n / chunk), chunk, ...], zero padded."""
    pad = -a.shape[0] % chunk
    a = jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1))
    return a.reshape(-1, chunk, *a.shape[1:])


def _device_csr(indptr, indices) -> dict:
    # At least one index, so the walks' clamped reads have something to read when nnz = 0.
    indices = np.asarray(indices) if len(indices) else np.zeros(1, np.int64)
    return {"indptr": jnp.asarray(indptr, jnp.int32), "indices": jnp.asarray(indices, jnp.int32)}


def history(indptr, indices, num_users: int, num_items: int) -> dict:
    """{"indptr": [num_users + 1] int32, "indices": [nnz] int32}: the CSR of X on the device,
    as `score_history` reads it."""
    return _device_csr(*check_csr(indptr, indices, num_users, num_items))


def longest_first(counts) -> tuple[jax.Array, jax.Array]:
    """(order, position), [n] int32: the lists by descending length (ties by id), as the walks
    take them in blocks of similar lengths, and each list's place in that order."""
    order = np.argsort(-np.asarray(counts), kind="stable").astype(np.int32)
    return jnp.asarray(order), jnp.asarray(np.argsort(order).astype(np.int32))


def item_users(indptr, indices, num_users: int, num_items: int) -> dict:
    """The CSR of X^T (each item's users, ascending) on the device, "order": [num_items] int32
    the items by descending count (ties by id), as `gram` walks them, and "position": each
    item's place in that order."""
    indptr, indices = check_csr(indptr, indices, num_users, num_items)
    users = rows_of(indptr)[np.argsort(indices, kind="stable")]
    item_counts = np.bincount(indices, minlength=num_items)
    item_indptr = np.concatenate([[0], np.cumsum(item_counts)])
    order, position = longest_first(item_counts)
    return _device_csr(item_indptr, users) | {"order": order, "position": position}


HISTORY_COST = 4  # dense multiply-adds one list entry of a walk costs per column (ML-1M shape,
# W dense: 0.28-0.32 s for every user in chunks of 256 by history length, against 1.73 s for
# the dense product; the Gram: 0.29 s against 0.61 s for the symmetric dense blocks; 2-core
# AMD EPYC)


def _list_sums(table, csr: dict, targets, weights=None) -> jax.Array:
    """[len(targets), m] float32: row t sums weights[i] * table[i] (weights None: 1) over the
    entries i of list t of `csr`, one list position at a time, to the longest of the lists, so
    it pays on lists of similar length. Entries add in list order."""
    indptr, indices = csr["indptr"], csr["indices"]
    start, length = indptr[targets], indptr[targets + 1] - indptr[targets]

    def add(m, acc):
        entry = indices[jnp.minimum(start + m, indices.shape[0] - 1)]
        rows = table[entry].astype(jnp.float32)
        if weights is not None:
            rows = weights[entry][:, None] * rows
        return acc + jnp.where((m < length)[:, None], rows, jnp.zeros((), jnp.float32))

    zeros = jnp.zeros((targets.shape[0], table.shape[1]), jnp.float32)
    return jax.lax.fori_loop(0, jnp.max(length), add, zeros)


def _longest(csr: dict, targets) -> jax.Array:
    return jnp.max(csr["indptr"][targets + 1] - csr["indptr"][targets])


@jax.jit
def score_history(params: dict, w: jax.Array, users: jax.Array) -> jax.Array:
    """[len(users)] int32 -> [len(users), n] float32: X[users] @ W as the sum of W's rows over
    each user's items (`_list_sums`).

    Cost: len(users) * longest * n adds against len(users) * n^2 multiply-adds for the dense
    product, which it falls back to (same result up to rounding) when HISTORY_COST * longest
    > n. So it pays to call it on users of similar history length, as
    `evaluate.make_full_evaluator` does.

    Args:
      params: {"x": [U, n] int8} and `history`'s {"indptr", "indices"}.
      w: [n, n] float32.
    """
    longest = _longest(params, users)
    return jax.lax.cond(
        HISTORY_COST * longest > w.shape[0],
        lambda: user_rows(params["x"], users) @ w,
        lambda: _list_sums(w, params, users),
    )


GRAM_ITEMS = 256  # items per block of `gram`: a [256, num_items] float32 sum


@functools.partial(jax.jit, static_argnames=("chunk_size", "block_items"))
def gram(
    x: jax.Array,
    row_weights: jax.Array,
    columns: dict,
    *,
    chunk_size: int = 2048,
    block_items: int = GRAM_ITEMS,
) -> jax.Array:
    """X^T diag(row_weights) X, [num_items, num_items] float32, exactly symmetric.

    Row i is the sum of row_weights[u] * X[u] over item i's users (`_list_sums`), the items in
    blocks of `block_items` by descending count; a block whose most popular item costs more than
    the dense product (HISTORY_COST * count > num_users) takes it, X[:, block]^T diag(w) X
    over users in chunks of `chunk_size`. nnz * num_items adds against num_users *
    num_items^2 multiply-adds (ML-1M shape: 0.29 s against 0.61 s for the dense product's
    upper triangle of blocks, 2-core AMD EPYC). The walked rows are symmetric bitwise (a pair
    of items adds its common users' weights in user order either way); the upper triangle is
    mirrored so the dense rows are too. Memory (XLA's analysis of the compiled
    program, ML-20M shape): 6.2 GB of temporaries (the walked rows among them) and the 2.7 GB
    result, beside X's 3.7 GB.

    Args:
      x: [num_users, num_items] int8 binary matrix.
      row_weights: [num_users] float32 weight of each user's outer product.
      columns: `item_users` of the same X.
    """
    num_users, num_items = x.shape
    chunk = min(chunk_size, num_users)
    xs, ws = pad_rows(x, chunk), pad_rows(row_weights, chunk)

    def dense(items):
        def add(acc, block):
            xc, wc = block
            cols = xc[:, items].astype(jnp.float32) * wc[:, None]
            return acc + cols.T @ xc.astype(jnp.float32), None

        zeros = jnp.zeros((items.shape[0], num_items), jnp.float32)
        return jax.lax.scan(add, zeros, (xs, ws))[0]

    def block(items):
        return jax.lax.cond(
            HISTORY_COST * _longest(columns, items) > num_users,
            lambda: dense(items),
            lambda: _list_sums(x, columns, items, row_weights),
        )

    order, size = columns["order"], min(block_items, num_items)
    blocks = jnp.pad(order, (0, -num_items % size), mode="edge").reshape(-1, size)
    rows = jax.lax.map(block, blocks).reshape(-1, num_items)  # row p: item order[p]'s
    position = columns["position"]
    index = jnp.arange(num_items)
    upper = index[:, None] <= index[None, :]
    return jnp.where(upper, rows[position], rows[position].T)


def binary_gram(
    indptr, indices, num_users: int, num_items: int, row_weights=None, *, chunk_size: int = 2048
) -> tuple[jax.Array, jax.Array]:
    """(X int8 [num_users, num_items], X^T diag(row_weights) X) of a training CSR, `gram`'s;
    row_weights None: ones."""
    x = dense_binary(indptr, indices, num_users, num_items)
    weights = np.ones(num_users, np.float32) if row_weights is None else row_weights
    columns = item_users(indptr, indices, num_users, num_items)
    return x, gram(x, jnp.asarray(weights, jnp.float32), columns, chunk_size=chunk_size)


@functools.partial(jax.jit, static_argnames="k")
def keep_topk_rows(s: jax.Array, *, k: int) -> jax.Array:
    """[r, n] -> [r, n] keeping each row's k largest entries (ties: lower column), zeros else.

    `lax.top_k` orders ties by column, so a row's k-th entry (value v, column c) says which
    entries are kept: every one above v, and those equal to v up to column c. One elementwise
    select then builds the result, instead of scattering the k values into zeros (ML-1M's
    item-item matrix: 0.11 s against 0.2 s with the scatter in 512-row chunks).
    """
    k = min(k, s.shape[1])
    # The barrier keeps XLA from folding the slices below into top_k's sort: sliced at
    # [k-1:k] it no longer sees a top-k and sorts every row in full (20x slower).
    values, cols = jax.lax.optimization_barrier(jax.lax.top_k(s, k))
    kth, last = values[:, k - 1, None], cols[:, k - 1, None]
    index = jnp.arange(s.shape[1])[None, :]
    keep = (s > kth) | ((s == kth) & (index <= last))
    return jnp.where(keep, s, jnp.zeros((), s.dtype))


def neighbour_lists(s: jax.Array, k: int) -> dict:
    """{"neighbours": [r, k] int32, "weights": [r, k]}: each row's k largest entries (ties:
    lower column), largest first; row j of `s` holds target item j's similarity to each item."""
    weights, ids = jax.lax.top_k(s, min(k, s.shape[1]))
    return {"neighbours": ids.astype(jnp.int32), "weights": weights}


NEIGHBOUR_CHUNK = 128  # users per block of `score_neighbours`: [items, 128] float32 sums


@functools.partial(jax.jit, static_argnames="chunk")
def score_neighbours(params: dict, users: jax.Array, *, chunk: int = NEIGHBOUR_CHUNK):
    """[len(users)] int32 -> [len(users), n] float32: score(u, j) = sum over m of
    weights[j, m] * X[u, neighbours[j, m]], the product X[users] @ W of an item-item W with
    k entries per column, without W.

    Each block of `chunk` users is transposed to [n, chunk] and the k neighbour rows of every
    target are added one neighbour at a time (a row gather and a multiply-add each, in
    neighbour order): k n len(users) multiply-adds instead of the dense product's n^2
    len(users). ML-1M, k = 100, all users ranked by `evaluate.make_full_evaluator`: 0.45-0.57 s
    against 1.18-1.27 s for the dense product (2-core Xeon, one process); blocks of 128 users
    keep the [3706, 128] sums in a core's L2 (0.44-0.46 s against 0.55 s with 256 or 512 users,
    0.8-1.0 s with 64, in a probe of the ranking alone).

    Args:
      params: {"x": [U, n] int8, "neighbours": [n, k] int32, "weights": [n, k] float32}.
    """
    x, ids, weights = params["x"], params["neighbours"], params["weights"]

    def block(rows):
        xt = rows.T  # [n, chunk]

        def add(m, acc):
            return acc + weights[:, m, None] * xt[ids[:, m]].astype(jnp.float32)

        return jax.lax.fori_loop(0, ids.shape[1], add, jnp.zeros(xt.shape, jnp.float32)).T

    scores = jax.lax.map(block, pad_rows(x[users], chunk))
    return scores.reshape(-1, x.shape[1])[: users.shape[0]]


LIST_COST = 16  # dense multiply-adds one list entry costs (ItemKNN on ML-1M: k = 100 lists 2.3-2.6x
# faster than the dense product of 3,706 columns, 2-core Xeon)
LIST_CAPS = (8, 16, 24, 32, 48, 64, 96, 128, 192, 256)
DENSE_PAD = 32  # dense columns of `split_columns` padded to a multiple of this


def list_costs(column_counts, *, list_cost: int = LIST_COST) -> dict[int, int]:
    """{cap: cost} of scoring one user through `split_columns(w, cap)`, in dense columns:
    columns with up to `cap` entries as lists (`cap * list_cost`), the others dense (1 each);
    cap 0 is all of them dense."""
    column_counts = np.asarray(column_counts)
    costs = {0: int(np.count_nonzero(column_counts))}
    return costs | {cap: cap * list_cost + int(np.sum(column_counts > cap)) for cap in LIST_CAPS}


def list_cap(column_counts, *, list_cost: int = LIST_COST) -> int:
    """The cap of `list_costs` that costs least (the smaller on a tie)."""
    costs = list_costs(column_counts, list_cost=list_cost)
    return min(costs, key=lambda cap: (costs[cap], cap))


def split_columns(w: jax.Array, cap: int | None = None) -> dict:
    """An item-item W [n, n] whose columns are ragged (RP3beta keeps top-k per row) as
    `score_split` reads it: each column with at most `cap` entries as a list, the others dense.

    Returns {"neighbours": [n, cap] int32, "weights": [n, cap]} (a column's sources in
    ascending order, then zero weights; all zero for a dense column), "dense": [h] int32 ids
    of the dense columns and "w_dense": [n, h] their entries, h padded to a multiple of
    DENSE_PAD by zero columns added to the first dense column (so the fits of a search share a
    few compiled evaluators). cap: None chooses by `list_cap`.
    """
    nonzero = w != 0
    counts = np.asarray(jnp.sum(nonzero, axis=0))
    cap = list_cap(counts) if cap is None else cap
    dense = np.flatnonzero(counts > cap).astype(np.int32)
    pad = -len(dense) % DENSE_PAD
    w_dense = jnp.pad(w[:, dense], [(0, 0), (0, pad)])
    dense = np.pad(dense, (0, pad), mode="edge")  # x + 0 is x: the padding changes nothing
    # top_k puts equal values in index order: each column's entries first, by source id.
    _, ids = jax.lax.top_k(nonzero.T.astype(jnp.float32), max(cap, 1))
    weights = jnp.take_along_axis(w.T, ids, axis=1)
    weights = jnp.where(jnp.asarray(counts <= cap)[:, None], weights, jnp.zeros((), w.dtype))
    return {"neighbours": ids.astype(jnp.int32), "weights": weights,
            "dense": jnp.asarray(dense), "w_dense": w_dense}  # fmt: skip


@jax.jit
def score_split(params: dict, users: jax.Array) -> jax.Array:
    """[len(users)] int32 -> [len(users), n] float32: X[users] @ W of a `split_columns` W (with
    "x"), the list columns by `score_neighbours` and the dense ones by one product."""
    scores = score_neighbours(params, users)
    rows = user_rows(params["x"], users)
    return scores.at[:, params["dense"]].add(rows @ params["w_dense"])


def feature_weights(doc_counts, term_counts, weighting: str) -> tuple[np.ndarray, np.ndarray]:
    """(doc weights, term weights) so the weighted matrix is diag(doc) A diag(term).

    A is binary [num_docs, num_terms] with row sums `doc_counts` and column sums
    `term_counts`. TF-IDF and BM25 follow Dacrema et al.'s `IR_feature_weighting` on binary
    data: tf-idf = idf(term) = log(num_docs / (1 + df)); BM25 = idf(term) *
    (K1 + 1) / (K1 * ((1 - B) + B * len(doc) / mean len) + 1). Both factor into a doc and a
    term part, which lets the Gram product absorb them as diagonal scalings.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    doc_counts = np.asarray(doc_counts, np.float64)
    term_counts = np.asarray(term_counts, np.float64)
    ones_doc, ones_term = np.ones_like(doc_counts), np.ones_like(term_counts)
    if weighting == "none":
        return ones_doc.astype(np.float32), ones_term.astype(np.float32)
    idf = np.log(len(doc_counts) / (1.0 + term_counts))
    if weighting == "tfidf":
        return ones_doc.astype(np.float32), idf.astype(np.float32)
    length = (1 - BM25_B) + BM25_B * doc_counts / max(doc_counts.mean(), 1e-12)
    doc = (BM25_K1 + 1) / (BM25_K1 * length + 1)
    return doc.astype(np.float32), idf.astype(np.float32)


def safe_power(counts, exponent: float) -> np.ndarray:
    """counts ** exponent as float32, 0 where counts == 0 (an empty row or column)."""
    counts = np.asarray(counts, np.float64)
    out = np.zeros_like(counts)
    np.power(counts, exponent, out=out, where=counts > 0)
    return out.astype(np.float32)
