"""Preprocessing and splits against brute-force references; negatives; cache; real ml-100k."""

import collections
import dataclasses

import numpy as np
import pandas as pd
import pytest

from ncf_jax.config import DataConfig
from ncf_jax.data import dataset, ncf_format, splits
from ncf_jax.data.types import csr_from_pairs


def _random_table(seed, n=300, users=25, items=40, ts_range=6):
    """Small data with many timestamp ties and no duplicate pairs."""
    rng = np.random.default_rng(seed)
    pairs = rng.choice(users * items, size=n, replace=False)
    return pd.DataFrame(
        {
            "user": pairs // items + 100,
            "item": pairs % items + 500,
            "rating": rng.integers(1, 6, n).astype(np.float32),
            "timestamp": rng.integers(0, ts_range, n).astype(np.int64),
        }
    )


def _as_set(data, prefix):
    users, items = getattr(data, f"{prefix}_users"), getattr(data, f"{prefix}_items")
    return {
        (int(data.user_ids[u]), int(data.item_ids[i])) for u, i in zip(users, items, strict=True)
    }


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("validation", [False, True])
def test_leave_one_out_matches_brute_force(seed, validation):
    table = _random_table(seed)
    # A user with a single interaction and one with two.
    extra = pd.DataFrame(
        {"user": [1, 2, 2], "item": [500, 501, 502], "rating": [1.0] * 3, "timestamp": [3, 3, 3]}
    )
    table = pd.concat([table, extra], ignore_index=True)
    cfg = DataConfig(split="loo", validation=validation, num_test_negatives=0)
    data = dataset.prepare(table, cfg, name="t")
    by_user = collections.defaultdict(list)
    for u, i, t in zip(table.user, table.item, table.timestamp, strict=True):
        by_user[u].append((t, i))
    want_test, want_valid = set(), set()
    for u, rows in by_user.items():
        rows.sort()
        if len(rows) >= 2:
            want_test.add((u, rows[-1][1]))
        if validation and len(rows) >= 3:
            want_valid.add((u, rows[-2][1]))
    assert _as_set(data, "test") == want_test
    assert _as_set(data, "valid") == want_valid
    everything = set(zip(table.user, table.item, strict=True))
    assert _as_set(data, "train") == everything - want_test - want_valid
    order = np.lexsort((data.train_items, data.train_users))
    assert (order == np.arange(len(order))).all()
    assert data.train_users.dtype == np.int32 and data.train_timestamps.dtype == np.int64


@pytest.mark.parametrize("seed", range(3))
def test_temporal_matches_brute_force(seed):
    table = _random_table(seed)
    cfg = DataConfig(split="temporal", test_fraction=0.25, num_test_negatives=0)
    data = dataset.prepare(table, cfg, name="t")
    rows = sorted(zip(table.timestamp, table.user, table.item, strict=True))
    n_test = round(0.25 * len(rows))
    train = {(u, i) for _, u, i in rows[:-n_test]}
    train_users, train_items = {u for u, _ in train}, {i for _, i in train}
    want = {(u, i) for _, u, i in rows[-n_test:] if u in train_users and i in train_items}
    assert _as_set(data, "train") == train
    assert _as_set(data, "test") == want


def test_temporal_validation_and_test_rating_threshold():
    table = _random_table(7, n=400)
    cfg = DataConfig(
        split="temporal",
        test_fraction=0.2,
        validation=True,
        test_rating_threshold=4.0,
        num_test_negatives=3,
    )
    data = dataset.prepare(table, cfg, name="t")
    rows = sorted(zip(table.timestamp, table.user, table.item, table.rating, strict=True))
    train = {(u, i) for _, u, i, _ in rows[:-160]}
    assert _as_set(data, "train") == train
    assert (data.test_ratings >= 4).all() and (data.valid_ratings >= 4).all()
    assert data.valid_negatives.shape == (len(data.valid_users), 3)
    assert data.test_negatives.shape == (len(data.test_users), 3)


def test_random_split_is_seeded_and_row_order_free():
    table = _random_table(3)
    cfg = DataConfig(split="random", test_fraction=0.2, num_test_negatives=0, seed=5)
    a = dataset.prepare(table, cfg, name="t")
    b = dataset.prepare(table.sample(frac=1.0, random_state=1), cfg, name="t")
    c = dataset.prepare(table, dataclasses.replace(cfg, seed=6), name="t")
    assert _as_set(a, "test") == _as_set(b, "test")
    assert _as_set(a, "test") != _as_set(c, "test")
    assert not _as_set(a, "test") & _as_set(a, "train")


def test_duplicates_threshold_and_filters():
    table = pd.DataFrame(
        {
            "user": [1, 1, 1, 2, 2, 3, 3, 3],
            "item": [5, 5, 6, 5, 6, 5, 6, 7],
            "rating": [5.0, 1.0, 4.0, 4.0, 5.0, 4.0, 5.0, 5.0],
            "timestamp": [1, 2, 1, 1, 1, 1, 1, 1],
        }
    )
    # (1, 5) keeps its latest row (rating 1), which the threshold then drops.
    cfg = DataConfig(rating_threshold=4.0, min_item_interactions=2, num_test_negatives=0)
    data = dataset.prepare(table, cfg, name="t")
    pairs = _as_set(data, "train") | _as_set(data, "test")
    assert pairs == {(1, 6), (2, 5), (2, 6), (3, 5), (3, 6)}  # item 7 has one row
    assert data.item_ids.tolist() == [5, 6]
    # Rows equal in timestamp: the higher rating wins, whatever the row order.
    tied = pd.DataFrame({"user": [1, 1], "item": [5, 5], "rating": [2.0, 3.0], "timestamp": [0, 0]})
    for frame in (tied, tied.iloc[::-1]):
        kept = splits.latest_per_pair(*(frame[c].to_numpy() for c in frame.columns))
        assert frame["rating"].to_numpy()[kept].tolist() == [3.0]


def test_k_core_reaches_a_fixed_point():
    users = np.array([0, 0, 1, 1, 2])
    items = np.array([0, 1, 0, 2, 2])
    keep = splits.k_core(users, items, min_user=2, min_item=2)
    # Item 1 and user 2 fall; then item 2 has one row and falls, then user 1 has one row...
    assert keep.tolist() == [False] * 5


def _negatives(users, items, num_items, k, seed):
    known = csr_from_pairs(users, items, int(users.max()) + 1)
    return splits.sample_test_negatives(
        np.unique(users),
        np.zeros(len(np.unique(users)), np.int32),
        *known,
        num_items=num_items,
        num_negatives=k,
        rng=np.random.default_rng(seed),
    )


def test_negatives_are_never_positive_and_distinct():
    table = _random_table(1, n=600, items=60)
    users, items = table.user.to_numpy() - 100, table.item.to_numpy() - 500
    negatives, mask = _negatives(users, items, 60, 20, seed=0)
    positives = set(zip(users.tolist(), items.tolist(), strict=True))
    for u, row in zip(np.unique(users), negatives, strict=True):
        assert len(set(row.tolist())) == 20
        assert not {(u, i) for i in row.tolist()} & positives
        assert ((row >= 0) & (row < 60)).all()
    assert mask.all()
    again, _ = _negatives(users, items, 60, 20, seed=0)
    other, _ = _negatives(users, items, 60, 20, seed=1)
    assert (again == negatives).all() and (other != negatives).any()


def test_negatives_are_uniform():
    # One user who liked items {0, 3} of 8: six candidates, three drawn per row, 6,000 rows.
    n = 6000
    users = np.zeros(2, np.int64)
    known = csr_from_pairs(users, np.array([0, 3]), 1)
    negatives, _ = splits.sample_test_negatives(
        np.zeros(n, np.int64),
        np.zeros(n, np.int32),
        *known,
        num_items=8,
        num_negatives=3,
        rng=np.random.default_rng(0),
    )
    counts = np.bincount(negatives.ravel(), minlength=8)
    assert counts[0] == counts[3] == 0
    expected = n * 3 / 6
    chi2 = ((counts[[1, 2, 4, 5, 6, 7]] - expected) ** 2 / expected).sum()
    assert chi2 < 20.5  # 99.9% quantile of chi-square with 5 degrees of freedom
    # Each of the 20 subsets of size 3 is equally likely too.
    subsets = collections.Counter(tuple(sorted(r)) for r in negatives.tolist())
    assert len(subsets) == 20
    expected = n / 20
    assert sum((c - expected) ** 2 / expected for c in subsets.values()) < 43.8  # 19 dof


def test_negatives_pad_and_mask_when_too_few_candidates():
    known = csr_from_pairs(np.array([0, 0, 0]), np.array([0, 1, 2]), 1)
    negatives, mask = splits.sample_test_negatives(
        np.array([0]),
        np.array([2], np.int32),
        *known,
        num_items=5,
        num_negatives=4,
        rng=np.random.default_rng(0),
    )
    assert sorted(negatives[0][mask[0]].tolist()) == [3, 4]
    assert (negatives[0][~mask[0]] == 2).all() and mask.sum() == 2


def test_validation_does_not_change_test_pairs_or_negatives():
    table = _random_table(2)
    a = dataset.prepare(table, DataConfig(num_test_negatives=5), name="t")
    b = dataset.prepare(table, DataConfig(num_test_negatives=5, validation=True), name="t")
    assert (a.test_users == b.test_users).all() and (a.test_items == b.test_items).all()
    assert (a.test_negatives == b.test_negatives).all()
    known = set(zip(b.valid_users.tolist(), b.valid_items.tolist(), strict=True))
    assert (
        not {(u, i) for u, row in zip(b.valid_users, b.valid_negatives, strict=True) for i in row}
        & known
    )


def _write_u_data(folder, table):
    (folder / "ml-100k").mkdir(parents=True)
    table.to_csv(folder / "ml-100k" / "u.data", sep="\t", header=False, index=False)


def test_cache_hit_returns_identical_arrays(tmp_path, caplog):
    _write_u_data(tmp_path, _random_table(4))
    cfg = DataConfig(
        dataset="ml-100k", data_dir=str(tmp_path), validation=True, num_test_negatives=4
    )
    first = dataset.load_dataset(cfg)
    with caplog.at_level("INFO"):
        second = dataset.load_dataset(cfg)
    assert any("loaded from cache" in r.getMessage() for r in caplog.records)
    for field in dataclasses.fields(first):
        a, b = getattr(first, field.name), getattr(second, field.name)
        assert np.array_equal(a, b), field.name
        assert np.asarray(a).dtype == np.asarray(b).dtype, field.name
    other = dataset.cache_path(dataclasses.replace(cfg, seed=1), [tmp_path / "ml-100k" / "u.data"])
    assert other != dataset.cache_path(cfg, [tmp_path / "ml-100k" / "u.data"])


def test_real_ml100k_loo_equals_authors_test_file(shared_data, tmp_path):
    (tmp_path / "ml-100k").symlink_to(shared_data / "ml-100k")
    data = dataset.load_dataset(DataConfig(dataset="ml-100k", data_dir=str(tmp_path), cache=False))
    stats = data.stats()
    assert (stats["users"], stats["items"], stats["interactions"]) == (943, 1682, 100_000)
    authors = ncf_format.read_rating_file(shared_data / "ncf" / "ml-100k.test.rating")
    assert (data.user_ids == np.arange(1, 944)).all() and (
        data.item_ids == np.arange(1, 1683)
    ).all()
    assert (data.test_users == authors.users).all()
    assert (data.test_items == authors.items).all()
    assert (data.test_timestamps == authors.timestamps).all()
    negatives = data.test_negatives
    known = set(zip(data.train_users.tolist(), data.train_items.tolist(), strict=True))
    known |= set(zip(data.test_users.tolist(), data.test_items.tolist(), strict=True))
    assert (
        not {
            (u, i)
            for u, row in zip(data.test_users.tolist(), negatives.tolist(), strict=True)
            for i in row
        }
        & known
    )


def test_cache_keeps_string_ids(tmp_path, isolated_cache):
    path = tmp_path / "log.csv"
    path.write_text("user,item\nann,x\nann,y\nbob,x\nbob,007\nbob,7\n")
    cfg = DataConfig(
        dataset=f"csv:{path}",
        data_dir=str(tmp_path),
        csv_rating_col=None,
        csv_timestamp_col=None,
        num_test_negatives=1,
    )
    first, second = dataset.load_dataset(cfg), dataset.load_dataset(cfg)
    assert first.user_ids.tolist() == second.user_ids.tolist() == ["ann", "bob"]
    assert second.item_ids.tolist() == ["007", "7", "x", "y"]
    assert list((isolated_cache / "processed").glob("*.npz"))  # never inside --data_dir
    assert not (tmp_path / "processed").exists()


def test_docstring_examples():
    import doctest

    for module in (splits, ncf_format):
        assert doctest.testmod(module).failed == 0
