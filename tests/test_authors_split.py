"""`ncf:ml-100k` derived from GroupLens' u.data: byte for byte the authors' files on the real
data, the recipe checked by brute force on a tiny u.data, and used when --data_dir lacks them."""

import numpy as np
import pytest

from ncf_jax.config import DataConfig
from ncf_jax.data import authors_split, dataset, ncf_format


def _u_data(folder, rng, num_users=4, num_items=130):
    """A u.data with raw ids from 1, equal timestamps inside each user (ties), shuffled lines."""
    rows = []
    for user in range(1, num_users + 1):
        items = rng.choice(np.arange(1, num_items + 1), size=12, replace=False)
        times = rng.choice([100, 200, 300], size=12)
        rows += [
            (user, item, int(rng.integers(1, 6)), t) for item, t in zip(items, times, strict=True)
        ]
    rows = [rows[i] for i in rng.permutation(len(rows))]
    (folder / "ml-100k").mkdir(parents=True)
    path = folder / "ml-100k" / "u.data"
    path.write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows))
    return path, np.array(rows)


def test_the_recipe_by_brute_force(tmp_path):
    path, rows = _u_data(tmp_path, np.random.default_rng(0))
    texts = authors_split.derive(path)
    paths = authors_split.write(texts, tmp_path / "out")
    train, test = (ncf_format.read_rating_file(paths[r]) for r in ("train", "test"))
    users, items, negatives = ncf_format.read_negatives_file(paths["negatives"])
    for user in range(4):
        mine = rows[rows[:, 0] == user + 1]
        latest = max(mine.tolist(), key=lambda r: (r[3], r[1]))  # latest, then largest item
        assert (test.users[user], test.items[user]) == (user, latest[1] - 1)
        assert (users[user], items[user]) == (user, latest[1] - 1)
        held = train.items[train.users == user]
        assert sorted(held.tolist() + [latest[1] - 1]) == sorted((mine[:, 1] - 1).tolist())
        key = list(zip(train.timestamps[train.users == user], held, strict=True))
        assert key == sorted(key)  # by time, then item
        rated = set((mine[:, 1] - 1).tolist())
        assert len(set(negatives[user].tolist())) == 99 and not rated & set(negatives[user])
    # The draws: one RandomState(0), users in order, choice over the sorted never-rated items.
    rng, num_items = np.random.RandomState(0), rows[:, 1].max()  # raw ids 1..max
    for user in range(4):
        free = np.setdiff1d(np.arange(num_items), rows[rows[:, 0] == user + 1][:, 1] - 1)
        np.testing.assert_array_equal(negatives[user], rng.choice(free, 99, replace=False))


def test_derived_files_are_the_authors_files(shared_data, tmp_path, isolated_cache):
    (isolated_cache / "ml-100k").symlink_to(shared_data / "ml-100k")
    paths = authors_split.ensure(tmp_path / "absent", opener=None)
    for role, path in paths.items():
        authors = shared_data / "ncf" / f"ml-100k{ncf_format.SUFFIXES[role]}"
        assert path.read_bytes() == authors.read_bytes(), role
        assert path.parent == isolated_cache


def test_load_dataset_falls_back_to_the_derived_files(tmp_path, isolated_cache):
    _u_data(isolated_cache, np.random.default_rng(1))
    cfg = DataConfig(dataset="ncf:ml-100k", data_dir=str(tmp_path / "absent"), cache=False)
    data = dataset.load_dataset(cfg)
    assert (data.num_users, len(data.test_users), data.test_negatives.shape) == (4, 4, (4, 99))
    assert (isolated_cache / "ml-100k.train.rating").is_file()
    # Files in --data_dir win over the derived ones.
    authors_split.write(authors_split.derive(isolated_cache / "ml-100k" / "u.data"), tmp_path)
    (tmp_path / "ml-100k.test.negative").write_text("garbage\n")
    with pytest.raises(ValueError, match="ml-100k.test.negative"):
        dataset.load_dataset(DataConfig(dataset="ncf:ml-100k", data_dir=str(tmp_path)))
