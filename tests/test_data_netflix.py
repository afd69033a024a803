"""The Netflix Prize reader (both layouts, probe split, titles, errors) and its synthetic twin."""

import numpy as np
import pytest

from ncf_jax.commands.recommend import titles
from ncf_jax.config import DataConfig
from ncf_jax.data import dataset, netflix, netflix_format, synthetic_netflix
from ncf_jax.data.readers import DataError

MOVIE_1 = "1:\n30878,4,2005-12-26\n2647871,1,2005-12-26\n6,3,1999-11-11\n"
MOVIE_2 = "2:\n6,5,2000-02-29\n30878,2,2004-05-01\n"
PROBE = "1:\n30878\n2:\n6\n"
TITLES = "1,2003,Dinosaur Planet\n2,NULL,Isle of Man TT 2004, Review\n3,1997,Amélie\n"


def _day(text: str) -> int:
    return int(np.datetime64(text, "s").astype(np.int64))


@pytest.fixture
def root(tmp_path):
    folder = tmp_path / "netflix"
    folder.mkdir()
    (folder / "combined_data_1.txt").write_text(MOVIE_1)
    (folder / "combined_data_2.txt").write_text(MOVIE_2)
    (folder / "probe.txt").write_text(PROBE)
    (folder / "movie_titles.csv").write_bytes(TITLES.encode("latin-1"))
    return tmp_path


def test_reads_combined_files_in_order(root):
    table = netflix.read_ratings(netflix.rating_files(root / "netflix"))
    assert table["user"].tolist() == [30878, 2647871, 6, 6, 30878]
    assert table["item"].tolist() == [1, 1, 1, 2, 2]
    assert table["rating"].tolist() == [4, 1, 3, 5, 2]
    assert table["timestamp"].tolist() == [
        _day(d) for d in ("2005-12-26", "2005-12-26", "1999-11-11", "2000-02-29", "2004-05-01")
    ]


def test_training_set_layout_and_crlf_read_the_same(root, tmp_path):
    folder = tmp_path / "old" / "netflix" / "training_set"
    folder.mkdir(parents=True)
    (folder / "mv_0000001.txt").write_bytes(MOVIE_1.replace("\n", "\r\n").encode())
    (folder / "mv_0000002.txt").write_text(MOVIE_2.rstrip("\n"))  # no final newline
    old = netflix.read_ratings(netflix.rating_files(folder.parent))
    new = netflix.read_ratings(netflix.rating_files(root / "netflix"))
    assert old.equals(new)


def test_dates_match_numpy():
    days = np.random.default_rng(0).integers(-700_000, 2_900_000, 2000)
    dates = days.astype("datetime64[D]").astype(object)
    got = netflix_format.days_since_epoch(
        np.array([d.year for d in dates]),
        np.array([d.month for d in dates]),
        np.array([d.day for d in dates]),
    )
    assert np.array_equal(got, days)


@pytest.mark.parametrize(
    "text, line, match",
    [
        ("1:\n6,3,2005-01-01\n7,6,2005-01-01\n", 3, "rating 6 is not in 1..5"),
        ("1:\n6,3,2005-02-29\n", 2, "date '2005-02-29' does not exist"),
        ("1:\n6,3,2005-01-01\n\n7,3,2005-01-01\n", 3, "empty line"),
        ("1:\n6,3,05-01-01\n", 2, "expected 'MovieID:' or 'CustomerID,Rating"),
        ("1:\nx6,3,2005-01-01\n", 2, "found 'x6,3,2005-01-01'"),
        ("1:\n1234567890,3,2005-01-01\n", 2, "expected 'MovieID:' or"),
        ("6,3,2005-01-01\n", 1, "must start with a 'MovieID:' line"),
        ("1:\n6,3,2005-01-01\nA:\n", 3, "expected 'MovieID:' with a 1-9 digit id"),
    ],
)
def test_bad_lines_cite_file_and_line(tmp_path, text, line, match):
    good, bad = tmp_path / "combined_data_1.txt", tmp_path / "combined_data_2.txt"
    good.write_text(MOVIE_1)
    bad.write_text(text)
    with pytest.raises(DataError, match=match) as info:
        netflix.read_ratings([good, bad])
    assert (info.value.path, info.value.line) == (str(bad), line)
    assert str(info.value).startswith(f"{bad}:{line}: ")


def test_bad_probe_and_titles_cite_the_line(tmp_path):
    probe, names = tmp_path / "probe.txt", tmp_path / "movie_titles.csv"
    probe.write_text("1:\n6\n7,3\n")
    with pytest.raises(DataError, match=r"probe.txt:3: expected a CustomerID, found '7,3'"):
        netflix_format.parse_probe(probe)
    names.write_text("1,2003,Dinosaur Planet\n2,19x7,Something\n")
    with pytest.raises(DataError, match=r"movie_titles.csv:2: year '19x7'"):
        netflix.read_movie_titles(names)


def test_missing_files_say_where_to_put_them(tmp_path):
    cfg = DataConfig(dataset="netflix", data_dir=str(tmp_path))
    with pytest.raises(DataError, match=r"netflix: no Netflix Prize rating files.*combined_data"):
        dataset.load_dataset(cfg)
    (tmp_path / "netflix").mkdir()
    (tmp_path / "netflix" / "combined_data_1.txt").write_text(MOVIE_1)
    with pytest.raises(DataError, match=r"probe.txt: file not found"):
        dataset.load_dataset(DataConfig(dataset="netflix-probe", data_dir=str(tmp_path)))


def _pairs(data, split):
    users = data.user_ids[getattr(data, f"{split}_users")]
    return sorted(
        zip(users.tolist(), data.item_ids[getattr(data, f"{split}_items")].tolist(), strict=True)
    )


def test_probe_split_is_the_test_set_and_cached(root):
    cfg = DataConfig(dataset="netflix-probe", data_dir=str(root), num_test_negatives=0)
    data = dataset.load_dataset(cfg)
    assert _pairs(data, "test") == [(6, 2), (30878, 1)]
    assert len(data.train_users) == 3 and data.num_users == 3 and data.num_items == 2
    paths = dataset.source_files(cfg)
    assert dataset.cache_path(cfg, dataset._input_files(cfg, paths)).is_file()
    again = dataset.load_dataset(cfg)
    assert _pairs(again, "train") == _pairs(data, "train")


def test_titles_keep_commas_latin1_and_null_years(root):
    cfg = DataConfig(dataset="netflix", data_dir=str(root))
    assert titles(cfg, [3, 2]).tolist() == ["Amélie", "Isle of Man TT 2004, Review"]
    table = netflix.read_movie_titles(root / "netflix" / "movie_titles.csv")
    assert table["year"].isna().tolist() == [False, True, False]


def test_synthetic_files_read_back_with_their_shape(tmp_path):
    shape = synthetic_netflix.write_netflix(tmp_path / "netflix", scale=2e-4, seed=1)
    table = netflix.read_ratings(netflix.rating_files(tmp_path / "netflix"))
    assert len(table) == shape["ratings"] == round(100_480_507 * 2e-4)
    assert table["user"].nunique() == shape["users"] and table["item"].nunique() == 17_770
    pairs = table["user"].to_numpy(np.int64) * 100_000 + table["item"].to_numpy()
    assert len(np.unique(pairs)) == len(pairs)
    assert set(np.unique(table["rating"])) == {1, 2, 3, 4, 5}
    cfg = DataConfig(dataset="netflix-probe", data_dir=str(tmp_path), num_test_negatives=0)
    probe = netflix_format.parse_probe(tmp_path / "netflix" / "probe.txt")
    assert len(probe["user"]) == shape["probe"]
    # Probe rows of movies rated nowhere else cannot be scored and are dropped.
    tested = set(_pairs(dataset.load_dataset(cfg), "test"))
    assert tested and tested <= set(
        zip(probe["user"].tolist(), probe["item"].tolist(), strict=True)
    )
