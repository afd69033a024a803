"""ncf_jax.baselines against independent NumPy references on small random data.

Tolerances: float32 device results vs float64 NumPy; rtol/atol 1e-4 unless a test says more
(EASE: 2e-3 relative, an inverse of a float32 Gram matrix; iALS: 1e-3).
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ncf_jax.baselines import (
    _matrix,
    ease,
    ials,
    itemknn,
    puresvd,
    rp3beta,
    slim,
    toppop,
    userknn,
)
from ncf_jax.data import synthetic
from ncf_jax.data.types import csr_from_pairs

NU, NI = 30, 20


@pytest.fixture(scope="module")
def data():
    """(indptr, indices, X float64 [NU, NI]) of a random binary matrix, density ~0.3."""
    rng = np.random.default_rng(0)
    x = (rng.random((NU, NI)) < 0.3).astype(np.float64)
    x[0] = 0.0  # an empty user
    x[:, 1] = 0.0  # an unseen item
    users, items = np.nonzero(x)
    indptr, indices = csr_from_pairs(users, items, NU)
    return indptr, indices, x


def kw():
    return {"num_users": NU, "num_items": NI}


def all_users():
    return jnp.arange(NU, dtype=jnp.int32)


@pytest.mark.parametrize("weighted", [False, True])
def test_gram_matches_numpy_on_walked_and_dense_blocks(weighted):
    """23 items in blocks of 5 by popularity (2 to about 33 users of 37): the popular blocks take
    the dense product, the others walk their items' users; both against NumPy, and exactly
    symmetric."""
    rng = np.random.default_rng(4)
    x = (rng.random((37, 23)) < np.linspace(0.05, 0.9, 23)[None, :]).astype(np.int8)
    w = rng.random(37).astype(np.float32) if weighted else np.ones(37, np.float32)
    counts = np.sort(x.sum(0))
    assert _matrix.HISTORY_COST * counts[-1] > 37 >= _matrix.HISTORY_COST * counts[4]  # both
    indptr, indices = csr_from_pairs(*np.nonzero(x), 37)
    columns = _matrix.item_users(indptr, indices, 37, 23)
    g = _matrix.gram(jnp.asarray(x), jnp.asarray(w), columns, chunk_size=16, block_items=5)
    g = np.asarray(g)
    want = (x * w[:, None].astype(np.float64)).T @ x
    if weighted:
        np.testing.assert_allclose(g, want, rtol=1e-5)
    else:
        np.testing.assert_array_equal(g, want)  # integer counts: exact on both paths
    np.testing.assert_array_equal(g, g.T)


def test_toppop_counts(data):
    indptr, indices, x = data
    params = toppop.fit(indptr, indices, **kw())
    expected = np.bincount(indices, minlength=NI)
    np.testing.assert_array_equal(np.asarray(toppop.score(params, all_users()))[3], expected)


def test_ease_matches_inverse(data):
    indptr, indices, x = data
    lam = 5.0
    p = np.linalg.inv(x.T @ x + lam * np.eye(NI))
    b = np.eye(NI) - p / np.diag(p)[None, :]
    params = ease.fit(indptr, indices, **kw(), lam=lam)
    np.testing.assert_allclose(np.asarray(params["b"]), b, rtol=2e-3, atol=2e-4)
    assert np.all(np.diag(np.asarray(params["b"])) == 0)
    np.testing.assert_allclose(np.asarray(ease.score(params, all_users())), x @ b, atol=2e-3)


def test_ease_grid_matches_separate_fits(data):
    indptr, indices, _ = data
    lams = [1.0, 10.0, 100.0]
    grid = ease.fit_grid(indptr, indices, **kw(), lams=lams)
    scores = np.asarray(ease.score_grid(grid, all_users()))
    for index, lam in enumerate(lams):
        single = ease.fit(indptr, indices, **kw(), lam=lam)
        expected = np.asarray(ease.score(single, all_users()))
        np.testing.assert_allclose(scores[index], expected, atol=2e-3)
        member = ease.grid_member(grid, index)
        np.testing.assert_allclose(member["b"], single["b"], rtol=2e-3, atol=2e-4)


def test_ease_shifted_tridiagonal_solves_match_numpy():
    """The grid's LDL^T pieces against NumPy on a random tridiagonal T and orthogonal Q:
    (T + lam I)^-1 B by `_shifted_solve`, diag(Q (T + lam I)^-1 Q^T) by `_diag_p`."""
    rng = np.random.default_rng(3)
    n, lams = 9, np.array([0.5, 4.0], np.float32)
    d, e = rng.random(n).astype(np.float32) + 2.0, rng.normal(size=n - 1).astype(np.float32)
    t = np.diag(d) + np.diag(e, 1) + np.diag(e, -1)
    q = np.linalg.qr(rng.normal(size=(n, n)))[0].astype(np.float32)
    b = rng.normal(size=(n, 3)).astype(np.float32)
    piv, sub = ease._ldl(jnp.asarray(d), jnp.asarray(e), jnp.asarray(lams))
    diag = ease._diag_p(jnp.asarray(q.T), sub, piv)
    for i, lam in enumerate(lams):
        shifted = t + lam * np.eye(n)
        got = ease._shifted_solve(sub[i], piv[i], jnp.asarray(b))
        np.testing.assert_allclose(got, np.linalg.solve(shifted, b), rtol=1e-4, atol=1e-5)
        want = np.diag(q @ np.linalg.inv(shifted) @ q.T)
        np.testing.assert_allclose(diag[i], want, rtol=1e-4, atol=1e-6)


def cosine_loop(a, shrink):
    """Cosine with shrink between the rows of a ([n, f]), by explicit loops; zero diagonal."""
    n = len(a)
    s = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i != j:
                s[i, j] = (
                    a[i] @ a[j] / (np.linalg.norm(a[i]) * np.linalg.norm(a[j]) + shrink + 1e-6)
                )
    return s


def topk_loop(row, k):
    """Indices of row's k largest entries, ties to the lower index."""
    return np.argsort(-row, kind="stable")[:k]


def test_top_k_rows_and_neighbour_lists_match_a_stable_sort_with_ties():
    rng = np.random.default_rng(3)
    s = rng.integers(0, 4, size=(30, 30)).astype(np.float32)  # four values: ties everywhere
    for k in (1, 7, 30, 40):
        expected = np.zeros_like(s)
        for i in range(len(s)):
            top = topk_loop(s[i], k)
            expected[i, top] = s[i, top]
        np.testing.assert_array_equal(_matrix.keep_topk_rows(s, k=k), expected)
        lists = _matrix.neighbour_lists(s, k)
        want = np.stack([topk_loop(row, k) for row in s])
        np.testing.assert_array_equal(lists["neighbours"], want)
        np.testing.assert_array_equal(lists["weights"], np.take_along_axis(s, want, axis=1))


def test_neighbour_scores_are_x_times_the_dense_w_of_the_lists():
    """Blocks of 4 users for 10: padding, several blocks; W built by loops from the lists."""
    rng = np.random.default_rng(4)
    x = (rng.random((10, 9)) < 0.4).astype(np.int8)
    ids = np.stack([rng.permutation(9)[:3] for _ in range(9)]).astype(np.int32)  # [target, k]
    weights = rng.normal(size=(9, 3)).astype(np.float32)
    w = np.zeros((9, 9), np.float32)
    for j in range(9):
        for m in range(3):
            w[ids[j, m], j] = weights[j, m]
    params = {"x": jnp.asarray(x), "neighbours": jnp.asarray(ids), "weights": jnp.asarray(weights)}
    users = jnp.asarray([7, 0, 3, 3, 9, 1, 2], jnp.int32)
    got = _matrix.score_neighbours(params, users, chunk=4)
    np.testing.assert_allclose(got, x[np.asarray(users)] @ w, rtol=1e-6, atol=1e-6)


def test_history_sums_are_x_times_w_on_both_paths():
    """Histories of 0 to 30 items of 64: the short users walk their histories (HISTORY_COST *
    longest <= 64), all users together take the dense product; both are X[users] @ W."""
    rng = np.random.default_rng(6)
    num_users, num_items = 12, 64
    lengths = np.array([0, 1, 2, 3, 5, 8, 30, 29, 4, 16, 7, 1])
    x = np.zeros((num_users, num_items), np.int8)
    for u, length in enumerate(lengths):
        x[u, rng.permutation(num_items)[:length]] = 1
    indptr, indices = csr_from_pairs(*np.nonzero(x), num_users)
    params = {"x": jnp.asarray(x)} | _matrix.history(indptr, indices, num_users, num_items)
    w = rng.normal(size=(num_items, num_items)).astype(np.float32)
    short = np.array([5, 0, 2, 2, 8, 1, 11, 3], np.int32)  # repeats, an empty history
    assert _matrix.HISTORY_COST * lengths[short].max() <= num_items  # walks
    assert _matrix.HISTORY_COST * lengths.max() > num_items  # falls back to the product
    for users in (short, np.arange(num_users, dtype=np.int32)):
        got = _matrix.score_history(params, jnp.asarray(w), jnp.asarray(users))
        np.testing.assert_allclose(got, x[users] @ w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("weighting", ["none", "tfidf", "bm25"])
def test_itemknn_loops(data, weighting):
    indptr, indices, x = data
    k, shrink = 5, 2.0
    doc, term = _matrix.feature_weights(x.sum(0), x.sum(1), weighting)  # items are documents
    s = cosine_loop((x * term[:, None] * doc[None, :]).T, shrink)
    expected = np.zeros((NU, NI))
    for u in range(NU):
        for j in range(NI):
            expected[u, j] = sum(s[j, i] * x[u, i] for i in topk_loop(s[j], k))
    params = itemknn.fit(indptr, indices, **kw(), k=k, shrink=shrink, weighting=weighting)
    got = np.asarray(itemknn.score(params, all_users()))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("weighting", "chunk_size"), [("none", 1024), ("none", 8), ("bm25", 8)])
def test_userknn_loops(data, weighting, chunk_size):
    """One block of 30 users (the dense product), or blocks of 8 by history length: the longest
    dense, the shortest walked (sums of X^T's rows)."""
    indptr, indices, x = data
    k, shrink = 4, 1.0
    lengths = np.sort(x.sum(1))
    assert _matrix.HISTORY_COST * lengths[5] <= NI < _matrix.HISTORY_COST * lengths[-1]
    doc, term = _matrix.feature_weights(x.sum(1), x.sum(0), weighting)  # users are documents
    s = cosine_loop(x * doc[:, None] * term[None, :], shrink)
    expected = np.zeros((NU, NI))
    for u in range(NU):
        for v in topk_loop(s[u], k):
            expected[u] += s[u, v] * x[v]
    params = userknn.fit(
        indptr, indices, **kw(), k=k, shrink=shrink, weighting=weighting, chunk_size=chunk_size
    )
    np.testing.assert_allclose(userknn.score(params, all_users()), expected, atol=1e-4)


def test_rp3beta_loop(data, monkeypatch):
    indptr, indices, x = data
    alpha, beta, k = 0.8, 0.4, 6
    n_u, n_i = x.sum(1), x.sum(0)
    w = np.zeros((NI, NI))
    for i in range(NI):
        for j in range(NI):
            if i != j and n_i[i] and n_i[j]:
                walk = sum((x[u, i] / n_i[i]) ** alpha * (x[u, j] / n_u[u]) ** alpha
                           for u in range(NU) if n_u[u])  # fmt: skip
                w[i, j] = walk / n_i[j] ** beta
    pruned = np.zeros_like(w)
    for i in range(NI):
        top = topk_loop(w[i], k)
        pruned[i, top] = w[i, top]
    pruned /= np.maximum(pruned.sum(1, keepdims=True), 1e-12)
    params = rp3beta.fit(indptr, indices, **kw(), alpha=alpha, beta=beta, k=k, normalize=True)
    np.testing.assert_allclose(rp3beta.score(params, all_users()), x @ pruned, atol=1e-4)
    assert rp3beta.for_scoring(params) is params  # too small to gain from splitting W
    monkeypatch.setattr(rp3beta, "SPLIT_MIN_MACS", 0)
    split = rp3beta.for_scoring(params)  # what the evaluation of a large W scores
    assert "w" not in split and "neighbours" in split
    np.testing.assert_allclose(rp3beta.score(split, all_users()), x @ pruned, atol=1e-4)


@pytest.mark.parametrize("cap", [0, 2, NI, None])
def test_split_columns_score_as_the_dense_product(data, cap):
    """Ragged columns (1 to NI entries) as lists up to `cap` entries, the rest dense: X @ W."""
    x = data[2]
    rng = np.random.default_rng(5)
    w = rng.random((NI, NI)) * (rng.random((NI, NI)) < np.linspace(0.05, 1.0, NI)[None, :])
    w[:, 0], w[3, 0] = 0.0, 0.7  # a one-entry column
    params = {
        "x": jnp.asarray(x, jnp.int8),
        **_matrix.split_columns(jnp.asarray(w, jnp.float32), cap),
    }
    counts = (w != 0).sum(0)
    chosen = _matrix.list_cap(counts) if cap is None else cap  # None: 0 here, all dense
    dense = np.asarray(params["dense"])
    assert len(dense) % _matrix.DENSE_PAD == 0 and set(dense) == set(
        np.flatnonzero(counts > chosen)
    )
    if cap == 2:  # both kinds of column
        assert 0 < len(set(dense)) < NI
    np.testing.assert_allclose(
        _matrix.score_split(params, all_users()), x @ w, rtol=1e-5, atol=1e-6
    )


def test_list_cap_weighs_list_entries_against_dense_columns():
    """Columns of 1 entry and of 1,000: the shortest lists (cap 8) and the long columns dense,
    unless lists cost more than every column dense; equal columns: lists when that is cheaper."""
    counts = np.array([1] * 900 + [1000] * 10)
    assert _matrix.list_cap(counts, list_cost=16) == 8  # the smallest cap: 8 * 16 + 10 dense
    assert _matrix.list_cap(counts, list_cost=1000) == 0  # 910 dense columns cost less
    assert _matrix.list_cap(np.full(50, 40), list_cost=1) == 48  # 48 < 50 dense columns


def test_puresvd_matches_numpy_svd(data):
    indptr, indices, x = data
    f = 5
    _, _, vt = np.linalg.svd(x)
    expected = x @ vt[:f].T @ vt[:f]
    params = puresvd.fit(indptr, indices, **kw(), factors=f)
    np.testing.assert_allclose(puresvd.score(params, all_users()), expected, atol=1e-3)


def slim_coordinate_descent(x, alpha, l1_ratio, sweeps=150):
    """scikit-learn's ElasticNet(positive=True, fit_intercept=False) per column, by loops."""
    n, m = x.shape
    g = x.T @ x
    w = np.zeros((m, m))
    for j in range(m):
        for _ in range(sweeps):
            for i in range(m):
                if i == j:
                    continue
                rest = g[i] @ w[:, j] - g[i, i] * w[i, j]
                numerator = (g[i, j] - rest) / n - alpha * l1_ratio
                w[i, j] = max(numerator, 0.0) / (g[i, i] / n + alpha * (1 - l1_ratio))
    return w


def test_slim_matches_coordinate_descent(data):
    """FISTA (2,000 steps) against exact coordinate descent; atol 1e-4 on O(0.1) weights."""
    indptr, indices, x = data
    alpha, l1_ratio = 0.01, 0.2
    expected = slim_coordinate_descent(x, alpha, l1_ratio)
    params = slim.fit(indptr, indices, **kw(), alpha=alpha, l1_ratio=l1_ratio, k=NI,
                      iterations=2000)  # fmt: skip
    w = np.zeros((NI, NI), np.float32)  # column j of W from target j's list
    w[np.asarray(params["neighbours"]), np.arange(NI)[:, None]] = params["weights"]
    np.testing.assert_allclose(w, expected, atol=1e-4)
    assert np.all(w >= 0) and np.all(np.diag(w) == 0)


HP = {"alpha0": 0.3, "reg": 0.05, "nu": 1.0, "confidence": 2.0}


def ials_reference_rows(x, other, alpha0, reg, nu, confidence):
    """Each row's exact minimiser by np.linalg.lstsq on the stacked least-squares system."""
    out = np.zeros((len(x), other.shape[1]))
    for r in range(len(x)):
        seen = np.flatnonzero(x[r])
        lam = reg * (confidence * len(seen) + alpha0 * len(other)) ** nu
        # rows: sqrt(c) h_i -> sqrt(c) (observed), sqrt(alpha0) h_j -> 0 (all), sqrt(lam) NI -> 0
        a = np.concatenate([np.sqrt(confidence) * other[seen], np.sqrt(alpha0) * other,
                            np.sqrt(lam) * np.eye(other.shape[1])])  # fmt: skip
        b = np.concatenate([np.sqrt(confidence) * np.ones(len(seen)), np.zeros(len(a) - len(seen))])
        out[r] = np.linalg.lstsq(a, b, rcond=None)[0]
    return out


def test_ials_buckets_hold_every_row_once_with_its_own_columns():
    """Skewed row lengths (0 to 200) against the CSR they came from."""
    rng = np.random.default_rng(5)
    counts = np.minimum(rng.zipf(1.6, 300) - 1, 200)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    cols = rng.integers(0, 500, indptr[-1]).astype(np.int32)
    lengths, seen = ials.bucket_lengths(counts), []
    for rows, padded in ials.buckets(indptr, cols, num_cols=500):
        rows, padded = np.asarray(rows).reshape(-1), np.asarray(padded)
        length = padded.shape[-1]
        assert length in lengths and padded.shape[1] * length <= max(ials.BUCKET_ELEMENTS, length)
        padded = padded.reshape(-1, length)
        for r, row_cols in zip(rows, padded, strict=True):
            if r == 300:  # a padding row: nothing but padding ids
                assert (row_cols == 500).all()
                continue
            seen.append(r)
            n = counts[r]
            assert length == min(x for x in lengths if x >= n)  # the tightest chosen length
            np.testing.assert_array_equal(row_cols[:n], cols[indptr[r] : indptr[r + 1]])
            assert (row_cols[n:] == 500).all()
    assert sorted(seen) == list(range(300))


@pytest.mark.parametrize("max_buckets", [1, 3, 5])
def test_ials_bucket_lengths_pad_least_among_every_choice(max_buckets, monkeypatch):
    """The dynamic programme against brute force over every subset of the candidates."""
    monkeypatch.setattr(ials, "MAX_BUCKETS", max_buckets)
    counts = np.minimum(np.random.default_rng(6).zipf(1.5, 400), 150)
    candidates = ials.candidate_lengths(150)
    padded = lambda chosen: sum(min(x for x in chosen if x >= n) for n in counts)
    subsets = [
        [*rest, candidates[-1]]
        for k in range(max_buckets)
        for rest in itertools.combinations(candidates[:-1], k)
    ]
    got = ials.bucket_lengths(counts)
    assert len(got) <= max_buckets and got[-1] == candidates[-1]
    assert padded(got) == min(padded(s) for s in subsets)


@pytest.mark.parametrize(
    "solver,steps,elements",
    [("cholesky", 0, None), ("cg", 8, None), ("cg", 8, 16)],
)
def test_ials_sweep_matches_lstsq(data, solver, steps, elements, monkeypatch):
    """CG with d = 8 steps on a d = 8 system is exact up to rounding (`elements`: CG chunks of
    one or two rows in buckets from length 2, so many chunks and buckets)."""
    indptr, indices, x = data
    tol = 1e-3
    if elements:
        monkeypatch.setattr(ials, "BUCKET_ELEMENTS", elements)
        monkeypatch.setattr(ials, "MIN_LENGTH", 2)
    d = ials.prepare(indptr, indices, **kw())

    params = ials.init(jax.random.key(1), **kw(), factors=8, scale=1.0)
    new = ials.sweep(params, d, **HP, solver=solver, cg_steps=steps, chunk_size=16)
    users = ials_reference_rows(x, np.asarray(params["items"], np.float64), **HP)
    items = ials_reference_rows(x.T, users, **HP)
    np.testing.assert_allclose(new["users"], users, atol=tol)
    np.testing.assert_allclose(new["items"], items, atol=tol)


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_ials_objective_never_increases(data, solver):
    indptr, indices, _ = data
    d = ials.prepare(indptr, indices, **kw())
    # factors and chunk_size as in the lstsq test, so its compiled "cholesky" sweep is reused.
    params = ials.init(jax.random.key(2), **kw(), factors=8, scale=1.0)
    values = [float(ials.objective(params, d, **HP))]
    for _ in range(6):
        params = ials.sweep(params, d, **HP, solver=solver, cg_steps=2, chunk_size=16)
        values.append(float(ials.objective(params, d, **HP)))
    assert all(b <= a * (1 + 1e-5) for a, b in zip(values, values[1:], strict=False)), values
    assert values[-1] < values[0]


def test_ials_objective_matches_numpy(data):
    indptr, indices, x = data

    d = ials.prepare(indptr, indices, **kw())
    p = ials.init(jax.random.key(3), **kw(), factors=4, scale=1.0)
    w, h = np.asarray(p["users"], np.float64), np.asarray(p["items"], np.float64)
    y = w @ h.T
    a0, reg, nu, c = HP["alpha0"], HP["reg"], HP["nu"], HP["confidence"]
    expected = c * np.sum(x * (y - 1) ** 2) + a0 * np.sum(y**2)
    expected += reg * np.sum((c * x.sum(1) + a0 * NI) ** nu * (w**2).sum(1))
    expected += reg * np.sum((c * x.sum(0) + a0 * NU) ** nu * (h**2).sum(1))
    np.testing.assert_allclose(float(ials.objective(p, d, **HP)), expected, rtol=1e-4)


@pytest.mark.parametrize("module,hp", [(ease, {"lam": 10.0}), (itemknn, {"k": 20, "shrink": 1.0})])
def test_planted_blocks_rank_held_out_item_high(module, hp):
    planted = synthetic.planted(num_users=64, num_items=80, num_test_negatives=20)
    indptr, indices = planted.train_csr()
    params = module.fit(indptr, indices, num_users=64, num_items=80, **hp)
    scores = np.asarray(module.score(params, jnp.arange(64, dtype=jnp.int32)))
    test = scores[np.arange(64), planted.test_items]
    negatives = np.take_along_axis(scores, planted.test_negatives, axis=1)
    rank = (negatives >= test[:, None]).sum(1)  # pessimistic
    assert np.mean(rank < 10) > 0.9


def test_bad_csr_is_refused():
    with pytest.raises(ValueError, match="indices must lie"):
        ease.fit(np.array([0, 1]), np.array([5]), num_users=1, num_items=3)
    with pytest.raises(ValueError, match="weighting"):
        _matrix.feature_weights(np.ones(2), np.ones(2), "okapi")
