"""NCF authors' format: writer/reader round trip, masks, validation carve, 3-column files."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from ncf_jax.config import DataConfig
from ncf_jax.data import dataset, ncf_format


def _data(num_test_negatives=7, ratings=None):
    rng = np.random.default_rng(0)
    pairs = rng.choice(30 * 50, size=400, replace=False)
    table = pd.DataFrame(
        {
            "user": pairs // 50,
            "item": pairs % 50,
            "rating": rng.integers(1, 6, 400) if ratings is None else ratings(rng, 400),
            "timestamp": rng.integers(0, 10**9, 400),
        }
    )
    return dataset.prepare(table, DataConfig(num_test_negatives=num_test_negatives), name="t")


FIELDS = (
    "num_users",
    "num_items",
    "train_users",
    "train_items",
    "train_ratings",
    "train_timestamps",
    "test_users",
    "test_items",
    "test_ratings",
    "test_timestamps",
    "test_negatives",
    "test_negatives_mask",
)


@pytest.mark.parametrize(
    "ratings", [None, lambda rng, n: rng.random(n).astype(np.float32) * 5], ids=["int", "float"]
)
def test_round_trip_is_exact(tmp_path, ratings):
    data = _data(ratings=ratings)
    ncf_format.write_ncf(data, tmp_path, "mine")
    back = dataset.load_dataset(DataConfig(dataset="ncf:mine", data_dir=str(tmp_path), cache=False))
    for name in FIELDS:
        a, b = np.asarray(getattr(data, name)), np.asarray(getattr(back, name))
        assert np.array_equal(a, b), name
        assert a.dtype == b.dtype, name


def test_round_trip_without_negatives(tmp_path):
    data = _data(num_test_negatives=0)
    paths = ncf_format.write_ncf(data, tmp_path, "mine")
    train, test, negatives, num_users, num_items = ncf_format.read_ncf(paths)
    assert negatives.shape == (len(data.test_users), 0)
    assert (test.items == data.test_items).all()


def test_published_negative_equal_to_test_item_is_masked(tmp_path, caplog):
    (tmp_path / "x.train.rating").write_text("0\t1\t5\t10\n1\t0\t4\t10\n1\t3\t4\t11\n")
    (tmp_path / "x.test.rating").write_text("0\t2\t5\t20\n1\t1\t3\t20\n")
    (tmp_path / "x.test.negative").write_text("(0,2)\t0\t2\n(1,1)\t0\t3\n")
    cfg = DataConfig(dataset="ncf:x", data_dir=str(tmp_path), cache=False)
    with caplog.at_level("INFO"):
        data = dataset.load_dataset(cfg)
    # User 1's negatives 0 and 3 are its training items: known positives, masked too.
    assert data.test_negatives_mask.tolist() == [[True, False], [False, False]]
    assert data.num_items == 4 and data.num_users == 2
    messages = [r.getMessage() for r in caplog.records]
    assert any("1 test pairs have their own item" in m for m in messages)
    assert any("1 lines list an item the user is known to like (2 such" in m for m in messages)


def test_validation_carved_from_train_by_loo_rule(tmp_path):
    # Pinterest-like: no timestamps (3 columns), so ties are broken by the largest item.
    (tmp_path / "p.train.rating").write_text("0\t1\t1\n0\t4\t1\n0\t2\t1\n1\t0\t1\n")
    (tmp_path / "p.test.rating").write_text("0\t3\t1\n1\t2\t1\n")
    (tmp_path / "p.test.negative").write_text("(0,3)\t0\n(1,2)\t1\n")
    cfg = DataConfig(
        dataset="ncf:p", data_dir=str(tmp_path), validation=True, num_test_negatives=1, cache=False
    )
    data = dataset.load_dataset(cfg)
    assert data.valid_users.tolist() == [0] and data.valid_items.tolist() == [4]
    assert data.train_items.tolist() == [1, 2, 0]
    assert data.valid_negatives.tolist() == [[0]]  # the only item user 0 never saw
    assert (data.train_timestamps == 0).all()


def test_real_authors_files_read(shared_data):
    paths = {r: shared_data / "ncf" / f"ml-100k{s}" for r, s in ncf_format.SUFFIXES.items()}
    train, test, negatives, num_users, num_items = ncf_format.read_ncf(paths)
    assert (num_users, num_items) == (943, 1682)
    assert negatives.shape == (943, 99) and len(train.users) == 99_057


def test_writer_output_matches_authors_layout(tmp_path):
    data = dataclasses.replace(_data(num_test_negatives=2))
    paths = ncf_format.write_ncf(data, tmp_path, "m")
    first = paths["negatives"].read_text().splitlines()[0]
    u, i = data.test_users[0], data.test_items[0]
    n0, n1 = data.test_negatives[0]
    assert first == f"({u},{i})\t{n0}\t{n1}"
    assert paths["test"].read_text().splitlines()[0].split("\t")[2] in "12345"
